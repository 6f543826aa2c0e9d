/*
 * libswitchboard: the native C client of switchboard's binary protocol.
 *
 * A client holds one connection to one server, over raw TCP ("tcp://host:port", port 7000 by
 * default) or WebSocket ("ws://host:port/ws", subprotocol switchboard.v1). It authenticates with
 * the application's token, keeps the connection up (reconnecting with exponential backoff and
 * full jitter), and delivers every message of a conversation to the application exactly once
 * and in sequence order: it remembers per conversation the last sequence number delivered,
 * resumes from there after a reconnect, drops duplicates, holds messages that arrive early and
 * fetches (SYNCs) the gap before them. Sends that were not acknowledged when a connection
 * dropped are sent again with the same client id (the server drops the duplicate), so each send
 * completes exactly once.
 *
 * Driving. A client does nothing by itself until it is driven, one of two ways:
 *   - sb_client_start() runs it on a background thread the client owns; or
 *   - the application polls sb_client_fd() for readability in its own loop (poll, epoll, ...),
 *     for at most sb_client_timeout_ms(), and calls sb_client_process() when it is readable or
 *     the timeout passed.
 * Use one way, not both, for the life of the client.
 *
 * Threads. Every function may be called from any thread, except where its comment says
 * otherwise; the client serializes them with an internal (recursive) lock. Callbacks run on the
 * driving thread (the background thread, or the caller of sb_client_process()) with that lock
 * held: a callback may call any function of the same client except sb_client_stop() and
 * sb_client_free(), and other threads calling into the client wait while a callback runs, so
 * keep callbacks short. Strings and buffers passed to a callback are valid only during the call.
 *
 * Errors. Functions return 0 (or a count) on success and a negative errno value on failure:
 * -EINVAL for an argument that breaks a protocol limit, -ENOBUFS when the outgoing queue is
 * full (sb_client_config.max_queue_bytes), -ENOMEM. A completion callback runs exactly once for
 * every call that returned 0, with `status`:
 *   0                 success;
 *   > 0               the server refused the request: an SB_CLIENT_ERR_* code, details in err;
 *   -ECONNRESET       the connection dropped after the request was sent, and the request is not
 *                     safe to repeat (every request but a send, which is sent again instead);
 *   -ECANCELED        the client was freed first.
 *
 * Names, ids and strings are UTF-8 and NUL-terminated; message bodies are opaque bytes.
 */
#ifndef SWITCHBOARD_H
#define SWITCHBOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SB_CLIENT_API __attribute__((visibility("default")))
#else
#define SB_CLIENT_API
#endif

/* Protocol limits, in bytes (see docs/protocol-binary.md). */
#define SB_CLIENT_TOKEN_MAX 8192
#define SB_CLIENT_USER_MAX 64
#define SB_CLIENT_DEVICE_MAX 32
#define SB_CLIENT_CLIENT_ID_MAX 64
#define SB_CLIENT_CONV_MAX 132
#define SB_CLIENT_NAME_MAX 128
#define SB_CLIENT_LIST_MAX 1000 /* users in one request */

/* Error codes of the server (status > 0 in completions, code in struct sb_client_error). */
#define SB_CLIENT_ERR_BAD_REQUEST 1
#define SB_CLIENT_ERR_UNAUTHORIZED 2
#define SB_CLIENT_ERR_FORBIDDEN 3
#define SB_CLIENT_ERR_NOT_FOUND 4
#define SB_CLIENT_ERR_TOO_LARGE 5
#define SB_CLIENT_ERR_RATE_LIMITED 6
#define SB_CLIENT_ERR_CONFLICT 7
#define SB_CLIENT_ERR_UNAVAILABLE 8
#define SB_CLIENT_ERR_INTERNAL 9
#define SB_CLIENT_ERR_UNSUPPORTED 10

/* Connection states, as the state callback reports them. */
#define SB_CLIENT_STATE_CONNECTING 1 /* opening a connection (or waiting to retry) */
#define SB_CLIENT_STATE_CONNECTED 2  /* WELCOME received: the session is up */
#define SB_CLIENT_STATE_DISCONNECTED                                                               \
    3                            /* the connection dropped; a retry follows unless stopped         \
                                  */
#define SB_CLIENT_STATE_FAILED 4 /* reconnect_max_attempts ran out; nothing more happens */

#define SB_CLIENT_RECEIPT_DELIVERED 1
#define SB_CLIENT_RECEIPT_READ 2

#define SB_CLIENT_PRESENCE_ONLINE 1
#define SB_CLIENT_PRESENCE_OFFLINE 2

/* What a system message records (struct sb_client_message.system). */
#define SB_CLIENT_SYSTEM_NONE 0           /* an ordinary message */
#define SB_CLIENT_SYSTEM_MEMBER_ADDED 1   /* subject: the user added; from: who added */
#define SB_CLIENT_SYSTEM_MEMBER_REMOVED 2 /* subject: the user removed (== from: left) */
#define SB_CLIENT_SYSTEM_RENAMED 3        /* subject: the new name */
#define SB_CLIENT_SYSTEM_CREATED 4        /* subject: the group's name at creation */

struct sb_client;

struct sb_client_message {
    uint64_t msg_id;
    uint64_t seq; /* 1, 2, ... within the conversation */
    uint64_t ts_ms;
    int system; /* SB_CLIENT_SYSTEM_* */
    const char *conv;
    const char *from;
    const char *device;  /* the sender's device; "" for a system message */
    const char *subject; /* "" for an ordinary message */
    const uint8_t *body;
    size_t body_len;
};

struct sb_client_receipt {
    uint64_t seq; /* up to and including */
    int kind;     /* SB_CLIENT_RECEIPT_* */
    const char *conv;
    const char *user; /* whose receipt it is */
};

struct sb_client_presence {
    uint64_t last_seen_ms; /* 0: never seen */
    int status;            /* SB_CLIENT_PRESENCE_* */
    const char *user;
};

struct sb_client_typing {
    const char *conv;
    const char *user;
};

/* A send's acknowledgement: the message is sequenced and stored. */
struct sb_client_ack {
    uint64_t msg_id;
    uint64_t seq;
    uint64_t ts_ms;
    bool is_duplicate; /* the server already had this client id (a retry after a reconnect) */
    const char *client_id;
    const char *conv;
};

/* Why the server refused a request (or, with request 0, something it did not like). */
struct sb_client_error {
    int code; /* SB_CLIENT_ERR_*; an unknown code reads as SB_CLIENT_ERR_INTERNAL */
    uint32_t retry_after_ms;
    const char *message;
    const char *conv; /* "" unless the error is about one conversation */
};

/* A conversation. The member lists are empty in the answer to sb_client_conv_list(). */
struct sb_client_conv {
    uint64_t last_seq;
    uint64_t read_seq; /* the user's read cursor */
    uint32_t member_count;
    const char *conv; /* "dm:a:b" for a direct conversation, "g:..." for a group */
    const char *name; /* "" for a direct conversation */
    const char *owner;
    size_t n_admins;
    const char *const *admins;
    size_t n_members;
    const char *const *members;
};

/* The session, as WELCOME told it. */
struct sb_client_session {
    uint64_t session;
    uint32_t max_body; /* the largest body sb_client_send() may be given */
    uint32_t ping_interval_ms;
    const char *user;
    const char *device;
};

/* Events. `arg` is sb_client_config.arg. */
typedef void (*sb_client_state_cb)(struct sb_client *c, int state, int err,
                                   const struct sb_client_session *session, void *arg);
typedef void (*sb_client_message_cb)(struct sb_client *c, const struct sb_client_message *m,
                                     void *arg);
typedef void (*sb_client_receipt_cb)(struct sb_client *c, const struct sb_client_receipt *r,
                                     void *arg);
typedef void (*sb_client_presence_cb)(struct sb_client *c, const struct sb_client_presence *p,
                                      void *arg);
typedef void (*sb_client_typing_cb)(struct sb_client *c, const struct sb_client_typing *t,
                                    void *arg);
/* The server stopped pushing conv after seq; the client SYNCs the rest by itself. */
typedef void (*sb_client_behind_cb)(struct sb_client *c, const char *conv, uint64_t seq, void *arg);
/* The server is closing the connection; the client reconnects after reconnect_after_ms. */
typedef void (*sb_client_goaway_cb)(struct sb_client *c, uint32_t reconnect_after_ms,
                                    const char *reason, void *arg);
/* An error that answers no request of the application (a receipt, typing or sync refused). */
typedef void (*sb_client_error_cb)(struct sb_client *c, const struct sb_client_error *err,
                                   void *arg);

/* Completions; `arg` is the one given with the request. ack/conv are NULL unless status is 0,
 * err is NULL unless status > 0. */
typedef void (*sb_client_send_cb)(struct sb_client *c, int status, const struct sb_client_ack *ack,
                                  const struct sb_client_error *err, void *arg);
typedef void (*sb_client_conv_cb)(struct sb_client *c, int status,
                                  const struct sb_client_conv *conv,
                                  const struct sb_client_error *err, void *arg);
typedef void (*sb_client_convs_cb)(struct sb_client *c, int status,
                                   const struct sb_client_conv *convs, size_t n,
                                   const struct sb_client_error *err, void *arg);

struct sb_client_config {
    /* "tcp://host[:port]" (default port 7000), "tls://host[:port]" (the binary protocol over
     * TLS, 7443), "ws://host[:port][/path]" (80, path /ws) or "wss://host[:port][/path]" (443);
     * required */
    const char *url;
    const char *token;  /* the JWT; required */
    const char *device; /* NULL or "": the server names the device */
    /* Reconnect delays: attempt n waits a uniformly random time in
     * [0, min(reconnect_max_ms, reconnect_base_ms * 2^n)]. */
    uint32_t reconnect_base_ms;      /* default 250 */
    uint32_t reconnect_max_ms;       /* default 30000 */
    uint32_t reconnect_max_attempts; /* consecutive failures before FAILED; 0: never give up */
    uint32_t connect_timeout_ms;     /* TCP + upgrade + WELCOME; default 10000 */
    size_t max_queue_bytes;          /* outgoing bytes queued; default 16 MiB */
    size_t max_frame;                /* the largest frame accepted from the server; 8 MiB */
    /* How a conversation the client has no position for starts when a message of it arrives:
     * false (default) at that message; true at seq 0, syncing its whole history first. */
    bool sync_new_convs;
    sb_client_state_cb on_state;
    sb_client_message_cb on_message;
    sb_client_receipt_cb on_receipt;
    sb_client_presence_cb on_presence;
    sb_client_typing_cb on_typing;
    sb_client_behind_cb on_behind;
    sb_client_goaway_cb on_goaway;
    sb_client_error_cb on_error;
    void *arg;
    /* TLS (tls:// and wss://). The server's certificate must chain to a CA of ca_file (PEM; NULL:
     * the system's CAs) and name server_name (NULL: the URL's host; an IP address is checked as
     * one). A refused certificate ends the attempt with -EKEYREJECTED (on_state), another
     * handshake failure with -EPROTO; both count as failed attempts. */
    const char *ca_file;
    const char *server_name; /* at most 255 bytes */
    bool insecure; /* no verification at all: only for tests against a throwaway certificate */
};

/* A conversation's position: the last sequence number delivered to the application. */
struct sb_client_position {
    char conv[SB_CLIENT_CONV_MAX + 1];
    uint64_t seq;
};

/* Fills *cfg with the defaults (and NULLs). */
SB_CLIENT_API void sb_client_config_init(struct sb_client_config *cfg);

/*
 * Creates a client from cfg (copied: cfg and its strings may be freed after the call). It does
 * not connect until driven. Returns 0 and *out, -EINVAL (no url or token, a bad url, a string
 * over its limit, a ca_file that cannot be loaded) or -ENOMEM. Free it with sb_client_free().
 */
SB_CLIENT_API int sb_client_create(const struct sb_client_config *cfg, struct sb_client **out);

/*
 * Stops the client (as sb_client_stop()), closes the connection, completes every pending
 * request with -ECANCELED and frees it. Not from a callback; no other thread may use c during or
 * after the call.
 */
SB_CLIENT_API void sb_client_free(struct sb_client *c);

/* Starts the background thread that drives the client. Returns 0, -EALREADY or -errno. */
SB_CLIENT_API int sb_client_start(struct sb_client *c);

/* Stops and joins the background thread (no-op without one). Not from a callback. */
SB_CLIENT_API void sb_client_stop(struct sb_client *c);

/*
 * The fd to poll for readability when embedding (it stays the same across reconnects). Wait at
 * most sb_client_timeout_ms() for it, then call sb_client_process().
 */
SB_CLIENT_API int sb_client_fd(const struct sb_client *c);

/* How long the caller may wait before calling sb_client_process(): ms, 0 for now, -1 forever. */
SB_CLIENT_API int sb_client_timeout_ms(struct sb_client *c);

/*
 * Does all the work that is ready without blocking: connects, reads and dispatches frames
 * (running callbacks), writes queued frames, runs timers. Returns 0, or -EALREADY when the
 * background thread drives the client. Call it from one thread at a time.
 */
SB_CLIENT_API int sb_client_process(struct sb_client *c);

/*
 * Sends body (body_len bytes, at most the session's max_body) to conversation conv, or to user
 * `to` (the direct conversation with them): exactly one of conv and to is non-NULL. client_id
 * (1-64 bytes) is the de-duplication key; NULL: the client makes a unique one. cb (may be NULL)
 * gets the ACK. Queued while disconnected and sent after the next WELCOME; sent again with the
 * same client id when the connection drops before the ACK, and after retry_after_ms when the
 * server refuses it as rate_limited (requests queued after it wait too), so cb sees rate_limited
 * never.
 */
SB_CLIENT_API int sb_client_send(struct sb_client *c, const char *conv, const char *to,
                                 const void *body, size_t body_len, const char *client_id,
                                 sb_client_send_cb cb, void *arg);

/* Tells the server that conv was delivered/read (kind SB_CLIENT_RECEIPT_*) up to seq. */
SB_CLIENT_API int sb_client_mark(struct sb_client *c, const char *conv, uint64_t seq, int kind);

/* Tells conv's other members that the user is typing. */
SB_CLIENT_API int sb_client_typing(struct sb_client *c, const char *conv);

/* Subscribes to (drops) the presence of n users (1-1000); kept across reconnects. */
SB_CLIENT_API int sb_client_presence_subscribe(struct sb_client *c, const char *const *users,
                                               size_t n);
SB_CLIENT_API int sb_client_presence_unsubscribe(struct sb_client *c, const char *const *users,
                                                 size_t n);

/*
 * Catches conv up from its position (0 when it has none: its whole history): the messages
 * arrive through on_message like live ones, each once and in order.
 */
SB_CLIENT_API int sb_client_sync(struct sb_client *c, const char *conv);

/* Groups; each answered with the conversation as it is after the change. */
SB_CLIENT_API int sb_client_conv_create(struct sb_client *c, const char *name,
                                        const char *const *members, size_t n, sb_client_conv_cb cb,
                                        void *arg);
SB_CLIENT_API int sb_client_conv_add(struct sb_client *c, const char *conv,
                                     const char *const *users, size_t n, sb_client_conv_cb cb,
                                     void *arg);
SB_CLIENT_API int sb_client_conv_remove(struct sb_client *c, const char *conv,
                                        const char *const *users, size_t n, sb_client_conv_cb cb,
                                        void *arg);
SB_CLIENT_API int sb_client_conv_promote(struct sb_client *c, const char *conv,
                                         const char *const *users, size_t n, sb_client_conv_cb cb,
                                         void *arg);
SB_CLIENT_API int sb_client_conv_demote(struct sb_client *c, const char *conv,
                                        const char *const *users, size_t n, sb_client_conv_cb cb,
                                        void *arg);
SB_CLIENT_API int sb_client_conv_leave(struct sb_client *c, const char *conv, sb_client_conv_cb cb,
                                       void *arg);
SB_CLIENT_API int sb_client_conv_rename(struct sb_client *c, const char *conv, const char *name,
                                        sb_client_conv_cb cb, void *arg);
SB_CLIENT_API int sb_client_conv_get(struct sb_client *c, const char *conv, sb_client_conv_cb cb,
                                     void *arg);
SB_CLIENT_API int sb_client_conv_list(struct sb_client *c, sb_client_convs_cb cb, void *arg);

/*
 * The resume table, for an application that keeps positions across runs. set: conv's position
 * becomes seq (before the first connection, or to skip ahead; when connected the client then
 * catches up from there); get: 0 and *seq, or -ENOENT.
 * export: copies up to cap positions into out and returns how many there are in all.
 */
SB_CLIENT_API int sb_client_position_set(struct sb_client *c, const char *conv, uint64_t seq);
SB_CLIENT_API int sb_client_position_get(struct sb_client *c, const char *conv, uint64_t *seq);
SB_CLIENT_API size_t sb_client_positions(struct sb_client *c, struct sb_client_position *out,
                                         size_t cap);

/* Replaces the token used by the next connection (say, from the state callback). */
SB_CLIENT_API int sb_client_set_token(struct sb_client *c, const char *token);

/* The error code's name ("forbidden", ...), or "internal" for an unknown one. */
SB_CLIENT_API const char *sb_client_err_name(int code);

#ifdef __cplusplus
}
#endif

#endif
