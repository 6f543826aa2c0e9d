/*
 * latency: open loop. Message k of a worker is due at start + k * interval whatever happened to
 * the replies, and its latency is measured from that due time, not from when it actually left.
 * A server (or loadgen) stall therefore shows up in every message that should have been sent
 * during it, instead of in just the one that was waiting: the correction for coordinated
 * omission. When behind, due messages go out at once, up to SEND_BATCH per iteration.
 *
 * With --batch-us the loop sleeps until that long after a message fell due, and sends it with
 * every message that fell due meanwhile: one wake-up (and one io_uring_enter, one wake-up of
 * the server) for several messages. The wait counts in each message's latency, as it should.
 */
#include "loadgen/lg_scn_msg.h"

#define SEND_BATCH 4096

static void latency_run_start(struct lg_worker *w)
{
    w->sc.sched_start = w->now;
    w->sc.sched_k = 0;
    w->sc.rr = 0;
    /* This worker's part of --rate, in proportion to the connections it was given. */
    w->sc.interval_ns = 1e9 / (w->cfg->msg_rate * w->share);
    w->sc.batch_ns = (uint64_t)(w->cfg->batch_us * 1e3);
}

/* The next open connection, round robin; NULL when none is left. */
static struct lg_conn *next_conn(struct lg_worker *w)
{
    if (w->open == 0)
        return NULL;
    for (;;) {
        struct lg_conn *c = &w->conns[w->sc.rr];
        w->sc.rr = w->sc.rr + 1 == w->nconns ? 0 : w->sc.rr + 1;
        if (c->state == LG_CS_OPEN)
            return c;
    }
}

static uint64_t latency_tick(struct lg_worker *w)
{
    for (unsigned n = 0; n < SEND_BATCH; n++) {
        uint64_t due = w->sc.sched_start + (uint64_t)((double)w->sc.sched_k * w->sc.interval_ns);
        if (due > w->now)
            return due + w->sc.batch_ns;
        struct lg_conn *c = next_conn(w);
        if (!c)
            return UINT64_MAX;
        if (w->now - due > LG_LATE_NS)
            w->stats.c[LG_C_LATE]++;
        lg_msg_send(w, c, due);
        w->sc.sched_k++;
    }
    return w->now;
}

static void latency_message(struct lg_worker *w, struct lg_conn *c, const struct lg_ws_msg *m)
{
    lg_msg_check(w, c, m);
}

const struct lg_scenario lg_scenario_latency = {
    .mode = LG_MODE_LATENCY,
    .precise_clock = true,
    .run_start = latency_run_start,
    .tick = latency_tick,
    .message = latency_message,
    .conn_lost = lg_msg_conn_lost,
    .drained = lg_msg_drained,
    .finish = lg_msg_finish,
};
