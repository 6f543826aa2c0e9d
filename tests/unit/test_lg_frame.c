/*
 * loadgen's client side of RFC 6455, checked against the server's codecs: masked frames decode
 * with the server's options and unmask back to the payload, the upgrade request parses as a
 * valid upgrade, the 101 check accepts exactly the right key, and the streaming parser survives
 * any split of the server's bytes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "loadgen/lg_rand.h"
#include "loadgen/lg_ws.h"
#include "proto/http.h"
#include "proto/ws.h"

static const struct sb_ws_decode_opts server_opts = {.require_mask = true};

static void check_frame(uint8_t opcode, size_t len, struct lg_rand *r)
{
    uint8_t *payload = malloc(len + 1), *wire = malloc(lg_ws_frame_len(len));
    lg_rand_fill(r, payload, len);
    uint32_t mask = (uint32_t)lg_rand_next(r) | 1; /* nonzero, so masking shows */
    size_t n = lg_ws_frame(wire, opcode, payload, len, mask);
    CHECK_INT(n, lg_ws_frame_len(len));
    struct sb_ws_frame f;
    ssize_t h = sb_ws_decode_header(wire, n, &server_opts, &f);
    CHECK(h > 0);
    CHECK(f.fin);
    CHECK(f.masked);
    CHECK_INT(f.opcode, opcode);
    CHECK_INT(f.payload_len, len);
    CHECK_INT(f.rsv, 0);
    CHECK_MEM(f.mask, &mask, 4);
    CHECK_INT((size_t)h + len, n);
    sb_ws_unmask(wire + h, len, f.mask, 0);
    CHECK_MEM(wire + h, payload, len);
    free(payload);
    free(wire);
}

static void test_frames(void)
{
    struct lg_rand r = {42};
    static const size_t sizes[] = {0, 1, 16, 125, 126, 127, 1000, 65535, 65536, 100000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        check_frame(SB_WS_BINARY, sizes[i], &r);
    check_frame(SB_WS_TEXT, 5, &r);
    check_frame(SB_WS_PONG, 125, &r);
    check_frame(SB_WS_CLOSE, 2, &r);
}

static void test_fresh_masks(void)
{
    /* Two frames of the same payload from one generator must not share a key. */
    struct lg_rand r;
    lg_rand_seed(&r);
    uint8_t a[32], b[32], payload[16] = {0};
    lg_ws_frame(a, SB_WS_BINARY, payload, sizeof(payload), (uint32_t)lg_rand_next(&r));
    lg_ws_frame(b, SB_WS_BINARY, payload, sizeof(payload), (uint32_t)lg_rand_next(&r));
    CHECK(memcmp(a + 2, b + 2, 4) != 0);
}

static void test_request(void)
{
    char req[512], key[LG_WS_KEY_LEN + 1];
    uint8_t nonce[16];
    for (int i = 0; i < 16; i++)
        nonce[i] = (uint8_t)(i * 17 + 3);
    ssize_t n = lg_ws_request(req, sizeof(req), "127.0.0.1:8080", "/echo?x=1", NULL, nonce, key);
    CHECK(n > 0);
    struct sb_http_request hr;
    memset(&hr, 0, sizeof(hr));
    CHECK_INT(sb_http_parse_request(req, (size_t)n, NULL, &hr), n);
    CHECK(sb_slice_eq(hr.method, "GET"));
    CHECK(sb_slice_eq(hr.path, "/echo"));
    CHECK(sb_slice_eq(hr.query, "x=1"));
    CHECK_INT(hr.minor_version, 1);
    const struct sb_http_header *up = sb_http_find_header(&hr, "upgrade");
    const struct sb_http_header *conn = sb_http_find_header(&hr, "connection");
    const struct sb_http_header *ver = sb_http_find_header(&hr, "sec-websocket-version");
    const struct sb_http_header *k = sb_http_find_header(&hr, "sec-websocket-key");
    const struct sb_http_header *host = sb_http_find_header(&hr, "host");
    CHECK(up && sb_http_has_token(up->value, "websocket"));
    CHECK(conn && sb_http_has_token(conn->value, "upgrade"));
    CHECK(ver && sb_slice_eq(ver->value, "13"));
    CHECK(host && sb_slice_eq(host->value, "127.0.0.1:8080"));
    CHECK(k && sb_slice_eq(k->value, key));
    CHECK_INT(strlen(key), 24);
    char accept[SB_WS_ACCEPT_LEN + 1];
    CHECK_INT(sb_ws_accept_key(k->value.base, k->value.len, accept), 0);
    CHECK(sb_http_find_header(&hr, "sec-websocket-protocol") == NULL);
    CHECK_INT(lg_ws_request(req, 40, "h:1", "/", NULL, nonce, key), -ENOSPC);

    /* ws-bin offers the binary protocol's subprotocol. */
    n = lg_ws_request(req, sizeof(req), "h:1", "/ws", "switchboard.v1", nonce, key);
    CHECK(n > 0);
    memset(&hr, 0, sizeof(hr));
    CHECK_INT(sb_http_parse_request(req, (size_t)n, NULL, &hr), n);
    const struct sb_http_header *proto = sb_http_find_header(&hr, "sec-websocket-protocol");
    CHECK(proto && sb_slice_eq(proto->value, "switchboard.v1"));
}

static int response(char *out, size_t cap, const char *status, const char *accept)
{
    return snprintf(out, cap,
                    "HTTP/1.1 %s\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
                    "Sec-WebSocket-Accept: %s\r\n\r\n",
                    status, accept);
}

static void test_response(void)
{
    /* RFC 6455 section 1.3's example key and accept value. */
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    const char *good = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    char buf[512];
    int status = 0;
    int n = response(buf, sizeof(buf), "101 Switching Protocols", good);
    CHECK_INT(lg_ws_check_response(buf, (size_t)n, key, NULL, &status), n);
    CHECK_INT(status, 101);
    /* Frames right behind the head are not part of it. */
    buf[n] = (char)0x82;
    buf[n + 1] = 0;
    CHECK_INT(lg_ws_check_response(buf, (size_t)n + 2, key, NULL, &status), n);
    for (int cut = 0; cut < n; cut++)
        if (lg_ws_check_response(buf, (size_t)cut, key, NULL, &status) != -EAGAIN) {
            CHECK_FAIL_("cut at %d not -EAGAIN", cut);
            break;
        }
    n = response(buf, sizeof(buf), "101 Switching Protocols", "s3pPLMBiTxaQ9kYGzzhZRbK+xOX=");
    CHECK_INT(lg_ws_check_response(buf, (size_t)n, key, NULL, &status), -EBADMSG);
    n = response(buf, sizeof(buf), "404 Not Found", good);
    CHECK_INT(lg_ws_check_response(buf, (size_t)n, key, NULL, &status), -EPROTO);
    CHECK_INT(status, 404);
    n = snprintf(buf, sizeof(buf), "HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: %s\r\n\r\n", good);
    CHECK_INT(lg_ws_check_response(buf, (size_t)n, key, NULL, &status), -EBADMSG);
    n = snprintf(buf, sizeof(buf), "garbage\r\n\r\n");
    CHECK_INT(lg_ws_check_response(buf, (size_t)n, key, NULL, &status), -EBADMSG);
    /* A subprotocol nobody offered is a failure (RFC 6455 4.1). */
    n = snprintf(buf, sizeof(buf),
                 "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: switchboard.v1\r\n\r\n",
                 good);
    CHECK_INT(lg_ws_check_response(buf, (size_t)n, key, NULL, &status), -EBADMSG);
    CHECK_INT(lg_ws_check_response(buf, (size_t)n, key, "switchboard.v1", &status), n);
    CHECK_INT(lg_ws_check_response(buf, (size_t)n, key, "switchboard.v2", &status), -EBADMSG);
    /* An offered subprotocol the server did not take is a failure too. */
    n = response(buf, sizeof(buf), "101 Switching Protocols", good);
    CHECK_INT(lg_ws_check_response(buf, (size_t)n, key, "switchboard.v1", &status), -EBADMSG);
    static char big[LG_WS_RESPONSE_MAX + 10];
    memset(big, 'a', sizeof(big));
    CHECK_INT(lg_ws_check_response(big, sizeof(big), key, NULL, &status), -EMSGSIZE);
}

/* Collects what the parser delivers. */
struct seen {
    int count;
    uint8_t opcode[16];
    uint64_t len[16];
    uint8_t head[16][LG_WS_HEAD];
    size_t head_len[16];
    uint8_t ctrl[SB_WS_MAX_CONTROL];
};

static int collect(void *ctx, const struct lg_ws_msg *m)
{
    struct seen *s = ctx;
    if (s->count == 16)
        return -ENOSPC;
    s->opcode[s->count] = m->opcode;
    s->len[s->count] = m->len;
    s->head_len[s->count] = m->head_len;
    memcpy(s->head[s->count], m->head, m->head_len < LG_WS_HEAD ? m->head_len : LG_WS_HEAD);
    if (m->opcode >= SB_WS_CLOSE)
        memcpy(s->ctrl, m->head, m->head_len);
    s->count++;
    return 0;
}

static size_t server_frame(uint8_t *out, bool fin, uint8_t opcode, const uint8_t *p, size_t len)
{
    size_t h = sb_ws_encode_header(out, fin, opcode, len, NULL);
    memcpy(out + h, p, len);
    return h + len;
}

static void test_parser(void)
{
    static uint8_t wire[200000], big[70000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)i;
    size_t n = 0;
    n += server_frame(wire + n, true, SB_WS_BINARY, big, 16);
    n += server_frame(wire + n, true, SB_WS_PING, (const uint8_t *)"hello", 5);
    n += server_frame(wire + n, true, SB_WS_TEXT, big, 0);
    n += server_frame(wire + n, false, SB_WS_BINARY, big, 3); /* a fragmented message ... */
    n += server_frame(wire + n, true, SB_WS_PONG, big, 0);    /* ... a control frame inside ... */
    n += server_frame(wire + n, true, SB_WS_CONT, big + 3, 69997); /* ... and its end */
    n += server_frame(wire + n, true, SB_WS_CLOSE, (const uint8_t *)"\x03\xe8", 2);

    /* Whole, byte by byte, and in odd chunks: the same messages each time. */
    static const size_t steps[] = {200000, 1, 7, 13, 4096};
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        struct lg_ws_rx rx;
        memset(&rx, 0, sizeof(rx));
        struct seen seen;
        memset(&seen, 0, sizeof(seen));
        int err = 0;
        for (size_t off = 0; off < n && !err; off += steps[s]) {
            size_t len = n - off < steps[s] ? n - off : steps[s];
            err = lg_ws_parse(&rx, wire + off, len, collect, &seen);
        }
        CHECK_INT(err, 0);
        CHECK_INT(seen.count, 6);
        CHECK_INT(seen.opcode[0], SB_WS_BINARY);
        CHECK_INT(seen.len[0], 16);
        CHECK_MEM(seen.head[0], big, 16);
        CHECK_INT(seen.opcode[1], SB_WS_PING);
        CHECK_INT(seen.len[1], 5);
        CHECK_MEM(seen.head[1], "hello", 5);
        CHECK_INT(seen.opcode[2], SB_WS_TEXT);
        CHECK_INT(seen.len[2], 0);
        CHECK_INT(seen.opcode[3], SB_WS_PONG);
        CHECK_INT(seen.opcode[4], SB_WS_BINARY);
        CHECK_INT(seen.len[4], 70000);
        CHECK_INT(seen.head_len[4], LG_WS_HEAD);
        CHECK_MEM(seen.head[4], big, LG_WS_HEAD);
        CHECK_INT(seen.opcode[5], SB_WS_CLOSE);
        CHECK_MEM(seen.ctrl, "\x03\xe8", 2);
    }
}

/* Stream mode: the payload bytes of data messages, in order, in as many pieces as arrived. */
struct streamed {
    uint8_t bytes[80000];
    size_t len;
    int pieces;
    int texts;
};

static int stream_in(void *ctx, uint8_t opcode, const uint8_t *data, size_t len)
{
    struct streamed *st = ((struct streamed **)ctx)[1];
    if (len == 0 || st->len + len > sizeof(st->bytes))
        return -ENOSPC;
    memcpy(st->bytes + st->len, data, len);
    st->len += len;
    st->pieces++;
    st->texts += opcode == SB_WS_TEXT;
    return 0;
}

static int collect2(void *ctx, const struct lg_ws_msg *m)
{
    return collect(((struct seen **)ctx)[0], m);
}

static void test_parser_stream(void)
{
    static uint8_t wire[100000], big[70000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    size_t n = 0;
    n += server_frame(wire + n, true, SB_WS_BINARY, big, 100);
    n += server_frame(wire + n, false, SB_WS_BINARY, big + 100, 1000);
    n += server_frame(wire + n, true, SB_WS_PING, (const uint8_t *)"p", 1);
    n += server_frame(wire + n, true, SB_WS_CONT, big + 1100, 60000);
    n += server_frame(wire + n, true, SB_WS_TEXT, big + 61100, 5);
    static const size_t steps[] = {100000, 1, 3, 4096};
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        static struct streamed st;
        struct seen seen;
        memset(&st, 0, sizeof(st));
        memset(&seen, 0, sizeof(seen));
        void *ctx[2] = {&seen, &st};
        struct lg_ws_rx rx;
        memset(&rx, 0, sizeof(rx));
        rx.stream = stream_in;
        int err = 0;
        for (size_t off = 0; off < n && !err; off += steps[s]) {
            size_t len = n - off < steps[s] ? n - off : steps[s];
            err = lg_ws_parse(&rx, wire + off, len, collect2, ctx);
        }
        CHECK_INT(err, 0);
        CHECK_INT(st.len, 61105);
        CHECK_MEM(st.bytes, big, 61105);
        CHECK_INT(st.texts > 0, 1);
        CHECK(steps[s] != 1 || st.pieces == 61105);
        /* The messages are still delivered, after their bytes. */
        CHECK_INT(seen.count, 4);
        CHECK_INT(seen.opcode[0], SB_WS_BINARY);
        CHECK_INT(seen.len[0], 100);
        CHECK_INT(seen.opcode[1], SB_WS_PING);
        CHECK_INT(seen.opcode[2], SB_WS_BINARY);
        CHECK_INT(seen.len[2], 61000);
        CHECK_INT(seen.opcode[3], SB_WS_TEXT);
    }
}

static void test_parser_errors(void)
{
    uint8_t wire[64];
    struct lg_ws_rx rx;
    struct seen seen;
    /* A masked frame from the server. */
    memset(&rx, 0, sizeof(rx));
    size_t n = lg_ws_frame(wire, SB_WS_BINARY, "abc", 3, 0x01020304);
    CHECK_INT(lg_ws_parse(&rx, wire, n, collect, &seen), -EPROTO);
    /* A continuation with no message. */
    memset(&rx, 0, sizeof(rx));
    n = server_frame(wire, true, SB_WS_CONT, (const uint8_t *)"x", 1);
    CHECK_INT(lg_ws_parse(&rx, wire, n, collect, &seen), -EPROTO);
    /* A new data frame inside a fragmented message. */
    memset(&rx, 0, sizeof(rx));
    n = server_frame(wire, false, SB_WS_TEXT, (const uint8_t *)"x", 1);
    n += server_frame(wire + n, true, SB_WS_TEXT, (const uint8_t *)"y", 1);
    CHECK_INT(lg_ws_parse(&rx, wire, n, collect, &seen), -EPROTO);
    /* Reserved bits and a reserved opcode. */
    memset(&rx, 0, sizeof(rx));
    uint8_t rsv[] = {0xC2, 0x00};
    CHECK_INT(lg_ws_parse(&rx, rsv, 2, collect, &seen), -EPROTO);
    memset(&rx, 0, sizeof(rx));
    uint8_t op3[] = {0x83, 0x00};
    CHECK_INT(lg_ws_parse(&rx, op3, 2, collect, &seen), -EPROTO);
    /* The callback's error stops the parse. */
    memset(&rx, 0, sizeof(rx));
    memset(&seen, 0, sizeof(seen));
    seen.count = 16;
    n = server_frame(wire, true, SB_WS_BINARY, (const uint8_t *)"x", 1);
    CHECK_INT(lg_ws_parse(&rx, wire, n, collect, &seen), -ENOSPC);
}

int main(void)
{
    test_frames();
    test_fresh_masks();
    test_request();
    test_response();
    test_parser();
    test_parser_stream();
    test_parser_errors();
    return check_done();
}
