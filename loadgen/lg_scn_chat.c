/*
 * chat: --connections users, each in one conversation: a share of them (--group-share) in
 * groups of --group-min..--group-max members, the others paired in direct conversations. Users
 * send on a fixed schedule of --rate messages/s in total, round robin over each worker's users
 * (so each sends at --rate / users), and every delivery is timed from its message's intended
 * send time, which its body carries: the latency corrected for coordinated omission, as in
 * latency. --rate 0 is a closed loop instead (each user sends again when its previous message
 * is acked), which finds the peak rate.
 */
#include <math.h>
#include <stdio.h>

#include "loadgen/lg_scn_msg.h"
#include "loadgen/lg_scn_msgr.h"

#define SEND_BATCH 4096
#define LAYOUT_SEED 0x5eedULL /* the same groups every run, so runs compare */

static uint64_t layout_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/*
 * Lays the users out: users [0, g) in groups, [g, n) in pairs. Fills convs when it is not NULL;
 * returns the number of conversations either way.
 */
static uint32_t layout(const struct lg_config *cfg, struct lg_msgr_conv *convs, uint32_t *user_conv)
{
    uint32_t n = (uint32_t)cfg->connections;
    uint32_t g = (uint32_t)llround((double)n * cfg->group_share);
    uint32_t gmin = (uint32_t)cfg->group_min, gmax = (uint32_t)cfg->group_max;
    if (g > 0 && g < gmin)
        g = n >= gmin ? gmin : 0;
    if ((n - g) % 2 != 0 && g > 0)
        g++; /* an odd user out joins the groups rather than idling */
    uint32_t k = 0;
    uint64_t seed = LAYOUT_SEED;
    for (uint32_t first = 0; first < g;) {
        uint32_t size = gmin + (uint32_t)(layout_next(&seed) % (gmax - gmin + 1));
        /* A remainder too small for a group of its own joins the last one. */
        if (g - first < size || g - first - size < gmin)
            size = g - first;
        if (convs) {
            convs[k] = (struct lg_msgr_conv){
                .first = first, .count = size, .owner = first, .is_group = true};
            for (uint32_t u = first; u < first + size; u++)
                user_conv[u] = k;
        }
        first += size;
        k++;
    }
    for (uint32_t u = g; u + 1 < n; u += 2) {
        if (convs) {
            convs[k] = (struct lg_msgr_conv){.first = u, .count = 2, .owner = u};
            atomic_store(&convs[k].state, LG_CONV_READY);
            user_conv[u] = user_conv[u + 1] = k;
        }
        k++;
    }
    return k;
}

static void chat_on_ack(struct lg_worker *w, struct lg_conn *c);

static int chat_prepare(const struct lg_config *cfg, const struct lg_share *share)
{
    int err = lg_msgr_prepare(cfg, share, layout(cfg, NULL, NULL));
    if (err)
        return err;
    struct lg_msgr_rt *rt = &lg_msgr_rt;
    layout(cfg, rt->convs, rt->user_conv);
    uint32_t groups = 0;
    for (uint32_t i = 0; i < rt->nconvs; i++)
        groups += rt->convs[i].is_group;
    atomic_store(&rt->groups_pending, groups);
    rt->on_ack = chat_on_ack;
    return 0;
}

static void send_next(struct lg_worker *w, struct lg_conn *c, uint64_t t)
{
    uint64_t due;
    if (lg_msgr_send_msg(w, c, w->sc.n, t, &due) == 0)
        w->sc.n++;
}

static void chat_run_start(struct lg_worker *w)
{
    w->sc.sched_start = w->now;
    w->sc.sched_k = 0;
    w->sc.rr = 0;
    if (w->cfg->msg_rate > 0) {
        w->sc.interval_ns = 1e9 / (w->cfg->msg_rate * w->share);
        w->sc.batch_ns = (uint64_t)(w->cfg->batch_us * 1e3);
        return;
    }
    for (uint32_t i = 0; i < w->nconns; i++)
        if (w->conns[i].state == LG_CS_OPEN)
            send_next(w, &w->conns[i], w->now);
}

/* The next user of this worker that may send, round robin; NULL when there is none. */
static struct lg_conn *next_sender(struct lg_worker *w)
{
    for (uint32_t tries = 0; tries < w->nconns; tries++) {
        struct lg_conn *c = &w->conns[w->sc.rr];
        w->sc.rr = w->sc.rr + 1 == w->nconns ? 0 : w->sc.rr + 1;
        if (c->state == LG_CS_OPEN && lg_msgr_conv_of(c))
            return c;
    }
    return NULL;
}

static uint64_t chat_tick(struct lg_worker *w)
{
    if (w->cfg->msg_rate <= 0)
        return UINT64_MAX;
    for (unsigned k = 0; k < SEND_BATCH; k++) {
        uint64_t due = w->sc.sched_start + (uint64_t)((double)w->sc.sched_k * w->sc.interval_ns);
        if (due > w->now)
            return due + w->sc.batch_ns;
        struct lg_conn *c = next_sender(w);
        if (!c)
            return UINT64_MAX;
        if (w->now - due > LG_LATE_NS)
            w->stats.c[LG_C_LATE]++;
        send_next(w, c, due);
        w->sc.sched_k++;
    }
    return w->now;
}

static void chat_on_ack(struct lg_worker *w, struct lg_conn *c)
{
    if (w->cfg->msg_rate <= 0 && w->phase == LG_PHASE_RUN && c->state == LG_CS_OPEN)
        send_next(w, c, w->now);
}

const struct lg_scenario lg_scenario_chat = {
    .mode = LG_MODE_CHAT,
    .precise_clock = true,
    .gather = LG_MSGR_GATHER,
    .prepare = chat_prepare,
    .release = lg_msgr_release,
    .established = lg_msgr_established,
    .setup = lg_msgr_setup,
    .run_start = chat_run_start,
    .tick = chat_tick,
    .message = lg_msgr_message,
    .conn_lost = lg_msgr_conn_lost,
    .drained = lg_msgr_drained,
    .finish = lg_msgr_finish,
};
