/*
 * WebSocket as the engine's protocol: the upgrade on connect, frames afterwards. Pings are
 * answered here, so every scenario keeps its connections alive without knowing about them.
 *
 * With --proto ws-bin the upgrade offers the subprotocol switchboard.v1 and every binary
 * message carries exactly one frame of the binary protocol: the payloads are streamed into the
 * same frame reassembly as raw TCP (lg_bin.h), so a frame of any size arrives whole, and the
 * session (HELLO, WELCOME, PING) is lg_proto_bin.c's. The connection counts as established at
 * WELCOME, not at the 101.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen/lg_auth.h"
#include "loadgen/lg_loop.h"
#include "proto/binproto.h"

/* Returned by the message callback to stop parsing after a close frame; not an error. */
#define STOP_PARSE (-ECONNABORTED)

struct parse_ctx {
    struct lg_worker *w;
    struct lg_conn *c;
};

/* A broken stream: a failed attempt while ws-bin waits for WELCOME, a protocol error after. */
static void conn_broken(struct lg_worker *w, struct lg_conn *c)
{
    if (c->state == LG_CS_HANDSHAKE)
        lg_conn_fail(w, c, LG_C_FAIL_HANDSHAKE);
    else
        lg_conn_drop(w, c, LG_C_PROTO_ERRORS, false);
}

static void ws_connected(struct lg_worker *w, struct lg_conn *c)
{
    const struct lg_config *cfg = w->cfg;
    const char *path = cfg->path;
    char own[LG_PATH_MAX + LG_AUTH_TOKEN_MAX + 64];
    bool ws_bin = cfg->wire == LG_WIRE_WS_BIN;
    if (LG_MODE_IS_MSGR(cfg->mode) || ws_bin) {
        /* Users authenticate on the upgrade (?token=), as a browser does. */
        if (lg_auth_path(cfg, c->id, own, sizeof(own)) < 0) {
            lg_conn_fail(w, c, LG_C_FAIL_OTHER);
            return;
        }
        path = own;
    }
    size_t cap = 256 + strlen(path);
    uint8_t *p = lg_conn_tx_reserve(w, c, cap);
    uint8_t nonce[16];
    lg_rand_fill(&w->rng, nonce, sizeof(nonce));
    ssize_t n = p ? lg_ws_request((char *)p, cap, cfg->targets[c->id % cfg->ntargets].text, path,
                                  ws_bin ? SB_BINPROTO_SUBPROTOCOL : NULL, nonce, c->key)
                  : -ENOBUFS;
    if (n < 0) {
        lg_conn_fail(w, c, LG_C_FAIL_OTHER);
        return;
    }
    lg_conn_tx_commit(w, c, (size_t)n);
}

static int ws_send(struct lg_worker *w, struct lg_conn *c, uint8_t opcode, const void *payload,
                   size_t len)
{
    uint8_t *p = lg_conn_tx_reserve(w, c, lg_ws_frame_len(len));
    if (!p)
        return -ENOBUFS;
    /* RFC 6455 5.3: a fresh, unpredictable key for every frame. */
    uint32_t mask = (uint32_t)lg_rand_next(&w->rng);
    lg_conn_tx_commit(w, c, lg_ws_frame(p, opcode, payload, len, mask));
    return 0;
}

/* One binary-protocol frame as one masked binary message, encoded in place in the queue. */
static int ws_send_op(struct lg_worker *w, struct lg_conn *c, const struct sb_op *op)
{
    ssize_t size = sb_binproto_size(op);
    if (size < 0)
        return -EINVAL;
    uint8_t *p = lg_conn_tx_reserve(w, c, lg_ws_frame_len((uint64_t)size));
    if (!p)
        return -ENOBUFS;
    uint32_t mask = (uint32_t)lg_rand_next(&w->rng);
    uint8_t key[4];
    memcpy(key, &mask, 4);
    size_t h = sb_ws_encode_header(p, true, SB_WS_BINARY, (uint64_t)size, key);
    if (sb_binproto_encode(op, p + h, (size_t)size) != size)
        return -EINVAL;
    sb_ws_unmask(p + h, (size_t)size, key, 0); /* masking is the same XOR */
    lg_conn_tx_commit(w, c, h + (size_t)size);
    return 0;
}

static void ws_close(struct lg_worker *w, struct lg_conn *c, uint16_t code)
{
    if (c->flags & LG_CF_CLOSE_SENT)
        return;
    uint8_t payload[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    ws_send(w, c, SB_WS_CLOSE, payload, sizeof(payload));
    c->flags |= LG_CF_CLOSE_SENT;
}

static int on_close_frame(struct lg_worker *w, struct lg_conn *c, const struct lg_ws_msg *m)
{
    if (c->flags & LG_CF_CLOSE_SENT)
        return STOP_PARSE; /* the answer to ours: now the server closes TCP */
    if (c->state == LG_CS_HANDSHAKE) {
        lg_conn_fail(w, c, LG_C_FAIL_HANDSHAKE); /* ws-bin: closed before WELCOME */
        return STOP_PARSE;
    }
    uint16_t code;
    if (sb_ws_parse_close(m->head, m->head_len, &code) < 0) {
        lg_conn_drop(w, c, LG_C_PROTO_ERRORS, false);
        return STOP_PARSE;
    }
    /* Echo the code as RFC 6455 5.5.1 suggests; 1005 means "none" and never goes on the wire. */
    ws_close(w, c, code == SB_WS_CLOSE_NO_STATUS ? SB_WS_CLOSE_NORMAL : code);
    lg_conn_drop(w, c, LG_C_CLOSED_BY_SERVER, true);
    return STOP_PARSE;
}

/* ws-bin: payload bytes of a data message, into the binary frame stream. */
static int bin_frame(void *ctx, const uint8_t *frame, size_t len)
{
    struct parse_ctx *x = ctx;
    x->c->msg_frames = x->c->msg_frames < 2 ? (uint8_t)(x->c->msg_frames + 1) : 2;
    return lg_bin_frame(x->w, x->c, &lg_proto_ws, frame, len);
}

static int on_stream(void *ctx, uint8_t opcode, const uint8_t *data, size_t len)
{
    struct parse_ctx *x = ctx;
    struct lg_worker *w = x->w;
    struct lg_conn *c = x->c;
    if (opcode != SB_WS_BINARY) {
        conn_broken(w, c); /* a text message on a switchboard.v1 connection */
        return STOP_PARSE;
    }
    int err = lg_bin_feed(&c->brx, data, len, LG_BIN_FRAME_MAX, bin_frame, x);
    if (err < 0 && err != STOP_PARSE)
        conn_broken(w, c);
    return err < 0 ? STOP_PARSE : 0;
}

/* ws-bin: a binary message ended; it must have held exactly one whole frame. */
static int on_bin_message(struct lg_worker *w, struct lg_conn *c)
{
    bool one = c->msg_frames == 1 && lg_bin_rx_idle(&c->brx);
    c->msg_frames = 0;
    if (!one && (c->state == LG_CS_HANDSHAKE || c->state == LG_CS_OPEN))
        conn_broken(w, c);
    return c->state == LG_CS_HANDSHAKE || c->state == LG_CS_OPEN ? 0 : STOP_PARSE;
}

static int on_message(void *ctx, const struct lg_ws_msg *m)
{
    struct parse_ctx *x = ctx;
    struct lg_worker *w = x->w;
    struct lg_conn *c = x->c;
    switch (m->opcode) {
    case SB_WS_PING:
        if (c->state == LG_CS_OPEN ||
            (c->state == LG_CS_HANDSHAKE && (c->flags & LG_CF_UPGRADED))) {
            if (ws_send(w, c, SB_WS_PONG, m->head, m->head_len) < 0) {
                lg_conn_drop(w, c, LG_C_DROPPED, false);
                return STOP_PARSE;
            }
            w->stats.c[LG_C_PINGS]++;
        }
        return 0;
    case SB_WS_CLOSE:
        return on_close_frame(w, c, m);
    case SB_WS_TEXT:
    case SB_WS_BINARY:
        if (c->flags & LG_CF_UPGRADED)
            return on_bin_message(w, c);
        if (c->state == LG_CS_OPEN && w->scn->message)
            w->scn->message(w, c, m);
        return c->state == LG_CS_OPEN ? 0 : STOP_PARSE;
    default:
        return 0; /* pongs: we never ping */
    }
}

static void parse_frames(struct lg_worker *w, struct lg_conn *c, const uint8_t *data, size_t len)
{
    struct parse_ctx x = {w, c};
    int err = lg_ws_parse(&c->rx, data, len, on_message, &x);
    if (err < 0 && err != STOP_PARSE) {
        /* Answering a broken stream with a close frame would be polite but pointless. */
        conn_broken(w, c);
    }
}

/*
 * Handles bytes of the 101 response. The usual case has the whole head in one read and is
 * checked in place; a head split across reads is gathered in c->hs first.
 */
static void on_response(struct lg_worker *w, struct lg_conn *c, const uint8_t *data, size_t len)
{
    const char *buf = (const char *)data;
    size_t blen = len, taken = len;
    if (c->hs) {
        taken = LG_WS_RESPONSE_MAX - c->hs_len < len ? LG_WS_RESPONSE_MAX - c->hs_len : len;
        memcpy(c->hs + c->hs_len, data, taken);
        c->hs_len = (uint16_t)(c->hs_len + taken);
        buf = c->hs;
        blen = c->hs_len;
    }
    int status = 0;
    bool ws_bin = w->cfg->wire == LG_WIRE_WS_BIN;
    ssize_t head =
        lg_ws_check_response(buf, blen, c->key, ws_bin ? SB_BINPROTO_SUBPROTOCOL : NULL, &status);
    if (head == -EAGAIN) {
        if (!c->hs) {
            c->hs = malloc(LG_WS_RESPONSE_MAX);
            if (!c->hs) {
                lg_conn_fail(w, c, LG_C_FAIL_OTHER);
                return;
            }
            memcpy(c->hs, data, len);
            c->hs_len = (uint16_t)len;
        }
        return;
    }
    if (head < 0) {
        if (head == -EPROTO && w->stats.status_sample == 0)
            w->stats.status_sample = status;
        lg_conn_fail(w, c, head == -EPROTO ? LG_C_FAIL_STATUS : LG_C_FAIL_HANDSHAKE);
        return;
    }
    /* Frames may follow the head at once, in the gathered copy and in data past it. */
    const uint8_t *rest = (const uint8_t *)buf + head;
    size_t rest_len = blen - (size_t)head;
    char *hs = c->hs;
    c->hs = NULL;
    if (ws_bin) {
        /* Upgraded; the session opens with HELLO and is established at its WELCOME. */
        c->flags |= LG_CF_UPGRADED;
        c->rx.stream = on_stream;
        if (lg_bin_hello(w, c, &lg_proto_ws) < 0)
            lg_conn_fail(w, c, LG_C_FAIL_OTHER);
    } else {
        lg_conn_established(w, c);
    }
    if (rest_len > 0 && (c->state == LG_CS_OPEN || c->state == LG_CS_HANDSHAKE))
        parse_frames(w, c, rest, rest_len);
    if (taken < len && (c->state == LG_CS_OPEN || c->state == LG_CS_HANDSHAKE))
        parse_frames(w, c, data + taken, len - taken);
    free(hs);
}

static void ws_data(struct lg_worker *w, struct lg_conn *c, const uint8_t *data, size_t len)
{
    if (c->state == LG_CS_HANDSHAKE && (c->flags & LG_CF_UPGRADED))
        parse_frames(w, c, data, len); /* ws-bin, waiting for WELCOME */
    else if (c->state == LG_CS_HANDSHAKE)
        on_response(w, c, data, len);
    else if (c->state == LG_CS_OPEN || c->state == LG_CS_CLOSING)
        parse_frames(w, c, data, len);
}

const struct lg_proto lg_proto_ws = {
    .name = "ws",
    .connected = ws_connected,
    .data = ws_data,
    .send = ws_send,
    .close = ws_close,
    .send_op = ws_send_op,
};
