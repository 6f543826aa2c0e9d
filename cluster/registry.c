/* The cluster registry: node liveness and user locations in Redis (see registry.h). */
#include "cluster/registry.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "proto/json.h"

#define NODES_KEY "sb:{nodes}"
#define INFO_KEY "sb:{nodes}:info"
#define FORGET_TTLS 10         /* a node silent for this many TTLs is removed from the keys */
#define REPLAY_BATCH 256       /* users written again per tick after an outage */
#define REPLAY_TICK_MS 10      /* (the engine's timer granularity) */
#define TOUCHED_MAX 1000000    /* users remembered while degraded, per worker */
#define USER_KEY_MAX (8 + 256) /* "sb:u:{" user "}" */
#define VALUE_MAX 4096         /* a registry entry: count and device ids */

/*
 * One script per heartbeat: renew, forget the long dead, answer the live nodes with their info.
 * TIME is Redis's clock, so node clocks may disagree; Redis 7 replicates a script's effects,
 * which is what lets it call TIME before writing.
 */
static const char heartbeat_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])\n"
    "for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]))) "
    "do\n"
    "  redis.call('ZREM', KEYS[1], id)\n"
    "  redis.call('HDEL', KEYS[2], id)\n"
    "end\n"
    "local out = {}\n"
    "for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[3]), '+inf')) "
    "do\n"
    "  out[#out + 1] = id\n"
    "  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''\n"
    "end\n"
    "return out\n";

struct live_node {
    char id[SB_NODE_ID_MAX + 1];
    char name[SB_NODE_NAME_MAX + 1];
    unsigned long long workers, connections, started_ms;
};

/* A user id remembered while degraded (open addressing on the id's bytes). */
struct touched {
    char **ids; /* "len byte, id" strings; NULL = empty */
    size_t cap, count;
};

struct rworker {
    struct sb_registry *g;
    struct sb_worker *w;
    struct sb_worker_timer beat, replay;
    bool beat_inflight;
    atomic_int err;         /* 0 = the last heartbeat and every write since succeeded */
    bool dirty;             /* a write failed: replay when Redis answers again */
    bool full;              /* a heartbeat failed (Redis may have lost it all): replay every user */
    bool logged;            /* the outage was logged */
    struct live_node *live; /* NULL until the first heartbeat is answered */
    size_t nlive;
    struct touched touched;
    /* The replay in progress: ids to write again, and where it is. */
    char **replay_ids;
    size_t replay_n, replay_at, replay_cap;
};

struct sb_registry {
    struct sb_engine *e;
    struct sb_redis *redis;
    struct sb_registry_config cfg;
    char name[SB_NODE_NAME_MAX + 1];
    char id[SB_NODE_ID_MAX + 1];
    uint64_t started_ms;
    unsigned nworkers;
    atomic_bool stopping;
    struct rworker *workers;
};

const char *sb_registry_node_id(const struct sb_registry *g)
{
    return g->id;
}

static struct rworker *rw_of(struct sb_registry *g, struct sb_worker *w)
{
    return &g->workers[sb_worker_id(w)];
}

static size_t user_key(char *buf, const char *user, size_t len)
{
    memcpy(buf, "sb:u:{", 6);
    memcpy(buf + 6, user, len);
    buf[6 + len] = '}';
    return 7 + len;
}

static size_t field_of(const struct sb_registry *g, struct sb_worker *w, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s/%u", g->id, sb_worker_id(w));
    return n < 0 ? 0 : (size_t)n;
}

/* ---- degraded: remembering and replaying ------------------------------------------------- */

static uint64_t id_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i <= (uint8_t)s[0]; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static char *id_dup(const char *user, size_t len)
{
    char *s = malloc(len + 1);
    if (s) {
        s[0] = (char)len;
        memcpy(s + 1, user, len);
    }
    return s;
}

/* Remembers user; false when memory or the bound ran out (logged by the caller). */
static bool touch(struct touched *t, const char *user, size_t len)
{
    if (t->count * 4 >= t->cap * 3) {
        if (t->count >= TOUCHED_MAX)
            return false;
        size_t ncap = t->cap ? t->cap * 2 : 1024;
        char **n = calloc(ncap, sizeof(*n));
        if (!n)
            return false;
        for (size_t i = 0; i < t->cap; i++) {
            if (!t->ids[i])
                continue;
            size_t j = id_hash(t->ids[i]) & (ncap - 1);
            while (n[j])
                j = (j + 1) & (ncap - 1);
            n[j] = t->ids[i];
        }
        free(t->ids);
        t->ids = n;
        t->cap = ncap;
    }
    char *s = id_dup(user, len);
    if (!s)
        return false;
    size_t j = id_hash(s) & (t->cap - 1);
    for (; t->ids[j]; j = (j + 1) & (t->cap - 1)) {
        if ((uint8_t)t->ids[j][0] == len && memcmp(t->ids[j] + 1, user, len) == 0) {
            free(s);
            return true;
        }
    }
    t->ids[j] = s;
    t->count++;
    return true;
}

static void degrade(struct rworker *rw, int err, bool heartbeat)
{
    rw->full |= heartbeat;
    if (atomic_load(&rw->g->stopping))
        return;
    atomic_store(&rw->err, err);
    rw->dirty = true;
    if (!rw->logged) {
        rw->logged = true;
        sb_log(SB_LOG_WARN, 0,
               "cluster: Redis unavailable (%s): this worker is degraded; local delivery goes on, "
               "its users are registered again when Redis answers",
               sb_redis_strerror(err));
    }
}

static void write_user(struct rworker *rw, const char *user, size_t len);

static void replay_add(void *arg, const char *user, size_t len)
{
    struct rworker *rw = arg;
    if (rw->replay_n == rw->replay_cap) {
        size_t ncap = rw->replay_cap ? rw->replay_cap * 2 : 1024;
        char **n = realloc(rw->replay_ids, ncap * sizeof(*n));
        if (!n)
            return; /* the rest waits for the next outage's replay; unlikely enough */
        rw->replay_ids = n;
        rw->replay_cap = ncap;
    }
    char *s = id_dup(user, len);
    if (s)
        rw->replay_ids[rw->replay_n++] = s;
}

static void replay_due(struct sb_worker *w, struct sb_worker_timer *t)
{
    struct rworker *rw = (struct rworker *)((char *)t - offsetof(struct rworker, replay));
    size_t end = rw->replay_at + REPLAY_BATCH;
    for (; rw->replay_at < rw->replay_n && rw->replay_at < end; rw->replay_at++) {
        char *s = rw->replay_ids[rw->replay_at];
        write_user(rw, s + 1, (uint8_t)s[0]);
        free(s);
        rw->replay_ids[rw->replay_at] = NULL;
    }
    if (rw->replay_at < rw->replay_n) {
        sb_worker_timer_set(w, &rw->replay, REPLAY_TICK_MS);
        return;
    }
    if (rw->replay_n)
        sb_log(SB_LOG_INFO, 0, "cluster: %zu users registered again", rw->replay_n);
    rw->replay_n = rw->replay_at = 0;
}

/* Redis answers again: the users touched meanwhile, and after a failed heartbeat (Redis may
 * have restarted empty, or other nodes deleted this node's entries as dead) every user. */
static void start_replay(struct rworker *rw)
{
    for (size_t i = rw->replay_at; i < rw->replay_n; i++)
        free(rw->replay_ids[i]);
    rw->replay_n = rw->replay_at = 0;
    if (rw->full)
        rw->g->cfg.each_user(rw->w, replay_add, rw);
    for (size_t i = 0; i < rw->touched.cap; i++) {
        char *s = rw->touched.ids[i];
        if (!s)
            continue;
        rw->touched.ids[i] = NULL;
        char none[1];
        if (!rw->full || rw->g->cfg.devices(rw->w, s + 1, (uint8_t)s[0], none, 1) == 0)
            replay_add(rw, s + 1, (uint8_t)s[0]); /* (else each_user had it) */
        free(s);
    }
    rw->touched.count = 0;
    sb_worker_timer_set(rw->w, &rw->replay, 1);
}

/* ---- writes ------------------------------------------------------------------------------ */

struct write_ctx {
    struct rworker *rw;
    size_t len;
    char user[];
};

static void written(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    struct write_ctx *x = arg;
    struct rworker *rw = x->rw;
    if (err == 0 && reply->type == REDIS_REPLY_ERROR)
        err = -EPROTO;
    if (err == 0 && rw->g->cfg.written)
        rw->g->cfg.written(w, x->user, x->len);
    if (err < 0 && err != -ESHUTDOWN) {
        degrade(rw, err, false);
        if (!touch(&rw->touched, x->user, x->len))
            sb_log(SB_LOG_WARN, -ENOMEM, "cluster: %.*s may stay registered here", (int)x->len,
                   x->user);
    }
    free(x);
}

/* Writes the user's current device count on this worker (HSET, or HDEL at 0). */
static void write_user(struct rworker *rw, const char *user, size_t len)
{
    struct sb_registry *g = rw->g;
    char ids[VALUE_MAX - 16], value[VALUE_MAX];
    unsigned devices = g->cfg.devices(rw->w, user, len, ids, sizeof(ids));
    char key[USER_KEY_MAX], field[SB_NODE_ID_MAX + 16];
    size_t klen = user_key(key, user, len), flen = field_of(g, rw->w, field, sizeof(field));
    int vlen = snprintf(value, sizeof(value), "%u%s%s", devices, *ids ? " " : "", ids);
    const char *argv[4] = {devices ? "HSET" : "HDEL", key, field, value};
    size_t argvlen[4] = {4, klen, flen, vlen < 0 ? 0 : (size_t)vlen};
    struct write_ctx *x = malloc(sizeof(*x) + len);
    if (!x) {
        degrade(rw, -ENOMEM, false);
        return;
    }
    x->rw = rw;
    x->len = len;
    memcpy(x->user, user, len);
    int r = sb_redis_cmd(rw->w, g->redis, key, klen, devices ? 4 : 3, argv, argvlen, written, x);
    if (r < 0) {
        written(rw->w, x, r, NULL);
    }
}

void sb_registry_user(struct sb_worker *w, struct sb_registry *g, const char *user, size_t len)
{
    if (!g || len > 255)
        return;
    struct rworker *rw = rw_of(g, w);
    if (atomic_load(&rw->err) != 0) {
        /* Redis is away: the replay will write it (and anything sent now would fail). */
        if (!touch(&rw->touched, user, len))
            sb_log(SB_LOG_WARN, -ENOMEM, "cluster: %.*s may stay registered here", (int)len, user);
        return;
    }
    write_user(rw, user, len);
}

/* ---- heartbeats -------------------------------------------------------------------------- */

/* "workers connections started_ms name" -> n; false when it is not that. */
static bool parse_info(const char *s, size_t len, struct live_node *n)
{
    char buf[128 + SB_NODE_NAME_MAX];
    if (len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    int used = 0;
    if (sscanf(buf, "%llu %llu %llu %n", &n->workers, &n->connections, &n->started_ms, &used) !=
            3 ||
        used <= 0)
        return false;
    size_t nl = len - (size_t)used;
    if (nl == 0 || nl > SB_NODE_NAME_MAX)
        return false;
    memcpy(n->name, buf + used, nl);
    n->name[nl] = '\0';
    return true;
}

static void beat_answered(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    struct rworker *rw = arg;
    rw->beat_inflight = false;
    if (err == 0 && reply->type != REDIS_REPLY_ARRAY)
        err = -EPROTO;
    if (err < 0) {
        if (err != -ESHUTDOWN)
            degrade(rw, err, true);
        return;
    }
    size_t n = reply->elements / 2;
    if (n > SB_REGISTRY_MAX_NODES)
        n = SB_REGISTRY_MAX_NODES;
    struct live_node *live = calloc(n ? n : 1, sizeof(*live));
    if (!live)
        return; /* the next heartbeat tries again */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *id = reply->element[2 * i], *info = reply->element[2 * i + 1];
        if (id->type != REDIS_REPLY_STRING || id->len == 0 || id->len > SB_NODE_ID_MAX ||
            info->type != REDIS_REPLY_STRING || !parse_info(info->str, info->len, &live[k]))
            continue; /* not one of ours */
        memcpy(live[k].id, id->str, id->len);
        live[k].id[id->len] = '\0';
        k++;
    }
    free(rw->live);
    rw->live = live;
    rw->nlive = k;
    bool was_degraded = atomic_load(&rw->err) != 0 || rw->dirty;
    atomic_store(&rw->err, 0);
    if (was_degraded) {
        if (rw->logged)
            sb_log(SB_LOG_INFO, 0, "cluster: Redis answers again; registering this worker's users");
        rw->logged = false;
        start_replay(rw);
        rw->dirty = false;
        rw->full = false;
    }
    (void)w;
}

static void beat_due(struct sb_worker *w, struct sb_worker_timer *t)
{
    struct rworker *rw = (struct rworker *)((char *)t - offsetof(struct rworker, beat));
    struct sb_registry *g = rw->g;
    if (atomic_load(&g->stopping))
        return;
    sb_worker_timer_set(w, &rw->beat, g->cfg.heartbeat_ms);
    if (rw->beat_inflight)
        return; /* a slow answer: its timeout comes first */
    char info[128 + SB_NODE_NAME_MAX], ttl[24], forget[24];
    int ilen = snprintf(info, sizeof(info), "%u %llu %llu %s", g->nworkers,
                        (unsigned long long)sb_engine_connections(g->e),
                        (unsigned long long)g->started_ms, g->name);
    int tlen = snprintf(ttl, sizeof(ttl), "%u", g->cfg.ttl_ms);
    int flen =
        snprintf(forget, sizeof(forget), "%llu", (unsigned long long)g->cfg.ttl_ms * FORGET_TTLS);
    const char *argv[] = {"EVAL", heartbeat_lua, "2", NODES_KEY, INFO_KEY,
                          g->id,  info,          ttl, forget};
    size_t argvlen[] = {4,
                        sizeof(heartbeat_lua) - 1,
                        1,
                        sizeof(NODES_KEY) - 1,
                        sizeof(INFO_KEY) - 1,
                        strlen(g->id),
                        (size_t)ilen,
                        (size_t)tlen,
                        (size_t)flen};
    int r = sb_redis_cmd(w, g->redis, NODES_KEY, sizeof(NODES_KEY) - 1, 9, argv, argvlen,
                         beat_answered, rw);
    if (r < 0) {
        if (r != -ESHUTDOWN)
            degrade(rw, r, true);
        return;
    }
    rw->beat_inflight = true;
}

static void worker_start(struct sb_worker *w, void *arg)
{
    struct sb_registry *g = arg;
    struct rworker *rw = rw_of(g, w);
    rw->w = w;
    rw->beat.cb = beat_due;
    rw->replay.cb = replay_due;
    beat_due(w, &rw->beat);
}

/* ---- lookups ---------------------------------------------------------------------------- */

struct lookup_ctx {
    struct rworker *rw;
    sb_registry_lookup_cb cb;
    void *arg;
    size_t len;
    char user[];
};

static bool is_live(const struct rworker *rw, const char *id, size_t len)
{
    if (len == strlen(rw->g->id) && memcmp(id, rw->g->id, len) == 0)
        return true;
    /* Until this worker has heard the live nodes, or while Redis is away, nobody is dead. */
    if (!rw->live || atomic_load(&rw->err) != 0)
        return true;
    for (size_t i = 0; i < rw->nlive; i++) {
        if (strlen(rw->live[i].id) == len && memcmp(rw->live[i].id, id, len) == 0)
            return true;
    }
    return false;
}

static void ignore_answer(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    (void)w, (void)arg, (void)err, (void)reply;
}

static void looked_up(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    struct lookup_ctx *x = arg;
    struct rworker *rw = x->rw;
    if (err == 0 && reply->type != REDIS_REPLY_ARRAY)
        err = -EPROTO;
    size_t n = err == 0 ? reply->elements / 2 : 0, k = 0;
    struct sb_registry_loc *locs = err == 0 ? calloc(n ? n : 1, sizeof(*locs)) : NULL;
    if (err == 0 && !locs)
        err = -ENOMEM;
    if (err < 0) {
        x->cb(w, x->arg, err, NULL, 0);
        free(x);
        return;
    }
    char key[USER_KEY_MAX];
    size_t klen = user_key(key, x->user, x->len);
    for (size_t i = 0; i < n; i++) {
        const redisReply *f = reply->element[2 * i], *v = reply->element[2 * i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || v->len == 0)
            continue;
        const char *slash = memrchr(f->str, '/', f->len);
        size_t idlen = slash ? (size_t)(slash - f->str) : 0;
        if (idlen == 0 || idlen > SB_NODE_ID_MAX)
            continue; /* not ours */
        if (!is_live(rw, f->str, idlen)) {
            /* A dead node's entry: clean it up on the way (nobody waits for the answer). */
            const char *argv[3] = {"HDEL", key, f->str};
            size_t argvlen[3] = {4, klen, f->len};
            (void)sb_redis_cmd(w, rw->g->redis, key, klen, 3, argv, argvlen, ignore_answer, NULL);
            continue;
        }
        /* "<count>[ <ids>]" */
        unsigned long count = 0;
        size_t p = 0;
        while (p < v->len && v->str[p] >= '0' && v->str[p] <= '9' && count < 1000000)
            count = count * 10 + (unsigned long)(v->str[p++] - '0');
        if (count == 0)
            continue;
        if (p < v->len && v->str[p] == ' ')
            p++;
        locs[k] = (struct sb_registry_loc){.node = f->str,
                                           .node_len = idlen,
                                           .worker = (unsigned)strtoul(slash + 1, NULL, 10),
                                           .devices = (unsigned)count,
                                           .ids = v->str + p,
                                           .ids_len = v->len - p};
        k++;
    }
    x->cb(w, x->arg, 0, locs, k);
    free(locs);
    free(x);
}

int sb_registry_lookup(struct sb_worker *w, struct sb_registry *g, const char *user, size_t len,
                       sb_registry_lookup_cb cb, void *arg)
{
    if (len == 0 || len > 255)
        return -EINVAL;
    struct lookup_ctx *x = malloc(sizeof(*x) + len);
    if (!x)
        return -ENOMEM;
    *x = (struct lookup_ctx){.rw = rw_of(g, w), .cb = cb, .arg = arg, .len = len};
    memcpy(x->user, user, len);
    char key[USER_KEY_MAX];
    size_t klen = user_key(key, user, len);
    const char *argv[2] = {"HGETALL", key};
    size_t argvlen[2] = {7, klen};
    int r = sb_redis_cmd(w, g->redis, key, klen, 2, argv, argvlen, looked_up, x);
    if (r < 0)
        free(x);
    return r;
}

/* ---- status ------------------------------------------------------------------------------ */

int sb_registry_status(const struct sb_registry *g)
{
    for (unsigned i = 0; g && i < g->nworkers; i++) {
        int err = atomic_load(&g->workers[i].err);
        if (err)
            return err;
    }
    return 0;
}

size_t sb_registry_live(struct sb_worker *w, const struct sb_registry *g, const char **ids,
                        size_t cap)
{
    const struct rworker *rw = &g->workers[sb_worker_id(w)];
    size_t n = 0;
    for (; n < rw->nlive && n < cap; n++)
        ids[n] = rw->live[n].id;
    return n;
}

size_t sb_registry_nodes_json(struct sb_worker *w, const struct sb_registry *g, char *buf,
                              size_t cap, unsigned long long *connections)
{
    const struct rworker *rw = &g->workers[sb_worker_id(w)];
    struct sb_json_writer jw;
    sb_json_writer_init(&jw, buf, cap);
    sb_json_begin_array(&jw);
    unsigned long long sum = 0;
    for (size_t i = 0; i < rw->nlive; i++) {
        const struct live_node *n = &rw->live[i];
        sb_json_begin_object(&jw);
        sb_json_key(&jw, "node");
        sb_json_cstr(&jw, n->id);
        sb_json_key(&jw, "name");
        sb_json_cstr(&jw, n->name);
        sb_json_key(&jw, "workers");
        sb_json_uint(&jw, n->workers);
        sb_json_key(&jw, "connections");
        sb_json_uint(&jw, n->connections);
        sb_json_key(&jw, "started_ms");
        sb_json_uint(&jw, n->started_ms);
        sb_json_end_object(&jw);
        sum += n->connections;
    }
    sb_json_end_array(&jw);
    *connections = sum;
    ssize_t n = sb_json_finish(&jw);
    if (n < 0 && cap >= 2) { /* no room, or bytes that are not ours in Redis */
        memcpy(buf, "[]", 2);
        n = 2;
        *connections = 0;
    }
    return n < 0 ? 0 : (size_t)n;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static bool name_valid(const char *s, size_t len)
{
    if (len == 0 || len > SB_NODE_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '-' || ch == '_'))
            return false;
    }
    return true;
}

int sb_registry_create(struct sb_engine *e, struct sb_redis *redis,
                       const struct sb_registry_config *cfg, struct sb_registry **out)
{
    *out = NULL;
    if (!redis)
        return 0;
    if (cfg->heartbeat_ms < 100 || cfg->ttl_ms < 2 * cfg->heartbeat_ms) {
        sb_log(SB_LOG_ERROR, -EINVAL,
               "cluster_node_ttl_ms (%u) must be at least twice cluster_heartbeat_ms (%u)",
               cfg->ttl_ms, cfg->heartbeat_ms);
        return -EINVAL;
    }
    struct sb_registry *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->e = e;
    g->redis = redis;
    g->cfg = *cfg;
    g->nworkers = sb_engine_workers(e);
    if (cfg->name && *cfg->name) {
        if (!name_valid(cfg->name, strlen(cfg->name))) {
            sb_log(SB_LOG_ERROR, -EINVAL,
                   "node_name \"%s\": use 1 to %d letters, digits, '.', '-' or '_'", cfg->name,
                   SB_NODE_NAME_MAX);
            free(g);
            return -EINVAL;
        }
        snprintf(g->name, sizeof(g->name), "%s", cfg->name);
    } else {
        char host[256] = "";
        if (gethostname(host, sizeof(host) - 1) < 0 || !name_valid(host, strlen(host)))
            snprintf(host, sizeof(host), "node");
        snprintf(g->name, sizeof(g->name), "%.*s", SB_NODE_NAME_MAX, host);
    }
    uint32_t suffix;
    if (getrandom(&suffix, sizeof(suffix), 0) != sizeof(suffix))
        suffix = (uint32_t)time(NULL) ^ (uint32_t)getpid() << 16;
    snprintf(g->id, sizeof(g->id), "%s~%08x", g->name, suffix);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    g->started_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    g->workers = calloc(g->nworkers, sizeof(*g->workers));
    if (!g->workers) {
        free(g);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < g->nworkers; i++)
        g->workers[i].g = g;
    int r = sb_engine_on_start(e, worker_start, g);
    if (r < 0) {
        sb_registry_free(g);
        return r;
    }
    sb_log(SB_LOG_INFO, 0,
           "cluster: this node is %s; heartbeat every %u ms, a node silent for %u ms is dead",
           g->id, cfg->heartbeat_ms, cfg->ttl_ms);
    *out = g;
    return 0;
}

void sb_registry_stop(struct sb_registry *g)
{
    if (g)
        atomic_store(&g->stopping, true);
}

void sb_registry_free(struct sb_registry *g)
{
    if (!g)
        return;
    for (unsigned i = 0; i < g->nworkers; i++) {
        struct rworker *rw = &g->workers[i];
        free(rw->live);
        for (size_t k = 0; k < rw->touched.cap; k++)
            free(rw->touched.ids[k]);
        free(rw->touched.ids);
        for (size_t k = rw->replay_at; k < rw->replay_n; k++)
            free(rw->replay_ids[k]);
        free(rw->replay_ids);
    }
    free(g->workers);
    free(g);
}
