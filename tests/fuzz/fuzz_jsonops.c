/*
 * libFuzzer target for proto/jsonops (and the body forms of proto/opsbody). The first byte picks
 * what the rest is:
 *   even: a JSON text a client sent, decoded (the type from the text, or from the byte; REST or
 *         not). A decoded operation must hold only slices inside the input, lists whose
 *         iterators give exactly `count` items within the limits (a name may be unescaped into
 *         the tokens' array), and a body whose bytes copy
 *         into exactly sb_ops_body_len bytes (a buffer of that size: ASan sees any overrun).
 *   odd:  the seed of a server operation (numbers, strings of any bytes, lists, bodies in every
 *         form), encoded into exactly sb_jsonops_bound bytes: it must not run out of room, and
 *         what it writes must parse as one JSON object; one byte less must be -ENOSPC.
 * Any disagreement aborts.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/jsonops.h"
#include "proto/opsbody.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(bool ok)
{
    if (!ok) {
        abort();
    }
}

/* ---- decoding ---- */

static const char *in_base;
static size_t in_len;
static struct sb_json_tok toks[SB_JSONOPS_MAX_TOKENS];

/* A name: read in place, or (escaped) unescaped into the tokens' array. */
static void require_name(struct sb_slice s)
{
    const char *t = (const char *)toks, *t_end = (const char *)(toks + SB_JSONOPS_MAX_TOKENS);

    require(s.len <= SB_OPS_NAME_MAX);
    require(s.len == 0 || (s.base >= in_base && s.base + s.len <= in_base + in_len) ||
            (s.base >= t && s.base + s.len <= t_end));
}

static void require_inside(struct sb_slice s, size_t max)
{
    require(s.len <= max);
    require(s.len == 0 || (s.base >= in_base && s.base + s.len <= in_base + in_len));
}

static void check_users(const struct sb_ops_list *l, bool may_be_empty)
{
    struct sb_ops_list_iter it;
    struct sb_slice u;
    int rc;

    require(l->count <= SB_OPS_REQUEST_LIST_MAX && (may_be_empty || l->count > 0));
    sb_ops_list_begin(&it, l);
    while ((rc = sb_ops_list_next(&it, &u)) > 0) {
        require(u.len > 0);
        require_inside(u, SB_OPS_USER_MAX);
    }
    require(rc == 0 && it.index == l->count);
}

static void check_resumes(const struct sb_ops_list *l)
{
    struct sb_ops_list_iter it;
    struct sb_op_resume r;
    int rc;

    require(l->count <= SB_OPS_REQUEST_LIST_MAX);
    sb_ops_list_begin(&it, l);
    while ((rc = sb_ops_list_next(&it, &r)) > 0) {
        require(r.conv.len > 0 && r.last_seq <= INT64_MAX);
        require_inside(r.conv, SB_OPS_CONV_MAX);
    }
    require(rc == 0 && it.index == l->count);
}

static void check_body(const struct sb_op_body *b)
{
    require(b->form == SB_OP_BODY_JSON || b->form == SB_OP_BODY_BASE64);
    require_inside(b->data, in_len);
    size_t n = sb_ops_body_len(b);
    /* Unescaping and base64 both shrink: the bytes are never more than their text. */
    require(n <= b->data.len);
    uint8_t *out = malloc(n ? n : 1);
    require(out != NULL);
    sb_ops_body_copy(b, out);
    free(out);
}

/* One side of a conversation reference: exactly one of conv and to, or neither under REST. */
static void check_conv_or_to(struct sb_slice conv, struct sb_slice to, unsigned flags)
{
    require_inside(conv, SB_OPS_CONV_MAX);
    require_inside(to, SB_OPS_USER_MAX);
    require(!(conv.len && to.len));
    require(conv.len || to.len || (flags & SB_JSONOPS_REST));
}

static void check_decoded(const struct sb_op *op, unsigned flags)
{
    require_inside(op->json_id, SB_OPS_CLIENT_ID_MAX);
    switch (op->type) {
    case SB_OP_SEND:
        require(op->u.send.client_id.base == op->json_id.base &&
                op->u.send.client_id.len == op->json_id.len);
        check_conv_or_to(op->u.send.conv, op->u.send.to, flags);
        check_body(&op->u.send.body);
        break;
    case SB_OP_RECEIPT:
        check_conv_or_to(op->u.receipt.conv, op->u.receipt.to, flags);
        require(op->u.receipt.seq >= 1 && op->u.receipt.seq <= INT64_MAX);
        require(op->u.receipt.kind == SB_OP_RECEIPT_READ ||
                op->u.receipt.kind == SB_OP_RECEIPT_DELIVERED);
        break;
    case SB_OP_TYPING:
        check_conv_or_to(op->u.typing.conv, op->u.typing.to, flags);
        break;
    case SB_OP_PRESENCE_SUB:
    case SB_OP_PRESENCE_UNSUB:
        check_users(&op->u.presence_sub.users, false);
        break;
    case SB_OP_SYNC:
        require(op->u.sync.limit <= 1000);
        require_inside(op->u.sync.cursor, SB_OPS_CURSOR_MAX);
        require(!(op->u.sync.cursor.len && op->u.sync.convs.count));
        require(op->u.sync.cursor.len || op->u.sync.convs.count);
        check_resumes(&op->u.sync.convs);
        break;
    case SB_OP_CONV_CREATE:
        require_name(op->u.conv_create.name);
        check_users(&op->u.conv_create.members, true);
        break;
    case SB_OP_CONV_ADD:
    case SB_OP_CONV_REMOVE:
    case SB_OP_CONV_PROMOTE:
    case SB_OP_CONV_DEMOTE:
        require_inside(op->u.conv_members.conv, SB_OPS_CONV_MAX);
        check_users(&op->u.conv_members.users, false);
        break;
    case SB_OP_CONV_LEAVE:
    case SB_OP_CONV_RENAME:
    case SB_OP_CONV_GET:
        require_inside(op->u.conv_ref.conv, SB_OPS_CONV_MAX);
        require_name(op->u.conv_ref.name);
        break;
    case SB_OP_CONV_LIST:
    case SB_OP_DEVICES:
        break;
    default:
        require(false); /* only client operations decode */
    }
}

static void fuzz_decode(uint8_t mode, const uint8_t *data, size_t size)
{
    static const enum sb_op_type types[] = {SB_OP_NONE,         SB_OP_SEND,     SB_OP_RECEIPT,
                                            SB_OP_TYPING,       SB_OP_SYNC,     SB_OP_CONV_ADD,
                                            SB_OP_CONV_CREATE,  SB_OP_CONV_GET, SB_OP_CONV_LIST,
                                            SB_OP_PRESENCE_SUB, SB_OP_ACK,      SB_OP_HELLO};
    unsigned flags = (mode & 2) ? SB_JSONOPS_REST : 0;
    enum sb_op_type type =
        (mode & 4) ? types[(mode >> 3) % (sizeof(types) / sizeof(types[0]))] : SB_OP_NONE;
    /* A copy of exactly the input's size, so that reading past it is seen. */
    char *json = malloc(size ? size : 1);
    struct sb_op op;
    struct sb_jsonops_error err;

    require(json != NULL);
    if (size) {
        memcpy(json, data, size);
    }
    in_base = json;
    in_len = size;
    int rc = sb_jsonops_decode(json, size, type, flags, toks, &op, &err);
    if (rc == 0) {
        require(type == SB_OP_NONE || op.type == type);
        check_decoded(&op, flags);
    } else {
        require(rc == -EBADMSG && err.code == SB_OP_ERR_BAD_REQUEST && err.message != NULL);
        /* An empty REST body is {}, not the input. */
        if (!((flags & SB_JSONOPS_REST) && size == 0)) {
            require_inside(op.json_id, SB_OPS_CLIENT_ID_MAX);
        }
    }
    free(json);
}

/* ---- encoding ---- */

/* The seed, read front to back; past its end everything reads as zero. */
struct seed {
    const uint8_t *p;
    size_t n;
};

static uint64_t take(struct seed *s, unsigned bytes)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < bytes; i++) {
        v = v << 8 | (s->n ? (s->n--, *s->p++) : 0);
    }
    return v;
}

/* A string of any bytes: a length byte, then up to that many bytes of the seed. */
static struct sb_slice take_str(struct seed *s)
{
    size_t len = (size_t)take(s, 1);

    if (len > s->n) {
        len = s->n;
    }
    struct sb_slice out = sb_slice_from((const char *)s->p, len);
    s->p += len;
    s->n -= len;
    return out;
}

/* Storage for bodies made in other forms, for one run. */
static char arena[1 << 20];
static size_t arena_used;

static struct sb_op_body take_body(struct seed *s)
{
    struct sb_slice raw = take_str(s);
    uint8_t form = (uint8_t)(take(s, 1) % 3);
    struct sb_op_body b = {SB_OP_BODY_BYTES, raw};

    if (form == SB_OP_BODY_BASE64 && arena_used + sb_base64_len(raw.len) <= sizeof(arena)) {
        sb_base64_encode((const uint8_t *)raw.base, raw.len, arena + arena_used);
        b = (struct sb_op_body){SB_OP_BODY_BASE64,
                                sb_slice_from(arena + arena_used, sb_base64_len(raw.len))};
        arena_used += b.data.len;
    } else if (form == SB_OP_BODY_JSON) {
        /* A JSON literal, as a decoder would have kept it (only UTF-8 makes one). */
        struct sb_json_writer w;
        sb_json_writer_init(&w, arena + arena_used, sizeof(arena) - arena_used);
        sb_json_str(&w, raw.len ? raw.base : "", raw.len);
        ssize_t n = sb_json_finish(&w);
        if (n > 0) {
            b = (struct sb_op_body){SB_OP_BODY_JSON, sb_slice_from(arena + arena_used, (size_t)n)};
            arena_used += (size_t)n;
        }
    }
    return b;
}

static struct sb_op_message take_message(struct seed *s)
{
    struct sb_op_message m = {.msg_id = take(s, 8), .seq = take(s, 2), .ts_ms = take(s, 8)};

    m.system = (uint8_t)(take(s, 1) % 6); /* 5: not a system message kind */
    m.conv = take_str(s);
    m.from = take_str(s);
    m.device = take_str(s);
    m.subject = take_str(s);
    m.body = take_body(s);
    return m;
}

/* A list generated from the seed as it is iterated: raw points at the seed it reads. */
enum gen_kind { GEN_STR, GEN_MESSAGE, GEN_SUMMARY, GEN_DEVICE };

struct gen {
    enum gen_kind kind;
    struct seed seed;
};

static int next_gen(struct sb_ops_list_iter *it, void *item)
{
    struct gen *g = (struct gen *)(uintptr_t)it->list->raw.base;
    struct seed *s = &g->seed;

    if (it->index >= it->list->count) {
        return 0;
    }
    if (it->index == 0xFF) {
        return -EBADMSG; /* a list that breaks part way */
    }
    it->index++;
    switch (g->kind) {
    case GEN_STR:
        *(struct sb_slice *)item = take_str(s);
        break;
    case GEN_MESSAGE:
        *(struct sb_op_message *)item = take_message(s);
        break;
    case GEN_SUMMARY: {
        struct sb_op_conv_summary c = {
            .last_seq = take(s, 8), .read_seq = take(s, 8), .member_count = (uint32_t)take(s, 4)};
        c.conv = take_str(s);
        c.name = take_str(s);
        c.owner = take_str(s);
        *(struct sb_op_conv_summary *)item = c;
        break;
    }
    case GEN_DEVICE: {
        struct sb_op_device d = {.session = take(s, 8),
                                 .connected_s = take(s, 4),
                                 .queued_bytes = take(s, 4),
                                 .behind = (uint32_t)take(s, 2)};
        d.device = take_str(s);
        *(struct sb_op_device *)item = d;
        break;
    }
    }
    return 1;
}

static struct gen gens[4];
static unsigned n_gens;

/*
 * A list whose items the seed makes. The generator reads its own copy of what follows in the
 * seed, so the list iterates the same way every time (bound, then encode).
 */
static struct sb_ops_list take_list(struct seed *s, enum gen_kind kind)
{
    struct sb_ops_list l = {0};
    uint32_t count = (uint32_t)take(s, 1);

    if (n_gens == sizeof(gens) / sizeof(gens[0])) {
        return l;
    }
    struct gen *g = &gens[n_gens++];
    g->kind = kind;
    g->seed = *s;
    l.count = count % 0x100 == 0xFF ? 0x100 : count;
    l.raw = sb_slice_from((const char *)g, sizeof(*g));
    l.next = next_gen;
    return l;
}

/* Iterators read from a copy of their seed, rewound before each walk of the operation. */
static struct seed gen_start[4];

static void rewind_gens(void)
{
    for (unsigned i = 0; i < n_gens; i++) {
        gens[i].seed = gen_start[i];
    }
}

static void take_op(struct seed *s, struct sb_op *op)
{
    static const enum sb_op_type types[] = {
        SB_OP_WELCOME,     SB_OP_ACK,       SB_OP_MESSAGE,   SB_OP_RECEIPT, SB_OP_TYPING,
        SB_OP_PRESENCE,    SB_OP_SYNC_PAGE, SB_OP_SYNC_DONE, SB_OP_CONV,    SB_OP_CONVS,
        SB_OP_DEVICE_LIST, SB_OP_ERROR,     SB_OP_BEHIND,    SB_OP_GOAWAY,  SB_OP_SEND};

    memset(op, 0, sizeof(*op));
    op->type = types[take(s, 1) % (sizeof(types) / sizeof(types[0]))];
    op->json_id = take_str(s);
    switch (op->type) {
    case SB_OP_WELCOME:
        op->u.welcome = (struct sb_op_welcome){.session = take(s, 8),
                                               .server_time_ms = take(s, 8),
                                               .max_frame = (uint32_t)take(s, 4),
                                               .max_body = (uint32_t)take(s, 4),
                                               .ping_interval_ms = (uint32_t)take(s, 4),
                                               .messages_per_s = (uint32_t)take(s, 4),
                                               .bytes_per_s = (uint32_t)take(s, 4),
                                               .max_group_members = (uint32_t)take(s, 4)};
        op->u.welcome.user = take_str(s);
        op->u.welcome.device = take_str(s);
        break;
    case SB_OP_ACK:
        op->u.ack = (struct sb_op_ack){.msg_id = take(s, 8),
                                       .seq = take(s, 8),
                                       .ts_ms = take(s, 8),
                                       .is_duplicate = take(s, 1) & 1};
        op->u.ack.client_id = take_str(s);
        op->u.ack.conv = take_str(s);
        break;
    case SB_OP_MESSAGE:
        op->u.message = take_message(s);
        break;
    case SB_OP_RECEIPT:
        op->u.receipt =
            (struct sb_op_receipt){.seq = take(s, 8), .kind = (uint8_t)(take(s, 1) % 4)};
        op->u.receipt.conv = take_str(s);
        op->u.receipt.user = take_str(s);
        break;
    case SB_OP_TYPING:
        op->u.typing.conv = take_str(s);
        op->u.typing.user = take_str(s);
        break;
    case SB_OP_PRESENCE:
        op->u.presence = (struct sb_op_presence){.last_seen_ms = take(s, 8),
                                                 .status = (uint8_t)(take(s, 1) % 4)};
        op->u.presence.user = take_str(s);
        break;
    case SB_OP_SYNC_PAGE:
        op->u.sync_page.last_seq = take(s, 8);
        op->u.sync_page.has_more = take(s, 1) & 1;
        op->u.sync_page.truncated = take(s, 1) & 1;
        op->u.sync_page.conv = take_str(s);
        op->u.sync_page.messages = take_list(s, GEN_MESSAGE);
        break;
    case SB_OP_SYNC_DONE:
        op->u.sync_done.cursor = take_str(s);
        break;
    case SB_OP_CONV:
        op->u.conv.last_seq = take(s, 8);
        op->u.conv.read_seq = take(s, 8);
        op->u.conv.conv = take_str(s);
        op->u.conv.name = take_str(s);
        op->u.conv.owner = take_str(s);
        op->u.conv.admins = take_list(s, GEN_STR);
        op->u.conv.members = take_list(s, GEN_STR);
        break;
    case SB_OP_CONVS:
        op->u.convs.convs = take_list(s, GEN_SUMMARY);
        break;
    case SB_OP_DEVICE_LIST:
        op->u.device_list.user = take_str(s);
        op->u.device_list.devices = take_list(s, GEN_DEVICE);
        break;
    case SB_OP_ERROR:
        op->u.error = (struct sb_op_error){.code = (uint16_t)take(s, 2),
                                           .retry_after_ms = (uint32_t)take(s, 4)};
        op->u.error.message = take_str(s);
        op->u.error.conv = take_str(s);
        break;
    case SB_OP_BEHIND:
        op->u.behind.seq = take(s, 8);
        op->u.behind.conv = take_str(s);
        break;
    case SB_OP_GOAWAY:
        op->u.goaway.reconnect_after_ms = (uint32_t)take(s, 4);
        op->u.goaway.reason = take_str(s);
        break;
    default:
        break; /* a client type: refused */
    }
}

static void fuzz_encode(const uint8_t *data, size_t size)
{
    static struct sb_json_tok out_toks[1 << 16];
    const struct sb_json_limits lim = {.max_tokens = sizeof(out_toks) / sizeof(out_toks[0]),
                                       .max_depth = 8};
    struct seed s = {data, size};
    struct sb_op op;

    arena_used = 0;
    n_gens = 0;
    take_op(&s, &op);
    for (unsigned i = 0; i < n_gens; i++) {
        gen_start[i] = gens[i].seed;
    }
    size_t bound = sb_jsonops_bound(&op);
    char *out = malloc(bound);
    require(out != NULL);
    rewind_gens();
    ssize_t n = sb_jsonops_encode(&op, out, bound);
    require(n != -ENOSPC);
    if (n > 0) {
        require((size_t)n <= bound);
        ssize_t nt = sb_json_parse(out, (size_t)n, &lim, out_toks);
        require((nt > 0 && out_toks[0].type == SB_JSON_OBJECT) || nt == -E2BIG);
        rewind_gens();
        require(sb_jsonops_encode(&op, out, (size_t)n - 1) == -ENOSPC);
    } else {
        require(n == -EINVAL);
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    if (data[0] & 1) {
        fuzz_encode(data + 1, size - 1);
    } else {
        fuzz_decode(data[0], data + 1, size - 1);
    }
    return 0;
}
