/*
 * The gateway: what a client connection is to the server. Every connection starts in HTTP
 * (REST routes, or the WebSocket upgrade) and may become a WebSocket session.
 */
#ifndef SB_SERVER_GATEWAY_H
#define SB_SERVER_GATEWAY_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "cluster/registry.h"
#include "core/engine.h"
#include "server/auth.h"
#include "proto/http.h"
#include "proto/ops.h"
#include "proto/utf8.h"
#include "proto/ws.h"

struct sb_gateway_config {
    struct sb_engine *engine;
    uint64_t handshake_timeout_ms;
    uint64_t ping_interval_ms; /* 0 = no pings */
    uint64_t close_timeout_ms;
    uint64_t max_message_size;
    struct sb_http_limits http_limits;
    bool echo;
    const struct sb_auth *auth;   /* for /ws */
    int metrics_access;           /* enum sb_metrics_access */
    struct sb_registry *registry; /* cluster mode: where users are; NULL standalone */
};

/* Sets the configuration every connection uses. Main thread, before sb_engine_start. Returns 0
 * or -ENOMEM. */
int sb_gateway_init(const struct sb_gateway_config *cfg);

/* Frees what sb_gateway_init allocated, after the engine stopped. */
void sb_gateway_free(void);

/* The callbacks to pass to sb_engine_listen. */
extern const struct sb_conn_ops sb_gateway_ops;

/* Bytes of per-connection state (struct sb_session) for sb_engine_config.conn_app_size. */
size_t sb_gateway_session_size(void);

/* ---- internal to server/: the session and the WebSocket layer (websocket.c) ---- */

enum sb_session_state {
    SB_SESS_HTTP,
    SB_SESS_WS,
    SB_SESS_RAW, /* the binary port: frames straight on the stream */
};

/* How operations are encoded on a messaging session (/ws, the binary port). */
enum sb_session_enc {
    SB_ENC_JSON,   /* text messages, proto/jsonops.h */
    SB_ENC_BINARY, /* binary frames, proto/binproto.h (WebSocket binary messages, or raw) */
};

enum sb_metrics_access {
    SB_METRICS_PUBLIC, /* anyone may read /metrics */
    SB_METRICS_ADMIN,  /* a token with the admin scope is needed */
    SB_METRICS_OFF,    /* /metrics answers 404 */
};

enum sb_session_route {
    SB_ROUTE_ECHO, /* /echo: every message comes back */
    SB_ROUTE_CHAT, /* /ws and the binary port: the messaging protocol */
};

enum sb_session_timer {
    SB_TIMER_NONE,
    SB_TIMER_HANDSHAKE, /* request not complete in time; also HTTP keep-alive idle */
    SB_TIMER_PING,      /* WebSocket liveness */
    SB_TIMER_CLOSE,     /* our close frame was not answered in time (raw: flush, then close) */
};

struct sb_session {
    uint8_t state;       /* enum sb_session_state */
    uint8_t route;       /* enum sb_session_route */
    uint8_t timer;       /* enum sb_session_timer */
    uint8_t frag_opcode; /* opcode of the fragmented message being received, or 0 */
    uint8_t enc;         /* enum sb_session_enc (SB_ROUTE_CHAT) */
    bool close_sent;
    bool ping_pending;    /* a ping went out and nothing arrived since */
    bool chat_registered; /* chat is the device record, not the pending login */
    bool moving;          /* handed off to the user's home worker, not arrived yet */
    bool rest_waiting;    /* a REST request is being served: the next answer is its response */
    bool rest_held;       /* ... by another worker: registered in rest.c, input held */
    bool rest_keep_alive; /* ... and the connection stays open after it */
    struct sb_utf8 utf8;  /* across the fragments of a text message */
    uint32_t msg_len, msg_cap;
    uint8_t *msg; /* fragments gathered so far */
    void *chat;   /* /ws: struct sb_chat_login until registered, then the device */
};

extern struct sb_gateway_config sb__gw;

/* Consumes WebSocket frames from data; returns bytes consumed. */
size_t sb__ws_input(struct sb_conn *c, uint8_t *data, size_t len);
/* Queues one unmasked frame. Returns 0 or -ENOMEM. */
int sb__ws_send(struct sb_conn *c, uint8_t opcode, const uint8_t *payload, size_t len);
/* Sends a close frame with code and reason, then waits close_timeout_ms for the answer. */
void sb__ws_close(struct sb_conn *c, uint16_t code, const char *reason);
/* The WebSocket part of on_timer. */
void sb__ws_timer(struct sb_conn *c);
/* Frees the session's message buffer. */
void sb__ws_release(struct sb_session *s);

/*
 * Sends one encoded operation on a messaging session, framed as the session needs: a
 * WebSocket text (JSON) or binary message, the bare frame on the binary port, or a REST
 * request's response. Closes the connection when out of memory.
 */
void sb__session_send(struct sb_conn *c, const void *data, size_t len);

/* How a session's pushes are framed: a chunk is shared by the sessions of one framing. */
enum sb_framing {
    SB_FRAME_WS_TEXT,   /* JSON in a WebSocket text message */
    SB_FRAME_WS_BINARY, /* a binary frame in a WebSocket binary message */
    SB_FRAME_RAW,       /* a binary frame on the binary port */
};
#define SB_FRAMINGS 3

enum sb_framing sb__session_framing(struct sb_conn *c);

/* op encoded and framed as f, in a new chunk (NULL without memory or when op cannot be
 * encoded). */
struct sb_chunk *sb__session_chunk(struct sb_worker *w, const struct sb_op *op, enum sb_framing f);

/* data (an encoded operation: JSON for SB_FRAME_WS_TEXT, else a binary frame) framed as f, in a
 * new chunk. */
struct sb_chunk *sb__session_chunk_of(struct sb_worker *w, const void *data, size_t len,
                                      enum sb_framing f);

/* Answers a PING of a binary session: PONG with its request id and data (at most
 * SB_OPS_PING_MAX bytes). */
void sb__session_send_pong(struct sb_conn *c, uint32_t request_id, struct sb_slice data);

/* Encodes op in the session's encoding (a REST request's: JSON) and sends it. */
void sb__session_send_op(struct sb_conn *c, const struct sb_op *op);

/* Ends a messaging session: a WebSocket close with code and reason, or (binary port) a close
 * once what is queued has been sent. */
void sb__session_close(struct sb_conn *c, uint16_t ws_code, const char *reason);

/* ---- internal to server/: the binary port (binary.c) ---- */

/* The callbacks to pass to sb_engine_listen for the binary port. */
extern const struct sb_conn_ops sb__binary_ops;
/* Consumes binary frames from data (a registered device, or its HELLO); returns bytes consumed. */
size_t sb__binary_input(struct sb_conn *c, uint8_t *data, size_t len);
/* A WebSocket binary message on a switchboard.v1 session: one frame (the first one HELLO). */
void sb__binary_message(struct sb_conn *c, const uint8_t *data, size_t len);

/* ---- internal to server/: the REST API (rest.c) ---- */

/* Serves a request under /api/ (health excepted) with its body. */
void sb__rest_route(struct sb_conn *c, const struct sb_http_request *req, const char *body,
                    size_t body_len);
/* Answers the REST request waiting on c with a JSON answer of the messaging layer (its status
 * follows from it: an error's code, else 200). */
void sb__rest_respond(struct sb_conn *c, const char *json, size_t len);
/* The same for the connection conn_id of worker w, if it is still waiting. */
void sb__rest_answer(struct sb_worker *w, uint64_t conn_id, const char *json, size_t len);
/* The connection is closing: it waits no more. */
void sb__rest_forget(struct sb_conn *c);
/* Sets up the per-worker tables of waiting requests. Returns 0 or -ENOMEM. */
int sb__rest_init(unsigned workers);
void sb__rest_free(void);

#endif
