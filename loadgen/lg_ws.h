/*
 * The client side of RFC 6455 for the load generator: the upgrade request, the check of the
 * server's 101 response, masked frames, and a streaming parser for server frames.
 * Pure functions on caller-owned bytes: no I/O, no allocation. Frame headers, masking and the
 * accept key come from proto/ws.h, the same code the server uses.
 *
 * The parser keeps no payload: it delivers each data message as its opcode, total length and
 * first LG_WS_HEAD bytes (where the scenarios put a sequence number and a timestamp), and each
 * control frame whole. A caller that needs more of each message lends the parser a gather
 * buffer (struct lg_ws_rx.gather). That is all the scenarios check, and it keeps the cost of a
 * large message at one pass over its header, whatever its size or however the kernel split it.
 */
#ifndef SB_LOADGEN_LG_WS_H
#define SB_LOADGEN_LG_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/ws.h"

#define LG_WS_HEAD 16    /* payload bytes of each data message kept for the scenario */
#define LG_WS_KEY_LEN 24 /* base64 of the 16-byte nonce */
#define LG_WS_RESPONSE_MAX 4096

/*
 * Optional: receives the payload bytes of every data message as they arrive, in as many pieces
 * as the stream was cut into (never empty ones), before the message itself is delivered.
 * Returns 0 to go on or a negative errno to stop the parse.
 */
typedef int (*lg_ws_stream_cb)(void *ctx, uint8_t opcode, const uint8_t *data, size_t len);

/* Receive state of one connection. Zero-filled is the state before the first frame. */
struct lg_ws_rx {
    uint64_t remaining; /* payload bytes of the current frame still to come */
    uint64_t msg_len;   /* payload bytes of the current data message so far */
    uint8_t hdr_len;    /* bytes in hdr: a header split across reads */
    uint8_t opcode;     /* of the current frame */
    bool in_frame;      /* the header is parsed, payload bytes follow */
    bool fin;
    bool in_message; /* a fragmented data message awaits its continuation frames */
    uint8_t msg_opcode;
    uint8_t head_len;
    uint8_t ctrl_len;
    uint8_t hdr[SB_WS_MAX_HEADER];
    uint8_t head[LG_WS_HEAD];
    uint8_t ctrl[SB_WS_MAX_CONTROL];
    /* Optional, owned by the caller: when set, data messages keep their first gather_cap bytes
     * here instead of LG_WS_HEAD (the chat scenarios read a whole JSON message). */
    uint8_t *gather;
    uint32_t gather_cap;
    uint32_t gather_len;
    /* Optional, set by the caller: see lg_ws_stream_cb (called with lg_ws_parse's ctx). */
    lg_ws_stream_cb stream;
};

struct sb_op;

/* A complete data message (head = its first bytes) or control frame (head = all of it). */
struct lg_ws_msg {
    uint8_t opcode;
    uint64_t len;
    const uint8_t *head;
    size_t head_len; /* min(len, LG_WS_HEAD or gather_cap) for data, len for control frames */
    /* Binary protocol (--proto bin, ws-bin): the decoded frame; head then holds all of it. */
    const struct sb_op *op;
};

/* Called for every message; returns 0 to go on or a negative errno to stop the parse. */
typedef int (*lg_ws_msg_cb)(void *ctx, const struct lg_ws_msg *msg);

/*
 * Feeds len bytes from the server. Calls cb for each message completed by them.
 * Returns 0 when all bytes were consumed, -EPROTO for a frame that breaks RFC 6455 (a masked
 * server frame, reserved bits or opcodes, a continuation without a message or a new data frame
 * inside one), or the callback's error.
 */
int lg_ws_parse(struct lg_ws_rx *rx, const uint8_t *data, size_t len, lg_ws_msg_cb cb, void *ctx);

/*
 * Writes the upgrade request for host ("127.0.0.1:8080") and path into out, with the
 * Sec-WebSocket-Key made from nonce, offering subprotocol protocol unless it is NULL; copies
 * the key (NUL-terminated) to key. Returns the request length or -ENOSPC.
 */
ssize_t lg_ws_request(char *out, size_t cap, const char *host, const char *path,
                      const char *protocol, const uint8_t nonce[16], char key[LG_WS_KEY_LEN + 1]);

/*
 * Checks the server's answer to the request that sent key (and offered protocol, or NULL).
 * Needs the head only (bytes after it are frames). Returns the head length when it is
 * "HTTP/1.1 101" with the right Sec-WebSocket-Accept and, when protocol was offered,
 * "Sec-WebSocket-Protocol: <protocol>" (RFC 6455 4.1: else the client must fail); without an
 * offer, the response must not name a subprotocol. Otherwise:
 *   -EAGAIN   no blank line yet (and len < LG_WS_RESPONSE_MAX);
 *   -EPROTO   another status, stored in *status;
 *   -EBADMSG  malformed, missing Upgrade/Connection, a wrong or absent accept key, or the
 *             subprotocol rule above broken;
 *   -EMSGSIZE no blank line within LG_WS_RESPONSE_MAX bytes.
 */
ssize_t lg_ws_check_response(const char *buf, size_t len, const char *key, const char *protocol,
                             int *status);

/* Bytes lg_ws_frame writes for a payload of len bytes. */
static inline size_t lg_ws_frame_len(uint64_t len)
{
    return (len < 126 ? 2 : len < 65536 ? 4 : 10) + 4 + (size_t)len;
}

/*
 * Writes one final frame with opcode and payload, masked with mask (the 4 key bytes in memory
 * order), to out, which must hold lg_ws_frame_len(len) bytes. Returns the bytes written.
 */
size_t lg_ws_frame(uint8_t *out, uint8_t opcode, const void *payload, size_t len, uint32_t mask);

#endif
