/* Conversations in Redis (see convs.h): three scripts and the parsing of their answers. */
#include "cluster/convs.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 512 /* "sb:c:{" conv "}:k:" n ":" user client id */
#define NUM_MAX 24

/* The start of the scripts that act as a member: ARGV[1] '1' (a group) checks that the group
 * exists and that ARGV[2] is in it. */
#define MEMBER_CHECK                                                                               \
    "if ARGV[1] == '1' then\n"                                                                     \
    "  if redis.call('HGET', KEYS[1], 'group') ~= '1' then\n"                                      \
    "    return {0, 'not_found', 'no such conversation'}\n"                                        \
    "  end\n"                                                                                      \
    "  if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then\n"                                     \
    "    return {0, 'forbidden', 'not a member of this conversation'}\n"                           \
    "  end\n"                                                                                      \
    "end\n"

/* KEYS: meta, members, log, cursors, dedup (meta again when there is no client id).
 * ARGV: group, user, device, client id, form, body, msg id, ts, history max, dedup ttl, the
 * membership version whose members the caller has (a group's members come back when it is not
 * the current one). */
static const char send_lua[] = MEMBER_CHECK
    "if ARGV[4] ~= '' then\n"
    "  local d = redis.call('GET', KEYS[5])\n"
    "  if d then\n"
    "    local id = string.match(d, '^%d+') .. '-0'\n"
    "    return {2, d, ARGV[1] == '1' and redis.call('HGETALL', KEYS[2]) or false,\n"
    "      redis.call('XRANGE', KEYS[3], id, id)}\n"
    "  end\n"
    "end\n"
    "local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], seq .. '-0', 'i', ARGV[7], 't', ARGV[8],\n"
    "  'u', ARGV[2], 'd', ARGV[3], 'c', ARGV[4] ~= '' and ARGV[4] or '-', 'f', ARGV[5], 's', '0',\n"
    "  'b', ARGV[6])\n"
    "local ack = seq .. ' ' .. ARGV[7] .. ' ' .. ARGV[8]\n"
    "if ARGV[4] ~= '' then redis.call('SET', KEYS[5], ack, 'EX', ARGV[10]) end\n"
    "if ARGV[1] ~= '1' then return {1, ack} end\n"
    "local mv = redis.call('HGET', KEYS[1], 'mver') or '0'\n"
    "if mv == ARGV[11] then return {1, ack, mv} end\n"
    "return {1, ack, mv, redis.call('HGETALL', KEYS[2])}\n";

/* KEYS: meta, members, log, cursors. ARGV: group, user, after, limit. */
static const char sync_lua[] = MEMBER_CHECK
    "local last = redis.call('HGET', KEYS[1], 'seq') or '0'\n"
    "return {1, last, redis.call('XRANGE', KEYS[3], '(' .. ARGV[3] .. '-0', '+', 'COUNT', "
    "ARGV[4])}\n";

/* KEYS: meta, members, log, cursors. ARGV: group, user, kind (1 delivered, 2 read), seq, most
 * senders. The cursors only move forward; the answer names the senders of the messages now
 * covered (each once, not the user). */
static const char receipt_lua[] = MEMBER_CHECK
    "local seq = math.min(tonumber(ARGV[4]), tonumber(redis.call('HGET', KEYS[1], 'seq') or '0'))\n"
    "local rf, df = 'r:' .. ARGV[2], 'd:' .. ARGV[2]\n"
    "local rd = tonumber(redis.call('HGET', KEYS[4], rf) or '0')\n"
    "local dl = tonumber(redis.call('HGET', KEYS[4], df) or '0')\n"
    "local from = ARGV[3] == '2' and rd or dl\n"
    "if seq <= from then return {1, '0', {}} end\n"
    "if seq > dl then redis.call('HSET', KEYS[4], df, seq) end\n"
    "if ARGV[3] == '2' then redis.call('HSET', KEYS[4], rf, seq) end\n"
    "local senders, seen = {}, {}\n"
    "for _, e in ipairs(redis.call('XRANGE', KEYS[3], '(' .. from .. '-0', seq .. '-0')) do\n"
    "  local u, sys\n"
    "  for i = 1, #e[2], 2 do\n"
    "    if e[2][i] == 'u' then u = e[2][i + 1] elseif e[2][i] == 's' then sys = e[2][i + 1] end\n"
    "  end\n"
    "  if sys == '0' and u ~= ARGV[2] and not seen[u] and #senders < tonumber(ARGV[5]) then\n"
    "    seen[u] = true\n"
    "    senders[#senders + 1] = u\n"
    "  end\n"
    "end\n"
    "return {1, tostring(seq), senders}\n";

/*
 * KEYS: meta, members, log, cursors. ARGV: kind, user, device, ts, history max, text, max members,
 * n ids, the ids, the users. The rules are server/chat.c's handle_create and handle_manage.
 */
static const char change_lua[] =
    "local kind, me, dev, ts, hmax, text = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]\n"
    "local maxm, nids = tonumber(ARGV[7]), tonumber(ARGV[8])\n"
    "local users = {}\n"
    "for i = 9 + nids, #ARGV do users[#users + 1] = ARGV[i] end\n"
    "local posted, removed = {}, {}\n"
    "local function post(sys, subject)\n"
    "  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)\n"
    "  local id = ARGV[9 + #posted]\n"
    "  redis.call('XADD', KEYS[3], 'MAXLEN', '~', hmax, seq .. '-0', 'i', id, 't', ts, 'u', me,\n"
    "    'd', dev, 'c', '-', 'f', '1', 's', sys, 'b', subject)\n"
    "  posted[#posted + 1] = {seq, id, sys, subject}\n"
    "end\n"
    "local function role(u) return redis.call('HGET', KEYS[2], u) end\n"
    "local function add(u, r)\n"
    "  redis.call('HSET', KEYS[2], u, r .. redis.call('HINCRBY', KEYS[1], 'jn', 1))\n"
    "end\n"
    "local function refuse(code, msg) return {0, code, msg} end\n"
    "if kind == 'create' then\n"
    "  if redis.call('EXISTS', KEYS[1]) == 1 then\n"
    "    return refuse('conflict', 'the group exists already')\n"
    "  end\n"
    "  redis.call('HSET', KEYS[1], 'group', '1', 'owner', me, 'name', text, 'created', ts)\n"
    "  add(me, 'a')\n"
    "  for _, u in ipairs(users) do if not role(u) then add(u, 'm') end end\n"
    "  post('4', text)\n"
    "else\n"
    "  if redis.call('HGET', KEYS[1], 'group') ~= '1' then\n"
    "    return refuse('not_found', 'no such conversation')\n"
    "  end\n"
    "  local mine = role(me)\n"
    "  if not mine then return refuse('forbidden', 'not a member of this conversation') end\n"
    "  local owner = redis.call('HGET', KEYS[1], 'owner')\n"
    "  local is_owner = owner == me\n"
    "  if kind ~= 'get' and kind ~= 'leave' and mine:sub(1, 1) ~= 'a' then\n"
    "    return refuse('forbidden', \"only the group's admins may do this\")\n"
    "  end\n"
    "  if (kind == 'promote' or kind == 'demote') and not is_owner then\n"
    "    return refuse('forbidden', \"only the group's owner may change admins\")\n"
    "  end\n"
    "  local adds = 0\n"
    "  for _, u in ipairs(users) do\n"
    "    local r = role(u)\n"
    "    if not r then adds = adds + 1 end\n"
    "    if kind == 'remove' and r and (u == owner or (r:sub(1, 1) == 'a' and not is_owner)) "
    "then\n"
    "      return refuse('forbidden', 'the owner cannot be removed; admins only by the owner')\n"
    "    end\n"
    "    if (kind == 'promote' or kind == 'demote') and not r then\n"
    "      return refuse('not_found', 'not a member of this group')\n"
    "    end\n"
    "  end\n"
    "  if kind == 'add' and redis.call('HLEN', KEYS[2]) + adds > maxm then\n"
    "    return refuse('conflict', 'a group has at most ' .. maxm .. ' members')\n"
    "  end\n"
    "  if kind == 'rename' then\n"
    "    post('3', text)\n"
    "    redis.call('HSET', KEYS[1], 'name', text)\n"
    "  elseif kind == 'leave' then\n"
    "    post('2', me)\n"
    "    redis.call('HDEL', KEYS[2], me)\n"
    "    removed[1] = me\n"
    "    if is_owner then\n"
    "      -- ownership passes to the earliest admin, else to the earliest member\n"
    "      local best, bn, ba\n"
    "      local all = redis.call('HGETALL', KEYS[2])\n"
    "      for i = 1, #all, 2 do\n"
    "        local a, n = all[i + 1]:sub(1, 1) == 'a', tonumber(all[i + 1]:sub(2))\n"
    "        if not best or (a and not ba) or (a == ba and n < bn) then\n"
    "          best, bn, ba = all[i], n, a\n"
    "        end\n"
    "      end\n"
    "      if best then\n"
    "        redis.call('HSET', KEYS[2], best, 'a' .. bn)\n"
    "        redis.call('HSET', KEYS[1], 'owner', best)\n"
    "      end\n"
    "    end\n"
    "  elseif kind ~= 'get' then\n"
    "    for _, u in ipairs(users) do\n"
    "      local r = role(u)\n"
    "      if kind == 'add' and not r then\n"
    "        add(u, 'm')\n"
    "        post('1', u)\n"
    "      elseif kind == 'remove' and r then\n"
    "        post('2', u)\n"
    "        redis.call('HDEL', KEYS[2], u)\n"
    "        removed[#removed + 1] = u\n"
    "      elseif (kind == 'promote' or kind == 'demote') and r then\n"
    "        local a = (kind == 'promote' or u == owner) and 'a' or 'm'\n"
    "        redis.call('HSET', KEYS[2], u, a .. r:sub(2))\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if kind ~= 'get' then redis.call('HINCRBY', KEYS[1], 'mver', 1) end\n"
    "local h = redis.call('HMGET', KEYS[1], 'seq', 'owner', 'name', 'created')\n"
    "return {1, h[1] or '0', h[2] or '', h[3] or '', h[4] or '0', redis.call('HGETALL', "
    "KEYS[2]),\n"
    "  posted, removed, redis.call('HGET', KEYS[4], 'r:' .. me) or '0'}\n";

/* KEYS: meta, members, log, cursors. ARGV: group, user. A conversation as conv_list shows it. */
static const char summary_lua[] =
    MEMBER_CHECK "local h = redis.call('HMGET', KEYS[1], 'seq', 'owner', 'name')\n"
                 "local n = ARGV[1] == '1' and redis.call('HLEN', KEYS[2]) or 2\n"
                 "return {1, h[1] or '0', h[2] or '', h[3] or '', n,\n"
                 "  redis.call('HGET', KEYS[4], 'r:' .. ARGV[2]) or '0'}\n";

/* What a call keeps for its answer. */
struct call {
    sb_convs_cb cb;
    void *arg;
    uint8_t op;     /* 's'end, s'y'nc, 'c'hange, 'r'eceipt, su'm'mary, user 'l'ist, 'i'ndex */
    bool read_only; /* a change that is a get */
    struct sb_redis *r;
    redisReply *kept; /* the script's answer while the replicas are waited for */
    unsigned want;    /* how many replicas must confirm the write */
    size_t key_len;
    char key[KEY_MAX]; /* the meta key: how many replicas its slot has */
    uint64_t ts_ms;
    size_t user_len, device_len;
    char user[256], device[256];
};

static size_t key_of(char *buf, const struct sb_convs_who *who, const char *suffix)
{
    int n = snprintf(buf, KEY_MAX, "sb:c:{%.*s}%s", (int)who->conv_len, who->conv, suffix);
    return (size_t)n;
}

static bool num(const redisReply *r, uint64_t *out)
{
    if (r->type == REDIS_REPLY_INTEGER && r->integer >= 0) {
        *out = (uint64_t)r->integer;
        return true;
    }
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (r->str[i] < '0' || r->str[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(r->str[i] - '0');
    }
    *out = v;
    return true;
}

static bool is_str(const redisReply *r)
{
    return r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS;
}

/* "<seq> <msg id> <ts>" */
static bool parse_ack(const redisReply *r, struct sb_convs_result *res)
{
    if (!is_str(r))
        return false;
    unsigned long long a, b, c;
    char tail;
    char buf[3 * NUM_MAX];
    if (r->len >= sizeof(buf))
        return false;
    memcpy(buf, r->str, r->len);
    buf[r->len] = '\0';
    if (sscanf(buf, "%llu %llu %llu%c", &a, &b, &c, &tail) != 3)
        return false;
    res->seq = a;
    res->msg_id = b;
    res->ts_ms = c;
    return true;
}

/* A flat [member, role, ...] array. */
static bool parse_members(const redisReply *r, struct sb_convs_member **out, size_t *n)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2)
        return false;
    *n = r->elements / 2;
    if (!(*out = calloc(*n ? *n : 1, sizeof(**out))))
        return false;
    for (size_t i = 0; i < *n; i++) {
        const redisReply *id = r->element[2 * i], *role = r->element[2 * i + 1];
        if (!is_str(id) || !is_str(role) || role->len < 1)
            return false;
        (*out)[i] = (struct sb_convs_member){id->str, id->len, role->str[0] == 'a'};
    }
    return true;
}

/* A stream entry: ["<seq>-0", [field, value, ...]]. */
static bool parse_entry(const redisReply *e, struct sb_convs_msg *m)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !is_str(e->element[0]) ||
        e->element[1]->type != REDIS_REPLY_ARRAY || e->element[1]->elements % 2)
        return false;
    const redisReply *id = e->element[0], *f = e->element[1];
    char buf[NUM_MAX];
    const char *dash = memchr(id->str, '-', id->len);
    size_t n = dash ? (size_t)(dash - id->str) : 0;
    if (!n || n >= sizeof(buf))
        return false;
    memcpy(buf, id->str, n);
    buf[n] = '\0';
    *m = (struct sb_convs_msg){.seq = strtoull(buf, NULL, 10)};
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (!is_str(k) || !is_str(v) || k->len != 1)
            return false;
        uint64_t x = 0;
        switch (k->str[0]) {
        case 'i':
        case 't':
        case 'f':
        case 's':
            if (!num(v, &x))
                return false;
            if (k->str[0] == 'i')
                m->msg_id = x;
            else if (k->str[0] == 't')
                m->ts_ms = x;
            else if (k->str[0] == 'f')
                m->form = (uint8_t)x;
            else
                m->system = (uint8_t)x;
            break;
        case 'u':
            m->user = v->str, m->user_len = v->len;
            break;
        case 'd':
            m->device = v->str, m->device_len = v->len;
            break;
        case 'c':
            /* "-": no client id */
            if (!(v->len == 1 && v->str[0] == '-'))
                m->client_id = v->str, m->client_id_len = v->len;
            break;
        case 'b':
            m->body = v->str, m->body_len = v->len;
            break;
        default:
            break;
        }
    }
    return m->seq && m->user && m->body;
}

static bool parse_entries(const redisReply *r, struct sb_convs_result *res)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return false;
    res->nmsgs = r->elements;
    if (!(res->msgs = calloc(r->elements ? r->elements : 1, sizeof(*res->msgs))))
        return false;
    for (size_t i = 0; i < r->elements; i++) {
        if (!parse_entry(r->element[i], &res->msgs[i]))
            return false;
    }
    return true;
}

/* A change's system messages: [[seq, msg id, kind, subject], ...], by the acting device. */
static bool parse_posted(const redisReply *r, const struct call *c, struct sb_convs_result *res)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return false;
    res->nmsgs = r->elements;
    if (!(res->msgs = calloc(r->elements ? r->elements : 1, sizeof(*res->msgs))))
        return false;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *p = r->element[i];
        uint64_t seq, id, kind;
        if (p->type != REDIS_REPLY_ARRAY || p->elements != 4 || !num(p->element[0], &seq) ||
            !num(p->element[1], &id) || !num(p->element[2], &kind) || !is_str(p->element[3]))
            return false;
        res->msgs[i] = (struct sb_convs_msg){.seq = seq,
                                             .msg_id = id,
                                             .ts_ms = c->ts_ms,
                                             .system = (uint8_t)kind,
                                             .form = 1,
                                             .user = c->user,
                                             .user_len = c->user_len,
                                             .device = c->device,
                                             .device_len = c->device_len,
                                             .body = p->element[3]->str,
                                             .body_len = p->element[3]->len};
    }
    return true;
}

/* An array of user ids. */
static bool parse_names(const redisReply *r, struct sb_convs_member **out, size_t *n)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return false;
    *n = r->elements;
    if (!(*out = calloc(r->elements ? r->elements : 1, sizeof(**out))))
        return false;
    for (size_t i = 0; i < r->elements; i++) {
        if (!is_str(r->element[i]))
            return false;
        (*out)[i] = (struct sb_convs_member){r->element[i]->str, r->element[i]->len, false};
    }
    return true;
}

static bool parse(const struct call *c, const redisReply *r, struct sb_convs_result *res)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER)
        return false;
    long long status = r->element[0]->integer;
    if (status < 0 || status > (c->op == 's' ? 2 : 1))
        return false; /* 2 (a repeat) only answers a send */
    res->status = (int)status;
    if (res->status == 0) {
        if (r->elements != 3 || !is_str(r->element[1]) || !is_str(r->element[2]))
            return false;
        res->code = r->element[1]->str, res->code_len = r->element[1]->len;
        res->message = r->element[2]->str, res->message_len = r->element[2]->len;
        return true;
    }
    switch (c->op) {
    case 's':
        if (!parse_ack(r->element[1], res))
            return false;
        if (res->status == 1 && r->elements >= 3) {
            if (!num(r->element[2], &res->mver))
                return false;
            res->have_members = r->elements == 4;
            return !res->have_members ||
                   parse_members(r->element[3], &res->members, &res->nmembers);
        }
        /* A repeat: the members (a group's) and the message, when still in history. */
        if (res->status == 2 && r->elements == 4) {
            res->have_members = r->element[2]->type == REDIS_REPLY_ARRAY;
            return (!res->have_members ||
                    parse_members(r->element[2], &res->members, &res->nmembers)) &&
                   parse_entries(r->element[3], res);
        }
        return true;
    case 'y':
        return r->elements == 3 && num(r->element[1], &res->last_seq) &&
               parse_entries(r->element[2], res);
    case 'm':
        if (r->elements != 6 || !num(r->element[1], &res->last_seq) || !is_str(r->element[2]) ||
            !is_str(r->element[3]) || !num(r->element[4], &res->member_count) ||
            !num(r->element[5], &res->read_seq))
            return false;
        res->owner = r->element[2]->str, res->owner_len = r->element[2]->len;
        res->name = r->element[3]->str, res->name_len = r->element[3]->len;
        return true;
    case 'r':
        if (r->elements != 3 || !num(r->element[1], &res->seq))
            return false;
        res->have_members = true;
        return parse_names(r->element[2], &res->members, &res->nmembers);
    default:
        if (r->elements != 9 || !num(r->element[8], &res->read_seq) ||
            !num(r->element[1], &res->last_seq) || !is_str(r->element[2]) ||
            !is_str(r->element[3]) || !num(r->element[4], &res->created_ms))
            return false;
        res->owner = r->element[2]->str, res->owner_len = r->element[2]->len;
        res->name = r->element[3]->str, res->name_len = r->element[3]->len;
        res->have_members = true;
        return parse_members(r->element[5], &res->members, &res->nmembers) &&
               parse_posted(r->element[6], c, res) &&
               parse_names(r->element[7], &res->removed, &res->nremoved);
    }
}

static unsigned wait_replicas, wait_ms;

void sb_convs_set_wait(unsigned replicas, unsigned timeout_ms)
{
    wait_replicas = replicas;
    wait_ms = timeout_ms ? timeout_ms : 1;
}

static void finish(struct sb_worker *w, struct call *c, int err, const redisReply *reply)
{
    struct sb_convs_result res = {0};
    if (err == 0 && !parse(c, reply, &res))
        err = -EPROTO;
    c->cb(w, c->arg, err, err == 0 ? &res : NULL);
    free(res.members);
    free(res.msgs);
    free(res.removed);
    freeReplyObject(c->kept);
    free(c);
}

static redisReply *reply_dup(const redisReply *r)
{
    redisReply *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->type = r->type;
    d->integer = r->integer;
    if (r->str) {
        if (!(d->str = malloc(r->len + 1)))
            return freeReplyObject(d), NULL;
        memcpy(d->str, r->str, r->len + 1);
        d->len = r->len;
    }
    if (r->elements) {
        if (!(d->element = calloc(r->elements, sizeof(*d->element))))
            return freeReplyObject(d), NULL;
        d->elements = r->elements;
        for (size_t i = 0; i < r->elements; i++) {
            if (!(d->element[i] = reply_dup(r->element[i])))
                return freeReplyObject(d), NULL;
        }
    }
    return d;
}

static void waited(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    struct call *c = arg;
    if (err == 0 && (reply->type != REDIS_REPLY_INTEGER || reply->integer < c->want))
        err = -EAGAIN; /* not on enough replicas (yet): what a failover could lose */
    finish(w, c, err, c->kept);
}

static void answered(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    struct call *c = arg;
    if (err == 0 && reply->type == REDIS_REPLY_ERROR)
        err = -EPROTO; /* a script error: a bug, or a key of the wrong type */
    /* A write (not a read, a refusal or a repeated send) waits for the replicas, with a WAIT on
     * the connection that carried it (a WAIT counts that connection's writes). */
    bool wrote = err == 0 && c->op != 'y' && reply->type == REDIS_REPLY_ARRAY &&
                 reply->elements >= 2 && reply->element[0]->type == REDIS_REPLY_INTEGER &&
                 reply->element[0]->integer == 1 && !(c->op == 'c' && c->read_only);
    /* A master left with fewer replicas (one failed, or was promoted) waits for those it has:
     * demanding more would refuse every write until an operator adds a replica. */
    unsigned have = wrote ? sb_redis_replicas(w, c->r, c->key, c->key_len) : 0;
    c->want = wait_replicas < have ? wait_replicas : have;
    if (c->want == 0) {
        finish(w, c, err, reply);
        return;
    }
    if (!(c->kept = reply_dup(reply))) {
        finish(w, c, -ENOMEM, NULL);
        return;
    }
    int e = sb_redis_wait(w, c->r, c->want, wait_ms, waited, c);
    if (e < 0)
        finish(w, c, e, NULL);
}

static struct call *call_new(const struct sb_convs_who *who, uint8_t op, sb_convs_cb cb, void *arg)
{
    if (who->conv_len == 0 || who->conv_len > 255 || who->user_len > 255 || who->device_len > 255)
        return NULL;
    struct call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->cb = cb;
    c->arg = arg;
    c->op = op;
    c->user_len = who->user_len;
    memcpy(c->user, who->user, who->user_len);
    c->device_len = who->device_len;
    memcpy(c->device, who->device, who->device_len);
    return c;
}

/* EVAL script with the conversation's keys (meta, members, log, cursors; with nkeys 5 also
 * extra) and args. */
static int eval(struct sb_worker *w, struct sb_redis *r, const struct sb_convs_who *who,
                const char *script, int nkeys, const char *extra, size_t extra_len, int nargs,
                const char **args, const size_t *lens, struct call *c)
{
    char keys[4][KEY_MAX], nk[4];
    size_t klen[4] = {key_of(keys[0], who, ""), key_of(keys[1], who, ":m"),
                      key_of(keys[2], who, ":log"), key_of(keys[3], who, ":r")};
    snprintf(nk, sizeof(nk), "%d", nkeys);
    int argc = 3 + nkeys + nargs;
    const char **argv = malloc((size_t)argc * sizeof(*argv));
    size_t *argvlen = malloc((size_t)argc * sizeof(*argvlen));
    if (!argv || !argvlen) {
        free(argv);
        free(argvlen);
        free(c);
        return -ENOMEM;
    }
    argv[0] = "EVAL", argvlen[0] = 4;
    argv[1] = script, argvlen[1] = strlen(script);
    argv[2] = nk, argvlen[2] = strlen(nk);
    for (int i = 0; i < 4; i++)
        argv[3 + i] = keys[i], argvlen[3 + i] = klen[i];
    if (nkeys == 5)
        argv[7] = extra, argvlen[7] = extra_len;
    memcpy(argv + 3 + nkeys, args, (size_t)nargs * sizeof(*argv));
    memcpy(argvlen + 3 + nkeys, lens, (size_t)nargs * sizeof(*argvlen));
    c->r = r;
    memcpy(c->key, keys[0], klen[0]);
    c->key_len = klen[0];
    int e = sb_redis_cmd(w, r, keys[0], klen[0], argc, argv, argvlen, answered, c);
    free(argv);
    free(argvlen);
    if (e < 0)
        free(c);
    return e;
}

int sb_convs_send(struct sb_worker *w, struct sb_redis *r, const struct sb_convs_who *who,
                  const struct sb_convs_msg *m, uint32_t history_max, uint64_t known_mver,
                  sb_convs_cb cb, void *arg)
{
    struct call *c = call_new(who, 's', cb, arg);
    if (!c || m->client_id_len > 255)
        return free(c), -EINVAL;
    char dedup[KEY_MAX];
    size_t dlen = key_of(dedup, who, ":k:");
    dlen += (size_t)snprintf(dedup + dlen, KEY_MAX - dlen, "%zu:%.*s%.*s", who->user_len,
                             (int)who->user_len, who->user, (int)m->client_id_len, m->client_id);
    char form[4], id[NUM_MAX], ts[NUM_MAX], hmax[NUM_MAX], ttl[NUM_MAX], mver[NUM_MAX];
    const char *args[11] = {who->group ? "1" : "0",
                            who->user,
                            who->device,
                            m->client_id ? m->client_id : "",
                            form,
                            m->body ? m->body : "",
                            id,
                            ts,
                            hmax,
                            ttl,
                            mver};
    size_t lens[11] = {
        1,
        who->user_len,
        who->device_len,
        m->client_id_len,
        (size_t)snprintf(form, sizeof(form), "%u", m->form),
        m->body_len,
        (size_t)snprintf(id, sizeof(id), "%llu", (unsigned long long)m->msg_id),
        (size_t)snprintf(ts, sizeof(ts), "%llu", (unsigned long long)m->ts_ms),
        (size_t)snprintf(hmax, sizeof(hmax), "%u", history_max ? history_max : 1),
        (size_t)snprintf(ttl, sizeof(ttl), "%u", SB_CONVS_DEDUP_TTL_S),
        (size_t)snprintf(mver, sizeof(mver), "%llu", (unsigned long long)known_mver)};
    /* Without a client id the dedup key is not used: the meta key stands in (same slot). */
    if (!m->client_id_len)
        key_of(dedup, who, ""), dlen = strlen(dedup);
    return eval(w, r, who, send_lua, 5, dedup, dlen, 11, args, lens, c);
}

int sb_convs_sync(struct sb_worker *w, struct sb_redis *r, const struct sb_convs_who *who,
                  uint64_t after, uint32_t limit, sb_convs_cb cb, void *arg)
{
    struct call *c = call_new(who, 'y', cb, arg);
    if (!c || limit == 0)
        return free(c), -EINVAL;
    char a[NUM_MAX], l[NUM_MAX];
    const char *args[4] = {who->group ? "1" : "0", who->user, a, l};
    size_t lens[4] = {1, who->user_len,
                      (size_t)snprintf(a, sizeof(a), "%llu", (unsigned long long)after),
                      (size_t)snprintf(l, sizeof(l), "%u", limit)};
    return eval(w, r, who, sync_lua, 4, NULL, 0, 4, args, lens, c);
}

int sb_convs_change(struct sb_worker *w, struct sb_redis *r, const struct sb_convs_who *who,
                    const struct sb_convs_change *ch, sb_convs_cb cb, void *arg)
{
    struct call *c = call_new(who, 'c', cb, arg);
    if (!c)
        return -EINVAL;
    c->ts_ms = ch->ts_ms;
    c->read_only = strcmp(ch->kind, "get") == 0;
    unsigned nids = ch->nusers ? ch->nusers : 1;
    int nargs = 8 + (int)nids + (int)ch->nusers;
    const char **args = malloc((size_t)nargs * sizeof(*args));
    size_t *lens = malloc((size_t)nargs * sizeof(*lens));
    char(*ids)[NUM_MAX] = malloc(nids * sizeof(*ids));
    char ts[NUM_MAX], hmax[NUM_MAX], maxm[NUM_MAX], n[NUM_MAX];
    int e = -ENOMEM;
    if (args && lens && ids) {
        const char *fixed[8] = {
            ch->kind, who->user, who->device, ts, hmax, ch->text ? ch->text : "", maxm, n};
        size_t flen[8] = {
            strlen(ch->kind),
            who->user_len,
            who->device_len,
            (size_t)snprintf(ts, sizeof(ts), "%llu", (unsigned long long)ch->ts_ms),
            (size_t)snprintf(hmax, sizeof(hmax), "%u", ch->history_max ? ch->history_max : 1),
            ch->text_len,
            (size_t)snprintf(maxm, sizeof(maxm), "%u", ch->max_members),
            (size_t)snprintf(n, sizeof(n), "%u", nids)};
        memcpy(args, fixed, sizeof(fixed));
        memcpy(lens, flen, sizeof(flen));
        for (unsigned i = 0; i < nids; i++) {
            args[8 + i] = ids[i];
            lens[8 + i] = (size_t)snprintf(ids[i], NUM_MAX, "%llu", (unsigned long long)ch->ids[i]);
        }
        for (unsigned i = 0; i < ch->nusers; i++) {
            args[8 + nids + i] = ch->users[i];
            lens[8 + nids + i] = ch->user_lens[i];
        }
        e = eval(w, r, who, change_lua, 4, NULL, 0, nargs, args, lens, c);
        c = NULL; /* eval owns it now */
    }
    free(c);
    free(args);
    free(lens);
    free(ids);
    return e;
}

int sb_convs_receipt(struct sb_worker *w, struct sb_redis *r, const struct sb_convs_who *who,
                     bool read, uint64_t seq, unsigned max_senders, sb_convs_cb cb, void *arg)
{
    struct call *c = call_new(who, 'r', cb, arg);
    if (!c)
        return -EINVAL;
    char sq[NUM_MAX], ms[NUM_MAX];
    const char *args[5] = {who->group ? "1" : "0", who->user, read ? "2" : "1", sq, ms};
    size_t lens[5] = {1, who->user_len, 1,
                      (size_t)snprintf(sq, sizeof(sq), "%llu", (unsigned long long)seq),
                      (size_t)snprintf(ms, sizeof(ms), "%u", max_senders)};
    return eval(w, r, who, receipt_lua, 4, NULL, 0, 5, args, lens, c);
}

int sb_convs_summary(struct sb_worker *w, struct sb_redis *r, const struct sb_convs_who *who,
                     sb_convs_cb cb, void *arg)
{
    struct call *c = call_new(who, 'm', cb, arg);
    if (!c)
        return -EINVAL;
    const char *args[2] = {who->group ? "1" : "0", who->user};
    size_t lens[2] = {1, who->user_len};
    return eval(w, r, who, summary_lua, 4, NULL, 0, 2, args, lens, c);
}

/* ---- the user's index -------------------------------------------------------------------- */

static size_t index_key(char *buf, const char *user, size_t len)
{
    return (size_t)snprintf(buf, KEY_MAX, "sb:u:{%.*s}:cv", (int)len, user);
}

/* HKEYS (op 'l': the ids, as members) or HSET / HDEL (op 'i': status 1). */
static void index_answered(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    struct call *c = arg;
    struct sb_convs_result res = {.status = 1};
    if (err == 0 && reply->type == REDIS_REPLY_ERROR)
        err = -EPROTO;
    if (err == 0 && c->op == 'l' && !parse_names(reply, &res.members, &res.nmembers))
        err = -EPROTO;
    c->cb(w, c->arg, err, err == 0 ? &res : NULL);
    free(res.members);
    free(c);
}

static int index_cmd(struct sb_worker *w, struct sb_redis *r, uint8_t op, int argc,
                     const char **argv, const size_t *argvlen, sb_convs_cb cb, void *arg)
{
    struct call *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->op = op;
    c->cb = cb;
    c->arg = arg;
    int e = sb_redis_cmd(w, r, argv[1], argvlen[1], argc, argv, argvlen, index_answered, c);
    if (e < 0)
        free(c);
    return e;
}

int sb_convs_index(struct sb_worker *w, struct sb_redis *r, const char *user, size_t user_len,
                   const char *conv, size_t conv_len, bool member, sb_convs_cb cb, void *arg)
{
    if (user_len == 0 || user_len > 255 || conv_len == 0 || conv_len > 255)
        return -EINVAL;
    char key[KEY_MAX];
    const char *argv[4] = {member ? "HSET" : "HDEL", key, conv, "1"};
    size_t argvlen[4] = {4, index_key(key, user, user_len), conv_len, 1};
    return index_cmd(w, r, 'i', member ? 4 : 3, argv, argvlen, cb, arg);
}

int sb_convs_user_list(struct sb_worker *w, struct sb_redis *r, const char *user, size_t user_len,
                       sb_convs_cb cb, void *arg)
{
    if (user_len == 0 || user_len > 255)
        return -EINVAL;
    char key[KEY_MAX];
    const char *argv[2] = {"HKEYS", key};
    size_t argvlen[2] = {5, index_key(key, user, user_len)};
    return index_cmd(w, r, 'l', 2, argv, argvlen, cb, arg);
}
