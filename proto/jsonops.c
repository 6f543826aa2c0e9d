/*
 * The JSON mapping of the operation set. Decoding reproduces the field rules and error messages
 * the server's JSON handlers had before the operation set existed (docs/protocol.md), so
 * clients see no change; encoding writes the keys in the order the server always wrote them.
 */
#include "proto/jsonops.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "proto/opsbody.h"
#include "proto/utf8.h"

/* Nesting a request may have (its lists are one level below the object). */
#define JSONOPS_MAX_DEPTH 8
/* The longest "type" name read (longer ones are no type: "missing"). */
#define JSONOPS_TYPE_MAX 23
/* A sync page's "limit" above this counts as this. */
#define JSONOPS_SYNC_LIMIT_MAX 1000
/* The tokens a request may parse into; the rest of the caller's array holds an escaped name. */
#define JSONOPS_NAME_SCRATCH_TOKS 8
#define JSONOPS_PARSE_TOKENS (SB_JSONOPS_MAX_TOKENS - JSONOPS_NAME_SCRATCH_TOKS)
_Static_assert(JSONOPS_NAME_SCRATCH_TOKS * sizeof(struct sb_json_tok) >= SB_OPS_NAME_MAX,
               "an unescaped name fits the scratch");

/* ---- list iterators over JSON text ------------------------------------------------------- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }
    return p;
}

/* Skips whitespace, the character c and whitespace again; NULL when c is not there. */
static const char *expect(const char *p, const char *end, char c)
{
    p = skip_ws(p, end);
    if (p == end || *p != c) {
        return NULL;
    }
    return skip_ws(p + 1, end);
}

/* Reads a string without escapes at p into *out. Returns the position after it, or NULL. */
static const char *scan_plain_string(const char *p, const char *end, struct sb_slice *out)
{
    if (p == end || *p != '"') {
        return NULL;
    }
    const char *s = ++p;
    while (p < end && *p != '"' && *p != '\\') {
        p++;
    }
    if (p == end || *p != '"') {
        return NULL;
    }
    *out = sb_slice_from(s, (size_t)(p - s));
    return p + 1;
}

/* Reads an integer >= 0 ("-0" included, as JSON allows it) into *out. NULL when it is not one. */
static const char *scan_uint(const char *p, const char *end, uint64_t *out)
{
    bool neg = p < end && *p == '-';
    uint64_t v = 0;
    const char *digits = p += neg;

    while (p < end && *p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return NULL;
        }
        v = v * 10 + d;
        p++;
    }
    if (p == digits || (neg && v != 0) || (p < end && (*p == '.' || *p == 'e' || *p == 'E'))) {
        return NULL;
    }
    *out = v;
    return p;
}

/* Where the iterator's next item starts (past the opening bracket or the comma), or NULL. */
static const char *item_start(const struct sb_ops_list_iter *it, char open)
{
    const struct sb_ops_list *l = it->list;
    const char *end = l->raw.base + l->raw.len;

    if (it->off > l->raw.len) {
        return NULL;
    }
    return expect(l->raw.base + it->off, end, (char)(it->index == 0 ? open : ','));
}

/* An array of strings: items are struct sb_slice. */
static int next_string(struct sb_ops_list_iter *it, void *item)
{
    const struct sb_ops_list *l = it->list;
    const char *end = l->raw.base + l->raw.len;
    struct sb_slice s;

    if (it->index >= l->count) {
        return 0;
    }
    const char *p = item_start(it, '[');
    if (p == NULL || (p = scan_plain_string(p, end, &s)) == NULL) {
        return -EBADMSG;
    }
    it->off = (size_t)(p - l->raw.base);
    it->index++;
    *(struct sb_slice *)item = s;
    return 1;
}

/* An object {conversation: last_seq}: items are struct sb_op_resume. */
static int next_resume(struct sb_ops_list_iter *it, void *item)
{
    const struct sb_ops_list *l = it->list;
    const char *end = l->raw.base + l->raw.len;
    struct sb_op_resume r;

    if (it->index >= l->count) {
        return 0;
    }
    const char *p = item_start(it, '{');
    if (p == NULL || (p = scan_plain_string(p, end, &r.conv)) == NULL ||
        (p = expect(p, end, ':')) == NULL || (p = scan_uint(p, end, &r.last_seq)) == NULL) {
        return -EBADMSG;
    }
    it->off = (size_t)(p - l->raw.base);
    it->index++;
    *(struct sb_op_resume *)item = r;
    return 1;
}

/* ---- decoding ---------------------------------------------------------------------------- */

struct dec {
    const char *json;
    const struct sb_json_tok *t;
    struct sb_json_tok *toks; /* t, writable: its end is the scratch of an escaped name */
    unsigned flags;
    struct sb_jsonops_error *err;
};

static int fail(struct dec *d, const char *message)
{
    d->err->code = SB_OP_ERR_BAD_REQUEST;
    d->err->message = message;
    return -EBADMSG;
}

static int member(const struct dec *d, const char *key)
{
    return sb_json_get(d->json, d->t, 0, key);
}

static struct sb_slice tok_text(const struct dec *d, int i)
{
    return sb_slice_from(d->json + d->t[i].start, d->t[i].len);
}

enum str_result {
    STR_ABSENT,
    STR_OK,
    STR_BAD,     /* not a string, empty or too long */
    STR_ESCAPED, /* a string with escapes: ids and names are read in place, so never escaped */
};

/* Reads the string member key of 1 to max bytes into *out. */
static enum str_result get_str(const struct dec *d, const char *key, size_t max,
                               struct sb_slice *out)
{
    int i = member(d, key);

    if (i < 0) {
        return STR_ABSENT;
    }
    if (d->t[i].type != SB_JSON_STRING || d->t[i].len == 0) {
        return STR_BAD;
    }
    if (d->t[i].escaped) {
        return STR_ESCAPED;
    }
    if (d->t[i].len > max) {
        return STR_BAD;
    }
    *out = tok_text(d, i);
    return STR_OK;
}

/* "to" (a user: the direct conversation with them) or "conv"; "to" wins when both are there. */
static int get_conv_or_to(struct dec *d, struct sb_slice *conv, struct sb_slice *to)
{
    switch (get_str(d, "to", SB_OPS_USER_MAX, to)) {
    case STR_OK:
        return 0;
    case STR_ESCAPED:
        return fail(d, "\"to\" is not a valid user id");
    default:
        break; /* an unusable "to" counts as none, as it always did */
    }
    switch (get_str(d, "conv", SB_OPS_CONV_MAX, conv)) {
    case STR_OK:
        return 0;
    case STR_ESCAPED:
        return fail(d, "\"conv\" may not contain escapes");
    default:
        break;
    }
    if (d->flags & SB_JSONOPS_REST) {
        return 0; /* the route names the conversation */
    }
    return fail(d, "needs \"conv\" (or \"to\" for a direct conversation)");
}

static int get_conv(struct dec *d, struct sb_slice *conv)
{
    switch (get_str(d, "conv", SB_OPS_CONV_MAX, conv)) {
    case STR_OK:
        return 0;
    case STR_ESCAPED:
        return fail(d, "\"conv\" may not contain escapes");
    default:
        break;
    }
    return (d->flags & SB_JSONOPS_REST) ? 0 : fail(d, "needs \"conv\"");
}

/* "name": absent is empty. */
static int get_name(struct dec *d, struct sb_slice *name)
{
    static const char bad[] = "\"name\" must be a string of at most 128 bytes";
    int i = member(d, "name");

    if (i < 0) {
        return 0;
    }
    const struct sb_json_tok *t = &d->t[i];
    if (t->type != SB_JSON_STRING) {
        return fail(d, bad);
    }
    if (!t->escaped) {
        if (t->len > SB_OPS_NAME_MAX) {
            return fail(d, bad);
        }
        *name = tok_text(d, i);
        return 0;
    }
    /*
     * Names are people's text, and many JSON writers escape some of it (Python all non-ASCII,
     * Go "&", "<" and ">"): such a name is unescaped into the scratch kept free at the end of
     * the tokens, the one string of an operation that is not read in place.
     */
    size_t n = sb_json_unescape(d->json + t->start, t->len, NULL);
    if (n > SB_OPS_NAME_MAX) {
        return fail(d, bad);
    }
    char *scratch = (char *)(d->toks + JSONOPS_PARSE_TOKENS);
    sb_json_unescape(d->json + t->start, t->len, scratch);
    *name = sb_slice_from(scratch, n);
    return 0;
}

/* Messages of a users list: chat's wording, or presence's. */
struct users_msgs {
    const char *shape;   /* missing, not an array, empty or too long */
    const char *too_big; /* more than SB_OPS_REQUEST_LIST_MAX (NULL: as shape) */
    const char *invalid; /* an item that is no user id */
};

static const struct users_msgs users_msgs = {"\"users\" must be an array of 1-1000 user ids", NULL,
                                             "\"users\" holds an invalid user id"};
static const struct users_msgs members_msgs = {"\"members\" must be an array of 1-1000 user ids",
                                               NULL, "\"members\" holds an invalid user id"};
static const struct users_msgs presence_msgs = {"\"users\" must be a non-empty array of user ids",
                                                "at most 1000 users per request",
                                                "\"users\" holds an invalid user id"};

/* An array of user ids (1 to SB_OPS_USER_MAX bytes each; a user named twice is kept). */
static int get_users(struct dec *d, const char *key, bool may_be_absent,
                     const struct users_msgs *msgs, struct sb_ops_list *out)
{
    int a = member(d, key);

    if (a < 0 && may_be_absent) {
        return 0;
    }
    if (a < 0 || d->t[a].type != SB_JSON_ARRAY || (d->t[a].size == 0 && !may_be_absent)) {
        return fail(d, msgs->shape);
    }
    if (d->t[a].size > SB_OPS_REQUEST_LIST_MAX) {
        return fail(d, msgs->too_big != NULL ? msgs->too_big : msgs->shape);
    }
    for (uint32_t k = (uint32_t)a + 1, i = 0; i < d->t[a].size; i++, k = d->t[k].next) {
        const struct sb_json_tok *u = &d->t[k];
        if (u->type != SB_JSON_STRING || u->len == 0 || u->len > SB_OPS_USER_MAX || u->escaped) {
            return fail(d, msgs->invalid);
        }
    }
    out->count = d->t[a].size;
    out->raw = tok_text(d, a);
    out->next = next_string;
    return 0;
}

/* "limit": absent is 0 (the server's default); above the maximum, the maximum. */
static int get_limit(struct dec *d, uint16_t *limit)
{
    int i = member(d, "limit");
    int64_t v = 0;

    if (i < 0) {
        return 0;
    }
    if (d->t[i].type != SB_JSON_NUMBER || sb_json_int64(d->json, &d->t[i], &v) < 0 || v < 1) {
        return fail(d, "\"limit\" must be a positive integer");
    }
    *limit = (uint16_t)(v > JSONOPS_SYNC_LIMIT_MAX ? JSONOPS_SYNC_LIMIT_MAX : v);
    return 0;
}

/* sync {"since": cursor}: the cursor is a string of digits that fits 64 bits. */
static int decode_sync_since(struct dec *d, int since, struct sb_op_sync *s)
{
    static const char bad[] = "\"since\" must be a cursor from sync_done (or \"0\")";
    const struct sb_json_tok *t = &d->t[since];

    if (member(d, "convs") >= 0) {
        return fail(d, "sync takes \"convs\" or \"since\", not both");
    }
    /* Digits never need escapes; the length is what the cursor buffer always allowed. */
    if (t->type != SB_JSON_STRING || t->escaped || t->len == 0 || t->len > 23) {
        return fail(d, bad);
    }
    uint64_t ms;
    const char *p = d->json + t->start, *end = p + t->len;
    if (*p == '-' || scan_uint(p, end, &ms) != end) {
        return fail(d, bad);
    }
    s->cursor = tok_text(d, since);
    return get_limit(d, &s->limit);
}

static int decode_sync(struct dec *d, struct sb_op_sync *s)
{
    static const char bad_entry[] = "\"convs\" maps conversation ids to last_seq (an integer >= 0)";
    int since = member(d, "since");

    if (since >= 0) {
        return decode_sync_since(d, since, s);
    }
    int c = member(d, "convs");
    if (c < 0 || d->t[c].type != SB_JSON_OBJECT || d->t[c].size == 0) {
        return fail(d, "sync needs \"convs\": {conversation: last_seq, ...} or \"since\": cursor");
    }
    /* The server allows fewer (100 today) and says so; this is the operation set's limit. */
    if (d->t[c].size > SB_OPS_REQUEST_LIST_MAX) {
        return fail(d, "a sync names at most 1000 conversations");
    }
    if (get_limit(d, &s->limit) < 0) {
        return -EBADMSG;
    }
    for (uint32_t k = (uint32_t)c + 1, i = 0; i < d->t[c].size; i++, k = d->t[k + 1].next) {
        const struct sb_json_tok *key = &d->t[k], *val = &d->t[k + 1];
        int64_t seq;
        if (key->len == 0 || key->len > SB_OPS_CONV_MAX || key->escaped ||
            val->type != SB_JSON_NUMBER || sb_json_int64(d->json, val, &seq) < 0 || seq < 0) {
            return fail(d, bad_entry);
        }
    }
    s->convs.count = d->t[c].size;
    s->convs.raw = tok_text(d, c);
    s->convs.next = next_resume;
    return 0;
}

static int decode_send(struct dec *d, struct sb_op_send *s)
{
    if (get_conv_or_to(d, &s->conv, &s->to) < 0) {
        return -EBADMSG;
    }
    int b = member(d, "body"), b64 = member(d, "body_b64");
    if (b >= 0 && b64 >= 0) {
        return fail(d, "send takes \"body\" or \"body_b64\", not both");
    }
    if (b64 >= 0) {
        /* Escapes show as backslashes, which base64 does not have: refused too. */
        if (d->t[b64].type != SB_JSON_STRING ||
            !sb_base64_valid(d->json + d->t[b64].start, d->t[b64].len, NULL)) {
            return fail(d, "\"body_b64\" must be canonical base64 (RFC 4648, padded)");
        }
        s->body.form = SB_OP_BODY_BASE64;
        s->body.data = tok_text(d, b64);
        return 0;
    }
    if (b < 0 || d->t[b].type != SB_JSON_STRING) {
        return fail(d, "send needs a string \"body\"");
    }
    /* The body stays its JSON text, quotes included: never unescaped, never re-escaped. */
    s->body.form = SB_OP_BODY_JSON;
    s->body.data = sb_slice_from(d->json + d->t[b].start - 1, d->t[b].len + 2);
    return 0;
}

static int decode_receipt(struct dec *d, struct sb_op_receipt *r)
{
    if (get_conv_or_to(d, &r->conv, &r->to) < 0) {
        return -EBADMSG;
    }
    int s = member(d, "seq");
    int64_t seq;
    if (s < 0 || d->t[s].type != SB_JSON_NUMBER || sb_json_int64(d->json, &d->t[s], &seq) < 0 ||
        seq < 1) {
        return fail(d, "receipt needs \"seq\" (an integer >= 1)");
    }
    r->seq = (uint64_t)seq;
    int k = member(d, "kind");
    if ((k >= 0 && sb_json_eq(d->json, &d->t[k], "read")) ||
        (k < 0 && (d->flags & SB_JSONOPS_REST))) {
        r->kind = SB_OP_RECEIPT_READ;
    } else if (k >= 0 && sb_json_eq(d->json, &d->t[k], "delivered")) {
        r->kind = SB_OP_RECEIPT_DELIVERED;
    } else {
        return fail(d, "receipt needs \"kind\": \"delivered\" or \"read\"");
    }
    return 0;
}

static int decode_members(struct dec *d, struct sb_op_conv_members *m)
{
    if (get_conv(d, &m->conv) < 0) {
        return -EBADMSG;
    }
    return get_users(d, "users", false, &users_msgs, &m->users);
}

static int decode_conv_create(struct dec *d, struct sb_op_conv_create *c)
{
    if (get_name(d, &c->name) < 0) {
        return -EBADMSG;
    }
    return get_users(d, "members", true, &members_msgs, &c->members);
}

static int decode_body(struct dec *d, struct sb_op *op)
{
    switch (op->type) {
    case SB_OP_SEND:
        return decode_send(d, &op->u.send);
    case SB_OP_RECEIPT:
        return decode_receipt(d, &op->u.receipt);
    case SB_OP_TYPING:
        return get_conv_or_to(d, &op->u.typing.conv, &op->u.typing.to);
    case SB_OP_PRESENCE_SUB:
    case SB_OP_PRESENCE_UNSUB:
        return get_users(d, "users", false, &presence_msgs, &op->u.presence_sub.users);
    case SB_OP_SYNC:
        return decode_sync(d, &op->u.sync);
    case SB_OP_CONV_CREATE:
        return decode_conv_create(d, &op->u.conv_create);
    case SB_OP_CONV_ADD:
    case SB_OP_CONV_REMOVE:
    case SB_OP_CONV_PROMOTE:
    case SB_OP_CONV_DEMOTE:
        return decode_members(d, &op->u.conv_members);
    case SB_OP_CONV_RENAME:
        if (get_conv(d, &op->u.conv_ref.conv) < 0) {
            return -EBADMSG;
        }
        return get_name(d, &op->u.conv_ref.name);
    case SB_OP_CONV_LEAVE:
    case SB_OP_CONV_GET:
        return get_conv(d, &op->u.conv_ref.conv);
    default: /* CONV_LIST, DEVICES: no fields */
        return 0;
    }
}

/* The operations a JSON client may send. */
static bool is_json_request(enum sb_op_type type)
{
    switch (type) {
    case SB_OP_SEND:
    case SB_OP_RECEIPT:
    case SB_OP_TYPING:
    case SB_OP_PRESENCE_SUB:
    case SB_OP_PRESENCE_UNSUB:
    case SB_OP_SYNC:
    case SB_OP_CONV_CREATE:
    case SB_OP_CONV_ADD:
    case SB_OP_CONV_REMOVE:
    case SB_OP_CONV_LEAVE:
    case SB_OP_CONV_RENAME:
    case SB_OP_CONV_LIST:
    case SB_OP_CONV_PROMOTE:
    case SB_OP_CONV_DEMOTE:
    case SB_OP_CONV_GET:
    case SB_OP_DEVICES:
        return true;
    default:
        return false;
    }
}

/* The request type the string names, or SB_OP_NONE. */
static enum sb_op_type request_type(const char *name)
{
    for (unsigned type = 1; type < 0x80; type++) {
        const char *n = sb_ops_type_name(type);
        if (n != NULL && is_json_request((enum sb_op_type)type) && strcmp(n, name) == 0) {
            return (enum sb_op_type)type;
        }
    }
    return SB_OP_NONE;
}

/* Reads "type" (any spelling a JSON string allows). False when missing, empty or too long. */
static bool read_type(const struct dec *d, enum sb_op_type *type)
{
    char name[JSONOPS_TYPE_MAX + 1];
    int i = member(d, "type");

    if (i < 0 || d->t[i].type != SB_JSON_STRING ||
        sb_json_string(d->json, &d->t[i], name, sizeof(name)) <= 0) {
        return false;
    }
    *type = request_type(name);
    return true;
}

int sb_jsonops_decode(const char *json, size_t len, enum sb_op_type type, unsigned flags,
                      struct sb_json_tok *toks, struct sb_op *op, struct sb_jsonops_error *err)
{
    const struct sb_json_limits lim = {.max_tokens = JSONOPS_PARSE_TOKENS,
                                       .max_depth = JSONOPS_MAX_DEPTH};
    struct dec d = {.json = json, .t = toks, .toks = toks, .flags = flags, .err = err};

    memset(op, 0, sizeof(*op));
    err->code = 0;
    err->message = NULL;
    if ((flags & SB_JSONOPS_REST) && len == 0) {
        d.json = json = "{}"; /* a REST request without a body has no fields */
        len = 2;
    }
    ssize_t n = sb_json_parse(json, len, &lim, toks);
    if (n == -E2BIG) {
        return fail(&d, "too many fields (lists hold at most 1,000 items)");
    }
    if (n < 0 || toks[0].type != SB_JSON_OBJECT) {
        return fail(&d, "expected a JSON object");
    }
    bool known = is_json_request(type);
    if (type == SB_OP_NONE) {
        if (!read_type(&d, &type)) {
            return fail(&d, "missing \"type\"");
        }
        known = type != SB_OP_NONE;
    }
    enum str_result id = get_str(&d, "id", SB_OPS_CLIENT_ID_MAX, &op->json_id);
    /* Receipts and typing need no request id (they are not answered); REST makes its own. */
    bool id_optional = type == SB_OP_RECEIPT || type == SB_OP_TYPING || (flags & SB_JSONOPS_REST);
    if (id != STR_OK && !id_optional) {
        return fail(&d, id == STR_ESCAPED ? "\"id\" may not contain escapes"
                                          : "missing \"id\" (1-64 bytes)");
    }
    if (!known) {
        return fail(&d, "unknown operation type");
    }
    op->type = type;
    if (type == SB_OP_SEND) {
        op->u.send.client_id = op->json_id;
    }
    return decode_body(&d, op);
}

/* ---- encoding ---------------------------------------------------------------------------- */

static void put_key_str(struct sb_json_writer *w, const char *key, struct sb_slice s)
{
    sb_json_key(w, key);
    sb_json_str(w, s.len > 0 ? s.base : "", s.len);
}

static void put_key_uint(struct sb_json_writer *w, const char *key, uint64_t v)
{
    sb_json_key(w, key);
    sb_json_uint(w, v);
}

/* A 64-bit id as a string: decimal (msg_id) or 16 hex digits (session). */
static void put_key_u64_str(struct sb_json_writer *w, const char *key, uint64_t v, bool hex)
{
    char s[24];
    snprintf(s, sizeof(s), hex ? "%016llx" : "%llu", (unsigned long long)v);
    sb_json_key(w, key);
    sb_json_cstr(w, s);
}

/* "type", then "id" when the operation answers a request that named itself. */
static void begin_op(struct sb_json_writer *w, const struct sb_op *op)
{
    sb_json_begin_object(w);
    sb_json_key(w, "type");
    sb_json_cstr(w, sb_ops_type_name(op->type));
    if (op->json_id.len > 0) {
        put_key_str(w, "id", op->json_id);
    }
}

/* A body of bytes that is not UTF-8: "body_b64", its base64 written straight into the buffer. */
static void put_bytes_b64(struct sb_json_writer *w, struct sb_slice data)
{
    size_t n = sb_base64_len(data.len);

    sb_json_key(w, "body_b64");
    sb_json_raw(w, "\"", 1); /* opens the value, with the writer's separators */
    if (w->error) {
        return;
    }
    if (n + 1 > w->cap - w->len) {
        /* What the writer does when out of room: finish reads it back as -ENOSPC. */
        w->error = true;
        w->len = w->cap + 1;
        return;
    }
    sb_base64_encode((const uint8_t *)data.base, data.len, w->buf + w->len);
    w->len += n;
    w->buf[w->len++] = '"';
}

static void put_body(struct sb_json_writer *w, const struct sb_op_body *b)
{
    switch (b->form) {
    case SB_OP_BODY_JSON:
        sb_json_key(w, "body");
        sb_json_raw(w, b->data.base, b->data.len);
        break;
    case SB_OP_BODY_BASE64:
        put_key_str(w, "body_b64", b->data);
        break;
    default:
        if (b->data.len == 0 || sb_utf8_validate((const uint8_t *)b->data.base, b->data.len) == 0) {
            put_key_str(w, "body", b->data);
        } else {
            put_bytes_b64(w, b->data);
        }
        break;
    }
}

static const char *const system_names[] = {"", "member_added", "member_removed", "renamed",
                                           "created"};

/* A message (an operation of its own, or a sync page's item). */
static int put_message(struct sb_json_writer *w, const struct sb_op *op,
                       const struct sb_op_message *m)
{
    if (m->system >= sizeof(system_names) / sizeof(system_names[0])) {
        return -EINVAL;
    }
    begin_op(w, op);
    put_key_str(w, "conv", m->conv);
    put_key_uint(w, "seq", m->seq);
    put_key_u64_str(w, "msg_id", m->msg_id, false);
    put_key_str(w, "from", m->from);
    put_key_str(w, "device", m->device);
    put_key_uint(w, "ts", m->ts_ms);
    if (m->system != SB_OP_SYSTEM_NONE) {
        /* A system message's subject is a user id or a name; it has no body. */
        sb_json_key(w, "system");
        sb_json_cstr(w, system_names[m->system]);
        put_key_str(w, "subject", m->subject);
    } else {
        put_body(w, &m->body);
    }
    sb_json_end_object(w);
    return 0;
}

/* An array of strings from a list of struct sb_slice. */
static int put_strings(struct sb_json_writer *w, const char *key, const struct sb_ops_list *l)
{
    struct sb_ops_list_iter it;
    struct sb_slice s;
    int rc;

    sb_json_key(w, key);
    sb_json_begin_array(w);
    sb_ops_list_begin(&it, l);
    while ((rc = sb_ops_list_next(&it, &s)) > 0) {
        sb_json_str(w, s.len > 0 ? s.base : "", s.len);
    }
    sb_json_end_array(w);
    return rc < 0 ? -EINVAL : 0;
}

static int put_sync_page(struct sb_json_writer *w, const struct sb_op *op)
{
    const struct sb_op_sync_page *p = &op->u.sync_page;
    static const struct sb_op item_op = {.type = SB_OP_MESSAGE};
    struct sb_ops_list_iter it;
    struct sb_op_message m;
    int rc;

    begin_op(w, op);
    put_key_str(w, "conv", p->conv);
    sb_json_key(w, "messages");
    sb_json_begin_array(w);
    sb_ops_list_begin(&it, &p->messages);
    while ((rc = sb_ops_list_next(&it, &m)) > 0) {
        if (put_message(w, &item_op, &m) < 0) {
            return -EINVAL;
        }
    }
    if (rc < 0) {
        return -EINVAL;
    }
    sb_json_end_array(w);
    sb_json_key(w, "more");
    sb_json_bool(w, p->has_more);
    put_key_uint(w, "last_seq", p->last_seq);
    if (p->truncated) {
        sb_json_key(w, "truncated");
        sb_json_bool(w, true);
    }
    sb_json_end_object(w);
    return 0;
}

static const char *conv_kind(struct sb_slice conv)
{
    return conv.len > 2 && conv.base[0] == 'g' && conv.base[1] == ':' ? "group" : "direct";
}

static int put_conv(struct sb_json_writer *w, const struct sb_op *op)
{
    const struct sb_op_conv *c = &op->u.conv;

    begin_op(w, op);
    put_key_str(w, "conv", c->conv);
    sb_json_key(w, "kind");
    sb_json_cstr(w, conv_kind(c->conv));
    put_key_str(w, "name", c->name);
    put_key_str(w, "owner", c->owner);
    if (put_strings(w, "admins", &c->admins) < 0 || put_strings(w, "members", &c->members) < 0) {
        return -EINVAL;
    }
    put_key_uint(w, "last_seq", c->last_seq);
    put_key_uint(w, "read_seq", c->read_seq);
    sb_json_end_object(w);
    return 0;
}

static int put_convs(struct sb_json_writer *w, const struct sb_op *op)
{
    struct sb_ops_list_iter it;
    struct sb_op_conv_summary c;
    int rc;

    begin_op(w, op);
    sb_json_key(w, "convs");
    sb_json_begin_array(w);
    sb_ops_list_begin(&it, &op->u.convs.convs);
    while ((rc = sb_ops_list_next(&it, &c)) > 0) {
        sb_json_begin_object(w);
        put_key_str(w, "conv", c.conv);
        sb_json_key(w, "kind");
        sb_json_cstr(w, conv_kind(c.conv));
        put_key_str(w, "name", c.name);
        put_key_str(w, "owner", c.owner);
        put_key_uint(w, "member_count", c.member_count);
        put_key_uint(w, "last_seq", c.last_seq);
        put_key_uint(w, "read_seq", c.read_seq);
        sb_json_end_object(w);
    }
    sb_json_end_array(w);
    sb_json_end_object(w);
    return rc < 0 ? -EINVAL : 0;
}

static int put_device_list(struct sb_json_writer *w, const struct sb_op *op)
{
    struct sb_ops_list_iter it;
    struct sb_op_device dev;
    int rc;

    begin_op(w, op);
    put_key_str(w, "user", op->u.device_list.user);
    sb_json_key(w, "devices");
    sb_json_begin_array(w);
    sb_ops_list_begin(&it, &op->u.device_list.devices);
    while ((rc = sb_ops_list_next(&it, &dev)) > 0) {
        sb_json_begin_object(w);
        put_key_str(w, "device", dev.device);
        put_key_u64_str(w, "session", dev.session, true);
        put_key_uint(w, "connected_s", dev.connected_s);
        put_key_uint(w, "queued_bytes", dev.queued_bytes);
        put_key_uint(w, "behind", dev.behind);
        if (dev.node.len)
            put_key_str(w, "node", dev.node);
        sb_json_end_object(w);
    }
    sb_json_end_array(w);
    sb_json_end_object(w);
    return rc < 0 ? -EINVAL : 0;
}

static void put_welcome(struct sb_json_writer *w, const struct sb_op *op)
{
    const struct sb_op_welcome *wl = &op->u.welcome;

    begin_op(w, op);
    put_key_str(w, "user", wl->user);
    put_key_str(w, "device", wl->device);
    put_key_u64_str(w, "session", wl->session, true);
    put_key_uint(w, "server_time", wl->server_time_ms);
    sb_json_key(w, "limits");
    sb_json_begin_object(w);
    put_key_uint(w, "max_body", wl->max_body);
    put_key_uint(w, "messages_per_s", wl->messages_per_s);
    put_key_uint(w, "bytes_per_s", wl->bytes_per_s);
    put_key_uint(w, "max_group_members", wl->max_group_members);
    put_key_uint(w, "max_frame", wl->max_frame);
    put_key_uint(w, "ping_interval_ms", wl->ping_interval_ms);
    sb_json_end_object(w);
    sb_json_end_object(w);
}

static void put_ack(struct sb_json_writer *w, const struct sb_op *op)
{
    const struct sb_op_ack *a = &op->u.ack;

    sb_json_begin_object(w);
    sb_json_key(w, "type");
    sb_json_cstr(w, "ack");
    /* The send's id is its client id: either names it. */
    put_key_str(w, "id", op->json_id.len > 0 ? op->json_id : a->client_id);
    put_key_u64_str(w, "msg_id", a->msg_id, false);
    put_key_str(w, "conv", a->conv);
    put_key_uint(w, "seq", a->seq);
    put_key_uint(w, "ts", a->ts_ms);
    if (a->is_duplicate) {
        sb_json_key(w, "duplicate");
        sb_json_bool(w, true);
    }
    sb_json_end_object(w);
}

static int put_receipt(struct sb_json_writer *w, const struct sb_op *op)
{
    const struct sb_op_receipt *r = &op->u.receipt;

    if (r->kind != SB_OP_RECEIPT_READ && r->kind != SB_OP_RECEIPT_DELIVERED) {
        return -EINVAL;
    }
    begin_op(w, op);
    put_key_str(w, "conv", r->conv);
    put_key_uint(w, "seq", r->seq);
    sb_json_key(w, "kind");
    sb_json_cstr(w, r->kind == SB_OP_RECEIPT_READ ? "read" : "delivered");
    put_key_str(w, "user", r->user);
    sb_json_end_object(w);
    return 0;
}

static int put_presence(struct sb_json_writer *w, const struct sb_op *op)
{
    const struct sb_op_presence *p = &op->u.presence;

    if (p->status != SB_OP_PRESENCE_ONLINE && p->status != SB_OP_PRESENCE_OFFLINE) {
        return -EINVAL;
    }
    begin_op(w, op);
    put_key_str(w, "user", p->user);
    sb_json_key(w, "status");
    sb_json_cstr(w, p->status == SB_OP_PRESENCE_ONLINE ? "online" : "offline");
    put_key_uint(w, "last_seen", p->last_seen_ms);
    sb_json_end_object(w);
    return 0;
}

static void put_error(struct sb_json_writer *w, const struct sb_op *op)
{
    const struct sb_op_error *e = &op->u.error;
    const char *code = sb_ops_err_name(e->code);

    begin_op(w, op);
    sb_json_key(w, "code");
    sb_json_cstr(w, code != NULL ? code : "internal");
    put_key_str(w, "message", e->message);
    if (e->conv.len > 0) {
        put_key_str(w, "conv", e->conv);
    }
    if (e->retry_after_ms > 0) {
        put_key_uint(w, "retry_after_ms", e->retry_after_ms);
    }
    sb_json_end_object(w);
}

/* Writes op; -EINVAL for a type or value it cannot write (the writer's state says the rest). */
static int put_op(struct sb_json_writer *w, const struct sb_op *op)
{
    switch (op->type) {
    case SB_OP_WELCOME:
        put_welcome(w, op);
        return 0;
    case SB_OP_ACK:
        put_ack(w, op);
        return 0;
    case SB_OP_MESSAGE:
        return put_message(w, op, &op->u.message);
    case SB_OP_RECEIPT:
        return put_receipt(w, op);
    case SB_OP_TYPING:
        begin_op(w, op);
        put_key_str(w, "conv", op->u.typing.conv);
        put_key_str(w, "user", op->u.typing.user);
        sb_json_end_object(w);
        return 0;
    case SB_OP_PRESENCE:
        return put_presence(w, op);
    case SB_OP_SYNC_PAGE:
        return put_sync_page(w, op);
    case SB_OP_SYNC_DONE:
        begin_op(w, op);
        put_key_str(w, "cursor", op->u.sync_done.cursor);
        sb_json_end_object(w);
        return 0;
    case SB_OP_CONV:
        return put_conv(w, op);
    case SB_OP_CONVS:
        return put_convs(w, op);
    case SB_OP_DEVICE_LIST:
        return put_device_list(w, op);
    case SB_OP_ERROR:
        put_error(w, op);
        return 0;
    case SB_OP_BEHIND:
        begin_op(w, op);
        put_key_str(w, "conv", op->u.behind.conv);
        put_key_uint(w, "seq", op->u.behind.seq);
        sb_json_end_object(w);
        return 0;
    case SB_OP_GOAWAY:
        begin_op(w, op);
        put_key_str(w, "reason", op->u.goaway.reason);
        put_key_uint(w, "reconnect_after_ms", op->u.goaway.reconnect_after_ms);
        sb_json_end_object(w);
        return 0;
    default:
        return -EINVAL;
    }
}

ssize_t sb_jsonops_encode(const struct sb_op *op, char *out, size_t cap)
{
    struct sb_json_writer w;

    sb_json_writer_init(&w, out, cap);
    if (put_op(&w, op) < 0) {
        return -EINVAL;
    }
    return sb_json_finish(&w);
}

/* ---- bounds ------------------------------------------------------------------------------ */

/*
 * An object's keys, punctuation and numbers at their longest (strings counted apart): a server
 * operation writes at most 282 such bytes (WELCOME), a list item (a message, a conversation, a
 * device) at most 182. Kept small so that most operations fit a buffer on the stack.
 */
#define OBJECT_BOUND 320
#define ITEM_BOUND 192

/* A string written escaped: at most 6 bytes per byte (\u00XX), and the quotes. */
static size_t str_bound(struct sb_slice s)
{
    return 6 * s.len + 2;
}

/*
 * A body of bytes as it will be written: UTF-8 escaped (5 bytes more at most for each byte that
 * may need an escape), anything else in base64. Bodies are large: 6 bytes a byte is too many.
 */
static size_t bytes_bound(struct sb_slice d)
{
    const unsigned char *p = (const unsigned char *)d.base;
    size_t special = 0;

    if (d.len > 0 && sb_utf8_validate(p, d.len) < 0) {
        return sb_base64_len(d.len) + 2;
    }
    for (size_t i = 0; i < d.len; i++) {
        special += p[i] < 0x20 || p[i] == '"' || p[i] == '\\' || p[i] == 0xE2;
    }
    return d.len + 5 * special + 2;
}

static size_t body_bound(const struct sb_op_body *b)
{
    return b->form == SB_OP_BODY_BYTES ? bytes_bound(b->data) : b->data.len + 2;
}

/* A message's strings and body (its object is counted by the caller). */
static size_t message_bound(const struct sb_op_message *m)
{
    return str_bound(m->conv) + str_bound(m->from) + str_bound(m->device) + str_bound(m->subject) +
           body_bound(&m->body);
}

/* The bound of a list of strings (the iteration stops at a broken list: encode refuses it). */
static size_t strings_bound(const struct sb_ops_list *l)
{
    struct sb_ops_list_iter it;
    struct sb_slice s;
    size_t n = 2;

    sb_ops_list_begin(&it, l);
    while (sb_ops_list_next(&it, &s) > 0) {
        n += str_bound(s) + 1;
    }
    return n;
}

static size_t list_bound(const struct sb_op *op)
{
    struct sb_ops_list_iter it;
    size_t n = 0;

    switch (op->type) {
    case SB_OP_SYNC_PAGE: {
        struct sb_op_message m;
        sb_ops_list_begin(&it, &op->u.sync_page.messages);
        while (sb_ops_list_next(&it, &m) > 0) {
            n += ITEM_BOUND + message_bound(&m) + 1;
        }
        return n;
    }
    case SB_OP_CONVS: {
        struct sb_op_conv_summary c;
        sb_ops_list_begin(&it, &op->u.convs.convs);
        while (sb_ops_list_next(&it, &c) > 0) {
            n += ITEM_BOUND + str_bound(c.conv) + str_bound(c.name) + str_bound(c.owner) + 1;
        }
        return n;
    }
    case SB_OP_DEVICE_LIST: {
        struct sb_op_device dev;
        sb_ops_list_begin(&it, &op->u.device_list.devices);
        while (sb_ops_list_next(&it, &dev) > 0) {
            n += ITEM_BOUND + str_bound(dev.device) + str_bound(dev.node) + 1;
        }
        return n;
    }
    case SB_OP_CONV:
        return strings_bound(&op->u.conv.admins) + strings_bound(&op->u.conv.members);
    default:
        return 0;
    }
}

size_t sb_jsonops_bound(const struct sb_op *op)
{
    size_t n = OBJECT_BOUND + str_bound(op->json_id) + list_bound(op);

    switch (op->type) {
    case SB_OP_WELCOME:
        return n + str_bound(op->u.welcome.user) + str_bound(op->u.welcome.device);
    case SB_OP_ACK:
        return n + str_bound(op->u.ack.client_id) + str_bound(op->u.ack.conv);
    case SB_OP_MESSAGE:
        return n + message_bound(&op->u.message);
    case SB_OP_RECEIPT:
        return n + str_bound(op->u.receipt.conv) + str_bound(op->u.receipt.to) +
               str_bound(op->u.receipt.user);
    case SB_OP_TYPING:
        return n + str_bound(op->u.typing.conv) + str_bound(op->u.typing.user);
    case SB_OP_PRESENCE:
        return n + str_bound(op->u.presence.user);
    case SB_OP_SYNC_PAGE:
        return n + str_bound(op->u.sync_page.conv);
    case SB_OP_SYNC_DONE:
        return n + str_bound(op->u.sync_done.cursor);
    case SB_OP_CONV:
        return n + str_bound(op->u.conv.conv) + str_bound(op->u.conv.name) +
               str_bound(op->u.conv.owner);
    case SB_OP_DEVICE_LIST:
        return n + str_bound(op->u.device_list.user);
    case SB_OP_ERROR:
        return n + str_bound(op->u.error.message) + str_bound(op->u.error.conv);
    case SB_OP_BEHIND:
        return n + str_bound(op->u.behind.conv);
    case SB_OP_GOAWAY:
        return n + str_bound(op->u.goaway.reason);
    default:
        return n;
    }
}
