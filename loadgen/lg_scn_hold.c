/*
 * hold: the engine's ramp, pings and close handshake are the whole scenario; what it measures
 * (established, failures by reason, connect rate, handshake latency) the engine records anyway.
 */
#include "loadgen/lg_loop.h"

const struct lg_scenario lg_scenario_hold = {
    .mode = LG_MODE_HOLD,
    .sparse_tx = true,
    .lazy_ack = true,
};
