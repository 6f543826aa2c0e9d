/*
 * The binary protocol (docs/protocol-binary.md) as the engine's protocol on raw TCP
 * (--proto bin), and the session both of its transports share (lg_proto_ws.c runs it for
 * ws-bin). Frames are cut out of the stream by lg_bin.h and decoded and encoded by
 * proto/binproto.c, the codec the server uses: loadgen has no codec of its own.
 *
 * The session opens with HELLO and counts as established at WELCOME, so the handshake
 * latency covers the authentication. Server PINGs are answered here, like WebSocket pings.
 * There is no close frame: the polite close is a half-close once the queue has drained, which
 * the server answers by closing its side.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "loadgen/lg_auth.h"
#include "loadgen/lg_loop.h"
#include "proto/binproto.h"

/* Returned to stop reading a connection that has ended; not an error. */
#define STOP_PARSE (-ECONNABORTED)
#define HELLO_ID 1 /* the request id of the HELLO, which the WELCOME carries back */

/* One sample of a refused HELLO goes to stderr per process. */
static _Atomic int refusal_shown;

struct frame_ctx {
    struct lg_worker *w;
    struct lg_conn *c;
};

static bool reading(const struct lg_conn *c)
{
    return c->state == LG_CS_HANDSHAKE || c->state == LG_CS_OPEN;
}

/* A broken stream: a failed attempt before WELCOME, a protocol error after. */
static void conn_broken(struct lg_worker *w, struct lg_conn *c)
{
    if (c->state == LG_CS_HANDSHAKE)
        lg_conn_fail(w, c, LG_C_FAIL_HANDSHAKE);
    else
        lg_conn_drop(w, c, LG_C_PROTO_ERRORS, false);
}

int lg_bin_hello(struct lg_worker *w, struct lg_conn *c, const struct lg_proto *via)
{
    char token[LG_AUTH_TOKEN_MAX];
    struct sb_op op;
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_HELLO;
    op.request_id = HELLO_ID;
    if (w->cfg->wire == LG_WIRE_BIN) {
        /* On WebSocket the upgrade carried the token and ?device=; here the HELLO does. */
        ssize_t n = lg_auth_token(w->cfg, c->id, token, sizeof(token));
        if (n < 0)
            return (int)n;
        op.u.hello.token = sb_slice_from(token, (size_t)n);
        op.u.hello.device = sb_slice_from(LG_AUTH_DEVICE, strlen(LG_AUTH_DEVICE));
    }
    return via->send_op(w, c, &op);
}

/* Before WELCOME: the answer to our HELLO. */
static int on_hello_answer(struct lg_worker *w, struct lg_conn *c, const struct sb_op *op)
{
    if (op->type == SB_OP_WELCOME && op->request_id == HELLO_ID) {
        lg_conn_established(w, c);
        return c->state == LG_CS_OPEN ? 0 : STOP_PARSE;
    }
    if (op->type == SB_OP_ERROR) {
        const struct sb_op_error *e = &op->u.error;
        const char *name = sb_ops_err_name(e->code);
        if (!atomic_exchange(&refusal_shown, 1))
            fprintf(stderr, "switchboard-loadgen: the server refused the HELLO of lg%u: %s: %.*s\n",
                    c->id, name ? name : "internal", (int)e->message.len, e->message.base);
        /* unauthorized is the binary protocol's HTTP 401: reported alike, with its hint. */
        if (e->code == SB_OP_ERR_UNAUTHORIZED) {
            if (w->stats.status_sample == 0)
                w->stats.status_sample = 401;
            lg_conn_fail(w, c, LG_C_FAIL_STATUS);
            return STOP_PARSE;
        }
    }
    lg_conn_fail(w, c, LG_C_FAIL_HANDSHAKE);
    return STOP_PARSE;
}

int lg_bin_frame(struct lg_worker *w, struct lg_conn *c, const struct lg_proto *via,
                 const uint8_t *frame, size_t len)
{
    if (!reading(c))
        return STOP_PARSE;
    struct sb_binproto_header hdr;
    struct sb_op op;
    int err = sb_binproto_decode_frame(frame, len, LG_BIN_FRAME_MAX, &hdr, &op);
    if (err == -EOPNOTSUPP)
        return 0; /* a type added after this client was built: skipped, as the spec asks */
    if (err < 0) {
        conn_broken(w, c);
        return STOP_PARSE;
    }
    if (c->state == LG_CS_HANDSHAKE)
        return on_hello_answer(w, c, &op);
    switch (op.type) {
    case SB_OP_PING: {
        struct sb_op pong = op;
        pong.type = SB_OP_PONG;
        if (via->send_op(w, c, &pong) < 0) {
            lg_conn_drop(w, c, LG_C_DROPPED, false);
            return STOP_PARSE;
        }
        w->stats.c[LG_C_PINGS]++;
        return 0;
    }
    case SB_OP_GOAWAY:
        /* The server is shutting down: it closes, we stop sending. */
        lg_conn_drop(w, c, LG_C_CLOSED_BY_SERVER, true);
        via->close(w, c, SB_WS_CLOSE_GOING_AWAY);
        return STOP_PARSE;
    default:
        if (w->scn->message) {
            struct lg_ws_msg m = {SB_WS_BINARY, len, frame, len, &op};
            w->scn->message(w, c, &m);
        }
        return c->state == LG_CS_OPEN ? 0 : STOP_PARSE;
    }
}

static void bin_connected(struct lg_worker *w, struct lg_conn *c)
{
    if (lg_bin_hello(w, c, &lg_proto_bin) < 0)
        lg_conn_fail(w, c, LG_C_FAIL_OTHER);
}

static int on_frame(void *ctx, const uint8_t *frame, size_t len)
{
    struct frame_ctx *x = ctx;
    return lg_bin_frame(x->w, x->c, &lg_proto_bin, frame, len);
}

static void bin_data(struct lg_worker *w, struct lg_conn *c, const uint8_t *data, size_t len)
{
    if (!reading(c))
        return; /* closing: answers still in flight are of no interest */
    struct frame_ctx x = {w, c};
    int err = lg_bin_feed(&c->brx, data, len, LG_BIN_FRAME_MAX, on_frame, &x);
    if (err < 0 && err != STOP_PARSE)
        conn_broken(w, c);
}

/* Raw bytes, already a frame (or several): nothing to wrap them in on raw TCP. */
static int bin_send(struct lg_worker *w, struct lg_conn *c, uint8_t opcode, const void *payload,
                    size_t len)
{
    (void)opcode;
    uint8_t *p = lg_conn_tx_reserve(w, c, len);
    if (!p)
        return -ENOBUFS;
    memcpy(p, payload, len);
    lg_conn_tx_commit(w, c, len);
    return 0;
}

static int bin_send_op(struct lg_worker *w, struct lg_conn *c, const struct sb_op *op)
{
    ssize_t size = sb_binproto_size(op);
    if (size < 0)
        return -EINVAL;
    uint8_t *p = lg_conn_tx_reserve(w, c, (size_t)size);
    if (!p)
        return -ENOBUFS;
    if (sb_binproto_encode(op, p, (size_t)size) != size)
        return -EINVAL;
    lg_conn_tx_commit(w, c, (size_t)size);
    return 0;
}

static void bin_close(struct lg_worker *w, struct lg_conn *c, uint16_t code)
{
    (void)code;
    if (c->flags & LG_CF_CLOSE_SENT)
        return;
    c->flags |= LG_CF_CLOSE_SENT;
    lg_conn_half_close(w, c);
}

const struct lg_proto lg_proto_bin = {
    .name = "bin",
    .connected = bin_connected,
    .data = bin_data,
    .send = bin_send,
    .close = bin_close,
    .send_op = bin_send_op,
};
