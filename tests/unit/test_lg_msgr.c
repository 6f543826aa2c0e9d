/*
 * loadgen's side of the JSON messaging protocol: body stamps round-trip, requests are valid JSON
 * that the server's tokenizer reads back, deliveries are recognised both on the fast path and
 * when the body is not the last member, system messages and foreign bodies are not counted, and
 * the streaming WebSocket parser hands over whole messages through a gather buffer however the
 * bytes are split.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "loadgen/lg_msgr.h"
#include "loadgen/lg_ws.h"
#include "proto/json.h"

static bool parses(const char *p, size_t len)
{
    struct sb_json_tok toks[4096];
    const struct sb_json_limits lim = {4096, 8};
    return sb_json_parse(p, len, &lim, toks) > 0;
}

static void test_body(void)
{
    char body[LG_MSGR_BODY_MAX];
    struct lg_msgr_stamp in = {.t = 0x0123456789abcdefULL, .n = 42, .from = 7}, out;
    lg_msgr_body(body, 64, &in);
    CHECK(memchr(body, '"', 64) == NULL && memchr(body, '\\', 64) == NULL);
    CHECK_INT(lg_msgr_body_parse(body, 64, &out), 0);
    CHECK(out.t == in.t && out.n == in.n && out.from == in.from);
    body[20] = 'x';
    CHECK_INT(lg_msgr_body_parse(body, 64, &out), -EBADMSG);
    CHECK_INT(lg_msgr_body_parse(body, 10, &out), -EBADMSG);
}

static void test_requests(void)
{
    char buf[8192], body[64];
    struct lg_msgr_stamp st = {.t = 99, .n = 1, .from = 3};
    lg_msgr_body(body, sizeof(body), &st);
    ssize_t n = lg_msgr_send(buf, sizeof(buf), "abcd0123", 5, 0xfeed, true, "lg4", body, 64);
    CHECK(n > 0 && parses(buf, (size_t)n));
    CHECK(memmem(buf, (size_t)n, "\"to\":\"lg4\"", 10) != NULL);
    CHECK_INT(lg_msgr_send(buf, 40, "abcd0123", 5, 1, true, "lg4", body, 64), -ENOSPC);
    n = lg_msgr_conv_create(buf, sizeof(buf), "g3", NULL, 10, 5, 10);
    CHECK(n > 0 && parses(buf, (size_t)n));
    CHECK(memmem(buf, (size_t)n, "[\"lg11\",\"lg12\",\"lg13\",\"lg14\"]", 29) != NULL);
    CHECK_INT(lg_msgr_conv_create(buf, 60, "g3", NULL, 0, 100, 0), -ENOSPC);
    n = lg_msgr_conv_create(buf, sizeof(buf), "g3", "g:0011223344556677", 20, 2, 0);
    CHECK(n > 0 && parses(buf, (size_t)n));
    CHECK_STR(buf, "{\"type\":\"conv_add\",\"id\":\"g3\",\"conv\":\"g:0011223344556677\","
                   "\"users\":[\"lg20\",\"lg21\"]}");
    n = lg_msgr_path(buf, sizeof(buf), "/ws", "a.b.c");
    CHECK_STR(buf, "/ws?token=a.b.c&device=lg");
    n = lg_msgr_path(buf, sizeof(buf), "/ws?x=1", "t");
    CHECK_STR(buf, "/ws?x=1&token=t&device=lg");
}

static void test_reading(void)
{
    char body[64], msg[512];
    struct lg_msgr_stamp st = {.t = 1234567, .n = 9, .from = 12}, out;
    lg_msgr_body(body, sizeof(body), &st);
    int n = snprintf(msg, sizeof(msg),
                     "{\"type\":\"message\",\"conv\":\"g:0011223344556677\",\"seq\":4,\"msg_id\":"
                     "\"5417\",\"from\":\"lg12\",\"device\":\"lg\",\"ts\":17,\"body\":\"%.64s\"}",
                     body);
    CHECK_INT(lg_msgr_kind(msg, (size_t)n), LG_MK_MESSAGE);
    CHECK_INT(lg_msgr_delivery(msg, (size_t)n, 64, &out), 1);
    CHECK(out.t == st.t && out.n == st.n && out.from == 12);
    /* Another field order: found through the tokenizer. */
    n = snprintf(msg, sizeof(msg), "{\"body\":\"%.64s\",\"type\":\"message\",\"seq\":1}", body);
    CHECK_INT(lg_msgr_kind(msg, (size_t)n), LG_MK_MESSAGE);
    CHECK_INT(lg_msgr_delivery(msg, (size_t)n, 64, &out), 1);
    /* A system message or a foreign body is not a delivery of ours, and not an error. */
    n = snprintf(msg, sizeof(msg),
                 "{\"type\":\"message\",\"conv\":\"g:1\",\"seq\":1,\"system\":\"member added\"}");
    CHECK_INT(lg_msgr_delivery(msg, (size_t)n, 64, &out), 0);
    n = snprintf(msg, sizeof(msg), "{\"type\":\"message\",\"body\":\"hello\"}");
    CHECK_INT(lg_msgr_delivery(msg, (size_t)n, 64, &out), 0);
    n = snprintf(msg, sizeof(msg), "{\"type\":\"ack\",\"id\":\"x\"}");
    CHECK_INT(lg_msgr_delivery(msg, (size_t)n, 64, &out), -EBADMSG);
    CHECK_INT(lg_msgr_kind("{\"type\":\"welcome\"}", 18), LG_MK_WELCOME);
    CHECK_INT(lg_msgr_kind("{\"type\":\"error\"}", 16), LG_MK_ERROR);
    CHECK_INT(lg_msgr_kind("{\"id\":1,\"type\":\"conv\"}", 22), LG_MK_CONV);
    CHECK_INT(lg_msgr_kind("[]", 2), LG_MK_OTHER);

    uint64_t t = 0;
    n = snprintf(msg, sizeof(msg),
                 "{\"type\":\"ack\",\"id\":\"abcd0123.5.feed\",\"msg_id\":\"1\",\"seq\":1}");
    CHECK_INT(lg_msgr_ack(msg, (size_t)n, "abcd0123", &t), 0);
    CHECK_INT(t, 0xfeed);
    CHECK_INT(lg_msgr_ack(msg, (size_t)n, "abcd0124", &t), -EBADMSG);

    char id[16], conv[64];
    /* A conv answer cut off inside its member list still names the group. */
    n = snprintf(
        msg, sizeof(msg),
        "{\"type\":\"conv\",\"id\":\"g7\",\"conv\":\"g:00112233aabbccdd\",\"members\":[\"lg1");
    CHECK_INT(lg_msgr_conv(msg, (size_t)n, id, sizeof(id), conv, sizeof(conv)), 0);
    CHECK_STR(id, "g7");
    CHECK_STR(conv, "g:00112233aabbccdd");
    CHECK_INT(lg_msgr_conv("{\"type\":\"conv\"}", 15, id, sizeof(id), conv, sizeof(conv)),
              -EBADMSG);
    char text[64];
    n = snprintf(msg, sizeof(msg),
                 "{\"type\":\"error\",\"id\":\"g1\",\"code\":\"forbidden\",\"message\":\"no\"}");
    lg_msgr_error_text(msg, (size_t)n, text, sizeof(text));
    CHECK_STR(text, "forbidden: no");
}

struct got {
    int count;
    size_t len, head_len;
    char text[600];
};

static int on_msg(void *ctx, const struct lg_ws_msg *m)
{
    struct got *g = ctx;
    g->count++;
    g->len = (size_t)m->len;
    g->head_len = m->head_len;
    memcpy(g->text, m->head, m->head_len < sizeof(g->text) ? m->head_len : sizeof(g->text));
    return 0;
}

/* A 300-byte text frame from the server, fed in every split; the gather keeps it whole. */
/* The client ids of binary SENDs: written and read back, someone else's refused. */
static void test_client_id(void)
{
    char id[LG_MSGR_CLIENT_ID_MAX];
    uint64_t t = 0;
    ssize_t n = lg_msgr_client_id(id, sizeof(id), "abcd0123", 0x2a, 0xffffffffffffffffULL);
    CHECK_INT(n, (ssize_t)strlen(id));
    CHECK_STR(id, "abcd0123.2a.ffffffffffffffff");
    CHECK_INT(lg_msgr_client_id_time(id, (size_t)n, "abcd0123", &t), 0);
    CHECK(t == 0xffffffffffffffffULL);
    CHECK_INT(lg_msgr_client_id_time(id, (size_t)n, "abcd0124", &t), -EBADMSG);
    CHECK_INT(lg_msgr_client_id_time(id, 8, "abcd0123", &t), -EBADMSG);
    CHECK_INT(lg_msgr_client_id_time("abcd0123.2a.", 12, "abcd0123", &t), -EBADMSG);
    CHECK_INT(lg_msgr_client_id_time("abcd0123.2a.xy", 14, "abcd0123", &t), -EBADMSG);
    CHECK_INT(lg_msgr_client_id(id, 10, "abcd0123", 1, 2), -ENOSPC);
}

static void test_gather(void)
{
    uint8_t wire[400], payload[300];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)('a' + i % 26);
    wire[0] = 0x81;
    wire[1] = 126;
    wire[2] = 300 >> 8;
    wire[3] = 300 & 255;
    memcpy(wire + 4, payload, 300);
    size_t total = 304;
    uint8_t gather[256];
    for (size_t split = 1; split < total; split += 7) {
        struct lg_ws_rx rx = {.gather = gather, .gather_cap = sizeof(gather)};
        struct got g = {0};
        CHECK_INT(lg_ws_parse(&rx, wire, split, on_msg, &g), 0);
        CHECK_INT(lg_ws_parse(&rx, wire + split, total - split, on_msg, &g), 0);
        CHECK_INT(g.count, 1);
        CHECK_INT(g.len, 300);
        CHECK_INT(g.head_len, sizeof(gather)); /* capped at the gather's size */
        CHECK_MEM(g.text, payload, sizeof(gather));
    }
    struct lg_ws_rx rx = {0};
    struct got g = {0};
    CHECK_INT(lg_ws_parse(&rx, wire, total, on_msg, &g), 0);
    CHECK_INT(g.head_len, LG_WS_HEAD); /* without a gather: the head only */
}

int main(void)
{
    test_body();
    test_requests();
    test_client_id();
    test_reading();
    test_gather();
    return check_done();
}
