/*
 * echo: closed loop. Each connection keeps --pipeline messages in flight and sends the next one
 * when a reply comes back, so the rate is whatever the server (or loadgen) can sustain; the
 * latency histogram holds round trips, which a closed loop understates under load (see latency).
 */
#include "loadgen/lg_scn_msg.h"

static void echo_run_start(struct lg_worker *w)
{
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct lg_conn *c = &w->conns[i];
        for (uint64_t k = 0; k < w->cfg->pipeline && c->state == LG_CS_OPEN; k++)
            lg_msg_send(w, c, w->now);
    }
}

static void echo_message(struct lg_worker *w, struct lg_conn *c, const struct lg_ws_msg *m)
{
    lg_msg_check(w, c, m);
    if (w->phase == LG_PHASE_RUN)
        lg_msg_send(w, c, w->now);
}

const struct lg_scenario lg_scenario_echo = {
    .mode = LG_MODE_ECHO,
    .run_start = echo_run_start,
    .message = echo_message,
    .conn_lost = lg_msg_conn_lost,
    .drained = lg_msg_drained,
    .finish = lg_msg_finish,
};
