/*
 * Presence. Each worker keeps two halves of the state:
 *
 * - As a user's home worker: the user's record (devices online, shown status, last seen, grace
 *   timer) and the subscriptions to that user, each naming the watching device's worker and
 *   connection id. A change is encoded once and mailed once per subscriber worker.
 * - As a device's worker: the users each device watches (its "watches"), which bound its
 *   subscriptions, filter events that raced an unsubscribe, and hold the latest value per user
 *   while the device's send queue is backed up.
 *
 * Every step between workers is one mail carrying one allocation that the receiver frees. Mail
 * between two workers runs in the order posted, so a subscription's answer always precedes its
 * events, and a device's unsubscribe (or disconnect) always follows its subscribe.
 */
#include "server/presence.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/chunk.h"
#include "core/log.h"
#include "proto/json.h"
#include "proto/jsonops.h"
#include "proto/ws.h"
#include "server/gateway.h"
#include "server/ids.h"
#include "server/metrics.h"
#include "server/table.h"

/* A device with this much output queued gets no more presence frames: it keeps the latest
 * value per user and gets them once the queue is below it again (checked every FLUSH_MS). */
#define BACKLOG_BYTES (64u * 1024)
#define FLUSH_MS 50
#define EVENT_JSON_MAX (80 + 6 * SB_USER_ID_MAX) /* a status item of a REST query */

enum status {
    OFFLINE = 0,
    ONLINE = 1,
};

/* ---- the home worker's half ---------------------------------------------------------------- */

struct sub;

struct pres_user {
    char id[SB_USER_ID_MAX + 1];
    size_t id_len;
    unsigned ndevices;
    bool online;           /* as subscribers see it: still true during the grace period */
    bool in_grace;         /* the last device left; the timer decides */
    bool is_idle;          /* on the shard's idle list */
    uint64_t last_seen_ms; /* wall clock: when it came online, or when its last device left */
    uint64_t left_ms;      /* in_grace: when its last device left */
    struct sub *subs;      /* subscriptions to this user */
    unsigned nsubs;
    struct pres_user *idle_prev, *idle_next;
    struct sb_worker_timer grace;
};

/* A device (worker, conn_id) watching user u. Keyed by conn_id bytes, then u's id. */
struct sub {
    struct sub *prev, *next; /* u's subscriptions */
    struct pres_user *u;
    uint64_t conn_id;
    unsigned worker;
    size_t key_len;
    char key[sizeof(uint64_t) + SB_USER_ID_MAX];
};

/* ---- the device's half ---------------------------------------------------------------------- */

struct watch {
    char id[SB_USER_ID_MAX + 1];
    size_t id_len;
    bool pending; /* status and last_seen_ms wait to be sent */
    uint8_t status;
    uint64_t last_seen_ms;
    struct watch *pend_prev, *pend_next;
};

struct pres_dev {
    char key[sizeof(uint64_t)]; /* conn_id */
    uint64_t conn_id;
    struct sb_conn *conn;
    struct sb_table watches; /* user id -> struct watch */
    struct watch *pend_head, *pend_tail;
    unsigned npending;
    struct pres_dev *held_prev, *held_next; /* on the shard's list while npending > 0 */
};

/* A status query (REST) being gathered from the users' home workers. */
struct pres_gather {
    struct pres_gather *next;
    uint64_t id, conn_id;
    unsigned parts;
    char *json; /* the items so far, comma-separated */
    size_t len, cap;
};

struct pres_shard {
    struct sb_worker *w; /* set when a worker first uses the shard */
    struct pres_gather *gathers;
    uint64_t next_gather;
    struct sb_table users;
    struct sb_table subs;
    struct sb_table devs;
    struct pres_user *idle_head, *idle_tail; /* offline, unwatched: oldest first */
    uint64_t nidle, idle_max;
    uint64_t online; /* users shown online */
    struct pres_dev *held;
    bool flush_armed;
    struct sb_worker_timer flush;
    uint32_t *count; /* per-worker scratch for grouping (cfg.workers entries) */
};

static struct sb_presence_config cfg;
static struct pres_shard *shards;
static atomic_bool stopping; /* sb_presence_stop was called: no more mail between workers */

static const char *user_key(const void *obj, size_t *len)
{
    const struct pres_user *u = obj;
    *len = u->id_len;
    return u->id;
}

static const char *sub_key(const void *obj, size_t *len)
{
    const struct sub *s = obj;
    *len = s->key_len;
    return s->key;
}

static const char *dev_key(const void *obj, size_t *len)
{
    *len = sizeof(uint64_t);
    return ((const struct pres_dev *)obj)->key;
}

static const char *watch_key(const void *obj, size_t *len)
{
    const struct watch *wt = obj;
    *len = wt->id_len;
    return wt->id;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void flush_held(struct sb_worker *w, struct sb_worker_timer *t);

static void shard_init(struct pres_shard *sh, uint64_t idle_max)
{
    sb_table_init(&sh->users, user_key);
    sb_table_init(&sh->subs, sub_key);
    sb_table_init(&sh->devs, dev_key);
    sh->idle_max = idle_max;
    sh->flush.cb = flush_held;
}

static void dev_free(struct pres_dev *d);

static void shard_destroy(struct pres_shard *sh)
{
    while (sh->gathers) {
        struct pres_gather *g = sh->gathers;
        sh->gathers = g->next;
        free(g->json);
        free(g);
    }
    for (size_t i = 0; i < sh->subs.cap; i++) {
        if (sh->subs.slots[i].hash)
            free(sh->subs.slots[i].obj);
    }
    for (size_t i = 0; i < sh->users.cap; i++) {
        if (sh->users.slots[i].hash)
            free(sh->users.slots[i].obj);
    }
    for (size_t i = 0; i < sh->devs.cap; i++) {
        if (sh->devs.slots[i].hash)
            dev_free(sh->devs.slots[i].obj);
    }
    sb_table_destroy(&sh->subs);
    sb_table_destroy(&sh->users);
    sb_table_destroy(&sh->devs);
    free(sh->count);
}

int sb_presence_init(const struct sb_presence_config *c)
{
    cfg = *c;
    shards = calloc(cfg.workers, sizeof(*shards));
    if (!shards)
        return -ENOMEM;
    /* The idle bound is split evenly: users spread evenly over their home workers. */
    uint64_t per_worker = (cfg.last_seen_max + cfg.workers - 1) / cfg.workers;
    for (unsigned i = 0; i < cfg.workers; i++) {
        shard_init(&shards[i], per_worker);
        shards[i].count = calloc(cfg.workers, sizeof(*shards[i].count));
        if (!shards[i].count) {
            sb_presence_free();
            return -ENOMEM;
        }
    }
    return 0;
}

void sb_presence_stop(void)
{
    atomic_store(&stopping, true);
}

void sb_presence_free(void)
{
    atomic_store(&stopping, false);
    for (unsigned i = 0; shards && i < cfg.workers; i++)
        shard_destroy(&shards[i]);
    free(shards);
    shards = NULL;
}

static struct pres_shard *my_shard(struct sb_worker *w)
{
    struct pres_shard *sh = &shards[sb_worker_id(w)];
    sh->w = w;
    return sh;
}

/* ---- idle records: offline, no device, nobody watching ------------------------------------- */

static void idle_unlink(struct pres_shard *sh, struct pres_user *u)
{
    if (u->idle_prev)
        u->idle_prev->idle_next = u->idle_next;
    else
        sh->idle_head = u->idle_next;
    if (u->idle_next)
        u->idle_next->idle_prev = u->idle_prev;
    else
        sh->idle_tail = u->idle_prev;
    u->idle_prev = u->idle_next = NULL;
    u->is_idle = false;
    sh->nidle--;
}

static void user_drop(struct pres_shard *sh, struct pres_user *u)
{
    if (u->is_idle)
        idle_unlink(sh, u);
    sb_table_remove(&sh->users, u->id, u->id_len);
    free(u);
}

/*
 * Puts u where its state says: an idle record (offline, no device, no subscriber) only keeps a
 * last-seen time, so it joins the idle list, whose oldest members are forgotten past idle_max;
 * one with nothing to remember is freed at once. Anything else leaves the idle list. u may be
 * freed: the caller must not use it afterwards.
 */
static void user_settle(struct pres_shard *sh, struct pres_user *u)
{
    bool idle = u->ndevices == 0 && !u->online && u->nsubs == 0;
    if (!idle) {
        if (u->is_idle)
            idle_unlink(sh, u);
        return;
    }
    if (u->is_idle)
        return;
    if (u->last_seen_ms == 0 || sh->idle_max == 0) {
        user_drop(sh, u);
        return;
    }
    u->idle_prev = sh->idle_tail;
    u->idle_next = NULL;
    if (sh->idle_tail)
        sh->idle_tail->idle_next = u;
    else
        sh->idle_head = u;
    sh->idle_tail = u;
    u->is_idle = true;
    sh->nidle++;
    while (sh->nidle > sh->idle_max)
        user_drop(sh, sh->idle_head);
}

static void grace_end(struct sb_worker *w, struct sb_worker_timer *t);

/* The record of user id, created (offline, never seen) when absent. NULL without memory. */
static struct pres_user *user_get(struct pres_shard *sh, const char *id, size_t len)
{
    struct pres_user *u = sb_table_get(&sh->users, id, len);
    if (u)
        return u;
    u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    memcpy(u->id, id, len);
    u->id_len = len;
    u->grace.cb = grace_end;
    if (sb_table_add(&sh->users, u) < 0) {
        free(u);
        return NULL;
    }
    return u;
}

/* ---- subscriptions on the watched user's home worker ---------------------------------------- */

static size_t make_sub_key(char *key, uint64_t conn_id, const char *user, size_t len)
{
    memcpy(key, &conn_id, sizeof(conn_id));
    memcpy(key + sizeof(conn_id), user, len);
    return sizeof(conn_id) + len;
}

/* Adds the subscription of device (worker, conn_id) to u unless it exists. Returns 0 or
 * -ENOMEM. */
static int sub_add(struct pres_shard *sh, struct pres_user *u, unsigned worker, uint64_t conn_id)
{
    char key[sizeof(uint64_t) + SB_USER_ID_MAX];
    size_t klen = make_sub_key(key, conn_id, u->id, u->id_len);
    if (sb_table_get(&sh->subs, key, klen))
        return 0;
    struct sub *s = malloc(sizeof(*s));
    if (!s)
        return -ENOMEM;
    memcpy(s->key, key, klen);
    s->key_len = klen;
    s->u = u;
    s->conn_id = conn_id;
    s->worker = worker;
    if (sb_table_add(&sh->subs, s) < 0) {
        free(s);
        return -ENOMEM;
    }
    s->prev = NULL;
    s->next = u->subs;
    if (u->subs)
        u->subs->prev = s;
    u->subs = s;
    u->nsubs++;
    user_settle(sh, u);
    return 0;
}

/* Drops the subscription of conn_id to user id, if any (the user's record may go with it). */
static void sub_remove(struct pres_shard *sh, uint64_t conn_id, const char *id, size_t len)
{
    char key[sizeof(uint64_t) + SB_USER_ID_MAX];
    size_t klen = make_sub_key(key, conn_id, id, len);
    struct sub *s = sb_table_remove(&sh->subs, key, klen);
    if (!s)
        return;
    struct pres_user *u = s->u;
    if (s->prev)
        s->prev->next = s->next;
    else
        u->subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    u->nsubs--;
    free(s);
    user_settle(sh, u);
}

/* ---- the device's watches -------------------------------------------------------------------- */

static void pend_unlink(struct pres_shard *sh, struct pres_dev *d, struct watch *wt)
{
    if (!wt->pending)
        return;
    if (wt->pend_prev)
        wt->pend_prev->pend_next = wt->pend_next;
    else
        d->pend_head = wt->pend_next;
    if (wt->pend_next)
        wt->pend_next->pend_prev = wt->pend_prev;
    else
        d->pend_tail = wt->pend_prev;
    wt->pend_prev = wt->pend_next = NULL;
    wt->pending = false;
    if (--d->npending > 0)
        return;
    /* Nothing held any more: off the shard's list. */
    if (d->held_prev)
        d->held_prev->held_next = d->held_next;
    else
        sh->held = d->held_next;
    if (d->held_next)
        d->held_next->held_prev = d->held_prev;
    d->held_prev = d->held_next = NULL;
}

/*
 * Keeps status for wt until the device can take it: a newer value replaces a held one (the
 * replaced one is counted as coalesced). Returns true when it replaced one.
 */
static bool pend_hold(struct pres_shard *sh, struct pres_dev *d, struct watch *wt, uint8_t status,
                      uint64_t last_seen_ms)
{
    bool replaced = wt->pending;
    wt->status = status;
    wt->last_seen_ms = last_seen_ms;
    if (replaced)
        return true;
    wt->pending = true;
    wt->pend_next = NULL;
    wt->pend_prev = d->pend_tail;
    if (d->pend_tail)
        d->pend_tail->pend_next = wt;
    else
        d->pend_head = wt;
    d->pend_tail = wt;
    if (d->npending++ == 0) {
        d->held_prev = NULL;
        d->held_next = sh->held;
        if (sh->held)
            sh->held->held_prev = d;
        sh->held = d;
    }
    return false;
}

static struct pres_dev *dev_new(struct pres_shard *sh, struct sb_conn *c)
{
    struct pres_dev *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->conn_id = sb_conn_id(c);
    memcpy(d->key, &d->conn_id, sizeof(d->key));
    d->conn = c;
    sb_table_init(&d->watches, watch_key);
    if (sb_table_add(&sh->devs, d) < 0) {
        free(d);
        return NULL;
    }
    return d;
}

/* Frees d and its watches (not unlinked from anything: see dev_drop). */
static void dev_free(struct pres_dev *d)
{
    for (size_t i = 0; i < d->watches.cap; i++) {
        if (d->watches.slots[i].hash)
            free(d->watches.slots[i].obj);
    }
    sb_table_destroy(&d->watches);
    free(d);
}

static struct pres_dev *dev_get(struct pres_shard *sh, uint64_t conn_id)
{
    return sb_table_get(&sh->devs, (const char *)&conn_id, sizeof(conn_id));
}

static void watch_remove(struct pres_shard *sh, struct pres_dev *d, struct watch *wt)
{
    pend_unlink(sh, d, wt);
    sb_table_remove(&d->watches, wt->id, wt->id_len);
    free(wt);
}

/* ---- output ---------------------------------------------------------------------------------- */

/* The `presence` operation of a user. */
static struct sb_op presence_op(const char *user, size_t len, uint8_t status, uint64_t last_seen_ms)
{
    struct sb_op op = {.type = SB_OP_PRESENCE};
    op.u.presence = (struct sb_op_presence){.last_seen_ms = last_seen_ms,
                                            .status = status == ONLINE ? SB_OP_PRESENCE_ONLINE
                                                                       : SB_OP_PRESENCE_OFFLINE,
                                            .user = sb_slice_from(user, len)};
    return op;
}

static void send_presence(struct sb_conn *c, const char *user, size_t len, uint8_t status,
                          uint64_t last_seen_ms)
{
    struct sb_op op = presence_op(user, len, status, last_seen_ms);
    sb__session_send_op(c, &op);
    sb_metric_add(sb_conn_worker(c), SB_M_PRESENCE_SENT, 1);
}

/* An error answering req (NULL: a REST request, answered without an id). */
static void send_error(struct sb_conn *c, const struct sb_op *req, enum sb_op_err code,
                       const char *message)
{
    struct sb_op op = {.type = SB_OP_ERROR};
    if (req) {
        op.request_id = req->request_id;
        op.json_id = req->json_id;
    }
    op.u.error.code = (uint16_t)code;
    op.u.error.message = sb_slice_from(message, strlen(message));
    sb__session_send_op(c, &op);
}

static bool is_behind(const struct pres_dev *d)
{
    return d->npending > 0 || sb_conn_out_bytes(d->conn) >= BACKLOG_BYTES;
}

static void flush_arm(struct pres_shard *sh)
{
    if (!sh->flush_armed && sh->held) {
        sh->flush_armed = true;
        sb_worker_timer_set(sh->w, &sh->flush, FLUSH_MS);
    }
}

/* Sends wt's held value. */
static void send_held(struct pres_dev *d, struct watch *wt)
{
    send_presence(d->conn, wt->id, wt->id_len, wt->status, wt->last_seen_ms);
}

/* The worker timer: every backed-up device whose queue has drained gets what it holds, in the
 * order it was first held, until it is backed up again. */
static void flush_held(struct sb_worker *w, struct sb_worker_timer *t)
{
    (void)t;
    struct pres_shard *sh = my_shard(w);
    sh->flush_armed = false;
    for (struct pres_dev *d = sh->held, *next; d; d = next) {
        next = d->held_next;
        if (sb_conn_is_closing(d->conn))
            continue; /* dev_drop follows from its close */
        while (d->pend_head && sb_conn_out_bytes(d->conn) < BACKLOG_BYTES) {
            struct watch *wt = d->pend_head;
            send_held(d, wt);
            pend_unlink(sh, d, wt);
        }
    }
    flush_arm(sh);
}

/*
 * Gives the device one value for the user it watches through wt: queued now, or held when the
 * device is behind. Returns true when it should be sent now (the caller sends it).
 */
static bool deliver_or_hold(struct pres_shard *sh, struct pres_dev *d, struct watch *wt,
                            uint8_t status, uint64_t last_seen_ms)
{
    if (sb_conn_is_closing(d->conn))
        return false;
    if (!is_behind(d))
        return true;
    if (pend_hold(sh, d, wt, status, last_seen_ms))
        sb_metric_add(sh->w, SB_M_PRESENCE_COALESCED, 1);
    flush_arm(sh);
    return false;
}

/* ---- mail ------------------------------------------------------------------------------------ */

/*
 * sb_worker_post, unless the engine is stopping: a worker exits (and frees its mailboxes) once
 * its own connections are closed, while others still close theirs, so mail posted then could
 * reach a worker that is gone. Whatever was not mailed is freed by sb_presence_free. Returns
 * 0, -ESHUTDOWN or -ENOMEM; the caller keeps arg on failure.
 */
static int post(struct sb_worker *w, unsigned to, sb_mail_cb fn, void *arg)
{
    if (atomic_load(&stopping))
        return -ESHUTDOWN;
    return sb_worker_post(w, to, fn, arg);
}

/* presence_sub / presence_unsub of one device for the users homed on one worker. */
struct pres_req {
    unsigned from_worker;
    uint64_t conn_id;
    unsigned n;
    char users[][SB_USER_ID_MAX + 1];
};

/* The current state of the users a subscription named, back to the device's worker. */
struct pres_state {
    uint64_t conn_id;
    unsigned n;
    struct {
        uint64_t last_seen_ms;
        uint8_t status;
        char user[SB_USER_ID_MAX + 1];
    } items[];
};

/* One change of one user, for the subscribers on one worker. */
struct pres_event {
    uint8_t status;
    uint64_t last_seen_ms;
    size_t user_len;
    char user[SB_USER_ID_MAX + 1];
    unsigned nconns;
    uint64_t conns[];
};

static void event_arrive(struct sb_worker *w, void *arg)
{
    struct pres_event *ev = arg;
    struct pres_shard *sh = my_shard(w);
    /* One frame for every device here that can take it: encoded once per framing, queued by
     * reference. */
    struct sb_op op = presence_op(ev->user, ev->user_len, ev->status, ev->last_seen_ms);
    struct sb_chunk *chunks[SB_FRAMINGS] = {NULL};
    for (unsigned i = 0; i < ev->nconns; i++) {
        struct pres_dev *d = dev_get(sh, ev->conns[i]);
        /* Gone, or unsubscribed while the event was on its way. */
        struct watch *wt = d ? sb_table_get(&d->watches, ev->user, ev->user_len) : NULL;
        if (!wt || !deliver_or_hold(sh, d, wt, ev->status, ev->last_seen_ms))
            continue;
        enum sb_framing f = sb__session_framing(d->conn);
        if (!chunks[f] && !(chunks[f] = sb__session_chunk(w, &op, f))) {
            sb_log(SB_LOG_WARN, -ENOMEM, "presence of %s not delivered", ev->user);
            continue;
        }
        if (sb_conn_send_chunk(d->conn, chunks[f]) < 0)
            sb_conn_close(d->conn, -ENOMEM);
        else
            sb_metric_add(w, SB_M_PRESENCE_SENT, 1);
    }
    for (int f = 0; f < SB_FRAMINGS; f++) {
        if (chunks[f])
            sb_chunk_unref(w, chunks[f]);
    }
    free(ev);
}

/* Tells u's subscribers its new status: one mail per worker that has any. */
static void emit(struct pres_shard *sh, struct pres_user *u)
{
    if (!u->subs)
        return;
    uint8_t status = u->online ? ONLINE : OFFLINE;
    memset(sh->count, 0, cfg.workers * sizeof(*sh->count));
    for (struct sub *s = u->subs; s; s = s->next)
        sh->count[s->worker]++;
    for (unsigned k = 0; k < cfg.workers; k++) {
        if (!sh->count[k])
            continue;
        struct pres_event *ev = malloc(sizeof(*ev) + sh->count[k] * sizeof(uint64_t));
        if (!ev) {
            sb_log(SB_LOG_WARN, -ENOMEM, "presence of %s not sent to worker %u", u->id, k);
            continue;
        }
        ev->status = status;
        ev->last_seen_ms = u->last_seen_ms;
        ev->user_len = u->id_len;
        memcpy(ev->user, u->id, u->id_len + 1);
        ev->nconns = 0;
        for (struct sub *s = u->subs; s; s = s->next) {
            if (s->worker == k)
                ev->conns[ev->nconns++] = s->conn_id;
        }
        int e = post(sh->w, k, event_arrive, ev);
        if (e < 0) {
            if (e != -ESHUTDOWN)
                sb_log(SB_LOG_WARN, e, "presence of %s not sent to worker %u", u->id, k);
            free(ev);
        }
    }
}

static void set_status(struct pres_shard *sh, struct pres_user *u, bool online, uint64_t when)
{
    u->online = online;
    u->last_seen_ms = when;
    sh->online += online ? 1 : (uint64_t)-1;
    sb_metric_set(sh->w, SB_M_PRESENCE_ONLINE, sh->online);
    sb_log(SB_LOG_DEBUG, 0, "%s %s", u->id, online ? "online" : "offline");
    emit(sh, u);
}

static void grace_end(struct sb_worker *w, struct sb_worker_timer *t)
{
    struct pres_user *u = (struct pres_user *)((char *)t - offsetof(struct pres_user, grace));
    struct pres_shard *sh = my_shard(w);
    u->in_grace = false;
    set_status(sh, u, false, u->left_ms);
    user_settle(sh, u);
}

static void state_arrive(struct sb_worker *w, void *arg)
{
    struct pres_state *st = arg;
    struct pres_shard *sh = my_shard(w);
    struct pres_dev *d = dev_get(sh, st->conn_id);
    for (unsigned i = 0; d && i < st->n; i++) {
        const char *user = st->items[i].user;
        struct watch *wt = sb_table_get(&d->watches, user, strlen(user));
        if (!wt || !deliver_or_hold(sh, d, wt, st->items[i].status, st->items[i].last_seen_ms))
            continue;
        send_presence(d->conn, user, strlen(user), st->items[i].status, st->items[i].last_seen_ms);
    }
    free(st);
}

static void sub_arrive(struct sb_worker *w, void *arg)
{
    struct pres_req *rq = arg;
    struct pres_shard *sh = my_shard(w);
    struct pres_state *st = malloc(sizeof(*st) + rq->n * sizeof(st->items[0]));
    if (st) {
        st->conn_id = rq->conn_id;
        st->n = 0;
    }
    for (unsigned i = 0; i < rq->n; i++) {
        size_t len = strlen(rq->users[i]);
        struct pres_user *u = user_get(sh, rq->users[i], len);
        if (!u || sub_add(sh, u, rq->from_worker, rq->conn_id) < 0) {
            sb_log(SB_LOG_WARN, -ENOMEM, "c%llx: presence subscription to %s dropped",
                   (unsigned long long)rq->conn_id, rq->users[i]);
            if (u)
                user_settle(sh, u);
            continue;
        }
        if (st) {
            st->items[st->n].status = u->online ? ONLINE : OFFLINE;
            st->items[st->n].last_seen_ms = u->last_seen_ms;
            memcpy(st->items[st->n].user, u->id, u->id_len + 1);
            st->n++;
        }
    }
    int e = st ? post(w, rq->from_worker, state_arrive, st) : -ENOMEM;
    if (e < 0) {
        if (e != -ESHUTDOWN)
            sb_log(SB_LOG_WARN, e, "c%llx: presence answer dropped",
                   (unsigned long long)rq->conn_id);
        free(st);
    }
    free(rq);
}

static void unsub_arrive(struct sb_worker *w, void *arg)
{
    struct pres_req *rq = arg;
    struct pres_shard *sh = my_shard(w);
    for (unsigned i = 0; i < rq->n; i++)
        sub_remove(sh, rq->conn_id, rq->users[i], strlen(rq->users[i]));
    free(rq);
}

/*
 * Mails users[0..n) (distinct user ids) to their home workers, one request per worker, to run
 * fn there for device conn_id. Returns 0, -ENOMEM or -ESHUTDOWN (requests already posted stay
 * posted).
 */
static int post_by_home(struct pres_shard *sh, uint64_t conn_id, char (*users)[SB_USER_ID_MAX + 1],
                        unsigned n, sb_mail_cb fn)
{
    unsigned me = sb_worker_id(sh->w);
    memset(sh->count, 0, cfg.workers * sizeof(*sh->count));
    for (unsigned i = 0; i < n; i++)
        sh->count[sb_home_worker(users[i], strlen(users[i]), cfg.workers)]++;
    int err = 0;
    for (unsigned k = 0; k < cfg.workers; k++) {
        if (!sh->count[k])
            continue;
        struct pres_req *rq = malloc(sizeof(*rq) + sh->count[k] * sizeof(rq->users[0]));
        if (!rq) {
            err = -ENOMEM;
            continue;
        }
        rq->from_worker = me;
        rq->conn_id = conn_id;
        rq->n = 0;
        for (unsigned i = 0; i < n; i++) {
            if (sb_home_worker(users[i], strlen(users[i]), cfg.workers) == k)
                memcpy(rq->users[rq->n++], users[i], sizeof(users[i]));
        }
        int e = post(sh->w, k, fn, rq);
        if (e < 0) {
            free(rq);
            err = e;
        }
    }
    return err;
}

/* ---- devices coming and going ---------------------------------------------------------------- */

void sb_presence_device_up(struct sb_conn *c, const char *user, size_t len)
{
    struct pres_shard *sh = my_shard(sb_conn_worker(c));
    struct pres_user *u = user_get(sh, user, len);
    if (!u) {
        sb_log(SB_LOG_WARN, -ENOMEM, "c%llx: presence of %s not tracked",
               (unsigned long long)sb_conn_id(c), user);
        return;
    }
    if (u->ndevices++ > 0)
        return;
    if (u->in_grace) {
        /* Back inside the grace period: nobody saw it leave, nobody sees it return. */
        u->in_grace = false;
        sb_worker_timer_set(sh->w, &u->grace, 0);
    } else {
        set_status(sh, u, true, wall_ms());
    }
    user_settle(sh, u);
}

/* Drops the device's watches here and its subscriptions on the watched users' workers. */
static void dev_drop(struct pres_shard *sh, struct pres_dev *d)
{
    while (d->pend_head)
        pend_unlink(sh, d, d->pend_head);
    size_t n = d->watches.count;
    char(*users)[SB_USER_ID_MAX + 1] = n ? malloc(n * sizeof(*users)) : NULL;
    size_t k = 0;
    for (size_t i = 0; users && i < d->watches.cap; i++) {
        const struct watch *wt = d->watches.slots[i].obj;
        if (d->watches.slots[i].hash)
            memcpy(users[k++], wt->id, wt->id_len + 1);
    }
    int e = !n      ? 0
            : users ? post_by_home(sh, d->conn_id, users, (unsigned)n, unsub_arrive)
                    : -ENOMEM;
    if (e < 0 && e != -ESHUTDOWN)
        sb_log(SB_LOG_WARN, e, "c%llx: presence subscriptions not all dropped",
               (unsigned long long)d->conn_id);
    free(users);
    sb_table_remove(&sh->devs, d->key, sizeof(d->key));
    dev_free(d);
}

void sb_presence_device_down(struct sb_conn *c, const char *user, size_t len)
{
    struct pres_shard *sh = my_shard(sb_conn_worker(c));
    struct pres_dev *d = dev_get(sh, sb_conn_id(c));
    if (d)
        dev_drop(sh, d);
    struct pres_user *u = sb_table_get(&sh->users, user, len);
    if (!u || u->ndevices == 0) /* its device_up found no memory */
        return;
    if (--u->ndevices > 0)
        return;
    /* The last device left: this is the last-seen time, whenever the grace ends. */
    u->left_ms = wall_ms();
    if (cfg.grace_ms == 0) {
        set_status(sh, u, false, u->left_ms);
    } else {
        u->in_grace = true;
        sb_worker_timer_set(sh->w, &u->grace, cfg.grace_ms);
    }
    user_settle(sh, u);
}

/* ---- presence_sub and presence_unsub ----------------------------------------------------------
 */

static const char *cstr_key(const void *obj, size_t *len)
{
    *len = strlen(obj);
    return obj;
}

/*
 * Reads "users" of req: 1 to SB_PRESENCE_USERS_PER_REQUEST valid user ids, de-duplicated into
 * out. Returns how many, or sends the error (answering reply_to) and returns -1.
 */
static int read_users(struct sb_conn *c, const struct sb_op *req, const struct sb_op *reply_to,
                      char (*out)[SB_USER_ID_MAX + 1])
{
    const struct sb_ops_list *list = &req->u.presence_sub.users;
    if (list->count == 0) {
        send_error(c, reply_to, SB_OP_ERR_BAD_REQUEST,
                   "\"users\" must be a non-empty array of user ids");
        return -1;
    }
    if (list->count > SB_PRESENCE_USERS_PER_REQUEST) {
        send_error(c, reply_to, SB_OP_ERR_BAD_REQUEST, "at most 1000 users per request");
        return -1;
    }
    /* A user named twice in one request is answered once. */
    struct sb_table seen;
    sb_table_init(&seen, cstr_key);
    struct sb_ops_list_iter it;
    struct sb_slice user;
    int n = 0, rc;
    sb_ops_list_begin(&it, list);
    while ((rc = sb_ops_list_next(&it, &user)) > 0) {
        if (!sb_user_id_valid(user.base, user.len) || n >= SB_PRESENCE_USERS_PER_REQUEST) {
            rc = -EBADMSG;
            break;
        }
        memcpy(out[n], user.base, user.len);
        out[n][user.len] = '\0';
        if (sb_table_get(&seen, out[n], user.len))
            continue;
        if (sb_table_add(&seen, out[n]) < 0) {
            send_error(c, reply_to, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
            n = -1;
            break;
        }
        n++;
    }
    if (rc < 0 && n >= 0) {
        send_error(c, reply_to, SB_OP_ERR_BAD_REQUEST, "\"users\" holds an invalid user id");
        n = -1;
    }
    sb_table_destroy(&seen);
    return n;
}

static void op_sub(struct pres_shard *sh, struct sb_conn *c, const struct sb_op *req,
                   char (*users)[SB_USER_ID_MAX + 1])
{
    int n = read_users(c, req, req, users);
    if (n < 0)
        return;
    struct pres_dev *d = dev_get(sh, sb_conn_id(c));
    if (!d && !(d = dev_new(sh, c))) {
        send_error(c, req, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
        return;
    }
    /* All or nothing: the cap is checked against the users not watched yet. */
    unsigned fresh = 0;
    for (int i = 0; i < n; i++)
        fresh += sb_table_get(&d->watches, users[i], strlen(users[i])) == NULL;
    if (d->watches.count + fresh > cfg.max_subscriptions) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "a device may watch at most %u users (it watches %zu); unsubscribe first",
                 cfg.max_subscriptions, d->watches.count);
        send_error(c, req, SB_OP_ERR_TOO_LARGE, msg);
        return;
    }
    int done = 0;
    for (; done < n; done++) {
        size_t len = strlen(users[done]);
        if (sb_table_get(&d->watches, users[done], len))
            continue;
        struct watch *wt = calloc(1, sizeof(*wt));
        if (wt) {
            memcpy(wt->id, users[done], len + 1);
            wt->id_len = len;
        }
        if (!wt || sb_table_add(&d->watches, wt) < 0) {
            free(wt);
            break;
        }
    }
    /* Out of memory part way: the users watched so far are subscribed, the rest not. */
    if (post_by_home(sh, d->conn_id, users, (unsigned)done, sub_arrive) < 0 || done < n)
        send_error(c, req, SB_OP_ERR_UNAVAILABLE, "out of memory; some users were not subscribed");
}

static void op_unsub(struct pres_shard *sh, struct sb_conn *c, const struct sb_op *req,
                     char (*users)[SB_USER_ID_MAX + 1])
{
    int n = read_users(c, req, req, users);
    if (n < 0)
        return;
    struct pres_dev *d = dev_get(sh, sb_conn_id(c));
    unsigned k = 0;
    for (int i = 0; d && i < n; i++) {
        struct watch *wt = sb_table_get(&d->watches, users[i], strlen(users[i]));
        if (!wt)
            continue; /* not watched: nothing to do */
        watch_remove(sh, d, wt);
        memmove(users[k++], users[i], sizeof(users[i]));
    }
    /* The watch is gone already, so no further event reaches the device even before the
     * home workers drop the subscriptions. */
    int e = k ? post_by_home(sh, d->conn_id, users, k, unsub_arrive) : 0;
    if (e < 0 && e != -ESHUTDOWN)
        sb_log(SB_LOG_WARN, e, "c%llx: presence subscriptions not all dropped",
               (unsigned long long)d->conn_id);
}

void sb_presence_on_op(struct sb_conn *c, const struct sb_op *req)
{
    char(*users)[SB_USER_ID_MAX + 1] = malloc(SB_PRESENCE_USERS_PER_REQUEST * sizeof(*users));
    if (!users) {
        send_error(c, req, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
        return;
    }
    struct pres_shard *sh = my_shard(sb_conn_worker(c));
    if (req->type == SB_OP_PRESENCE_SUB)
        op_sub(sh, c, req, users);
    else
        op_unsub(sh, c, req, users);
    free(users);
}

/* ---- status queries (REST POST /api/user/status) ------------------------------------------- */

/* A query's users homed on one worker (seq: the gather id), and the answer coming back. */
struct pres_query {
    unsigned from_worker;
    uint64_t conn_id, gather;
    unsigned n;
    char users[][SB_USER_ID_MAX + 1];
};

struct pres_qpart {
    uint64_t gather;
    size_t len;
    char json[];
};

static struct pres_shard *shard_of(struct sb_worker *w)
{
    return my_shard(w);
}

static void qpart_arrive(struct sb_worker *w, void *arg)
{
    struct pres_qpart *part = arg;
    struct pres_shard *sh = shard_of(w);
    struct pres_gather **pg = &sh->gathers;
    while (*pg && (*pg)->id != part->gather)
        pg = &(*pg)->next;
    struct pres_gather *g = *pg;
    if (g && part->len) {
        if (g->len + part->len + 1 > g->cap) {
            size_t cap = (g->len + part->len + 1) * 2;
            char *json = realloc(g->json, cap);
            if (json) {
                g->json = json;
                g->cap = cap;
            }
        }
        if (g->len + part->len + 1 <= g->cap) {
            if (g->len)
                g->json[g->len++] = ',';
            memcpy(g->json + g->len, part->json, part->len);
            g->len += part->len;
        }
    }
    if (g && --g->parts == 0) {
        *pg = g->next;
        size_t cap = g->len + 64;
        char *buf = malloc(cap);
        int n = buf ? snprintf(buf, cap, "{\"type\":\"status\",\"users\":[%.*s]}", (int)g->len,
                               g->json ? g->json : "")
                    : -1;
        if (n > 0 && (size_t)n < cap) {
            sb__rest_answer(w, g->conn_id, buf, (size_t)n);
        } else {
            static const char oom[] = "{\"type\":\"error\",\"code\":\"unavailable\",\"message\":"
                                      "\"out of memory; retry\"}";
            sb__rest_answer(w, g->conn_id, oom, sizeof(oom) - 1);
        }
        free(buf);
        free(g->json);
        free(g);
    }
    free(part);
}

/* On a user's home worker: the status of the query's users homed here. */
static void query_arrive(struct sb_worker *w, void *arg)
{
    struct pres_query *q = arg;
    struct pres_shard *sh = shard_of(w);
    sh->w = w;
    struct pres_qpart *part = malloc(sizeof(*part) + (size_t)q->n * EVENT_JSON_MAX);
    if (part) {
        part->gather = q->gather;
        part->len = 0;
        for (unsigned i = 0; i < q->n; i++) {
            size_t len = strlen(q->users[i]);
            struct pres_user *u = sb_table_get(&sh->users, q->users[i], len);
            struct sb_json_writer jw;
            if (part->len)
                part->json[part->len++] = ',';
            sb_json_writer_init(&jw, part->json + part->len, EVENT_JSON_MAX);
            sb_json_begin_object(&jw);
            sb_json_key(&jw, "user");
            sb_json_str(&jw, q->users[i], len);
            sb_json_key(&jw, "status");
            sb_json_cstr(&jw, u && u->online ? "online" : "offline");
            sb_json_key(&jw, "last_seen");
            sb_json_uint(&jw, u ? u->last_seen_ms : 0);
            sb_json_end_object(&jw);
            ssize_t n = sb_json_finish(&jw);
            if (n > 0)
                part->len += (size_t)n;
        }
        if (post(w, q->from_worker, qpart_arrive, part) < 0)
            free(part);
    }
    free(q);
}

void sb_presence_status(struct sb_conn *c, const char *json, size_t len)
{
    struct sb_json_tok *t = malloc(SB_JSONOPS_MAX_TOKENS * sizeof(*t));
    char(*users)[SB_USER_ID_MAX + 1] = malloc(SB_PRESENCE_USERS_PER_REQUEST * sizeof(*users));
    struct sb_worker *w = sb_conn_worker(c);
    struct pres_shard *sh = shard_of(w);
    sh->w = w;
    struct pres_gather *g = NULL;
    struct sb_op req;
    struct sb_jsonops_error err;
    int n;
    if (!t || !users) {
        send_error(c, NULL, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
        goto out;
    }
    /* The body reads like a presence_sub's: {"users": [...]}. */
    if (sb_jsonops_decode(json, len, SB_OP_PRESENCE_SUB, SB_JSONOPS_REST, t, &req, &err) < 0) {
        send_error(c, NULL, err.code, err.message);
        goto out;
    }
    if ((n = read_users(c, &req, NULL, users)) < 0)
        goto out;
    if (!(g = calloc(1, sizeof(*g)))) {
        send_error(c, NULL, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
        goto out;
    }
    g->id = ++sh->next_gather;
    g->conn_id = sb_conn_id(c);
    g->parts = 1; /* held until every part is mailed */
    g->next = sh->gathers;
    sh->gathers = g;
    memset(sh->count, 0, cfg.workers * sizeof(*sh->count));
    for (int i = 0; i < n; i++)
        sh->count[sb_home_worker(users[i], strlen(users[i]), cfg.workers)]++;
    for (unsigned k = 0; k < cfg.workers; k++) {
        if (!sh->count[k])
            continue;
        struct pres_query *q = malloc(sizeof(*q) + sh->count[k] * sizeof(q->users[0]));
        if (!q)
            continue; /* those users are left out of the answer */
        q->from_worker = sb_worker_id(w);
        q->conn_id = g->conn_id;
        q->gather = g->id;
        q->n = 0;
        for (int i = 0; i < n; i++) {
            if (sb_home_worker(users[i], strlen(users[i]), cfg.workers) == k)
                memcpy(q->users[q->n++], users[i], sizeof(users[i]));
        }
        if (post(w, k, query_arrive, q) < 0)
            free(q);
        else
            g->parts++;
    }
    /* The gather's own part, mailed to itself so that it arrives after the request has
     * started waiting: the last part to arrive sends the answer. */
    struct pres_qpart *own = calloc(1, sizeof(*own));
    if (own) {
        own->gather = g->id;
        if (post(w, sb_worker_id(w), qpart_arrive, own) < 0)
            free(own);
    }
out:
    free(users);
    free(t);
}
