/*
 * Messaging: the user directory (home worker), conversations and their sequencer (the
 * conversation's home worker), and delivery. Every cross-worker step is one mail carrying one
 * allocation that the receiver frees.
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
#include "server/table.h"

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

/* One message in a conversation's history; also the de-duplication record of its send. */
struct chat_msg {
    uint64_t msg_id, seq, ts_ms;
    char *dedup_key; /* "<user>\n<client id>", inside data */
    size_t dedup_len;
    char *json; /* the encoded `message` operation, inside data */
    size_t json_len;
    char data[];
};

struct chat_conv {
    char id[SB_CONV_ID_MAX + 1];
    size_t id_len;
    uint64_t last_seq;
    char members[2][SB_USER_ID_MAX + 1]; /* a direct conversation's two users */
    struct chat_msg **hist;              /* ring of the last history_max messages */
    uint32_t hist_head, hist_count;
    struct sb_table dedup; /* dedup_key -> chat_msg, for the messages in hist */
};

struct chat_shard {
    struct sb_table users; /* users homed here */
    struct sb_table convs; /* conversations sequenced here */
    struct sb_msgid_gen ids;
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
    const struct chat_msg *m = obj;
    *len = m->dedup_len;
    return m->dedup_key;
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
    }
    return 0;
}

static void conv_free(struct chat_conv *cv)
{
    uint32_t cap = cfg.history_max;
    for (uint32_t i = 0; i < cv->hist_count; i++)
        free(cv->hist[(cv->hist_head + i) % cap]);
    free(cv->hist);
    sb_table_destroy(&cv->dedup);
    free(cv);
}

void sb_chat_free(void)
{
    for (unsigned i = 0; shards && i < cfg.workers; i++) {
        struct sb_table *t = &shards[i].convs;
        for (size_t k = 0; k < t->cap; k++) {
            if (t->slots[k].hash)
                conv_free(t->slots[k].obj);
        }
        sb_table_destroy(t);
        /* Users leave with their last device; none remain once the engine has stopped. */
        sb_table_destroy(&shards[i].users);
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

/* Sends {"type":"error",...} answering request id (may be NULL). */
static void send_error(struct sb_conn *c, const char *id, const char *code, const char *message)
{
    char buf[512];
    struct sb_json_writer w;
    sb_json_writer_init(&w, buf, sizeof(buf));
    sb_json_begin_object(&w);
    sb_json_key(&w, "type");
    sb_json_cstr(&w, "error");
    if (id) {
        sb_json_key(&w, "id");
        sb_json_cstr(&w, id);
    }
    sb_json_key(&w, "code");
    sb_json_cstr(&w, code);
    sb_json_key(&w, "message");
    sb_json_cstr(&w, message);
    sb_json_end_object(&w);
    ssize_t n = sb_json_finish(&w);
    if (n > 0)
        send_text(c, buf, (size_t)n);
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
    size_t user_len, client_id_len, conv_len, body_len;
    char data[];
};

/* Encoded text for one device (an ack or an error), to the device's worker. */
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

static void post_reply(struct sb_worker *w, unsigned to, const struct chat_post *p,
                       const char *json, size_t len)
{
    struct chat_reply *r = malloc(sizeof(*r) + len);
    if (!r) {
        sb_log(SB_LOG_WARN, -ENOMEM, "ack for c%llx dropped", (unsigned long long)p->conn_id);
        return;
    }
    r->conn_id = p->conn_id;
    r->user_len = p->user_len;
    memcpy(r->user, p->user, p->user_len + 1);
    r->len = len;
    memcpy(r->json, json, len);
    if (sb_worker_post(w, to, reply_arrive, r) < 0)
        free(r);
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

/* ---- the sequencer -------------------------------------------------------------------------- */

static struct chat_conv *conv_get(struct chat_shard *sh, const char *id, size_t len)
{
    struct chat_conv *cv = sb_table_get(&sh->convs, id, len);
    if (cv)
        return cv;
    /* Direct conversations exist implicitly: "dm:<a>:<b>" names its two members. */
    const char *colon = len > 3 ? memchr(id + 3, ':', len - 3) : NULL;
    if (!colon || strncmp(id, "dm:", 3) != 0)
        return NULL;
    cv = calloc(1, sizeof(*cv));
    if (!cv)
        return NULL;
    cv->hist = calloc(cfg.history_max, sizeof(*cv->hist));
    if (!cv->hist) {
        free(cv);
        return NULL;
    }
    memcpy(cv->id, id, len);
    cv->id_len = len;
    size_t alen = (size_t)(colon - (id + 3));
    memcpy(cv->members[0], id + 3, alen);
    memcpy(cv->members[1], colon + 1, len - 4 - alen);
    sb_table_init(&cv->dedup, msg_key);
    if (sb_table_add(&sh->convs, cv) < 0) {
        conv_free(cv);
        return NULL;
    }
    return cv;
}

static bool is_member(const struct chat_conv *cv, const char *user)
{
    return strcmp(cv->members[0], user) == 0 || strcmp(cv->members[1], user) == 0;
}

/* {"type":"ack","id":...,"msg_id":"...","conv":...,"seq":N,"ts":N[,"duplicate":true]} */
static ssize_t encode_ack(const struct chat_post *p, const struct chat_msg *m, bool dup, char *buf,
                          size_t cap)
{
    char msg_id[24];
    snprintf(msg_id, sizeof(msg_id), "%llu", (unsigned long long)m->msg_id);
    struct sb_json_writer w;
    sb_json_writer_init(&w, buf, cap);
    sb_json_begin_object(&w);
    sb_json_key(&w, "type");
    sb_json_cstr(&w, "ack");
    sb_json_key(&w, "id");
    sb_json_str(&w, p->client_id, p->client_id_len);
    sb_json_key(&w, "msg_id");
    sb_json_cstr(&w, msg_id);
    sb_json_key(&w, "conv");
    sb_json_str(&w, p->conv, p->conv_len);
    sb_json_key(&w, "seq");
    sb_json_uint(&w, m->seq);
    sb_json_key(&w, "ts");
    sb_json_uint(&w, m->ts_ms);
    if (dup) {
        sb_json_key(&w, "duplicate");
        sb_json_bool(&w, true);
    }
    sb_json_end_object(&w);
    return sb_json_finish(&w);
}

/* Builds the history record, with the `message` operation encoded once. */
static struct chat_msg *make_msg(struct chat_shard *sh, struct chat_conv *cv,
                                 const struct chat_post *p)
{
    size_t key_len = p->user_len + 1 + p->client_id_len;
    size_t json_cap = p->body_len + p->conv_len + p->user_len + SB_DEVICE_ID_MAX + 160;
    struct chat_msg *m = malloc(sizeof(*m) + key_len + json_cap);
    if (!m)
        return NULL;
    m->seq = cv->last_seq + 1;
    m->ts_ms = wall_ms();
    m->msg_id = sb_msgid_next(&sh->ids, m->ts_ms);
    m->dedup_key = m->data;
    m->dedup_len = key_len;
    memcpy(m->dedup_key, p->user, p->user_len);
    m->dedup_key[p->user_len] = '\n';
    memcpy(m->dedup_key + p->user_len + 1, p->client_id, p->client_id_len);
    m->json = m->data + key_len;
    char msg_id[24];
    snprintf(msg_id, sizeof(msg_id), "%llu", (unsigned long long)m->msg_id);
    struct sb_json_writer w;
    sb_json_writer_init(&w, m->json, json_cap);
    sb_json_begin_object(&w);
    sb_json_key(&w, "type");
    sb_json_cstr(&w, "message");
    sb_json_key(&w, "conv");
    sb_json_str(&w, p->conv, p->conv_len);
    sb_json_key(&w, "seq");
    sb_json_uint(&w, m->seq);
    sb_json_key(&w, "msg_id");
    sb_json_cstr(&w, msg_id);
    sb_json_key(&w, "from");
    sb_json_str(&w, p->user, p->user_len);
    sb_json_key(&w, "device");
    sb_json_cstr(&w, p->device);
    sb_json_key(&w, "ts");
    sb_json_uint(&w, m->ts_ms);
    sb_json_key(&w, "body");
    sb_json_raw(&w, p->body, p->body_len);
    sb_json_end_object(&w);
    ssize_t n = sb_json_finish(&w);
    if (n < 0) {
        free(m);
        return NULL;
    }
    m->json_len = (size_t)n;
    return m;
}

static int history_add(struct chat_conv *cv, struct chat_msg *m)
{
    uint32_t cap = cfg.history_max;
    if (cv->hist_count == cap) {
        /* The oldest message leaves history, and with it its de-duplication record. */
        struct chat_msg *old = cv->hist[cv->hist_head];
        sb_table_remove(&cv->dedup, old->dedup_key, old->dedup_len);
        free(old);
        cv->hist_head = (cv->hist_head + 1) % cap;
        cv->hist_count--;
    }
    int r = sb_table_add(&cv->dedup, m);
    if (r < 0)
        return r;
    cv->hist[(cv->hist_head + cv->hist_count) % cap] = m;
    cv->hist_count++;
    cv->last_seq = m->seq;
    return 0;
}

static void deliver(struct sb_worker *w, const struct chat_conv *cv, const struct chat_msg *m,
                    uint64_t skip_conn_id)
{
    /* Group the members by home worker: one envelope per worker. */
    struct chat_envelope *env[2] = {NULL, NULL};
    unsigned target[2], nenv = 0;
    for (unsigned i = 0; i < 2; i++) {
        const char *user = cv->members[i];
        unsigned home = sb_home_worker(user, strlen(user), cfg.workers);
        unsigned k = 0;
        while (k < nenv && target[k] != home)
            k++;
        if (k == nenv) {
            env[k] = malloc(sizeof(**env) + m->json_len);
            if (!env[k])
                continue;
            env[k]->skip_conn_id = skip_conn_id;
            env[k]->nusers = 0;
            env[k]->json_len = m->json_len;
            memcpy(env[k]->json, m->json, m->json_len);
            target[k] = home;
            nenv++;
        }
        strcpy(env[k]->users[env[k]->nusers++], user);
    }
    for (unsigned k = 0; k < nenv; k++) {
        if (sb_worker_post(w, target[k], envelope_arrive, env[k]) < 0)
            free(env[k]);
    }
}

static void sequence(struct sb_worker *w, void *arg)
{
    struct chat_post *p = arg;
    struct chat_shard *sh = my_shard(w);
    char buf[640];
    ssize_t n;
    struct chat_conv *cv = conv_get(sh, p->conv, p->conv_len);
    if (!cv || !is_member(cv, p->user)) {
        struct sb_json_writer jw;
        sb_json_writer_init(&jw, buf, sizeof(buf));
        sb_json_begin_object(&jw);
        sb_json_key(&jw, "type");
        sb_json_cstr(&jw, "error");
        sb_json_key(&jw, "id");
        sb_json_str(&jw, p->client_id, p->client_id_len);
        sb_json_key(&jw, "code");
        sb_json_cstr(&jw, cv ? "forbidden" : "not_found");
        sb_json_key(&jw, "message");
        sb_json_cstr(&jw, cv ? "not a member of this conversation" : "no such conversation");
        sb_json_end_object(&jw);
        n = sb_json_finish(&jw);
        if (n > 0)
            post_reply(w, p->from_worker, p, buf, (size_t)n);
        free(p);
        return;
    }
    /* A retried send (same user and client id) is answered with the first ack, not stored
     * or delivered again. */
    char key[SB_USER_ID_MAX + 1 + SB_CLIENT_ID_MAX];
    memcpy(key, p->user, p->user_len);
    key[p->user_len] = '\n';
    memcpy(key + p->user_len + 1, p->client_id, p->client_id_len);
    struct chat_msg *m = sb_table_get(&cv->dedup, key, p->user_len + 1 + p->client_id_len);
    bool dup = m != NULL;
    if (!dup) {
        m = make_msg(sh, cv, p);
        if (!m || history_add(cv, m) < 0) {
            free(m);
            sb_log(SB_LOG_WARN, -ENOMEM, "send to %s dropped", cv->id);
            free(p);
            return;
        }
    }
    n = encode_ack(p, m, dup, buf, sizeof(buf));
    if (n > 0)
        post_reply(w, p->from_worker, p, buf, (size_t)n);
    if (!dup)
        deliver(w, cv, m, p->conn_id);
    free(p);
}

/* ---- client operations ---------------------------------------------------------------------- */

#define MAX_TOKENS 64

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
    p->client_id_len = id_len;
    p->conv_len = (size_t)conv_len;
    p->body_len = body_len;
    unsigned home = sb_home_worker(conv, (size_t)conv_len, cfg.workers);
    if (sb_worker_post(sb_conn_worker(c), home, sequence, p) < 0) {
        free(p);
        send_error(c, id, "unavailable", "out of memory; retry");
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
    else
        send_error(c, id, "bad_request", "unknown operation type");
}
