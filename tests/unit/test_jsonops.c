/*
 * Unit tests for proto/jsonops and proto/opsbody: every client operation decodes from JSON to the
 * same operation its binary vector (tests/vectors/binary.txt) decodes to, and every server
 * vector encodes to the JSON a client gets for it; every refusal carries the message the server
 * has always answered; every server operation encodes to the JSON the server has always
 * written, within its bound; bodies survive every form; base64 is canonical.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "check.h"
#include "proto/binproto.h"
#include "proto/jsonops.h"
#include "proto/opsbody.h"

static struct sb_json_tok toks[SB_JSONOPS_MAX_TOKENS];

/* ---- describing an operation, encoding-neutrally ---- */

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

static void out_bytes(struct out *o, const char *name, const uint8_t *p, size_t n)
{
    outf(o, "%s: \"", name);
    for (size_t i = 0; i < n; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\') {
            outf(o, "%c", p[i]);
        } else {
            outf(o, "\\x%02x", p[i]);
        }
    }
    outf(o, "\"\n");
}

static void out_str(struct out *o, const char *name, struct sb_slice s)
{
    out_bytes(o, name, (const uint8_t *)s.base, s.len);
}

static void out_body(struct out *o, const struct sb_op_body *b)
{
    static uint8_t bytes[65536];
    size_t n = sb_ops_body_len(b);

    if (n > sizeof(bytes)) {
        outf(o, "body: too long\n");
        return;
    }
    sb_ops_body_copy(b, bytes);
    out_bytes(o, "body", bytes, n);
}

static void out_users(struct out *o, const char *name, const struct sb_ops_list *l)
{
    struct sb_ops_list_iter it;
    struct sb_slice s;
    int rc;

    outf(o, "%s: count %" PRIu32 "\n", name, l->count);
    sb_ops_list_begin(&it, l);
    while ((rc = sb_ops_list_next(&it, &s)) > 0) {
        out_str(o, name, s);
    }
    outf(o, "%s: end %d at %" PRIu32 "\n", name, rc, it.index);
}

static void out_resumes(struct out *o, const struct sb_ops_list *l)
{
    struct sb_ops_list_iter it;
    struct sb_op_resume r;
    int rc;

    outf(o, "convs: count %" PRIu32 "\n", l->count);
    sb_ops_list_begin(&it, l);
    while ((rc = sb_ops_list_next(&it, &r)) > 0) {
        outf(o, "last_seq: %" PRIu64 "\n", r.last_seq);
        out_str(o, "conv", r.conv);
    }
    outf(o, "convs: end %d at %" PRIu32 "\n", rc, it.index);
}

/* The fields of a client operation (not its request id, which the encodings name apart). */
static void describe(const struct sb_op *op, struct out *o)
{
    o->len = 0;
    o->buf[0] = '\0';
    outf(o, "type: %s\n", sb_ops_type_name(op->type));
    switch (op->type) {
    case SB_OP_SEND:
        out_str(o, "client_id", op->u.send.client_id);
        out_str(o, "conv", op->u.send.conv);
        out_str(o, "to", op->u.send.to);
        out_body(o, &op->u.send.body);
        break;
    case SB_OP_RECEIPT:
        outf(o, "seq: %" PRIu64 "\nkind: %u\n", op->u.receipt.seq, op->u.receipt.kind);
        out_str(o, "conv", op->u.receipt.conv);
        out_str(o, "to", op->u.receipt.to);
        out_str(o, "user", op->u.receipt.user);
        break;
    case SB_OP_TYPING:
        out_str(o, "conv", op->u.typing.conv);
        out_str(o, "to", op->u.typing.to);
        out_str(o, "user", op->u.typing.user);
        break;
    case SB_OP_PRESENCE_SUB:
    case SB_OP_PRESENCE_UNSUB:
        out_users(o, "users", &op->u.presence_sub.users);
        break;
    case SB_OP_SYNC:
        outf(o, "limit: %u\n", op->u.sync.limit);
        out_str(o, "cursor", op->u.sync.cursor);
        out_resumes(o, &op->u.sync.convs);
        break;
    case SB_OP_CONV_CREATE:
        out_str(o, "name", op->u.conv_create.name);
        out_users(o, "members", &op->u.conv_create.members);
        break;
    case SB_OP_CONV_ADD:
    case SB_OP_CONV_REMOVE:
    case SB_OP_CONV_PROMOTE:
    case SB_OP_CONV_DEMOTE:
        out_str(o, "conv", op->u.conv_members.conv);
        out_users(o, "users", &op->u.conv_members.users);
        break;
    case SB_OP_CONV_LEAVE:
    case SB_OP_CONV_RENAME:
    case SB_OP_CONV_GET:
        out_str(o, "conv", op->u.conv_ref.conv);
        out_str(o, "name", op->u.conv_ref.name);
        break;
    default:
        break;
    }
}

/* ---- the binary vectors ---- */

static char *vector_text;

static char *read_source_file(const char *rel)
{
    const char *me = __FILE__;
    const char *at = strstr(me, "tests/unit/test_jsonops.c");
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
    return buf;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The frame of vector `name` into out; its length, or 0 when there is no such vector. */
static size_t vector_bytes(const char *name, uint8_t *out, size_t cap)
{
    char head[80];
    size_t n = 0;

    snprintf(head, sizeof(head), "\n== %s\n", name);
    const char *p = vector_text ? strstr(vector_text, head) : NULL;
    if (p == NULL) {
        return 0;
    }
    p += strlen(head);
    while (*p && strncmp(p, "--\n", 3) != 0) {
        const char *nl = strchr(p, '\n');
        if (*p != '#') {
            for (const char *c = p; c < nl && *c != '|'; c++) {
                int hi = hex_digit(c[0]), lo = hex_digit(c[1]);
                if (hi >= 0 && lo >= 0 && n < cap) {
                    out[n++] = (uint8_t)(hi << 4 | lo);
                    c++;
                }
            }
        }
        p = nl ? nl + 1 : p + strlen(p);
    }
    return n;
}

/* Each client operation as a JSON client writes it, and the vector of its binary twin. */
static const struct {
    const char *vector;
    const char *json;
} twins[] = {
    {"send_to_user", "{\"type\":\"send\",\"id\":\"c1\",\"to\":\"bob\",\"body\":\"hi bob\"}"},
    {"send_to_conv",
     "{\"type\":\"send\",\"id\":\"c2\",\"conv\":\"g:5f3a9c0e12b4d678\",\"body_b64\":\"AP8QgA==\"}"},
    {"receipt", "{\"type\":\"receipt\",\"conv\":\"dm:alice:bob\",\"seq\":1,\"kind\":\"read\"}"},
    {"typing", "{\"type\":\"typing\",\"conv\":\"g:5f3a9c0e12b4d678\"}"},
    {"presence_sub", "{\"type\":\"presence_sub\",\"id\":\"p1\",\"users\":[\"bob\",\"carol\"]}"},
    {"presence_unsub", "{\"type\":\"presence_unsub\",\"id\":\"p2\",\"users\":[\"carol\"]}"},
    {"sync", "{\"type\":\"sync\",\"id\":\"s1\",\"convs\":{\"dm:alice:bob\":41},\"limit\":100}"},
    {"conv_create",
     "{\"type\":\"conv_create\",\"id\":\"r1\",\"name\":\"trip\",\"members\":[\"bob\",\"carol\"]}"},
    {"conv_add",
     "{\"type\":\"conv_add\",\"id\":\"r2\",\"conv\":\"g:5f3a9c0e12b4d678\",\"users\":[\"dave\"]}"},
    {"conv_remove", "{ \"users\" : [ \"dave\" ] , \"conv\" : \"g:5f3a9c0e12b4d678\" , \"id\" : "
                    "\"r3\" , \"type\" : \"conv_remove\" }"},
    {"conv_leave", "{\"type\":\"conv_leave\",\"id\":\"r4\",\"conv\":\"g:5f3a9c0e12b4d678\"}"},
    {"conv_rename",
     "{\"type\":\"conv_rename\",\"id\":\"r5\",\"conv\":\"g:5f3a9c0e12b4d678\",\"name\":\"trip "
     "2026\"}"},
    {"conv_list", "{\"type\":\"conv_list\",\"id\":\"l1\"}"},
    {"receipt_to", "{\"type\":\"receipt\",\"to\":\"alice\",\"seq\":2,\"kind\":\"delivered\"}"},
    {"typing_to", "{\"type\":\"typing\",\"to\":\"bob\"}"},
    {"sync_cursor", "{\"type\":\"sync\",\"id\":\"s2\",\"since\":\"1795318161000\"}"},
    {"conv_promote", "{\"type\":\"conv_promote\",\"id\":\"r6\",\"conv\":\"g:5f3a9c0e12b4d678\","
                     "\"users\":[\"dave\"]}"},
    {"conv_demote", "{\"type\":\"conv_demote\",\"id\":\"r7\",\"conv\":\"g:5f3a9c0e12b4d678\","
                    "\"users\":[\"dave\"]}"},
    {"conv_get", "{\"type\":\"conv_get\",\"id\":\"r8\",\"conv\":\"g:5f3a9c0e12b4d678\"}"},
    {"devices", "{\"type\":\"devices\",\"id\":\"d1\"}"},
};

static void test_twins(void)
{
    static uint8_t frame[4096];
    struct out a, b;

    vector_text = read_source_file("tests/vectors/binary.txt");
    CHECK(vector_text != NULL);
    for (size_t i = 0; i < sizeof(twins) / sizeof(twins[0]); i++) {
        struct sb_op jop, bop;
        struct sb_jsonops_error err;
        struct sb_binproto_header hdr;
        size_t n = vector_bytes(twins[i].vector, frame, sizeof(frame));
        int rc = sb_jsonops_decode(twins[i].json, strlen(twins[i].json), SB_OP_NONE, 0, toks, &jop,
                                   &err);
        if (rc != 0) {
            fprintf(stderr, "%s: %s\n", twins[i].vector, err.message);
        }
        CHECK_INT(rc, 0);
        CHECK(n > 0);
        CHECK_INT(sb_binproto_decode_frame(frame, n, 65536, &hdr, &bop), 0);
        describe(&jop, &a);
        describe(&bop, &b);
        if (strcmp(a.buf, b.buf) != 0) {
            fprintf(stderr, "%s: JSON and binary differ\n", twins[i].vector);
        }
        CHECK_STR(a.buf, b.buf);
    }
}

/* Server operations decoded from their binary vectors, as a JSON client receives them. */
static const struct {
    const char *vector;
    const char *json;
} server_twins[] = {
    {"welcome",
     "{\"type\":\"welcome\",\"user\":\"alice\",\"device\":\"phone\",\"session\":\"010000000000002"
     "a\",\"server_time\":1795318161000,\"limits\":{\"max_body\":4193792,\"messages_per_s\""
     ":100,\"bytes_per_s\":1048576,\"max_group_members\":10000,\"max_frame\":4194304,\"pi"
     "ng_interval_ms\":30000}}"},
    {"ack",
     "{\"type\":\"ack\",\"id\":\"c1\",\"msg_id\":\"541735948517376000\",\"conv\":\"dm:alice:bob\","
     "\"seq\":1,\"ts\":1795318161234}"},
    {"ack_duplicate",
     "{\"type\":\"ack\",\"id\":\"c1\",\"msg_id\":\"541735948517376000\",\"conv\":\"dm:alice:bob\","
     "\"seq\":1,\"ts\":1795318161234,\"duplicate\":true}"},
    {"message",
     "{\"type\":\"message\",\"conv\":\"dm:alice:bob\",\"seq\":1,\"msg_id\":\"541735948517376000"
     "\",\"from\":\"alice\",\"device\":\"phone\",\"ts\":1795318161234,\"body\":\"hi bob\"}"},
    {"message_system",
     "{\"type\":\"message\",\"conv\":\"g:5f3a9c0e12b4d678\",\"seq\":4,\"msg_id\":\"541735948517"
     "376001\",\"from\":\"alice\",\"device\":\"\",\"ts\":1795318161235,\"system\":\"member_added"
     "\",\"subject\":\"carol\"}"},
    {"message_created",
     "{\"type\":\"message\",\"conv\":\"g:5f3a9c0e12b4d678\",\"seq\":1,\"msg_id\":\"541735948517"
     "375995\",\"from\":\"alice\",\"device\":\"\",\"ts\":1795318161229,\"system\":\"created\",\"su"
     "bject\":\"\"}"},
    {"receipt_event", "{\"type\":\"receipt\",\"conv\":\"dm:alice:bob\",\"seq\":1,\"kind\":\"read\","
                      "\"user\":\"bob\"}"},
    {"typing_event", "{\"type\":\"typing\",\"conv\":\"dm:alice:bob\",\"user\":\"alice\"}"},
    {"presence",
     "{\"type\":\"presence\",\"user\":\"bob\",\"status\":\"online\",\"last_seen\":1795318100000}"},
    {"sync_page",
     "{\"type\":\"sync_page\",\"conv\":\"dm:alice:bob\",\"messages\":[{\"type\":\"message\",\"con"
     "v\":\"dm:alice:bob\",\"seq\":42,\"msg_id\":\"541735948517376002\",\"from\":\"bob\",\"devic"
     "e\":\"laptop\",\"ts\":1795318161236,\"body\":\"yes\"},{\"type\":\"message\",\"conv\":\"dm:al"
     "ice:bob\",\"seq\":43,\"msg_id\":\"541735948517376003\",\"from\":\"alice\",\"device\":\"pho"
     "ne\",\"ts\":1795318161237,\"body\":\"ok\"}],\"more\":true,\"last_seq\":43}"},
    {"sync_page_truncated",
     "{\"type\":\"sync_page\",\"conv\":\"g:5f3a9c0e12b4d678\",\"messages\":[{\"type\":\"message"
     "\",\"conv\":\"g:5f3a9c0e12b4d678\",\"seq\":90,\"msg_id\":\"541735948517376004\",\"from\":"
     "\"carol\",\"device\":\"tab\",\"ts\":1795318161238,\"body\":\"hi all\"}],\"more\":false,\"la"
     "st_seq\":90,\"truncated\":true}"},
    {"sync_page_empty",
     "{\"type\":\"sync_page\",\"conv\":\"dm:alice:bob\",\"messages\":[],\"more\":false,\"last_s"
     "eq\":41}"},
    {"sync_done", "{\"type\":\"sync_done\",\"cursor\":\"1795318170000\"}"},
    {"conv",
     "{\"type\":\"conv\",\"conv\":\"g:5f3a9c0e12b4d678\",\"kind\":\"group\",\"name\":\"trip\",\"own"
     "er\":\"alice\",\"admins\":[\"alice\"],\"members\":[\"alice\",\"bob\",\"carol\"],\"last_seq\":"
     "1,\"read_seq\":1}"},
    {"convs",
     "{\"type\":\"convs\",\"convs\":[{\"conv\":\"g:5f3a9c0e12b4d678\",\"kind\":\"group\",\"name\":"
     "\"trip\",\"owner\":\"alice\",\"member_count\":3,\"last_seq\":4,\"read_seq\":4},{\"conv\":\""
     "dm:alice:bob\",\"kind\":\"direct\",\"name\":\"\",\"owner\":\"\",\"member_count\":2,\"last_se"
     "q\":1,\"read_seq\":0}]}"},
    {"device_list",
     "{\"type\":\"devices\",\"user\":\"alice\",\"devices\":[{\"device\":\"phone\",\"session\":\"010"
     "000000000002a\",\"connected_s\":42,\"queued_bytes\":0,\"behind\":0},{\"device\":\"lapt"
     "op\",\"session\":\"010000000000002b\",\"connected_s\":3600,\"queued_bytes\":2097152,\""
     "behind\":1}]}"},
    {"device_list_cluster",
     "{\"type\":\"devices\",\"user\":\"alice\",\"devices\":[{\"device\":\"phone\",\"session\":\"010"
     "000000000002a\",\"connected_s\":42,\"queued_bytes\":0,\"behind\":0,\"node\":\"a~1f\"},{\"devi"
     "ce\":\"laptop\",\"session\":\"0000000000000000\",\"connected_s\":0,\"queued_bytes\":0,\"behi"
     "nd\":0,\"node\":\"b~2e\"}]}"},
    {"error",
     "{\"type\":\"error\",\"code\":\"rate_limited\",\"message\":\"too many sends\",\"retry_afte"
     "r_ms\":1500}"},
    {"error_conv",
     "{\"type\":\"error\",\"code\":\"forbidden\",\"message\":\"not a member\",\"conv\":\"dm:bob:c"
     "arol\"}"},
    {"behind", "{\"type\":\"behind\",\"conv\":\"g:5f3a9c0e12b4d678\",\"seq\":120}"},
    {"goaway",
     "{\"type\":\"goaway\",\"reason\":\"server shutting down\",\"reconnect_after_ms\":5000}"},
};

static void test_server_twins(void)
{
    static uint8_t frame[4096];
    static char out[8192];

    for (size_t i = 0; i < sizeof(server_twins) / sizeof(server_twins[0]); i++) {
        struct sb_op op;
        struct sb_binproto_header hdr;
        size_t n = vector_bytes(server_twins[i].vector, frame, sizeof(frame));
        CHECK(n > 0);
        CHECK_INT(sb_binproto_decode_frame(frame, n, 65536, &hdr, &op), 0);
        /* Lists are read with the binary codec's iterators. */
        ssize_t len = sb_jsonops_encode(&op, out, sizeof(out));
        CHECK(len > 0 && (size_t)len <= sb_jsonops_bound(&op));
        if (len <= 0) {
            continue;
        }
        out[len] = '\0';
        if (strcmp(out, server_twins[i].json) != 0) {
            fprintf(stderr, "%s\n", server_twins[i].vector);
        }
        CHECK_STR(out, server_twins[i].json);
    }
}

/* ---- decoding: fields ---- */

static int decode(const char *json, unsigned flags, struct sb_op *op, struct sb_jsonops_error *err)
{
    return sb_jsonops_decode(json, strlen(json), SB_OP_NONE, flags, toks, op, err);
}

static bool slice_is(struct sb_slice s, const char *want)
{
    return sb_slice_eq(s, want);
}

static void test_decode_fields(void)
{
    struct sb_op op;
    struct sb_jsonops_error err;
    struct out o;

    /* The id is the send's client id; "to" wins over "conv" as it always did. */
    CHECK_INT(decode("{\"type\":\"send\",\"id\":\"x\",\"to\":\"bob\",\"conv\":\"dm:a:b\","
                     "\"body\":\"a\\\"b\"}",
                     0, &op, &err),
              0);
    CHECK_INT(op.type, SB_OP_SEND);
    CHECK(slice_is(op.json_id, "x"));
    CHECK(slice_is(op.u.send.client_id, "x"));
    CHECK(slice_is(op.u.send.to, "bob"));
    CHECK_INT(op.u.send.conv.len, 0);
    CHECK_INT(op.u.send.body.form, SB_OP_BODY_JSON);
    CHECK(slice_is(op.u.send.body.data, "\"a\\\"b\""));

    /* A "to" that cannot be a user id counts as none: "conv" is used. */
    CHECK_INT(decode("{\"type\":\"typing\",\"to\":\"\",\"conv\":\"g:1\"}", 0, &op, &err), 0);
    CHECK(slice_is(op.u.typing.conv, "g:1"));
    CHECK_INT(op.u.typing.to.len, 0);
    CHECK_INT(op.json_id.len, 0);

    /* An empty body and a body_b64 of nothing. */
    CHECK_INT(decode("{\"type\":\"send\",\"id\":\"x\",\"to\":\"b\",\"body\":\"\"}", 0, &op, &err),
              0);
    CHECK_INT(sb_ops_body_len(&op.u.send.body), 0);
    CHECK_INT(
        decode("{\"type\":\"send\",\"id\":\"x\",\"to\":\"b\",\"body_b64\":\"\"}", 0, &op, &err), 0);
    CHECK_INT(op.u.send.body.form, SB_OP_BODY_BASE64);
    CHECK_INT(sb_ops_body_len(&op.u.send.body), 0);

    /* Receipt kinds. */
    CHECK_INT(decode("{\"type\":\"receipt\",\"id\":\"r\",\"to\":\"bob\",\"seq\":9,\"kind\":"
                     "\"delivered\"}",
                     0, &op, &err),
              0);
    CHECK_INT(op.u.receipt.kind, SB_OP_RECEIPT_DELIVERED);
    CHECK_INT(op.u.receipt.seq, 9);
    CHECK(slice_is(op.json_id, "r"));
    CHECK(slice_is(op.u.receipt.to, "bob"));

    /* Sync: limits clamp, cursors, entries of every spelling of an integer >= 0. */
    CHECK_INT(decode("{\"type\":\"sync\",\"id\":\"s\",\"limit\":5000,\"convs\":{\"a\":0,\"b\" : "
                     "-0 ,\"c\":18446744073709551615e0}}",
                     0, &op, &err),
              -EBADMSG); /* an exponent is not an integer */
    CHECK_INT(decode("{\"type\":\"sync\",\"id\":\"s\",\"limit\":5000,\"convs\":{\"a\":0,\"b\" : "
                     "-0 ,\"c\":9223372036854775807}}",
                     0, &op, &err),
              0);
    CHECK_INT(op.u.sync.limit, 1000);
    describe(&op, &o);
    CHECK_STR(o.buf, "type: sync\nlimit: 1000\ncursor: \"\"\nconvs: count 3\nlast_seq: 0\nconv: "
                     "\"a\"\nlast_seq: 0\nconv: \"b\"\nlast_seq: 9223372036854775807\nconv: "
                     "\"c\"\nconvs: end 0 at 3\n");
    CHECK_INT(decode("{\"type\":\"sync\",\"id\":\"s\",\"since\":\"1795318170000\"}", 0, &op, &err),
              0);
    CHECK(slice_is(op.u.sync.cursor, "1795318170000"));
    CHECK_INT(op.u.sync.limit, 0);
    CHECK_INT(op.u.sync.convs.count, 0);
    CHECK_INT(decode("{\"type\":\"sync\",\"id\":\"s\",\"since\":\"0\",\"limit\":7}", 0, &op, &err),
              0);
    CHECK(slice_is(op.u.sync.cursor, "0"));
    CHECK_INT(op.u.sync.limit, 7);

    /* conv_create without members or name; rename to nothing; a user named twice is kept. */
    CHECK_INT(decode("{\"type\":\"conv_create\",\"id\":\"c\"}", 0, &op, &err), 0);
    CHECK_INT(op.u.conv_create.members.count, 0);
    CHECK_INT(op.u.conv_create.name.len, 0);
    CHECK_INT(decode("{\"type\":\"conv_create\",\"id\":\"c\",\"name\":\"\",\"members\":[]}", 0, &op,
                     &err),
              0);
    CHECK_INT(op.u.conv_create.members.count, 0);
    CHECK_INT(decode("{\"type\":\"conv_rename\",\"id\":\"c\",\"conv\":\"g:1\"}", 0, &op, &err), 0);
    CHECK_INT(op.u.conv_ref.name.len, 0);
    CHECK_INT(
        decode("{\"type\":\"presence_sub\",\"id\":\"p\",\"users\":[\"a\",\"a\"]}", 0, &op, &err),
        0);
    describe(&op, &o);
    CHECK_STR(o.buf, "type: presence_sub\nusers: count 2\nusers: \"a\"\nusers: \"a\"\nusers: "
                     "end 0 at 2\n");

    /* Types without fields, the ones only the JSON mapping had first, and escaped names. */
    CHECK_INT(decode("{\"type\":\"devices\",\"id\":\"d\"}", 0, &op, &err), 0);
    CHECK_INT(op.type, SB_OP_DEVICES);
    CHECK_INT(decode("{\"type\":\"conv_get\",\"id\":\"d\",\"conv\":\"g:1\"}", 0, &op, &err), 0);
    CHECK_INT(op.type, SB_OP_CONV_GET);
    CHECK(slice_is(op.u.conv_ref.conv, "g:1"));
    CHECK_INT(decode("{\"type\":\"conv_promote\",\"id\":\"d\",\"conv\":\"g:1\",\"users\":[\"u\"]}",
                     0, &op, &err),
              0);
    CHECK_INT(op.type, SB_OP_CONV_PROMOTE);
    CHECK_INT(decode("{\"type\":\"conv_demote\",\"id\":\"d\",\"conv\":\"g:1\",\"users\":[\"u\"]}",
                     0, &op, &err),
              0);
    CHECK_INT(op.type, SB_OP_CONV_DEMOTE);
    CHECK_INT(decode("{\"type\":\"conv_\\u006cist\",\"id\":\"d\"}", 0, &op, &err), 0);
    CHECK_INT(op.type, SB_OP_CONV_LIST);

    /* The type may come from the caller (a REST route): "type" is not read then. */
    const char *j = "{\"type\":\"nonsense\",\"id\":\"q\",\"conv\":\"g:2\"}";
    CHECK_INT(sb_jsonops_decode(j, strlen(j), SB_OP_CONV_LEAVE, 0, toks, &op, &err), 0);
    CHECK_INT(op.type, SB_OP_CONV_LEAVE);
    CHECK(slice_is(op.u.conv_ref.conv, "g:2"));
    CHECK_INT(sb_jsonops_decode(j, strlen(j), SB_OP_ACK, 0, toks, &op, &err), -EBADMSG);
    CHECK_STR(err.message, "unknown operation type");

    /* Escaped names are unescaped (into the tokens' scratch); the limit is on their bytes. */
    CHECK_INT(decode("{\"type\":\"conv_create\",\"id\":\"c\",\"name\":\"Tom \\u0026 "
                     "Jerry \\u00e9\\\"\\n\"}",
                     0, &op, &err),
              0);
    CHECK(slice_is(op.u.conv_create.name, "Tom & Jerry \xc3\xa9\"\n"));
    char names[1024];
    for (int k = 64; k <= 65; k++) {
        size_t n = (size_t)snprintf(names, sizeof(names),
                                    "{\"type\":\"conv_rename\",\"id\":\"r\",\"conv\":\"g:1\","
                                    "\"name\":\"");
        for (int i = 0; i < k; i++) {
            n += (size_t)snprintf(names + n, sizeof(names) - n, "\\u00e9");
        }
        snprintf(names + n, sizeof(names) - n, "\"}");
        int rc = decode(names, 0, &op, &err);
        CHECK_INT(rc, k == 64 ? 0 : -EBADMSG); /* 128 bytes (from 384 of text), then 130 */
        if (rc == 0) {
            CHECK_INT(op.u.conv_ref.name.len, 128);
            CHECK_MEM(op.u.conv_ref.name.base, "\xc3\xa9\xc3\xa9", 4);
            /* It lives in the tokens' array, past what a parse may use. */
            CHECK(op.u.conv_ref.name.base >= (const char *)toks &&
                  op.u.conv_ref.name.base + 128 <= (const char *)(toks + SB_JSONOPS_MAX_TOKENS));
        } else {
            CHECK_STR(err.message, "\"name\" must be a string of at most 128 bytes");
        }
    }

    /* Limits of the operation set: 64-byte ids, 132-byte conversations, 128-byte names. */
    char big[1024];
    snprintf(big, sizeof(big),
             "{\"type\":\"conv_rename\",\"id\":\"%064d\",\"conv\":\"%0132d\",\"name\":\"%0128d\"}",
             0, 0, 0);
    CHECK_INT(decode(big, 0, &op, &err), 0);
    CHECK_INT(op.json_id.len, 64);
    CHECK_INT(op.u.conv_ref.conv.len, 132);
    CHECK_INT(op.u.conv_ref.name.len, 128);
}

static void test_decode_rest(void)
{
    struct sb_op op;
    struct sb_jsonops_error err;

    /* No id, no conversation (the route names it), a receipt without kind is read. */
    const char *j = "{\"seq\":3}";
    CHECK_INT(sb_jsonops_decode(j, strlen(j), SB_OP_RECEIPT, SB_JSONOPS_REST, toks, &op, &err), 0);
    CHECK_INT(op.u.receipt.kind, SB_OP_RECEIPT_READ);
    CHECK_INT(op.u.receipt.conv.len + op.u.receipt.to.len + op.json_id.len, 0);
    CHECK_INT(sb_jsonops_decode(j, strlen(j), SB_OP_RECEIPT, 0, toks, &op, &err), -EBADMSG);
    CHECK_STR(err.message, "needs \"conv\" (or \"to\" for a direct conversation)");
    CHECK_INT(sb_jsonops_decode(j, strlen(j), SB_OP_CONV_LIST, 0, toks, &op, &err), -EBADMSG);
    CHECK_STR(err.message, "missing \"id\" (1-64 bytes)");
    j = "{\"body\":\"x\"}";
    CHECK_INT(sb_jsonops_decode(j, strlen(j), SB_OP_SEND, SB_JSONOPS_REST, toks, &op, &err), 0);
    CHECK_INT(op.u.send.client_id.len, 0);
    CHECK_INT(sb_jsonops_decode("", 0, SB_OP_CONV_LIST, SB_JSONOPS_REST, toks, &op, &err), 0);
    CHECK_INT(op.type, SB_OP_CONV_LIST);
    CHECK_INT(sb_jsonops_decode("", 0, SB_OP_CONV_LEAVE, SB_JSONOPS_REST, toks, &op, &err), 0);
    CHECK_INT(sb_jsonops_decode("", 0, SB_OP_CONV_LIST, 0, toks, &op, &err), -EBADMSG);
    CHECK_STR(err.message, "expected a JSON object");
    j = "{\"id\":\"mine\",\"conv\":\"g:1\",\"users\":[\"a\"]}";
    CHECK_INT(sb_jsonops_decode(j, strlen(j), SB_OP_CONV_ADD, SB_JSONOPS_REST, toks, &op, &err), 0);
    CHECK(slice_is(op.json_id, "mine"));
    CHECK(slice_is(op.u.conv_members.conv, "g:1"));
    /* Still a list of users, with or without the route. */
    j = "{}";
    CHECK_INT(sb_jsonops_decode(j, strlen(j), SB_OP_CONV_ADD, SB_JSONOPS_REST, toks, &op, &err),
              -EBADMSG);
    CHECK_STR(err.message, "\"users\" must be an array of 1-1000 user ids");
}

/* ---- decoding: refusals, with the messages the server always sent ---- */

static const struct {
    const char *json;
    const char *message;
    const char *id; /* the json_id set despite the error, or NULL */
} refusals[] = {
    {"[]", "expected a JSON object", NULL},
    {"{\"type\":\"send\"", "expected a JSON object", NULL},
    {"\"send\"", "expected a JSON object", NULL},
    {"{}", "missing \"type\"", NULL},
    {"{\"type\":7,\"id\":\"a\"}", "missing \"type\"", NULL},
    {"{\"type\":\"\",\"id\":\"a\"}", "missing \"type\"", NULL},
    {"{\"type\":\"a_type_name_of_24_bytes_\",\"id\":\"a\"}", "missing \"type\"", NULL},
    {"{\"type\":\"nope\"}", "missing \"id\" (1-64 bytes)", NULL},
    {"{\"type\":\"nope\",\"id\":\"a\"}", "unknown operation type", "a"},
    {"{\"type\":\"ack\",\"id\":\"a\"}", "unknown operation type", "a"},
    {"{\"type\":\"hello\",\"id\":\"a\"}", "unknown operation type", "a"},
    {"{\"type\":\"ping\",\"id\":\"a\"}", "unknown operation type", "a"},
    {"{\"type\":\"conv_list\"}", "missing \"id\" (1-64 bytes)", NULL},
    {"{\"type\":\"conv_list\",\"id\":\"\"}", "missing \"id\" (1-64 bytes)", NULL},
    {"{\"type\":\"conv_list\",\"id\":5}", "missing \"id\" (1-64 bytes)", NULL},
    {"{\"type\":\"conv_list\",\"id\":"
     "\"12345678901234567890123456789012345678901234567890123456789012345\"}",
     "missing \"id\" (1-64 bytes)", NULL},
    {"{\"type\":\"conv_list\",\"id\":\"a\\u0062\"}", "\"id\" may not contain escapes", NULL},
    {"{\"type\":\"presence_sub\"}", "missing \"id\" (1-64 bytes)", NULL},
    /* send */
    {"{\"type\":\"send\",\"id\":\"a\",\"body\":\"x\"}",
     "needs \"conv\" (or \"to\" for a direct conversation)", "a"},
    {"{\"type\":\"send\",\"id\":\"a\",\"conv\":7,\"body\":\"x\"}",
     "needs \"conv\" (or \"to\" for a direct conversation)", "a"},
    {"{\"type\":\"send\",\"id\":\"a\",\"to\":\"b\\u006fb\",\"body\":\"x\"}",
     "\"to\" is not a valid user id", "a"},
    {"{\"type\":\"send\",\"id\":\"a\",\"conv\":\"g:\\u0031\",\"body\":\"x\"}",
     "\"conv\" may not contain escapes", "a"},
    {"{\"type\":\"send\",\"id\":\"a\",\"to\":\"b\"}", "send needs a string \"body\"", "a"},
    {"{\"type\":\"send\",\"id\":\"a\",\"to\":\"b\",\"body\":{}}", "send needs a string \"body\"",
     "a"},
    {"{\"type\":\"send\",\"id\":\"a\",\"to\":\"b\",\"body\":\"x\",\"body_b64\":\"eA==\"}",
     "send takes \"body\" or \"body_b64\", not both", "a"},
    {"{\"type\":\"send\",\"id\":\"a\",\"to\":\"b\",\"body_b64\":\"eB==\"}",
     "\"body_b64\" must be canonical base64 (RFC 4648, padded)", "a"},
    {"{\"type\":\"send\",\"id\":\"a\",\"to\":\"b\",\"body_b64\":\"eA\"}",
     "\"body_b64\" must be canonical base64 (RFC 4648, padded)", "a"},
    {"{\"type\":\"send\",\"id\":\"a\",\"to\":\"b\",\"body_b64\":\"e\\/==\"}",
     "\"body_b64\" must be canonical base64 (RFC 4648, padded)", "a"},
    {"{\"type\":\"send\",\"id\":\"a\",\"to\":\"b\",\"body_b64\":12}",
     "\"body_b64\" must be canonical base64 (RFC 4648, padded)", "a"},
    /* receipt, typing */
    {"{\"type\":\"receipt\",\"conv\":\"g:1\",\"kind\":\"read\"}",
     "receipt needs \"seq\" (an integer >= 1)", NULL},
    {"{\"type\":\"receipt\",\"id\":\"r\",\"conv\":\"g:1\",\"seq\":0,\"kind\":\"read\"}",
     "receipt needs \"seq\" (an integer >= 1)", "r"},
    {"{\"type\":\"receipt\",\"conv\":\"g:1\",\"seq\":1.5,\"kind\":\"read\"}",
     "receipt needs \"seq\" (an integer >= 1)", NULL},
    {"{\"type\":\"receipt\",\"conv\":\"g:1\",\"seq\":\"1\",\"kind\":\"read\"}",
     "receipt needs \"seq\" (an integer >= 1)", NULL},
    {"{\"type\":\"receipt\",\"conv\":\"g:1\",\"seq\":1}",
     "receipt needs \"kind\": \"delivered\" or \"read\"", NULL},
    {"{\"type\":\"receipt\",\"conv\":\"g:1\",\"seq\":1,\"kind\":\"seen\"}",
     "receipt needs \"kind\": \"delivered\" or \"read\"", NULL},
    {"{\"type\":\"typing\"}", "needs \"conv\" (or \"to\" for a direct conversation)", NULL},
    {"{\"type\":\"typing\",\"id\":\"a\\u0062\"}",
     "needs \"conv\" (or \"to\" for a direct conversation)", NULL},
    /* presence */
    {"{\"type\":\"presence_sub\",\"id\":\"p\"}", "\"users\" must be a non-empty array of user ids",
     "p"},
    {"{\"type\":\"presence_sub\",\"id\":\"p\",\"users\":[]}",
     "\"users\" must be a non-empty array of user ids", "p"},
    {"{\"type\":\"presence_unsub\",\"id\":\"p\",\"users\":\"bob\"}",
     "\"users\" must be a non-empty array of user ids", "p"},
    {"{\"type\":\"presence_sub\",\"id\":\"p\",\"users\":[\"a\",\"\"]}",
     "\"users\" holds an invalid user id", "p"},
    {"{\"type\":\"presence_sub\",\"id\":\"p\",\"users\":[\"a\",1]}",
     "\"users\" holds an invalid user id", "p"},
    {"{\"type\":\"presence_sub\",\"id\":\"p\",\"users\":[\"\\u0061\"]}",
     "\"users\" holds an invalid user id", "p"},
    {"{\"type\":\"presence_sub\",\"id\":\"p\",\"users\":["
     "\"12345678901234567890123456789012345678901234567890123456789012345\"]}",
     "\"users\" holds an invalid user id", "p"},
    /* sync */
    {"{\"type\":\"sync\",\"id\":\"s\"}",
     "sync needs \"convs\": {conversation: last_seq, ...} or \"since\": cursor", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"convs\":{}}",
     "sync needs \"convs\": {conversation: last_seq, ...} or \"since\": cursor", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"convs\":[\"a\"]}",
     "sync needs \"convs\": {conversation: last_seq, ...} or \"since\": cursor", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"convs\":{\"a\":-1}}",
     "\"convs\" maps conversation ids to last_seq (an integer >= 0)", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"convs\":{\"a\":\"1\"}}",
     "\"convs\" maps conversation ids to last_seq (an integer >= 0)", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"convs\":{\"\":1}}",
     "\"convs\" maps conversation ids to last_seq (an integer >= 0)", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"convs\":{\"\\u0061\":1}}",
     "\"convs\" maps conversation ids to last_seq (an integer >= 0)", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"convs\":{\"a\":9223372036854775808}}",
     "\"convs\" maps conversation ids to last_seq (an integer >= 0)", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"convs\":{\"a\":1},\"limit\":0}",
     "\"limit\" must be a positive integer", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"convs\":{\"a\":1},\"limit\":\"5\"}",
     "\"limit\" must be a positive integer", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"convs\":{\"a\":-1},\"limit\":0}",
     "\"limit\" must be a positive integer", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"since\":\"0\",\"convs\":{\"a\":1}}",
     "sync takes \"convs\" or \"since\", not both", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"since\":0}",
     "\"since\" must be a cursor from sync_done (or \"0\")", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"since\":\"\"}",
     "\"since\" must be a cursor from sync_done (or \"0\")", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"since\":\"12a\"}",
     "\"since\" must be a cursor from sync_done (or \"0\")", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"since\":\"-0\"}",
     "\"since\" must be a cursor from sync_done (or \"0\")", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"since\":\"18446744073709551616\"}",
     "\"since\" must be a cursor from sync_done (or \"0\")", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"since\":\"000000000000000000000001\"}",
     "\"since\" must be a cursor from sync_done (or \"0\")", "s"},
    {"{\"type\":\"sync\",\"id\":\"s\",\"since\":\"1\",\"limit\":-3}",
     "\"limit\" must be a positive integer", "s"},
    /* groups */
    {"{\"type\":\"conv_create\",\"id\":\"c\",\"name\":5}",
     "\"name\" must be a string of at most 128 bytes", "c"},
    {"{\"type\":\"conv_create\",\"id\":\"c\",\"members\":{}}",
     "\"members\" must be an array of 1-1000 user ids", "c"},
    {"{\"type\":\"conv_create\",\"id\":\"c\",\"members\":[null]}",
     "\"members\" holds an invalid user id", "c"},
    {"{\"type\":\"conv_add\",\"id\":\"c\",\"users\":[\"a\"]}", "needs \"conv\"", "c"},
    {"{\"type\":\"conv_add\",\"id\":\"c\",\"conv\":\"\",\"users\":[\"a\"]}", "needs \"conv\"", "c"},
    {"{\"type\":\"conv_add\",\"id\":\"c\",\"conv\":\"g:1\"}",
     "\"users\" must be an array of 1-1000 user ids", "c"},
    {"{\"type\":\"conv_remove\",\"id\":\"c\",\"conv\":\"g:1\",\"users\":[]}",
     "\"users\" must be an array of 1-1000 user ids", "c"},
    {"{\"type\":\"conv_promote\",\"id\":\"c\",\"conv\":\"g:1\",\"users\":[true]}",
     "\"users\" holds an invalid user id", "c"},
    {"{\"type\":\"conv_leave\",\"id\":\"c\"}", "needs \"conv\"", "c"},
    {"{\"type\":\"conv_get\",\"id\":\"c\",\"conv\":\"g:\\u0031\"}",
     "\"conv\" may not contain escapes", "c"},
    {"{\"type\":\"conv_rename\",\"id\":\"c\",\"conv\":\"g:1\",\"name\":[]}",
     "\"name\" must be a string of at most 128 bytes", "c"},
};

static void test_refusals(void)
{
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        struct sb_op op;
        struct sb_jsonops_error err;
        int rc = decode(refusals[i].json, 0, &op, &err);
        if (rc != -EBADMSG || !err.message || strcmp(err.message, refusals[i].message) != 0) {
            fprintf(stderr, "refusal %zu: %s\n", i, refusals[i].json);
        }
        CHECK_INT(rc, -EBADMSG);
        CHECK_INT(err.code, SB_OP_ERR_BAD_REQUEST);
        CHECK_STR(err.message, refusals[i].message);
        if (refusals[i].id) {
            CHECK(slice_is(op.json_id, refusals[i].id));
        } else {
            CHECK_INT(op.json_id.len, 0);
        }
    }
}

/* A request: prefix, then "users" of n ids u0, u1, ... Returns its length. */
static size_t users_json(char *json, size_t cap, const char *prefix, int n)
{
    size_t len = (size_t)snprintf(json, cap, "%s,\"users\":[", prefix);

    for (int i = 0; i < n; i++) {
        len += (size_t)snprintf(json + len, cap - len, "%s\"u%d\"", i ? "," : "", i);
    }
    len += (size_t)snprintf(json + len, cap - len, "]}");
    return len;
}

/* Lists at their limits: 1,000 items decode, 1,001 do not, nesting is bounded. */
static void test_decode_limits(void)
{
    static char json[40000];
    struct sb_op op;
    struct sb_jsonops_error err;
    size_t n;

    for (int items = 1000; items <= 1001; items++) {
        n = users_json(json, sizeof(json), "{\"type\":\"conv_add\",\"id\":\"c\",\"conv\":\"g:1\"",
                       items);
        int rc = sb_jsonops_decode(json, n, SB_OP_NONE, 0, toks, &op, &err);
        if (items == 1000) {
            CHECK_INT(rc, 0);
            struct sb_ops_list_iter it;
            struct sb_slice u;
            int k = 0, r;
            sb_ops_list_begin(&it, &op.u.conv_members.users);
            while ((r = sb_ops_list_next(&it, &u)) > 0) {
                char want[16];
                snprintf(want, sizeof(want), "u%d", k++);
                if (!slice_is(u, want)) {
                    break;
                }
            }
            CHECK_INT(r, 0);
            CHECK_INT(k, 1000);
        } else {
            CHECK_INT(rc, -EBADMSG);
            CHECK_STR(err.message, "\"users\" must be an array of 1-1000 user ids");
        }
        /* The same list in a presence request. */
        n = users_json(json, sizeof(json), "{\"type\":\"presence_sub\",\"id\":\"p\"", items);
        rc = sb_jsonops_decode(json, n, SB_OP_NONE, 0, toks, &op, &err);
        CHECK_INT(rc, items == 1000 ? 0 : -EBADMSG);
        if (items == 1001) {
            CHECK_STR(err.message, "at most 1000 users per request");
        }
    }
    /* A sync of 1,000 conversations decodes (the server says it allows fewer), 1,001 not. */
    for (int items = 1000; items <= 1001; items++) {
        n = (size_t)snprintf(json, sizeof(json), "{\"type\":\"sync\",\"id\":\"s\",\"convs\":{");
        for (int i = 0; i < items; i++) {
            n += (size_t)snprintf(json + n, sizeof(json) - n, "%s\"g:%d\":%d", i ? "," : "", i, i);
        }
        n += (size_t)snprintf(json + n, sizeof(json) - n, "}}");
        int rc = sb_jsonops_decode(json, n, SB_OP_NONE, 0, toks, &op, &err);
        CHECK_INT(rc, items == 1000 ? 0 : -EBADMSG);
        if (rc == 0) {
            struct sb_ops_list_iter it;
            struct sb_op_resume r;
            uint64_t sum = 0;
            sb_ops_list_begin(&it, &op.u.sync.convs);
            while (sb_ops_list_next(&it, &r) > 0) {
                sum += r.last_seq;
            }
            CHECK_INT(it.index, 1000);
            CHECK_INT(sum, 999 * 1000 / 2);
        } else {
            CHECK_STR(err.message, "a sync names at most 1000 conversations");
        }
    }
    /* More tokens than any request needs. */
    n = (size_t)snprintf(json, sizeof(json), "{\"type\":\"conv_add\",\"id\":\"c\",\"x\":[");
    for (int i = 0; i < SB_JSONOPS_MAX_TOKENS; i++) {
        n += (size_t)snprintf(json + n, sizeof(json) - n, "%s1", i ? "," : "");
    }
    n += (size_t)snprintf(json + n, sizeof(json) - n, "]}");
    CHECK_INT(sb_jsonops_decode(json, n, SB_OP_NONE, 0, toks, &op, &err), -EBADMSG);
    CHECK_STR(err.message, "too many fields (lists hold at most 1,000 items)");
    const char *deep = "{\"type\":\"conv_list\",\"id\":\"c\",\"x\":[[[[[[[[1]]]]]]]]}";
    CHECK_INT(decode(deep, 0, &op, &err), -EBADMSG);
    CHECK_STR(err.message, "expected a JSON object");
    const char *deep_ok = "{\"type\":\"conv_list\",\"id\":\"c\",\"x\":[[[[[[[1]]]]]]]}";
    CHECK_INT(decode(deep_ok, 0, &op, &err), 0);
}

/* Iterators refuse raw text that does not hold `count` items, without reading past it. */
static void test_iterators(void)
{
    struct sb_op op;
    struct sb_jsonops_error err;
    struct sb_ops_list_iter it;
    struct sb_slice s = {0};
    struct sb_op_resume r = {0};

    CHECK_INT(decode("{\"type\":\"presence_sub\",\"id\":\"p\",\"users\":[ \"a\" ,\t\"b\"\n]}", 0,
                     &op, &err),
              0);
    struct sb_ops_list users = op.u.presence_sub.users;
    CHECK_INT(users.count, 2);
    users.count = 3; /* a list promising more than it holds */
    sb_ops_list_begin(&it, &users);
    CHECK_INT(sb_ops_list_next(&it, &s), 1);
    CHECK_INT(sb_ops_list_next(&it, &s), 1);
    CHECK(slice_is(s, "b"));
    CHECK_INT(sb_ops_list_next(&it, &s), -EBADMSG);
    users.raw.len -= 3; /* cut inside the second item */
    users.count = 2;
    sb_ops_list_begin(&it, &users);
    CHECK_INT(sb_ops_list_next(&it, &s), 1);
    CHECK_INT(sb_ops_list_next(&it, &s), -EBADMSG);

    CHECK_INT(
        decode("{\"type\":\"sync\",\"id\":\"s\",\"convs\":{\"a\" : 18 , \"b\":7}}", 0, &op, &err),
        0);
    struct sb_ops_list convs = op.u.sync.convs;
    sb_ops_list_begin(&it, &convs);
    CHECK_INT(sb_ops_list_next(&it, &r), 1);
    CHECK_INT(r.last_seq, 18);
    CHECK(slice_is(r.conv, "a"));
    CHECK_INT(sb_ops_list_next(&it, &r), 1);
    CHECK_INT(r.last_seq, 7);
    CHECK_INT(sb_ops_list_next(&it, &r), 0);
    CHECK_INT(sb_ops_list_next(&it, &r), 0);
    convs.raw.len = 8; /* {"a" : 1 */
    sb_ops_list_begin(&it, &convs);
    CHECK_INT(sb_ops_list_next(&it, &r), 1);
    CHECK_INT(r.last_seq, 1); /* a number cut short reads as what is there... */
    CHECK_INT(sb_ops_list_next(&it, &r), -EBADMSG); /* ...and the list ends broken */
    static const char bad[][24] = {"{\"a\":-1}", "{\"a\":1.5}",   "{\"a\":1e3}", "{\"a\" 1}",
                                   "[\"a\":1]",  "{\"a\\\"\":1}", "{a:1}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        convs.raw = sb_slice_from(bad[i], strlen(bad[i]));
        convs.count = 1;
        sb_ops_list_begin(&it, &convs);
        CHECK_INT(sb_ops_list_next(&it, &r), -EBADMSG);
    }
}

/* ---- encoding ---- */

/* A list over a C array, for building server operations. */
struct array {
    const void *items;
    size_t size;
};

static int next_array(struct sb_ops_list_iter *it, void *item)
{
    const struct array *a = (const void *)it->list->raw.base;
    if (it->index >= it->list->count) {
        return 0;
    }
    memcpy(item, (const char *)a->items + it->index * a->size, a->size);
    it->index++;
    return 1;
}

static struct sb_ops_list array_list(const struct array *a, uint32_t count)
{
    struct sb_ops_list l = {count, sb_slice_from((const char *)a, sizeof(*a)), next_array};
    return l;
}

#define S(lit) sb_slice_from(lit, sizeof(lit) - 1)

/* Encodes op and compares with want; also checks the bound and that one byte less is -ENOSPC. */
static void check_encode(const struct sb_op *op, const char *want)
{
    static char out[65536];
    size_t bound = sb_jsonops_bound(op);
    ssize_t n = sb_jsonops_encode(op, out, sizeof(out));

    CHECK(n > 0);
    if (n <= 0) {
        return;
    }
    out[n] = '\0';
    CHECK_STR(out, want);
    CHECK((size_t)n <= bound);
    CHECK_INT(sb_jsonops_encode(op, out, (size_t)n - 1), -ENOSPC);
    CHECK_INT(sb_jsonops_encode(op, out, (size_t)n), n);
}

static void test_encode(void)
{
    struct sb_op op;

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_WELCOME;
    op.u.welcome = (struct sb_op_welcome){.session = 0x010000000000002a,
                                          .server_time_ms = 1795318161000,
                                          .max_frame = 4194304,
                                          .max_body = 65536,
                                          .ping_interval_ms = 30000,
                                          .messages_per_s = 100,
                                          .bytes_per_s = 1048576,
                                          .max_group_members = 10000,
                                          .user = S("alice"),
                                          .device = S("phone")};
    check_encode(&op, "{\"type\":\"welcome\",\"user\":\"alice\",\"device\":\"phone\",\"session\":"
                      "\"010000000000002a\",\"server_time\":1795318161000,\"limits\":{\"max_"
                      "body\":65536,\"messages_per_s\":100,\"bytes_per_s\":1048576,\"max_group_"
                      "members\":10000,\"max_frame\":4194304,\"ping_interval_ms\":30000}}");

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_ACK;
    op.u.ack = (struct sb_op_ack){.msg_id = 541735948517376000,
                                  .seq = 1,
                                  .ts_ms = 1795318161234,
                                  .client_id = S("c1"),
                                  .conv = S("dm:alice:bob")};
    check_encode(&op, "{\"type\":\"ack\",\"id\":\"c1\",\"msg_id\":\"541735948517376000\",\"conv\":"
                      "\"dm:alice:bob\",\"seq\":1,\"ts\":1795318161234}");
    op.u.ack.is_duplicate = true;
    op.json_id = S("c1");
    op.u.ack.client_id = S("");
    check_encode(&op, "{\"type\":\"ack\",\"id\":\"c1\",\"msg_id\":\"541735948517376000\",\"conv\":"
                      "\"dm:alice:bob\",\"seq\":1,\"ts\":1795318161234,\"duplicate\":true}");

    /* Messages: a JSON body verbatim, bytes escaped or in base64, a system message. */
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_MESSAGE;
    op.u.message = (struct sb_op_message){.msg_id = 541735948517376000,
                                          .seq = 1,
                                          .ts_ms = 1795318161234,
                                          .conv = S("dm:alice:bob"),
                                          .from = S("alice"),
                                          .device = S("phone"),
                                          .body = {SB_OP_BODY_JSON, S("\"hi \\u0062ob\"")}};
    check_encode(&op, "{\"type\":\"message\",\"conv\":\"dm:alice:bob\",\"seq\":1,\"msg_id\":"
                      "\"541735948517376000\",\"from\":\"alice\",\"device\":\"phone\",\"ts\":"
                      "1795318161234,\"body\":\"hi \\u0062ob\"}");
    op.u.message.body = (struct sb_op_body){SB_OP_BODY_BYTES, S("say \"hi\"\n\xc3\xa9")};
    check_encode(&op, "{\"type\":\"message\",\"conv\":\"dm:alice:bob\",\"seq\":1,\"msg_id\":"
                      "\"541735948517376000\",\"from\":\"alice\",\"device\":\"phone\",\"ts\":"
                      "1795318161234,\"body\":\"say \\\"hi\\\"\\n\xc3\xa9\"}");
    op.u.message.body = (struct sb_op_body){SB_OP_BODY_BYTES, S("\x00\xff\x10\x80")};
    check_encode(&op, "{\"type\":\"message\",\"conv\":\"dm:alice:bob\",\"seq\":1,\"msg_id\":"
                      "\"541735948517376000\",\"from\":\"alice\",\"device\":\"phone\",\"ts\":"
                      "1795318161234,\"body_b64\":\"AP8QgA==\"}");
    op.u.message.body = (struct sb_op_body){SB_OP_BODY_BASE64, S("AP8QgA==")};
    check_encode(&op, "{\"type\":\"message\",\"conv\":\"dm:alice:bob\",\"seq\":1,\"msg_id\":"
                      "\"541735948517376000\",\"from\":\"alice\",\"device\":\"phone\",\"ts\":"
                      "1795318161234,\"body_b64\":\"AP8QgA==\"}");
    op.u.message.body = (struct sb_op_body){SB_OP_BODY_BYTES, S("")};
    check_encode(&op, "{\"type\":\"message\",\"conv\":\"dm:alice:bob\",\"seq\":1,\"msg_id\":"
                      "\"541735948517376000\",\"from\":\"alice\",\"device\":\"phone\",\"ts\":"
                      "1795318161234,\"body\":\"\"}");
    op.u.message = (struct sb_op_message){.msg_id = 541735948517376002,
                                          .seq = 3,
                                          .ts_ms = 1795318163000,
                                          .system = SB_OP_SYSTEM_MEMBER_ADDED,
                                          .conv = S("g:0c31a5e2f1000000"),
                                          .from = S("alice"),
                                          .device = S("phone"),
                                          .subject = S("dave")};
    check_encode(&op, "{\"type\":\"message\",\"conv\":\"g:0c31a5e2f1000000\",\"seq\":3,\"msg_"
                      "id\":\"541735948517376002\",\"from\":\"alice\",\"device\":\"phone\",\"ts\":"
                      "1795318163000,\"system\":\"member_added\",\"subject\":\"dave\"}");
    op.u.message.system = SB_OP_SYSTEM_CREATED;
    op.u.message.subject = S("");
    check_encode(&op, "{\"type\":\"message\",\"conv\":\"g:0c31a5e2f1000000\",\"seq\":3,\"msg_"
                      "id\":\"541735948517376002\",\"from\":\"alice\",\"device\":\"phone\",\"ts\":"
                      "1795318163000,\"system\":\"created\",\"subject\":\"\"}");
    op.u.message.system = 5;
    CHECK_INT(sb_jsonops_encode(&op, (char[1024]){0}, 1024), -EINVAL);

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_RECEIPT;
    op.u.receipt = (struct sb_op_receipt){
        .seq = 3, .kind = SB_OP_RECEIPT_READ, .conv = S("dm:alice:bob"), .user = S("bob")};
    check_encode(&op, "{\"type\":\"receipt\",\"conv\":\"dm:alice:bob\",\"seq\":3,\"kind\":"
                      "\"read\",\"user\":\"bob\"}");
    op.u.receipt.kind = SB_OP_RECEIPT_DELIVERED;
    check_encode(&op, "{\"type\":\"receipt\",\"conv\":\"dm:alice:bob\",\"seq\":3,\"kind\":"
                      "\"delivered\",\"user\":\"bob\"}");
    op.u.receipt.kind = 0;
    CHECK_INT(sb_jsonops_encode(&op, (char[1024]){0}, 1024), -EINVAL);

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_TYPING;
    op.u.typing = (struct sb_op_typing){.conv = S("g:0c31a5e2f1000000"), .user = S("alice")};
    check_encode(&op, "{\"type\":\"typing\",\"conv\":\"g:0c31a5e2f1000000\",\"user\":\"alice\"}");

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_PRESENCE;
    op.u.presence = (struct sb_op_presence){
        .last_seen_ms = 1795318161000, .status = SB_OP_PRESENCE_ONLINE, .user = S("bob")};
    check_encode(&op, "{\"type\":\"presence\",\"user\":\"bob\",\"status\":\"online\",\"last_"
                      "seen\":1795318161000}");
    op.u.presence = (struct sb_op_presence){.status = SB_OP_PRESENCE_OFFLINE, .user = S("carol")};
    check_encode(
        &op, "{\"type\":\"presence\",\"user\":\"carol\",\"status\":\"offline\",\"last_seen\":0}");

    /* A sync page, its messages from a list; an empty one, truncated. */
    struct sb_op_message msgs[2] = {
        {.msg_id = 541735948517376001,
         .seq = 6,
         .ts_ms = 1795318162000,
         .conv = S("dm:alice:bob"),
         .from = S("bob"),
         .device = S("d1"),
         .body = {SB_OP_BODY_JSON, S("\"hello\"")}},
        {.msg_id = 7,
         .seq = 7,
         .ts_ms = 8,
         .system = SB_OP_SYSTEM_RENAMED,
         .conv = S("dm:alice:bob"),
         .from = S("bob"),
         .subject = S("x")},
    };
    struct array marr = {msgs, sizeof(msgs[0])};
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_SYNC_PAGE;
    op.json_id = S("s1");
    op.u.sync_page = (struct sb_op_sync_page){
        .last_seq = 6, .conv = S("dm:alice:bob"), .messages = array_list(&marr, 1)};
    check_encode(&op, "{\"type\":\"sync_page\",\"id\":\"s1\",\"conv\":\"dm:alice:bob\","
                      "\"messages\":[{\"type\":\"message\",\"conv\":\"dm:alice:bob\",\"seq\":6,"
                      "\"msg_id\":\"541735948517376001\",\"from\":\"bob\",\"device\":\"d1\",\"ts\":"
                      "1795318162000,\"body\":\"hello\"}],\"more\":false,\"last_seq\":6}");
    op.u.sync_page.messages = array_list(&marr, 2);
    op.u.sync_page.has_more = true;
    op.u.sync_page.last_seq = 7;
    check_encode(&op, "{\"type\":\"sync_page\",\"id\":\"s1\",\"conv\":\"dm:alice:bob\","
                      "\"messages\":[{\"type\":\"message\",\"conv\":\"dm:alice:bob\",\"seq\":6,"
                      "\"msg_id\":\"541735948517376001\",\"from\":\"bob\",\"device\":\"d1\",\"ts\":"
                      "1795318162000,\"body\":\"hello\"},{\"type\":\"message\",\"conv\":\"dm:"
                      "alice:bob\",\"seq\":7,\"msg_id\":\"7\",\"from\":\"bob\",\"device\":\"\","
                      "\"ts\":8,\"system\":\"renamed\",\"subject\":\"x\"}],\"more\":true,\"last_"
                      "seq\":7}");
    op.u.sync_page = (struct sb_op_sync_page){
        .last_seq = 12, .truncated = true, .conv = S("g:1"), .messages = {0, {NULL, 0}, NULL}};
    check_encode(&op, "{\"type\":\"sync_page\",\"id\":\"s1\",\"conv\":\"g:1\",\"messages\":[],"
                      "\"more\":false,\"last_seq\":12,\"truncated\":true}");

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_SYNC_DONE;
    op.json_id = S("s2");
    op.u.sync_done.cursor = S("1795318170000");
    check_encode(&op, "{\"type\":\"sync_done\",\"id\":\"s2\",\"cursor\":\"1795318170000\"}");

    /* A conversation: group and direct (kind from the id). */
    struct sb_slice admins[] = {S("alice")};
    struct sb_slice members[] = {S("alice"), S("bob"), S("carol")};
    struct array aarr = {admins, sizeof(admins[0])}, marr2 = {members, sizeof(members[0])};
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_CONV;
    op.json_id = S("r1");
    op.u.conv = (struct sb_op_conv){.last_seq = 1,
                                    .conv = S("g:0c31a5e2f1000000"),
                                    .name = S("team"),
                                    .owner = S("alice"),
                                    .admins = array_list(&aarr, 1),
                                    .members = array_list(&marr2, 3)};
    check_encode(&op, "{\"type\":\"conv\",\"id\":\"r1\",\"conv\":\"g:0c31a5e2f1000000\",\"kind\":"
                      "\"group\",\"name\":\"team\",\"owner\":\"alice\",\"admins\":[\"alice\"],"
                      "\"members\":[\"alice\",\"bob\",\"carol\"],\"last_seq\":1,\"read_seq\":0}");
    op.u.conv = (struct sb_op_conv){
        .last_seq = 4, .read_seq = 2, .conv = S("dm:alice:bob"), .members = array_list(&marr2, 2)};
    check_encode(&op,
                 "{\"type\":\"conv\",\"id\":\"r1\",\"conv\":\"dm:alice:bob\",\"kind\":"
                 "\"direct\",\"name\":\"\",\"owner\":\"\",\"admins\":[],\"members\":[\"alice\","
                 "\"bob\"],\"last_seq\":4,\"read_seq\":2}");

    struct sb_op_conv_summary sums[] = {
        {.last_seq = 12, .read_seq = 10, .member_count = 2, .conv = S("dm:alice:bob")},
        {.last_seq = 1,
         .member_count = 3,
         .conv = S("g:0c31a5e2f1000000"),
         .name = S("team"),
         .owner = S("alice")},
    };
    struct array sarr = {sums, sizeof(sums[0])};
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_CONVS;
    op.json_id = S("l1");
    op.u.convs.convs = array_list(&sarr, 2);
    check_encode(&op, "{\"type\":\"convs\",\"id\":\"l1\",\"convs\":[{\"conv\":\"dm:alice:bob\","
                      "\"kind\":\"direct\",\"name\":\"\",\"owner\":\"\",\"member_count\":2,\"last_"
                      "seq\":12,\"read_seq\":10},{\"conv\":\"g:0c31a5e2f1000000\",\"kind\":"
                      "\"group\",\"name\":\"team\",\"owner\":\"alice\",\"member_count\":3,\"last_"
                      "seq\":1,\"read_seq\":0}]}");
    op.u.convs.convs.count = 0;
    check_encode(&op, "{\"type\":\"convs\",\"id\":\"l1\",\"convs\":[]}");

    struct sb_op_device devs[] = {
        {.session = 0x2a, .connected_s = 61, .queued_bytes = 0, .behind = 1, .device = S("phone")},
    };
    struct array darr = {devs, sizeof(devs[0])};
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_DEVICE_LIST;
    op.json_id = S("d1");
    op.u.device_list.user = S("alice");
    op.u.device_list.devices = array_list(&darr, 1);
    check_encode(&op, "{\"type\":\"devices\",\"id\":\"d1\",\"user\":\"alice\",\"devices\":[{"
                      "\"device\":\"phone\",\"session\":\"000000000000002a\",\"connected_s\":61,"
                      "\"queued_bytes\":0,\"behind\":1}]}");

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_ERROR;
    op.json_id = S("c9");
    op.u.error = (struct sb_op_error){.code = SB_OP_ERR_RATE_LIMITED,
                                      .retry_after_ms = 180,
                                      .message = S("too many messages or bytes; retry later")};
    check_encode(&op, "{\"type\":\"error\",\"id\":\"c9\",\"code\":\"rate_limited\",\"message\":"
                      "\"too many messages or bytes; retry later\",\"retry_after_ms\":180}");
    op.json_id = S("");
    op.u.error = (struct sb_op_error){.code = SB_OP_ERR_FORBIDDEN,
                                      .message = S("not a member of this conversation"),
                                      .conv = S("dm:bob:carol")};
    check_encode(&op, "{\"type\":\"error\",\"code\":\"forbidden\",\"message\":\"not a member of "
                      "this conversation\",\"conv\":\"dm:bob:carol\"}");
    op.u.error = (struct sb_op_error){.code = 999, .message = S("?")};
    check_encode(&op, "{\"type\":\"error\",\"code\":\"internal\",\"message\":\"?\"}");

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_BEHIND;
    op.u.behind = (struct sb_op_behind){.seq = 742, .conv = S("dm:alice:bob")};
    check_encode(&op, "{\"type\":\"behind\",\"conv\":\"dm:alice:bob\",\"seq\":742}");

    memset(&op, 0, sizeof(op));
    op.type = SB_OP_GOAWAY;
    op.u.goaway = (struct sb_op_goaway){.reason = S("replaced by a newer device")};
    check_encode(&op, "{\"type\":\"goaway\",\"reason\":\"replaced by a newer device\","
                      "\"reconnect_after_ms\":0}");

    /* Client-only types, none, and strings that are not UTF-8 are refused. */
    static const enum sb_op_type refused[] = {SB_OP_NONE,      SB_OP_HELLO,  SB_OP_SEND,
                                              SB_OP_SYNC,      SB_OP_PING,   SB_OP_PONG,
                                              SB_OP_CONV_LIST, SB_OP_DEVICES};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        memset(&op, 0, sizeof(op));
        op.type = refused[i];
        CHECK_INT(sb_jsonops_encode(&op, (char[1024]){0}, 1024), -EINVAL);
    }
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_BEHIND;
    op.u.behind.conv = S("\xff");
    CHECK_INT(sb_jsonops_encode(&op, (char[1024]){0}, 1024), -EINVAL);
    /* A list whose iterator fails. */
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_CONV;
    op.u.conv.conv = S("g:1");
    op.u.conv.members = (struct sb_ops_list){1, S("[1]"), NULL};
    CHECK_INT(decode("{\"type\":\"conv_add\",\"id\":\"c\",\"conv\":\"g:1\",\"users\":[\"a\"]}", 0,
                     &op, &(struct sb_jsonops_error){0}),
              0);
    struct sb_ops_list broken = op.u.conv_members.users;
    broken.count = 2;
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_CONV;
    op.u.conv.conv = S("g:1");
    op.u.conv.members = broken;
    CHECK_INT(sb_jsonops_encode(&op, (char[1024]){0}, 1024), -EINVAL);
}

/* The bound holds for the longest numbers and names each operation can have. */
static void test_bound_extremes(void)
{
    static char out[4096];
    const uint64_t M = UINT64_MAX;
    const uint32_t U = UINT32_MAX;
    struct sb_op_message msg = {.msg_id = M,
                                .seq = M,
                                .ts_ms = M,
                                .system = SB_OP_SYSTEM_MEMBER_REMOVED,
                                .conv = S("c"),
                                .from = S("f"),
                                .device = S("d"),
                                .subject = S("\x01")};
    struct sb_op_conv_summary sum = {.last_seq = M, .read_seq = M, .member_count = U};
    struct sb_op_device dev = {.session = M, .connected_s = M, .queued_bytes = M, .behind = U};
    struct array marr = {&msg, sizeof(msg)}, sarr = {&sum, sizeof(sum)}, darr = {&dev, sizeof(dev)};
    struct sb_op ops[14];

    memset(ops, 0, sizeof(ops));
    ops[0].type = SB_OP_WELCOME;
    ops[0].u.welcome = (struct sb_op_welcome){M, M, U, U, U, U, U, U, S(""), S("")};
    ops[1].type = SB_OP_ACK;
    ops[1].u.ack = (struct sb_op_ack){.msg_id = M, .seq = M, .ts_ms = M, .is_duplicate = true};
    ops[2].type = SB_OP_MESSAGE;
    ops[2].u.message = msg;
    ops[3].type = SB_OP_RECEIPT;
    ops[3].u.receipt = (struct sb_op_receipt){.seq = M, .kind = SB_OP_RECEIPT_DELIVERED};
    ops[4].type = SB_OP_TYPING;
    ops[5].type = SB_OP_PRESENCE;
    ops[5].u.presence =
        (struct sb_op_presence){.last_seen_ms = M, .status = SB_OP_PRESENCE_OFFLINE};
    ops[6].type = SB_OP_SYNC_PAGE;
    ops[6].u.sync_page = (struct sb_op_sync_page){
        .last_seq = M, .has_more = true, .truncated = true, .messages = array_list(&marr, 1)};
    ops[7].type = SB_OP_SYNC_DONE;
    ops[8].type = SB_OP_CONV;
    ops[8].u.conv = (struct sb_op_conv){.last_seq = M, .read_seq = M};
    ops[9].type = SB_OP_CONVS;
    ops[9].u.convs.convs = array_list(&sarr, 1);
    ops[10].type = SB_OP_DEVICE_LIST;
    ops[10].u.device_list.devices = array_list(&darr, 1);
    ops[11].type = SB_OP_ERROR;
    ops[11].u.error = (struct sb_op_error){.code = SB_OP_ERR_UNAUTHORIZED, .retry_after_ms = U};
    ops[12].type = SB_OP_BEHIND;
    ops[12].u.behind.seq = M;
    ops[13].type = SB_OP_GOAWAY;
    ops[13].u.goaway.reconnect_after_ms = U;
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        size_t bound = sb_jsonops_bound(&ops[i]);
        ssize_t n = sb_jsonops_encode(&ops[i], out, bound);
        if (n < 0) {
            fprintf(stderr, "%s: %zd with a bound of %zu\n", sb_ops_type_name(ops[i].type), n,
                    bound);
        }
        CHECK(n > 0);
    }
    /* A body's bound follows what it holds: text is not counted at 6 bytes a byte. */
    static char body[3000];
    memset(body, 'a', sizeof(body));
    ops[2].u.message.system = SB_OP_SYSTEM_NONE;
    ops[2].u.message.body = (struct sb_op_body){SB_OP_BODY_BYTES, {body, sizeof(body)}};
    CHECK(sb_jsonops_bound(&ops[2]) < sizeof(body) + 600);
    ssize_t n = sb_jsonops_encode(&ops[2], out, sb_jsonops_bound(&ops[2]));
    CHECK(n > (ssize_t)sizeof(body));
    memset(body, '\x01', sizeof(body));
    n = sb_jsonops_encode(&ops[2], out, sizeof(out));
    CHECK_INT(n, -ENOSPC); /* \u0001: 6 bytes each, more than out holds */
    static char big[20000];
    CHECK(sb_jsonops_bound(&ops[2]) <= sizeof(big));
    n = sb_jsonops_encode(&ops[2], big, sb_jsonops_bound(&ops[2]));
    CHECK(n > 6 * (ssize_t)sizeof(body));
    body[0] = (char)0xff; /* not UTF-8: base64, 4 bytes for 3 */
    CHECK(sb_jsonops_bound(&ops[2]) < sizeof(body) / 3 * 4 + 600);
    n = sb_jsonops_encode(&ops[2], big, sb_jsonops_bound(&ops[2]));
    CHECK(n > (ssize_t)(sizeof(body) / 3 * 4));
}

/* ---- bodies ---- */

static void test_bodies(void)
{
    static const struct {
        const char *literal; /* a JSON "body" */
        const char *bytes;
        size_t len;
    } json_bodies[] = {
        {"\"\"", "", 0},
        {"\"plain\"", "plain", 5},
        {"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t", 8},
        {"\"\\u0000x\"", "\0x", 2},
        {"\"\\u00e9\xc3\xa9\"", "\xc3\xa9\xc3\xa9", 4},
        {"\"\\u20AC\"", "\xe2\x82\xac", 3},
        {"\"\\ud83d\\ude00!\"", "\xf0\x9f\x98\x80!", 5},
    };
    struct sb_op op;
    struct sb_jsonops_error err;
    uint8_t bytes[256];
    char json[512], out[1024];

    for (size_t i = 0; i < sizeof(json_bodies) / sizeof(json_bodies[0]); i++) {
        snprintf(json, sizeof(json), "{\"type\":\"send\",\"id\":\"b\",\"to\":\"x\",\"body\":%s}",
                 json_bodies[i].literal);
        CHECK_INT(decode(json, 0, &op, &err), 0);
        CHECK_INT(sb_ops_body_len(&op.u.send.body), json_bodies[i].len);
        memset(bytes, 0xAA, sizeof(bytes));
        sb_ops_body_copy(&op.u.send.body, bytes);
        CHECK_MEM(bytes, json_bodies[i].bytes, json_bodies[i].len);
        CHECK_INT(bytes[json_bodies[i].len], 0xAA); /* nothing written past it */
    }

    /* Bytes → JSON (body or body_b64, whichever the encoder picks) → bytes. */
    static const struct {
        const char *bytes;
        size_t len;
        const char *key;
    } raw[] = {
        {"", 0, "\"body\":"},
        {"ok \"quoted\"\n\x01", 14, "\"body\":"},
        {"\xe2\x80\xa8 line", 8, "\"body\":"},
        {"\x00\xff\x10\x80", 4, "\"body_b64\":"},
        {"\xc3", 1, "\"body_b64\":"},
        {"\xed\xa0\x80", 3, "\"body_b64\":"}, /* a surrogate is no UTF-8 */
        {"ab\xf4\x90\x80\x80", 6, "\"body_b64\":"},
    };
    for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++) {
        memset(&op, 0, sizeof(op));
        op.type = SB_OP_MESSAGE;
        op.json_id = S("rt");
        op.u.message.conv = S("g:1");
        op.u.message.from = S("a");
        op.u.message.body = (struct sb_op_body){SB_OP_BODY_BYTES, {raw[i].bytes, raw[i].len}};
        ssize_t n = sb_jsonops_encode(&op, out, sizeof(out));
        CHECK(n > 0);
        if (n <= 0) {
            continue;
        }
        out[n] = '\0';
        CHECK(strstr(out, raw[i].key) != NULL);
        /* Read back as the send a client would make of it (its "id", "conv" and body). */
        struct sb_op back;
        CHECK_INT(sb_jsonops_decode(out, (size_t)n, SB_OP_SEND, 0, toks, &back, &err), 0);
        CHECK_INT(sb_ops_body_len(&back.u.send.body), raw[i].len);
        sb_ops_body_copy(&back.u.send.body, bytes);
        CHECK_MEM(bytes, raw[i].bytes, raw[i].len);
    }
}

static void test_base64(void)
{
    static const struct {
        const char *text;
        bool valid;
        const char *bytes;
        size_t len;
    } cases[] = {
        {"", true, "", 0},
        {"AA==", true, "\0", 1},
        {"AAA=", true, "\0\0", 2},
        {"AAAA", true, "\0\0\0", 3},
        {"Zm9vYmFy", true, "foobar", 6},
        {"Zm9vYg==", true, "foob", 4},
        {"Zm9vYmE=", true, "fooba", 5},
        {"+/+/", true, "\xfb\xff\xbf", 3},
        {"AP8QgA==", true, "\x00\xff\x10\x80", 4},
        {"AB==", false, NULL, 0}, /* padding bits set */
        {"AAB=", false, NULL, 0}, /* padding bits set */
        {"A===", false, NULL, 0}, /* three pads */
        {"====", false, NULL, 0}, /* nothing but padding */
        {"AA=A", false, NULL, 0}, /* padding inside */
        {"AA==AAAA", false, NULL, 0},
        {"AAA", false, NULL, 0},  /* not a multiple of 4 */
        {"AA-_", false, NULL, 0}, /* the URL alphabet is not this one */
        {"AA A", false, NULL, 0}, /* no whitespace */
        {"AA\nA", false, NULL, 0},
    };
    uint8_t bytes[16];
    char text[32];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = 99;
        bool valid = sb_base64_valid(cases[i].text, strlen(cases[i].text), &n);
        if (valid != cases[i].valid) {
            fprintf(stderr, "base64 \"%s\"\n", cases[i].text);
        }
        CHECK_INT(valid, cases[i].valid);
        if (!cases[i].valid) {
            continue;
        }
        CHECK_INT(n, cases[i].len);
        CHECK_INT(sb_base64_decode(cases[i].text, strlen(cases[i].text), bytes), cases[i].len);
        CHECK_MEM(bytes, cases[i].bytes, cases[i].len);
        CHECK_INT(sb_base64_len(cases[i].len), strlen(cases[i].text));
        sb_base64_encode((const uint8_t *)cases[i].bytes, cases[i].len, text);
        CHECK_MEM(text, cases[i].text, strlen(cases[i].text));
    }
    /* Every byte string of up to 2 bytes: encode, valid, decode back. */
    for (unsigned v = 0; v < 65536 + 256 + 1; v++) {
        uint8_t in[2];
        size_t len = v == 0 ? 0 : v <= 256 ? 1 : 2;
        unsigned x = v == 0 ? 0 : v <= 256 ? v - 1 : v - 257;
        in[0] = (uint8_t)(len == 2 ? x >> 8 : x);
        in[1] = (uint8_t)x;
        sb_base64_encode(in, len, text);
        size_t n;
        if (!sb_base64_valid(text, sb_base64_len(len), &n) || n != len ||
            sb_base64_decode(text, sb_base64_len(len), bytes) != len ||
            memcmp(bytes, in, len) != 0) {
            CHECK_INT(v, -1);
            break;
        }
    }
    /* The other forms of a body measure and copy as their bytes. */
    struct sb_op_body b = {SB_OP_BODY_BASE64, S("Zm9vYg==")};
    CHECK_INT(sb_ops_body_len(&b), 4);
    sb_ops_body_copy(&b, bytes);
    CHECK_MEM(bytes, "foob", 4);
    /* Text that is not canonical base64 (decoders never make it) is no bytes, and none copied. */
    b = (struct sb_op_body){SB_OP_BODY_BASE64, S("AB==")};
    CHECK_INT(sb_ops_body_len(&b), 0);
    memset(bytes, 0xAA, sizeof(bytes));
    sb_ops_body_copy(&b, bytes);
    CHECK_INT(bytes[0], 0xAA);
    b = (struct sb_op_body){SB_OP_BODY_BYTES, S("raw\0b")};
    CHECK_INT(sb_ops_body_len(&b), 5);
    sb_ops_body_copy(&b, bytes);
    CHECK_MEM(bytes, "raw\0b", 5);
}

int main(void)
{
    test_twins();
    test_server_twins();
    test_decode_fields();
    test_decode_rest();
    test_refusals();
    test_decode_limits();
    test_iterators();
    test_encode();
    test_bound_extremes();
    test_bodies();
    test_base64();
    free(vector_text);
    return check_done();
}
