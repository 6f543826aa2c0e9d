/*
 * The JSON messaging protocol (docs/protocol.md, /ws) as the chat and fanout scenarios speak it:
 * request paths with a token, send and conv_create requests, and the reading of what the server
 * sends back. Pure functions on caller-owned bytes: no I/O, no allocation, any thread.
 *
 * Every message body loadgen sends is a stamp of exactly the body size: "T" + 16 hex digits of
 * the send time, "N" + 16 of the message number, "F" + 8 of the sender, then '.' filler. Bodies
 * never need escaping, so a delivery is recognised from its last bytes (`"body":"<stamp>"}`)
 * without parsing the JSON; anything else goes through the tokenizer of proto/json.h.
 */
#ifndef SB_LOADGEN_LG_MSGR_H
#define SB_LOADGEN_LG_MSGR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LG_MSGR_STAMP_LEN 43 /* T + 16, N + 16, F + 8 */
#define LG_MSGR_BODY_MIN 48
#define LG_MSGR_BODY_MAX 2048
#define LG_MSGR_USER_MAX 24 /* "lg" + a connection number, NUL included */
#define LG_MSGR_CONV_MAX 64 /* a conversation id as the server names it, NUL included */
#define LG_MSGR_GATHER 6144 /* bytes of each received message kept for parsing */

/* What the server sent, from the "type" field. */
enum lg_msgr_kind {
    LG_MK_OTHER,
    LG_MK_MESSAGE,
    LG_MK_ACK,
    LG_MK_CONV,
    LG_MK_ERROR,
    LG_MK_WELCOME,
    LG_MK_BEHIND, /* a slow-consumer notice: pushes of a conversation stopped (sync to resume) */
};

struct lg_msgr_stamp {
    uint64_t t; /* send time (CLOCK_MONOTONIC ns; the intended time in open loop) */
    uint64_t n; /* the sender's message number */
    uint32_t from;
};

/* Writes the user id of connection id ("lg42"). Returns its length or -ENOSPC. */
ssize_t lg_msgr_user(char *out, size_t cap, uint32_t id);

/* Writes base + "?token=" + token + "&device=lg" ('&' instead of '?' when base has a query). */
ssize_t lg_msgr_path(char *out, size_t cap, const char *base, const char *token);

/* Writes a body of exactly size bytes (LG_MSGR_BODY_MIN..LG_MSGR_BODY_MAX) carrying *s. */
void lg_msgr_body(char *out, size_t size, const struct lg_msgr_stamp *s);

/* Reads a body written by lg_msgr_body. Returns 0 or -EBADMSG. */
int lg_msgr_body_parse(const char *body, size_t len, struct lg_msgr_stamp *s);

#define LG_MSGR_CLIENT_ID_MAX 48 /* "<run>.<n hex>.<t hex>", NUL included */

/*
 * Writes the client id of message n sent at time t, "<run>.<n hex>.<t hex>": unique per run,
 * so no send is a duplicate, and the ack is timed from its own id. Returns its length or
 * -ENOSPC.
 */
ssize_t lg_msgr_client_id(char *out, size_t cap, const char *run, uint64_t n, uint64_t t);

/* Reads the send time back out of a client id of this run. Returns 0, or -EBADMSG when the id
 * is not one of ours. */
int lg_msgr_client_id_time(const char *id, size_t len, const char *run, uint64_t *t);

/*
 * Writes a send request: {"type":"send","id":"<run>.<n hex>.<t hex>","to"|"conv":dest,
 * "body":body}. The client id is unique per run and carries the send time, so the ack is timed
 * from its own id. Returns the length or -ENOSPC.
 */
ssize_t lg_msgr_send(char *out, size_t cap, const char *run, uint64_t n, uint64_t t, bool to_user,
                     const char *dest, const char *body, size_t body_len);

/*
 * Writes {"type":"conv_create","id":id,"name":id,"members":[...]} with the users of connections
 * first .. first + count - 1 except skip; with conv (a group's id) instead
 * {"type":"conv_add","id":id,"conv":conv,"users":[...]}. Returns the length or -ENOSPC.
 */
ssize_t lg_msgr_conv_create(char *out, size_t cap, const char *id, const char *conv, uint32_t first,
                            uint32_t count, uint32_t skip);

/* Classifies a server message by its "type" (a prefix check first, the tokenizer if that fails). */
enum lg_msgr_kind lg_msgr_kind(const char *p, size_t len);

/*
 * Reads a delivery (a "message"): 1 when it is one of ours, with its stamp in *s; 0 when it
 * carries no body of ours (a system message, another client's body); -EBADMSG when it is not a
 * message at all. body_size is the size loadgen sends.
 */
int lg_msgr_delivery(const char *p, size_t len, size_t body_size, struct lg_msgr_stamp *s);

/*
 * Reads the send time out of an ack to one of our sends ("id":"<run>.<n>.<t>"). Returns 0, or
 * -EBADMSG when the id is not ours.
 */
int lg_msgr_ack(const char *p, size_t len, const char *run, uint64_t *t);

/*
 * Reads the answer to a conv_create: its "id" (copied to id, cap idcap) and its "conv" (the
 * group's id, copied to conv). Only the start of the answer is needed: the member list that
 * follows may be cut off. Both must be ids ([A-Za-z0-9_.@:-]+). Returns 0 or -EBADMSG.
 */
int lg_msgr_conv(const char *p, size_t len, char *id, size_t idcap, char *conv, size_t convcap);

/* Copies the "code" and "message" of an error (for a report line) into out. */
void lg_msgr_error_text(const char *p, size_t len, char *out, size_t cap);

#endif
