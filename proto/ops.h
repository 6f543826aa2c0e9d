/*
 * The messaging operation set (docs/messaging-design.md), once, as C structs: one tagged union
 * that both encodings (binary frames, proto/binproto.h; JSON, proto/jsonops.h) decode into and
 * encode from. The server handles struct sb_op and never sees an encoding.
 *
 * Decoded operations are zero-copy: every struct sb_slice and every list points into the bytes
 * that were decoded and is valid exactly as long as they are. Lists are (count, the items' raw
 * bytes, an iterator) so that decoding never allocates; the iterator knows the encoding.
 *
 * Limits below are those of the operation set, checked by every codec, so an operation that one
 * encoding accepts can always be written in the other. Ids are checked for length only: which
 * characters a user id may hold is the server's business.
 */
#ifndef SB_PROTO_OPS_H
#define SB_PROTO_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/slice.h"

/* Byte limits of the string fields (minimums are per field; see docs/protocol-binary.md). */
#define SB_OPS_TOKEN_MAX 8192   /* HELLO token */
#define SB_OPS_USER_MAX 64      /* user id */
#define SB_OPS_DEVICE_MAX 32    /* device id */
#define SB_OPS_NODE_MAX 80      /* cluster node id */
#define SB_OPS_CLIENT_ID_MAX 64 /* client id of a SEND (the de-duplication key) */
#define SB_OPS_CONV_MAX 132     /* conversation id: "dm:" + user + ":" + user */
#define SB_OPS_NAME_MAX 128     /* conversation name */
#define SB_OPS_SUBJECT_MAX 128  /* a system message's subject: a user id or a name */
#define SB_OPS_CURSOR_MAX 64    /* sync cursor */
#define SB_OPS_TEXT_MAX 255     /* error message, goaway reason */
#define SB_OPS_PING_MAX 16384   /* PING and PONG data (an echo for tests and benchmarks) */

/* Item limits of the lists. */
#define SB_OPS_REQUEST_LIST_MAX 1000 /* users, resume and sync entries in one request */
#define SB_OPS_LIST_MAX 65535        /* any list in an answer */

/*
 * Operation types. The values are the binary encoding's type byte: 0x01-0x7F are what a client
 * may send (RECEIPT, TYPING, PING and PONG travel both ways), 0x80-0xFF only the server sends.
 */
enum sb_op_type {
    SB_OP_NONE = 0x00, /* never valid on the wire */
    SB_OP_HELLO = 0x01,
    SB_OP_SEND = 0x02,
    SB_OP_RECEIPT = 0x03,
    SB_OP_TYPING = 0x04,
    SB_OP_PRESENCE_SUB = 0x05,
    SB_OP_PRESENCE_UNSUB = 0x06,
    SB_OP_SYNC = 0x07,
    SB_OP_CONV_CREATE = 0x08,
    SB_OP_CONV_ADD = 0x09,
    SB_OP_CONV_REMOVE = 0x0A,
    SB_OP_CONV_LEAVE = 0x0B,
    SB_OP_CONV_RENAME = 0x0C,
    SB_OP_CONV_LIST = 0x0D,
    SB_OP_PING = 0x0E,
    SB_OP_PONG = 0x0F,
    SB_OP_CONV_PROMOTE = 0x10,
    SB_OP_CONV_DEMOTE = 0x11,
    SB_OP_CONV_GET = 0x12,
    SB_OP_DEVICES = 0x13,
    SB_OP_WELCOME = 0x81,
    SB_OP_ACK = 0x82,
    SB_OP_MESSAGE = 0x83,
    SB_OP_PRESENCE = 0x84,
    SB_OP_SYNC_PAGE = 0x85,
    SB_OP_CONV = 0x86,
    SB_OP_CONVS = 0x87,
    SB_OP_ERROR = 0x88,
    SB_OP_BEHIND = 0x89,
    SB_OP_GOAWAY = 0x8A,
    SB_OP_SYNC_DONE = 0x8B,
    SB_OP_DEVICE_LIST = 0x8C,
};

/* Error codes: the binary encoding's u16 and, by name, the JSON "code". */
enum sb_op_err {
    SB_OP_ERR_BAD_REQUEST = 1,
    SB_OP_ERR_UNAUTHORIZED = 2,
    SB_OP_ERR_FORBIDDEN = 3,
    SB_OP_ERR_NOT_FOUND = 4,
    SB_OP_ERR_TOO_LARGE = 5,
    SB_OP_ERR_RATE_LIMITED = 6,
    SB_OP_ERR_CONFLICT = 7,
    SB_OP_ERR_UNAVAILABLE = 8,
    SB_OP_ERR_INTERNAL = 9,
    SB_OP_ERR_UNSUPPORTED = 10,
};

enum sb_op_receipt_kind {
    SB_OP_RECEIPT_DELIVERED = 1,
    SB_OP_RECEIPT_READ = 2,
};

enum sb_op_presence_status {
    SB_OP_PRESENCE_ONLINE = 1,
    SB_OP_PRESENCE_OFFLINE = 2,
};

/* What a system message records; SB_OP_SYSTEM_NONE is an ordinary message. */
enum sb_op_system {
    SB_OP_SYSTEM_NONE = 0,
    SB_OP_SYSTEM_MEMBER_ADDED = 1,   /* subject: the user added; from: who added */
    SB_OP_SYSTEM_MEMBER_REMOVED = 2, /* subject: the user removed (from == subject: left) */
    SB_OP_SYSTEM_RENAMED = 3,        /* subject: the new name */
    SB_OP_SYSTEM_CREATED = 4,        /* subject: the group's name at creation (may be empty) */
};

/*
 * The form a message body is held in. Bodies are opaque bytes in both encodings; to stay
 * zero-copy a decoder leaves a body in the form it arrived in, and each encoder converts:
 * BYTES are the bytes themselves (binary frames); JSON is a JSON string literal, quotes
 * included, whose decoded UTF-8 is the bytes (a JSON "body"); BASE64 is canonical padded
 * base64 text of the bytes, no quotes (a JSON "body_b64"). Decoders only make well-formed
 * JSON and BASE64 bodies; encoders may rely on that.
 */
enum sb_op_body_form {
    SB_OP_BODY_BYTES = 0,
    SB_OP_BODY_JSON = 1,
    SB_OP_BODY_BASE64 = 2,
};

struct sb_op_body {
    uint8_t form; /* enum sb_op_body_form */
    struct sb_slice data;
};

struct sb_ops_list_iter;

/*
 * Reads the next item of a list into *item (whose type the list's field names). Returns 1 with an
 * item, 0 after the last one, or -EBADMSG when the raw bytes do not hold `count` valid items.
 */
typedef int (*sb_ops_list_next_cb)(struct sb_ops_list_iter *it, void *item);

/*
 * A bounded list. `raw` holds the items in the encoding named by `next`, which reads them; an
 * empty list may have a NULL `next`. To build one for encoding, use the encoding's list writer
 * (sb_binproto_list_*), or point `next` at your own iterator over any storage.
 */
struct sb_ops_list {
    uint32_t count;
    struct sb_slice raw;
    sb_ops_list_next_cb next;
};

/* Iteration state: zero-filled plus `list`, as sb_ops_list_begin makes it. */
struct sb_ops_list_iter {
    const struct sb_ops_list *list;
    size_t off;     /* where the next item starts in list->raw */
    uint32_t index; /* items read so far */
};

/* A conversation and the last sequence number the client has of it (HELLO, SYNC). */
struct sb_op_resume {
    uint64_t last_seq;
    struct sb_slice conv;
};

struct sb_op_hello {
    struct sb_slice token;     /* a JWT; may be empty on WebSocket (the upgrade authenticated) */
    struct sb_slice device;    /* empty: the server names the device */
    struct sb_ops_list resume; /* of struct sb_op_resume */
};

struct sb_op_welcome {
    uint64_t session;
    uint64_t server_time_ms;
    uint32_t max_frame;        /* the largest frame (or JSON message) the server accepts */
    uint32_t max_body;         /* the largest SEND body */
    uint32_t ping_interval_ms; /* 0: the server never pings */
    uint32_t messages_per_s;   /* a device's request rate (bursts of twice that) */
    uint32_t bytes_per_s;      /* a device's byte rate (bursts of twice that) */
    uint32_t max_group_members;
    struct sb_slice user;
    struct sb_slice device;
};

/* Exactly one of conv and to is non-empty. */
struct sb_op_send {
    struct sb_slice client_id;
    struct sb_slice conv;
    struct sb_slice to; /* a user: the direct conversation with them */
    struct sb_op_body body;
};

struct sb_op_ack {
    uint64_t msg_id;
    uint64_t seq;
    uint64_t ts_ms;
    bool is_duplicate;
    struct sb_slice client_id;
    struct sb_slice conv;
};

/*
 * Also the item of SYNC_PAGE's list. A system message has a subject (which may be empty only
 * for CREATED) and an empty BYTES body; an ordinary one an empty subject.
 */
struct sb_op_message {
    uint64_t msg_id;
    uint64_t seq;
    uint64_t ts_ms;
    uint8_t system; /* enum sb_op_system */
    struct sb_slice conv;
    struct sb_slice from;
    struct sb_slice device;
    struct sb_slice subject;
    struct sb_op_body body;
};

/*
 * From a client exactly one of conv and to (a user: the direct conversation with them) is
 * non-empty and user is empty; from the server conv is set, to is empty and user names the
 * reader.
 */
struct sb_op_receipt {
    uint64_t seq;
    uint8_t kind; /* enum sb_op_receipt_kind */
    struct sb_slice conv;
    struct sb_slice to;
    struct sb_slice user;
};

/* conv, to and user as for RECEIPT. */
struct sb_op_typing {
    struct sb_slice conv;
    struct sb_slice to;
    struct sb_slice user;
};

/* PRESENCE_SUB and PRESENCE_UNSUB. */
struct sb_op_users {
    struct sb_ops_list users; /* of struct sb_slice */
};

struct sb_op_presence {
    uint64_t last_seen_ms; /* 0: never seen */
    uint8_t status;        /* enum sb_op_presence_status */
    struct sb_slice user;
};

/* At most one of cursor and convs is non-empty. */
struct sb_op_sync {
    uint16_t limit; /* messages per page; 0: the server's default */
    struct sb_slice cursor;
    struct sb_ops_list convs; /* of struct sb_op_resume */
};

/* One conversation's page of a SYNC. */
struct sb_op_sync_page {
    uint64_t last_seq; /* the last message's seq; for an empty page the conversation's last */
    bool has_more;     /* SYNC this conversation again from last_seq */
    bool truncated;    /* messages after the requested seq were gone; the page starts at the oldest
                          kept */
    struct sb_slice conv;
    struct sb_ops_list messages; /* of struct sb_op_message */
};

/* Ends a SYNC by cursor: every page of it has been sent. */
struct sb_op_sync_done {
    struct sb_slice cursor;
};

struct sb_op_conv_create {
    struct sb_slice name;
    struct sb_ops_list members; /* of struct sb_slice */
};

/* CONV_ADD, CONV_REMOVE, CONV_PROMOTE and CONV_DEMOTE. */
struct sb_op_conv_members {
    struct sb_slice conv;
    struct sb_ops_list users; /* of struct sb_slice */
};

/* CONV_LEAVE and CONV_GET, and CONV_RENAME (which also has a name). */
struct sb_op_conv_ref {
    struct sb_slice conv;
    struct sb_slice name;
};

/*
 * A conversation as the asking user sees it. name and owner are empty for a direct
 * conversation (whose id starts "dm:"; a group's starts "g:").
 */
struct sb_op_conv {
    uint64_t last_seq;
    uint64_t read_seq; /* the asking user's read cursor */
    struct sb_slice conv;
    struct sb_slice name;
    struct sb_slice owner;
    struct sb_ops_list admins;  /* of struct sb_slice */
    struct sb_ops_list members; /* of struct sb_slice */
};

/* The item of CONVS' list: a conversation without its member lists. */
struct sb_op_conv_summary {
    uint64_t last_seq;
    uint64_t read_seq;
    uint32_t member_count;
    struct sb_slice conv;
    struct sb_slice name;
    struct sb_slice owner;
};

struct sb_op_convs {
    struct sb_ops_list convs; /* of struct sb_op_conv_summary */
};

/* The item of DEVICE_LIST's list: one online device of the user. */
struct sb_op_device {
    uint64_t session;
    uint64_t connected_s;  /* seconds since it connected */
    uint64_t queued_bytes; /* output waiting to be sent to it */
    uint32_t behind;       /* conversations it is behind in */
    struct sb_slice device;
    /* Cluster mode: the node it is connected to (the others' devices have no session, age,
     * queue or behind: 0). Empty standalone. */
    struct sb_slice node;
};

struct sb_op_device_list {
    struct sb_slice user;
    struct sb_ops_list devices; /* of struct sb_op_device */
};

/* conv is set when the error is about one conversation of the request (a SYNC's, say). */
struct sb_op_error {
    uint16_t code; /* enum sb_op_err; a receiver reads an unknown code as INTERNAL */
    uint32_t retry_after_ms;
    struct sb_slice message;
    struct sb_slice conv;
};

/* PING and PONG: a PONG carries its PING's request id and data. */
struct sb_op_ping {
    struct sb_slice data; /* opaque, at most SB_OPS_PING_MAX bytes */
};

struct sb_op_behind {
    uint64_t seq;
    struct sb_slice conv;
};

struct sb_op_goaway {
    uint32_t reconnect_after_ms;
    struct sb_slice reason;
};

/*
 * One operation. request_id is the binary header's request id (0: none); an answer carries its
 * request's id. The JSON encoding names requests with a string "id" instead, kept in json_id
 * (the binary codec leaves it empty and ignores it). CONV_LIST and DEVICES have no fields.
 */
struct sb_op {
    enum sb_op_type type;
    uint32_t request_id;
    struct sb_slice json_id;
    union {
        struct sb_op_hello hello;
        struct sb_op_welcome welcome;
        struct sb_op_send send;
        struct sb_op_ack ack;
        struct sb_op_message message;
        struct sb_op_receipt receipt;
        struct sb_op_typing typing;
        struct sb_op_users presence_sub; /* PRESENCE_SUB and PRESENCE_UNSUB */
        struct sb_op_presence presence;
        struct sb_op_sync sync;
        struct sb_op_sync_page sync_page;
        struct sb_op_sync_done sync_done;
        struct sb_op_conv_create conv_create;
        struct sb_op_conv_members conv_members; /* CONV_ADD, _REMOVE, _PROMOTE, _DEMOTE */
        struct sb_op_conv_ref conv_ref;         /* CONV_LEAVE, CONV_GET and CONV_RENAME */
        struct sb_op_conv conv;
        struct sb_op_convs convs;
        struct sb_op_device_list device_list;
        struct sb_op_error error;
        struct sb_op_ping ping; /* PING and PONG */
        struct sb_op_behind behind;
        struct sb_op_goaway goaway;
    } u;
};

/* Starts iterating over list (borrowed for the iteration). */
static inline void sb_ops_list_begin(struct sb_ops_list_iter *it, const struct sb_ops_list *list)
{
    it->list = list;
    it->off = 0;
    it->index = 0;
}

/* The list's next item: 1 with *item filled, 0 at the end, -EBADMSG for broken raw bytes. */
static inline int sb_ops_list_next(struct sb_ops_list_iter *it, void *item)
{
    if (it->list->next == NULL) {
        return 0;
    }
    return it->list->next(it, item);
}

/*
 * The operation's name in the JSON mapping ("send", "conv_add", ...), or NULL when unknown.
 * Names are unique per direction: DEVICES (c→s) and DEVICE_LIST (s→c) are both "devices".
 */
static inline const char *sb_ops_type_name(unsigned type)
{
    static const char *const names[256] = {
        [SB_OP_HELLO] = "hello",
        [SB_OP_SEND] = "send",
        [SB_OP_RECEIPT] = "receipt",
        [SB_OP_TYPING] = "typing",
        [SB_OP_PRESENCE_SUB] = "presence_sub",
        [SB_OP_PRESENCE_UNSUB] = "presence_unsub",
        [SB_OP_SYNC] = "sync",
        [SB_OP_CONV_CREATE] = "conv_create",
        [SB_OP_CONV_ADD] = "conv_add",
        [SB_OP_CONV_REMOVE] = "conv_remove",
        [SB_OP_CONV_LEAVE] = "conv_leave",
        [SB_OP_CONV_RENAME] = "conv_rename",
        [SB_OP_CONV_LIST] = "conv_list",
        [SB_OP_PING] = "ping",
        [SB_OP_PONG] = "pong",
        [SB_OP_CONV_PROMOTE] = "conv_promote",
        [SB_OP_CONV_DEMOTE] = "conv_demote",
        [SB_OP_CONV_GET] = "conv_get",
        [SB_OP_DEVICES] = "devices",
        [SB_OP_WELCOME] = "welcome",
        [SB_OP_ACK] = "ack",
        [SB_OP_MESSAGE] = "message",
        [SB_OP_PRESENCE] = "presence",
        [SB_OP_SYNC_PAGE] = "sync_page",
        [SB_OP_CONV] = "conv",
        [SB_OP_CONVS] = "convs",
        [SB_OP_ERROR] = "error",
        [SB_OP_BEHIND] = "behind",
        [SB_OP_GOAWAY] = "goaway",
        [SB_OP_SYNC_DONE] = "sync_done",
        [SB_OP_DEVICE_LIST] = "devices", /* the answer to "devices" has the request's name */
    };

    return type < 256 ? names[type] : NULL;
}

/* The error code's name ("bad_request", ...), or NULL when unknown. */
static inline const char *sb_ops_err_name(unsigned code)
{
    static const char *const names[] = {
        [SB_OP_ERR_BAD_REQUEST] = "bad_request", [SB_OP_ERR_UNAUTHORIZED] = "unauthorized",
        [SB_OP_ERR_FORBIDDEN] = "forbidden",     [SB_OP_ERR_NOT_FOUND] = "not_found",
        [SB_OP_ERR_TOO_LARGE] = "too_large",     [SB_OP_ERR_RATE_LIMITED] = "rate_limited",
        [SB_OP_ERR_CONFLICT] = "conflict",       [SB_OP_ERR_UNAVAILABLE] = "unavailable",
        [SB_OP_ERR_INTERNAL] = "internal",       [SB_OP_ERR_UNSUPPORTED] = "unsupported",
    };

    return code < sizeof(names) / sizeof(names[0]) ? names[code] : NULL;
}

#endif
