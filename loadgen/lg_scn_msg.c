#include "loadgen/lg_scn_msg.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "proto/binproto.h"
#include "proto/ops.h"

#define LG_BIN_PING_HEADER (SB_BINPROTO_HEADER_SIZE + 2) /* header, then data's u16 length */
_Static_assert(LG_BIN_PING_HEADER <= LG_PAYLOAD_HEADROOM, "a PING header fits the headroom");

/* One sample of the server's ERROR answers goes to stderr per process. */
static _Atomic int error_shown;

static void show_error(const struct lg_conn *c, const struct sb_op_error *e)
{
    if (atomic_exchange(&error_shown, 1))
        return;
    const char *name = sb_ops_err_name(e->code);
    fprintf(stderr,
            "switchboard-loadgen: the server answered a PING of lg%u with an error (%s: %.*s)\n",
            c->id, name ? name : "internal", (int)e->message.len, e->message.base);
}

/* --proto bin, ws-bin: the payload travels as the data of a PING whose request id is the
 * sequence number; the server answers PONG with both. */
static int send_ping(struct lg_worker *w, struct lg_conn *c, uint64_t seq, size_t size)
{
    /* The frame is written in front of the payload (docs/protocol-binary.md: length, version,
     * type, flags, request id, then the data as str16) and sent as one message: no encoder and
     * no copy of an operation, since the echo's whole cost is per message. */
    uint8_t *f = w->payload - LG_BIN_PING_HEADER;
    uint32_t words[3] = {
        __builtin_bswap32((uint32_t)(LG_BIN_PING_HEADER - 4 + size)),
        __builtin_bswap32((uint32_t)SB_BINPROTO_VERSION << 24 | (uint32_t)SB_OP_PING << 16),
        __builtin_bswap32((uint32_t)seq)};
    uint16_t dlen = __builtin_bswap16((uint16_t)size);
    memcpy(f, words, sizeof(words));
    memcpy(f + sizeof(words), &dlen, sizeof(dlen));
    return lg_conn_send(w, c, f, LG_BIN_PING_HEADER + size);
}

int lg_msg_send(struct lg_worker *w, struct lg_conn *c, uint64_t t)
{
    uint64_t size = w->cfg->size;
    uint64_t seq = c->seq_out;
    /* Host byte order: only this process reads the stamp back. Fixed-size copies compile to
     * plain stores; only payloads shorter than a sequence number take the general path. */
    if (size >= 8)
        memcpy(w->payload, &seq, 8);
    else
        memcpy(w->payload, &seq, (size_t)size);
    if (size >= 16)
        memcpy(w->payload + 8, &t, 8);
    int err = w->cfg->wire == LG_WIRE_WS ? lg_conn_send(w, c, w->payload, (size_t)size)
                                         : send_ping(w, c, seq, (size_t)size);
    if (err < 0)
        return err;
    c->seq_out++;
    w->sc.outstanding++;
    w->stats.c[LG_C_MSGS_SENT]++;
    w->stats.c[LG_C_BYTES_SENT] += size;
    return 0;
}

/*
 * A binary-protocol answer as a payload: a PONG's data, checked whole (the sequence number,
 * then past the time stamp the filler every message carries) since the frame is whole anyway.
 * Returns false for anything that is not the PONG of message seq.
 */
static bool pong_payload(const struct lg_worker *w, const struct sb_op *op, uint64_t seq,
                         const uint8_t **data, uint64_t *len)
{
    *data = NULL;
    *len = 0;
    if (op->type != SB_OP_PONG)
        return false;
    const struct sb_slice *d = &op->u.ping.data;
    *data = (const uint8_t *)d->base;
    *len = d->len;
    uint64_t size = w->cfg->size;
    return op->request_id == (uint32_t)seq && d->len == size &&
           (size <= 16 || memcmp(d->base + 16, w->payload + 16, (size_t)size - 16) == 0);
}

bool lg_msg_check(struct lg_worker *w, struct lg_conn *c, const struct lg_ws_msg *m)
{
    uint64_t size = w->cfg->size;
    uint64_t seq = c->seq_in;
    struct lg_stats *s = &w->stats;
    const uint8_t *head = m->head;
    uint64_t len = m->len;
    bool ok = m->opcode == SB_WS_BINARY;
    if (m->op) {
        if (m->op->type != SB_OP_PONG && m->op->type != SB_OP_ERROR) {
            s->c[LG_C_MISMATCHED]++; /* not an answer to anything we sent */
            return false;
        }
        if (m->op->type == SB_OP_ERROR)
            show_error(c, &m->op->u.error); /* rate_limited, say: the reply still counts */
        ok = pong_payload(w, m->op, seq, &head, &len);
    }
    s->c[LG_C_MSGS_RECV]++;
    s->c[LG_C_BYTES_RECV] += len;
    if (c->seq_in < c->seq_out) {
        c->seq_in++;
        w->sc.outstanding--;
    }
    ok = ok && len == size && seq < c->seq_out;
    if (ok && size >= 8) {
        uint64_t got;
        memcpy(&got, head, 8);
        ok = got == seq;
    } else if (ok) {
        ok = memcmp(head, &seq, (size_t)size) == 0;
    }
    if (!ok) {
        s->c[LG_C_MISMATCHED]++;
        return false;
    }
    if (size >= 16) {
        uint64_t t;
        memcpy(&t, head + 8, 8);
        lg_hist_record(&s->h[LG_H_LATENCY], w->now > t ? w->now - t : 0);
    }
    return true;
}

void lg_msg_conn_lost(struct lg_worker *w, struct lg_conn *c)
{
    uint64_t lost = c->seq_out - c->seq_in;
    w->stats.c[LG_C_LOST] += lost;
    w->sc.outstanding -= lost;
    c->seq_in = c->seq_out;
}

bool lg_msg_drained(struct lg_worker *w)
{
    return w->sc.outstanding == 0;
}

void lg_msg_finish(struct lg_worker *w)
{
    w->stats.c[LG_C_LOST] += w->sc.outstanding;
    w->sc.outstanding = 0;
}
