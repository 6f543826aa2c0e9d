/*
 * Messaging: the user directory (home worker), conversations and their sequencer (the
 * conversation's home worker), history (in memory, logged by server/store.c), sync, and
 * delivery. Every cross-worker step is one mail carrying one allocation that the receiver frees.
 */
#include "server/chat.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/chunk.h"
#include "core/log.h"
#include "proto/json.h"
#include "proto/ws.h"
#include "server/gateway.h"
#include "server/presence.h"
#include "server/table.h"

_Static_assert(SB_DEVICE_ID_MAX == SB_STORE_DEVICE_MAX, "device ids fit the log");
_Static_assert(SB_CLIENT_ID_MAX == SB_STORE_CLIENT_ID_MAX, "client ids fit the log");

#define SYNC_LIMIT_DEFAULT 100
#define SYNC_LIMIT_MAX 1000
#define SYNC_MAX_CONVS 100
#define SYNC_PAGE_BYTES (1u << 20) /* a page holds fewer messages than asked past this */

struct chat_user;

struct chat_device {
    struct chat_device *next;
    struct chat_user *user;
    struct sb_conn *conn;
    uint64_t conn_id;
    char id[SB_DEVICE_ID_MAX + 1];
};

struct chat_user {
    char id[SB_USER_ID_MAX + 1];
    size_t id_len;
    struct chat_device *devices;
    unsigned ndevices;
};

/*
 * A message in history is its log record (struct sb_store_ent, rec = the record bytes): the
 * fields are read from the record, the `message` operation is encoded from it when needed.
 */
struct chat_conv {
    char id[SB_CONV_ID_MAX + 1];
    size_t id_len;
    uint64_t last_seq;
    uint32_t snap_gen;                        /* the compaction pass that last wrote it */
    char members[2][SB_USER_ID_MAX + 1];      /* a direct conversation's two users */
    struct sb_store_ent **hist;               /* ring of the newest messages, oldest at hist_head */
    uint32_t hist_head, hist_count, hist_cap; /* hist_cap grows up to history_max */
    struct sb_table dedup;                    /* record key (user, client id) -> message */
};

struct chat_shard {
    struct sb_table users; /* users homed here */
    struct sb_table convs; /* conversations sequenced here */
    struct sb_msgid_gen ids;
    struct sb_store_log *log;
    struct chat_conv **all; /* every conversation, in creation order: compaction's cursor */
    size_t nall, cap_all;
    size_t snap_next; /* the next conversation the compaction pass snap_gen writes */
    uint32_t snap_gen;
};

static struct sb_chat_config cfg;
static struct chat_shard *shards;

static const char *user_key(const void *obj, size_t *len)
{
    const struct chat_user *u = obj;
    *len = u->id_len;
    return u->id;
}

static const char *conv_key(const void *obj, size_t *len)
{
    const struct chat_conv *cv = obj;
    *len = cv->id_len;
    return cv->id;
}

static const char *msg_key(const void *obj, size_t *len)
{
    const struct sb_store_ent *m = obj;
    return sb_store_rec_key(m->rec, len);
}

int sb_chat_init(const struct sb_chat_config *c)
{
    cfg = *c;
    shards = calloc(cfg.workers, sizeof(*shards));
    if (!shards)
        return -ENOMEM;
    for (unsigned i = 0; i < cfg.workers; i++) {
        sb_table_init(&shards[i].users, user_key);
        sb_table_init(&shards[i].convs, conv_key);
        sb_msgid_init(&shards[i].ids, i);
        shards[i].log = sb_store_log(cfg.store, i);
    }
    return 0;
}

static struct sb_store_ent *hist_at(const struct chat_conv *cv, uint32_t i)
{
    return cv->hist[(cv->hist_head + i) % cv->hist_cap];
}

static void conv_free(struct chat_conv *cv)
{
    for (uint32_t i = 0; i < cv->hist_count; i++)
        sb_store_ent_free(hist_at(cv, i));
    free(cv->hist);
    sb_table_destroy(&cv->dedup);
    free(cv);
}

void sb_chat_free(void)
{
    for (unsigned i = 0; shards && i < cfg.workers; i++) {
        struct chat_shard *sh = &shards[i];
        for (size_t k = 0; k < sh->nall; k++)
            conv_free(sh->all[k]);
        free(sh->all);
        sb_table_destroy(&sh->convs);
        /* Users leave with their last device; none remain once the engine has stopped. */
        sb_table_destroy(&sh->users);
    }
    free(shards);
    shards = NULL;
}

static struct chat_shard *my_shard(struct sb_worker *w)
{
    return &shards[sb_worker_id(w)];
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- output -------------------------------------------------------------------------------- */

/* Queues a JSON text message (json already encoded) on one connection. */
static void send_text(struct sb_conn *c, const char *json, size_t len)
{
    if (sb__ws_send(c, SB_WS_TEXT, (const uint8_t *)json, len) < 0)
        sb_conn_close(c, -ENOMEM);
}

/* {"type":"error",["id":...,]"code":...,"message":...[,"conv":...]} */
static ssize_t encode_error(char *buf, size_t cap, const char *id, size_t id_len, const char *code,
                            const char *message, const char *conv, size_t conv_len)
{
    struct sb_json_writer w;
    sb_json_writer_init(&w, buf, cap);
    sb_json_begin_object(&w);
    sb_json_key(&w, "type");
    sb_json_cstr(&w, "error");
    if (id) {
        sb_json_key(&w, "id");
        sb_json_str(&w, id, id_len);
    }
    sb_json_key(&w, "code");
    sb_json_cstr(&w, code);
    sb_json_key(&w, "message");
    sb_json_cstr(&w, message);
    if (conv) {
        sb_json_key(&w, "conv");
        sb_json_str(&w, conv, conv_len);
    }
    sb_json_end_object(&w);
    return sb_json_finish(&w);
}

/* Sends an error answering request id (may be NULL). */
static void send_error(struct sb_conn *c, const char *id, const char *code, const char *message)
{
    char buf[512];
    ssize_t n = encode_error(buf, sizeof(buf), id, id ? strlen(id) : 0, code, message, NULL, 0);
    if (n > 0)
        send_text(c, buf, (size_t)n);
}

/* Writes the `message` operation for a stored message as the writer's next value. */
static void write_message(struct sb_json_writer *w, const struct sb_store_rec *r)
{
    char msg_id[24];
    snprintf(msg_id, sizeof(msg_id), "%llu", (unsigned long long)r->msg_id);
    sb_json_begin_object(w);
    sb_json_key(w, "type");
    sb_json_cstr(w, "message");
    sb_json_key(w, "conv");
    sb_json_str(w, r->conv, r->conv_len);
    sb_json_key(w, "seq");
    sb_json_uint(w, r->seq);
    sb_json_key(w, "msg_id");
    sb_json_cstr(w, msg_id);
    sb_json_key(w, "from");
    sb_json_str(w, r->user, r->user_len);
    sb_json_key(w, "device");
    sb_json_str(w, r->device, r->device_len);
    sb_json_key(w, "ts");
    sb_json_uint(w, r->ts_ms);
    sb_json_key(w, "body");
    sb_json_raw(w, r->body, r->body_len);
    sb_json_end_object(w);
}

/* Bytes write_message needs at most (strings may be escaped up to 6 bytes per byte). */
static size_t message_bound(const struct sb_store_rec *r)
{
    return r->body_len + 6 * (r->conv_len + r->user_len + r->device_len) + 160;
}

/* ---- the directory: devices on their user's home worker ----------------------------------- */

int sb_chat_register(struct sb_conn *c, struct sb_chat_login *login)
{
    struct chat_shard *sh = my_shard(sb_conn_worker(c));
    size_t ulen = strlen(login->user);
    struct chat_user *u = sb_table_get(&sh->users, login->user, ulen);
    if (!u) {
        u = calloc(1, sizeof(*u));
        if (u) {
            memcpy(u->id, login->user, ulen + 1);
            u->id_len = ulen;
        }
        if (!u || sb_table_add(&sh->users, u) < 0) {
            free(u);
            free(login);
            return -ENOMEM;
        }
    }
    struct chat_device *d = calloc(1, sizeof(*d));
    if (!d) {
        free(login);
        return -ENOMEM;
    }
    d->user = u;
    d->conn = c;
    d->conn_id = sb_conn_id(c);
    memcpy(d->id, login->device, sizeof(d->id));
    d->next = u->devices;
    u->devices = d;
    u->ndevices++;
    free(login);
    struct sb_session *s = sb_conn_app(c);
    s->chat = d;
    s->chat_registered = true;

    char buf[512], session[20];
    snprintf(session, sizeof(session), "%016llx", (unsigned long long)d->conn_id);
    struct sb_json_writer w;
    sb_json_writer_init(&w, buf, sizeof(buf));
    sb_json_begin_object(&w);
    sb_json_key(&w, "type");
    sb_json_cstr(&w, "welcome");
    sb_json_key(&w, "user");
    sb_json_str(&w, u->id, u->id_len);
    sb_json_key(&w, "device");
    sb_json_cstr(&w, d->id);
    sb_json_key(&w, "session");
    sb_json_cstr(&w, session);
    sb_json_key(&w, "server_time");
    sb_json_uint(&w, wall_ms());
    sb_json_end_object(&w);
    ssize_t n = sb_json_finish(&w);
    if (n > 0)
        send_text(c, buf, (size_t)n);
    sb_log(SB_LOG_DEBUG, 0, "c%llx: %s/%s online (%u devices)", (unsigned long long)d->conn_id,
           u->id, d->id, u->ndevices);
    sb_presence_device_up(c, u->id, u->id_len);
    return 0;
}

void sb_chat_unregister(struct sb_conn *c)
{
    struct sb_session *s = sb_conn_app(c);
    if (!s->chat_registered) {
        free(s->chat); /* a login that never reached its home worker */
        s->chat = NULL;
        return;
    }
    struct chat_device *d = s->chat;
    struct chat_user *u = d->user;
    sb_presence_device_down(c, u->id, u->id_len);
    for (struct chat_device **p = &u->devices; *p; p = &(*p)->next) {
        if (*p == d) {
            *p = d->next;
            break;
        }
    }
    u->ndevices--;
    free(d);
    s->chat = NULL;
    s->chat_registered = false;
    if (u->ndevices == 0) {
        sb_table_remove(&my_shard(sb_conn_worker(c))->users, u->id, u->id_len);
        free(u);
    }
}

/* ---- mail between workers ------------------------------------------------------------------ */

/* A send on its way to the sequencer. Strings are NUL-terminated inside data. */
struct chat_post {
    unsigned from_worker;
    uint64_t conn_id;
    const char *user, *device, *client_id, *conv, *body; /* body: raw JSON text */
    size_t user_len, device_len, client_id_len, conv_len, body_len;
    char data[];
};

/* A sync of one conversation on its way to the sequencer. */
struct chat_sync {
    unsigned from_worker;
    uint64_t conn_id;
    uint64_t last_seq;
    uint32_t limit;
    size_t user_len, id_len, conv_len;
    char user[SB_USER_ID_MAX + 1];
    char id[SB_CLIENT_ID_MAX + 1];
    char conv[SB_CONV_ID_MAX + 1];
};

/* Encoded text for one device (an ack, an error, a sync page), to the device's worker. */
struct chat_reply {
    uint64_t conn_id;
    size_t user_len, len;
    char user[SB_USER_ID_MAX + 1];
    char json[];
};

/* A message for the devices of some users homed on one worker. */
struct chat_envelope {
    uint64_t skip_conn_id; /* the sending device: it gets an ack instead */
    unsigned nusers;
    size_t json_len;
    char users[2][SB_USER_ID_MAX + 1];
    char json[];
};

static struct chat_device *find_device(struct sb_worker *w, const char *user, size_t len,
                                       uint64_t conn_id)
{
    struct chat_user *u = sb_table_get(&my_shard(w)->users, user, len);
    for (struct chat_device *d = u ? u->devices : NULL; d; d = d->next) {
        if (d->conn_id == conn_id)
            return d;
    }
    return NULL;
}

static void reply_arrive(struct sb_worker *w, void *arg)
{
    struct chat_reply *r = arg;
    /* The device may have gone meanwhile; then there is nobody to tell. */
    struct chat_device *d = find_device(w, r->user, r->user_len, r->conn_id);
    if (d)
        send_text(d->conn, r->json, r->len);
    free(r);
}

/* A reply with room for cap bytes of JSON, for the device conn_id of user. */
static struct chat_reply *reply_new(uint64_t conn_id, const char *user, size_t user_len, size_t cap)
{
    struct chat_reply *r = malloc(sizeof(*r) + cap);
    if (!r)
        return NULL;
    r->conn_id = conn_id;
    r->user_len = user_len;
    memcpy(r->user, user, user_len);
    r->user[user_len] = '\0';
    r->len = 0;
    return r;
}

/* Mails a reply to worker `to`; with after_durable, once what was appended is durable. */
static void reply_post(struct sb_worker *w, unsigned to, struct chat_reply *r, bool after_durable)
{
    int e = after_durable ? sb_store_post_after(my_shard(w)->log, w, to, reply_arrive, r)
                          : sb_worker_post(w, to, reply_arrive, r);
    if (e < 0) {
        sb_log(SB_LOG_WARN, e, "reply for c%llx dropped", (unsigned long long)r->conn_id);
        free(r);
    }
}

static void post_text(struct sb_worker *w, unsigned to, uint64_t conn_id, const char *user,
                      size_t user_len, const char *json, size_t len, bool after_durable)
{
    struct chat_reply *r = reply_new(conn_id, user, user_len, len);
    if (!r) {
        sb_log(SB_LOG_WARN, -ENOMEM, "reply for c%llx dropped", (unsigned long long)conn_id);
        return;
    }
    memcpy(r->json, json, len);
    r->len = len;
    reply_post(w, to, r, after_durable);
}

static void envelope_arrive(struct sb_worker *w, void *arg)
{
    struct chat_envelope *env = arg;
    /* One frame for every local device of every listed user: encoded once, queued by
     * reference. */
    uint8_t hdr[SB_WS_MAX_HEADER];
    size_t hlen = sb_ws_encode_header(hdr, true, SB_WS_TEXT, env->json_len, NULL);
    struct sb_chunk *ch = NULL;
    for (unsigned i = 0; i < env->nusers; i++) {
        struct chat_user *u =
            sb_table_get(&my_shard(w)->users, env->users[i], strlen(env->users[i]));
        for (struct chat_device *d = u ? u->devices : NULL; d; d = d->next) {
            if (d->conn_id == env->skip_conn_id || sb_conn_is_closing(d->conn))
                continue;
            if (!ch) {
                ch = sb_chunk_new(w, hlen + env->json_len);
                if (!ch)
                    break;
                memcpy(ch->data, hdr, hlen);
                memcpy(ch->data + hlen, env->json, env->json_len);
                ch->len = (uint32_t)(hlen + env->json_len);
            }
            if (sb_conn_send_chunk(d->conn, ch) < 0)
                sb_conn_close(d->conn, -ENOMEM);
        }
    }
    if (ch)
        sb_chunk_unref(w, ch);
    free(env);
}

/* ---- conversations and history ------------------------------------------------------------- */

/* Splits a direct conversation id "dm:<a>:<b>" (a < b, both valid user ids) into its users. */
static bool dm_members(const char *id, size_t len, char a[SB_USER_ID_MAX + 1],
                       char b[SB_USER_ID_MAX + 1])
{
    if (len < 6 || strncmp(id, "dm:", 3) != 0)
        return false;
    const char *colon = memchr(id + 3, ':', len - 3);
    if (!colon)
        return false;
    size_t alen = (size_t)(colon - (id + 3)), blen = len - 4 - alen;
    if (!sb_user_id_valid(id + 3, alen) || !sb_user_id_valid(colon + 1, blen))
        return false;
    char canon[SB_CONV_ID_MAX + 1];
    if (sb_dm_conv_id(id + 3, alen, colon + 1, blen, canon) != (ssize_t)len ||
        memcmp(canon, id, len) != 0)
        return false;
    memcpy(a, id + 3, alen);
    a[alen] = '\0';
    memcpy(b, colon + 1, blen);
    b[blen] = '\0';
    return true;
}

/* Bytes of a conversation's state record in the log. */
static size_t state_size(const struct chat_conv *cv)
{
    struct sb_store_rec s = {.type = SB_STORE_STATE, .conv_len = cv->id_len};
    return sb_store_rec_size(&s);
}

/*
 * The conversation with this id, created if it is a valid direct conversation id. Returns it,
 * or NULL with *err = -ENOENT (no such conversation) or -ENOMEM.
 */
static struct chat_conv *conv_get(struct chat_shard *sh, const char *id, size_t len, int *err)
{
    struct chat_conv *cv = sb_table_get(&sh->convs, id, len);
    if (cv)
        return cv;
    char a[SB_USER_ID_MAX + 1], b[SB_USER_ID_MAX + 1];
    *err = -ENOENT;
    if (!dm_members(id, len, a, b))
        return NULL;
    *err = -ENOMEM;
    if (sh->nall == sh->cap_all) {
        size_t cap = sh->cap_all ? sh->cap_all * 2 : 64;
        struct chat_conv **all = realloc(sh->all, cap * sizeof(struct chat_conv *));
        if (!all)
            return NULL;
        sh->all = all;
        sh->cap_all = cap;
    }
    cv = calloc(1, sizeof(*cv));
    if (!cv)
        return NULL;
    memcpy(cv->id, id, len);
    cv->id_len = len;
    memcpy(cv->members[0], a, sizeof(a));
    memcpy(cv->members[1], b, sizeof(b));
    cv->snap_gen = sb_store_snapshot_gen(sh->log);
    sb_table_init(&cv->dedup, msg_key);
    if (sb_table_add(&sh->convs, cv) < 0) {
        conv_free(cv);
        return NULL;
    }
    sh->all[sh->nall++] = cv;
    sb_store_account(sh->log, (int64_t)state_size(cv));
    return cv;
}

static bool is_member(const struct chat_conv *cv, const char *user)
{
    return strcmp(cv->members[0], user) == 0 || strcmp(cv->members[1], user) == 0;
}

/* The oldest message leaves history, and with it its de-duplication record. */
static void history_drop_oldest(struct chat_shard *sh, struct chat_conv *cv)
{
    struct sb_store_ent *m = cv->hist[cv->hist_head];
    size_t klen;
    const char *key = sb_store_rec_key(m->rec, &klen);
    if (sb_table_get(&cv->dedup, key, klen) == m)
        sb_table_remove(&cv->dedup, key, klen);
    sb_store_account(sh->log, -(int64_t)m->len);
    sb_store_ent_free(m);
    cv->hist_head = (cv->hist_head + 1) % cv->hist_cap;
    cv->hist_count--;
}

/* Drops messages older than history_max_age_ms. */
static void history_expire(struct chat_shard *sh, struct chat_conv *cv, uint64_t now_ms)
{
    if (!cfg.history_max_age_ms || now_ms < cfg.history_max_age_ms)
        return;
    uint64_t oldest = now_ms - cfg.history_max_age_ms;
    while (cv->hist_count && sb_store_rec_ts(cv->hist[cv->hist_head]->rec) < oldest)
        history_drop_oldest(sh, cv);
}

/* Room for one more message: the ring grows (doubling) up to history_max. */
static int history_grow(struct chat_conv *cv)
{
    uint32_t cap = cv->hist_cap ? cv->hist_cap * 2 : 4;
    if (cap > cfg.history_max)
        cap = cfg.history_max;
    struct sb_store_ent **hist = malloc(cap * sizeof(struct sb_store_ent *));
    if (!hist)
        return -ENOMEM;
    for (uint32_t i = 0; i < cv->hist_count; i++)
        hist[i] = hist_at(cv, i);
    free(cv->hist);
    cv->hist = hist;
    cv->hist_cap = cap;
    cv->hist_head = 0;
    return 0;
}

static int history_add(struct chat_shard *sh, struct chat_conv *cv, struct sb_store_ent *m)
{
    if (cv->hist_count == cfg.history_max)
        history_drop_oldest(sh, cv);
    else if (cv->hist_count == cv->hist_cap && history_grow(cv) < 0)
        return -ENOMEM;
    size_t klen;
    const char *key = sb_store_rec_key(m->rec, &klen);
    /* A key seen before (only a damaged log can hold one twice) keeps its first message. */
    if (!sb_table_get(&cv->dedup, key, klen) && sb_table_add(&cv->dedup, m) < 0)
        return -ENOMEM;
    cv->hist[(cv->hist_head + cv->hist_count) % cv->hist_cap] = m;
    cv->hist_count++;
    cv->last_seq = sb_store_rec_seq(m->rec);
    sb_store_account(sh->log, (int64_t)m->len);
    return 0;
}

/* The index in history of the first message with a seq above seq (hist_count if none). */
static uint32_t history_after(const struct chat_conv *cv, uint64_t seq)
{
    uint32_t lo = 0, hi = cv->hist_count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (sb_store_rec_seq(hist_at(cv, mid)->rec) <= seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* A log entry holding the record r. NULL without memory or for a record out of bounds. */
static struct sb_store_ent *ent_new(const struct sb_store_rec *r)
{
    size_t len = sb_store_rec_size(r);
    struct sb_store_ent *m = malloc(sizeof(*m) + len);
    if (!m)
        return NULL;
    m->next = NULL;
    m->flags = 0;
    m->len = (uint32_t)len;
    if (sb_store_encode(r, m->rec, len) < 0) {
        free(m);
        return NULL;
    }
    return m;
}

/* ---- replay and compaction (store callbacks) ----------------------------------------------- */

/* New ids of the generator that made id come after it, even if the clock went back meanwhile. */
static void msgid_seen(uint64_t id)
{
    unsigned generator = (unsigned)(id >> 12) & 2047;
    if (generator >= cfg.workers)
        return;
    struct sb_msgid_gen *g = &shards[generator].ids;
    uint64_t ms = id >> 23;
    uint32_t seq = (uint32_t)(id & 4095);
    if (ms > g->last_ms || (ms == g->last_ms && seq > g->seq)) {
        g->last_ms = ms;
        g->seq = seq;
    }
}

int sb_chat_restore(void *ctx, const struct sb_store_rec *r)
{
    /* The conversation is rebuilt on its home shard for today's worker count. */
    struct chat_shard *sh = &shards[sb_home_worker(r->conv, r->conv_len, cfg.workers)];
    int err;
    struct chat_conv *cv = conv_get(sh, r->conv, r->conv_len, &err);
    if (!cv) {
        if (err == -ENOMEM)
            return err;
        sb_log(SB_LOG_WARN, 0, "history: record of unknown conversation \"%.*s\" skipped",
               (int)r->conv_len, r->conv);
        return 0;
    }
    if (r->type == SB_STORE_STATE) {
        if (r->seq > cv->last_seq)
            cv->last_seq = r->seq;
        return 0;
    }
    /* Known already: a copy a compaction interrupted by a crash left in a second file. */
    if (r->seq <= cv->last_seq)
        return 0;
    msgid_seen(r->msg_id);
    uint64_t now = wall_ms();
    if (cfg.history_max_age_ms && r->ts_ms + cfg.history_max_age_ms < now) {
        cv->last_seq = r->seq;
        return 0;
    }
    struct sb_store_ent *m = ent_new(r);
    if (!m || history_add(sh, cv, m) < 0) {
        free(m);
        return -ENOMEM;
    }
    return 0;
}

int sb_chat_snapshot(void *ctx, unsigned worker, uint32_t gen, struct sb_store_buf *out,
                     size_t target, bool *done)
{
    struct chat_shard *sh = &shards[worker];
    if (sh->snap_gen != gen) {
        sh->snap_gen = gen;
        sh->snap_next = 0;
    }
    uint64_t now = wall_ms();
    while (sh->snap_next < sh->nall && out->len < target) {
        struct chat_conv *cv = sh->all[sh->snap_next];
        history_expire(sh, cv, now);
        for (uint32_t i = 0; i < cv->hist_count; i++) {
            const struct sb_store_ent *m = hist_at(cv, i);
            uint8_t *p = sb_store_buf_reserve(out, m->len);
            if (!p)
                return -ENOMEM;
            memcpy(p, m->rec, m->len);
        }
        struct sb_store_rec s = {
            .type = SB_STORE_STATE, .seq = cv->last_seq, .conv = cv->id, .conv_len = cv->id_len};
        size_t n = sb_store_rec_size(&s);
        uint8_t *p = sb_store_buf_reserve(out, n);
        if (!p)
            return -ENOMEM;
        sb_store_encode(&s, p, n);
        cv->snap_gen = gen;
        sh->snap_next++;
    }
    *done = sh->snap_next == sh->nall;
    return 0;
}

/* ---- the sequencer -------------------------------------------------------------------------- */

/* {"type":"ack","id":...,"msg_id":"...","conv":...,"seq":N,"ts":N[,"duplicate":true]} */
static ssize_t encode_ack(const struct sb_store_rec *r, bool dup, char *buf, size_t cap)
{
    char msg_id[24];
    snprintf(msg_id, sizeof(msg_id), "%llu", (unsigned long long)r->msg_id);
    struct sb_json_writer w;
    sb_json_writer_init(&w, buf, cap);
    sb_json_begin_object(&w);
    sb_json_key(&w, "type");
    sb_json_cstr(&w, "ack");
    sb_json_key(&w, "id");
    sb_json_str(&w, r->client_id, r->client_id_len);
    sb_json_key(&w, "msg_id");
    sb_json_cstr(&w, msg_id);
    sb_json_key(&w, "conv");
    sb_json_str(&w, r->conv, r->conv_len);
    sb_json_key(&w, "seq");
    sb_json_uint(&w, r->seq);
    sb_json_key(&w, "ts");
    sb_json_uint(&w, r->ts_ms);
    if (dup) {
        sb_json_key(&w, "duplicate");
        sb_json_bool(&w, true);
    }
    sb_json_end_object(&w);
    return sb_json_finish(&w);
}

/* The new message of a send: its log record, with the next seq and a fresh msg_id. */
static struct sb_store_ent *make_msg(struct chat_shard *sh, const struct chat_conv *cv,
                                     const struct chat_post *p)
{
    struct sb_store_rec r = {
        .type = SB_STORE_MESSAGE,
        .seq = cv->last_seq + 1,
        .ts_ms = wall_ms(),
        .conv = p->conv,
        .conv_len = p->conv_len,
        .device = p->device,
        .device_len = p->device_len,
        .user = p->user,
        .user_len = p->user_len,
        .client_id = p->client_id,
        .client_id_len = p->client_id_len,
        .body = p->body,
        .body_len = p->body_len,
    };
    r.msg_id = sb_msgid_next(&sh->ids, r.ts_ms);
    return ent_new(&r);
}

/* Mails the message to the home worker of each member: one envelope per worker. */
static void deliver(struct sb_worker *w, const struct chat_conv *cv, const struct sb_store_ent *m,
                    uint64_t skip_conn_id)
{
    struct sb_store_rec r;
    sb_store_view(m->rec, &r);
    size_t cap = message_bound(&r);
    struct chat_envelope *env[2] = {NULL, NULL};
    unsigned target[2] = {0, 0}, nenv = 0;
    for (unsigned i = 0; i < 2; i++) {
        const char *user = cv->members[i];
        unsigned home = sb_home_worker(user, strlen(user), cfg.workers);
        unsigned k = 0;
        while (k < nenv && target[k] != home)
            k++;
        if (k == nenv) {
            env[k] = malloc(sizeof(**env) + cap);
            if (!env[k])
                continue;
            env[k]->skip_conn_id = skip_conn_id;
            env[k]->nusers = 0;
            if (k == 0) {
                struct sb_json_writer jw;
                sb_json_writer_init(&jw, env[0]->json, cap);
                write_message(&jw, &r);
                ssize_t n = sb_json_finish(&jw);
                if (n < 0) {
                    sb_log(SB_LOG_WARN, (int)n, "%s: message %llu not delivered", cv->id,
                           (unsigned long long)r.seq);
                    free(env[0]);
                    return;
                }
                env[0]->json_len = (size_t)n;
            } else {
                env[k]->json_len = env[0]->json_len;
                memcpy(env[k]->json, env[0]->json, env[0]->json_len);
            }
            target[k] = home;
            nenv++;
        }
        strcpy(env[k]->users[env[k]->nusers++], user);
    }
    for (unsigned k = 0; k < nenv; k++) {
        if (sb_store_post_after(my_shard(w)->log, w, target[k], envelope_arrive, env[k]) < 0)
            free(env[k]);
    }
}

static void sequence_error(struct sb_worker *w, const struct chat_post *p, const char *code,
                           const char *message)
{
    char buf[640];
    ssize_t n =
        encode_error(buf, sizeof(buf), p->client_id, p->client_id_len, code, message, NULL, 0);
    if (n > 0)
        post_text(w, p->from_worker, p->conn_id, p->user, p->user_len, buf, (size_t)n, false);
}

static void sequence(struct sb_worker *w, void *arg)
{
    struct chat_post *p = arg;
    struct chat_shard *sh = my_shard(w);
    int err;
    struct chat_conv *cv = conv_get(sh, p->conv, p->conv_len, &err);
    if (!cv || !is_member(cv, p->user)) {
        if (cv)
            sequence_error(w, p, "forbidden", "not a member of this conversation");
        else if (err == -ENOENT)
            sequence_error(w, p, "not_found", "no such conversation");
        else
            sequence_error(w, p, "unavailable", "out of memory; retry");
        free(p);
        return;
    }
    history_expire(sh, cv, wall_ms());
    /* A retried send (same user and client id) is answered with the first ack, not stored
     * or delivered again. The key is laid out as in the log record. */
    char key[2 + SB_USER_ID_MAX + SB_CLIENT_ID_MAX];
    key[0] = (char)p->user_len;
    memcpy(key + 1, p->user, p->user_len);
    key[1 + p->user_len] = (char)p->client_id_len;
    memcpy(key + 2 + p->user_len, p->client_id, p->client_id_len);
    struct sb_store_ent *m = sb_table_get(&cv->dedup, key, 2 + p->user_len + p->client_id_len);
    bool dup = m != NULL;
    if (!dup) {
        m = make_msg(sh, cv, p);
        if (!m || history_add(sh, cv, m) < 0) {
            free(m);
            sb_log(SB_LOG_WARN, -ENOMEM, "send to %s dropped", cv->id);
            sequence_error(w, p, "unavailable", "out of memory; retry");
            free(p);
            return;
        }
        sb_store_append(sh->log, w, m, cv->snap_gen);
    }
    /* Under fsync = always the ack and the deliveries wait until the record is durable (a
     * duplicate's too: its first copy may still be on its way to the disk). */
    struct sb_store_rec r;
    sb_store_view(m->rec, &r);
    char buf[640];
    ssize_t n = encode_ack(&r, dup, buf, sizeof(buf));
    if (n > 0)
        post_text(w, p->from_worker, p->conn_id, p->user, p->user_len, buf, (size_t)n, true);
    if (!dup)
        deliver(w, cv, m, p->conn_id);
    free(p);
}

/* ---- sync on the sequencer ----------------------------------------------------------------- */

/* Encodes a page of cv's history after q->last_seq into a new reply (NULL without memory). */
static struct chat_reply *sync_page(const struct chat_conv *cv, const struct chat_sync *q)
{
    uint64_t last = cv ? cv->last_seq : 0;
    uint32_t count = cv ? cv->hist_count : 0;
    uint32_t first = cv ? history_after(cv, q->last_seq) : 0, n = 0;
    uint64_t oldest = count ? sb_store_rec_seq(hist_at(cv, 0)->rec) : last + 1;
    bool truncated = q->last_seq < last && q->last_seq + 1 < oldest;
    size_t bytes = 0;
    while (first + n < count && n < q->limit && (n == 0 || bytes < SYNC_PAGE_BYTES)) {
        struct sb_store_rec r;
        sb_store_view(hist_at(cv, first + n)->rec, &r);
        bytes += message_bound(&r) + 1;
        n++;
    }
    size_t cap = bytes + 6 * (q->id_len + q->conv_len) + 200;
    struct chat_reply *rep = reply_new(q->conn_id, q->user, q->user_len, cap);
    if (!rep)
        return NULL;
    struct sb_json_writer w;
    sb_json_writer_init(&w, rep->json, cap);
    sb_json_begin_object(&w);
    sb_json_key(&w, "type");
    sb_json_cstr(&w, "sync_page");
    sb_json_key(&w, "id");
    sb_json_str(&w, q->id, q->id_len);
    sb_json_key(&w, "conv");
    sb_json_str(&w, q->conv, q->conv_len);
    sb_json_key(&w, "messages");
    sb_json_begin_array(&w);
    for (uint32_t i = 0; i < n; i++) {
        struct sb_store_rec r;
        sb_store_view(hist_at(cv, first + i)->rec, &r);
        write_message(&w, &r);
    }
    sb_json_end_array(&w);
    sb_json_key(&w, "more");
    sb_json_bool(&w, first + n < count);
    /* Where the next request continues: the last message sent, or all there is. */
    sb_json_key(&w, "last_seq");
    sb_json_uint(&w, n ? sb_store_rec_seq(hist_at(cv, first + n - 1)->rec) : last);
    if (truncated) {
        sb_json_key(&w, "truncated");
        sb_json_bool(&w, true);
    }
    sb_json_end_object(&w);
    ssize_t len = sb_json_finish(&w);
    if (len < 0) {
        free(rep);
        return NULL;
    }
    rep->len = (size_t)len;
    return rep;
}

static void sync_serve(struct sb_worker *w, void *arg)
{
    struct chat_sync *q = arg;
    struct chat_shard *sh = my_shard(w);
    struct chat_conv *cv = sb_table_get(&sh->convs, q->conv, q->conv_len);
    char a[SB_USER_ID_MAX + 1], b[SB_USER_ID_MAX + 1];
    /* A direct conversation nobody wrote to yet is empty for its members; any other unknown
     * id is simply empty. */
    bool member = cv ? is_member(cv, q->user)
                     : !dm_members(q->conv, q->conv_len, a, b) || strcmp(a, q->user) == 0 ||
                           strcmp(b, q->user) == 0;
    if (!member) {
        char buf[640];
        ssize_t n = encode_error(buf, sizeof(buf), q->id, q->id_len, "forbidden",
                                 "not a member of this conversation", q->conv, q->conv_len);
        if (n > 0)
            post_text(w, q->from_worker, q->conn_id, q->user, q->user_len, buf, (size_t)n, false);
        free(q);
        return;
    }
    if (cv)
        history_expire(sh, cv, wall_ms());
    struct chat_reply *rep = sync_page(cv, q);
    if (rep) {
        /* Under fsync = always a page shows only what is durable: it waits like an ack. */
        reply_post(w, q->from_worker, rep, true);
    } else {
        char buf[640];
        ssize_t n = encode_error(buf, sizeof(buf), q->id, q->id_len, "unavailable",
                                 "out of memory; retry", q->conv, q->conv_len);
        if (n > 0)
            post_text(w, q->from_worker, q->conn_id, q->user, q->user_len, buf, (size_t)n, false);
    }
    free(q);
}

/* ---- client operations ---------------------------------------------------------------------- */

#define MAX_TOKENS (8 + 2 * SYNC_MAX_CONVS + 16)

/* Copies a string member into out; false when absent, not a string, empty or too long. */
static bool get_str(const char *json, const struct sb_json_tok *t, int obj, const char *key,
                    char *out, size_t cap)
{
    int i = sb_json_get(json, t, obj, key);
    return i >= 0 && t[i].type == SB_JSON_STRING && sb_json_string(json, &t[i], out, cap) > 0;
}

static void op_send(struct sb_conn *c, struct chat_device *d, const char *json,
                    const struct sb_json_tok *t, const char *id)
{
    char to[SB_USER_ID_MAX + 1], conv[SB_CONV_ID_MAX + 1];
    ssize_t conv_len = -1;
    if (get_str(json, t, 0, "to", to, sizeof(to))) {
        if (!sb_user_id_valid(to, strlen(to))) {
            send_error(c, id, "bad_request", "\"to\" is not a valid user id");
            return;
        }
        conv_len = sb_dm_conv_id(d->user->id, d->user->id_len, to, strlen(to), conv);
        if (conv_len < 0) {
            send_error(c, id, "bad_request", "cannot send a direct message to yourself");
            return;
        }
    } else if (get_str(json, t, 0, "conv", conv, sizeof(conv))) {
        conv_len = (ssize_t)strlen(conv);
    } else {
        send_error(c, id, "bad_request", "send needs \"to\" or \"conv\"");
        return;
    }
    int b = sb_json_get(json, t, 0, "body");
    if (b < 0 || t[b].type != SB_JSON_STRING) {
        send_error(c, id, "bad_request", "send needs a string \"body\"");
        return;
    }
    /* The body travels as its JSON text, quotes included: never unescaped, never re-escaped. */
    const char *body = json + t[b].start - 1;
    size_t body_len = t[b].len + 2;
    size_t user_len = d->user->id_len, id_len = strlen(id), dev_len = strlen(d->id);
    struct chat_post *p =
        malloc(sizeof(*p) + user_len + dev_len + id_len + (size_t)conv_len + body_len + 5);
    if (!p) {
        send_error(c, id, "unavailable", "out of memory; retry");
        return;
    }
    char *q = p->data;
    p->from_worker = sb_worker_id(sb_conn_worker(c));
    p->conn_id = d->conn_id;
#define PUT(field, src, n)                                                                         \
    do {                                                                                           \
        memcpy(q, src, n);                                                                         \
        q[n] = '\0';                                                                               \
        p->field = q;                                                                              \
        q += (n) + 1;                                                                              \
    } while (0)
    PUT(user, d->user->id, user_len);
    PUT(device, d->id, dev_len);
    PUT(client_id, id, id_len);
    PUT(conv, conv, (size_t)conv_len);
    PUT(body, body, body_len);
#undef PUT
    p->user_len = user_len;
    p->device_len = dev_len;
    p->client_id_len = id_len;
    p->conv_len = (size_t)conv_len;
    p->body_len = body_len;
    unsigned home = sb_home_worker(conv, (size_t)conv_len, cfg.workers);
    if (sb_worker_post(sb_conn_worker(c), home, sequence, p) < 0) {
        free(p);
        send_error(c, id, "unavailable", "out of memory; retry");
    }
}

/* Reads "limit": absent = the default; above the maximum = the maximum; false when invalid. */
static bool sync_limit(const char *json, const struct sb_json_tok *t, uint32_t *out)
{
    int i = sb_json_get(json, t, 0, "limit");
    int64_t v = SYNC_LIMIT_DEFAULT;
    if (i >= 0 && (t[i].type != SB_JSON_NUMBER || sb_json_int64(json, &t[i], &v) < 0 || v < 1))
        return false;
    *out = v > SYNC_LIMIT_MAX ? SYNC_LIMIT_MAX : (uint32_t)v;
    return true;
}

static void op_sync(struct sb_conn *c, struct chat_device *d, const char *json,
                    const struct sb_json_tok *t, const char *id)
{
    int convs = sb_json_get(json, t, 0, "convs");
    if (convs < 0 || t[convs].type != SB_JSON_OBJECT || t[convs].size == 0) {
        send_error(c, id, "bad_request", "sync needs \"convs\": {conversation: last_seq, ...}");
        return;
    }
    if (t[convs].size > SYNC_MAX_CONVS) {
        send_error(c, id, "bad_request", "a sync names at most 100 conversations");
        return;
    }
    uint32_t limit;
    if (!sync_limit(json, t, &limit)) {
        send_error(c, id, "bad_request", "\"limit\" must be a positive integer");
        return;
    }
    /* Everything is checked before anything is asked: a bad request gets one error only. */
    char conv[SB_CONV_ID_MAX + 1];
    for (int k = convs + 1, i = 0; i < (int)t[convs].size; i++, k = (int)t[k + 1].next) {
        int64_t seq;
        if (sb_json_string(json, &t[k], conv, sizeof(conv)) <= 0 ||
            t[k + 1].type != SB_JSON_NUMBER || sb_json_int64(json, &t[k + 1], &seq) < 0 ||
            seq < 0) {
            send_error(c, id, "bad_request",
                       "\"convs\" maps conversation ids to last_seq (an integer >= 0)");
            return;
        }
    }
    struct sb_worker *w = sb_conn_worker(c);
    for (int k = convs + 1, i = 0; i < (int)t[convs].size; i++, k = (int)t[k + 1].next) {
        struct chat_sync *q = malloc(sizeof(*q));
        int64_t seq = 0;
        ssize_t n = sb_json_string(json, &t[k], conv, sizeof(conv));
        sb_json_int64(json, &t[k + 1], &seq);
        if (!q) {
            send_error(c, id, "unavailable", "out of memory; retry");
            return;
        }
        q->from_worker = sb_worker_id(w);
        q->conn_id = d->conn_id;
        q->last_seq = (uint64_t)seq;
        q->limit = limit;
        q->user_len = d->user->id_len;
        memcpy(q->user, d->user->id, q->user_len + 1);
        q->id_len = strlen(id);
        memcpy(q->id, id, q->id_len + 1);
        q->conv_len = (size_t)n;
        memcpy(q->conv, conv, q->conv_len + 1);
        if (sb_worker_post(w, sb_home_worker(conv, (size_t)n, cfg.workers), sync_serve, q) < 0) {
            free(q);
            send_error(c, id, "unavailable", "out of memory; retry");
            return;
        }
    }
}

void sb_chat_on_message(struct sb_conn *c, const uint8_t *data, size_t len)
{
    struct sb_session *s = sb_conn_app(c);
    struct chat_device *d = s->chat;
    const char *json = (const char *)data;
    struct sb_json_tok t[MAX_TOKENS];
    struct sb_json_limits lim = {.max_tokens = MAX_TOKENS, .max_depth = 8};
    ssize_t n = sb_json_parse(json, len, &lim, t);
    /* presence_sub names up to 1,000 users: more tokens than MAX_TOKENS; presence parses it. */
    if (n == -E2BIG && sb_presence_on_message(c, data, len) == 0)
        return;
    if (n == -E2BIG) {
        send_error(c, NULL, "bad_request", "too many fields (a sync names at most 100 convs)");
        return;
    }
    if (n < 0 || t[0].type != SB_JSON_OBJECT) {
        send_error(c, NULL, "bad_request", "expected a JSON object");
        return;
    }
    char type[24], id[SB_CLIENT_ID_MAX + 1];
    if (!get_str(json, t, 0, "type", type, sizeof(type))) {
        send_error(c, NULL, "bad_request", "missing \"type\"");
        return;
    }
    if (!get_str(json, t, 0, "id", id, sizeof(id))) {
        send_error(c, NULL, "bad_request", "missing \"id\" (1-64 bytes)");
        return;
    }
    if (strcmp(type, "send") == 0)
        op_send(c, d, json, t, id);
    else if (strcmp(type, "sync") == 0)
        op_sync(c, d, json, t, id);
    else if (strncmp(type, "presence_", 9) == 0 && sb_presence_on_message(c, data, len) == 0)
        return;
    else
        send_error(c, id, "bad_request", "unknown operation type");
}
