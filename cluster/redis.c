/*
 * The Redis Cluster client (see redis.h). Each worker owns one `struct rworker`: a list of nodes
 * (each with at most one connection, a RESP reader, the commands waiting for it to be ready and
 * those in flight on it, in order), its slot map as node pointers, the commands waiting for a
 * map, and two worker timers: the sweep (timeouts) and the topology refresh.
 */
#include "cluster/redis.h"
#include "cluster/pubsub.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cluster/resp.h"
#include "cluster/slots.h"
#include "core/log.h"

#define REFRESH_MS 5000     /* periodic CLUSTER SLOTS */
#define REFRESH_GAP_MS 200  /* error-driven refreshes come at most this often */
#define BACKOFF_BASE_MS 100 /* the first reconnect comes after 50..100 ms */
#define BACKOFF_MAX_MS 2000 /* reconnects are at most this far apart (before jitter) */
#define SWEEP_MIN_MS 10     /* timeouts are checked every timeout/4, within these bounds */
#define SWEEP_MAX_MS 250
#define NODE_TEXT_MAX (SB_SLOTS_HOST_MAX + 8)

enum cmd_kind {
    K_USER,   /* a caller's command */
    K_ASKING, /* the ASKING before an ASK-redirected command */
    K_AUTH,   /* the connection's AUTH */
    K_SLOTS,  /* a topology refresh */
};

struct cmd {
    struct cmd *next;
    char *buf; /* the encoded command (redisFormatCommandArgv), kept for resends */
    int len;
    uint8_t kind;
    uint8_t redirects;
    bool has_key;
    bool asking;    /* send ASKING first (an ASK redirection) */
    bool timed_out; /* cb ran with -ETIMEDOUT; the answer is still to be read and dropped */
    uint16_t slot;
    uint64_t deadline_ms;
    sb_redis_cb cb;
    void *arg;
};

struct cmdq {
    struct cmd *head, *tail;
    unsigned n;
};

enum node_state {
    N_IDLE,       /* no connection, none wanted yet */
    N_CONNECTING, /* connecting, or waiting for the AUTH answer */
    N_READY,
    N_DOWN, /* the last connection failed: commands fail fast until a reconnect works */
};

struct rworker;

struct node {
    struct node *next;
    struct rworker *rw;
    char host[SB_SLOTS_HOST_MAX + 1];
    uint16_t port;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    enum node_state state;
    bool is_seed;
    bool sub;            /* a subscriber connection (its own list: rworker.subnodes) */
    bool wanted;         /* a master in the current map: keep it connected */
    bool connected_once; /* a later connection counts as a reconnect */
    bool failing;        /* the first failure was logged; the recovery will be */
    bool retry_armed;
    bool auth_logged;  /* the AUTH refusal was logged (once until AUTH works) */
    int down_err;      /* what commands for it fail with while DOWN */
    unsigned attempts; /* failed connections in a row */
    struct sb_conn *conn;
    redisReader *reader;
    struct cmdq wait; /* not sent yet: waiting for the connection */
    struct cmdq sent; /* in flight, in the order sent */
    struct sb_worker_timer retry_timer;
    struct waiter *waiting; /* sb_redis_wait callers for the next WAIT on this connection */
    bool wait_inflight;     /* a WAIT is in flight: the next goes once it is answered */
};

/* A caller of sb_redis_wait, and the group one WAIT answers. */
struct waiter {
    struct waiter *next;
    unsigned replicas, timeout_ms;
    sb_redis_cb cb;
    void *arg;
};

struct wait_group {
    struct node *n;
    struct waiter *list;
};

struct rstats {
    atomic_uint_fast64_t commands, errors, timeouts, moved, ask, reconnects, refreshes,
        inflight_max, messages, resubscribes, waits;
};

/* A sharded channel this worker subscribes to, on the subscriber node of its slot's master. */
struct sub {
    struct sub *next;
    struct node *on; /* the subscriber node it is (to be) subscribed on; NULL: no map yet */
    bool pending;    /* SSUBSCRIBE sent, not confirmed yet */
    bool confirmed;
    bool ever; /* confirmed once: a later confirmation ends a lapse */
    uint16_t slot;
    size_t len;
    sb_redis_msg_cb cb;
    void *arg;
    char channel[SB_REDIS_CHANNEL_MAX + 1];
};

struct rworker {
    struct sb_redis *r;
    struct sb_worker *w;
    bool started, stopping;
    struct node *nodes;
    unsigned nnodes;
    struct node *subnodes; /* one per master with subscriptions: pub/sub needs its own */
    unsigned nsubnodes;
    struct sub *subs;
    unsigned nsubs;
    struct node **owner; /* SB_SLOTS entries: each slot's master, NULL when unknown */
    uint8_t *nreplicas;  /* SB_SLOTS entries: the replicas the map lists for each slot */
    bool have_map;
    struct cmdq unrouted; /* waiting for a map */
    bool refreshing;      /* a CLUSTER SLOTS is in flight */
    bool refresh_pending; /* one is wanted as soon as a node is ready */
    bool refresh_armed;
    uint64_t last_refresh_ms;
    uint64_t refresh_at_ms; /* when the armed refresh timer fires */
    unsigned rotate;        /* which ready node answers the next refresh */
    bool map_failing;       /* a bad CLUSTER SLOTS answer was logged */
    int down_err;           /* what commands fail with when no node is reachable */
    struct cmd *free_cmds;
    struct node *answering; /* the node whose answer is being handled (sb_redis_wait) */
    uint64_t rng;
    struct sb_worker_timer sweep_timer, refresh_timer;
    struct rstats st;
};

struct seed {
    char host[SB_SLOTS_HOST_MAX + 1]; /* numeric, as resolved */
    uint16_t port;
};

struct sb_redis {
    struct sb_redis_config cfg;
    char *user, *password;
    unsigned client;
    unsigned nworkers;
    struct rworker *workers;
    struct seed seeds[SB_REDIS_MAX_SEEDS];
    unsigned nseeds;
    atomic_bool stop_requested;
};

/* Connections carry no app state of ours (the engine's app size belongs to the server): every
 * callback finds its node by worker and connection. One table for all instances. */
#define MAX_INSTANCES 4
static struct sb_redis *instances[MAX_INSTANCES];

static void stat_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* ---- commands and queues --------------------------------------------------------------------- */

static void q_push(struct cmdq *q, struct cmd *c)
{
    c->next = NULL;
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
    q->n++;
}

static struct cmd *q_pop(struct cmdq *q)
{
    struct cmd *c = q->head;
    if (c) {
        q->head = c->next;
        if (!q->head)
            q->tail = NULL;
        q->n--;
    }
    return c;
}

/* Takes the whole queue, leaving it empty: its commands may be re-queued while it is walked. */
static struct cmd *q_take(struct cmdq *q)
{
    struct cmd *c = q->head;
    memset(q, 0, sizeof(*q));
    return c;
}

static struct cmd *cmd_new(struct rworker *rw)
{
    struct cmd *c = rw->free_cmds;
    if (c)
        rw->free_cmds = c->next;
    else if (!(c = malloc(sizeof(*c))))
        return NULL;
    memset(c, 0, sizeof(*c));
    return c;
}

static void cmd_release(struct rworker *rw, struct cmd *c)
{
    if (c->buf)
        redisFreeCommand(c->buf);
    c->buf = NULL;
    c->next = rw->free_cmds;
    rw->free_cmds = c;
}

/* A user command is done: counts it, calls back (unless that happened at its timeout), frees. */
static void complete(struct rworker *rw, struct cmd *c, int err, const redisReply *reply)
{
    if (c->kind == K_USER && !c->timed_out) {
        if (err < 0 || (reply && reply->type == REDIS_REPLY_ERROR))
            stat_add(&rw->st.errors, 1);
        if (err == -ETIMEDOUT)
            stat_add(&rw->st.timeouts, 1);
        c->cb(rw->w, c->arg, err, reply);
    }
    cmd_release(rw, c);
}

/* Fails every command of a list (taken with q_take) with err. */
static void fail_list(struct rworker *rw, struct cmd *c, int err)
{
    while (c) {
        struct cmd *next = c->next;
        if (c->kind == K_SLOTS)
            rw->refreshing = false;
        complete(rw, c, err, NULL);
        c = next;
    }
}

/* ---- nodes ----------------------------------------------------------------------------------- */

static const char *node_text(const struct node *n, char *buf)
{
    snprintf(buf, NODE_TEXT_MAX, strchr(n->host, ':') ? "[%s]:%u" : "%s:%u", n->host, n->port);
    return buf;
}

static void request_refresh(struct rworker *rw);
static void refresh_now(struct rworker *rw);
static int send_cmd(struct node *n, struct cmd *c);
static void retry_due(struct sb_worker *w, struct sb_worker_timer *t);

/* The node host:port, added when new; NULL when the host is not an IP address (the topology
 * should name nodes by address: resolving names would block the worker) or out of memory. */
static struct node *node_find(struct rworker *rw, const char *host, uint16_t port, bool sub)
{
    for (struct node *n = sub ? rw->subnodes : rw->nodes; n; n = n->next) {
        if (n->port == port && strcmp(n->host, host) == 0)
            return n;
    }
    if ((sub ? rw->nsubnodes : rw->nnodes) >= SB_SLOTS_MAX_NODES ||
        strlen(host) > SB_SLOTS_HOST_MAX)
        return NULL;
    struct node *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&n->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&n->addr;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        n->addr_len = sizeof(*a4);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        n->addr_len = sizeof(*a6);
    } else {
        free(n);
        sb_log(SB_LOG_WARN, 0,
               "redis: node \"%s\" is not an IP address; it is not used (set the cluster's "
               "cluster-preferred-endpoint-type to ip)",
               host);
        return NULL;
    }
    strcpy(n->host, host);
    n->port = port;
    n->rw = rw;
    n->retry_timer.cb = retry_due;
    n->down_err = -EHOSTUNREACH;
    n->sub = sub;
    if (sub) {
        n->next = rw->subnodes;
        rw->subnodes = n;
        rw->nsubnodes++;
    } else {
        n->next = rw->nodes;
        rw->nodes = n;
        rw->nnodes++;
    }
    return n;
}

static struct node *node_get(struct rworker *rw, const char *host, uint16_t port)
{
    return node_find(rw, host, port, false);
}

static struct node *node_of_conn(struct sb_conn *c, struct rworker **rwp)
{
    unsigned id = sb_worker_id(sb_conn_worker(c));
    for (unsigned i = 0; i < MAX_INSTANCES; i++) {
        struct sb_redis *r = instances[i];
        if (!r || id >= r->nworkers)
            continue;
        struct rworker *rw = &r->workers[id];
        for (struct node *n = rw->nodes; n; n = n->next) {
            if (n->conn == c) {
                *rwp = rw;
                return n;
            }
        }
        for (struct node *n = rw->subnodes; n; n = n->next) {
            if (n->conn == c) {
                *rwp = rw;
                return n;
            }
        }
    }
    return NULL;
}

static uint64_t next_rand(struct rworker *rw)
{
    rw->rng ^= rw->rng << 13;
    rw->rng ^= rw->rng >> 7;
    rw->rng ^= rw->rng << 17;
    return rw->rng;
}

/* Exponential, capped, with equal jitter: workers and servers that lost a node together spread
 * their reconnects out. */
static uint64_t backoff_ms(struct rworker *rw, unsigned attempts)
{
    unsigned shift = attempts > 16 ? 15 : attempts - 1;
    uint64_t d = (uint64_t)BACKOFF_BASE_MS << shift;
    if (d > BACKOFF_MAX_MS)
        d = BACKOFF_MAX_MS;
    return d / 2 + next_rand(rw) % (d / 2 + 1);
}

static bool is_stopping(struct rworker *rw)
{
    if (!rw->stopping && atomic_load(&rw->r->stop_requested))
        rw->stopping = true;
    return rw->stopping;
}

static void node_connect(struct node *n);
static void subs_send(struct node *n);

/* Arms the reconnect of a node that is down. It also spaces out attempts at a node nobody keeps
 * connected (not a master in the map, not a seed; retry_due then does nothing): while it is
 * armed, commands for that node fail at once instead of each starting a connection. */
static void plan_retry(struct node *n)
{
    if (n->state == N_DOWN && !n->retry_armed && !is_stopping(n->rw)) {
        n->retry_armed = true;
        sb_worker_timer_set(n->rw->w, &n->retry_timer,
                            backoff_ms(n->rw, n->attempts ? n->attempts : 1));
    }
}

/* A connection attempt or a connection failed: commands waiting for it fail fast, the first
 * failure is logged, a reconnect is planned and the topology read again (a replica may take
 * over). */
static void node_failed(struct node *n, int err)
{
    struct rworker *rw = n->rw;
    n->state = N_DOWN;
    n->attempts++;
    /* A refused AUTH is the operator's to fix: callers hear that rather than "unreachable". */
    n->down_err = rw->down_err = err == -EACCES ? -EACCES : -EHOSTUNREACH;
    fail_list(rw, q_take(&n->wait), is_stopping(rw) ? -ESHUTDOWN : n->down_err);
    if (is_stopping(rw))
        return;
    if (!n->failing) {
        n->failing = true;
        char t[NODE_TEXT_MAX];
        sb_log(SB_LOG_WARN, err,
               "redis: node %s is unreachable; commands for its slots fail with retryable "
               "errors, reconnecting with backoff (the next line says when it is back)",
               node_text(n, t));
    }
    plan_retry(n);
    request_refresh(rw);
}

static void retry_due(struct sb_worker *w, struct sb_worker_timer *t)
{
    struct node *n = (struct node *)((char *)t - offsetof(struct node, retry_timer));
    n->retry_armed = false;
    if (n->state == N_DOWN && (n->wanted || n->is_seed) && !is_stopping(n->rw))
        node_connect(n);
}

static void node_connect(struct node *n)
{
    struct rworker *rw = n->rw;
    if (n->conn || is_stopping(rw))
        return;
    if (n->reader)
        redisReaderFree(n->reader);
    n->reader = sb_redis_reader_new();
    n->conn = n->reader ? sb_worker_connect(rw->w, rw->r->client, (const struct sockaddr *)&n->addr,
                                            n->addr_len)
                        : NULL;
    if (!n->conn) {
        node_failed(n, n->reader ? -errno : -ENOMEM);
        return;
    }
    n->state = N_CONNECTING;
    sb_conn_set_timer(n->conn, rw->r->cfg.timeout_ms);
}

/* The connection is usable: what waited for it goes out, and a wanted refresh is sent. */
static void node_ready(struct node *n)
{
    struct rworker *rw = n->rw;
    n->state = N_READY;
    sb_conn_set_timer(n->conn, 0);
    if (n->connected_once)
        stat_add(&rw->st.reconnects, 1);
    n->connected_once = true;
    if (n->failing) {
        char t[NODE_TEXT_MAX];
        sb_log(SB_LOG_INFO, 0, "redis: node %s is reachable again after %u failed attempts",
               node_text(n, t), n->attempts);
    }
    n->failing = false;
    n->attempts = 0;
    if (n->sub)
        subs_send(n);
    for (struct cmd *c = q_take(&n->wait), *next; c; c = next) {
        next = c->next;
        int err = send_cmd(n, c);
        if (err < 0)
            complete(rw, c, err, NULL);
    }
    if (rw->refresh_pending && !rw->refreshing)
        refresh_now(rw);
}

/* ---- sending --------------------------------------------------------------------------------- */

static const char asking_cmd[] = "*1\r\n$6\r\nASKING\r\n";

/* Writes c on n's connection (READY) and appends it to the in-flight list. 0 or -ENOMEM. */
static int send_cmd(struct node *n, struct cmd *c)
{
    struct rworker *rw = n->rw;
    if (c->asking) {
        struct cmd *a = cmd_new(rw);
        if (!a || sb_conn_write(n->conn, asking_cmd, sizeof(asking_cmd) - 1) < 0) {
            if (a)
                cmd_release(rw, a);
            return -ENOMEM;
        }
        a->kind = K_ASKING;
        q_push(&n->sent, a);
        c->asking = false;
    }
    if (sb_conn_write(n->conn, c->buf, (size_t)c->len) < 0) {
        /* An ASKING already written would apply to whatever command came next: the stream is
         * no longer what we think it is. */
        if (n->sent.tail && n->sent.tail->kind == K_ASKING)
            sb_conn_close(n->conn, -ENOMEM);
        return -ENOMEM;
    }
    q_push(&n->sent, c);
    if (n->sent.n > atomic_load_explicit(&rw->st.inflight_max, memory_order_relaxed))
        atomic_store_explicit(&rw->st.inflight_max, n->sent.n, memory_order_relaxed);
    return 0;
}

/* Any node with a usable connection, taking turns; NULL when there is none. */
static struct node *any_ready(struct rworker *rw)
{
    unsigned i = 0, pick = rw->rotate++ % (rw->nnodes ? rw->nnodes : 1);
    struct node *first = NULL;
    for (struct node *n = rw->nodes; n; n = n->next, i++) {
        if (n->state != N_READY)
            continue;
        if (i >= pick)
            return n;
        if (!first)
            first = n;
    }
    return first;
}

static bool any_reachable(const struct rworker *rw)
{
    for (const struct node *n = rw->nodes; n; n = n->next) {
        if (n->state == N_READY || n->state == N_CONNECTING)
            return true;
    }
    return false;
}

/*
 * Hands c to a node: `to` when given (a redirection), else its slot's master. Returns 0 when c
 * was queued or sent (and will complete), or -errno when it was not (the caller completes it).
 */
static int route(struct rworker *rw, struct cmd *c, struct node *to)
{
    struct node *n = to;
    if (!n)
        n = c->has_key ? rw->owner[c->slot] : any_ready(rw);
    if (!n) {
        /* No map yet, or a slot nobody serves: wait for the next map, unless no node at all can
         * answer (then the caller hears so at once). */
        if (!any_reachable(rw))
            return rw->down_err ? rw->down_err : -EHOSTUNREACH;
        if (rw->unrouted.n >= rw->r->cfg.queue)
            return -ENOBUFS;
        q_push(&rw->unrouted, c);
        request_refresh(rw);
        return 0;
    }
    if (n->wait.n + n->sent.n >= rw->r->cfg.queue)
        return -ENOBUFS;
    switch (n->state) {
    case N_DOWN:
        /* No reconnect planned: the node was let go while down (an old master), and is needed
         * again (a MOVED, a failback). Try it now rather than fail until the next refresh. */
        if (!n->retry_armed)
            node_connect(n);
        if (n->state != N_CONNECTING) {
            request_refresh(rw);
            return n->down_err;
        }
        q_push(&n->wait, c);
        return 0;
    case N_IDLE:
        node_connect(n);
        if (n->state == N_DOWN)
            return n->down_err;
        /* fallthrough */
    case N_CONNECTING:
        q_push(&n->wait, c);
        return 0;
    case N_READY:
        return send_cmd(n, c);
    }
    return -EINVAL;
}

/* ---- the topology ---------------------------------------------------------------------------- */

static void refresh_due(struct sb_worker *w, struct sb_worker_timer *t)
{
    struct rworker *rw = (struct rworker *)((char *)t - offsetof(struct rworker, refresh_timer));
    rw->refresh_armed = false;
    if (is_stopping(rw))
        return;
    /* A CLUSTER SLOTS unanswered for a whole timeout is given up on (its answer, should it come,
     * is still used): another node is asked. */
    if (rw->refreshing && sb_worker_now_ms(w) - rw->last_refresh_ms >= rw->r->cfg.timeout_ms)
        rw->refreshing = false;
    refresh_now(rw);
}

static void arm_refresh(struct rworker *rw, uint64_t delay_ms)
{
    uint64_t at = sb_worker_now_ms(rw->w) + delay_ms;
    if (rw->refresh_armed && rw->refresh_at_ms <= at)
        return;
    rw->refresh_armed = true;
    rw->refresh_at_ms = at;
    sb_worker_timer_set(rw->w, &rw->refresh_timer, delay_ms ? delay_ms : 1);
}

/* Something went wrong: read the map again soon, but not more often than REFRESH_GAP_MS. */
static void request_refresh(struct rworker *rw)
{
    if (rw->refreshing || is_stopping(rw))
        return;
    uint64_t now = sb_worker_now_ms(rw->w), next = rw->last_refresh_ms + REFRESH_GAP_MS;
    arm_refresh(rw, next > now ? next - now : 0);
}

/* Asks a connected node for CLUSTER SLOTS; with none, connects the known masters and seeds and
 * asks the first that is ready. */
static void refresh_now(struct rworker *rw)
{
    if (rw->refreshing || is_stopping(rw))
        return;
    struct node *n = any_ready(rw);
    if (!n) {
        rw->refresh_pending = true;
        for (struct node *m = rw->nodes; m; m = m->next) {
            if ((m->wanted || m->is_seed) && m->state == N_IDLE)
                node_connect(m);
        }
        if (!any_reachable(rw))
            fail_list(rw, q_take(&rw->unrouted), rw->down_err ? rw->down_err : -EHOSTUNREACH);
        arm_refresh(rw, rw->r->cfg.refresh_ms);
        return;
    }
    static const char slots_cmd[] = "*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n";
    struct cmd *c = cmd_new(rw);
    if (!c || sb_conn_write(n->conn, slots_cmd, sizeof(slots_cmd) - 1) < 0) {
        if (c)
            cmd_release(rw, c);
        arm_refresh(rw, REFRESH_GAP_MS);
        return;
    }
    c->kind = K_SLOTS;
    q_push(&n->sent, c);
    rw->refreshing = true;
    rw->refresh_pending = false;
    rw->last_refresh_ms = sb_worker_now_ms(rw->w);
    stat_add(&rw->st.refreshes, 1);
    arm_refresh(rw, rw->r->cfg.refresh_ms); /* the periodic one, and a retry if this is lost */
}

static void subs_place(struct rworker *rw);

/* A new map: every slot points at its master's node; masters are kept connected; commands that
 * waited for a map are routed. */
static void apply_map(struct rworker *rw, const struct sb_slot_map *m)
{
    struct node **by_index = calloc(m->nnodes ? m->nnodes : 1, sizeof(*by_index));
    if (!by_index)
        return; /* keep the old map; the next refresh tries again */
    for (struct node *n = rw->nodes; n; n = n->next)
        n->wanted = false;
    for (unsigned i = 0; i < m->nranges; i++) {
        const struct sb_slot_range *r = &m->ranges[i];
        if (r->master != SB_SLOT_NONE && !by_index[r->master])
            by_index[r->master] = node_get(rw, m->nodes[r->master].host, m->nodes[r->master].port);
    }
    for (unsigned s = 0; s < SB_SLOTS; s++) {
        struct node *n = m->owner[s] == SB_SLOT_NONE ? NULL : by_index[m->owner[s]];
        rw->owner[s] = n;
        if (n)
            n->wanted = true;
    }
    free(by_index);
    memset(rw->nreplicas, 0, SB_SLOTS);
    for (unsigned i = 0; i < m->nranges; i++) {
        const struct sb_slot_range *r = &m->ranges[i];
        memset(rw->nreplicas + r->start, r->nreplicas, (size_t)r->end - r->start + 1u);
    }
    rw->have_map = true;
    for (struct node *n = rw->nodes; n; n = n->next) {
        /* A master again after it was let go while down gets its attempt now, too. */
        if (n->wanted && (n->state == N_IDLE || (n->state == N_DOWN && !n->retry_armed)))
            node_connect(n);
    }
    for (struct cmd *c = q_take(&rw->unrouted), *next; c; c = next) {
        next = c->next;
        /* A slot still unserved waits in unrouted again, until its deadline. */
        int err = route(rw, c, NULL);
        if (err < 0)
            complete(rw, c, err, NULL);
    }
    subs_place(rw);
}

static void on_slots(struct rworker *rw, struct node *n, const redisReply *reply)
{
    rw->refreshing = false;
    struct sb_slot_map *m = malloc(sizeof(*m));
    int err = !m                                 ? -ENOMEM
              : reply->type == REDIS_REPLY_ERROR ? -EPROTO
                                                 : sb_slot_map_parse(m, reply, n->host);
    if (err == 0) {
        apply_map(rw, m);
        sb_slot_map_destroy(m);
        rw->map_failing = false;
    } else if (!rw->map_failing) {
        rw->map_failing = true;
        char t[NODE_TEXT_MAX];
        sb_log(SB_LOG_WARN, err, "redis: node %s answered CLUSTER SLOTS with %s%.*s",
               node_text(n, t), err == -EPROTO ? "an error: " : "an unusable reply",
               err == -EPROTO ? (int)reply->len : 0, err == -EPROTO ? reply->str : "");
    }
    free(m);
    if (err < 0)
        request_refresh(rw);
}

/* ---- answers --------------------------------------------------------------------------------- */

static bool starts_with(const redisReply *r, const char *prefix)
{
    size_t n = strlen(prefix);
    return r->len >= n && memcmp(r->str, prefix, n) == 0 && (r->len == n || r->str[n] == ' ');
}

/* MOVED or ASK: resend c to the node named (MOVED also fixes the map and asks for a fresh one). */
static void redirect(struct rworker *rw, struct node *from, struct cmd *c,
                     const struct sb_slot_redirect *rd)
{
    if (++c->redirects > SB_REDIS_MAX_REDIRECTS) {
        complete(rw, c, -ELOOP, NULL);
        return;
    }
    struct node *to = node_get(rw, rd->host[0] ? rd->host : from->host, rd->port);
    if (!to) {
        complete(rw, c, -EHOSTUNREACH, NULL);
        return;
    }
    if (rd->is_ask) {
        stat_add(&rw->st.ask, 1);
        c->asking = true;
    } else {
        stat_add(&rw->st.moved, 1);
        rw->owner[rd->slot] = to;
        to->wanted = true;
        request_refresh(rw);
    }
    int err = route(rw, c, to);
    if (err < 0)
        complete(rw, c, err, NULL);
}

/* The answer to c, the oldest command in flight on n. */
static void on_answer(struct rworker *rw, struct node *n, struct cmd *c, const redisReply *reply)
{
    switch (c->kind) {
    case K_ASKING:
        cmd_release(rw, c); /* a refused ASKING shows in the answer to the command after it */
        return;
    case K_SLOTS:
        cmd_release(rw, c);
        on_slots(rw, n, reply);
        return;
    case K_AUTH:
        cmd_release(rw, c);
        if (reply->type == REDIS_REPLY_ERROR) {
            char t[NODE_TEXT_MAX];
            if (!n->auth_logged)
                sb_log(SB_LOG_ERROR, 0,
                       "redis: node %s refused AUTH: %.*s (check redis_user and "
                       "redis_password)",
                       node_text(n, t), (int)reply->len, reply->str);
            n->auth_logged = true;
            fail_list(rw, q_take(&n->wait), -EACCES);
            sb_conn_close(n->conn, -EACCES);
            return;
        }
        n->auth_logged = false;
        node_ready(n);
        return;
    case K_USER:
        break;
    }
    if (c->timed_out) {
        cmd_release(rw, c);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        struct sb_slot_redirect rd;
        if (sb_slot_redirect_parse(reply->str, reply->len, &rd) == 0) {
            redirect(rw, n, c, &rd);
            return;
        }
        bool down = starts_with(reply, "CLUSTERDOWN") || starts_with(reply, "MASTERDOWN");
        if (down || starts_with(reply, "TRYAGAIN") || starts_with(reply, "LOADING")) {
            if (down)
                request_refresh(rw);
            complete(rw, c, -EAGAIN, NULL);
            return;
        }
    }
    complete(rw, c, 0, reply);
}

/* ---- the connection callbacks ---------------------------------------------------------------- */

static void conn_open(struct sb_conn *conn)
{
    struct rworker *rw;
    struct node *n = node_of_conn(conn, &rw);
    if (!n) {
        sb_conn_close(conn, -EINVAL);
        return;
    }
    struct sb_redis *r = rw->r;
    if (!r->password) {
        node_ready(n);
        return;
    }
    const char *argv[3] = {"AUTH", r->user, r->password};
    size_t argvlen[3] = {4, r->user ? strlen(r->user) : 0, strlen(r->password)};
    int argc = r->user ? 3 : 2;
    if (!r->user) {
        argv[1] = r->password;
        argvlen[1] = argvlen[2];
    }
    struct cmd *c = cmd_new(rw);
    if (c)
        c->len = redisFormatCommandArgv(&c->buf, argc, argv, argvlen);
    if (!c || c->len < 0 || sb_conn_write(conn, c->buf, (size_t)c->len) < 0) {
        if (c)
            cmd_release(rw, c);
        sb_conn_close(conn, -ENOMEM);
        return;
    }
    c->kind = K_AUTH;
    q_push(&n->sent, c);
}

static bool is_push(const redisReply *r);
static void on_push(struct rworker *rw, struct node *n, const redisReply *reply);
static void wait_send(struct node *n);
static void waiters_fail(struct rworker *rw, struct waiter *list, int err);

static ssize_t conn_data(struct sb_conn *conn, uint8_t *data, size_t len)
{
    struct rworker *rw;
    struct node *n = node_of_conn(conn, &rw);
    if (!n)
        return -EPROTO;
    if (redisReaderFeed(n->reader, (const char *)data, len) != REDIS_OK)
        return -ENOMEM;
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(n->reader, &reply) != REDIS_OK) {
            char t[NODE_TEXT_MAX];
            sb_log(SB_LOG_WARN, 0, "redis: node %s sent malformed RESP (%s); reconnecting",
                   node_text(n, t), n->reader->errstr);
            return -EBADMSG;
        }
        if (!reply)
            break;
        if (n->sub && (!n->sent.head || is_push(reply))) {
            on_push(rw, n, reply);
            freeReplyObject(reply);
            if (n->conn != conn || sb_conn_is_closing(conn))
                return (ssize_t)len;
            continue;
        }
        struct cmd *c = q_pop(&n->sent);
        if (!c) {
            freeReplyObject(reply);
            return -EPROTO; /* an answer nobody asked for: the stream cannot be trusted */
        }
        rw->answering = n;
        on_answer(rw, n, c, reply);
        rw->answering = NULL;
        freeReplyObject(reply);
        /* An answer's callback may have closed this connection (AUTH refused, out of memory). */
        if (n->conn != conn || sb_conn_is_closing(conn))
            return (ssize_t)len;
    }
    if (n->reader->len - n->reader->pos > SB_REDIS_MAX_REPLY)
        return -EMSGSIZE;
    /* One WAIT for every write this read answered (and those answered while one was out). */
    if (n->waiting && !n->wait_inflight)
        wait_send(n);
    return (ssize_t)len;
}

static void conn_timer(struct sb_conn *conn)
{
    sb_conn_close(conn, -ETIMEDOUT); /* connecting, or AUTH, took longer than timeout_ms */
}

static void conn_close(struct sb_conn *conn, int err)
{
    struct rworker *rw;
    struct node *n = node_of_conn(conn, &rw);
    if (!n)
        return;
    n->conn = NULL;
    bool stopping = is_stopping(rw);
    for (struct sub *s = rw->subs; s; s = s->next) {
        if (s->on == n)
            s->pending = s->confirmed = false;
    }
    /* Before any callback runs: a command sent from one must not pick this connection. */
    n->state = stopping ? N_IDLE : N_DOWN;
    fail_list(rw, q_take(&n->sent), stopping ? -ESHUTDOWN : -ECONNRESET);
    /* Writes answered on this connection that no WAIT has covered: a WAIT elsewhere would not
     * count them. */
    struct waiter *waiting = n->waiting;
    n->waiting = NULL;
    waiters_fail(rw, waiting, stopping ? -ESHUTDOWN : -ECONNRESET);
    if (stopping) {
        n->state = N_IDLE;
        fail_list(rw, q_take(&n->wait), -ESHUTDOWN);
        return;
    }
    node_failed(n, err ? err : -ECONNRESET);
}

static void conn_shutdown(struct sb_conn *conn)
{
    struct rworker *rw;
    struct node *n = node_of_conn(conn, &rw);
    if (n)
        rw->stopping = true;
    sb_conn_close(conn, 0);
}

static void conn_handoff(struct sb_conn *conn)
{
    sb_conn_close(conn, -EINVAL); /* never handed off */
}

static const struct sb_conn_ops redis_ops = {
    .on_open = conn_open,
    .on_data = conn_data,
    .on_timer = conn_timer,
    .on_close = conn_close,
    .on_shutdown = conn_shutdown,
    .on_handoff = conn_handoff,
};

static void worker_start(struct rworker *rw, struct sb_worker *w);

/* ---- sharded pub/sub ------------------------------------------------------------------------- */

/*
 * A connection in subscribe mode carries nothing else (RESP2), so each master with a channel of
 * ours gets a subscriber node of its own. A subscription follows its slot: after every new map
 * (and on a lost connection, an unsolicited sunsubscribe — a slot that moved or a failover — or
 * a MOVED answer to SSUBSCRIBE, each of which asks for a new map) subs_place moves it to the
 * master that serves the slot now, leaving the old one (Redis 7.0 keeps a moved replica's
 * subscriptions silently). Messages published while a channel moves are lost: pub/sub is at
 * most once.
 */

static void sub_write(struct node *n, const char *verb, const struct sub *s)
{
    const char *argv[2] = {verb, s->channel};
    size_t argvlen[2] = {strlen(verb), s->len};
    char *buf;
    int len = redisFormatCommandArgv(&buf, 2, argv, argvlen);
    if (len < 0 || sb_conn_write(n->conn, buf, (size_t)len) < 0)
        sb_conn_close(n->conn, -ENOMEM); /* its subscriptions are placed again */
    if (len >= 0)
        redisFreeCommand(buf);
}

/* The subscriptions of n not confirmed yet go out (n is READY). */
static void subs_send(struct node *n)
{
    for (struct sub *s = n->rw->subs; s && n->conn; s = s->next) {
        if (s->on == n && !s->pending && !s->confirmed) {
            s->pending = true;
            sub_write(n, "SSUBSCRIBE", s);
        }
    }
}

static void subs_place(struct rworker *rw)
{
    if (!rw->have_map || is_stopping(rw))
        return;
    for (struct sub *s = rw->subs; s; s = s->next) {
        struct node *m = rw->owner[s->slot];
        struct node *to = m ? node_find(rw, m->host, m->port, true) : NULL;
        if (s->on == to)
            continue;
        if (s->on && s->on->state == N_READY && (s->confirmed || s->pending))
            sub_write(s->on, "SUNSUBSCRIBE", s);
        if (s->on && to) {
            char a[NODE_TEXT_MAX], b[NODE_TEXT_MAX];
            sb_log(SB_LOG_INFO, 0, "redis: the subscription to %s moves from node %s to %s",
                   s->channel, node_text(s->on, a), node_text(to, b));
        }
        s->on = to;
        s->pending = s->confirmed = false;
    }
    for (struct node *n = rw->subnodes; n; n = n->next) {
        n->wanted = false;
        for (struct sub *s = rw->subs; s && !n->wanted; s = s->next)
            n->wanted = s->on == n;
        if (!n->wanted && n->conn) {
            sb_conn_close(n->conn, 0); /* nothing of ours is there any more */
        } else if (n->wanted && (n->state == N_IDLE || (n->state == N_DOWN && !n->retry_armed))) {
            node_connect(n);
        } else if (n->wanted && n->state == N_READY) {
            subs_send(n);
        }
    }
}

static bool is_push(const redisReply *r)
{
    return r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
           r->element[0]->type == REDIS_REPLY_STRING;
}

static struct sub *sub_find(struct rworker *rw, const char *ch, size_t len)
{
    for (struct sub *s = rw->subs; s; s = s->next) {
        if (s->len == len && memcmp(s->channel, ch, len) == 0)
            return s;
    }
    return NULL;
}

static bool kind_is(const redisReply *r, const char *kind)
{
    return r->len == strlen(kind) && strncasecmp(r->str, kind, r->len) == 0;
}

static void on_push(struct rworker *rw, struct node *n, const redisReply *reply)
{
    char t[NODE_TEXT_MAX];
    if (!is_push(reply)) {
        /* An error answer to SSUBSCRIBE: MOVED (our map is behind) or the cluster is down. The
         * subscriptions not confirmed here are placed again after a new map. */
        if (reply->type == REDIS_REPLY_ERROR)
            sb_log(SB_LOG_DEBUG, 0, "redis: node %s refused a subscription: %.*s", node_text(n, t),
                   (int)reply->len, reply->str);
        for (struct sub *s = rw->subs; s; s = s->next) {
            if (s->on == n && !s->confirmed) {
                s->pending = false;
                s->on = NULL;
            }
        }
        request_refresh(rw);
        return;
    }
    const redisReply *kind = reply->element[0], *ch = reply->element[1], *v = reply->element[2];
    if (ch->type != REDIS_REPLY_STRING)
        return;
    struct sub *s = sub_find(rw, ch->str, ch->len);
    if (kind_is(kind, "smessage")) {
        if (s && v->type == REDIS_REPLY_STRING) {
            stat_add(&rw->st.messages, 1);
            s->cb(rw->w, s->arg, s->channel, s->len, v->str, v->len);
        }
    } else if (kind_is(kind, "ssubscribe")) {
        if (s && s->on == n) {
            s->pending = false;
            s->confirmed = true;
            bool lapsed = s->ever; /* every confirmation after the first follows a loss */
            s->ever = true;
            if (lapsed)
                s->cb(rw->w, s->arg, s->channel, s->len, NULL, 0);
        }
    } else if (kind_is(kind, "sunsubscribe")) {
        /* Unasked (we unsubscribe only where a subscription no longer is): the slot moved. */
        if (s && s->on == n) {
            sb_log(SB_LOG_INFO, 0,
                   "redis: node %s dropped the subscription to %s (slot %u moved); "
                   "subscribing where it is now",
                   node_text(n, t), s->channel, s->slot);
            s->pending = s->confirmed = false;
            s->on = NULL;
            stat_add(&rw->st.resubscribes, 1);
            request_refresh(rw);
        }
    }
}

int sb_redis_ssubscribe(struct sb_worker *w, struct sb_redis *r, const char *channel, size_t len,
                        sb_redis_msg_cb cb, void *arg)
{
    struct rworker *rw = &r->workers[sb_worker_id(w)];
    if (!cb || len == 0 || len > SB_REDIS_CHANNEL_MAX)
        return -EINVAL;
    if (is_stopping(rw))
        return -ESHUTDOWN;
    if (sub_find(rw, channel, len))
        return -EEXIST;
    if (rw->nsubs >= SB_REDIS_MAX_SUBS)
        return -ENOBUFS;
    struct sub *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    memcpy(s->channel, channel, len);
    s->len = len;
    s->slot = (uint16_t)sb_slot_of(channel, len);
    s->cb = cb;
    s->arg = arg;
    s->next = rw->subs;
    rw->subs = s;
    rw->nsubs++;
    if (!rw->started)
        worker_start(rw, w);
    subs_place(rw);
    return 0;
}

int sb_redis_sunsubscribe(struct sb_worker *w, struct sb_redis *r, const char *channel, size_t len)
{
    struct rworker *rw = &r->workers[sb_worker_id(w)];
    for (struct sub **p = &rw->subs; *p; p = &(*p)->next) {
        struct sub *s = *p;
        if (s->len != len || memcmp(s->channel, channel, len) != 0)
            continue;
        *p = s->next;
        rw->nsubs--;
        if (s->on && s->on->state == N_READY && (s->confirmed || s->pending))
            sub_write(s->on, "SUNSUBSCRIBE", s);
        free(s);
        subs_place(rw); /* a subscriber connection left with nothing is closed */
        return 0;
    }
    return -ENOENT;
}

/* ---- WAIT, coalesced ------------------------------------------------------------------------ */

static void waiters_fail(struct rworker *rw, struct waiter *list, int err)
{
    for (struct waiter *x = list, *next; x; x = next) {
        next = x->next;
        x->cb(rw->w, x->arg, err, NULL);
        free(x);
    }
}

static void wait_answered(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    struct wait_group *g = arg;
    g->n->wait_inflight = false;
    for (struct waiter *x = g->list, *next; x; x = next) {
        next = x->next;
        x->cb(w, x->arg, err, reply);
        free(x);
    }
    /* Answered in a read (conn_data sends the next) or failed (timed out: send it now). */
    struct node *n = g->n;
    free(g);
    if (err == -ETIMEDOUT && n->waiting && n->state == N_READY)
        wait_send(n);
}

/* One WAIT on n's connection for every waiter so far: WAIT counts the replicas that have all of
 * this connection's writes, so it covers each write answered before it was sent. */
static void wait_send(struct node *n)
{
    struct rworker *rw = n->rw;
    struct wait_group *g = malloc(sizeof(*g));
    struct cmd *c = g ? cmd_new(rw) : NULL;
    struct waiter *list = n->waiting;
    n->waiting = NULL;
    unsigned replicas = 0, ms = 0;
    for (const struct waiter *x = list; x; x = x->next) {
        replicas = x->replicas > replicas ? x->replicas : replicas;
        ms = x->timeout_ms > ms ? x->timeout_ms : ms;
    }
    char a[24], b[24];
    const char *argv[3] = {"WAIT", a, b};
    size_t argvlen[3] = {4, (size_t)snprintf(a, sizeof(a), "%u", replicas),
                         (size_t)snprintf(b, sizeof(b), "%u", ms)};
    if (c && (c->len = redisFormatCommandArgv(&c->buf, 3, argv, argvlen)) < 0)
        c->buf = NULL;
    if (!c || !c->buf) {
        if (c)
            cmd_release(rw, c);
        free(g);
        waiters_fail(rw, list, -ENOMEM);
        return;
    }
    *g = (struct wait_group){n, list};
    c->kind = K_USER;
    c->deadline_ms = sb_worker_now_ms(rw->w) + ms + rw->r->cfg.timeout_ms;
    c->cb = wait_answered;
    c->arg = g;
    int err = route(rw, c, n);
    if (err < 0) {
        cmd_release(rw, c);
        free(g);
        waiters_fail(rw, list, err);
        return;
    }
    stat_add(&rw->st.waits, 1);
    n->wait_inflight = true;
}

int sb_redis_wait(struct sb_worker *w, struct sb_redis *r, unsigned replicas, unsigned timeout_ms,
                  sb_redis_cb cb, void *arg)
{
    struct rworker *rw = &r->workers[sb_worker_id(w)];
    struct node *n = rw->answering;
    if (!cb)
        return -EINVAL;
    if (is_stopping(rw))
        return -ESHUTDOWN;
    if (!n || n->state != N_READY)
        return n ? -ECONNRESET : -EINVAL;
    struct waiter *x = malloc(sizeof(*x));
    if (!x)
        return -ENOMEM;
    *x = (struct waiter){n->waiting, replicas, timeout_ms, cb, arg};
    n->waiting = x;
    return 0;
}

unsigned sb_redis_replicas(struct sb_worker *w, struct sb_redis *r, const void *key, size_t len)
{
    return r->workers[sb_worker_id(w)].nreplicas[sb_slot_of(key, len)];
}

bool sb_redis_subscribed(struct sb_worker *w, struct sb_redis *r)
{
    const struct rworker *rw = &r->workers[sb_worker_id(w)];
    for (const struct sub *s = rw->subs; s; s = s->next) {
        if (!s->confirmed)
            return false;
    }
    return true;
}

/* ---- timeouts -------------------------------------------------------------------------------- */

static unsigned sweep_ms(const struct sb_redis *r)
{
    unsigned ms = r->cfg.timeout_ms / 4;
    return ms < SWEEP_MIN_MS ? SWEEP_MIN_MS : ms > SWEEP_MAX_MS ? SWEEP_MAX_MS : ms;
}

/* Removes the commands of q (not sent yet) whose deadline passed and fails them with err. */
static void expire_queue(struct rworker *rw, struct cmdq *q, uint64_t now, int err)
{
    struct cmdq expired = {0};
    for (struct cmd *c = q_take(q), *next; c; c = next) {
        next = c->next;
        q_push(c->deadline_ms <= now ? &expired : q, c);
    }
    fail_list(rw, q_take(&expired), err);
}

static void sweep_due(struct sb_worker *w, struct sb_worker_timer *t)
{
    struct rworker *rw = (struct rworker *)((char *)t - offsetof(struct rworker, sweep_timer));
    uint64_t now = sb_worker_now_ms(w), timeout = rw->r->cfg.timeout_ms;
    if (is_stopping(rw)) {
        /* Commands no connection will carry any more: their callers hear it now. */
        expire_queue(rw, &rw->unrouted, UINT64_MAX, -ESHUTDOWN);
        for (struct node *n = rw->nodes; n; n = n->next)
            expire_queue(rw, &n->wait, UINT64_MAX, -ESHUTDOWN);
        return;
    }
    expire_queue(rw, &rw->unrouted, now, -ETIMEDOUT);
    for (struct node *n = rw->nodes; n; n = n->next) {
        expire_queue(rw, &n->wait, now, -ETIMEDOUT);
        /* Sent commands keep their place: their answers are still to come, in order. */
        for (struct cmd *c = n->sent.head; c; c = c->next) {
            if (c->kind == K_USER && !c->timed_out && c->deadline_ms <= now) {
                stat_add(&rw->st.errors, 1);
                stat_add(&rw->st.timeouts, 1);
                c->timed_out = true;
                c->cb(w, c->arg, -ETIMEDOUT, NULL);
            }
        }
        /* The oldest command is overdue and nothing came for a whole timeout: the connection is
         * dead (a frozen node, a lost network) even if no error says so. */
        struct cmd *h = n->sent.head;
        if (n->conn && h && h->timed_out && now - sb_conn_last_rx_ms(n->conn) >= timeout &&
            now - h->deadline_ms >= timeout)
            sb_conn_close(n->conn, -ETIMEDOUT);
    }
    sb_worker_timer_set(w, &rw->sweep_timer, sweep_ms(rw->r));
}

/* ---- the API --------------------------------------------------------------------------------- */

static void worker_start(struct rworker *rw, struct sb_worker *w)
{
    rw->w = w;
    rw->started = true;
    rw->rng = 0x9e3779b97f4a7c15ull * (sb_worker_id(w) + 1) ^ (uint64_t)time(NULL);
    for (unsigned i = 0; i < rw->r->nseeds; i++) {
        struct node *n = node_get(rw, rw->r->seeds[i].host, rw->r->seeds[i].port);
        if (n)
            n->is_seed = true;
    }
    for (struct node *n = rw->nodes; n; n = n->next)
        node_connect(n);
    rw->refresh_pending = true;
    sb_worker_timer_set(w, &rw->sweep_timer, sweep_ms(rw->r));
}

int sb_redis_cmd(struct sb_worker *w, struct sb_redis *r, const char *key, size_t keylen, int argc,
                 const char **argv, const size_t *argvlen, sb_redis_cb cb, void *arg)
{
    if (argc < 1 || !cb)
        return -EINVAL;
    struct rworker *rw = &r->workers[sb_worker_id(w)];
    if (is_stopping(rw))
        return -ESHUTDOWN;
    if (!rw->started)
        worker_start(rw, w);
    struct cmd *c = cmd_new(rw);
    if (!c)
        return -ENOMEM;
    c->len = redisFormatCommandArgv(&c->buf, argc, argv, argvlen);
    if (c->len < 0) {
        c->buf = NULL;
        cmd_release(rw, c);
        return -ENOMEM;
    }
    c->kind = K_USER;
    c->has_key = key != NULL;
    c->slot = key ? (uint16_t)sb_slot_of(key, keylen) : 0;
    c->deadline_ms = sb_worker_now_ms(w) + r->cfg.timeout_ms;
    c->cb = cb;
    c->arg = arg;
    int err = route(rw, c, NULL);
    if (err < 0) {
        cmd_release(rw, c);
        return err;
    }
    stat_add(&rw->st.commands, 1);
    return 0;
}

bool sb_redis_retryable(int err)
{
    switch (err) {
    case -EHOSTUNREACH:
    case -ENOBUFS:
    case -EAGAIN:
    case -ECONNRESET:
    case -ETIMEDOUT:
    case -ELOOP:
        return true;
    default:
        return false;
    }
}

const char *sb_redis_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case -EHOSTUNREACH:
        return "the slot's Redis master is unreachable";
    case -ENOBUFS:
        return "too many Redis commands waiting (redis_queue)";
    case -EAGAIN:
        return "the Redis cluster is reconfiguring";
    case -ECONNRESET:
        return "the Redis connection broke; the command may or may not have run";
    case -ETIMEDOUT:
        return "no Redis answer within redis_timeout_ms; the command may or may not have run";
    case -ELOOP:
        return "too many Redis redirections";
    case -EACCES:
        return "Redis refused AUTH";
    case -ESHUTDOWN:
        return "the Redis client is stopping";
    case -ENOMEM:
        return "out of memory";
    default:
        return "invalid Redis command";
    }
}

/* Splits "host:port" or "[v6]:port" and resolves host to a numeric address. 0 or -errno. */
static int parse_seed(const char *s, size_t len, struct seed *out)
{
    char buf[SB_SLOTS_HOST_MAX + 16];
    if (len == 0 || len >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *colon = strrchr(buf, ':');
    if (!colon || colon == buf || !colon[1])
        return -EINVAL;
    *colon = '\0';
    char *host = buf, *end;
    if (host[0] == '[' && colon[-1] == ']') {
        host++;
        colon[-1] = '\0';
    }
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535 || !*host)
        return -EINVAL;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0) {
        sb_log(SB_LOG_ERROR, 0, "redis_nodes: cannot resolve \"%s\": %s", host, gai_strerror(rc));
        return -EHOSTUNREACH;
    }
    rc = getnameinfo(res->ai_addr, res->ai_addrlen, out->host, sizeof(out->host), NULL, 0,
                     NI_NUMERICHOST);
    freeaddrinfo(res);
    if (rc != 0)
        return -EHOSTUNREACH;
    out->port = (uint16_t)port;
    return 0;
}

int sb_redis_create(struct sb_engine *e, const struct sb_redis_config *cfg, struct sb_redis **out)
{
    *out = NULL;
    if (!cfg->nodes || !*cfg->nodes)
        return 0;
    if (cfg->timeout_ms < 1 || cfg->queue < 1)
        return -EINVAL;
    struct sb_redis *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->cfg = *cfg;
    if (!r->cfg.refresh_ms)
        r->cfg.refresh_ms = REFRESH_MS;
    int err = 0;
    for (const char *p = cfg->nodes; *p && err == 0;) {
        size_t n = strcspn(p, ",");
        while (n && p[0] == ' ') {
            p++;
            n--;
        }
        while (n && p[n - 1] == ' ')
            n--;
        if (r->nseeds == SB_REDIS_MAX_SEEDS)
            err = -EINVAL;
        else
            err = parse_seed(p, n, &r->seeds[r->nseeds++]);
        if (err == -EINVAL)
            sb_log(SB_LOG_ERROR, 0,
                   "redis_nodes: \"%s\" is not a list of up to %d host:port entries separated "
                   "by commas",
                   cfg->nodes, SB_REDIS_MAX_SEEDS);
        p += strcspn(p, ",");
        if (*p == ',')
            p++;
    }
    r->user = cfg->user && *cfg->user ? strdup(cfg->user) : NULL;
    r->password = cfg->password && *cfg->password ? strdup(cfg->password) : NULL;
    r->nworkers = sb_engine_workers(e);
    r->workers = calloc(r->nworkers, sizeof(*r->workers));
    if (err == 0 && (!r->workers || (cfg->user && *cfg->user && !r->user) ||
                     (cfg->password && *cfg->password && !r->password)))
        err = -ENOMEM;
    if (err == 0 && r->user && !r->password) {
        sb_log(SB_LOG_ERROR, 0, "redis_user is set but redis_password is empty");
        err = -EINVAL;
    }
    unsigned slot = MAX_INSTANCES;
    for (unsigned i = 0; err == 0 && i < MAX_INSTANCES && slot == MAX_INSTANCES; i++) {
        if (!instances[i])
            slot = i;
    }
    if (err == 0 && slot == MAX_INSTANCES)
        err = -ENOMEM;
    for (unsigned i = 0; err == 0 && i < r->nworkers; i++) {
        struct rworker *rw = &r->workers[i];
        rw->r = r;
        rw->owner = calloc(SB_SLOTS, sizeof(*rw->owner));
        rw->nreplicas = calloc(SB_SLOTS, 1);
        if (!rw->owner || !rw->nreplicas)
            err = -ENOMEM;
        rw->sweep_timer.cb = sweep_due;
        rw->refresh_timer.cb = refresh_due;
    }
    if (err == 0)
        err = sb_engine_add_client(e, &redis_ops, &r->client);
    if (err < 0) {
        sb_redis_free(r);
        return err;
    }
    instances[slot] = r;
    sb_log(SB_LOG_INFO, 0,
           "redis: cluster mode, seeds %s, %s, timeout %u ms, queue %u per connection", cfg->nodes,
           r->password ? (r->user ? "AUTH as user" : "AUTH") : "no AUTH", cfg->timeout_ms,
           cfg->queue);
    *out = r;
    return 0;
}

void sb_redis_stop(struct sb_redis *r)
{
    if (r)
        atomic_store(&r->stop_requested, true);
}

static void free_list(struct cmd *c)
{
    while (c) {
        struct cmd *next = c->next;
        if (c->buf)
            redisFreeCommand(c->buf);
        free(c);
        c = next;
    }
}

void sb_redis_free(struct sb_redis *r)
{
    if (!r)
        return;
    for (unsigned i = 0; i < MAX_INSTANCES; i++) {
        if (instances[i] == r)
            instances[i] = NULL;
    }
    for (unsigned i = 0; r->workers && i < r->nworkers; i++) {
        struct rworker *rw = &r->workers[i];
        for (struct node *n = rw->nodes, *next; n; n = next) {
            next = n->next;
            free_list(q_take(&n->wait));
            free_list(q_take(&n->sent));
            for (struct waiter *x = n->waiting, *nx; x; x = nx) {
                nx = x->next;
                free(x);
            }
            if (n->reader)
                redisReaderFree(n->reader);
            free(n);
        }
        for (struct node *n = rw->subnodes, *next; n; n = next) {
            next = n->next;
            free_list(q_take(&n->sent));
            if (n->reader)
                redisReaderFree(n->reader);
            free(n);
        }
        for (struct sub *x = rw->subs, *next; x; x = next) {
            next = x->next;
            free(x);
        }
        free_list(q_take(&rw->unrouted));
        free_list(rw->free_cmds);
        free(rw->owner);
        free(rw->nreplicas);
    }
    free(r->workers);
    free(r->user);
    free(r->password);
    free(r);
}

void sb_redis_stats(const struct sb_redis *r, struct sb_redis_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; r && i < r->nworkers; i++) {
        const struct rstats *s = &r->workers[i].st;
#define LOAD(f) atomic_load_explicit(&s->f, memory_order_relaxed)
        out->commands += LOAD(commands);
        out->errors += LOAD(errors);
        out->timeouts += LOAD(timeouts);
        out->moved += LOAD(moved);
        out->ask += LOAD(ask);
        out->reconnects += LOAD(reconnects);
        out->refreshes += LOAD(refreshes);
        out->messages += LOAD(messages);
        out->resubscribes += LOAD(resubscribes);
        out->waits += LOAD(waits);
        if (LOAD(inflight_max) > out->inflight_max)
            out->inflight_max = LOAD(inflight_max);
#undef LOAD
    }
}
