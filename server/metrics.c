#include "server/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/redis.h"

/* A cache line of its own per worker, so counting never bounces a line between cores. */
struct block {
    _Alignas(64) atomic_uint_fast64_t v[SB_M_COUNT];
};

static struct block *blocks;
static unsigned nblocks;
static const struct sb_redis *redis;

void sb_metrics_set_redis(const struct sb_redis *r)
{
    redis = r;
}

static const struct {
    const char *name, *help, *labels;
} info[SB_M_COUNT] = {
    [SB_M_HTTP_REQUESTS] = {"switchboard_http_requests_total", "HTTP requests received", ""},
    [SB_M_HTTP_ERRORS] = {"switchboard_http_errors_total", "HTTP responses with status >= 400", ""},
    [SB_M_UPGRADES_ECHO] = {"switchboard_websocket_upgrades_total",
                            "WebSocket handshakes completed", "{endpoint=\"/echo\"}"},
    [SB_M_UPGRADES_CHAT] = {"switchboard_websocket_upgrades_total", NULL, "{endpoint=\"/ws\"}"},
    [SB_M_AUTH_FAILURES] = {"switchboard_auth_failures_total",
                            "WebSocket upgrades refused for a missing or invalid token", ""},
    [SB_M_WS_MESSAGES_IN] = {"switchboard_websocket_messages_received_total",
                             "Complete WebSocket messages received", ""},
    [SB_M_WS_FAILURES] = {"switchboard_websocket_failures_total",
                          "WebSocket connections closed for a protocol violation", ""},
    [SB_M_MESSAGES_STORED] = {"switchboard_messages_stored_total",
                              "Messages sequenced and appended to history", ""},
    [SB_M_DELIVERIES] = {"switchboard_deliveries_total", "Pushes queued to devices, by class",
                         "{class=\"message\"}"},
    [SB_M_RECEIPTS_OUT] = {"switchboard_deliveries_total", NULL, "{class=\"receipt\"}"},
    [SB_M_TYPING_OUT] = {"switchboard_deliveries_total", NULL, "{class=\"typing\"}"},
    [SB_M_TYPING_DROPPED] = {"switchboard_drops_total",
                             "Pushes dropped for slow consumers, by class", "{class=\"typing\"}"},
    [SB_M_BEHIND] = {"switchboard_behind_total",
                     "Times a slow device stopped getting a conversation's messages (it syncs)",
                     ""},
    [SB_M_RATE_LIMITED] = {"switchboard_rate_limited_total",
                           "Requests refused by the per-device token buckets", ""},
    [SB_M_STORE_APPENDS] = {"switchboard_store_appends_total",
                            "Records appended to the history logs", ""},
    [SB_M_STORE_FSYNCS] = {"switchboard_store_fsyncs_total",
                           "fdatasyncs of the history logs completed", ""},
    [SB_M_STORE_FSYNC_US] = {"switchboard_store_fsync_microseconds_total",
                             "Time spent in those fdatasyncs (divide by the count for the mean)",
                             ""},
    [SB_M_WEBHOOK_QUEUED] = {"switchboard_webhook_notices_queued_total",
                             "Offline notices queued for the webhook", ""},
    [SB_M_WEBHOOK_SENT] = {"switchboard_webhook_notices_sent_total",
                           "Offline notices the webhook receiver accepted (2xx)", ""},
    [SB_M_WEBHOOK_DROPPED] = {"switchboard_webhook_notices_dropped_total",
                              "Offline notices lost: queue full or refused by the receiver (4xx)",
                              ""},
    [SB_M_WEBHOOK_FAILED] = {"switchboard_webhook_posts_failed_total",
                             "Webhook POSTs that failed (connection, timeout, 4xx, 5xx)", ""},
    [SB_M_WEBHOOK_RETRIES] = {"switchboard_webhook_retries_total",
                              "Webhook POSTs sent again after a failure", ""},
    [SB_M_PRESENCE_ONLINE] = {"switchboard_presence_online_users", "Users online (presence)", ""},
    [SB_M_PRESENCE_SENT] = {"switchboard_presence_events_sent_total",
                            "Presence frames queued to devices", ""},
    [SB_M_PRESENCE_COALESCED] = {"switchboard_presence_coalesced_total",
                                 "Presence values replaced by a newer one while a device was "
                                 "behind",
                                 ""},
};

int sb_metrics_init(unsigned workers)
{
    blocks = aligned_alloc(64, workers * sizeof(*blocks));
    if (!blocks)
        return -ENOMEM;
    for (unsigned i = 0; i < workers; i++)
        for (unsigned m = 0; m < SB_M_COUNT; m++)
            atomic_init(&blocks[i].v[m], 0);
    nblocks = workers;
    return 0;
}

void sb_metrics_free(void)
{
    free(blocks);
    blocks = NULL;
}

void sb_metric_add(struct sb_worker *w, enum sb_metric m, uint64_t n)
{
    atomic_uint_fast64_t *c = &blocks[sb_worker_id(w)].v[m];
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* The metrics each worker sets (sb_metric_set) rather than counts; /metrics sums them too. */
static bool is_gauge(unsigned m)
{
    return m == SB_M_PRESENCE_ONLINE;
}

void sb_metric_set(struct sb_worker *w, enum sb_metric m, uint64_t v)
{
    atomic_store_explicit(&blocks[sb_worker_id(w)].v[m], v, memory_order_relaxed);
}

struct out {
    char *buf;
    size_t len, cap;
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + (o->len < o->cap ? o->len : o->cap),
                      o->len < o->cap ? o->cap - o->len : 0, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

static void header(struct out *o, const char *name, const char *help, const char *type)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* An engine counter: the sum over workers, then one sample per worker. */
static void engine_metric(struct out *o, const struct sb_engine *e, const char *name,
                          const char *help, const char *type, size_t field)
{
    header(o, name, help, type);
    unsigned n = sb_engine_workers(e);
    for (unsigned i = 0; i < n; i++) {
        struct sb_worker_stats st;
        sb_engine_worker_stats(e, i, &st);
        uint64_t v;
        memcpy(&v, (const char *)&st + field, sizeof(v));
        put(o, "%s{worker=\"%u\"} %" PRIu64 "\n", name, i, v);
    }
}

/* The Redis Cluster client's counters (cluster/redis.h), summed over workers. */
static void redis_metrics(struct out *o)
{
    struct sb_redis_stats st;
    sb_redis_stats(redis, &st);
    static const struct {
        const char *name, *help;
        size_t field;
    } rows[] = {
        {"switchboard_redis_commands_total", "Redis commands sent by the cluster client",
         offsetof(struct sb_redis_stats, commands)},
        {"switchboard_redis_errors_total",
         "Redis commands that failed (typed error or Redis error reply)",
         offsetof(struct sb_redis_stats, errors)},
        {"switchboard_redis_timeouts_total",
         "Redis commands with no answer within redis_timeout_ms",
         offsetof(struct sb_redis_stats, timeouts)},
        {"switchboard_redis_moved_total", "MOVED redirections followed",
         offsetof(struct sb_redis_stats, moved)},
        {"switchboard_redis_ask_total", "ASK redirections followed",
         offsetof(struct sb_redis_stats, ask)},
        {"switchboard_redis_reconnects_total", "Redis connections made again after a failure",
         offsetof(struct sb_redis_stats, reconnects)},
        {"switchboard_redis_topology_refreshes_total", "CLUSTER SLOTS queries sent",
         offsetof(struct sb_redis_stats, refreshes)},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        uint64_t v;
        memcpy(&v, (const char *)&st + rows[i].field, sizeof(v));
        header(o, rows[i].name, rows[i].help, "counter");
        put(o, "%s %" PRIu64 "\n", rows[i].name, v);
    }
}

#define ENGINE(name, help, type, field)                                                            \
    engine_metric(&o, e, name, help, type, offsetof(struct sb_worker_stats, field))

ssize_t sb_metrics_render(const struct sb_engine *e, char *buf, size_t cap)
{
    struct out o = {buf, 0, cap};
    ENGINE("switchboard_connections", "Open connections", "gauge", connections);
    ENGINE("switchboard_connections_accepted_total", "Connections accepted", "counter", accepted);
    ENGINE("switchboard_connections_refused_total",
           "Connections closed at accept (max_connections or out of memory)", "counter", refused);
    ENGINE("switchboard_handoffs_total", "Connections moved in from another worker", "counter",
           handoffs_in);
    ENGINE("switchboard_received_bytes_total", "Bytes received", "counter", bytes_in);
    ENGINE("switchboard_sent_bytes_total", "Bytes sent", "counter", bytes_out);
    ENGINE("switchboard_receive_completions_total", "Receive completions", "counter", recvs);
    ENGINE("switchboard_send_completions_total", "Send completions", "counter", sends);
    for (unsigned m = 0; m < SB_M_COUNT; m++) {
        if (info[m].help)
            header(&o, info[m].name, info[m].help, is_gauge(m) ? "gauge" : "counter");
        uint64_t sum = 0;
        for (unsigned i = 0; i < nblocks; i++)
            sum += atomic_load_explicit(&blocks[i].v[m], memory_order_relaxed);
        put(&o, "%s%s %" PRIu64 "\n", info[m].name, info[m].labels, sum);
    }
    if (redis)
        redis_metrics(&o);
    return o.len < o.cap ? (ssize_t)o.len : -ENOSPC;
}
