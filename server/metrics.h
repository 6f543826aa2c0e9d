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
    SB_M_MESSAGES_STORED, /* messages sequenced and appended to history (system ones included) */
    SB_M_DELIVERIES,      /* messages queued to devices */
    SB_M_RECEIPTS_OUT,    /* receipts queued to devices */
    SB_M_TYPING_OUT,      /* typing events queued to devices */
    SB_M_TYPING_DROPPED,  /* typing events dropped for slow consumers */
    SB_M_BEHIND,          /* times a slow device stopped getting a conversation's messages */
    SB_M_RATE_LIMITED,    /* requests refused by the token buckets */
    SB_M_STORE_APPENDS,   /* records appended to the history logs */
    SB_M_STORE_FSYNCS,    /* fdatasyncs of the history logs completed */
    SB_M_STORE_FSYNC_US,  /* their total duration, microseconds */
    /* The offline webhook (server/webhook.c). */
    SB_M_WEBHOOK_QUEUED,     /* notices queued */
    SB_M_WEBHOOK_SENT,       /* notices in POSTs the receiver accepted (2xx) */
    SB_M_WEBHOOK_DROPPED,    /* notices lost: queue full, refused (4xx), not encodable */
    SB_M_WEBHOOK_FAILED,     /* POSTs that failed: no connection, timeout, 5xx, 4xx, bad response */
    SB_M_WEBHOOK_RETRIES,    /* POSTs sent again after a failure */
    SB_M_PRESENCE_ONLINE,    /* gauge: users shown online (each worker sets its own) */
    SB_M_PRESENCE_SENT,      /* presence frames queued to devices */
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
struct sb_redis;
/* Adds the Redis Cluster client's counters to the rendering (NULL: none). Main thread, before
 * the engine starts; r must outlive the engine. */
void sb_metrics_set_redis(const struct sb_redis *r);

/* Renders every metric into buf. Returns the length, or -ENOSPC. Any thread. */
ssize_t sb_metrics_render(const struct sb_engine *e, char *buf, size_t cap);

#endif
