#include "loadgen/lg_scn_msg.h"

#include <string.h>

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
    int err = lg_conn_send(w, c, w->payload, (size_t)size);
    if (err < 0)
        return err;
    c->seq_out++;
    w->sc.outstanding++;
    w->stats.c[LG_C_MSGS_SENT]++;
    w->stats.c[LG_C_BYTES_SENT] += size;
    return 0;
}

bool lg_msg_check(struct lg_worker *w, struct lg_conn *c, const struct lg_ws_msg *m)
{
    uint64_t size = w->cfg->size;
    uint64_t seq = c->seq_in;
    struct lg_stats *s = &w->stats;
    s->c[LG_C_MSGS_RECV]++;
    s->c[LG_C_BYTES_RECV] += m->len;
    if (c->seq_in < c->seq_out) {
        c->seq_in++;
        w->sc.outstanding--;
    }
    bool ok = m->opcode == SB_WS_BINARY && m->len == size && seq < c->seq_out;
    if (ok && size >= 8) {
        uint64_t got;
        memcpy(&got, m->head, 8);
        ok = got == seq;
    } else if (ok) {
        ok = memcmp(m->head, &seq, (size_t)size) == 0;
    }
    if (!ok) {
        s->c[LG_C_MISMATCHED]++;
        return false;
    }
    if (size >= 16) {
        uint64_t t;
        memcpy(&t, m->head + 8, 8);
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
