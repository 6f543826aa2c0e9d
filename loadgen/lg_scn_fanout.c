/*
 * fanout: connection 0 creates a group of every connection's user and posts to it, keeping
 * --pipeline messages in flight; a message is in flight until every online member has it. Each
 * delivery is timed from the send (its body carries the time), and so is each message's last
 * delivery: the latency of the whole fan-out. Members may sit on any worker thread, so the
 * per-message bookkeeping (a ring of slots, one per message in flight) is shared and atomic.
 */
#include <errno.h>
#include <stdlib.h>

#include "loadgen/lg_scn_msgr.h"

#define SLOTS 1024        /* >= the largest --pipeline; a power of two */
#define POLL_NS 200000ULL /* the sender's worker looks for completions on other threads */

struct slot {
    _Atomic uint64_t n;         /* the message using the slot */
    _Atomic uint64_t remaining; /* deliveries still to come */
    _Atomic uint64_t max_ns;    /* the slowest delivery so far */
};

static struct slot *slots;
static _Atomic uint64_t completed;

static void fanout_on_delivery(struct lg_worker *w, struct lg_conn *c,
                               const struct lg_msgr_stamp *s);

static int fanout_prepare(const struct lg_config *cfg, const struct lg_share *share)
{
    int err = lg_msgr_prepare(cfg, share, 1);
    if (err)
        return err;
    struct lg_msgr_rt *rt = &lg_msgr_rt;
    slots = calloc(SLOTS, sizeof(*slots));
    if (!slots) {
        lg_msgr_release();
        return -ENOMEM;
    }
    atomic_store(&completed, 0);
    rt->convs[0] =
        (struct lg_msgr_conv){.first = 0, .count = rt->nusers, .owner = 0, .is_group = true};
    for (uint32_t u = 0; u < rt->nusers; u++)
        rt->user_conv[u] = 0;
    atomic_store(&rt->groups_pending, 1);
    rt->on_delivery = fanout_on_delivery;
    return 0;
}

static void fanout_release(void)
{
    free(slots);
    slots = NULL;
    lg_msgr_release();
}

static void complete(struct lg_worker *w, struct slot *sl)
{
    lg_hist_record(&w->stats.h[LG_H_LAST], atomic_load(&sl->max_ns));
    atomic_fetch_add(&completed, 1);
}

static void fanout_on_delivery(struct lg_worker *w, struct lg_conn *c,
                               const struct lg_msgr_stamp *s)
{
    (void)c;
    struct slot *sl = &slots[s->n & (SLOTS - 1)];
    if (s->from != 0 || atomic_load(&sl->n) != s->n) {
        w->stats.c[LG_C_MISMATCHED]++;
        return;
    }
    uint64_t lat = w->now > s->t ? w->now - s->t : 0;
    uint64_t cur = atomic_load_explicit(&sl->max_ns, memory_order_relaxed);
    while (lat > cur && !atomic_compare_exchange_weak_explicit(
                            &sl->max_ns, &cur, lat, memory_order_relaxed, memory_order_relaxed)) {
    }
    if (atomic_fetch_sub(&sl->remaining, 1) == 1)
        complete(w, sl);
}

/* Sends as many messages as the pipeline allows; only the worker holding the sender does. */
static void fill(struct lg_worker *w)
{
    struct lg_conn *c = lg_msgr_conn_for(w, 0);
    if (!c)
        return;
    while (c->state == LG_CS_OPEN && w->sc.n - atomic_load(&completed) < w->cfg->pipeline) {
        uint64_t n = w->sc.n;
        struct slot *sl = &slots[n & (SLOTS - 1)];
        /* The slot is ready before the send leaves: it is queued until this iteration ends. */
        atomic_store(&sl->n, n);
        atomic_store(&sl->max_ns, 0);
        atomic_store(&sl->remaining, UINT64_MAX / 2);
        uint64_t due;
        if (lg_msgr_send_msg(w, c, n, w->now, &due) < 0)
            return;
        w->sc.n++;
        if (due == 0) {
            complete(w, sl);
            continue;
        }
        /* remaining was parked high so no delivery can finish it early; now set it exactly. */
        if (atomic_fetch_sub(&sl->remaining, UINT64_MAX / 2 - due) == UINT64_MAX / 2 - due)
            complete(w, sl);
    }
}

static void fanout_run_start(struct lg_worker *w)
{
    fill(w);
}

static uint64_t fanout_tick(struct lg_worker *w)
{
    if (!lg_msgr_conn_for(w, 0))
        return UINT64_MAX;
    fill(w);
    /* Members on other threads complete messages without waking this one. */
    return w->nconns == w->cfg->connections ? UINT64_MAX : w->now + POLL_NS;
}

const struct lg_scenario lg_scenario_fanout = {
    .mode = LG_MODE_FANOUT,
    .precise_clock = true,
    .gather = LG_MSGR_GATHER,
    .prepare = fanout_prepare,
    .release = fanout_release,
    .established = lg_msgr_established,
    .setup = lg_msgr_setup,
    .run_start = fanout_run_start,
    .tick = fanout_tick,
    .message = lg_msgr_message,
    .conn_lost = lg_msgr_conn_lost,
    .drained = lg_msgr_drained,
    .finish = lg_msgr_finish,
};
