/*
 * Counters for GET /metrics (Prometheus text format 0.0.4). Each worker has its own block and is
 * its only writer, so counting is a plain load and store; /metrics sums the blocks.
 */
#ifndef SB_SERVER_METRICS_H
#define SB_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/engine.h"

enum sb_metric {
    SB_M_HTTP_REQUESTS,   /* complete requests parsed */
    SB_M_HTTP_ERRORS,     /* responses with status >= 400 */
    SB_M_UPGRADES_ECHO,   /* WebSocket handshakes completed on /echo */
    SB_M_UPGRADES_CHAT,   /* ... on /ws */
    SB_M_AUTH_FAILURES,   /* /ws requests refused with 401 */
    SB_M_WS_MESSAGES_IN,  /* complete WebSocket messages received */
    SB_M_WS_FAILURES,     /* connections we closed for a protocol violation (1002/1003/1007/1009) */
    SB_M_PRESENCE_ONLINE, /* gauge: users shown online (each worker sets its own) */
    SB_M_PRESENCE_SENT,   /* presence frames queued to devices */
    SB_M_PRESENCE_COALESCED, /* presence values replaced by a newer one while a device was behind */
    SB_M_COUNT,
};

/* Allocates the blocks. Main thread, before the engine starts. Returns 0 or -ENOMEM. */
int sb_metrics_init(unsigned workers);
void sb_metrics_free(void);

/* Counts n events on the calling worker. */
void sb_metric_add(struct sb_worker *w, enum sb_metric m, uint64_t n);

/* Sets the calling worker's value of a gauge. */
void sb_metric_set(struct sb_worker *w, enum sb_metric m, uint64_t v);

/* Renders every metric into buf. Returns the length, or -ENOSPC. Any thread. */
ssize_t sb_metrics_render(const struct sb_engine *e, char *buf, size_t cap);

#endif
