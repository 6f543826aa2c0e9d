/*
 * Unit tests for proto/binproto: every vector of tests/vectors/binary.txt decodes to the fields
 * it states and re-encodes to its bytes; truncations, overruns, limits, flags, versions and
 * types; the encoder's rules (bodies in every form), the list writer and iterators; and the
 * worked examples of docs/protocol-binary.md are the vectors, verbatim.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "check.h"
#include "proto/binproto.h"
#include "proto/opsbody.h"

#define MAX_FRAME 65536 /* what the vectors are decoded with */
#define MAX_VECTORS 128

struct vector {
    char name[64];
    uint8_t bytes[1024];
    size_t len;
    char expect[8192];
    const char *block; /* the vector's text in the file, "== name" to its last line */
    size_t block_len;
};

static struct vector vectors[MAX_VECTORS];
static int n_vectors;
static char *vector_text; /* the file, which the vectors' blocks point into */

/* ---- printing a decoded operation the way the vector file states it ---- */

struct out {
    char buf[16384];
    size_t len;
};

static void outf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void outf(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(o->buf + o->len, sizeof(o->buf) - o->len, fmt, ap);
    va_end(ap);
    if (n > 0) {
        o->len += (size_t)n;
        if (o->len >= sizeof(o->buf)) {
            o->len = sizeof(o->buf) - 1;
        }
    }
}

static void out_quoted(struct out *o, struct sb_slice s)
{
    outf(o, "\"");
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.base[i];
        if (c == '"' || c == '\\') {
            outf(o, "\\%c", c);
        } else if (c >= 0x20 && c < 0x7f) {
            outf(o, "%c", c);
        } else {
            outf(o, "\\x%02x", c);
        }
    }
    outf(o, "\"");
}

static void r_int(struct out *o, const char *pre, const char *name, uint64_t v)
{
    outf(o, "%s%s: %" PRIu64 "\n", pre, name, v);
}

static void r_str(struct out *o, const char *pre, const char *name, struct sb_slice s)
{
    outf(o, "%s%s: ", pre, name);
    out_quoted(o, s);
    outf(o, "\n");
}

static void r_bool(struct out *o, const char *pre, const char *name, bool v)
{
    outf(o, "%s%s: %s\n", pre, name, v ? "true" : "false");
}

static void r_enum(struct out *o, const char *pre, const char *name, unsigned v, const char *label)
{
    outf(o, "%s%s: %u (%s)\n", pre, name, v, label ? label : "unknown");
}

static const char *system_name(unsigned v)
{
    static const char *const names[] = {"none", "member_added", "member_removed", "renamed",
                                        "created"};
    return v < 5 ? names[v] : NULL;
}

static const char *receipt_kind_name(unsigned v)
{
    return v == SB_OP_RECEIPT_DELIVERED ? "delivered" : v == SB_OP_RECEIPT_READ ? "read" : NULL;
}

/* The type's name as the vectors print it: JSON's, but DEVICE_LIST shares "devices" there. */
static const char *type_label(unsigned type)
{
    return type == SB_OP_DEVICE_LIST ? "device_list" : sb_ops_type_name(type);
}

static const char *status_name(unsigned v)
{
    return v == SB_OP_PRESENCE_ONLINE ? "online" : v == SB_OP_PRESENCE_OFFLINE ? "offline" : NULL;
}

static void r_list_end(struct out *o, int rc, unsigned n, const struct sb_ops_list *l)
{
    if (rc < 0 || n != l->count) {
        outf(o, "iterator failed: %d after %u of %u\n", rc, n, (unsigned)l->count);
    }
}

static void r_users(struct out *o, const char *pre, const char *name, const struct sb_ops_list *l)
{
    struct sb_ops_list_iter it;
    struct sb_slice user;
    char p[160];
    unsigned n = 0;
    int rc;

    outf(o, "%s%s: count %u\n", pre, name, (unsigned)l->count);
    sb_ops_list_begin(&it, l);
    while ((rc = sb_ops_list_next(&it, &user)) > 0) {
        snprintf(p, sizeof(p), "%s%s[%u]", pre, name, n++);
        r_str(o, "", p, user);
    }
    r_list_end(o, rc, n, l);
}

static void r_resumes(struct out *o, const char *name, const struct sb_ops_list *l)
{
    struct sb_ops_list_iter it;
    struct sb_op_resume r;
    char p[160];
    unsigned n = 0;
    int rc;

    outf(o, "%s: count %u\n", name, (unsigned)l->count);
    sb_ops_list_begin(&it, l);
    while ((rc = sb_ops_list_next(&it, &r)) > 0) {
        snprintf(p, sizeof(p), "%s[%u].", name, n++);
        r_int(o, p, "last_seq", r.last_seq);
        r_str(o, p, "conv", r.conv);
    }
    r_list_end(o, rc, n, l);
}

/* A decoded body is always the bytes themselves; any other form shows up as a mismatch. */
static void r_body(struct out *o, const char *p, const struct sb_op_body *b)
{
    if (b->form != SB_OP_BODY_BYTES) {
        outf(o, "%sbody form %u\n", p, b->form);
    }
    r_str(o, p, "body", b->data);
}

static void r_message(struct out *o, const char *p, const struct sb_op_message *m)
{
    r_int(o, p, "msg_id", m->msg_id);
    r_int(o, p, "seq", m->seq);
    r_int(o, p, "ts_ms", m->ts_ms);
    r_enum(o, p, "system", m->system, system_name(m->system));
    r_str(o, p, "conv", m->conv);
    r_str(o, p, "from", m->from);
    r_str(o, p, "device", m->device);
    r_str(o, p, "subject", m->subject);
    r_body(o, p, &m->body);
}

static void r_conv(struct out *o, const char *p, const struct sb_op_conv *c)
{
    r_int(o, p, "last_seq", c->last_seq);
    r_int(o, p, "read_seq", c->read_seq);
    r_str(o, p, "conv", c->conv);
    r_str(o, p, "name", c->name);
    r_str(o, p, "owner", c->owner);
    r_users(o, p, "admins", &c->admins);
    r_users(o, p, "members", &c->members);
}

static void r_messages(struct out *o, const struct sb_ops_list *l)
{
    struct sb_ops_list_iter it;
    struct sb_op_message m;
    char p[64];
    unsigned n = 0;
    int rc;

    outf(o, "messages: count %u\n", (unsigned)l->count);
    sb_ops_list_begin(&it, l);
    while ((rc = sb_ops_list_next(&it, &m)) > 0) {
        snprintf(p, sizeof(p), "messages[%u].", n++);
        r_message(o, p, &m);
    }
    r_list_end(o, rc, n, l);
}

static void r_convs(struct out *o, const struct sb_ops_list *l)
{
    struct sb_ops_list_iter it;
    struct sb_op_conv_summary c;
    char p[64];
    unsigned n = 0;
    int rc;

    outf(o, "convs: count %u\n", (unsigned)l->count);
    sb_ops_list_begin(&it, l);
    while ((rc = sb_ops_list_next(&it, &c)) > 0) {
        snprintf(p, sizeof(p), "convs[%u].", n++);
        r_int(o, p, "last_seq", c.last_seq);
        r_int(o, p, "read_seq", c.read_seq);
        r_int(o, p, "member_count", c.member_count);
        r_str(o, p, "conv", c.conv);
        r_str(o, p, "name", c.name);
        r_str(o, p, "owner", c.owner);
    }
    r_list_end(o, rc, n, l);
}

static void r_devices(struct out *o, const struct sb_ops_list *l)
{
    struct sb_ops_list_iter it;
    struct sb_op_device d;
    char p[64];
    unsigned n = 0;
    int rc;

    outf(o, "devices: count %u\n", (unsigned)l->count);
    sb_ops_list_begin(&it, l);
    while ((rc = sb_ops_list_next(&it, &d)) > 0) {
        snprintf(p, sizeof(p), "devices[%u].", n++);
        r_int(o, p, "session", d.session);
        r_int(o, p, "connected_s", d.connected_s);
        r_int(o, p, "queued_bytes", d.queued_bytes);
        r_int(o, p, "behind", d.behind);
        r_str(o, p, "device", d.device);
        r_str(o, p, "node", d.node);
    }
    r_list_end(o, rc, n, l);
}

static void r_client_ops(struct out *o, const struct sb_op *op)
{
    const char *p = "";

    switch (op->type) {
    case SB_OP_HELLO:
        r_str(o, p, "token", op->u.hello.token);
        r_str(o, p, "device", op->u.hello.device);
        r_resumes(o, "resume", &op->u.hello.resume);
        break;
    case SB_OP_SEND:
        r_str(o, p, "client_id", op->u.send.client_id);
        r_str(o, p, "conv", op->u.send.conv);
        r_str(o, p, "to", op->u.send.to);
        r_body(o, p, &op->u.send.body);
        break;
    case SB_OP_RECEIPT:
        r_int(o, p, "seq", op->u.receipt.seq);
        r_enum(o, p, "kind", op->u.receipt.kind, receipt_kind_name(op->u.receipt.kind));
        r_str(o, p, "conv", op->u.receipt.conv);
        r_str(o, p, "to", op->u.receipt.to);
        r_str(o, p, "user", op->u.receipt.user);
        break;
    case SB_OP_TYPING:
        r_str(o, p, "conv", op->u.typing.conv);
        r_str(o, p, "to", op->u.typing.to);
        r_str(o, p, "user", op->u.typing.user);
        break;
    case SB_OP_PING:
    case SB_OP_PONG:
        r_str(o, p, "data", op->u.ping.data);
        break;
    case SB_OP_PRESENCE_SUB:
    case SB_OP_PRESENCE_UNSUB:
        r_users(o, p, "users", &op->u.presence_sub.users);
        break;
    case SB_OP_SYNC:
        r_int(o, p, "limit", op->u.sync.limit);
        r_str(o, p, "cursor", op->u.sync.cursor);
        r_resumes(o, "convs", &op->u.sync.convs);
        break;
    case SB_OP_CONV_CREATE:
        r_str(o, p, "name", op->u.conv_create.name);
        r_users(o, p, "members", &op->u.conv_create.members);
        break;
    case SB_OP_CONV_ADD:
    case SB_OP_CONV_REMOVE:
    case SB_OP_CONV_PROMOTE:
    case SB_OP_CONV_DEMOTE:
        r_str(o, p, "conv", op->u.conv_members.conv);
        r_users(o, p, "users", &op->u.conv_members.users);
        break;
    case SB_OP_CONV_RENAME:
        r_str(o, p, "conv", op->u.conv_ref.conv);
        r_str(o, p, "name", op->u.conv_ref.name);
        break;
    case SB_OP_CONV_LEAVE:
    case SB_OP_CONV_GET:
        r_str(o, p, "conv", op->u.conv_ref.conv);
        break;
    default:
        break;
    }
}

static void r_server_ops(struct out *o, const struct sb_op *op)
{
    const char *p = "";

    switch (op->type) {
    case SB_OP_WELCOME:
        r_int(o, p, "session", op->u.welcome.session);
        r_int(o, p, "server_time_ms", op->u.welcome.server_time_ms);
        r_int(o, p, "max_frame", op->u.welcome.max_frame);
        r_int(o, p, "max_body", op->u.welcome.max_body);
        r_int(o, p, "ping_interval_ms", op->u.welcome.ping_interval_ms);
        r_int(o, p, "messages_per_s", op->u.welcome.messages_per_s);
        r_int(o, p, "bytes_per_s", op->u.welcome.bytes_per_s);
        r_int(o, p, "max_group_members", op->u.welcome.max_group_members);
        r_str(o, p, "user", op->u.welcome.user);
        r_str(o, p, "device", op->u.welcome.device);
        break;
    case SB_OP_ACK:
        r_int(o, p, "msg_id", op->u.ack.msg_id);
        r_int(o, p, "seq", op->u.ack.seq);
        r_int(o, p, "ts_ms", op->u.ack.ts_ms);
        r_bool(o, p, "duplicate", op->u.ack.is_duplicate);
        r_str(o, p, "client_id", op->u.ack.client_id);
        r_str(o, p, "conv", op->u.ack.conv);
        break;
    case SB_OP_MESSAGE:
        r_message(o, p, &op->u.message);
        break;
    case SB_OP_PRESENCE:
        r_int(o, p, "last_seen_ms", op->u.presence.last_seen_ms);
        r_enum(o, p, "status", op->u.presence.status, status_name(op->u.presence.status));
        r_str(o, p, "user", op->u.presence.user);
        break;
    case SB_OP_SYNC_PAGE:
        r_int(o, p, "last_seq", op->u.sync_page.last_seq);
        r_bool(o, p, "more", op->u.sync_page.has_more);
        r_bool(o, p, "truncated", op->u.sync_page.truncated);
        r_str(o, p, "conv", op->u.sync_page.conv);
        r_messages(o, &op->u.sync_page.messages);
        break;
    case SB_OP_SYNC_DONE:
        r_str(o, p, "cursor", op->u.sync_done.cursor);
        break;
    case SB_OP_CONV:
        r_conv(o, p, &op->u.conv);
        break;
    case SB_OP_CONVS:
        r_convs(o, &op->u.convs.convs);
        break;
    case SB_OP_DEVICE_LIST:
        r_str(o, p, "user", op->u.device_list.user);
        r_devices(o, &op->u.device_list.devices);
        break;
    case SB_OP_ERROR:
        r_enum(o, p, "code", op->u.error.code, sb_ops_err_name(op->u.error.code));
        r_int(o, p, "retry_after_ms", op->u.error.retry_after_ms);
        r_str(o, p, "message", op->u.error.message);
        r_str(o, p, "conv", op->u.error.conv);
        break;
    case SB_OP_BEHIND:
        r_int(o, p, "seq", op->u.behind.seq);
        r_str(o, p, "conv", op->u.behind.conv);
        break;
    case SB_OP_GOAWAY:
        r_int(o, p, "reconnect_after_ms", op->u.goaway.reconnect_after_ms);
        r_str(o, p, "reason", op->u.goaway.reason);
        break;
    default:
        break;
    }
}

static void render_op(struct out *o, const struct sb_op *op)
{
    const char *name = type_label(op->type);

    o->len = 0;
    o->buf[0] = '\0';
    outf(o, "result: ok\ntype: %s\nrequest_id: %" PRIu32 "\n", name ? name : "?", op->request_id);
    r_client_ops(o, op);
    r_server_ops(o, op);
}

static const char *err_name(long rc)
{
    switch (rc) {
    case 0:
        return "ok";
    case -EAGAIN:
        return "EAGAIN";
    case -EMSGSIZE:
        return "EMSGSIZE";
    case -EPROTO:
        return "EPROTO";
    case -EPROTONOSUPPORT:
        return "EPROTONOSUPPORT";
    case -EBADMSG:
        return "EBADMSG";
    case -EOPNOTSUPP:
        return "EOPNOTSUPP";
    default:
        return rc > 0 ? "ok" : "unexpected";
    }
}

static void render_refusal(struct out *o, long rc, int frame_rc, const struct sb_binproto_header *h)
{
    const char *name = type_label(h->type);

    o->len = 0;
    o->buf[0] = '\0';
    outf(o, "result: %s\nframe_result: %s\nframe_size: %zu\nversion: %u\n", err_name(rc),
         err_name(frame_rc), h->frame_size, h->version);
    if (name) {
        outf(o, "type: %s\n", name);
    } else {
        outf(o, "type: 0x%02x\n", h->type);
    }
    outf(o, "flags: 0x%04x\nrequest_id: %" PRIu32 "\n", h->flags, h->request_id);
}

/* ---- loading the vectors ---- */

/* A file of the source tree, found from this file's own path. */
static char *read_source_file(const char *rel, size_t *len)
{
    const char *me = __FILE__;
    const char *at = strstr(me, "tests/unit/test_binproto.c");
    char path[4096];
    FILE *f;
    char *buf;
    long n;

    snprintf(path, sizeof(path), "%.*s%s", (int)(at ? at - me : 0), me, rel);
    if ((f = fopen(path, "rb")) == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* Appends the hex bytes of a line (before any '|') to v; false on anything else. */
static bool parse_hex_line(const char *line, size_t n, struct vector *v)
{
    size_t i = 0;

    while (i < n && line[i] != '|') {
        if (line[i] == ' ') {
            i++;
            continue;
        }
        if (i + 1 >= n || hex_digit(line[i]) < 0 || hex_digit(line[i + 1]) < 0 ||
            v->len == sizeof(v->bytes)) {
            return false;
        }
        v->bytes[v->len++] = (uint8_t)(hex_digit(line[i]) << 4 | hex_digit(line[i + 1]));
        i += 2;
    }
    return true;
}

static void end_vector(struct vector *v, const char *line)
{
    v->block_len = (size_t)(line - v->block) - 1;
    n_vectors++;
}

static bool parse_vectors(const char *text)
{
    enum { OUTSIDE, BYTES, EXPECT } state = OUTSIDE;
    struct vector *v = NULL;
    const char *line = text;

    while (*line) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        if (n >= 3 && memcmp(line, "== ", 3) == 0) {
            if (state != OUTSIDE || n_vectors == MAX_VECTORS) {
                return false;
            }
            v = &vectors[n_vectors];
            snprintf(v->name, sizeof(v->name), "%.*s", (int)(n - 3), line + 3);
            v->block = line;
            state = BYTES;
        } else if (state == BYTES && n == 2 && memcmp(line, "--", 2) == 0) {
            state = EXPECT;
        } else if (state == BYTES && line[0] != '#') {
            if (!parse_hex_line(line, n, v)) {
                fprintf(stderr, "%s: bad hex line %.*s\n", v->name, (int)n, line);
                return false;
            }
        } else if (state == EXPECT && n == 0) {
            end_vector(v, line);
            state = OUTSIDE;
        } else if (state == EXPECT) {
            size_t used = strlen(v->expect);
            snprintf(v->expect + used, sizeof(v->expect) - used, "%.*s\n", (int)n, line);
        }
        line += nl ? n + 1 : n;
    }
    if (state == EXPECT) {
        end_vector(v, line + 1);
    }
    return state != BYTES;
}

/* ---- lists read through an iterator other than the codec's own ---- */

static int foreign_user(struct sb_ops_list_iter *it, void *item)
{
    return sb_binproto_next_user(it, item);
}

static int foreign_resume(struct sb_ops_list_iter *it, void *item)
{
    return sb_binproto_next_resume(it, item);
}

static int foreign_message(struct sb_ops_list_iter *it, void *item)
{
    return sb_binproto_next_message(it, item);
}

static int foreign_conv_summary(struct sb_ops_list_iter *it, void *item)
{
    return sb_binproto_next_conv_summary(it, item);
}

static int foreign_device(struct sb_ops_list_iter *it, void *item)
{
    return sb_binproto_next_device(it, item);
}

static void set_foreign(struct sb_ops_list *l, sb_ops_list_next_cb next)
{
    if (l->next != NULL) {
        l->next = next;
    }
}

/* Points every list of op at a foreign iterator, so the encoder takes its item-by-item path. */
static void make_foreign(struct sb_op *op)
{
    switch (op->type) {
    case SB_OP_HELLO:
        set_foreign(&op->u.hello.resume, foreign_resume);
        break;
    case SB_OP_PRESENCE_SUB:
    case SB_OP_PRESENCE_UNSUB:
        set_foreign(&op->u.presence_sub.users, foreign_user);
        break;
    case SB_OP_SYNC:
        set_foreign(&op->u.sync.convs, foreign_resume);
        break;
    case SB_OP_SYNC_PAGE:
        set_foreign(&op->u.sync_page.messages, foreign_message);
        break;
    case SB_OP_CONV_CREATE:
        set_foreign(&op->u.conv_create.members, foreign_user);
        break;
    case SB_OP_CONV_ADD:
    case SB_OP_CONV_REMOVE:
    case SB_OP_CONV_PROMOTE:
    case SB_OP_CONV_DEMOTE:
        set_foreign(&op->u.conv_members.users, foreign_user);
        break;
    case SB_OP_CONV:
        set_foreign(&op->u.conv.admins, foreign_user);
        set_foreign(&op->u.conv.members, foreign_user);
        break;
    case SB_OP_CONVS:
        set_foreign(&op->u.convs.convs, foreign_conv_summary);
        break;
    case SB_OP_DEVICE_LIST:
        set_foreign(&op->u.device_list.devices, foreign_device);
        break;
    default:
        break;
    }
}

/* ---- the vectors ---- */

static bool expect_text(const struct vector *v, const char *what, const struct out *o)
{
    if (strcmp(o->buf, v->expect) == 0) {
        return true;
    }
    fprintf(stderr, "%s (%s): got\n%s--- expected\n%s", v->name, what, o->buf, v->expect);
    return false;
}

/* Every proper prefix: the stream decoder waits, the frame decoder refuses. */
static void check_truncations(const struct vector *v)
{
    size_t wrong = 0;

    for (size_t k = 0; k < v->len; k++) {
        uint8_t *copy = k ? malloc(k) : NULL; /* exactly k readable bytes */
        struct sb_binproto_header h;
        struct sb_op op;
        if (k > 0) {
            memcpy(copy, v->bytes, k);
        }
        ssize_t rc = sb_binproto_decode(copy, k, MAX_FRAME, &h, &op);
        if (rc != -EAGAIN || h.frame_size != (k < 4 ? SB_BINPROTO_HEADER_SIZE : v->len)) {
            fprintf(stderr, "%s: prefix %zu: %zd, needs %zu\n", v->name, k, rc, h.frame_size);
            wrong++;
        }
        if (sb_binproto_decode_frame(copy, k, MAX_FRAME, &h, &op) != -EBADMSG) {
            fprintf(stderr, "%s: prefix %zu as a frame is not -EBADMSG\n", v->name, k);
            wrong++;
        }
        free(copy);
    }
    CHECK_INT(wrong, 0);
}

static void set_prefix(uint8_t *buf, size_t length)
{
    buf[0] = (uint8_t)(length >> 24);
    buf[1] = (uint8_t)(length >> 16);
    buf[2] = (uint8_t)(length >> 8);
    buf[3] = (uint8_t)length;
}

/* A body one byte short or one byte long, with a length prefix that agrees: never valid. */
static void check_body_length(const struct vector *v)
{
    uint8_t buf[sizeof(v->bytes) + 1];
    struct sb_binproto_header h;
    struct sb_op op;
    size_t len = v->len;

    memcpy(buf, v->bytes, len);
    buf[len] = 0;
    set_prefix(buf, len + 1 - 4);
    CHECK_INT(sb_binproto_decode(buf, len + 1, MAX_FRAME, &h, &op), -EBADMSG);
    CHECK_INT(sb_binproto_decode_frame(buf, len + 1, MAX_FRAME, &h, &op), -EBADMSG);
    if (len > SB_BINPROTO_HEADER_SIZE) {
        set_prefix(buf, len - 1 - 4);
        CHECK_INT(sb_binproto_decode(buf, len - 1, MAX_FRAME, &h, &op), -EBADMSG);
        CHECK_INT(sb_binproto_decode_frame(buf, len - 1, MAX_FRAME, &h, &op), -EBADMSG);
    }
}

static void check_encode(const struct vector *v, struct sb_op *op)
{
    uint8_t out[sizeof(v->bytes)];

    CHECK_INT(sb_binproto_size(op), v->len);
    CHECK_INT(sb_binproto_encode(op, out, v->len), v->len);
    CHECK_MEM(out, v->bytes, v->len);
    CHECK_INT(sb_binproto_encode(op, out, v->len - 1), -ENOSPC);
    CHECK_INT(sb_binproto_encode(op, NULL, 0), -ENOSPC);
    make_foreign(op);
    memset(out, 0, sizeof(out));
    CHECK_INT(sb_binproto_size(op), v->len);
    CHECK_INT(sb_binproto_encode(op, out, v->len), v->len);
    CHECK_MEM(out, v->bytes, v->len);
}

static void check_valid(const struct vector *v)
{
    uint8_t *buf = malloc(v->len);
    uint8_t two[2 * sizeof(v->bytes)];
    struct sb_binproto_header h;
    struct sb_op op;
    struct out o;

    memcpy(buf, v->bytes, v->len);
    CHECK_INT(sb_binproto_decode(buf, v->len, MAX_FRAME, &h, &op), v->len);
    CHECK_INT(h.frame_size, v->len);
    render_op(&o, &op);
    CHECK(expect_text(v, "stream", &o));
    CHECK_INT(sb_binproto_decode_frame(buf, v->len, MAX_FRAME, &h, &op), 0);
    render_op(&o, &op);
    CHECK(expect_text(v, "frame", &o));
    check_encode(v, &op);

    /* The limit is the whole frame: exactly fits, one byte less does not. */
    CHECK_INT(sb_binproto_decode(buf, v->len, v->len, &h, &op), v->len);
    CHECK_INT(sb_binproto_decode(buf, 4, v->len - 1, &h, &op), -EMSGSIZE);
    CHECK_INT(sb_binproto_decode_frame(buf, v->len, v->len - 1, &h, &op), -EMSGSIZE);
    CHECK_INT(sb_binproto_decode(buf, v->len, 0, &h, &op), v->len);

    /* In a stream, a frame ends where its prefix says, whatever follows. */
    memcpy(two, v->bytes, v->len);
    memcpy(two + v->len, v->bytes, v->len);
    CHECK_INT(sb_binproto_decode(two, 2 * v->len, MAX_FRAME, &h, &op), v->len);
    CHECK_INT(sb_binproto_decode(two + v->len, v->len, MAX_FRAME, &h, &op), v->len);
    CHECK_INT(sb_binproto_decode_frame(two, 2 * v->len, MAX_FRAME, &h, &op), -EBADMSG);

    check_truncations(v);
    check_body_length(v);
    free(buf);
}

static void check_refused(const struct vector *v)
{
    uint8_t *buf = malloc(v->len);
    struct sb_binproto_header h, fh;
    struct sb_op op;
    struct out o;
    ssize_t rc;
    int frc;

    memcpy(buf, v->bytes, v->len);
    frc = sb_binproto_decode_frame(buf, v->len, MAX_FRAME, &fh, &op);
    rc = sb_binproto_decode(buf, v->len, MAX_FRAME, &h, &op);
    render_refusal(&o, rc, frc, &h);
    CHECK(expect_text(v, "refused", &o));
    /* A prefix waits for more, unless the length prefix alone already decided the refusal. */
    size_t wrong = 0;
    for (size_t k = 0; k < v->len; k++) {
        bool by_prefix = k >= 4 && (rc == -EPROTO || rc == -EMSGSIZE);
        wrong += sb_binproto_decode(buf, k, MAX_FRAME, &h, &op) != (by_prefix ? rc : -EAGAIN);
        wrong += sb_binproto_decode_frame(buf, k, MAX_FRAME, &fh, &op) != -EBADMSG;
    }
    CHECK_INT(wrong, 0);
    free(buf);
}

static void test_vectors(void)
{
    size_t len;
    char *text = vector_text = read_source_file("tests/vectors/binary.txt", &len);
    int valid = 0;

    CHECK(text != NULL);
    if (text == NULL) {
        return;
    }
    CHECK(parse_vectors(text));
    for (int i = 0; i < n_vectors; i++) {
        if (strncmp(vectors[i].expect, "result: ok\n", 11) == 0) {
            check_valid(&vectors[i]);
            valid++;
        } else {
            check_refused(&vectors[i]);
        }
    }
    printf("%d vectors (%d valid, %d refused)\n", n_vectors, valid, n_vectors - valid);
    /* Every operation type has a valid vector (by its type byte: two types share a name). */
    for (unsigned t = 0; t < 256; t++) {
        bool seen = false;
        if (sb_ops_type_name(t) == NULL) {
            continue;
        }
        for (int i = 0; i < n_vectors && !seen; i++) {
            seen = strncmp(vectors[i].expect, "result: ok\n", 11) == 0 && vectors[i].len > 5 &&
                   vectors[i].bytes[5] == t;
        }
        if (!seen) {
            fprintf(stderr, "no vector for %s\n", type_label(t));
        }
        CHECK(seen);
    }
}

/* The specification's worked examples are the vectors, character for character. */
static void test_doc_examples(void)
{
    size_t len;
    char *doc = read_source_file("docs/protocol-binary.md", &len);
    int missing = 0;

    CHECK(doc != NULL);
    if (doc == NULL) {
        return;
    }
    for (int i = 0; i < n_vectors; i++) {
        const struct vector *v = &vectors[i];
        if (memmem(doc, len, v->block, v->block_len) == NULL) {
            fprintf(stderr, "docs/protocol-binary.md lacks vector %s as in the vector file\n",
                    v->name);
            missing++;
        }
    }
    CHECK_INT(missing, 0);
    CHECK(n_vectors > 0);
    free(doc);
}

/* ---- frames built by hand ---- */

struct bytes {
    uint8_t b[70000];
    size_t n;
};

static void b_u8(struct bytes *b, unsigned v)
{
    b->b[b->n++] = (uint8_t)v;
}

static void b_u16(struct bytes *b, unsigned v)
{
    b_u8(b, v >> 8);
    b_u8(b, v);
}

static void b_u32(struct bytes *b, uint32_t v)
{
    b_u16(b, v >> 16);
    b_u16(b, v & 0xFFFF);
}

static void b_fill(struct bytes *b, size_t n, char c)
{
    memset(b->b + b->n, c, n);
    b->n += n;
}

static void b_str8(struct bytes *b, size_t n)
{
    b_u8(b, (unsigned)n);
    b_fill(b, n, 'a');
}

static void b_begin(struct bytes *b, unsigned type, uint32_t request_id)
{
    b->n = 0;
    b_u32(b, 0);
    b_u8(b, 1);
    b_u8(b, type);
    b_u16(b, 0);
    b_u32(b, request_id);
}

static ssize_t b_decode(struct bytes *b, struct sb_op *op)
{
    struct sb_binproto_header h;
    set_prefix(b->b, b->n - 4);
    return sb_binproto_decode(b->b, b->n, 0, &h, op);
}

/* A SEND whose client id, conversation and user have the given lengths. */
static ssize_t send_with(size_t client_id, size_t conv, size_t to)
{
    static struct bytes b;
    struct sb_op op;

    b_begin(&b, SB_OP_SEND, 1);
    b_str8(&b, client_id);
    b_str8(&b, conv);
    b_str8(&b, to);
    b_u32(&b, 0);
    return b_decode(&b, &op);
}

static ssize_t hello_with(size_t token, size_t device)
{
    static struct bytes b;
    struct sb_op op;

    b_begin(&b, SB_OP_HELLO, 1);
    b_u16(&b, (unsigned)token);
    b_fill(&b, token, 't');
    b_str8(&b, device);
    b_u16(&b, 0);
    return b_decode(&b, &op);
}

static ssize_t users_with(unsigned type, unsigned count, size_t user_len)
{
    static struct bytes b;
    struct sb_op op;

    b_begin(&b, type, 1);
    if (type == SB_OP_CONV_ADD) {
        b_str8(&b, 5);
    }
    b_u16(&b, count);
    for (unsigned i = 0; i < count; i++) {
        b_str8(&b, user_len);
    }
    return b_decode(&b, &op);
}

/* A PING with len bytes of data (a str16). */
static ssize_t ping_with(size_t len)
{
    static struct bytes b;
    struct sb_op op;

    b_begin(&b, SB_OP_PING, 1);
    b_u16(&b, (unsigned)len);
    b_fill(&b, len, 'p');
    return b_decode(&b, &op);
}

/* An ERROR whose conversation has conv bytes. */
static ssize_t error_with(size_t conv)
{
    static struct bytes b;
    struct sb_op op;

    b_begin(&b, SB_OP_ERROR, 1);
    b_u16(&b, SB_OP_ERR_FORBIDDEN);
    b_u32(&b, 0);
    b_str8(&b, 0);
    b_str8(&b, conv);
    return b_decode(&b, &op);
}

/* A TYPING with the given lengths of conv, to and user. */
static ssize_t typing_with(size_t conv, size_t to, size_t user)
{
    static struct bytes b;
    struct sb_op op;

    b_begin(&b, SB_OP_TYPING, 1);
    b_str8(&b, conv);
    b_str8(&b, to);
    b_str8(&b, user);
    return b_decode(&b, &op);
}

static void test_decode_limits(void)
{
    CHECK_INT(ping_with(0), 14);
    CHECK_INT(ping_with(SB_OPS_PING_MAX), 14 + SB_OPS_PING_MAX);
    CHECK_INT(ping_with(SB_OPS_PING_MAX + 1), -EBADMSG);
    CHECK(error_with(132) > 0);
    CHECK_INT(error_with(133), -EBADMSG);
    CHECK(typing_with(0, 64, 64) > 0);
    CHECK_INT(typing_with(0, 65, 0), -EBADMSG);
    CHECK_INT(typing_with(0, 1, 65), -EBADMSG);
    CHECK(typing_with(132, 0, 0) > 0);
    CHECK_INT(typing_with(133, 0, 0), -EBADMSG);
    CHECK_INT(typing_with(1, 1, 0), -EBADMSG);
    CHECK(send_with(64, 0, 64) > 0);
    CHECK_INT(send_with(65, 0, 64), -EBADMSG);
    CHECK_INT(send_with(64, 0, 65), -EBADMSG);
    CHECK(send_with(1, 132, 0) > 0);
    CHECK_INT(send_with(1, 133, 0), -EBADMSG);
    CHECK(hello_with(8192, 32) > 0);
    CHECK_INT(hello_with(8193, 32), -EBADMSG);
    CHECK_INT(hello_with(0, 33), -EBADMSG);
    CHECK(users_with(SB_OP_PRESENCE_SUB, 1000, 64) > 0);
    CHECK_INT(users_with(SB_OP_PRESENCE_SUB, 1001, 1), -EBADMSG);
    CHECK_INT(users_with(SB_OP_PRESENCE_UNSUB, 1, 65), -EBADMSG);
    CHECK_INT(users_with(SB_OP_PRESENCE_UNSUB, 1, 0), -EBADMSG);
    CHECK(users_with(SB_OP_CONV_ADD, 1000, 1) > 0);
    CHECK_INT(users_with(SB_OP_CONV_ADD, 0, 1), -EBADMSG);
}

static void test_flags_versions_types(void)
{
    static struct bytes b;
    struct sb_binproto_header h;
    struct sb_op op;
    int wrong = 0;

    /* CONV_LIST has an empty body, so these frames are a header only. */
    for (unsigned bit = 0; bit < 16; bit++) {
        b_begin(&b, SB_OP_CONV_LIST, 7);
        b.b[6] = (uint8_t)((1u << bit) >> 8);
        b.b[7] = (uint8_t)(1u << bit);
        wrong += b_decode(&b, &op) != -EBADMSG;
        wrong += sb_binproto_decode_frame(b.b, b.n, 0, &h, &op) != -EBADMSG;
        wrong += h.request_id != 7 || h.flags != (1u << bit) || h.frame_size != 12;
    }
    for (unsigned version = 0; version < 256; version++) {
        b_begin(&b, SB_OP_CONV_LIST, 7);
        b.b[4] = (uint8_t)version;
        wrong += b_decode(&b, &op) != (version == 1 ? 12 : -EPROTONOSUPPORT);
    }
    /* A type either has a layout (and a name) or is unsupported; an empty body tells which. */
    for (unsigned type = 0; type < 256; type++) {
        b_begin(&b, type, 9);
        ssize_t rc = b_decode(&b, &op);
        if (sb_ops_type_name(type) == NULL) {
            wrong += rc != -EOPNOTSUPP;
        } else {
            wrong += rc != -EBADMSG && !(rc == 12 && op.type == type && op.request_id == 9);
        }
    }
    CHECK_INT(wrong, 0);
}

static void test_length_prefix(void)
{
    static const uint8_t huge[4] = {0xFF, 0xFF, 0xFF, 0xF0};
    static const uint8_t short_prefix[4] = {0, 0, 0, 7};
    struct sb_binproto_header h;
    struct sb_op op;

    /* Without a limit, a huge frame is just not there yet; its size is still reported. */
    CHECK_INT(sb_binproto_decode(huge, 4, 0, &h, &op), -EAGAIN);
    CHECK(h.frame_size == 0xFFFFFFF4ull);
    CHECK_INT(sb_binproto_decode(huge, 4, MAX_FRAME, &h, &op), -EMSGSIZE);
    CHECK_INT(sb_binproto_decode(short_prefix, 4, MAX_FRAME, &h, &op), -EPROTO);
    CHECK_INT(sb_binproto_decode(short_prefix, 3, MAX_FRAME, &h, &op), -EAGAIN);
    CHECK_INT(h.frame_size, SB_BINPROTO_HEADER_SIZE);
    CHECK_INT(sb_binproto_decode(NULL, 0, MAX_FRAME, &h, &op), -EAGAIN);
    CHECK_INT(sb_binproto_decode_frame(NULL, 0, MAX_FRAME, &h, &op), -EBADMSG);
}

/* ---- encoding ops built in C ---- */

static const struct vector *find_vector(const char *name)
{
    for (int i = 0; i < n_vectors; i++) {
        if (strcmp(vectors[i].name, name) == 0) {
            return &vectors[i];
        }
    }
    fprintf(stderr, "no vector %s\n", name);
    return NULL;
}

static struct sb_slice S(const char *s) {
    return sb_slice_from(s, strlen(s));
}

static void
check_encodes_to(const struct sb_op *op, const char *vector)
{
    const struct vector *v = find_vector(vector);
    uint8_t out[1024];

    CHECK(v != NULL);
    if (v == NULL) {
        return;
    }
    CHECK_INT(sb_binproto_size(op), v->len);
    CHECK_INT(sb_binproto_encode(op, out, sizeof(out)), v->len);
    CHECK_MEM(out, v->bytes, v->len);
}

static struct sb_op_body B(const char *s) {
    struct sb_op_body b = {SB_OP_BODY_BYTES, S(s)};
    return b;
}

static struct sb_op_body
body_in(enum sb_op_body_form form, const char *s)
{
    struct sb_op_body b = {(uint8_t)form, S(s)};
    return b;
}

static void send_body_encodes_to(struct sb_op_body body, const char *vector)
{
    struct sb_op op;

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_SEND;
    op.request_id = 2;
    op.json_id = S("ignored");
    op.u.send.client_id = S("c1");
    op.u.send.to = S("bob");
    op.u.send.body = body;
    check_encodes_to(&op, vector);
}

static struct sb_op_message hi_bob(struct sb_op_body body)
{
    struct sb_op_message m = {.msg_id = 541735948517376000ull,
                              .seq = 1,
                              .ts_ms = 1795318161234ull,
                              .conv = S("dm:alice:bob"),
                              .from = S("alice"),
                              .device = S("phone"),
                              .body = body};
    return m;
}

/* A body in any of its three forms makes the same frame: binary receivers get the bytes. */
static void test_encode_bodies(void)
{
    uint8_t buf[512];
    struct sb_binproto_list_writer w;
    struct sb_op op;

    send_body_encodes_to(B("hi bob"), "send_to_user");
    send_body_encodes_to(body_in(SB_OP_BODY_JSON, "\"hi bob\""), "send_to_user");
    send_body_encodes_to(body_in(SB_OP_BODY_JSON, "\"hi \\u0062o\\u0062\""), "send_to_user");
    send_body_encodes_to(body_in(SB_OP_BODY_BASE64, "aGkgYm9i"), "send_to_user");

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_SEND;
    op.request_id = 3;
    op.u.send.client_id = S("c2");
    op.u.send.conv = S("g:5f3a9c0e12b4d678");
    op.u.send.body = body_in(SB_OP_BODY_BASE64, "AP8QgA==");
    check_encodes_to(&op, "send_to_conv");
    op.u.send.body = body_in(SB_OP_BODY_JSON, "\"\\u0000\"");
    CHECK_INT(sb_binproto_size(&op), 12 + 3 + 19 + 1 + 4 + 1);

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_MESSAGE;
    op.u.message = hi_bob(body_in(SB_OP_BODY_JSON, "\"hi\\u0020bob\""));
    check_encodes_to(&op, "message");
    op.u.message = hi_bob(body_in(SB_OP_BODY_BASE64, "aGkgYm9i"));
    check_encodes_to(&op, "message");

    /* What an encoder cannot trust: a literal without quotes, base64 that is not canonical. */
    static const char *const bad_json[] = {"", "\"", "hi bob", "\"hi bob", "hi bob\""};
    for (size_t i = 0; i < sizeof(bad_json) / sizeof(bad_json[0]); i++) {
        op.u.message.body = body_in(SB_OP_BODY_JSON, bad_json[i]);
        CHECK_INT(sb_binproto_size(&op), -EINVAL);
    }
    static const char *const bad_b64[] = {"A", "AP8QgB==", "AP8Qg===", "AP8Q gA=", "AP8QgA"};
    for (size_t i = 0; i < sizeof(bad_b64) / sizeof(bad_b64[0]); i++) {
        op.u.message.body = body_in(SB_OP_BODY_BASE64, bad_b64[i]);
        CHECK_INT(sb_binproto_size(&op), -EINVAL);
    }
    op.u.message.body = body_in((enum sb_op_body_form)3, "hi bob");
    CHECK_INT(sb_binproto_size(&op), -EINVAL);

    /* A converted body never writes past a buffer that is too small for it. */
    op.u.message.body = body_in(SB_OP_BODY_BASE64, "aGkgYm9i");
    ssize_t size = sb_binproto_size(&op);
    for (ssize_t cap = 0; cap < size; cap++) {
        uint8_t *small = cap ? malloc((size_t)cap) : NULL;
        CHECK_INT(sb_binproto_encode(&op, small, (size_t)cap), -ENOSPC);
        free(small);
    }

    /* A list writer converts a message's body as it adds it. */
    struct sb_op_message m0 = {.msg_id = 541735948517376002ull,
                               .seq = 42,
                               .ts_ms = 1795318161236ull,
                               .conv = S("dm:alice:bob"),
                               .from = S("bob"),
                               .device = S("laptop"),
                               .body = body_in(SB_OP_BODY_JSON, "\"yes\"")};
    struct sb_op_message m1 = m0;
    m1.msg_id++;
    m1.seq++;
    m1.ts_ms++;
    m1.from = S("alice");
    m1.device = S("phone");
    m1.body = body_in(SB_OP_BODY_BASE64, "b2s=");
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_SYNC_PAGE;
    op.request_id = 7;
    op.u.sync_page.last_seq = 43;
    op.u.sync_page.has_more = true;
    op.u.sync_page.conv = S("dm:alice:bob");
    sb_binproto_list_init(&w, buf, sizeof(buf));
    sb_binproto_list_add_message(&w, &m0);
    sb_binproto_list_add_message(&w, &m1);
    CHECK_INT(sb_binproto_list_finish(&w, &op.u.sync_page.messages), 0);
    check_encodes_to(&op, "sync_page");
}

static void test_encode_built(void)
{
    uint8_t buf[512];
    struct sb_binproto_list_writer w;
    struct sb_op op;

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_CONV;
    op.request_id = 10;
    op.u.conv.last_seq = 1;
    op.u.conv.read_seq = 1;
    op.u.conv.conv = S("g:5f3a9c0e12b4d678");
    op.u.conv.name = S("trip");
    op.u.conv.owner = S("alice");
    sb_binproto_list_init(&w, buf, 16);
    sb_binproto_list_add_user(&w, S("alice"));
    CHECK_INT(sb_binproto_list_finish(&w, &op.u.conv.admins), 0);
    sb_binproto_list_init(&w, buf + 16, sizeof(buf) - 16);
    sb_binproto_list_add_user(&w, S("alice"));
    sb_binproto_list_add_user(&w, S("bob"));
    sb_binproto_list_add_user(&w, S("carol"));
    CHECK_INT(sb_binproto_list_finish(&w, &op.u.conv.members), 0);
    check_encodes_to(&op, "conv");

    struct sb_op_conv_summary group = {.last_seq = 4,
                                       .read_seq = 4,
                                       .member_count = 3,
                                       .conv = S("g:5f3a9c0e12b4d678"),
                                       .name = S("trip"),
                                       .owner = S("alice")};
    struct sb_op_conv_summary dm = {.last_seq = 1, .member_count = 2, .conv = S("dm:alice:bob")};
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_CONVS;
    op.request_id = 15;
    sb_binproto_list_init(&w, buf, sizeof(buf));
    sb_binproto_list_add_conv_summary(&w, &group);
    sb_binproto_list_add_conv_summary(&w, &dm);
    CHECK_INT(sb_binproto_list_finish(&w, &op.u.convs.convs), 0);
    check_encodes_to(&op, "convs");

    struct sb_op_device phone = {
        .session = 0x010000000000002aull, .connected_s = 42, .device = S("phone")};
    struct sb_op_device laptop = {.session = 0x010000000000002bull,
                                  .connected_s = 3600,
                                  .queued_bytes = 2097152,
                                  .behind = 1,
                                  .device = S("laptop")};
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_DEVICE_LIST;
    op.request_id = 19;
    op.u.device_list.user = S("alice");
    sb_binproto_list_init(&w, buf, sizeof(buf));
    sb_binproto_list_add_device(&w, &phone);
    sb_binproto_list_add_device(&w, &laptop);
    CHECK_INT(sb_binproto_list_finish(&w, &op.u.device_list.devices), 0);
    check_encodes_to(&op, "device_list");

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_RECEIPT;
    op.u.receipt.seq = 2;
    op.u.receipt.kind = SB_OP_RECEIPT_DELIVERED;
    op.u.receipt.to = S("alice");
    check_encodes_to(&op, "receipt_to");

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_ERROR;
    op.request_id = 7;
    op.u.error.code = SB_OP_ERR_FORBIDDEN;
    op.u.error.message = S("not a member");
    op.u.error.conv = S("dm:bob:carol");
    check_encodes_to(&op, "error_conv");

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_SYNC_DONE;
    op.request_id = 8;
    op.u.sync_done.cursor = S("1795318170000");
    check_encodes_to(&op, "sync_done");

    static const char ping_data[] = {0x00, 0x00, 0x01, (char)0xa2, 0x01, 0x4d, 0x1e, 0x68};
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_PONG;
    op.request_id = 99;
    op.u.ping.data = sb_slice_from(ping_data, sizeof(ping_data));
    check_encodes_to(&op, "pong");

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_MESSAGE;
    op.u.message = (struct sb_op_message){.msg_id = 541735948517375995ull,
                                          .seq = 1,
                                          .ts_ms = 1795318161229ull,
                                          .system = SB_OP_SYSTEM_CREATED,
                                          .conv = S("g:5f3a9c0e12b4d678"),
                                          .from = S("alice")};
    check_encodes_to(&op, "message_created");
}

static ssize_t encode_send(const char *client_id, const char *conv, const char *to)
{
    struct sb_op op;
    uint8_t out[512];

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_SEND;
    op.u.send.client_id = S(client_id);
    op.u.send.conv = S(conv);
    op.u.send.to = S(to);
    return sb_binproto_encode(&op, out, sizeof(out));
}

static void test_encode_rules(void)
{
    char long_id[300];
    struct sb_op op;
    uint8_t out[512];

    memset(long_id, 'a', sizeof(long_id));
    long_id[64] = '\0';
    CHECK(encode_send(long_id, "", "bob") > 0);
    long_id[64] = 'a';
    long_id[65] = '\0';
    CHECK_INT(encode_send(long_id, "", "bob"), -EINVAL);
    CHECK_INT(encode_send("", "", "bob"), -EINVAL);
    CHECK_INT(encode_send("c1", "dm:alice:bob", "bob"), -EINVAL);
    CHECK_INT(encode_send("c1", "", ""), -EINVAL);

    memset(&op, 0, sizeof(op));
    CHECK_INT(sb_binproto_size(&op), -EINVAL); /* SB_OP_NONE */
    op.type = (enum sb_op_type)0x40;
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
    op.type = (enum sb_op_type)0x1000;
    CHECK_INT(sb_binproto_size(&op), -EINVAL);

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_RECEIPT;
    op.u.receipt.conv = S("c");
    CHECK_INT(sb_binproto_size(&op), -EINVAL); /* kind 0 */
    op.u.receipt.kind = SB_OP_RECEIPT_READ;
    CHECK_INT(sb_binproto_size(&op), 12 + 8 + 1 + 2 + 1 + 1);
    op.u.receipt.to = S("bob"); /* names the conversation twice */
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
    op.u.receipt.conv = S("");
    CHECK_INT(sb_binproto_size(&op), 12 + 8 + 1 + 1 + 4 + 1);
    op.u.receipt.to = S("");
    CHECK_INT(sb_binproto_size(&op), -EINVAL);

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_TYPING;
    op.u.typing.user = S("alice");
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
    op.u.typing.to = S("bob");
    CHECK_INT(sb_binproto_size(&op), 12 + 1 + 4 + 6);

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_ERROR;
    CHECK_INT(sb_binproto_size(&op), -EINVAL); /* code 0 */
    op.u.error.code = 999; /* unknown codes travel: receivers read them as internal */
    CHECK_INT(sb_binproto_size(&op), 12 + 8);
    memset(long_id, 'a', sizeof(long_id));
    op.u.error.message = sb_slice_from(long_id, 256);
    CHECK_INT(sb_binproto_size(&op), -EINVAL);

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_MESSAGE;
    op.u.message.conv = S("c");
    op.u.message.from = S("a");
    op.u.message.system = SB_OP_SYSTEM_RENAMED;
    CHECK_INT(sb_binproto_size(&op), -EINVAL); /* no subject */
    op.u.message.subject = S("new name");
    CHECK(sb_binproto_size(&op) > 0);
    op.u.message.body = B("x"); /* system messages carry no body */
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
    op.u.message.body = body_in(SB_OP_BODY_JSON, "\"x\"");
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
    op.u.message.body = body_in(SB_OP_BODY_JSON, "\"\""); /* empty, whatever its form */
    CHECK(sb_binproto_size(&op) > 0);
    op.u.message.body = B("");
    op.u.message.system = 5;
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
    op.u.message.system = SB_OP_SYSTEM_CREATED;
    CHECK(sb_binproto_size(&op) > 0);
    op.u.message.subject = S(""); /* only CREATED may have no subject */
    CHECK(sb_binproto_size(&op) > 0);
    op.u.message.system = SB_OP_SYSTEM_MEMBER_ADDED;
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
    op.u.message.system = SB_OP_SYSTEM_NONE;
    op.u.message.subject = S("x");
    CHECK_INT(sb_binproto_size(&op), -EINVAL); /* a subject without a system kind */

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_PING;
    op.u.ping.data = sb_slice_from(long_id, SB_OPS_PING_MAX + 1);
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
    op.u.ping.data = sb_slice_from(long_id, 256);
    CHECK_INT(sb_binproto_size(&op), 12 + 2 + 256);

    /* Every buffer short of the size fails, and never writes past its end. */
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_MESSAGE;
    op.u.message.conv = S("c");
    op.u.message.from = S("a");
    ssize_t size = sb_binproto_size(&op);
    for (ssize_t cap = 0; cap < size; cap++) {
        uint8_t *small = cap ? malloc((size_t)cap) : NULL;
        CHECK_INT(sb_binproto_encode(&op, small, (size_t)cap), -ENOSPC);
        free(small);
    }
    CHECK_INT(sb_binproto_encode(&op, out, (size_t)size), size);
}

/*
 * Every field at its longest: a frame carrying one message adds at most
 * SB_BINPROTO_MESSAGE_OVERHEAD to its body, and that most is a SYNC_PAGE of the one message.
 */
static void test_message_overhead(void)
{
    static char fill[256];
    uint8_t buf[512];
    struct sb_binproto_list_writer w;
    struct sb_op op;

    memset(fill, 'a', sizeof(fill));
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_MESSAGE;
    op.u.message.conv = sb_slice_from(fill, SB_OPS_CONV_MAX);
    op.u.message.from = sb_slice_from(fill, SB_OPS_USER_MAX);
    op.u.message.device = sb_slice_from(fill, SB_OPS_DEVICE_MAX);
    op.u.message.body = B("");
    CHECK_INT(sb_binproto_size(&op), 273);
    /* A subject makes it longer only as a system message, which has no body. */
    op.u.message.system = SB_OP_SYSTEM_RENAMED;
    op.u.message.subject = sb_slice_from(fill, SB_OPS_SUBJECT_MAX);
    CHECK_INT(sb_binproto_size(&op), 273 + SB_OPS_SUBJECT_MAX);
    op.u.message.body.data = sb_slice_from(fill, 1);
    CHECK_INT(sb_binproto_size(&op), -EINVAL);

    op.u.message.system = SB_OP_SYSTEM_NONE;
    op.u.message.subject = S("");
    op.u.message.body.data = sb_slice_from(fill, 100);
    sb_binproto_list_init(&w, buf, sizeof(buf));
    sb_binproto_list_add_message(&w, &op.u.message);
    CHECK_INT(sb_binproto_size(&op), 273 + 100);
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_SYNC_PAGE;
    op.u.sync_page.conv = sb_slice_from(fill, SB_OPS_CONV_MAX);
    CHECK_INT(sb_binproto_list_finish(&w, &op.u.sync_page.messages), 0);
    CHECK_INT(sb_binproto_size(&op), SB_BINPROTO_MESSAGE_OVERHEAD + 100);
}

static int short_user_list(struct sb_ops_list_iter *it, void *item)
{
    /* Claims the list's count but yields one item fewer. */
    if (it->index + 1 >= it->list->count) {
        return 0;
    }
    return sb_binproto_next_user(it, item);
}

static int failing_list(struct sb_ops_list_iter *it, void *item)
{
    return -EBADMSG;
}

static void test_encode_lists(void)
{
    uint8_t buf[64];
    struct sb_binproto_list_writer w;
    struct sb_op op;

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_PRESENCE_SUB;
    CHECK_INT(sb_binproto_size(&op), -EINVAL); /* needs a user */
    sb_binproto_list_init(&w, buf, sizeof(buf));
    sb_binproto_list_add_user(&w, S("bob"));
    sb_binproto_list_add_user(&w, S("carol"));
    CHECK_INT(sb_binproto_list_finish(&w, &op.u.presence_sub.users), 0);
    CHECK_INT(sb_binproto_size(&op), 12 + 2 + 4 + 6);

    struct sb_ops_list good = op.u.presence_sub.users;
    op.u.presence_sub.users.count = 3; /* raw bytes hold two */
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
    op.u.presence_sub.users.count = 1;
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
    op.u.presence_sub.users = good;
    op.u.presence_sub.users.next = NULL;
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
    op.u.presence_sub.users.next = short_user_list;
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
    op.u.presence_sub.users.next = failing_list;
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
    op.u.presence_sub.users.next = sb_binproto_next_resume; /* the wrong kind of items */
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
    op.u.presence_sub.users = good;
    op.u.presence_sub.users.raw.len--;
    CHECK_INT(sb_binproto_size(&op), -EINVAL);
}

static void test_list_writer(void)
{
    static uint8_t big[2 * 65536 + 16];
    struct sb_op_resume r = {.last_seq = 1, .conv = S("dm:a:b")};
    struct sb_binproto_list_writer w;
    struct sb_ops_list l;
    uint8_t buf[16];

    sb_binproto_list_init(&w, buf, sizeof(buf));
    CHECK_INT(sb_binproto_list_finish(&w, &l), 0);
    CHECK_INT(l.count, 0);
    CHECK(l.next == NULL);

    sb_binproto_list_init(&w, buf, sizeof(buf));
    sb_binproto_list_add_user(&w, S("bob"));
    sb_binproto_list_add_resume(&w, &r);
    CHECK_INT(sb_binproto_list_finish(&w, &l), -EINVAL);

    sb_binproto_list_init(&w, buf, sizeof(buf));
    sb_binproto_list_add_user(&w, S(""));
    sb_binproto_list_add_user(&w, S("bob"));
    CHECK_INT(sb_binproto_list_finish(&w, &l), -EINVAL);

    sb_binproto_list_init(&w, buf, sizeof(buf));
    sb_binproto_list_add_resume(&w, &r); /* 15 bytes */
    CHECK_INT(sb_binproto_list_finish(&w, &l), 0);
    sb_binproto_list_add_resume(&w, &r);
    CHECK_INT(sb_binproto_list_finish(&w, &l), -ENOSPC);

    sb_binproto_list_init(&w, big, sizeof(big));
    for (unsigned i = 0; i < 65535; i++) {
        sb_binproto_list_add_user(&w, S("a"));
    }
    CHECK_INT(sb_binproto_list_finish(&w, &l), 0);
    CHECK_INT(l.count, 65535);
    CHECK_INT(l.raw.len, 2 * 65535);
    sb_binproto_list_add_user(&w, S("a"));
    CHECK_INT(sb_binproto_list_finish(&w, &l), -E2BIG);

    /* The new item kinds keep their limits, and do not mix. */
    struct sb_op_device d = {.session = 1, .device = S("")};
    sb_binproto_list_init(&w, big, sizeof(big));
    sb_binproto_list_add_device(&w, &d);
    CHECK_INT(sb_binproto_list_finish(&w, &l), -EINVAL);
    struct sb_op_conv_summary c = {.conv = S("c")};
    sb_binproto_list_init(&w, big, sizeof(big));
    sb_binproto_list_add_conv_summary(&w, &c);
    CHECK_INT(sb_binproto_list_finish(&w, &l), 0);
    CHECK_INT(l.raw.len, 8 + 8 + 4 + 2 + 1 + 1);
    d.device = S("d");
    sb_binproto_list_add_device(&w, &d);
    CHECK_INT(sb_binproto_list_finish(&w, &l), -EINVAL);
}

static void test_iterators(void)
{
    const struct vector *v = find_vector("conv");
    struct sb_binproto_header h;
    struct sb_ops_list_iter it;
    struct sb_ops_list empty = {0};
    struct sb_slice user;
    struct sb_op op;
    int n = 0;

    CHECK(v != NULL);
    if (v == NULL) {
        return;
    }
    CHECK_INT(sb_binproto_decode(v->bytes, v->len, MAX_FRAME, &h, &op), v->len);
    sb_ops_list_begin(&it, &op.u.conv.members);
    while (sb_ops_list_next(&it, &user) == 1) {
        /* Zero-copy: every item points into the frame. */
        CHECK((const uint8_t *)user.base > v->bytes &&
              (const uint8_t *)user.base + user.len <= v->bytes + v->len);
        n++;
    }
    CHECK_INT(n, 3);
    CHECK_INT(sb_ops_list_next(&it, &user), 0);
    CHECK_INT(sb_ops_list_next(&it, &user), 0);
    sb_ops_list_begin(&it, &empty);
    CHECK_INT(sb_ops_list_next(&it, &user), 0);
    CHECK((const uint8_t *)op.u.conv.name.base == v->bytes + 12 + 8 + 8 + 19 + 1);
}

static void test_names(void)
{
    int named = 0;

    for (unsigned t = 0; t < 300; t++) {
        named += sb_ops_type_name(t) != NULL;
    }
    CHECK_INT(named, 31);
    CHECK_STR(sb_ops_type_name(SB_OP_DEVICES), "devices");
    CHECK_STR(sb_ops_type_name(SB_OP_DEVICE_LIST), "devices");
    CHECK_STR(sb_ops_type_name(SB_OP_SYNC_DONE), "sync_done");
    CHECK_STR(sb_ops_type_name(SB_OP_CONV_REMOVE), "conv_remove");
    CHECK_STR(sb_ops_type_name(SB_OP_SYNC_PAGE), "sync_page");
    CHECK(sb_ops_err_name(0) == NULL);
    CHECK_STR(sb_ops_err_name(SB_OP_ERR_BAD_REQUEST), "bad_request");
    CHECK_STR(sb_ops_err_name(SB_OP_ERR_UNSUPPORTED), "unsupported");
    CHECK(sb_ops_err_name(SB_OP_ERR_UNSUPPORTED + 1) == NULL);
}

int main(void)
{
    test_vectors();
    test_doc_examples();
    test_decode_limits();
    test_flags_versions_types();
    test_length_prefix();
    test_encode_built();
    test_encode_bodies();
    test_encode_rules();
    test_message_overhead();
    test_encode_lists();
    test_list_writer();
    test_iterators();
    test_names();
    free(vector_text);
    return check_done();
}
