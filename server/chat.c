/*
 * Messaging: the user directory (home worker), conversations and their sequencer (the
 * conversation's home worker), groups, receipts, typing, history (in memory, logged by
 * server/store.c), sync, and delivery by traffic class. Every cross-worker step is one mail
 * carrying one allocation that the receiver frees.
 */
#include "server/chat.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/chunk.h"
#include "cluster/convs.h"
#include "cluster/pubsub.h"
#include "cluster/registry.h"
#include "core/log.h"
#include "proto/binproto.h"
#include "proto/json.h"
#include "proto/jsonops.h"
#include "proto/opsbody.h"
#include "proto/utf8.h"
#include "proto/ws.h"
#include "server/envelope.h"
#include "server/gateway.h"
#include "server/metrics.h"
#include "server/presence.h"
#include "server/table.h"
#include "server/webhook.h"

_Static_assert(SB_DEVICE_ID_MAX == SB_STORE_DEVICE_MAX, "device ids fit the log");
_Static_assert(SB_CLIENT_ID_MAX == SB_STORE_CLIENT_ID_MAX, "client ids fit the log");

#define SYNC_LIMIT_DEFAULT 100
#define SYNC_LIMIT_MAX 1000
#define SYNC_MAX_CONVS 100
#define SYNC_PAGE_BYTES (1u << 20) /* a page holds fewer messages than asked past this */
#define USERS_MAX 1000             /* users named in one request */
#define BEHIND_MAX 16              /* conversations a device may be behind in before it is closed */
#define TYPING_INTERVAL_MS 1000    /* typing: one event per user per conversation per second */
#define RECEIPT_SENDERS_MAX 64     /* senders one receipt is forwarded to */
#define PACKED_USER (1 + SB_USER_ID_MAX)
#define MAX_TOKENS SB_JSONOPS_MAX_TOKENS /* a request's JSON tokens */

/* Traffic classes (DESIGN.md §5): what happens to a push to a device whose queue is full. */
enum chat_class {
    CLASS_MESSAGE, /* never dropped: the device is told it is behind and pulls with sync */
    CLASS_RECEIPT, /* never dropped: queued regardless (small; a dead reader is closed by ping) */
    CLASS_TYPING,  /* dropped */
};

struct chat_user;

/* The conversations a device missed deliveries of while its queue was full. */
struct chat_behind {
    uint32_t n;
    struct {
        uint8_t len;
        char id[SB_CONV_ID_MAX + 1];
    } conv[BEHIND_MAX];
};

struct chat_device {
    struct chat_device *next;
    struct chat_user *user;
    struct sb_conn *conn;
    uint64_t conn_id;
    uint64_t since_ms; /* registration (monotonic): the oldest goes first */
    double msg_tokens; /* token buckets (messages, bytes), refilled at refill_ms */
    double byte_tokens;
    uint64_t refill_ms;
    struct chat_behind *behind; /* NULL while it is not behind anywhere */
    /* A REST request poses as a device for one request: answers go to an HTTP connection, and
     * the path may name the conversation. */
    bool http;
    const char *path_conv;
    char id[SB_DEVICE_ID_MAX + 1];
};

/* A conversation in a user's index (on the user's home worker). */
struct chat_uconv {
    uint8_t len;
    char id[SB_CONV_ID_MAX + 1];
};

/* A user on its home worker: devices online and the conversations it belongs to. */
struct chat_user {
    char id[SB_USER_ID_MAX + 1];
    size_t id_len;
    struct chat_device *devices;
    unsigned ndevices;
    unsigned ngroups;
    struct sb_table convs; /* of struct chat_uconv */
};

struct chat_member {
    char id[SB_USER_ID_MAX + 1];
    size_t id_len;
    uint32_t index; /* in chat_conv.mlist */
    unsigned home;  /* the member's home worker */
    bool admin;
    uint64_t read_seq, delivered_seq; /* receipts: up to and including */
    uint64_t typing_ms;               /* the last typing event forwarded */
};

/*
 * A message in history is its log record (struct sb_store_ent, rec = the record bytes): the
 * fields are read from the record, the `message` operation is encoded from it when needed.
 */
struct chat_conv {
    char id[SB_CONV_ID_MAX + 1];
    size_t id_len;
    bool group;
    uint64_t last_seq;
    uint64_t state_seq; /* replay: the seq the membership is at (group record or system message) */
    uint64_t created_ms;
    uint32_t snap_gen;  /* the compaction pass that last wrote it */
    size_t group_bytes; /* its group record's size, counted as live */
    char name[SB_GROUP_NAME_MAX + 1];
    size_t name_len;
    char owner[SB_USER_ID_MAX + 1];
    size_t owner_len;
    struct sb_table members; /* of struct chat_member */
    struct chat_member **mlist;
    uint32_t nmembers, mcap;
    struct sb_store_ent **hist;               /* ring of the newest messages, oldest at hist_head */
    uint32_t hist_head, hist_count, hist_cap; /* hist_cap grows up to history_max */
    struct sb_table dedup;                    /* record key (user, client id) -> message */
};

/* A conversation list being gathered from the sequencers for one device. */
struct chat_gather {
    struct chat_gather *next;
    uint64_t id, conn_id;
    unsigned from_worker; /* the requester's */
    bool http;
    uint8_t enc;
    uint32_t request_id;
    bool sync;         /* a sync since a cursor (else a conv_list) */
    uint64_t start_ms; /* sync: the cursor it answers with */
    unsigned parts;    /* answers still to come */
    size_t user_len, req_len;
    char user[SB_USER_ID_MAX + 1];
    char req[SB_CLIENT_ID_MAX + 1];
    struct chat_conv_item *items; /* conv_list: the items so far */
    size_t len, cap;
    bool failed;
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
    struct chat_gather *gathers;
    uint64_t next_gather;
    struct sb_json_tok *toks; /* MAX_TOKENS: the parse of the request being handled */
    /* Cluster mode: where users are (cl_cached), and the users whose registry entries this
     * worker wrote since the last flush (packed; cl_flush tells every node). */
    struct sb_table lcache;
    uint64_t lgen; /* counts invalidations: a lookup overtaken by one is not cached */
    char (*lnodes)[SB_NODE_ID_MAX + 1];
    unsigned nlnodes;
    char *inval;
    size_t inval_len, inval_cap;
    struct sb_worker_timer inval_timer;
    struct cl_pub *retry; /* publishes that failed, to send again (cl_retry_due) */
    size_t nretry;
    struct sb_worker_timer retry_timer;
    struct sb_table typing;   /* struct cl_typed_at */
    struct sb_table members;  /* struct cl_members: groups' members, by membership version */
    struct sb_table lpending; /* struct cl_prefetch: users being looked up ahead of a push */
    struct sb_table indexed;  /* struct cl_indexed: direct conversations in their users' index */
    size_t nmembers;          /* members held in it */
};

static struct sb_chat_config cfg;
static struct chat_shard *shards;

static const char *user_key(const void *obj, size_t *len)
{
    const struct chat_user *u = obj;
    *len = u->id_len;
    return u->id;
}

static const char *uconv_key(const void *obj, size_t *len)
{
    const struct chat_uconv *uc = obj;
    *len = uc->len;
    return uc->id;
}

static const char *conv_key(const void *obj, size_t *len)
{
    const struct chat_conv *cv = obj;
    *len = cv->id_len;
    return cv->id;
}

static const char *member_key(const void *obj, size_t *len)
{
    const struct chat_member *m = obj;
    *len = m->id_len;
    return m->id;
}

static const char *msg_key(const void *obj, size_t *len)
{
    const struct sb_store_ent *m = obj;
    return sb_store_rec_key(m->rec, len);
}

static void cl_start(struct sb_worker *w, void *arg);
static void cl_flush(struct sb_worker *w, struct sb_worker_timer *t);
static void cl_retry_due(struct sb_worker *w, struct sb_worker_timer *t);
static const char *cached_key(const void *obj, size_t *len);
static const char *typed_key(const void *obj, size_t *len);
static const char *members_key(const void *obj, size_t *len);
static const char *prefetch_key(const void *obj, size_t *len);
static const char *indexed_key(const void *obj, size_t *len);
static void cl_members_clear(struct chat_shard *sh);
static void cl_cache_clear(struct chat_shard *sh);
static void cl_retry_free(struct chat_shard *sh);

int sb_chat_init(const struct sb_chat_config *c)
{
    cfg = *c;
    if (!cfg.redis != !cfg.registry || cfg.workers > 2048)
        return -EINVAL;
    shards = calloc(cfg.workers, sizeof(*shards));
    if (!shards)
        return -ENOMEM;
    /* Message ids (and group ids) must be unique across nodes too: the generator bits are the
     * node's (drawn from its id, which changes at each start) times workers plus the worker.
     * Two nodes share them with probability workers/2048; ids then stay unique unless both
     * also take the same millisecond and sequence. */
    unsigned base = 0;
    if (cfg.registry) {
        const char *node = sb_registry_node_id(cfg.registry);
        base = sb_home_worker(node, strlen(node), 2048 / cfg.workers) * cfg.workers;
        if (sb_engine_on_start(cfg.engine, cl_start, NULL) < 0)
            return -EINVAL;
    }
    for (unsigned i = 0; i < cfg.workers; i++) {
        sb_table_init(&shards[i].users, user_key);
        sb_table_init(&shards[i].convs, conv_key);
        sb_msgid_init(&shards[i].ids, base + i);
        sb_table_init(&shards[i].lcache, cached_key);
        sb_table_init(&shards[i].typing, typed_key);
        sb_table_init(&shards[i].members, members_key);
        sb_table_init(&shards[i].lpending, prefetch_key);
        sb_table_init(&shards[i].indexed, indexed_key);
        shards[i].inval_timer.cb = cl_flush;
        shards[i].retry_timer.cb = cl_retry_due;
        if (cfg.redis &&
            !(shards[i].lnodes = calloc(SB_REGISTRY_MAX_NODES, sizeof(*shards[i].lnodes))))
            return -ENOMEM;
        shards[i].log = sb_store_log(cfg.store, i);
        shards[i].toks = malloc(MAX_TOKENS * sizeof(struct sb_json_tok));
        if (!shards[i].toks)
            return -ENOMEM;
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
    for (uint32_t i = 0; i < cv->nmembers; i++)
        free(cv->mlist[i]);
    free(cv->mlist);
    sb_table_destroy(&cv->members);
    sb_table_destroy(&cv->dedup);
    free(cv);
}

static void user_free(struct chat_user *u)
{
    for (size_t i = 0; i < u->convs.cap; i++)
        free(u->convs.slots[i].obj);
    sb_table_destroy(&u->convs);
    free(u);
}

void sb_chat_free(void)
{
    for (unsigned i = 0; shards && i < cfg.workers; i++) {
        struct chat_shard *sh = &shards[i];
        for (size_t k = 0; k < sh->nall; k++)
            conv_free(sh->all[k]);
        free(sh->all);
        sb_table_destroy(&sh->convs);
        /* Devices are gone once the engine has stopped; users remain for their index. */
        for (size_t k = 0; k < sh->users.cap; k++) {
            if (sh->users.slots[k].obj)
                user_free(sh->users.slots[k].obj);
        }
        sb_table_destroy(&sh->users);
        cl_cache_clear(sh);
        sb_table_destroy(&sh->lcache);
        cl_retry_free(sh);
        cl_members_clear(sh);
        sb_table_destroy(&sh->members);
        for (size_t k = 0; k < sh->lpending.cap; k++)
            free(sh->lpending.slots[k].obj);
        sb_table_destroy(&sh->lpending);
        for (size_t k = 0; k < sh->indexed.cap; k++)
            free(sh->indexed.slots[k].obj);
        sb_table_destroy(&sh->indexed);
        for (size_t k = 0; k < sh->typing.cap; k++)
            free(sh->typing.slots[k].obj);
        sb_table_destroy(&sh->typing);
        free(sh->lnodes);
        free(sh->inval);
        while (sh->gathers) {
            struct chat_gather *g = sh->gathers;
            sh->gathers = g->next;
            free(g->items);
            free(g);
        }
        free(sh->toks);
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

/* Packed user lists (requests, envelopes): a length byte, then the id; repeated. */
static size_t pack_user(char *p, const char *id, size_t len)
{
    p[0] = (char)len;
    memcpy(p + 1, id, len);
    return len + 1;
}

static const char *unpack_user(const char *p, size_t *len)
{
    *len = (uint8_t)p[0];
    return p + 1;
}

/* ---- output: operations encoded as each connection needs ---------------------------------- */

/* The bytes op needs in encoding enc (0 when it cannot be encoded). */
static size_t op_bound(uint8_t enc, const struct sb_op *op)
{
    if (enc == SB_ENC_JSON)
        return sb_jsonops_bound(op);
    ssize_t n = sb_binproto_size(op);
    return n > 0 ? (size_t)n : 0;
}

static ssize_t op_encode(uint8_t enc, const struct sb_op *op, char *buf, size_t cap)
{
    return enc == SB_ENC_JSON ? sb_jsonops_encode(op, buf, cap)
                              : sb_binproto_encode(op, (uint8_t *)buf, cap);
}

/* The ids an answer carries: the request's JSON "id" or binary request id. */
struct chat_rid {
    uint32_t request_id;
    const char *json_id; /* NULL or NUL-terminated */
};

static void set_rid(struct sb_op *op, struct chat_rid rid)
{
    op->request_id = rid.request_id;
    op->json_id = sb_slice_from(rid.json_id, rid.json_id ? strlen(rid.json_id) : 0);
}

/* Sends an error answering the request rid (json_id NULL and request_id 0: none) on c. */
static void send_error(struct sb_conn *c, struct chat_rid rid, enum sb_op_err code,
                       const char *message)
{
    struct sb_op op = {.type = SB_OP_ERROR};
    set_rid(&op, rid);
    op.u.error.code = (uint16_t)code;
    op.u.error.message = sb_slice_from(message, strlen(message));
    sb__session_send_op(c, &op);
}

static const uint8_t store_form_to_op[] = {
    [SB_STORE_BODY_JSON] = SB_OP_BODY_JSON,
    [SB_STORE_BODY_BYTES] = SB_OP_BODY_BYTES,
    [SB_STORE_BODY_BASE64] = SB_OP_BODY_BASE64,
};

/* The `message` operation of a stored message (pointing into the record). */
static void message_op(const struct sb_store_rec *r, struct sb_op_message *m)
{
    *m = (struct sb_op_message){
        .msg_id = r->msg_id,
        .seq = r->seq,
        .ts_ms = r->ts_ms,
        .system = r->system,
        .conv = sb_slice_from(r->conv, r->conv_len),
        .from = sb_slice_from(r->user, r->user_len),
        .device = sb_slice_from(r->device, r->device_len),
    };
    /* A system message's body is its subject: a user id or a name. */
    if (r->system) {
        m->subject = sb_slice_from(r->body, r->body_len);
        m->body.form = SB_OP_BODY_BYTES;
    } else {
        m->body.form = store_form_to_op[r->body_form];
        m->body.data = sb_slice_from(r->body, r->body_len);
    }
}

/* Lists over server memory: an array of items of one type, iterated in place. */
struct chat_array {
    const void *items;
    size_t item_size;
};

static int array_next(struct sb_ops_list_iter *it, void *item)
{
    const struct chat_array *a = (const void *)it->list->raw.base;
    if (it->index >= it->list->count)
        return 0;
    memcpy(item, (const char *)a->items + it->index * a->item_size, a->item_size);
    it->index++;
    return 1;
}

static struct sb_ops_list array_list(const struct chat_array *a, uint32_t count)
{
    return (struct sb_ops_list){
        .count = count, .raw = sb_slice_from((const char *)a, sizeof(*a)), .next = array_next};
}

/* ---- the directory: users and devices on their home worker --------------------------------- */

/* The user homed on this shard, created when `create`. NULL when absent or without memory. */
static struct chat_user *user_get(struct chat_shard *sh, const char *id, size_t len, bool create)
{
    struct chat_user *u = sb_table_get(&sh->users, id, len);
    if (u || !create)
        return u;
    u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    memcpy(u->id, id, len);
    u->id_len = len;
    sb_table_init(&u->convs, uconv_key);
    if (sb_table_add(&sh->users, u) < 0) {
        free(u);
        return NULL;
    }
    return u;
}

void sb_chat_each_user(struct sb_worker *w, void (*fn)(void *arg, const char *user, size_t len),
                       void *arg)
{
    const struct sb_table *t = &my_shard(w)->users;
    for (size_t i = 0; i < t->cap; i++) {
        const struct chat_user *u = t->slots[i].obj;
        if (t->slots[i].hash && u->ndevices)
            fn(arg, u->id, u->id_len);
    }
}

unsigned sb_chat_devices(struct sb_worker *w, const char *user, size_t len, char *ids, size_t cap)
{
    const struct chat_user *u = sb_table_get(&my_shard(w)->users, user, len);
    size_t at = 0;
    for (const struct chat_device *d = u ? u->devices : NULL; d; d = d->next) {
        size_t n = strlen(d->id);
        if (at + (at ? 1 : 0) + n + 1 > cap)
            break;
        if (at)
            ids[at++] = ' ';
        memcpy(ids + at, d->id, n);
        at += n;
    }
    if (cap)
        ids[at] = '\0';
    return u ? u->ndevices : 0;
}

/* A user with no device and no conversation takes no memory. */
static void user_release(struct chat_shard *sh, struct chat_user *u)
{
    if (u->ndevices == 0 && u->convs.count == 0) {
        sb_table_remove(&sh->users, u->id, u->id_len);
        user_free(u);
    }
}

static bool is_group_id(const char *id, size_t len)
{
    return len > 2 && id[0] == 'g' && id[1] == ':';
}

/* Adds or removes a conversation in a user's index. Returns 0 or -ENOMEM. */
static int index_set(struct chat_user *u, const char *conv, size_t len, bool member)
{
    struct chat_uconv *uc = sb_table_get(&u->convs, conv, len);
    if (member && !uc) {
        uc = malloc(sizeof(*uc));
        if (!uc)
            return -ENOMEM;
        uc->len = (uint8_t)len;
        memcpy(uc->id, conv, len);
        if (sb_table_add(&u->convs, uc) < 0) {
            free(uc);
            return -ENOMEM;
        }
        u->ngroups += is_group_id(conv, len);
    } else if (!member && uc) {
        sb_table_remove(&u->convs, conv, len);
        free(uc);
        u->ngroups -= is_group_id(conv, len);
    }
    return 0;
}

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

/* {"type":"goaway","reason":...} then a close: the device was replaced by a newer one. */
static void device_replace(struct chat_device *d)
{
    static const char why[] = "replaced by a newer device";
    struct sb_op op = {.type = SB_OP_GOAWAY};
    op.u.goaway.reason = sb_slice_from(why, sizeof(why) - 1);
    sb__session_send_op(d->conn, &op);
    sb__session_close(d->conn, SB_WS_CLOSE_POLICY, why);
}

/* Refuses a device past max_devices: an error, then a close. */
static void device_refuse(struct sb_conn *c, uint32_t hello_id)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "too many devices online (max %u)", cfg.max_devices);
    send_error(c, (struct chat_rid){.request_id = hello_id}, SB_OP_ERR_CONFLICT, msg);
    sb__session_close(c, SB_WS_CLOSE_POLICY, "too many devices");
}

void sb_chat_login_free(struct sb_chat_login *login)
{
    if (login)
        free(login->hello);
    free(login);
}

static void resume(struct sb_conn *c, struct chat_device *d, const struct sb_chat_login *login);

int sb_chat_register(struct sb_conn *c, struct sb_chat_login *login)
{
    struct chat_shard *sh = my_shard(sb_conn_worker(c));
    struct sb_session *s = sb_conn_app(c);
    size_t ulen = strlen(login->user);
    struct chat_user *u = user_get(sh, login->user, ulen, true);
    if (!u) {
        sb_chat_login_free(login);
        return -ENOMEM;
    }
    if (cfg.max_devices && u->ndevices >= cfg.max_devices) {
        if (cfg.device_policy == SB_DEVICES_REFUSE) {
            sb_log(SB_LOG_INFO, 0, "c%llx: %s refused: %u devices online",
                   (unsigned long long)sb_conn_id(c), login->user, u->ndevices);
            uint32_t hello_id = login->hello_id;
            sb_chat_login_free(login);
            s->chat = NULL;
            device_refuse(c, hello_id);
            return 0;
        }
        /* The oldest device that is not already closing makes room. */
        struct chat_device *old = NULL;
        for (struct chat_device *d = u->devices; d; d = d->next) {
            if (!sb_conn_is_closing(d->conn))
                old = d; /* devices are prepended: the last one is the oldest */
        }
        if (old) {
            sb_log(SB_LOG_INFO, 0, "c%llx: %s/%s replaced by a newer device",
                   (unsigned long long)old->conn_id, u->id, old->id);
            device_replace(old);
        }
    }
    struct chat_device *d = calloc(1, sizeof(*d));
    if (!d) {
        sb_chat_login_free(login);
        user_release(sh, u);
        return -ENOMEM;
    }
    d->user = u;
    d->conn = c;
    d->conn_id = sb_conn_id(c);
    d->since_ms = sb_worker_now_ms(sb_conn_worker(c));
    d->refill_ms = d->since_ms;
    d->msg_tokens = 2.0 * cfg.rate_messages;
    d->byte_tokens = 2.0 * (double)cfg.rate_bytes;
    memcpy(d->id, login->device, sizeof(d->id));
    d->next = u->devices;
    u->devices = d;
    u->ndevices++;
    s->chat = d;
    s->chat_registered = true;
    sb_registry_user(sb_conn_worker(c), sb__gw.registry, u->id, u->id_len);

    struct sb_op op = {.type = SB_OP_WELCOME, .request_id = login->hello_id};
    op.u.welcome = (struct sb_op_welcome){
        .session = d->conn_id,
        .server_time_ms = wall_ms(),
        .max_frame = (uint32_t)cfg.max_message_size,
        .max_body = cfg.max_body,
        .ping_interval_ms = (uint32_t)sb__gw.ping_interval_ms,
        .messages_per_s = cfg.rate_messages,
        .bytes_per_s = (uint32_t)cfg.rate_bytes,
        .max_group_members = cfg.max_group_members,
        .user = sb_slice_from(u->id, u->id_len),
        .device = sb_slice_from(d->id, strlen(d->id)),
    };
    sb__session_send_op(c, &op);
    resume(c, d, login);
    sb_chat_login_free(login);
    sb_log(SB_LOG_DEBUG, 0, "c%llx: %s/%s online (%u devices)", (unsigned long long)d->conn_id,
           u->id, d->id, u->ndevices);
    sb_presence_device_up(c, u->id, u->id_len);
    return 0;
}

void sb_chat_unregister(struct sb_conn *c)
{
    struct sb_session *s = sb_conn_app(c);
    if (!s->chat_registered) {
        sb_chat_login_free(s->chat); /* a login that never got registered, or NULL */
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
    sb_registry_user(sb_conn_worker(c), sb__gw.registry, u->id, u->id_len);
    free(d->behind);
    free(d);
    s->chat = NULL;
    s->chat_registered = false;
    user_release(my_shard(sb_conn_worker(c)), u);
}

/* ---- mail between workers ------------------------------------------------------------------ */

enum chat_req_kind {
    REQ_SEND,
    REQ_TYPING,
    REQ_RECEIPT,
    REQ_CREATE,
    REQ_ADD,
    REQ_REMOVE,
    REQ_LEAVE,
    REQ_RENAME,
    REQ_PROMOTE,
    REQ_DEMOTE,
    REQ_GET,
    REQ_LIST,       /* a part of conv_list (list_serve): `users` holds conversation ids, `seq` the
                       gather id */
    REQ_LIST_BEGIN, /* conv_list, on the user's home worker (home_serve) */
    REQ_SYNC_SINCE, /* sync since a cursor (seq: the cursor's ms), on the home worker */
    REQ_DEVICES,    /* the user's devices, on its home worker (home_serve) */
};

/*
 * A request on its way to a conversation's sequencer. Strings are NUL-terminated inside data.
 * `text` is a send's body (in the form body_form) or a group's name; `users` is a packed list.
 * client_id is the JSON request id (a send's also in binary), request_id the binary one.
 */
struct chat_req {
    uint8_t kind; /* enum chat_req_kind */
    uint8_t receipt_kind;
    uint8_t enc;       /* the requester's encoding: the answer's */
    uint8_t body_form; /* enum sb_store_body_form */
    uint32_t request_id;
    bool http; /* conn_id is an HTTP connection waiting for the answer */
    unsigned from_worker;
    uint64_t conn_id; /* the requesting device; 0: the server itself */
    uint64_t seq;
    uint64_t since_ms; /* REQ_LIST of a sync: messages sequenced since */
    uint32_t limit;    /* ... at most this many per conversation */
    uint32_t nusers;
    const char *user, *device, *client_id, *conv, *text, *users;
    size_t user_len, device_len, client_id_len, conv_len, text_len, users_len;
    struct cl_members *members; /* cluster: the group's members this send relies on, if any */
    char data[];
};

/* A sync of one conversation on its way to the sequencer. */
struct chat_sync {
    unsigned from_worker;
    uint64_t conn_id;
    bool http;
    uint8_t enc;
    uint32_t request_id;
    uint64_t last_seq;
    uint32_t limit;
    size_t user_len, id_len, conv_len;
    char user[SB_USER_ID_MAX + 1];
    char id[SB_CLIENT_ID_MAX + 1];
    char conv[SB_CONV_ID_MAX + 1];
};

/* An encoded answer for one device (an ack, an error, a sync page), to the device's worker. */
struct chat_reply {
    uint64_t conn_id;
    bool http;
    size_t user_len, len;
    char user[SB_USER_ID_MAX + 1];
    char data[];
};

/*
 * One push (message, receipt, typing) for the devices of some users homed on one worker, in
 * both encodings (each encoded once at the source).
 */
struct chat_envelope {
    uint8_t cls;           /* enum chat_class */
    uint64_t skip_conn_id; /* the device that caused it: it gets an answer instead */
    uint64_t seq;          /* messages: the message's seq (for `behind`) */
    size_t conv_len, json_len, bin_len, users_len;
    char conv[SB_CONV_ID_MAX + 1];
    char data[]; /* json, then the binary frame, then the packed users */
};

/* A change of membership for users homed on one worker: their conversation index follows. */
struct chat_note {
    bool join;
    size_t conv_len, users_len;
    char conv[SB_CONV_ID_MAX + 1];
    char users[];
};

/* A conversation list item, with its strings in place. */
struct chat_conv_item {
    uint64_t last_seq, read_seq;
    uint32_t member_count;
    uint8_t conv_len, name_len, owner_len;
    char conv[SB_CONV_ID_MAX];
    char name[SB_GROUP_NAME_MAX];
    char owner[SB_USER_ID_MAX];
};

/* A part of a conversation list (items) or of a sync since a cursor (pages, each a 4-byte
 * length and the encoded page), back to the gathering worker. */
struct chat_list_part {
    uint64_t gather;
    size_t len; /* bytes of data */
    char data[];
};

static void reply_arrive(struct sb_worker *w, void *arg)
{
    struct chat_reply *r = arg;
    /* The device (or HTTP client) may have gone meanwhile; then there is nobody to tell. */
    if (r->http) {
        sb__rest_answer(w, r->conn_id, r->data, r->len);
    } else {
        struct chat_device *d = find_device(w, r->user, r->user_len, r->conn_id);
        if (d)
            sb__session_send(d->conn, r->data, r->len);
    }
    free(r);
}

/* A reply with room for cap bytes, for the device conn_id of user. */
static struct chat_reply *reply_new(uint64_t conn_id, bool http, const char *user, size_t user_len,
                                    size_t cap)
{
    struct chat_reply *r = malloc(sizeof(*r) + cap);
    if (!r)
        return NULL;
    r->conn_id = conn_id;
    r->http = http;
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

/* Who waits for an answer, and how it is encoded. */
struct chat_to {
    unsigned worker;
    uint64_t conn_id; /* 0: the server's own request: nobody waits */
    bool http;
    uint8_t enc;
    struct chat_rid rid;
    const char *user;
    size_t user_len;
};

static struct chat_to to_req(const struct chat_req *q)
{
    return (struct chat_to){q->from_worker,
                            q->conn_id,
                            q->http,
                            q->enc,
                            {q->request_id, q->client_id_len ? q->client_id : NULL},
                            q->user,
                            q->user_len};
}

static struct chat_to to_sync(const struct chat_sync *q)
{
    return (struct chat_to){
        q->from_worker, q->conn_id, q->http, q->enc, {q->request_id, q->id_len ? q->id : NULL},
        q->user,        q->user_len};
}

/* op encoded for `to` in a new reply (NULL without memory, or when op cannot be encoded). */
static struct chat_reply *reply_op(const struct chat_to *to, struct sb_op *op)
{
    set_rid(op, to->rid);
    size_t cap = op_bound(to->enc, op);
    struct chat_reply *r =
        cap ? reply_new(to->conn_id, to->http, to->user, to->user_len, cap) : NULL;
    ssize_t n = r ? op_encode(to->enc, op, r->data, cap) : -ENOMEM;
    if (n < 0) {
        free(r);
        return NULL;
    }
    r->len = (size_t)n;
    return r;
}

static void answer_error(struct sb_worker *w, const struct chat_to *to, enum sb_op_err code,
                         const char *message, const char *conv, size_t conv_len);

/* Answers op to `to` (with after_durable, once what was appended is durable). */
static void answer(struct sb_worker *w, const struct chat_to *to, struct sb_op *op,
                   bool after_durable)
{
    if (!to->conn_id)
        return;
    struct chat_reply *r = reply_op(to, op);
    if (r)
        reply_post(w, to->worker, r, after_durable);
    else if (op->type != SB_OP_ERROR)
        answer_error(w, to, SB_OP_ERR_UNAVAILABLE, "out of memory; retry", NULL, 0);
    else
        sb_log(SB_LOG_WARN, -ENOMEM, "reply for c%llx dropped", (unsigned long long)to->conn_id);
}

static void answer_error(struct sb_worker *w, const struct chat_to *to, enum sb_op_err code,
                         const char *message, const char *conv, size_t conv_len)
{
    struct sb_op op = {.type = SB_OP_ERROR};
    op.u.error.code = (uint16_t)code;
    op.u.error.message = sb_slice_from(message, strlen(message));
    op.u.error.conv = sb_slice_from(conv, conv_len);
    answer(w, to, &op, false);
}

/* Answers a request with an error (on the requester's worker). */
static void req_error(struct sb_worker *w, const struct chat_req *r, enum sb_op_err code,
                      const char *message)
{
    struct chat_to to = to_req(r);
    answer_error(w, &to, code, message, r->conv, r->conv_len);
}

/* Is the device behind in this conversation? With `clear`, it no longer is (it synced). */
static bool behind_in(struct chat_device *d, const char *conv, size_t len, bool clear)
{
    struct chat_behind *b = d->behind;
    for (uint32_t i = 0; b && i < b->n; i++) {
        if (b->conv[i].len == len && memcmp(b->conv[i].id, conv, len) == 0) {
            if (clear) {
                b->conv[i] = b->conv[--b->n];
                if (b->n == 0) {
                    free(b);
                    d->behind = NULL;
                }
            }
            return true;
        }
    }
    return false;
}

/*
 * The device's queue is full: it stops getting this conversation's messages and is told once,
 * with the last seq it was sent. Past BEHIND_MAX conversations it is closed (1008): nothing is
 * lost, everything is in history for its next sync.
 */
static void mark_behind(struct sb_worker *w, struct chat_device *d, const struct chat_envelope *env)
{
    struct chat_behind *b = d->behind;
    if (!b) {
        b = d->behind = calloc(1, sizeof(*b));
        if (!b) {
            sb_conn_close(d->conn, -ENOMEM);
            return;
        }
    }
    if (b->n == BEHIND_MAX) {
        sb_log(SB_LOG_INFO, 0, "c%llx: %s/%s closed: behind in %u conversations",
               (unsigned long long)d->conn_id, d->user->id, d->id, BEHIND_MAX);
        sb__session_close(d->conn, SB_WS_CLOSE_POLICY, "too far behind; reconnect and sync");
        return;
    }
    b->conv[b->n].len = (uint8_t)env->conv_len;
    memcpy(b->conv[b->n].id, env->conv, env->conv_len);
    b->n++;
    sb_metric_add(w, SB_M_BEHIND, 1);
    struct sb_op op = {.type = SB_OP_BEHIND};
    op.u.behind.seq = env->seq - 1;
    op.u.behind.conv = sb_slice_from(env->conv, env->conv_len);
    sb__session_send_op(d->conn, &op);
}

static void envelope_arrive(struct sb_worker *w, void *arg)
{
    struct chat_envelope *env = arg;
    struct chat_shard *sh = my_shard(w);
    /* One chunk per framing for every local device of every listed user: queued by
     * reference. */
    struct sb_chunk *chunks[SB_FRAMINGS] = {NULL};
    uint64_t sent = 0, dropped = 0;
    const char *p = env->data + env->json_len + env->bin_len, *end = p + env->users_len;
    while (p < end) {
        size_t ulen;
        const char *uid = unpack_user(p, &ulen);
        p = uid + ulen;
        struct chat_user *u = sb_table_get(&sh->users, uid, ulen);
        /* The webhook skips the sender. In cluster mode a user may be on another node: the
         * sender's node asks the registry instead (cl_looked_up). */
        if ((!u || !u->ndevices) && env->cls == CLASS_MESSAGE && !cfg.redis)
            sb_webhook_offline(w, uid, ulen, env->data, env->json_len);
        for (struct chat_device *d = u ? u->devices : NULL; d; d = d->next) {
            if (d->conn_id == env->skip_conn_id || sb_conn_is_closing(d->conn))
                continue;
            bool full = sb_conn_out_bytes(d->conn) > cfg.slow_queue_bytes;
            if (env->cls == CLASS_TYPING && full) {
                dropped++;
                continue;
            }
            if (env->cls == CLASS_MESSAGE) {
                if (behind_in(d, env->conv, env->conv_len, false))
                    continue;
                if (full) {
                    mark_behind(w, d, env);
                    continue;
                }
            }
            enum sb_framing f = sb__session_framing(d->conn);
            bool json = f == SB_FRAME_WS_TEXT;
            if ((json ? env->json_len : env->bin_len) == 0)
                continue; /* not encodable for it (logged by fan_init) */
            if (!chunks[f] &&
                !(chunks[f] = sb__session_chunk_of(w, json ? env->data : env->data + env->json_len,
                                                   json ? env->json_len : env->bin_len, f))) {
                sb_conn_close(d->conn, -ENOMEM);
                continue;
            }
            if (sb_conn_send_chunk(d->conn, chunks[f]) < 0)
                sb_conn_close(d->conn, -ENOMEM);
            else
                sent++;
        }
    }
    for (int f = 0; f < SB_FRAMINGS; f++) {
        if (chunks[f])
            sb_chunk_unref(w, chunks[f]);
    }
    sb_metric_add(w,
                  env->cls == CLASS_MESSAGE   ? SB_M_DELIVERIES
                  : env->cls == CLASS_RECEIPT ? SB_M_RECEIPTS_OUT
                                              : SB_M_TYPING_OUT,
                  sent);
    if (dropped)
        sb_metric_add(w, SB_M_TYPING_DROPPED, dropped);
    free(env);
}

/*
 * A fan-out: one push for a set of users, grouped by their home workers into one envelope per
 * worker. Build with fan_init (which encodes op once per encoding) and fan_add, send with
 * fan_post; fan_free frees it.
 */
struct chat_fan {
    char *enc; /* the JSON text, then the binary frame */
    size_t json_len, bin_len;
    struct {
        char *users;
        size_t len, cap;
    } * to; /* per worker */
};

static void fan_free(struct chat_fan *f)
{
    for (unsigned k = 0; f->to && k < cfg.workers; k++)
        free(f->to[k].users);
    free(f->to);
    free(f->enc);
    f->to = NULL;
    f->enc = NULL;
}

/*
 * op is NULL for a fan-out of notes (no push). An encoding op cannot be written in (a bug,
 * logged) is left empty and its readers get nothing. Returns 0, -ENOMEM or -EINVAL.
 */
static int fan_init(struct chat_fan *f, const struct sb_op *op)
{
    *f = (struct chat_fan){0};
    if (op) {
        size_t jcap = op_bound(SB_ENC_JSON, op), bcap = op_bound(SB_ENC_BINARY, op);
        if (!(f->enc = malloc(jcap + bcap + 1)))
            return -ENOMEM;
        ssize_t j = jcap ? op_encode(SB_ENC_JSON, op, f->enc, jcap) : -EINVAL;
        ssize_t b = bcap ? op_encode(SB_ENC_BINARY, op, f->enc + (j > 0 ? j : 0), bcap) : -EINVAL;
        if (j < 0 || b < 0)
            sb_log(SB_LOG_ERROR, (int)(j < 0 ? j : b), "%s not encoded in %s",
                   sb_ops_type_name(op->type), j < 0 ? "JSON" : "binary");
        if (j < 0 && b < 0) {
            fan_free(f);
            return -EINVAL;
        }
        f->json_len = j > 0 ? (size_t)j : 0;
        f->bin_len = b > 0 ? (size_t)b : 0;
    }
    f->to = calloc(cfg.workers, sizeof(*f->to));
    if (!f->to) {
        fan_free(f);
        return -ENOMEM;
    }
    return 0;
}

static void fan_add(struct chat_fan *f, const char *user, size_t len, unsigned home)
{
    if (!f->to)
        return;
    if (f->to[home].cap - f->to[home].len < PACKED_USER) {
        size_t cap = f->to[home].cap ? f->to[home].cap * 2 : 16 * PACKED_USER;
        char *users = realloc(f->to[home].users, cap);
        if (!users)
            return; /* this user misses a push; it is in history for sync */
        f->to[home].users = users;
        f->to[home].cap = cap;
    }
    f->to[home].len += pack_user(f->to[home].users + f->to[home].len, user, len);
}

/* Mails every envelope (after what was appended is durable, for messages) and frees f. */
static void fan_post(struct sb_worker *w, struct chat_fan *f, enum chat_class cls, const char *conv,
                     size_t conv_len, uint64_t seq, uint64_t skip_conn_id)
{
    for (unsigned k = 0; f->to && k < cfg.workers; k++) {
        if (!f->to[k].len)
            continue;
        size_t enc_len = f->json_len + f->bin_len;
        struct chat_envelope *env = malloc(sizeof(*env) + enc_len + f->to[k].len);
        if (env) {
            env->cls = (uint8_t)cls;
            env->skip_conn_id = skip_conn_id;
            env->seq = seq;
            env->conv_len = conv_len;
            memcpy(env->conv, conv, conv_len);
            env->json_len = f->json_len;
            env->bin_len = f->bin_len;
            env->users_len = f->to[k].len;
            memcpy(env->data, f->enc, enc_len);
            memcpy(env->data + enc_len, f->to[k].users, f->to[k].len);
            int e = cls == CLASS_MESSAGE
                        ? sb_store_post_after(my_shard(w)->log, w, k, envelope_arrive, env)
                        : sb_worker_post(w, k, envelope_arrive, env);
            if (e < 0)
                free(env);
        }
    }
    fan_free(f);
}

static void note_arrive(struct sb_worker *w, void *arg);

/* Mails the users' home workers that they joined or left cv (their conversation index). */
static void note_post(struct sb_worker *w, const struct chat_conv *cv, bool join,
                      struct chat_member *const *ms, uint32_t n)
{
    struct chat_fan f;
    if (fan_init(&f, NULL) < 0)
        return;
    for (uint32_t i = 0; i < n; i++)
        fan_add(&f, ms[i]->id, ms[i]->id_len, ms[i]->home);
    for (unsigned k = 0; k < cfg.workers; k++) {
        if (!f.to[k].len)
            continue;
        struct chat_note *nt = malloc(sizeof(*nt) + f.to[k].len);
        if (nt) {
            nt->join = join;
            nt->conv_len = cv->id_len;
            memcpy(nt->conv, cv->id, cv->id_len);
            nt->users_len = f.to[k].len;
            memcpy(nt->users, f.to[k].users, f.to[k].len);
            if (sb_worker_post(w, k, note_arrive, nt) < 0)
                free(nt);
        }
    }
    fan_free(&f);
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

static struct chat_member *member_get(const struct chat_conv *cv, const char *user, size_t len)
{
    return sb_table_get(&cv->members, user, len);
}

static struct chat_member *member_add(struct chat_conv *cv, const char *user, size_t len)
{
    if (cv->nmembers == cv->mcap) {
        uint32_t cap = cv->mcap ? cv->mcap * 2 : 2;
        struct chat_member **ml = realloc(cv->mlist, cap * sizeof(*ml));
        if (!ml)
            return NULL;
        cv->mlist = ml;
        cv->mcap = cap;
    }
    struct chat_member *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    memcpy(m->id, user, len);
    m->id_len = len;
    m->home = sb_home_worker(user, len, cfg.workers);
    m->index = cv->nmembers;
    if (sb_table_add(&cv->members, m) < 0) {
        free(m);
        return NULL;
    }
    cv->mlist[cv->nmembers++] = m;
    return m;
}

static void member_remove(struct chat_conv *cv, struct chat_member *m)
{
    sb_table_remove(&cv->members, m->id, m->id_len);
    struct chat_member *last = cv->mlist[--cv->nmembers];
    cv->mlist[m->index] = last;
    last->index = m->index;
    free(m);
}

/* Bytes of a group's record, and its body (name, members and roles; see store.h). */
static size_t group_body_size(const struct chat_conv *cv)
{
    size_t n = 1 + cv->name_len + 4;
    for (uint32_t i = 0; i < cv->nmembers; i++)
        n += 2 + cv->mlist[i]->id_len;
    return n;
}

/* Encodes cv's group record into a new entry (NULL without memory). */
static struct sb_store_ent *group_record(const struct chat_conv *cv)
{
    size_t blen = group_body_size(cv);
    char *body = malloc(blen);
    if (!body)
        return NULL;
    char *p = body;
    *p++ = (char)cv->name_len;
    memcpy(p, cv->name, cv->name_len);
    p += cv->name_len;
    uint32_t n = cv->nmembers;
    for (int i = 0; i < 4; i++)
        *p++ = (char)(n >> (8 * i));
    for (uint32_t i = 0; i < n; i++) {
        const struct chat_member *m = cv->mlist[i];
        p += pack_user(p, m->id, m->id_len);
        *p++ = (char)(m->admin ? 1 : 0);
    }
    struct sb_store_rec r = {.type = SB_STORE_GROUP,
                             .seq = cv->last_seq,
                             .ts_ms = cv->created_ms,
                             .conv = cv->id,
                             .conv_len = cv->id_len,
                             .user = cv->owner,
                             .user_len = cv->owner_len,
                             .body = body,
                             .body_len = blen};
    size_t len = sb_store_rec_size(&r);
    struct sb_store_ent *e = malloc(sizeof(*e) + len);
    if (e) {
        e->next = NULL;
        e->flags = 0;
        e->len = (uint32_t)len;
        if (sb_store_encode(&r, e->rec, len) < 0) {
            free(e);
            e = NULL;
        }
    }
    free(body);
    return e;
}

/* Applies a group record's body to cv (replacing name and members). Returns 0 or -errno. */
static int group_apply(struct chat_conv *cv, const struct sb_store_rec *r)
{
    const uint8_t *p = (const uint8_t *)r->body, *end = p + r->body_len;
    size_t nlen = *p++;
    if (nlen > SB_GROUP_NAME_MAX || (size_t)(end - p) < nlen + 4)
        return -EBADMSG;
    memcpy(cv->name, p, nlen);
    cv->name_len = nlen;
    p += nlen;
    uint32_t n = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    p += 4;
    while (cv->nmembers)
        member_remove(cv, cv->mlist[cv->nmembers - 1]);
    memcpy(cv->owner, r->user, r->user_len);
    cv->owner_len = r->user_len;
    cv->created_ms = r->ts_ms;
    for (uint32_t i = 0; i < n; i++) {
        if (end - p < 2 || (size_t)(end - p) < (size_t)p[0] + 2 ||
            !sb_user_id_valid((const char *)p + 1, p[0]))
            return -EBADMSG;
        struct chat_member *m = member_get(cv, (const char *)p + 1, p[0]);
        if (!m && !(m = member_add(cv, (const char *)p + 1, p[0])))
            return -ENOMEM;
        m->admin = p[1 + p[0]] & 1;
        p += 2 + p[0];
    }
    return p == end ? 0 : -EBADMSG;
}

/* Bytes of a conversation's state record in the log. */
static size_t state_size(const struct chat_conv *cv)
{
    struct sb_store_rec s = {.type = SB_STORE_STATE, .conv_len = cv->id_len};
    return sb_store_rec_size(&s);
}

/* Appends a conversation's group record (after a change of roles or owner). */
static void group_log(struct sb_worker *w, struct chat_shard *sh, struct chat_conv *cv)
{
    struct sb_store_ent *e = group_record(cv);
    if (!e) {
        sb_log(SB_LOG_WARN, -ENOMEM, "%s: group record not logged", cv->id);
        return;
    }
    sb_store_account(sh->log, (int64_t)e->len - (int64_t)cv->group_bytes);
    cv->group_bytes = e->len;
    sb_store_append(sh->log, w, e, cv->snap_gen);
    sb_store_ent_free(e);
}

/* A new conversation on its home shard (a direct one gets its two members). NULL: no memory. */
static struct chat_conv *conv_new(struct chat_shard *sh, const char *id, size_t len, bool group)
{
    if (sh->nall == sh->cap_all) {
        size_t cap = sh->cap_all ? sh->cap_all * 2 : 64;
        struct chat_conv **all = realloc(sh->all, cap * sizeof(struct chat_conv *));
        if (!all)
            return NULL;
        sh->all = all;
        sh->cap_all = cap;
    }
    struct chat_conv *cv = calloc(1, sizeof(*cv));
    if (!cv)
        return NULL;
    memcpy(cv->id, id, len);
    cv->id_len = len;
    cv->group = group;
    cv->snap_gen = sb_store_snapshot_gen(sh->log);
    sb_table_init(&cv->dedup, msg_key);
    sb_table_init(&cv->members, member_key);
    char a[SB_USER_ID_MAX + 1], b[SB_USER_ID_MAX + 1];
    if ((!group && (!dm_members(id, len, a, b) || !member_add(cv, a, strlen(a)) ||
                    !member_add(cv, b, strlen(b)))) ||
        sb_table_add(&sh->convs, cv) < 0) {
        conv_free(cv);
        return NULL;
    }
    sh->all[sh->nall++] = cv;
    sb_store_account(sh->log, (int64_t)state_size(cv));
    return cv;
}

/*
 * The conversation with this id, created if it is a valid direct conversation id (*created then
 * true). Returns it, or NULL with *err = -ENOENT (no such conversation) or -ENOMEM.
 */
static struct chat_conv *conv_get(struct chat_shard *sh, const char *id, size_t len, int *err,
                                  bool *created)
{
    struct chat_conv *cv = sb_table_get(&sh->convs, id, len);
    *created = false;
    if (cv)
        return cv;
    char a[SB_USER_ID_MAX + 1], b[SB_USER_ID_MAX + 1];
    *err = -ENOENT;
    if (!dm_members(id, len, a, b))
        return NULL;
    *err = -ENOMEM;
    cv = conv_new(sh, id, len, false);
    *created = cv != NULL;
    return cv;
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
    /* System messages are not de-duplicated (their client ids are the actors' request ids). A
     * key seen before (only a damaged log can hold one twice) keeps its first message. */
    if ((m->rec[11] & 0x3F) == SB_STORE_SYS_NONE && !sb_table_get(&cv->dedup, key, klen) &&
        sb_table_add(&cv->dedup, m) < 0)
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

/* Applies a system message to the membership (at run time and in replay). */
static int system_apply(struct chat_conv *cv, const struct sb_store_rec *r)
{
    struct chat_member *m;
    switch (r->system) {
    case SB_STORE_SYS_ADDED:
        if (!member_get(cv, r->body, r->body_len) && !member_add(cv, r->body, r->body_len))
            return -ENOMEM;
        break;
    case SB_STORE_SYS_REMOVED:
        if ((m = member_get(cv, r->body, r->body_len)))
            member_remove(cv, m);
        break;
    case SB_STORE_SYS_RENAMED:
    case SB_STORE_SYS_CREATED:
        if (r->body_len <= SB_GROUP_NAME_MAX) {
            memcpy(cv->name, r->body, r->body_len);
            cv->name_len = r->body_len;
        }
        break;
    default:
        break;
    }
    return 0;
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
    (void)ctx;
    /* The conversation is rebuilt on its home shard for today's worker count. */
    struct chat_shard *sh = &shards[sb_home_worker(r->conv, r->conv_len, cfg.workers)];
    bool group = is_group_id(r->conv, r->conv_len), created;
    int err = -ENOENT;
    struct chat_conv *cv = group ? sb_table_get(&sh->convs, r->conv, r->conv_len)
                                 : conv_get(sh, r->conv, r->conv_len, &err, &created);
    /* Compaction writes a group's messages before its group record: either may come first. */
    if (!cv && group) {
        err = -ENOMEM;
        cv = conv_new(sh, r->conv, r->conv_len, true);
    }
    if (!cv) {
        if (err == -ENOMEM)
            return err;
        sb_log(SB_LOG_WARN, 0, "history: record of unknown conversation \"%.*s\" skipped",
               (int)r->conv_len, r->conv);
        return 0;
    }
    struct chat_member *m;
    switch (r->type) {
    case SB_STORE_STATE:
        if (r->seq > cv->last_seq)
            cv->last_seq = r->seq;
        return 0;
    case SB_STORE_GROUP:
        if (!group || r->seq < cv->state_seq)
            return 0; /* older than what was applied already */
        cv->state_seq = r->seq;
        if (r->seq > cv->last_seq)
            cv->last_seq = r->seq;
        err = group_apply(cv, r);
        if (err == -EBADMSG) {
            sb_log(SB_LOG_WARN, 0, "history: malformed group record of %s skipped", cv->id);
            return 0;
        }
        /* Live bytes count one group record per group: the newest replaces the last. */
        sb_store_account(sh->log, (int64_t)sb_store_rec_size(r) - (int64_t)cv->group_bytes);
        cv->group_bytes = sb_store_rec_size(r);
        return err;
    case SB_STORE_CURSOR:
        if ((m = member_get(cv, r->user, r->user_len)) && r->seq > m->read_seq)
            m->read_seq = m->delivered_seq = r->seq;
        return 0;
    default:
        break;
    }
    /* Known already: a copy a compaction interrupted by a crash left in a second file. */
    if (r->seq <= cv->last_seq)
        return 0;
    msgid_seen(r->msg_id);
    if (r->system && r->seq > cv->state_seq) {
        cv->state_seq = r->seq;
        if (system_apply(cv, r) < 0)
            return -ENOMEM;
    }
    uint64_t now = wall_ms();
    if (cfg.history_max_age_ms && r->ts_ms + cfg.history_max_age_ms < now) {
        cv->last_seq = r->seq;
        return 0;
    }
    struct sb_store_ent *e = ent_new(r);
    if (!e || history_add(sh, cv, e) < 0) {
        free(e);
        return -ENOMEM;
    }
    return 0;
}

int sb_chat_loaded(void)
{
    /* Every member's home learns its conversations (the index is not logged: it is derived). */
    for (unsigned i = 0; i < cfg.workers; i++) {
        struct chat_shard *sh = &shards[i];
        for (size_t k = 0; k < sh->nall; k++) {
            struct chat_conv *cv = sh->all[k];
            for (uint32_t j = 0; j < cv->nmembers; j++) {
                struct chat_member *m = cv->mlist[j];
                struct chat_user *u = user_get(&shards[m->home], m->id, m->id_len, true);
                if (!u || index_set(u, cv->id, cv->id_len, true) < 0)
                    return -ENOMEM;
            }
        }
    }
    return 0;
}

/* Appends a record built on the stack to a snapshot buffer. */
static int snap_put(struct sb_store_buf *out, const struct sb_store_rec *r)
{
    size_t n = sb_store_rec_size(r);
    uint8_t *p = sb_store_buf_reserve(out, n);
    if (!p)
        return -ENOMEM;
    sb_store_encode(r, p, n);
    return 0;
}

int sb_chat_snapshot(void *ctx, unsigned worker, uint32_t gen, struct sb_store_buf *out,
                     size_t target, bool *done)
{
    (void)ctx;
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
        if (cv->group) {
            struct sb_store_ent *g = group_record(cv);
            uint8_t *p = g ? sb_store_buf_reserve(out, g->len) : NULL;
            if (!p) {
                free(g);
                return -ENOMEM;
            }
            memcpy(p, g->rec, g->len);
            free(g);
        }
        struct sb_store_rec s = {
            .type = SB_STORE_STATE, .seq = cv->last_seq, .conv = cv->id, .conv_len = cv->id_len};
        if (snap_put(out, &s) < 0)
            return -ENOMEM;
        for (uint32_t i = 0; i < cv->nmembers; i++) {
            const struct chat_member *m = cv->mlist[i];
            struct sb_store_rec c = {.type = SB_STORE_CURSOR,
                                     .seq = m->read_seq,
                                     .conv = cv->id,
                                     .conv_len = cv->id_len,
                                     .user = m->id,
                                     .user_len = m->id_len};
            if (m->read_seq && snap_put(out, &c) < 0)
                return -ENOMEM;
        }
        cv->snap_gen = gen;
        sh->snap_next++;
    }
    *done = sh->snap_next == sh->nall;
    return 0;
}

/* ---- the sequencer -------------------------------------------------------------------------- */

/* The next message of cv from request r: its log record, with the next seq and a fresh msg_id.
 * A system message has `system` and `subject` in place of the body. */
static struct sb_store_ent *make_msg(struct chat_shard *sh, const struct chat_conv *cv,
                                     const struct chat_req *q, uint8_t system, const char *subject,
                                     size_t subject_len)
{
    struct sb_store_rec r = {
        .type = SB_STORE_MESSAGE,
        .system = system,
        .seq = cv->last_seq + 1,
        .ts_ms = wall_ms(),
        .conv = cv->id,
        .conv_len = cv->id_len,
        .device = q->device,
        .device_len = q->device_len,
        .user = q->user,
        .user_len = q->user_len,
        .client_id = q->client_id_len ? q->client_id : "-",
        .client_id_len = q->client_id_len ? q->client_id_len : 1,
        .body = system ? subject : q->text,
        .body_len = system ? subject_len : q->text_len,
        .body_form = system ? SB_STORE_BODY_JSON : q->body_form,
    };
    r.msg_id = sb_msgid_next(&sh->ids, r.ts_ms);
    return ent_new(&r);
}

/* Mails a stored message to the home worker of each member: one envelope per worker. */
static void deliver(struct sb_worker *w, const struct chat_conv *cv, const struct sb_store_ent *m,
                    uint64_t skip_conn_id)
{
    struct sb_store_rec r;
    sb_store_view(m->rec, &r);
    struct sb_op op = {.type = SB_OP_MESSAGE};
    message_op(&r, &op.u.message);
    struct chat_fan f;
    if (fan_init(&f, &op) < 0) {
        sb_log(SB_LOG_WARN, -ENOMEM, "%s: message %llu not pushed (it is in history)", cv->id,
               (unsigned long long)r.seq);
        return;
    }
    for (uint32_t i = 0; i < cv->nmembers; i++)
        fan_add(&f, cv->mlist[i]->id, cv->mlist[i]->id_len, cv->mlist[i]->home);
    fan_post(w, &f, CLASS_MESSAGE, cv->id, cv->id_len, r.seq, skip_conn_id);
}

/*
 * Sequences, stores and delivers the next message of cv (an ordinary one from a send, or a
 * system message). Returns the entry, or NULL (out of memory: logged).
 */
static struct sb_store_ent *post_message(struct sb_worker *w, struct chat_shard *sh,
                                         struct chat_conv *cv, const struct chat_req *q,
                                         uint8_t system, const char *subject, size_t subject_len)
{
    struct sb_store_ent *m = make_msg(sh, cv, q, system, subject, subject_len);
    if (!m || history_add(sh, cv, m) < 0) {
        free(m);
        sb_log(SB_LOG_WARN, -ENOMEM, "message to %s dropped", cv->id);
        return NULL;
    }
    if (system)
        cv->state_seq = cv->last_seq;
    sb_metric_add(w, SB_M_MESSAGES_STORED, 1);
    sb_store_append(sh->log, w, m, cv->snap_gen);
    deliver(w, cv, m, q->conn_id);
    return m;
}

static void handle_send(struct sb_worker *w, struct chat_shard *sh, struct chat_conv *cv,
                        const struct chat_req *q)
{
    /* A retried send (same user and client id) is answered with the first ack, not stored
     * or delivered again. The key is laid out as in the log record. */
    char key[2 + SB_USER_ID_MAX + SB_CLIENT_ID_MAX];
    key[0] = (char)q->user_len;
    memcpy(key + 1, q->user, q->user_len);
    key[1 + q->user_len] = (char)q->client_id_len;
    memcpy(key + 2 + q->user_len, q->client_id, q->client_id_len);
    struct sb_store_ent *m = sb_table_get(&cv->dedup, key, 2 + q->user_len + q->client_id_len);
    bool dup = m != NULL;
    if (!dup && !(m = post_message(w, sh, cv, q, SB_STORE_SYS_NONE, NULL, 0))) {
        req_error(w, q, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
        return;
    }
    /* Under fsync = always the ack waits until the record is durable (a duplicate's too: its
     * first copy may still be on its way to the disk). */
    struct sb_store_rec r;
    sb_store_view(m->rec, &r);
    struct sb_op op = {.type = SB_OP_ACK};
    op.u.ack = (struct sb_op_ack){.msg_id = r.msg_id,
                                  .seq = r.seq,
                                  .ts_ms = r.ts_ms,
                                  .is_duplicate = dup,
                                  .client_id = sb_slice_from(r.client_id, r.client_id_len),
                                  .conv = sb_slice_from(r.conv, r.conv_len)};
    struct chat_to to = to_req(q);
    answer(w, &to, &op, true);
}

/* A receipt (seq > 0) or typing event of q's user in cv, as the server forwards it. */
static void signal_op(struct sb_op *op, const struct chat_req *q, uint64_t seq)
{
    struct sb_slice conv = sb_slice_from(q->conv, q->conv_len),
                    user = sb_slice_from(q->user, q->user_len);
    if (seq) {
        op->type = SB_OP_RECEIPT;
        op->u.receipt =
            (struct sb_op_receipt){.seq = seq, .kind = q->receipt_kind, .conv = conv, .user = user};
    } else {
        op->type = SB_OP_TYPING;
        op->u.typing = (struct sb_op_typing){.conv = conv, .user = user};
    }
}

/*
 * A receipt moves the member's cursor (read cursors are logged) and goes to the senders of the
 * messages it covers and to the member's other devices. A receipt that moves nothing is dropped.
 */
static void handle_receipt(struct sb_worker *w, struct chat_shard *sh, struct chat_conv *cv,
                           struct chat_member *me, const struct chat_req *q)
{
    uint64_t seq = q->seq > cv->last_seq ? cv->last_seq : q->seq;
    bool read = q->receipt_kind == SB_RECEIPT_READ;
    uint64_t from = read ? me->read_seq : me->delivered_seq;
    if (seq <= from)
        return;
    if (seq > me->delivered_seq)
        me->delivered_seq = seq;
    if (read) {
        me->read_seq = seq;
        struct sb_store_rec c = {.type = SB_STORE_CURSOR,
                                 .seq = seq,
                                 .conv = cv->id,
                                 .conv_len = cv->id_len,
                                 .user = me->id,
                                 .user_len = me->id_len};
        struct sb_store_ent *e = ent_new(&c);
        if (e) {
            sb_store_append(sh->log, w, e, cv->snap_gen);
            sb_store_ent_free(e);
        }
    }
    struct sb_op op = {0};
    signal_op(&op, q, seq);
    struct chat_fan f;
    if (fan_init(&f, &op) < 0)
        return;
    fan_add(&f, me->id, me->id_len, me->home);
    /* The senders of the messages now covered (still in history), each once. */
    struct chat_member *senders[RECEIPT_SENDERS_MAX];
    unsigned ns = 0;
    for (uint32_t i = history_after(cv, from); i < cv->hist_count && ns < RECEIPT_SENDERS_MAX;
         i++) {
        struct sb_store_rec r;
        sb_store_view(hist_at(cv, i)->rec, &r);
        if (r.seq > seq)
            break;
        struct chat_member *s = r.system ? NULL : member_get(cv, r.user, r.user_len);
        if (!s || s == me)
            continue;
        unsigned k = 0;
        while (k < ns && senders[k] != s)
            k++;
        if (k == ns) {
            senders[ns++] = s;
            fan_add(&f, s->id, s->id_len, s->home);
        }
    }
    fan_post(w, &f, CLASS_RECEIPT, cv->id, cv->id_len, seq, q->conn_id);
}

/* Typing: to every other member, at most once a second per member and conversation. */
static void handle_typing(struct sb_worker *w, struct chat_conv *cv, struct chat_member *me,
                          const struct chat_req *q)
{
    uint64_t now = sb_worker_now_ms(w);
    if (me->typing_ms && now - me->typing_ms < TYPING_INTERVAL_MS)
        return;
    me->typing_ms = now;
    struct sb_op op = {0};
    signal_op(&op, q, 0);
    struct chat_fan f;
    if (fan_init(&f, &op) < 0)
        return;
    for (uint32_t i = 0; i < cv->nmembers; i++) {
        if (cv->mlist[i] != me)
            fan_add(&f, cv->mlist[i]->id, cv->mlist[i]->id_len, cv->mlist[i]->home);
    }
    fan_post(w, &f, CLASS_TYPING, cv->id, cv->id_len, 0, q->conn_id);
}

/* The members (or only the admins) of a conversation, as a list of struct sb_slice. */
struct chat_mlist {
    const struct chat_conv *cv;
    bool admins;
};

static int mlist_next(struct sb_ops_list_iter *it, void *item)
{
    const struct chat_mlist *ml = (const void *)it->list->raw.base;
    while (it->off < ml->cv->nmembers) {
        const struct chat_member *m = ml->cv->mlist[it->off++];
        if (!ml->admins || m->admin) {
            *(struct sb_slice *)item = sb_slice_from(m->id, m->id_len);
            it->index++;
            return 1;
        }
    }
    return 0;
}

static struct sb_ops_list mlist_list(const struct chat_mlist *ml)
{
    uint32_t n = ml->cv->nmembers;
    if (ml->admins) {
        n = 0;
        for (uint32_t i = 0; i < ml->cv->nmembers; i++)
            n += ml->cv->mlist[i]->admin;
    }
    return (struct sb_ops_list){
        .count = n, .raw = sb_slice_from((const char *)ml, sizeof(*ml)), .next = mlist_next};
}

/* Answers a request with the conversation (`conv`), after what was appended is durable. */
static void answer_conv(struct sb_worker *w, const struct chat_conv *cv, const struct chat_req *q)
{
    const struct chat_member *me = member_get(cv, q->user, q->user_len);
    struct chat_mlist admins = {cv, true}, members = {cv, false};
    struct sb_op op = {.type = SB_OP_CONV};
    op.u.conv = (struct sb_op_conv){.last_seq = cv->last_seq,
                                    .read_seq = me ? me->read_seq : 0,
                                    .conv = sb_slice_from(cv->id, cv->id_len),
                                    .name = sb_slice_from(cv->name, cv->name_len),
                                    .owner = sb_slice_from(cv->owner, cv->owner_len),
                                    .admins = mlist_list(&admins),
                                    .members = mlist_list(&members)};
    struct chat_to to = to_req(q);
    answer(w, &to, &op, true);
}

/* Creates the group q->conv with the requester as owner and admin. */
static void handle_create(struct sb_worker *w, struct chat_shard *sh, const struct chat_req *q)
{
    if (sb_table_get(&sh->convs, q->conv, q->conv_len)) {
        req_error(w, q, SB_OP_ERR_CONFLICT, "the group exists already");
        return;
    }
    struct chat_conv *cv = conv_new(sh, q->conv, q->conv_len, true);
    struct chat_member *owner = cv ? member_add(cv, q->user, q->user_len) : NULL;
    if (!owner) {
        req_error(w, q, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
        return; /* an empty group nobody knows of stays behind until the next restart */
    }
    owner->admin = true;
    memcpy(cv->owner, q->user, q->user_len);
    cv->owner_len = q->user_len;
    memcpy(cv->name, q->text, q->text_len);
    cv->name_len = q->text_len;
    cv->created_ms = wall_ms();
    const char *p = q->users;
    for (uint32_t i = 0; i < q->nusers; i++) {
        size_t len;
        const char *id = unpack_user(p, &len);
        p = id + len;
        if (!member_get(cv, id, len) && !member_add(cv, id, len)) {
            req_error(w, q, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
            return;
        }
    }
    group_log(w, sh, cv);
    post_message(w, sh, cv, q, SB_STORE_SYS_CREATED, cv->name, cv->name_len);
    note_post(w, cv, true, cv->mlist, cv->nmembers);
    sb_log(SB_LOG_DEBUG, 0, "%s: created by %s with %u members", cv->id, q->user, cv->nmembers);
    answer_conv(w, cv, q);
}

/* Adds, removes, renames, promotes or demotes, after the requester's rights are checked. */
static void handle_manage(struct sb_worker *w, struct chat_shard *sh, struct chat_conv *cv,
                          struct chat_member *me, const struct chat_req *q)
{
    bool owner = cv->owner_len == q->user_len && memcmp(cv->owner, q->user, q->user_len) == 0;
    if (q->kind != REQ_LEAVE && !me->admin) {
        req_error(w, q, SB_OP_ERR_FORBIDDEN, "only the group's admins may do this");
        return;
    }
    if ((q->kind == REQ_PROMOTE || q->kind == REQ_DEMOTE) && !owner) {
        req_error(w, q, SB_OP_ERR_FORBIDDEN, "only the group's owner may change admins");
        return;
    }
    /* Checked before anything changes: the request is all or nothing. */
    uint32_t adds = 0;
    const char *p = q->users;
    for (uint32_t i = 0; i < q->nusers; i++) {
        size_t len;
        const char *id = unpack_user(p, &len);
        p = id + len;
        struct chat_member *m = member_get(cv, id, len);
        adds += !m;
        if (q->kind == REQ_REMOVE && m &&
            ((len == cv->owner_len && memcmp(id, cv->owner, len) == 0) || (m->admin && !owner))) {
            req_error(w, q, SB_OP_ERR_FORBIDDEN,
                      "the owner cannot be removed; admins only by the owner");
            return;
        }
        if ((q->kind == REQ_PROMOTE || q->kind == REQ_DEMOTE) && !m) {
            req_error(w, q, SB_OP_ERR_NOT_FOUND, "not a member of this group");
            return;
        }
    }
    if (q->kind == REQ_ADD && cv->nmembers + adds > cfg.max_group_members) {
        char msg[128];
        snprintf(msg, sizeof(msg), "a group has at most %u members", cfg.max_group_members);
        req_error(w, q, SB_OP_ERR_CONFLICT, msg);
        return;
    }
    struct chat_member *changed[USERS_MAX];
    uint32_t nchanged = 0;
    switch (q->kind) {
    case REQ_RENAME:
        post_message(w, sh, cv, q, SB_STORE_SYS_RENAMED, q->text, q->text_len);
        system_apply(cv, &(struct sb_store_rec){.system = SB_STORE_SYS_RENAMED,
                                                .body = q->text,
                                                .body_len = q->text_len});
        break;
    case REQ_LEAVE:
        /* The leaver sees its own departure, then stops being a member. */
        post_message(w, sh, cv, q, SB_STORE_SYS_REMOVED, q->user, q->user_len);
        note_post(w, cv, false, &me, 1);
        member_remove(cv, me);
        me = NULL;
        if (owner && cv->nmembers) {
            /* Ownership passes to an admin, else to the longest-standing member. */
            struct chat_member *next = cv->mlist[0];
            for (uint32_t i = 0; i < cv->nmembers; i++) {
                if (cv->mlist[i]->admin) {
                    next = cv->mlist[i];
                    break;
                }
            }
            next->admin = true;
            memcpy(cv->owner, next->id, next->id_len);
            cv->owner_len = next->id_len;
            group_log(w, sh, cv);
        }
        break;
    default:
        p = q->users;
        for (uint32_t i = 0; i < q->nusers; i++) {
            size_t len;
            const char *id = unpack_user(p, &len);
            p = id + len;
            struct chat_member *m = member_get(cv, id, len);
            if (q->kind == REQ_ADD && !m) {
                if (!(m = member_add(cv, id, len)))
                    break;
                post_message(w, sh, cv, q, SB_STORE_SYS_ADDED, id, len);
                changed[nchanged++] = m;
            } else if (q->kind == REQ_REMOVE && m) {
                post_message(w, sh, cv, q, SB_STORE_SYS_REMOVED, id, len);
                note_post(w, cv, false, &m, 1);
                member_remove(cv, m);
            } else if ((q->kind == REQ_PROMOTE || q->kind == REQ_DEMOTE) && m) {
                m->admin = q->kind == REQ_PROMOTE ||
                           (len == cv->owner_len && memcmp(id, cv->owner, len) == 0);
            }
        }
        if (nchanged)
            note_post(w, cv, true, changed, nchanged);
        if (q->kind == REQ_PROMOTE || q->kind == REQ_DEMOTE)
            group_log(w, sh, cv);
        break;
    }
    answer_conv(w, cv, q);
}

static void sequence(struct sb_worker *w, void *arg)
{
    struct chat_req *q = arg;
    struct chat_shard *sh = my_shard(w);
    if (q->kind == REQ_CREATE) {
        handle_create(w, sh, q);
        free(q);
        return;
    }
    int err;
    bool created;
    struct chat_conv *cv = conv_get(sh, q->conv, q->conv_len, &err, &created);
    struct chat_member *me = cv ? member_get(cv, q->user, q->user_len) : NULL;
    if (created)
        note_post(w, cv, true, cv->mlist, cv->nmembers);
    if (!me) {
        if (cv)
            req_error(w, q, SB_OP_ERR_FORBIDDEN, "not a member of this conversation");
        else if (err == -ENOENT)
            req_error(w, q, SB_OP_ERR_NOT_FOUND, "no such conversation");
        else
            req_error(w, q, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
        free(q);
        return;
    }
    history_expire(sh, cv, wall_ms());
    switch (q->kind) {
    case REQ_SEND:
        handle_send(w, sh, cv, q);
        break;
    case REQ_RECEIPT:
    case REQ_TYPING:
        if (q->kind == REQ_RECEIPT)
            handle_receipt(w, sh, cv, me, q);
        else
            handle_typing(w, cv, me, q);
        /* Over a WebSocket these are not answered; an HTTP client waits for a response. */
        if (q->http) {
            static const char ok[] = "{\"type\":\"ok\"}";
            struct chat_reply *r = reply_new(q->conn_id, true, q->user, q->user_len, sizeof(ok));
            if (r) {
                r->len = sizeof(ok) - 1;
                memcpy(r->data, ok, r->len);
                reply_post(w, q->from_worker, r, q->kind == REQ_RECEIPT);
            }
        }
        break;
    case REQ_GET:
        answer_conv(w, cv, q);
        break;
    default:
        if (!cv->group)
            req_error(w, q, SB_OP_ERR_BAD_REQUEST,
                      "a direct conversation has no settings to change");
        else
            handle_manage(w, sh, cv, me, q);
        break;
    }
    free(q);
}

/* ---- conversation lists: gathered from the sequencers on the user's home worker ----------- */

static struct chat_to to_gather(const struct chat_gather *g)
{
    return (struct chat_to){
        g->from_worker, g->conn_id, g->http, g->enc, {g->request_id, g->req_len ? g->req : NULL},
        g->user,        g->user_len};
}

/* An item of the conversation list, as an operation's list item. */
static int items_next(struct sb_ops_list_iter *it, void *item)
{
    const struct chat_conv_item *ci = (const struct chat_conv_item *)it->list->raw.base;
    if (it->index >= it->list->count)
        return 0;
    ci += it->index++;
    *(struct sb_op_conv_summary *)item =
        (struct sb_op_conv_summary){.last_seq = ci->last_seq,
                                    .read_seq = ci->read_seq,
                                    .member_count = ci->member_count,
                                    .conv = sb_slice_from(ci->conv, ci->conv_len),
                                    .name = sb_slice_from(ci->name, ci->name_len),
                                    .owner = sb_slice_from(ci->owner, ci->owner_len)};
    return 1;
}

static void gather_finish(struct sb_worker *w, struct chat_gather *g)
{
    struct chat_shard *sh = my_shard(w);
    for (struct chat_gather **p = &sh->gathers; *p; p = &(*p)->next) {
        if (*p == g) {
            *p = g->next;
            break;
        }
    }
    struct chat_to to = to_gather(g);
    char cursor[24];
    struct sb_op op = {.type = g->sync ? SB_OP_SYNC_DONE : SB_OP_CONVS};
    if (g->sync) {
        snprintf(cursor, sizeof(cursor), "%llu", (unsigned long long)g->start_ms);
        op.u.sync_done.cursor = sb_slice_from(cursor, strlen(cursor));
    } else {
        op.u.convs.convs = (struct sb_ops_list){
            .count = (uint32_t)g->len,
            .raw = sb_slice_from((const char *)g->items, g->len * sizeof(*g->items)),
            .next = items_next};
    }
    if (g->failed)
        answer_error(w, &to, SB_OP_ERR_UNAVAILABLE, "out of memory; retry", NULL, 0);
    else
        answer(w, &to, &op, false);
    free(g->items);
    free(g);
}

static void list_part_arrive(struct sb_worker *w, void *arg)
{
    struct chat_list_part *part = arg;
    struct chat_gather *g = my_shard(w)->gathers;
    while (g && g->id != part->gather)
        g = g->next;
    if (g && g->sync) {
        /* Pages, each a length (4 bytes) and its encoding: passed on as they come. */
        for (size_t off = 0; off + 4 <= part->len;) {
            uint32_t n;
            memcpy(&n, part->data + off, 4);
            struct chat_reply *r =
                g->conn_id ? reply_new(g->conn_id, g->http, g->user, g->user_len, n) : NULL;
            if (r) {
                memcpy(r->data, part->data + off + 4, n);
                r->len = n;
                reply_post(w, g->from_worker, r, false);
            }
            off += 4 + n;
        }
    } else if (g && part->len) {
        size_t n = part->len / sizeof(struct chat_conv_item);
        if (g->len + n > g->cap) {
            size_t cap = (g->len + n) * 2;
            struct chat_conv_item *items = realloc(g->items, cap * sizeof(*items));
            if (!items) {
                g->failed = true;
            } else {
                g->items = items;
                g->cap = cap;
            }
        }
        if (!g->failed) {
            memcpy(g->items + g->len, part->data, part->len);
            g->len += n;
        }
    }
    if (g && --g->parts == 0)
        gather_finish(w, g);
    free(part);
}

static struct chat_reply *sync_page(const struct chat_conv *cv, const struct chat_sync *q);

/* The index in history of the first message sequenced at or after ms (hist_count if none). */
static uint32_t history_since(const struct chat_conv *cv, uint64_t ms)
{
    uint32_t lo = 0, hi = cv->hist_count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (sb_store_rec_ts(hist_at(cv, mid)->rec) < ms)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/*
 * On a sequencer, for a sync since a cursor: a page of each conversation named in q that has
 * messages sequenced since q->since_ms, packed (length, JSON) into one part. Sent once durable.
 */
static void sync_since_serve(struct sb_worker *w, struct chat_shard *sh, struct chat_req *q)
{
    struct chat_list_part *part = malloc(sizeof(*part));
    size_t cap = 0;
    if (!part)
        return;
    part->gather = q->seq;
    part->len = 0;
    const char *p = q->users;
    for (uint32_t i = 0; i < q->nusers; i++, p += 1 + (uint8_t)p[0]) {
        struct chat_conv *cv = sb_table_get(&sh->convs, p + 1, (uint8_t)p[0]);
        if (!cv || !member_get(cv, q->user, q->user_len))
            continue;
        history_expire(sh, cv, wall_ms());
        uint32_t first = history_since(cv, q->since_ms);
        if (first == cv->hist_count)
            continue; /* nothing new */
        struct chat_sync s = {.enc = q->enc,
                              .request_id = q->request_id,
                              .last_seq = sb_store_rec_seq(hist_at(cv, first)->rec) - 1,
                              .limit = q->limit,
                              .user_len = q->user_len,
                              .id_len = q->client_id_len,
                              .conv_len = cv->id_len};
        memcpy(s.user, q->user, q->user_len);
        memcpy(s.id, q->client_id, q->client_id_len);
        memcpy(s.conv, cv->id, cv->id_len);
        struct chat_reply *rep = sync_page(cv, &s);
        if (!rep)
            continue;
        if (part->len + 4 + rep->len > cap) {
            cap = (part->len + 4 + rep->len) * 2;
            struct chat_list_part *bigger = realloc(part, sizeof(*part) + cap);
            if (!bigger) {
                free(rep);
                continue;
            }
            part = bigger;
        }
        uint32_t n = (uint32_t)rep->len;
        memcpy(part->data + part->len, &n, 4);
        memcpy(part->data + part->len + 4, rep->data, rep->len);
        part->len += 4 + rep->len;
        free(rep);
    }
    if (sb_store_post_after(sh->log, w, q->from_worker, list_part_arrive, part) < 0)
        free(part);
}

/* On a sequencer: the list items of the conversations named in q (ids packed like users). */
static void list_serve(struct sb_worker *w, void *arg)
{
    struct chat_req *q = arg;
    struct chat_shard *sh = my_shard(w);
    if (q->since_ms) {
        sync_since_serve(w, sh, q);
        free(q);
        return;
    }
    struct chat_list_part *part =
        malloc(sizeof(*part) + (size_t)q->nusers * sizeof(struct chat_conv_item));
    if (!part) {
        free(q);
        return; /* the gather waits for this part: the device gets no answer; it may retry */
    }
    part->gather = q->seq;
    part->len = 0;
    struct chat_conv_item *items = (struct chat_conv_item *)part->data;
    const char *p = q->users;
    for (uint32_t i = 0; i < q->nusers; i++, p += 1 + (uint8_t)p[0]) {
        struct chat_conv *cv = sb_table_get(&sh->convs, p + 1, (uint8_t)p[0]);
        struct chat_member *me = cv ? member_get(cv, q->user, q->user_len) : NULL;
        if (!me)
            continue;
        struct chat_conv_item *ci = items++;
        *ci = (struct chat_conv_item){.last_seq = cv->last_seq,
                                      .read_seq = me->read_seq,
                                      .member_count = cv->nmembers,
                                      .conv_len = (uint8_t)cv->id_len,
                                      .name_len = (uint8_t)cv->name_len,
                                      .owner_len = (uint8_t)cv->owner_len};
        memcpy(ci->conv, cv->id, cv->id_len);
        memcpy(ci->name, cv->name, cv->name_len);
        memcpy(ci->owner, cv->owner, cv->owner_len);
        part->len += sizeof(*ci);
    }
    if (sb_worker_post(w, q->from_worker, list_part_arrive, part) < 0)
        free(part);
    free(q);
}

/* ---- membership notes on the users' home workers ------------------------------------------ */

static struct chat_req *req_new(enum chat_req_kind kind, const char *user, size_t user_len,
                                const char *device, const char *client_id, const char *conv,
                                size_t conv_len, const char *text, size_t text_len,
                                const char *users, size_t users_len, uint32_t nusers);

static void note_arrive(struct sb_worker *w, void *arg)
{
    struct chat_note *nt = arg;
    struct chat_shard *sh = my_shard(w);
    const char *p = nt->users, *end = p + nt->users_len;
    while (p < end) {
        size_t len;
        const char *id = unpack_user(p, &len);
        p = id + len;
        struct chat_user *u = user_get(sh, id, len, nt->join);
        if (!u)
            continue;
        if (index_set(u, nt->conv, nt->conv_len, nt->join) < 0) {
            sb_log(SB_LOG_WARN, -ENOMEM, "%.*s: conversation index not updated", (int)len, id);
        } else if (nt->join && is_group_id(nt->conv, nt->conv_len) &&
                   u->ngroups > cfg.max_groups_per_user) {
            /* Over the limit: the user leaves the group it was just added to. The group's
             * members see it leave; the index follows with the leave's own note. */
            sb_log(SB_LOG_INFO, 0, "%s: leaves %.*s: in more than %u groups", u->id,
                   (int)nt->conv_len, nt->conv, cfg.max_groups_per_user);
            struct chat_req *q = req_new(REQ_LEAVE, u->id, u->id_len, "", "group-limit", nt->conv,
                                         nt->conv_len, NULL, 0, NULL, 0, 0);
            if (q && sb_worker_post(w, sb_home_worker(nt->conv, nt->conv_len, cfg.workers),
                                    sequence, q) < 0)
                free(q);
        }
        if (!nt->join)
            user_release(sh, u);
    }
    free(nt);
}

/* ---- sync on the sequencer ----------------------------------------------------------------- */

/* Messages of a conversation's history, as a list of struct sb_op_message. */
struct chat_hlist {
    const struct chat_conv *cv;
    uint32_t first;
};

static int hlist_next(struct sb_ops_list_iter *it, void *item)
{
    const struct chat_hlist *h = (const void *)it->list->raw.base;
    if (it->index >= it->list->count)
        return 0;
    struct sb_store_rec r;
    sb_store_view(hist_at(h->cv, h->first + it->index++)->rec, &r);
    message_op(&r, item);
    return 1;
}

/* Encodes a page of cv's history after q->last_seq into a new reply (NULL without memory). */
static struct chat_reply *sync_page(const struct chat_conv *cv, const struct chat_sync *q)
{
    uint64_t last = cv ? cv->last_seq : 0;
    uint32_t count = cv ? cv->hist_count : 0;
    uint32_t first = cv ? history_after(cv, q->last_seq) : 0, n = 0;
    uint64_t oldest = count ? sb_store_rec_seq(hist_at(cv, 0)->rec) : last + 1;
    size_t bytes = 0;
    while (first + n < count && n < q->limit && (n == 0 || bytes < SYNC_PAGE_BYTES)) {
        bytes += sb_store_rec_size_of(hist_at(cv, first + n)->rec);
        n++;
    }
    struct chat_hlist h = {cv, first};
    struct sb_op op = {.type = SB_OP_SYNC_PAGE};
    op.u.sync_page = (struct sb_op_sync_page){
        /* Where the next request continues: the last message sent, or all there is. */
        .last_seq = n ? sb_store_rec_seq(hist_at(cv, first + n - 1)->rec) : last,
        .has_more = first + n < count,
        .truncated = q->last_seq < last && q->last_seq + 1 < oldest,
        .conv = sb_slice_from(q->conv, q->conv_len),
        .messages = {
            .count = n, .raw = sb_slice_from((const char *)&h, sizeof(h)), .next = hlist_next}};
    struct chat_to to = to_sync(q);
    return reply_op(&to, &op);
}

static void sync_serve(struct sb_worker *w, void *arg)
{
    struct chat_sync *q = arg;
    struct chat_shard *sh = my_shard(w);
    struct chat_conv *cv = sb_table_get(&sh->convs, q->conv, q->conv_len);
    char a[SB_USER_ID_MAX + 1], b[SB_USER_ID_MAX + 1];
    /* A direct conversation nobody wrote to yet is empty for its members; an unknown group is
     * not found; a group is readable by its members only. */
    const char *code = NULL;
    if (cv && !member_get(cv, q->user, q->user_len))
        code = "forbidden";
    else if (!cv && is_group_id(q->conv, q->conv_len))
        code = "not_found";
    else if (!cv && dm_members(q->conv, q->conv_len, a, b) && strcmp(a, q->user) != 0 &&
             strcmp(b, q->user) != 0)
        code = "forbidden";
    struct chat_to to = to_sync(q);
    if (code) {
        answer_error(w, &to, code[0] == 'f' ? SB_OP_ERR_FORBIDDEN : SB_OP_ERR_NOT_FOUND,
                     code[0] == 'f' ? "not a member of this conversation" : "no such conversation",
                     q->conv, q->conv_len);
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
        answer_error(w, &to, SB_OP_ERR_UNAVAILABLE, "out of memory; retry", q->conv, q->conv_len);
    }
    free(q);
}

/* ---- cluster mode: conversations in Redis, pushes across nodes ----------------------------- */

/*
 * Redis sequences and stores (cluster/convs.h); the device's home worker asks it and then
 * pushes: to this node's workers by mail, to other nodes' workers through their sharded
 * channels, one publish per (node, worker) carrying the encoded op and its users. Where a user
 * is comes from the registry; a push lost on the way (a node dying, a channel moving) is in
 * history for the device's next sync.
 */

#define CL_CHANNEL_MAX (8 + SB_NODE_ID_MAX + 12)
#define CL_RETRY_MS 1000        /* what an unavailable store's error suggests */
#define CL_LAPSE_SPREAD_MS 2000 /* devices told to reconnect after a lapse come back within */
#define CL_PUB_TRIES 5          /* sends of one publish: 250, 500, 1000, 2000 ms apart */
#define CL_PUB_RETRY_MS 250
#define CL_PUB_WAITING 10000 /* publishes waiting to be sent again, per worker */

static size_t cl_channel(char *buf, const char *node, size_t node_len, unsigned worker)
{
    return (size_t)snprintf(buf, CL_CHANNEL_MAX, "sb:ch:%.*s/%u", (int)node_len, node, worker);
}

static void cl_spublish(struct sb_worker *w, const char *ch, size_t clen, const char *head,
                        size_t head_len, const char *tail, size_t tail_len);

/*
 * Where users are, cached per worker so that a push does not read the registry for every
 * recipient. An entry lives CL_CACHE_MS at most; before that, the node that writes a user's
 * registry entry tells every node (each worker 0, which tells its siblings), a batch per tick,
 * and they drop it. A lookup that an invalidation overtook is used once but not cached.
 */
#define CL_CACHE_MS 5000
#define CL_CACHE_MAX 100000 /* entries per worker; past it the cache starts over */
#define CL_LOCS_MAX 8       /* (node, worker) places of one user cached at most */
#define CL_FLUSH_MS 10

struct cl_cached {
    uint64_t expires_ms;
    uint8_t len, n;
    struct {
        uint16_t node; /* in the shard's lnodes */
        uint16_t worker;
    } loc[CL_LOCS_MAX];
    char id[SB_USER_ID_MAX + 1];
};

static const char *cached_key(const void *obj, size_t *len)
{
    const struct cl_cached *c = obj;
    *len = c->len;
    return c->id;
}

static void cl_cache_clear(struct chat_shard *sh)
{
    for (size_t k = 0; k < sh->lcache.cap; k++)
        free(sh->lcache.slots[k].obj);
    sb_table_destroy(&sh->lcache);
    sb_table_init(&sh->lcache, cached_key);
    sh->nlnodes = 0;
}

static void cl_cache_drop(struct chat_shard *sh, const char *user, size_t len)
{
    free(sb_table_remove(&sh->lcache, user, len));
    sh->lgen++;
}

static int cl_node_index(struct chat_shard *sh, const char *node, size_t len)
{
    for (unsigned i = 0; i < sh->nlnodes; i++) {
        if (strlen(sh->lnodes[i]) == len && memcmp(sh->lnodes[i], node, len) == 0)
            return (int)i;
    }
    if (sh->nlnodes == SB_REGISTRY_MAX_NODES || len > SB_NODE_ID_MAX)
        return -1;
    memcpy(sh->lnodes[sh->nlnodes], node, len);
    sh->lnodes[sh->nlnodes][len] = '\0';
    return (int)sh->nlnodes++;
}

static void cl_cache_put(struct chat_shard *sh, const char *user, size_t len,
                         const struct sb_registry_loc *locs, size_t n)
{
    if (n > CL_LOCS_MAX || len > SB_USER_ID_MAX)
        return;
    if (sh->lcache.count >= CL_CACHE_MAX || sh->nlnodes == SB_REGISTRY_MAX_NODES)
        cl_cache_clear(sh);
    struct cl_cached *c = sb_table_get(&sh->lcache, user, len);
    if (!c) {
        if (!(c = calloc(1, sizeof(*c))))
            return;
        c->len = (uint8_t)len;
        memcpy(c->id, user, len);
        if (sb_table_add(&sh->lcache, c) < 0) {
            free(c);
            return;
        }
    }
    c->n = 0;
    for (size_t i = 0; i < n; i++) {
        int k = cl_node_index(sh, locs[i].node, locs[i].node_len);
        if (k < 0 || locs[i].worker > UINT16_MAX) {
            cl_cache_drop(sh, user, len);
            return;
        }
        c->loc[c->n].node = (uint16_t)k;
        c->loc[c->n].worker = (uint16_t)locs[i].worker;
        c->n++;
    }
    c->expires_ms = wall_ms() + CL_CACHE_MS;
}

/* Users whose entries this worker wrote: every node drops them from its caches. */
static void cl_flush(struct sb_worker *w, struct sb_worker_timer *t)
{
    (void)t;
    struct chat_shard *sh = my_shard(w);
    const char *nodes[SB_REGISTRY_MAX_NODES];
    size_t n = sb_registry_live(w, cfg.registry, nodes, SB_REGISTRY_MAX_NODES);
    const char head = (char)SB_ENVELOPE_INVAL;
    for (size_t i = 0; i < n; i++) {
        char ch[CL_CHANNEL_MAX];
        size_t clen = cl_channel(ch, nodes[i], strlen(nodes[i]), 0);
        cl_spublish(w, ch, clen, &head, 1, sh->inval, sh->inval_len);
    }
    sh->inval_len = 0;
}

void sb_chat_located(struct sb_worker *w, const char *user, size_t len)
{
    struct chat_shard *sh = my_shard(w);
    if (!cfg.redis || len > SB_USER_ID_MAX)
        return;
    if (sh->inval_cap - sh->inval_len < PACKED_USER) {
        size_t cap = sh->inval_cap ? sh->inval_cap * 2 : 64 * PACKED_USER;
        char *b = realloc(sh->inval, cap);
        if (!b)
            return; /* the caches expire by themselves */
        sh->inval = b;
        sh->inval_cap = cap;
    }
    if (sh->inval_len == 0)
        sb_worker_timer_set(w, &sh->inval_timer, CL_FLUSH_MS);
    sh->inval_len += pack_user(sh->inval + sh->inval_len, user, len);
}

/* An invalidation, on each worker of this node. */
static void cl_inval_arrive(struct sb_worker *w, void *arg)
{
    struct chat_envelope *env = arg; /* only users_len and the users are used */
    struct chat_shard *sh = my_shard(w);
    for (const char *p = env->data, *end = p + env->users_len; p < end;) {
        size_t len;
        const char *u = unpack_user(p, &len);
        cl_cache_drop(sh, u, len);
        p = u + len;
    }
    free(env);
}

/* The users of one other (node, worker) a push goes to. */
struct cl_target {
    char node[SB_NODE_ID_MAX + 1];
    size_t node_len;
    unsigned worker;
    char *users; /* packed */
    size_t len, cap;
};

/* A push waiting for the registry's answers about its users. */
struct cl_push {
    uint8_t cls;
    uint64_t seq;
    size_t conv_len, json_len, bin_len, sender_len;
    char conv[SB_CONV_ID_MAX + 1];
    char sender[SB_USER_ID_MAX + 1];
    unsigned pending;
    struct cl_target *t;
    size_t nt, cap;
    char *enc; /* json, then binary */
};

struct cl_lookup {
    struct cl_push *p;
    uint64_t gen; /* the shard's lgen when asked */
    size_t len;
    char user[SB_USER_ID_MAX + 1];
};

/* A publish in flight or waiting to be sent again: its channel and message. */
struct cl_pub {
    struct cl_pub *next;
    uint64_t due_ms;
    unsigned tries;
    size_t clen, len;
    char ch[CL_CHANNEL_MAX];
    char msg[];
};

static void cl_pub_send(struct sb_worker *w, struct cl_pub *p);

static void cl_retry_free(struct chat_shard *sh)
{
    for (struct cl_pub *p = sh->retry, *next; p; p = next) {
        next = p->next;
        free(p);
    }
    sh->retry = NULL;
    sh->nretry = 0;
}

/* A failed publish is sent again a few times (CL_PUB_TRIES, backing off) unless the failure
 * cannot heal: a lost push would otherwise stay lost for a device that holds its connection. A
 * repeat is harmless (devices tell one by its seq; an invalidation is idempotent). */
static void cl_published(struct sb_worker *w, void *arg, int err, const struct redisReply *reply)
{
    (void)reply;
    struct cl_pub *p = arg;
    struct chat_shard *sh = my_shard(w);
    if (err == 0 || err == -ESHUTDOWN) {
        free(p);
        return;
    }
    if (!sb_redis_retryable(err) || ++p->tries >= CL_PUB_TRIES || sh->nretry >= CL_PUB_WAITING) {
        sb_log(SB_LOG_WARN, err,
               "a push to %s was not published (%s): its devices see it at "
               "their next sync",
               p->ch, sb_redis_strerror(err));
        free(p);
        return;
    }
    p->due_ms = sb_worker_now_ms(w) + (CL_PUB_RETRY_MS << (p->tries - 1));
    p->next = sh->retry;
    sh->retry = p;
    if (sh->nretry++ == 0)
        sb_worker_timer_set(w, &sh->retry_timer, CL_PUB_RETRY_MS);
}

static void cl_retry_due(struct sb_worker *w, struct sb_worker_timer *t)
{
    (void)t;
    struct chat_shard *sh = my_shard(w);
    uint64_t now = sb_worker_now_ms(w);
    struct cl_pub *due = NULL;
    for (struct cl_pub **pp = &sh->retry; *pp;) {
        struct cl_pub *p = *pp;
        if (p->due_ms > now) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        sh->nretry--;
        p->next = due;
        due = p;
    }
    if (sh->nretry)
        sb_worker_timer_set(w, &sh->retry_timer, CL_PUB_RETRY_MS);
    for (struct cl_pub *p = due, *next; p; p = next) {
        next = p->next;
        cl_pub_send(w, p);
    }
}

static void cl_pub_send(struct sb_worker *w, struct cl_pub *p)
{
    const char *argv[3] = {"SPUBLISH", p->ch, p->msg};
    size_t argvlen[3] = {8, p->clen, p->len};
    int e = sb_redis_cmd(w, cfg.redis, p->ch, p->clen, 3, argv, argvlen, cl_published, p);
    if (e < 0)
        cl_published(w, p, e, NULL);
}

/* Publishes head then tail on channel ch. */
static void cl_spublish(struct sb_worker *w, const char *ch, size_t clen, const char *head,
                        size_t head_len, const char *tail, size_t tail_len)
{
    struct cl_pub *p = malloc(sizeof(*p) + head_len + tail_len);
    if (!p) {
        sb_log(SB_LOG_WARN, -ENOMEM, "a push to %s was not published", ch);
        return;
    }
    *p = (struct cl_pub){.clen = clen, .len = head_len + tail_len};
    memcpy(p->ch, ch, clen);
    memcpy(p->msg, head, head_len);
    memcpy(p->msg + head_len, tail, tail_len);
    cl_pub_send(w, p);
}

/* Every answer is in: one publish per target, then the push is done. */
static void cl_publish(struct sb_worker *w, struct cl_push *p)
{
    for (size_t i = 0; i < p->nt; i++) {
        struct cl_target *t = &p->t[i];
        struct sb_envelope e = {.cls = p->cls,
                                .seq = p->seq,
                                .conv = p->conv,
                                .conv_len = p->conv_len,
                                .json = p->enc,
                                .json_len = p->json_len,
                                .bin = p->enc + p->json_len,
                                .bin_len = p->bin_len};
        size_t hlen = sb_envelope_head_len(&e);
        char *head = malloc(hlen), ch[CL_CHANNEL_MAX];
        if (head) {
            sb_envelope_put_head(&e, head);
            cl_spublish(w, ch, cl_channel(ch, t->node, t->node_len, t->worker), head, hlen,
                        t->users, t->len);
            free(head);
        }
        free(t->users);
    }
    free(p->t);
    free(p->enc);
    free(p);
}

static struct cl_target *cl_target(struct cl_push *p, const char *node, size_t len, unsigned worker)
{
    for (size_t i = 0; i < p->nt; i++) {
        if (p->t[i].worker == worker && p->t[i].node_len == len &&
            memcmp(p->t[i].node, node, len) == 0)
            return &p->t[i];
    }
    if (len > SB_NODE_ID_MAX)
        return NULL;
    if (p->nt == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4;
        struct cl_target *t = realloc(p->t, cap * sizeof(*t));
        if (!t)
            return NULL;
        p->t = t;
        p->cap = cap;
    }
    struct cl_target *t = &p->t[p->nt++];
    *t = (struct cl_target){.node_len = len, .worker = worker};
    memcpy(t->node, node, len);
    return t;
}

/* Adds user to the push's target at (node, worker), unless that is this node (mailed). */
static void cl_add(struct cl_push *p, const char *node, size_t node_len, unsigned worker,
                   const char *user, size_t len)
{
    const char *self = sb_registry_node_id(cfg.registry);
    if (strlen(self) == node_len && memcmp(node, self, node_len) == 0)
        return;
    struct cl_target *t = cl_target(p, node, node_len, worker);
    if (!t)
        return;
    if (t->cap - t->len < PACKED_USER) {
        size_t cap = t->cap ? t->cap * 2 : 8 * PACKED_USER;
        char *u = realloc(t->users, cap);
        if (!u)
            return; /* in history for its sync */
        t->users = u;
        t->cap = cap;
    }
    t->len += pack_user(t->users + t->len, user, len);
}

/* The user is on no node: a message for it fires the webhook (not for its sender). */
static void cl_offline(struct sb_worker *w, const struct cl_push *p, const char *user, size_t len)
{
    if (p->cls == CLASS_MESSAGE && p->json_len &&
        !(len == p->sender_len && memcmp(user, p->sender, len) == 0))
        sb_webhook_offline(w, user, len, p->enc, p->json_len);
}

static void cl_looked_up(struct sb_worker *w, void *arg, int err,
                         const struct sb_registry_loc *locs, size_t n)
{
    struct cl_lookup *x = arg;
    struct cl_push *p = x->p;
    struct chat_shard *sh = my_shard(w);
    if (err < 0) {
        sb_log(SB_LOG_DEBUG, err, "%s: where %s is is unknown (%s): pushed here only", p->conv,
               x->user, sb_redis_strerror(err));
    } else {
        if (n == 0)
            cl_offline(w, p, x->user, x->len);
        if (sh->lgen == x->gen)
            cl_cache_put(sh, x->user, x->len, locs, n);
    }
    for (size_t i = 0; i < n; i++)
        cl_add(p, locs[i].node, locs[i].node_len, locs[i].worker, x->user, x->len);
    free(x);
    if (--p->pending == 0)
        cl_publish(w, p);
}

/*
 * Where a send's recipients are is asked while Redis sequences it, for those the cache does not
 * hold: the push then finds them cached instead of waiting for the registry (a round trip that
 * a cold cache, after a reconnect or an expiry, would add to the first messages).
 */
#define CL_PREFETCH_MAX 10000 /* lookups ahead in flight per worker */

struct cl_prefetch {
    uint64_t gen; /* the shard's lgen when asked */
    uint8_t len;
    char user[SB_USER_ID_MAX + 1];
};

static const char *prefetch_key(const void *obj, size_t *len)
{
    const struct cl_prefetch *x = obj;
    *len = x->len;
    return x->user;
}

static void cl_prefetched(struct sb_worker *w, void *arg, int err,
                          const struct sb_registry_loc *locs, size_t n)
{
    struct cl_prefetch *x = arg;
    struct chat_shard *sh = my_shard(w);
    sb_table_remove(&sh->lpending, x->user, x->len);
    if (err == 0 && sh->lgen == x->gen)
        cl_cache_put(sh, x->user, x->len, locs, n);
    free(x);
}

static void cl_prefetch(struct sb_worker *w, const struct sb_convs_member *users, size_t n)
{
    struct chat_shard *sh = my_shard(w);
    uint64_t now = wall_ms();
    for (size_t i = 0; i < n && sh->lpending.count < CL_PREFETCH_MAX; i++) {
        const struct cl_cached *c = sb_table_get(&sh->lcache, users[i].id, users[i].len);
        if (users[i].len > SB_USER_ID_MAX || (c && c->expires_ms > now) ||
            sb_table_get(&sh->lpending, users[i].id, users[i].len))
            continue;
        struct cl_prefetch *x = malloc(sizeof(*x));
        if (!x)
            return;
        x->gen = sh->lgen;
        x->len = (uint8_t)users[i].len;
        memcpy(x->user, users[i].id, users[i].len);
        if (sb_table_add(&sh->lpending, x) < 0) {
            free(x);
            return;
        }
        if (sb_registry_lookup(w, cfg.registry, x->user, x->len, cl_prefetched, x) < 0) {
            sb_table_remove(&sh->lpending, x->user, x->len);
            free(x);
            return;
        }
    }
}

/*
 * Pushes op to every device of users (except the device skip_conn_id): this node's by mail,
 * other nodes' once the registry said where they are.
 */
static void cl_push(struct sb_worker *w, const struct sb_op *op, enum chat_class cls,
                    const char *conv, size_t conv_len, uint64_t seq, uint64_t skip_conn_id,
                    const char *sender, size_t sender_len, const struct sb_convs_member *users,
                    size_t n)
{
    struct chat_fan f;
    struct cl_push *p = calloc(1, sizeof(*p));
    if (!p || fan_init(&f, op) < 0) {
        free(p);
        sb_log(SB_LOG_WARN, -ENOMEM, "%.*s: a push dropped (it is in history)", (int)conv_len,
               conv);
        return;
    }
    p->cls = (uint8_t)cls;
    p->seq = seq;
    p->conv_len = conv_len;
    memcpy(p->conv, conv, conv_len);
    p->sender_len = sender_len;
    memcpy(p->sender, sender, sender_len);
    p->json_len = f.json_len;
    p->bin_len = f.bin_len;
    p->pending = 1; /* this function's own: the last answer cannot come before it is done */
    if ((p->enc = malloc(f.json_len + f.bin_len + 1)))
        memcpy(p->enc, f.enc, f.json_len + f.bin_len);
    struct chat_shard *sh = my_shard(w);
    uint64_t now = wall_ms();
    for (size_t i = 0; i < n; i++) {
        const char *id = users[i].id;
        size_t len = users[i].len;
        fan_add(&f, id, len, sb_home_worker(id, len, cfg.workers));
        if (!p->enc)
            continue;
        const struct cl_cached *c = sb_table_get(&sh->lcache, id, len);
        if (c && c->expires_ms > now) {
            if (c->n == 0)
                cl_offline(w, p, id, len);
            for (unsigned k = 0; k < c->n; k++) {
                const char *node = sh->lnodes[c->loc[k].node];
                cl_add(p, node, strlen(node), c->loc[k].worker, id, len);
            }
            continue;
        }
        struct cl_lookup *x = len <= SB_USER_ID_MAX ? malloc(sizeof(*x)) : NULL;
        if (!x)
            continue;
        x->p = p;
        x->gen = sh->lgen;
        x->len = users[i].len;
        memcpy(x->user, users[i].id, users[i].len);
        x->user[x->len] = '\0';
        if (sb_registry_lookup(w, cfg.registry, users[i].id, users[i].len, cl_looked_up, x) < 0)
            free(x);
        else
            p->pending++;
    }
    fan_post(w, &f, cls, conv, conv_len, seq, skip_conn_id);
    if (--p->pending == 0)
        cl_publish(w, p);
}

/* A push from another node for users on this worker (the channel's cb). */
/* The location cache: every entry dropped (a lapse may have lost invalidations). */
static void cl_cache_reset(struct sb_worker *w, void *arg)
{
    (void)arg;
    struct chat_shard *sh = my_shard(w);
    cl_cache_clear(sh);
    sh->lgen++;
}

/*
 * This worker's channel lapsed (a failover, a slot migration, Redis away): pushes from other
 * nodes may be lost, and no device would notice the last ones. Its devices are asked to
 * reconnect (spread over CL_LAPSE_SPREAD_MS) and sync; worker 0's channel also carries the
 * cache invalidations, so a lapse there resets every worker's cache.
 */
static void cl_lapsed(struct sb_worker *w)
{
    static const char why[] = "pushes from other nodes were interrupted; reconnect and sync";
    if (sb_worker_id(w) == 0) {
        for (unsigned k = 1; k < cfg.workers; k++)
            (void)sb_worker_post(w, k, cl_cache_reset, NULL);
    }
    cl_cache_reset(w, NULL);
    const struct sb_table *t = &my_shard(w)->users;
    size_t n = 0;
    for (size_t i = 0; i < t->cap; i++) {
        const struct chat_user *u = t->slots[i].obj;
        for (const struct chat_device *d = t->slots[i].hash ? u->devices : NULL; d; d = d->next) {
            if (d->http || sb_conn_is_closing(d->conn))
                continue;
            struct sb_op op = {.type = SB_OP_GOAWAY};
            op.u.goaway = (struct sb_op_goaway){
                .reconnect_after_ms =
                    (uint32_t)((d->conn_id * 0x9E3779B97F4A7C15ull) >> 40) % CL_LAPSE_SPREAD_MS,
                .reason = sb_slice_from(why, sizeof(why) - 1)};
            sb__session_send_op(d->conn, &op);
            sb__session_close(d->conn, SB_WS_CLOSE_TRY_AGAIN, "reconnect and sync");
            n++;
        }
    }
    sb_log(SB_LOG_WARN, 0,
           "worker %u: its Redis channel lapsed, so pushes from other nodes may be lost: %zu "
           "devices asked to reconnect and sync",
           sb_worker_id(w), n);
}

static void cl_arrive(struct sb_worker *w, void *arg, const char *channel, size_t clen,
                      const char *msg, size_t len)
{
    (void)arg;
    if (!msg) {
        cl_lapsed(w);
        return;
    }
    struct sb_envelope e;
    if (sb_envelope_parse(msg, len, &e) < 0 || (e.cls != SB_ENVELOPE_INVAL && e.cls > CLASS_TYPING))
        goto bad;
    if (e.cls == SB_ENVELOPE_INVAL) {
        /* Worker 0 hears it for the node: every worker drops these users from its cache. */
        for (unsigned k = 0; k < cfg.workers; k++) {
            struct chat_envelope *env = malloc(sizeof(*env) + e.users_len);
            if (!env)
                continue;
            env->users_len = e.users_len;
            memcpy(env->data, e.users, e.users_len);
            if (sb_worker_post(w, k, cl_inval_arrive, env) < 0)
                free(env);
        }
        return;
    }
    struct chat_envelope *env = malloc(sizeof(*env) + e.json_len + e.bin_len + e.users_len);
    if (!env)
        return;
    env->cls = e.cls;
    env->skip_conn_id = 0;
    env->seq = e.seq;
    env->conv_len = e.conv_len;
    memcpy(env->conv, e.conv, e.conv_len);
    env->json_len = e.json_len;
    env->bin_len = e.bin_len;
    env->users_len = e.users_len;
    memcpy(env->data, e.json, e.json_len);
    memcpy(env->data + e.json_len, e.bin, e.bin_len);
    memcpy(env->data + e.json_len + e.bin_len, e.users, e.users_len);
    envelope_arrive(w, env);
    return;
bad:
    sb_log(SB_LOG_WARN, -EBADMSG, "a malformed push on %.*s (%zu bytes) dropped", (int)clen,
           channel, len);
}

static void cl_start(struct sb_worker *w, void *arg)
{
    (void)arg;
    const char *self = sb_registry_node_id(cfg.registry);
    char ch[CL_CHANNEL_MAX];
    size_t clen = cl_channel(ch, self, strlen(self), sb_worker_id(w));
    int e = sb_redis_ssubscribe(w, cfg.redis, ch, clen, cl_arrive, NULL);
    if (e < 0)
        sb_log(SB_LOG_ERROR, e, "worker %u cannot subscribe to %s: no pushes from other nodes",
               sb_worker_id(w), ch);
}

static enum sb_op_err cl_code(const struct sb_convs_result *res)
{
    if (res->code_len == 9 && memcmp(res->code, "forbidden", 9) == 0)
        return SB_OP_ERR_FORBIDDEN;
    if (res->code_len == 9 && memcmp(res->code, "not_found", 9) == 0)
        return SB_OP_ERR_NOT_FOUND;
    if (res->code_len == 8 && memcmp(res->code, "conflict", 8) == 0)
        return SB_OP_ERR_CONFLICT;
    return SB_OP_ERR_INTERNAL;
}

/* Answers a request Redis refused, or could not take (retryable: it was not done, or may have
 * been: a retry with the same client id is answered with the first ack either way). */
static bool cl_refused(struct sb_worker *w, const struct chat_req *q, int err,
                       const struct sb_convs_result *res)
{
    if (err < 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "the cluster store is unavailable (%s); retry",
                 sb_redis_strerror(err));
        if (err != -ESHUTDOWN)
            sb_log(SB_LOG_DEBUG, err, "%s: %s", q->conv, msg);
        struct sb_op op = {.type = SB_OP_ERROR};
        op.u.error = (struct sb_op_error){.code = err == -EPROTO ? SB_OP_ERR_INTERNAL
                                                                 : SB_OP_ERR_UNAVAILABLE,
                                          .retry_after_ms = err == -EPROTO ? 0 : CL_RETRY_MS,
                                          .message = sb_slice_from(msg, strlen(msg)),
                                          .conv = sb_slice_from(q->conv, q->conv_len)};
        struct chat_to to = to_req(q);
        answer(w, &to, &op, false);
        return true;
    }
    if (res->status != 0)
        return false;
    char msg[256];
    snprintf(msg, sizeof(msg), "%.*s", (int)res->message_len, res->message);
    req_error(w, q, cl_code(res), msg);
    return true;
}

static void cl_message_op(const char *conv, size_t conv_len, const struct sb_convs_msg *m,
                          struct sb_op_message *out)
{
    struct sb_store_rec r = {.type = SB_STORE_MESSAGE,
                             .system = m->system,
                             .body_form = m->system ? SB_STORE_BODY_JSON : m->form,
                             .seq = m->seq,
                             .msg_id = m->msg_id,
                             .ts_ms = m->ts_ms,
                             .conv = conv,
                             .device = m->device,
                             .user = m->user,
                             .client_id = m->client_id,
                             .body = m->body,
                             .conv_len = conv_len,
                             .device_len = m->device_len,
                             .user_len = m->user_len,
                             .client_id_len = m->client_id_len,
                             .body_len = m->body_len};
    if (r.body_form > SB_STORE_BODY_BASE64)
        r.body_form = SB_STORE_BODY_BYTES;
    message_op(&r, out);
}

/* A direct conversation's members, as a request's sender may see them: false when q's user is
 * not one of them (answered). */
static bool cl_dm(struct sb_worker *w, const struct chat_req *q, struct sb_convs_member out[2],
                  char a[SB_USER_ID_MAX + 1], char b[SB_USER_ID_MAX + 1])
{
    if (strcmp(a, q->user) != 0 && strcmp(b, q->user) != 0) {
        req_error(w, q, SB_OP_ERR_FORBIDDEN, "not a member of this conversation");
        return false;
    }
    out[0] = (struct sb_convs_member){a, strlen(a), false};
    out[1] = (struct sb_convs_member){b, strlen(b), false};
    return true;
}

/*
 * The users' conversation index (conv_list): a group's members are added and taken out by its
 * system messages; a direct conversation is added for both users by the first send a worker
 * makes to it (then remembered, up to CL_INDEXED_MAX; a failed write is tried again by the next
 * send). A write that fails leaves the conversation out of conv_list (its history is intact).
 */
#define CL_INDEXED_MAX 100000

struct cl_indexed {
    uint8_t len;
    char id[SB_CONV_ID_MAX + 1];
};

static const char *indexed_key(const void *obj, size_t *len)
{
    const struct cl_indexed *x = obj;
    *len = x->len;
    return x->id;
}

static void cl_index_done(struct sb_worker *w, void *arg, int err,
                          const struct sb_convs_result *res)
{
    (void)res;
    struct cl_indexed *x = arg; /* a direct conversation's id, or NULL */
    if (err < 0) {
        sb_log(SB_LOG_DEBUG, err, "a conversation index write failed (%s)", sb_redis_strerror(err));
        if (x) /* the next send writes it again */
            free(sb_table_remove(&my_shard(w)->indexed, x->id, x->len));
    }
    free(x);
}

static void cl_index(struct sb_worker *w, const char *user, size_t user_len, const char *conv,
                     size_t conv_len, bool member, bool dm)
{
    struct cl_indexed *x = dm ? malloc(sizeof(*x)) : NULL;
    if (x) {
        x->len = (uint8_t)conv_len;
        memcpy(x->id, conv, conv_len);
    }
    if (sb_convs_index(w, cfg.redis, user, user_len, conv, conv_len, member, cl_index_done, x) < 0)
        cl_index_done(w, x, -EAGAIN, NULL);
}

/* A direct conversation's first send from this worker: both users' index. */
static void cl_index_dm(struct sb_worker *w, const char *conv, size_t conv_len,
                        const struct sb_convs_member dm[2])
{
    struct chat_shard *sh = my_shard(w);
    if (conv_len > SB_CONV_ID_MAX || sb_table_get(&sh->indexed, conv, conv_len))
        return;
    if (sh->indexed.count >= CL_INDEXED_MAX) {
        for (size_t k = 0; k < sh->indexed.cap; k++)
            free(sh->indexed.slots[k].obj);
        sb_table_destroy(&sh->indexed);
        sb_table_init(&sh->indexed, indexed_key);
    }
    struct cl_indexed *x = malloc(sizeof(*x));
    if (!x)
        return;
    x->len = (uint8_t)conv_len;
    memcpy(x->id, conv, conv_len);
    if (sb_table_add(&sh->indexed, x) < 0) {
        free(x);
        return;
    }
    for (int i = 0; i < 2; i++)
        cl_index(w, dm[i].id, dm[i].len, conv, conv_len, true, true);
}

/*
 * A group's members as of one membership version, kept per worker so that a send to the group
 * does not bring all of them back from Redis each time: the send script answers with the
 * members only when the version it is given is not the current one. Requests in flight hold a
 * reference; past CL_MEMBERS_MAX members the cache starts over.
 */
#define CL_MEMBERS_MAX 200000 /* members held per worker */

struct cl_members {
    unsigned refs; /* the cache's, and each request's in flight */
    uint64_t mver;
    size_t n;
    uint8_t len;
    char id[SB_CONV_ID_MAX + 1];
    struct sb_convs_member m[]; /* n of them, then their ids' bytes */
};

static const char *members_key(const void *obj, size_t *len)
{
    const struct cl_members *c = obj;
    *len = c->len;
    return c->id;
}

static void cl_members_release(struct cl_members *c)
{
    if (c && --c->refs == 0)
        free(c);
}

static void cl_members_clear(struct chat_shard *sh)
{
    for (size_t k = 0; k < sh->members.cap; k++)
        cl_members_release(sh->members.slots[k].obj);
    sb_table_destroy(&sh->members);
    sb_table_init(&sh->members, members_key);
    sh->nmembers = 0;
}

/* Keeps a group's members as of version mver (replacing older ones). */
static void cl_members_put(struct chat_shard *sh, const char *conv, size_t len, uint64_t mver,
                           const struct sb_convs_member *m, size_t n)
{
    struct cl_members *old = sb_table_remove(&sh->members, conv, len);
    if (old) {
        sh->nmembers -= old->n;
        cl_members_release(old);
    }
    if (n > CL_MEMBERS_MAX || len > SB_CONV_ID_MAX)
        return;
    if (sh->nmembers + n > CL_MEMBERS_MAX)
        cl_members_clear(sh);
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += m[i].len;
    struct cl_members *c = malloc(sizeof(*c) + n * sizeof(*c->m) + bytes);
    if (!c)
        return;
    *c = (struct cl_members){.refs = 1, .mver = mver, .n = n, .len = (uint8_t)len};
    memcpy(c->id, conv, len);
    char *str = (char *)(c->m + n);
    for (size_t i = 0; i < n; i++) {
        memcpy(str, m[i].id, m[i].len);
        c->m[i] = (struct sb_convs_member){str, m[i].len, m[i].admin};
        str += m[i].len;
    }
    if (sb_table_add(&sh->members, c) < 0) {
        free(c);
        return;
    }
    sh->nmembers += n;
}

static void cl_sent(struct sb_worker *w, void *arg, int err, const struct sb_convs_result *res)
{
    struct chat_req *q = arg;
    if (cl_refused(w, q, err, res)) {
        cl_members_release(q->members);
        free(q);
        return;
    }
    struct sb_op op = {.type = SB_OP_ACK};
    op.u.ack = (struct sb_op_ack){.msg_id = res->msg_id,
                                  .seq = res->seq,
                                  .ts_ms = res->ts_ms,
                                  .is_duplicate = res->status == 2,
                                  .client_id = sb_slice_from(q->client_id, q->client_id_len),
                                  .conv = sb_slice_from(q->conv, q->conv_len)};
    struct chat_to to = to_req(q);
    answer(w, &to, &op, false);
    /* A repeat is pushed again: its first try may have been written but not acknowledged (a
     * lost answer, the replicas' WAIT ran out), and then nobody pushed it. Devices tell a
     * repeat by its seq. */
    struct sb_convs_msg m = {.seq = res->seq,
                             .msg_id = res->msg_id,
                             .ts_ms = res->ts_ms,
                             .form = q->body_form,
                             .user = q->user,
                             .user_len = q->user_len,
                             .device = q->device,
                             .device_len = q->device_len,
                             .client_id = q->client_id,
                             .client_id_len = q->client_id_len,
                             .body = q->text,
                             .body_len = q->text_len};
    if (res->status == 2 && res->nmsgs == 0) {
        cl_members_release(q->members);
        free(q); /* trimmed from history: long delivered or synced */
        return;
    }
    if (res->status == 2)
        m = res->msgs[0];
    else
        sb_metric_add(w, SB_M_MESSAGES_STORED, 1);
    struct sb_op msg = {.type = SB_OP_MESSAGE};
    cl_message_op(q->conv, q->conv_len, &m, &msg.u.message);
    struct sb_convs_member dm[2];
    char a[SB_USER_ID_MAX + 1], b[SB_USER_ID_MAX + 1];
    const struct sb_convs_member *users = dm;
    size_t n = 2;
    if (res->have_members) {
        if (res->status == 1)
            cl_members_put(my_shard(w), q->conv, q->conv_len, res->mver, res->members,
                           res->nmembers);
        users = res->members, n = res->nmembers;
    } else if (res->mver) {
        /* Unchanged since the version this send named: the members it holds. */
        users = q->members ? q->members->m : NULL, n = q->members ? q->members->n : 0;
    } else if (!dm_members(q->conv, q->conv_len, a, b) || !cl_dm(w, q, dm, a, b)) {
        n = 0;
    } else if (res->status == 1) {
        cl_index_dm(w, q->conv, q->conv_len, dm);
    }
    if (n)
        cl_push(w, &msg, CLASS_MESSAGE, q->conv, q->conv_len, m.seq, q->conn_id, q->user,
                q->user_len, users, n);
    cl_members_release(q->members);
    free(q);
}

/* The members of a conv answer (admins only, or all). */
struct cl_mlist {
    const struct sb_convs_result *res;
    bool admins;
};

static int cl_mlist_next(struct sb_ops_list_iter *it, void *item)
{
    const struct cl_mlist *ml = (const void *)it->list->raw.base;
    while (it->off < ml->res->nmembers) {
        const struct sb_convs_member *m = &ml->res->members[it->off++];
        if (!ml->admins || m->admin) {
            *(struct sb_slice *)item = sb_slice_from(m->id, m->len);
            it->index++;
            return 1;
        }
    }
    return 0;
}

static struct sb_ops_list cl_mlist_list(const struct cl_mlist *ml)
{
    uint32_t n = 0;
    for (size_t i = 0; i < ml->res->nmembers; i++)
        n += !ml->admins || ml->res->members[i].admin;
    return (struct sb_ops_list){
        .count = n, .raw = sb_slice_from((const char *)ml, sizeof(*ml)), .next = cl_mlist_next};
}

static void cl_changed(struct sb_worker *w, void *arg, int err, const struct sb_convs_result *res)
{
    struct chat_req *q = arg;
    if (cl_refused(w, q, err, res)) {
        free(q);
        return;
    }
    /* Each system message goes to the members after the change and to those it removed. */
    size_t n = res->nmembers + res->nremoved;
    struct sb_convs_member *to = res->nmsgs ? malloc((n ? n : 1) * sizeof(*to)) : NULL;
    if (to) {
        memcpy(to, res->members, res->nmembers * sizeof(*to));
        memcpy(to + res->nmembers, res->removed, res->nremoved * sizeof(*to));
    }
    for (size_t i = 0; to && i < res->nmsgs; i++) {
        struct sb_op msg = {.type = SB_OP_MESSAGE};
        cl_message_op(q->conv, q->conv_len, &res->msgs[i], &msg.u.message);
        cl_push(w, &msg, CLASS_MESSAGE, q->conv, q->conv_len, res->msgs[i].seq, 0, q->user,
                q->user_len, to, n);
    }
    free(to);
    for (size_t i = 0; i < res->nmsgs; i++) {
        const struct sb_convs_msg *m = &res->msgs[i];
        if (m->system == SB_STORE_SYS_CREATED) {
            for (size_t k = 0; k < res->nmembers; k++)
                cl_index(w, res->members[k].id, res->members[k].len, q->conv, q->conv_len, true,
                         false);
        } else if (m->system == SB_STORE_SYS_ADDED || m->system == SB_STORE_SYS_REMOVED) {
            cl_index(w, m->body, m->body_len, q->conv, q->conv_len, m->system == SB_STORE_SYS_ADDED,
                     false);
        }
    }
    sb_metric_add(w, SB_M_MESSAGES_STORED, res->nmsgs);
    struct cl_mlist admins = {res, true}, members = {res, false};
    struct sb_op op = {.type = SB_OP_CONV};
    op.u.conv = (struct sb_op_conv){.last_seq = res->last_seq,
                                    .read_seq = res->read_seq,
                                    .conv = sb_slice_from(q->conv, q->conv_len),
                                    .name = sb_slice_from(res->name, res->name_len),
                                    .owner = sb_slice_from(res->owner, res->owner_len),
                                    .admins = cl_mlist_list(&admins),
                                    .members = cl_mlist_list(&members)};
    struct chat_to ans = to_req(q);
    answer(w, &ans, &op, false);
    free(q);
}

/* Receipts and typing are not answered over a WebSocket; an HTTP client waits for "ok". */
static void cl_ok(struct sb_worker *w, const struct chat_req *q)
{
    static const char ok[] = "{\"type\":\"ok\"}";
    if (!q->http)
        return;
    struct chat_reply *r = reply_new(q->conn_id, true, q->user, q->user_len, sizeof(ok));
    if (r) {
        r->len = sizeof(ok) - 1;
        memcpy(r->data, ok, r->len);
        reply_post(w, q->from_worker, r, false);
    }
}

static void cl_receipted(struct sb_worker *w, void *arg, int err, const struct sb_convs_result *res)
{
    struct chat_req *q = arg;
    if (cl_refused(w, q, err, res)) {
        free(q);
        return;
    }
    cl_ok(w, q);
    if (res->seq) {
        /* To the user's other devices and to the senders of the messages it covers. */
        struct sb_op op = {0};
        signal_op(&op, q, res->seq);
        struct sb_convs_member *to = malloc((res->nmembers + 1) * sizeof(*to));
        if (to) {
            to[0] = (struct sb_convs_member){q->user, q->user_len, false};
            memcpy(to + 1, res->members, res->nmembers * sizeof(*to));
            cl_push(w, &op, CLASS_RECEIPT, q->conv, q->conv_len, res->seq, q->conn_id, q->user,
                    q->user_len, to, res->nmembers + 1);
            free(to);
        }
    }
    free(q);
}

/* Typing goes to every other member. */
static void cl_typing(struct sb_worker *w, const struct chat_req *q,
                      const struct sb_convs_member *members, size_t n)
{
    struct sb_convs_member *to = malloc((n ? n : 1) * sizeof(*to));
    size_t k = 0;
    for (size_t i = 0; to && i < n; i++) {
        if (!(members[i].len == q->user_len && memcmp(members[i].id, q->user, q->user_len) == 0))
            to[k++] = members[i];
    }
    struct sb_op op = {0};
    signal_op(&op, q, 0);
    if (to)
        cl_push(w, &op, CLASS_TYPING, q->conv, q->conv_len, 0, q->conn_id, q->user, q->user_len, to,
                k);
    free(to);
}

static void cl_typed(struct sb_worker *w, void *arg, int err, const struct sb_convs_result *res)
{
    struct chat_req *q = arg;
    if (!cl_refused(w, q, err, res)) {
        cl_typing(w, q, res->members, res->nmembers);
        cl_ok(w, q);
    }
    free(q);
}

/* Typing: once a second per user and conversation, counted on the user's home worker (where
 * all its devices are on this node). */
struct cl_typed_at {
    uint64_t ms;
    uint8_t len;
    char key[SB_USER_ID_MAX + 1 + SB_CONV_ID_MAX + 1]; /* user ":" conv */
};

static const char *typed_key(const void *obj, size_t *len)
{
    const struct cl_typed_at *t = obj;
    *len = t->len;
    return t->key;
}

static bool cl_typing_due(struct chat_shard *sh, const struct chat_req *q)
{
    char key[sizeof(((struct cl_typed_at *)0)->key)];
    int n = snprintf(key, sizeof(key), "%s:%s", q->user, q->conv);
    if (n < 0 || (size_t)n >= sizeof(key))
        return false;
    uint64_t now = wall_ms();
    struct cl_typed_at *t = sb_table_get(&sh->typing, key, (size_t)n);
    if (t && now - t->ms < TYPING_INTERVAL_MS)
        return false;
    if (!t) {
        if (sh->typing.count >= CL_CACHE_MAX) {
            for (size_t k = 0; k < sh->typing.cap; k++)
                free(sh->typing.slots[k].obj);
            sb_table_destroy(&sh->typing);
            sb_table_init(&sh->typing, typed_key);
        }
        if (!(t = calloc(1, sizeof(*t))))
            return true;
        t->len = (uint8_t)n;
        memcpy(t->key, key, (size_t)n);
        if (sb_table_add(&sh->typing, t) < 0) {
            free(t);
            return true;
        }
    }
    t->ms = now;
    return true;
}

static const char *const cl_kinds[] = {
    [REQ_CREATE] = "create", [REQ_ADD] = "add",       [REQ_REMOVE] = "remove",
    [REQ_LEAVE] = "leave",   [REQ_RENAME] = "rename", [REQ_PROMOTE] = "promote",
    [REQ_DEMOTE] = "demote", [REQ_GET] = "get",
};

/* A request in cluster mode, on the requesting device's worker. Takes q. */
static void cl_request(struct sb_worker *w, struct chat_req *q)
{
    struct chat_shard *sh = my_shard(w);
    char a[SB_USER_ID_MAX + 1], b[SB_USER_ID_MAX + 1];
    bool dm = dm_members(q->conv, q->conv_len, a, b);
    q->members = NULL; /* cl_sent answers every kind's failure to start, and releases it */
    struct sb_convs_who who = {.conv = q->conv,
                               .conv_len = q->conv_len,
                               .user = q->user,
                               .user_len = q->user_len,
                               .device = q->device,
                               .device_len = q->device_len,
                               .group = !dm};
    int e;
    struct sb_convs_member members[2];
    bool conversation = q->kind == REQ_SEND || q->kind == REQ_RECEIPT || q->kind == REQ_TYPING;
    if (conversation && !dm && !is_group_id(q->conv, q->conv_len)) {
        req_error(w, q, SB_OP_ERR_NOT_FOUND, "no such conversation");
        free(q);
        return;
    }
    if (conversation && dm && !cl_dm(w, q, members, a, b)) {
        free(q);
        return;
    }
    if (q->kind == REQ_TYPING && !cl_typing_due(sh, q)) {
        cl_ok(w, q);
        free(q);
        return;
    }
    if (q->kind == REQ_TYPING && dm) {
        cl_typing(w, q, members, 2);
        cl_ok(w, q);
        free(q);
        return;
    }
    if (q->kind == REQ_SEND) {
        uint64_t now = wall_ms();
        struct sb_convs_msg m = {.msg_id = sb_msgid_next(&sh->ids, now),
                                 .ts_ms = now,
                                 .form = q->body_form,
                                 .client_id = q->client_id,
                                 .client_id_len = q->client_id_len,
                                 .body = q->text,
                                 .body_len = q->text_len};
        q->members = dm ? NULL : sb_table_get(&sh->members, q->conv, q->conv_len);
        if (q->members)
            q->members->refs++;
        if (dm || q->members)
            cl_prefetch(w, dm ? members : q->members->m, dm ? 2 : q->members->n);
        e = sb_convs_send(w, cfg.redis, &who, &m, cfg.history_max,
                          q->members ? q->members->mver : 0, cl_sent, q);
    } else if (q->kind == REQ_RECEIPT) {
        e = sb_convs_receipt(w, cfg.redis, &who, q->receipt_kind == SB_RECEIPT_READ, q->seq,
                             RECEIPT_SENDERS_MAX, cl_receipted, q);
    } else if (q->kind == REQ_TYPING) {
        struct sb_convs_change c = {.kind = "get", .ts_ms = wall_ms(), .ids = &(uint64_t){0}};
        e = sb_convs_change(w, cfg.redis, &who, &c, cl_typed, q);
    } else if (q->kind >= REQ_CREATE && q->kind <= REQ_GET) {
        if (dm) {
            req_error(w, q, SB_OP_ERR_BAD_REQUEST,
                      "a direct conversation has no settings to change");
            free(q);
            return;
        }
        const char *users[USERS_MAX];
        size_t lens[USERS_MAX];
        uint64_t ids[USERS_MAX];
        const char *p = q->users;
        uint32_t n = q->nusers < USERS_MAX ? q->nusers : USERS_MAX;
        uint64_t now = wall_ms();
        for (uint32_t i = 0; i < n; i++) {
            users[i] = unpack_user(p, &lens[i]);
            p = users[i] + lens[i];
        }
        for (uint32_t i = 0; i < (n ? n : 1); i++)
            ids[i] = sb_msgid_next(&sh->ids, now);
        struct sb_convs_change c = {.kind = cl_kinds[q->kind],
                                    .text = q->text,
                                    .text_len = q->text_len,
                                    .users = users,
                                    .user_lens = lens,
                                    .nusers = n,
                                    .ts_ms = now,
                                    .ids = ids,
                                    .history_max = cfg.history_max,
                                    .max_members = cfg.max_group_members};
        e = sb_convs_change(w, cfg.redis, &who, &c, cl_changed, q);
    } else {
        req_error(w, q, SB_OP_ERR_UNSUPPORTED, "not available in cluster mode");
        free(q);
        return;
    }
    if (e < 0)
        cl_sent(w, q, e, NULL); /* answers the error and frees q (the callback never runs) */
}

/*
 * conv_list in cluster mode: the user's index, then one summary per conversation (in parallel,
 * each on its own slot). A conversation the user is no longer in leaves the index on the way.
 */
#define CL_LIST_MAX 10000 /* conversations listed at most */

struct cl_listing {
    struct chat_req *q;
    size_t pending, n;
    bool failed;
    struct chat_conv_item *items;
};

struct cl_listed_conv {
    struct cl_listing *l;
    size_t len;
    char conv[SB_CONV_ID_MAX + 1];
};

static void cl_list_finish(struct sb_worker *w, struct cl_listing *l)
{
    struct chat_to to = to_req(l->q);
    if (l->failed) {
        answer_error(w, &to, SB_OP_ERR_UNAVAILABLE,
                     "the cluster store is unavailable (a conversation could not be read); retry",
                     NULL, 0);
    } else {
        struct sb_op op = {.type = SB_OP_CONVS};
        op.u.convs.convs = (struct sb_ops_list){
            .count = (uint32_t)l->n,
            .raw = sb_slice_from((const char *)l->items, l->n * sizeof(*l->items)),
            .next = items_next};
        answer(w, &to, &op, false);
    }
    free(l->items);
    free(l->q);
    free(l);
}

static void cl_summarized(struct sb_worker *w, void *arg, int err,
                          const struct sb_convs_result *res)
{
    struct cl_listed_conv *x = arg;
    struct cl_listing *l = x->l;
    if (err < 0) {
        l->failed = true;
    } else if (res->status == 0) {
        /* Not a member any more (or the group is gone): the index missed the removal. */
        cl_index(w, l->q->user, l->q->user_len, x->conv, x->len, false, false);
    } else {
        struct chat_conv_item *it = &l->items[l->n++];
        *it = (struct chat_conv_item){.last_seq = res->last_seq,
                                      .read_seq = res->read_seq,
                                      .member_count = (uint32_t)res->member_count,
                                      .conv_len = (uint8_t)x->len};
        memcpy(it->conv, x->conv, x->len);
        it->name_len =
            (uint8_t)(res->name_len < sizeof(it->name) ? res->name_len : sizeof(it->name));
        memcpy(it->name, res->name, it->name_len);
        it->owner_len =
            (uint8_t)(res->owner_len < sizeof(it->owner) ? res->owner_len : sizeof(it->owner));
        memcpy(it->owner, res->owner, it->owner_len);
    }
    free(x);
    if (--l->pending == 0)
        cl_list_finish(w, l);
}

static void cl_user_listed(struct sb_worker *w, void *arg, int err,
                           const struct sb_convs_result *res)
{
    struct cl_listing *l = arg;
    size_t n = err < 0 ? 0 : res->nmembers < CL_LIST_MAX ? res->nmembers : CL_LIST_MAX;
    l->failed = err < 0;
    l->pending = 1; /* this function's own */
    if (n && !(l->items = calloc(n, sizeof(*l->items))))
        l->failed = true, n = 0;
    for (size_t i = 0; i < n; i++) {
        const struct sb_convs_member *c = &res->members[i];
        char a[SB_USER_ID_MAX + 1], b[SB_USER_ID_MAX + 1];
        bool dm = dm_members(c->id, c->len, a, b);
        if (c->len > SB_CONV_ID_MAX || (!dm && !is_group_id(c->id, c->len)))
            continue; /* not ours */
        struct cl_listed_conv *x = malloc(sizeof(*x));
        if (!x) {
            l->failed = true;
            break;
        }
        x->l = l;
        x->len = c->len;
        memcpy(x->conv, c->id, c->len);
        struct sb_convs_who who = {.conv = x->conv,
                                   .conv_len = x->len,
                                   .user = l->q->user,
                                   .user_len = l->q->user_len,
                                   .device = l->q->device,
                                   .device_len = l->q->device_len,
                                   .group = !dm};
        if (sb_convs_summary(w, cfg.redis, &who, cl_summarized, x) < 0) {
            free(x);
            l->failed = true;
            break;
        }
        l->pending++;
    }
    if (--l->pending == 0)
        cl_list_finish(w, l);
}

static void cl_list(struct sb_worker *w, struct chat_req *q)
{
    struct cl_listing *l = calloc(1, sizeof(*l));
    if (!l) {
        struct chat_to to = to_req(q);
        answer_error(w, &to, SB_OP_ERR_UNAVAILABLE, "out of memory; retry", NULL, 0);
        free(q);
        return;
    }
    l->q = q;
    int e = sb_convs_user_list(w, cfg.redis, q->user, q->user_len, cl_user_listed, l);
    if (e < 0)
        cl_user_listed(w, l, e, NULL);
}

/* A sync page built from Redis's answer. */
struct cl_hlist {
    const struct chat_sync *q;
    const struct sb_convs_msg *msgs;
};

static int cl_hlist_next(struct sb_ops_list_iter *it, void *item)
{
    const struct cl_hlist *h = (const void *)it->list->raw.base;
    if (it->index >= it->list->count)
        return 0;
    cl_message_op(h->q->conv, h->q->conv_len, &h->msgs[it->index++], item);
    return 1;
}

static void cl_synced(struct sb_worker *w, void *arg, int err, const struct sb_convs_result *res)
{
    struct chat_sync *q = arg;
    struct chat_to to = to_sync(q);
    if (err < 0 || res->status == 0) {
        char msg[256];
        if (err < 0)
            snprintf(msg, sizeof(msg), "the cluster store is unavailable (%s); retry",
                     sb_redis_strerror(err));
        else
            snprintf(msg, sizeof(msg), "%.*s", (int)res->message_len, res->message);
        answer_error(w, &to, err < 0 ? SB_OP_ERR_UNAVAILABLE : cl_code(res), msg, q->conv,
                     q->conv_len);
        free(q);
        return;
    }
    /* Redis was asked for one more than the limit: whether there is more. */
    size_t n = 0, bytes = 0;
    while (n < res->nmsgs && n < q->limit && (n == 0 || bytes < SYNC_PAGE_BYTES))
        bytes += res->msgs[n++].body_len + 128;
    uint64_t oldest = res->nmsgs ? res->msgs[0].seq : res->last_seq + 1;
    struct cl_hlist h = {q, res->msgs};
    struct sb_op op = {.type = SB_OP_SYNC_PAGE};
    op.u.sync_page = (struct sb_op_sync_page){
        .last_seq = n ? res->msgs[n - 1].seq : res->last_seq,
        .has_more = n < res->nmsgs,
        .truncated = q->last_seq < res->last_seq && q->last_seq + 1 < oldest,
        .conv = sb_slice_from(q->conv, q->conv_len),
        .messages = {.count = (uint32_t)n,
                     .raw = sb_slice_from((const char *)&h, sizeof(h)),
                     .next = cl_hlist_next}};
    struct chat_reply *rep = reply_op(&to, &op);
    if (rep)
        reply_post(w, q->from_worker, rep, false);
    else
        answer_error(w, &to, SB_OP_ERR_UNAVAILABLE, "out of memory; retry", q->conv, q->conv_len);
    free(q);
}

/* A sync of one conversation in cluster mode, on the device's worker. Takes q. */
static void cl_sync(struct sb_worker *w, struct chat_sync *q)
{
    char a[SB_USER_ID_MAX + 1], b[SB_USER_ID_MAX + 1];
    bool dm = dm_members(q->conv, q->conv_len, a, b);
    bool unknown = !dm && !is_group_id(q->conv, q->conv_len);
    if (unknown || (dm && strcmp(a, q->user) != 0 && strcmp(b, q->user) != 0)) {
        struct chat_to to = to_sync(q);
        answer_error(w, &to, unknown ? SB_OP_ERR_NOT_FOUND : SB_OP_ERR_FORBIDDEN,
                     unknown ? "no such conversation" : "not a member of this conversation",
                     q->conv, q->conv_len);
        free(q);
        return;
    }
    struct sb_convs_who who = {.conv = q->conv,
                               .conv_len = q->conv_len,
                               .user = q->user,
                               .user_len = q->user_len,
                               .device = "",
                               .group = !dm};
    int e = sb_convs_sync(w, cfg.redis, &who, q->last_seq, q->limit + 1, cl_synced, q);
    if (e < 0)
        cl_synced(w, q, e, NULL);
}

/* ---- client operations ---------------------------------------------------------------------- */

/* The request being handled: who sent it and the ids its answers carry. */
struct chat_in {
    struct sb_conn *c;
    struct chat_device *d;
    uint8_t enc;
    struct chat_rid rid;
    char id[SB_CLIENT_ID_MAX + 1]; /* the JSON "id" ("" when none) */
};

static void in_error(const struct chat_in *in, enum sb_op_err code, const char *message)
{
    send_error(in->c, in->rid, code, message);
}

static struct chat_req *req_new(enum chat_req_kind kind, const char *user, size_t user_len,
                                const char *device, const char *client_id, const char *conv,
                                size_t conv_len, const char *text, size_t text_len,
                                const char *users, size_t users_len, uint32_t nusers)
{
    size_t dev_len = strlen(device), id_len = strlen(client_id);
    struct chat_req *q =
        malloc(sizeof(*q) + user_len + dev_len + id_len + conv_len + text_len + users_len + 6);
    if (!q)
        return NULL;
    memset(q, 0, sizeof(*q));
    q->kind = (uint8_t)kind;
    char *p = q->data;
#define PUT(field, src, n)                                                                         \
    do {                                                                                           \
        if (n)                                                                                     \
            memcpy(p, src, n);                                                                     \
        p[n] = '\0';                                                                               \
        q->field = p;                                                                              \
        q->field##_len = n;                                                                        \
        p += (n) + 1;                                                                              \
    } while (0)
    PUT(user, user, user_len);
    PUT(device, device, dev_len);
    PUT(client_id, client_id, id_len);
    PUT(conv, conv, conv_len);
    PUT(text, text, text_len);
    PUT(users, users, users_len);
#undef PUT
    q->nusers = nusers;
    return q;
}

/* A request of `in`, mailed to its conversation's sequencer (q NULL: out of memory). */
static void req_send(const struct chat_in *in, struct chat_req *q)
{
    if (!q) {
        in_error(in, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
        return;
    }
    struct sb_worker *w = sb_conn_worker(in->c);
    q->from_worker = sb_worker_id(w);
    q->conn_id = in->d->conn_id;
    q->http = in->d->http;
    q->enc = in->enc;
    q->request_id = in->rid.request_id;
    if (cfg.redis) {
        cl_request(w, q);
        return;
    }
    unsigned home = sb_home_worker(q->conv, q->conv_len, cfg.workers);
    if (sb_worker_post(w, home, sequence, q) < 0) {
        free(q);
        in_error(in, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
    }
}

static struct chat_req *req_of(const struct chat_in *in, enum chat_req_kind kind,
                               const char *client_id, const char *conv, size_t conv_len,
                               const char *text, size_t text_len, const char *users,
                               size_t users_len, uint32_t nusers)
{
    const struct chat_device *d = in->d;
    return req_new(kind, d->user->id, d->user->id_len, d->id, client_id, conv, conv_len, text,
                   text_len, users, users_len, nusers);
}

/* The conversation a request names: the route's, "conv", or "to" (a user: the direct
 * conversation with them). Returns its length, or -1 when answered with an error. */
static ssize_t get_conv(const struct chat_in *in, struct sb_slice conv, struct sb_slice to,
                        char out[SB_CONV_ID_MAX + 1])
{
    if (in->d->path_conv) {
        size_t n = strlen(in->d->path_conv);
        memcpy(out, in->d->path_conv, n + 1);
        return (ssize_t)n;
    }
    if (to.len) {
        if (!sb_user_id_valid(to.base, to.len)) {
            in_error(in, SB_OP_ERR_BAD_REQUEST, "\"to\" is not a valid user id");
            return -1;
        }
        const struct chat_user *u = in->d->user;
        ssize_t n = sb_dm_conv_id(u->id, u->id_len, to.base, to.len, out);
        if (n < 0)
            in_error(in, SB_OP_ERR_BAD_REQUEST, "cannot send a direct message to yourself");
        return n;
    }
    if (conv.len && conv.len <= SB_CONV_ID_MAX) {
        memcpy(out, conv.base, conv.len);
        out[conv.len] = '\0';
        return (ssize_t)conv.len;
    }
    in_error(in, SB_OP_ERR_BAD_REQUEST, "needs \"conv\" (or \"to\" for a direct conversation)");
    return -1;
}

static const uint8_t op_form_to_store[] = {
    [SB_OP_BODY_BYTES] = SB_STORE_BODY_BYTES,
    [SB_OP_BODY_JSON] = SB_STORE_BODY_JSON,
    [SB_OP_BODY_BASE64] = SB_STORE_BODY_BASE64,
};

static void op_send(const struct chat_in *in, const struct sb_op_send *op)
{
    char conv[SB_CONV_ID_MAX + 1], client_id[SB_CLIENT_ID_MAX + 1];
    ssize_t conv_len = get_conv(in, op->conv, op->to, conv);
    if (conv_len < 0)
        return;
    if (sb_ops_body_len(&op->body) > cfg.max_body) {
        char msg[96];
        snprintf(msg, sizeof(msg), "body larger than %u bytes", cfg.max_body);
        in_error(in, SB_OP_ERR_TOO_LARGE, msg);
        return;
    }
    /* The body is kept in the form it came in, converted only for a reader of the other
     * encoding. */
    memcpy(client_id, op->client_id.base, op->client_id.len);
    client_id[op->client_id.len] = '\0';
    struct chat_req *q = req_of(in, REQ_SEND, client_id, conv, (size_t)conv_len, op->body.data.base,
                                op->body.data.len, NULL, 0, 0);
    if (q)
        q->body_form = op_form_to_store[op->body.form];
    req_send(in, q);
}

/* A conversation's name: valid UTF-8 (binary clients send bytes). */
static bool name_ok(const struct chat_in *in, struct sb_slice name)
{
    if (!name.len || sb_utf8_validate((const uint8_t *)name.base, name.len) == 0)
        return true;
    in_error(in, SB_OP_ERR_BAD_REQUEST, "\"name\" must be UTF-8 of at most 128 bytes");
    return false;
}

/*
 * Reads a list of user ids (members of a new group may be none), packed into a new buffer
 * (*out, free it). Returns the count, or -1 when answered with an error.
 */
static ssize_t get_users(const struct chat_in *in, const struct sb_ops_list *list, const char *key,
                         bool may_be_empty, char **out, size_t *len)
{
    char msg[128];
    *out = NULL;
    *len = 0;
    if ((list->count == 0 && !may_be_empty) || list->count > USERS_MAX) {
        snprintf(msg, sizeof(msg), "\"%s\" must be an array of 1-%d user ids", key, USERS_MAX);
        in_error(in, SB_OP_ERR_BAD_REQUEST, msg);
        return -1;
    }
    char *buf = malloc((size_t)list->count * PACKED_USER + 1);
    if (!buf) {
        in_error(in, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
        return -1;
    }
    struct sb_ops_list_iter it;
    struct sb_slice user;
    size_t n = 0;
    uint32_t count = 0;
    int rc;
    sb_ops_list_begin(&it, list);
    while ((rc = sb_ops_list_next(&it, &user)) > 0 && count < list->count) {
        if (!sb_user_id_valid(user.base, user.len))
            break;
        n += pack_user(buf + n, user.base, user.len);
        count++;
    }
    if (rc != 0 || count != list->count) {
        snprintf(msg, sizeof(msg), "\"%s\" holds an invalid user id", key);
        in_error(in, SB_OP_ERR_BAD_REQUEST, msg);
        free(buf);
        return -1;
    }
    *out = buf;
    *len = n;
    return count;
}

static void op_conv_create(const struct chat_in *in, const struct sb_op_conv_create *op)
{
    char *users;
    size_t users_len;
    if (!name_ok(in, op->name))
        return;
    ssize_t n = get_users(in, &op->members, "members", true, &users, &users_len);
    if (n < 0)
        return;
    if ((size_t)n + 1 > cfg.max_group_members) {
        free(users);
        in_error(in, SB_OP_ERR_CONFLICT, "more members than a group may have");
        return;
    }
    if (in->d->user->ngroups >= cfg.max_groups_per_user) {
        free(users);
        char msg[96];
        snprintf(msg, sizeof(msg), "you are in %u groups already (the limit)",
                 cfg.max_groups_per_user);
        in_error(in, SB_OP_ERR_CONFLICT, msg);
        return;
    }
    /* A fresh message id names the group: unique across workers, no coordination. */
    char conv[24];
    snprintf(conv, sizeof(conv), "g:%016llx",
             (unsigned long long)sb_msgid_next(&my_shard(sb_conn_worker(in->c))->ids, wall_ms()));
    req_send(in, req_of(in, REQ_CREATE, in->id, conv, strlen(conv), op->name.base, op->name.len,
                        users, users_len, (uint32_t)n));
    free(users);
}

/* conv_add/remove/promote/demote (users), conv_leave, conv_get, conv_rename (name). */
static void op_conv(const struct chat_in *in, enum chat_req_kind kind, struct sb_slice conv_id,
                    struct sb_slice name, const struct sb_ops_list *users_list)
{
    char conv[SB_CONV_ID_MAX + 1], *users = NULL;
    size_t users_len = 0;
    ssize_t n = 0;
    ssize_t conv_len = get_conv(in, conv_id, (struct sb_slice){0}, conv);
    if (conv_len < 0)
        return;
    if (kind == REQ_RENAME && !name_ok(in, name))
        return;
    if (users_list && (n = get_users(in, users_list, "users", false, &users, &users_len)) < 0)
        return;
    req_send(in, req_of(in, kind, in->id, conv, (size_t)conv_len, name.base, name.len, users,
                        users_len, (uint32_t)n));
    free(users);
}

/* receipt {conv, seq, kind} and typing {conv}: no answer unless refused. */
static void op_signal(const struct chat_in *in, const struct sb_op *op)
{
    char conv[SB_CONV_ID_MAX + 1];
    bool receipt = op->type == SB_OP_RECEIPT;
    ssize_t conv_len = receipt ? get_conv(in, op->u.receipt.conv, op->u.receipt.to, conv)
                               : get_conv(in, op->u.typing.conv, op->u.typing.to, conv);
    if (conv_len < 0)
        return;
    if (receipt && op->u.receipt.seq < 1) {
        in_error(in, SB_OP_ERR_BAD_REQUEST, "receipt needs \"seq\" (an integer >= 1)");
        return;
    }
    struct chat_req *q = req_of(in, receipt ? REQ_RECEIPT : REQ_TYPING, in->id, conv,
                                (size_t)conv_len, NULL, 0, NULL, 0, 0);
    if (q && receipt) {
        q->seq = op->u.receipt.seq;
        q->receipt_kind = op->u.receipt.kind;
    }
    req_send(in, q);
}

static void op_home(const struct chat_in *in, enum chat_req_kind kind, uint64_t seq,
                    uint32_t limit);

/* Mails a sync of one conversation to its sequencer; false when answered with an error. */
static bool sync_post(const struct chat_in *in, struct sb_slice conv, uint64_t last_seq,
                      uint32_t limit)
{
    struct sb_worker *w = sb_conn_worker(in->c);
    struct chat_sync *q = malloc(sizeof(*q));
    if (!q) {
        in_error(in, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
        return false;
    }
    struct chat_device *d = in->d;
    /* The device asks for what it missed: live deliveries of this conversation resume. */
    behind_in(d, conv.base, conv.len, true);
    *q = (struct chat_sync){.from_worker = sb_worker_id(w),
                            .conn_id = d->conn_id,
                            .http = d->http,
                            .enc = in->enc,
                            .request_id = in->rid.request_id,
                            .last_seq = last_seq,
                            .limit = limit,
                            .user_len = d->user->id_len,
                            .id_len = strlen(in->id),
                            .conv_len = conv.len};
    memcpy(q->user, d->user->id, q->user_len + 1);
    memcpy(q->id, in->id, q->id_len + 1);
    memcpy(q->conv, conv.base, conv.len);
    q->conv[conv.len] = '\0';
    if (cfg.redis) {
        cl_sync(w, q);
        return true;
    }
    if (sb_worker_post(w, sb_home_worker(conv.base, conv.len, cfg.workers), sync_serve, q) < 0) {
        free(q);
        in_error(in, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
        return false;
    }
    return true;
}

/* sync: by conversation {conv: last_seq}, or everything since a cursor of an earlier
 * sync_done ("0": all). */
static void op_sync(const struct chat_in *in, const struct sb_op_sync *op)
{
    uint32_t limit = op->limit == 0               ? SYNC_LIMIT_DEFAULT
                     : op->limit > SYNC_LIMIT_MAX ? SYNC_LIMIT_MAX
                                                  : op->limit;
    if (op->cursor.len) {
        char cursor[SB_OPS_CURSOR_MAX + 1], *end;
        memcpy(cursor, op->cursor.base, op->cursor.len);
        cursor[op->cursor.len] = '\0';
        errno = 0;
        unsigned long long ms = strtoull(cursor, &end, 10);
        if (op->convs.count || cursor[0] < '0' || cursor[0] > '9' || *end || errno) {
            in_error(in, SB_OP_ERR_BAD_REQUEST,
                     op->convs.count ? "sync takes \"convs\" or \"since\", not both"
                                     : "\"since\" must be a cursor from sync_done (or \"0\")");
            return;
        }
        /* Every conversation's pages resume live pushes, as a sync by conversation does. */
        free(in->d->behind);
        in->d->behind = NULL;
        op_home(in, REQ_SYNC_SINCE, ms, limit);
        return;
    }
    if (op->convs.count == 0) {
        in_error(in, SB_OP_ERR_BAD_REQUEST,
                 "sync needs \"convs\": {conversation: last_seq, ...} or \"since\": cursor");
        return;
    }
    if (op->convs.count > SYNC_MAX_CONVS) {
        in_error(in, SB_OP_ERR_BAD_REQUEST, "a sync names at most 100 conversations");
        return;
    }
    /* Everything is checked before anything is asked: a bad request gets one error only. */
    struct sb_ops_list_iter it;
    struct sb_op_resume r;
    int rc;
    sb_ops_list_begin(&it, &op->convs);
    while ((rc = sb_ops_list_next(&it, &r)) > 0 && r.conv.len && r.conv.len <= SB_CONV_ID_MAX)
        ;
    if (rc != 0) {
        in_error(in, SB_OP_ERR_BAD_REQUEST,
                 "\"convs\" maps conversation ids to last_seq (an integer >= 0)");
        return;
    }
    sb_ops_list_begin(&it, &op->convs);
    while (sb_ops_list_next(&it, &r) > 0 && sync_post(in, r.conv, r.last_seq, limit))
        ;
}

/* After WELCOME: the HELLO's resume list is synced as a SYNC by conversation would be. */
static void resume(struct sb_conn *c, struct chat_device *d, const struct sb_chat_login *login)
{
    struct sb_binproto_header hdr;
    struct sb_op op;
    if (!login->hello ||
        sb_binproto_decode_frame(login->hello, login->hello_len, 0, &hdr, &op) < 0 ||
        op.type != SB_OP_HELLO)
        return;
    struct chat_in in = {
        .c = c, .d = d, .enc = SB_ENC_BINARY, .rid = {.request_id = login->hello_id}};
    struct sb_ops_list_iter it;
    struct sb_op_resume r;
    sb_ops_list_begin(&it, &op.u.hello.resume);
    while (sb_ops_list_next(&it, &r) > 0 && r.conv.len <= SB_CONV_ID_MAX &&
           sync_post(&in, r.conv, r.last_seq, SYNC_LIMIT_DEFAULT))
        ;
}

/* conv_list on the user's home worker: gathered from the sequencers of its conversations. */
static void list_begin(struct sb_worker *w, const struct chat_req *r)
{
    struct chat_shard *sh = my_shard(w);
    struct chat_user *u = sb_table_get(&sh->users, r->user, r->user_len);
    struct chat_gather *g = calloc(1, sizeof(*g));
    struct chat_fan f;
    if (!g || fan_init(&f, NULL) < 0) {
        free(g);
        req_error(w, r, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
        return;
    }
    /* Conversation ids are packed like user ids, but may be longer: room for the longest. */
    for (size_t i = 0; u && i < u->convs.cap; i++) {
        const struct chat_uconv *uc = u->convs.slots[i].obj;
        if (!uc)
            continue;
        unsigned k = sb_home_worker(uc->id, uc->len, cfg.workers);
        if (f.to[k].cap - f.to[k].len < 1 + SB_CONV_ID_MAX) {
            size_t cap = f.to[k].cap * 2 + 16 * (1 + SB_CONV_ID_MAX);
            char *ids = realloc(f.to[k].users, cap);
            if (!ids) {
                g->failed = true;
                break;
            }
            f.to[k].users = ids;
            f.to[k].cap = cap;
        }
        f.to[k].users[f.to[k].len] = (char)uc->len;
        memcpy(f.to[k].users + f.to[k].len + 1, uc->id, uc->len);
        f.to[k].len += 1 + (size_t)uc->len;
    }
    g->id = ++sh->next_gather;
    g->conn_id = r->conn_id;
    g->from_worker = r->from_worker;
    g->http = r->http;
    g->enc = r->enc;
    g->request_id = r->request_id;
    g->sync = r->kind == REQ_SYNC_SINCE;
    g->start_ms = wall_ms();
    g->user_len = r->user_len;
    memcpy(g->user, r->user, r->user_len);
    g->req_len = r->client_id_len;
    memcpy(g->req, r->client_id, r->client_id_len + 1);
    g->next = sh->gathers;
    sh->gathers = g;
    g->parts = 1; /* held until every part is mailed */
    for (unsigned k = 0; k < cfg.workers; k++) {
        if (!f.to[k].len || g->failed)
            continue;
        uint32_t n = 0;
        for (size_t off = 0; off < f.to[k].len; off += 1 + (uint8_t)f.to[k].users[off])
            n++;
        struct chat_req *q = req_new(REQ_LIST, r->user, r->user_len, r->device, r->client_id, "", 0,
                                     NULL, 0, f.to[k].users, f.to[k].len, n);
        if (!q) {
            g->failed = true;
            continue;
        }
        q->seq = g->id;
        q->enc = r->enc;
        q->request_id = r->request_id;
        q->from_worker = sb_worker_id(w);
        /* A cursor of 0 (everything) still marks a sync: since_ms is at least 1. */
        q->since_ms = g->sync ? (r->seq ? r->seq : 1) : 0;
        q->limit = r->limit;
        if (sb_worker_post(w, k, list_serve, q) < 0) {
            free(q);
            g->failed = true;
        } else {
            g->parts++;
        }
    }
    fan_free(&f);
    if (--g->parts == 0)
        gather_finish(w, g);
}

/* A `devices` waiting for the registry (cluster mode): whom to answer. */
struct devices_wait {
    struct chat_to to;
    char user[SB_USER_ID_MAX + 1];
    char json_id[SB_CLIENT_ID_MAX + 1];
};

/* Answers `devices`: the user's devices here, and (cluster mode) those the registry has on other
 * live nodes, known by id only. */
static void devices_answer(struct sb_worker *w, const struct chat_to *to,
                           const struct sb_registry_loc *locs, size_t nlocs)
{
    struct chat_user *u = sb_table_get(&my_shard(w)->users, to->user, to->user_len);
    const char *self = sb__gw.registry ? sb_registry_node_id(sb__gw.registry) : "";
    size_t self_len = strlen(self);
    size_t n = u ? u->ndevices : 0;
    for (size_t k = 0; k < nlocs; k++)
        n += locs[k].devices;
    struct sb_op_device *items = calloc(n ? n : 1, sizeof(*items));
    if (!items) {
        struct sb_op op = {.type = SB_OP_ERROR};
        op.u.error.code = SB_OP_ERR_UNAVAILABLE;
        op.u.error.message = sb_slice_from("out of memory; retry", 20);
        answer(w, to, &op, false);
        return;
    }
    uint64_t now = sb_worker_now_ms(w);
    size_t i = 0;
    for (struct chat_device *d = u ? u->devices : NULL; d && i < n; d = d->next, i++) {
        items[i] = (struct sb_op_device){.session = d->conn_id,
                                         .connected_s = (now - d->since_ms) / 1000,
                                         .queued_bytes = sb_conn_out_bytes(d->conn),
                                         .behind = d->behind ? d->behind->n : 0,
                                         .device = sb_slice_from(d->id, strlen(d->id)),
                                         .node = sb_slice_from(self, self_len)};
    }
    for (size_t k = 0; k < nlocs; k++) {
        if (locs[k].node_len == self_len && memcmp(locs[k].node, self, self_len) == 0)
            continue; /* this node's: listed from memory above */
        const char *p = locs[k].ids, *end = p + locs[k].ids_len;
        while (p < end && i < n) {
            const char *sp = memchr(p, ' ', (size_t)(end - p));
            size_t len = (size_t)((sp ? sp : end) - p);
            if (len && len <= SB_DEVICE_ID_MAX)
                items[i++] =
                    (struct sb_op_device){.device = sb_slice_from(p, len),
                                          .node = sb_slice_from(locs[k].node, locs[k].node_len)};
            p += len + 1;
        }
    }
    struct chat_array a = {items, sizeof(*items)};
    struct sb_op op = {.type = SB_OP_DEVICE_LIST};
    op.u.device_list.user = sb_slice_from(to->user, to->user_len);
    op.u.device_list.devices = array_list(&a, (uint32_t)i);
    answer(w, to, &op, false);
    free(items);
}

static void devices_looked_up(struct sb_worker *w, void *arg, int err,
                              const struct sb_registry_loc *locs, size_t n)
{
    struct devices_wait *x = arg;
    if (err < 0)
        sb_log(SB_LOG_DEBUG, 0, "devices of %s: the registry cannot be read (%s): this node's only",
               x->user, sb_redis_strerror(err));
    devices_answer(w, &x->to, locs, n);
    free(x);
}

/* The user's devices online (`devices`). */
static void devices_list(struct sb_worker *w, const struct chat_req *r)
{
    struct chat_to to = to_req(r);
    if (!sb__gw.registry) {
        devices_answer(w, &to, NULL, 0);
        return;
    }
    struct devices_wait *x = malloc(sizeof(*x));
    if (!x) {
        req_error(w, r, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
        return;
    }
    x->to = to;
    memcpy(x->user, r->user, r->user_len);
    x->user[r->user_len] = '\0';
    x->to.user = x->user;
    if (to.rid.json_id) {
        snprintf(x->json_id, sizeof(x->json_id), "%s", to.rid.json_id);
        x->to.rid.json_id = x->json_id;
    }
    int rc = sb_registry_lookup(w, sb__gw.registry, r->user, r->user_len, devices_looked_up, x);
    if (rc < 0)
        devices_looked_up(w, x, rc, NULL, 0);
}

/* Requests served by the user's home worker (its index and devices live there). */
static void home_serve(struct sb_worker *w, void *arg)
{
    struct chat_req *q = arg;
    if (cfg.redis && q->kind == REQ_LIST_BEGIN) {
        cl_list(w, q);
        return;
    }
    if (q->kind == REQ_LIST_BEGIN || q->kind == REQ_SYNC_SINCE)
        list_begin(w, q);
    else
        devices_list(w, q);
    free(q);
}

static void op_home(const struct chat_in *in, enum chat_req_kind kind, uint64_t seq, uint32_t limit)
{
    if (cfg.redis && kind == REQ_SYNC_SINCE) {
        in_error(in, SB_OP_ERR_UNSUPPORTED,
                 "sync \"since\" is not available in cluster mode yet; sync by \"convs\"");
        return;
    }
    struct chat_req *q = req_of(in, kind, in->id, "", 0, NULL, 0, NULL, 0, 0);
    if (!q) {
        in_error(in, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
        return;
    }
    const struct chat_device *d = in->d;
    q->seq = seq;
    q->limit = limit;
    struct sb_worker *w = sb_conn_worker(in->c);
    q->from_worker = sb_worker_id(w);
    q->conn_id = d->conn_id;
    q->http = d->http;
    q->enc = in->enc;
    q->request_id = in->rid.request_id;
    if (sb_worker_post(w, sb_home_worker(d->user->id, d->user->id_len, cfg.workers), home_serve,
                       q) < 0) {
        free(q);
        in_error(in, SB_OP_ERR_UNAVAILABLE, "out of memory; retry");
    }
}

/* Token buckets: false (answered with rate_limited and when to retry) when over the limits. */
/* Takes a request of `bytes` from the device's token buckets; false when they are short. */
static inline bool rate_take(struct chat_device *d, struct sb_conn *c, size_t bytes)
{
    /* The loop's clock (read once per iteration): a request costs no clock read. */
    uint64_t now = sb_worker_now_ms(sb_conn_worker(c));
    if (now != d->refill_ms) {
        /* Refilled once per millisecond at most: requests within one cost no arithmetic. */
        double dt = (double)(now - d->refill_ms) / 1000.0;
        d->refill_ms = now;
        double mcap = 2.0 * cfg.rate_messages, bcap = 2.0 * (double)cfg.rate_bytes;
        if (bcap < (double)cfg.max_message_size)
            bcap = (double)cfg.max_message_size; /* any message the server accepts can pass */
        d->msg_tokens += dt * cfg.rate_messages;
        d->byte_tokens += dt * (double)cfg.rate_bytes;
        if (d->msg_tokens > mcap)
            d->msg_tokens = mcap;
        if (d->byte_tokens > bcap)
            d->byte_tokens = bcap;
    }
    if (d->msg_tokens >= 1.0 && d->byte_tokens >= (double)bytes) {
        d->msg_tokens -= 1.0;
        d->byte_tokens -= (double)bytes;
        return true;
    }
    return false;
}

/* rate_take, or an ERROR rate_limited saying when to retry. */
static bool rate_ok(const struct chat_in *in, size_t bytes)
{
    struct chat_device *d = in->d;
    if (rate_take(d, in->c, bytes))
        return true;
    double wait_m = d->msg_tokens >= 1.0 ? 0 : (1.0 - d->msg_tokens) / cfg.rate_messages;
    double wait_b = d->byte_tokens >= (double)bytes
                        ? 0
                        : ((double)bytes - d->byte_tokens) / (double)cfg.rate_bytes;
    static const char msg[] = "too many messages or bytes; retry later";
    struct sb_op op = {.type = SB_OP_ERROR};
    set_rid(&op, in->rid);
    op.u.error.code = SB_OP_ERR_RATE_LIMITED;
    op.u.error.retry_after_ms = (uint32_t)(1000.0 * (wait_m > wait_b ? wait_m : wait_b)) + 1;
    op.u.error.message = sb_slice_from(msg, sizeof(msg) - 1);
    sb__session_send_op(in->c, &op);
    sb_metric_add(sb_conn_worker(in->c), SB_M_RATE_LIMITED, 1);
    return false;
}

/* Runs one operation of the device. */
static void dispatch(const struct chat_in *in, const struct sb_op *op)
{
    const struct sb_op_conv_members *cm = &op->u.conv_members;
    const struct sb_op_conv_ref *cr = &op->u.conv_ref;
    struct sb_slice none = {0};
    switch (op->type) {
    case SB_OP_SEND:
        op_send(in, &op->u.send);
        break;
    case SB_OP_SYNC:
        op_sync(in, &op->u.sync);
        break;
    case SB_OP_RECEIPT:
    case SB_OP_TYPING:
        op_signal(in, op);
        break;
    case SB_OP_CONV_CREATE:
        op_conv_create(in, &op->u.conv_create);
        break;
    case SB_OP_CONV_ADD:
        op_conv(in, REQ_ADD, cm->conv, none, &cm->users);
        break;
    case SB_OP_CONV_REMOVE:
        op_conv(in, REQ_REMOVE, cm->conv, none, &cm->users);
        break;
    case SB_OP_CONV_PROMOTE:
        op_conv(in, REQ_PROMOTE, cm->conv, none, &cm->users);
        break;
    case SB_OP_CONV_DEMOTE:
        op_conv(in, REQ_DEMOTE, cm->conv, none, &cm->users);
        break;
    case SB_OP_CONV_LEAVE:
        op_conv(in, REQ_LEAVE, cr->conv, none, NULL);
        break;
    case SB_OP_CONV_GET:
        op_conv(in, REQ_GET, cr->conv, none, NULL);
        break;
    case SB_OP_CONV_RENAME:
        op_conv(in, REQ_RENAME, cr->conv, cr->name, NULL);
        break;
    case SB_OP_CONV_LIST:
        op_home(in, REQ_LIST_BEGIN, 0, 0);
        break;
    case SB_OP_DEVICES:
        op_home(in, REQ_DEVICES, 0, 0);
        break;
    case SB_OP_PRESENCE_SUB:
    case SB_OP_PRESENCE_UNSUB:
        sb_presence_on_op(in->c, op);
        break;
    case SB_OP_PING:
        sb__session_send_pong(in->c, op->request_id, op->u.ping.data);
        break;
    case SB_OP_PONG:
        break;
    case SB_OP_HELLO:
        in_error(in, SB_OP_ERR_BAD_REQUEST, "a second HELLO");
        break;
    default:
        in_error(in, SB_OP_ERR_UNSUPPORTED, "not an operation a client sends");
        break;
    }
}

static void on_op(struct sb_conn *c, struct chat_device *d, const struct sb_op *op, size_t len)
{
    /* PING, the keep-alive and the echo of every benchmark, needs none of a request's state. */
    if (op->type == SB_OP_PING && rate_take(d, c, len)) {
        sb__session_send_pong(c, op->request_id, op->u.ping.data);
        return;
    }
    struct chat_in in = {.c = c, .d = d, .enc = ((struct sb_session *)sb_conn_app(c))->enc};
    in.rid.request_id = op->request_id;
    if (op->json_id.len) {
        memcpy(in.id, op->json_id.base, op->json_id.len);
        in.id[op->json_id.len] = '\0';
        in.rid.json_id = in.id;
    }
    if (op->type != SB_OP_PONG && !rate_ok(&in, len))
        return;
    dispatch(&in, op);
}

void sb_chat_on_op(struct sb_conn *c, const struct sb_op *op, size_t wire_len)
{
    struct sb_session *s = sb_conn_app(c);
    if (s->chat_registered)
        on_op(c, s->chat, op, wire_len);
}

/* Decodes a JSON request; false when answered with an error. */
static bool decode(struct sb_conn *c, const char *json, size_t len, enum sb_op_type type,
                   unsigned flags, struct sb_op *op)
{
    struct sb_jsonops_error err;
    if (sb_jsonops_decode(json, len, type, flags, my_shard(sb_conn_worker(c))->toks, op, &err) == 0)
        return true;
    char id[SB_CLIENT_ID_MAX + 1];
    struct chat_rid rid = {0};
    if (op->json_id.len && op->json_id.len <= SB_CLIENT_ID_MAX) {
        memcpy(id, op->json_id.base, op->json_id.len);
        id[op->json_id.len] = '\0';
        rid.json_id = id;
    }
    send_error(c, rid, err.code, err.message);
    return false;
}

void sb_chat_on_message(struct sb_conn *c, const uint8_t *data, size_t len)
{
    struct sb_session *s = sb_conn_app(c);
    struct sb_op op;
    if (!s->chat_registered)
        return; /* refused (too many devices): closing */
    if (decode(c, (const char *)data, len, SB_OP_NONE, 0, &op))
        on_op(c, s->chat, &op, len);
}

void sb_chat_rest(struct sb_conn *c, const char *user, const char *type, const char *conv,
                  const char *json, size_t len)
{
    /* The user as the request sees it: no devices, no index (the group limit is checked on the
     * user's home worker when a group is joined). */
    struct chat_user u = {.id_len = strlen(user)};
    memcpy(u.id, user, u.id_len);
    struct chat_device d = {
        .user = &u, .conn = c, .conn_id = sb_conn_id(c), .http = true, .path_conv = conv};
    memcpy(d.id, "rest", 5);
    if (!len) {
        json = "{}";
        len = 2;
    }
    enum sb_op_type t = SB_OP_NONE;
    for (unsigned k = SB_OP_SEND; k < 0x80 && t == SB_OP_NONE; k++) {
        const char *name = sb_ops_type_name(k);
        if (name && strcmp(name, type) == 0)
            t = (enum sb_op_type)k;
    }
    struct sb_op op;
    if (t == SB_OP_NONE || !decode(c, json, len, t, SB_JSONOPS_REST, &op)) {
        if (t == SB_OP_NONE)
            send_error(c, (struct chat_rid){0}, SB_OP_ERR_BAD_REQUEST, "unknown operation type");
        return;
    }
    /* Without an id (for de-duplication) the request gets one of its own. */
    char idbuf[SB_CLIENT_ID_MAX + 1];
    static _Thread_local uint64_t rest_seq;
    if (!op.json_id.len) {
        snprintf(idbuf, sizeof(idbuf), "rest-%016llx-%llu", (unsigned long long)sb_conn_id(c),
                 (unsigned long long)++rest_seq);
        op.json_id = sb_slice_from(idbuf, strlen(idbuf));
        if (op.type == SB_OP_SEND)
            op.u.send.client_id = op.json_id;
    }
    struct chat_in in = {.c = c, .d = &d, .enc = SB_ENC_JSON};
    memcpy(in.id, op.json_id.base, op.json_id.len);
    in.id[op.json_id.len] = '\0';
    in.rid.json_id = in.id;
    dispatch(&in, &op);
}
