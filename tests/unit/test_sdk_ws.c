/* The SDK's WebSocket client side: SHA-1, base64, the upgrade and its answer, frame headers. */
#include <errno.h>

#include "check.h"
#include "sdk_ws.h"

static void hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    }
}

static void test_sha1(void)
{
    /* FIPS 180 examples, plus lengths around the one- and two-block padding edges. */
    uint8_t d[20];
    char h[41];
    sb__ws_sha1("abc", 3, d);
    hex(d, 20, h);
    CHECK_STR(h, "a9993e364706816aba3e25717850c26c9cd0d89d");
    sb__ws_sha1("", 0, d);
    hex(d, 20, h);
    CHECK_STR(h, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sb__ws_sha1(m, strlen(m), d);
    hex(d, 20, h);
    CHECK_STR(h, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    char a[1000];
    memset(a, 'a', sizeof(a));
    sb__ws_sha1(a, 1000, d);
    hex(d, 20, h);
    CHECK_STR(h, "291e9a6c66994949b57ba5e650361e98fc36b1ba");
    sb__ws_sha1(a, 64, d);
    hex(d, 20, h);
    CHECK_STR(h, "0098ba824b5c16427bd7a1122a5a442a25ec644d");
}

static void test_base64_accept(void)
{
    char out[64];
    CHECK_INT(sb__ws_base64((const uint8_t *)"f", 1, out), 4);
    CHECK_STR(out, "Zg==");
    sb__ws_base64((const uint8_t *)"fo", 2, out);
    CHECK_STR(out, "Zm8=");
    sb__ws_base64((const uint8_t *)"foobar", 6, out);
    CHECK_STR(out, "Zm9vYmFy");
    /* RFC 6455 section 1.3. */
    char acc[SB__WS_ACCEPT_LEN + 1];
    sb__ws_accept("dGhlIHNhbXBsZSBub25jZQ==", acc);
    CHECK_STR(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static const char *key = "dGhlIHNhbXBsZSBub25jZQ==";

static ssize_t answer(const char *head)
{
    return sb__ws_response(head, strlen(head), key, "switchboard.v1");
}

static void test_request_response(void)
{
    char req[512];
    ssize_t n = sb__ws_request(req, sizeof(req), "h:1", "/ws", key, "switchboard.v1", "T");
    CHECK(n > 0);
    CHECK(strstr(req, "GET /ws HTTP/1.1\r\n") == req);
    CHECK(strstr(req, "Authorization: Bearer T\r\n") != NULL);
    CHECK(strstr(req, "Sec-WebSocket-Protocol: switchboard.v1\r\n") != NULL);
    CHECK(strstr(req, "\r\n\r\n") == req + n - 4);
    CHECK_INT(sb__ws_request(req, 40, "h:1", "/ws", key, "switchboard.v1", "T"), -ENOSPC);

    const char *ok = "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\n"
                     "Connection: keep-alive, Upgrade\r\n"
                     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                     "Sec-WebSocket-Protocol: switchboard.v1\r\n\r\n";
    CHECK_INT(answer(ok), (ssize_t)strlen(ok));
    char partial[300];
    snprintf(partial, sizeof(partial), "%.*s", (int)strlen(ok) - 1, ok);
    CHECK_INT(answer(partial), -EAGAIN);
    CHECK_INT(answer("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"), -EACCES);
    CHECK_INT(answer("HTTP/1.1 404 Not Found\r\n\r\n"), -EPROTO);
    /* Each required header missing or wrong. */
    CHECK_INT(answer("HTTP/1.1 101 x\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                     "Sec-WebSocket-Protocol: switchboard.v1\r\n\r\n"),
              -EPROTO);
    CHECK_INT(answer("HTTP/1.1 101 x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
              -EPROTO);
    CHECK_INT(answer("HTTP/1.1 101 x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: AAAALMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                     "Sec-WebSocket-Protocol: switchboard.v1\r\n\r\n"),
              -EPROTO);
    CHECK_INT(answer("HTTP/1.1 101 x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                     "Sec-WebSocket-Protocol: chat\r\n\r\n"),
              -EPROTO);
    /* A head that never ends is refused once it passes the limit. */
    static char huge[SB__WS_HEAD_MAX + 10];
    memset(huge, 'a', sizeof(huge));
    CHECK_INT(sb__ws_response(huge, sizeof(huge), key, "switchboard.v1"), -EPROTO);
    CHECK_INT(sb__ws_response(huge, 100, key, "switchboard.v1"), -EAGAIN);
}

static void test_frames(void)
{
    static const uint8_t mask[4] = {1, 2, 3, 4};
    uint8_t h[SB__WS_MAX_HEADER];
    CHECK_INT(sb__ws_encode(h, SB__WS_BINARY, 5, mask), 6);
    CHECK_INT(h[0], 0x82);
    CHECK_INT(h[1], 0x85);
    CHECK_INT(sb__ws_encode(h, SB__WS_BINARY, 300, mask), 8);
    CHECK_INT(h[1], 0xFE);
    CHECK_INT(sb__ws_encode(h, SB__WS_BINARY, 70000, mask), 14);
    CHECK_INT(h[1], 0xFF);
    uint8_t data[5] = {1, 2, 3, 4, 5};
    sb__ws_mask(data, 5, mask);
    CHECK_INT(data[0], 0);
    CHECK_INT(data[4], 4);

    struct sb__ws_frame f;
    const uint8_t small[] = {0x82, 0x03, 'a', 'b', 'c'};
    CHECK_INT(sb__ws_decode(small, 1, 0, &f), -EAGAIN);
    CHECK_INT(sb__ws_decode(small, sizeof(small), 0, &f), 2);
    CHECK(f.fin && f.opcode == SB__WS_BINARY && f.payload_len == 3);
    const uint8_t mid[] = {0x02, 0x7E, 0x01, 0x00};
    CHECK_INT(sb__ws_decode(mid, 3, 0, &f), -EAGAIN);
    CHECK_INT(sb__ws_decode(mid, 4, 0, &f), 4);
    CHECK(!f.fin && f.payload_len == 256);
    CHECK_INT(sb__ws_decode(mid, 4, 100, &f), -EMSGSIZE);
    const uint8_t nonmin[] = {0x82, 0x7E, 0x00, 0x10};
    CHECK_INT(sb__ws_decode(nonmin, 4, 0, &f), -EPROTO);
    const uint8_t big[] = {0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0};
    CHECK_INT(sb__ws_decode(big, sizeof(big), 0, &f), -EPROTO);
    const uint8_t masked[] = {0x82, 0x80, 0, 0, 0, 0};
    CHECK_INT(sb__ws_decode(masked, sizeof(masked), 0, &f), -EPROTO);
    const uint8_t rsv[] = {0xC2, 0x00};
    CHECK_INT(sb__ws_decode(rsv, sizeof(rsv), 0, &f), -EPROTO);
    const uint8_t reserved_op[] = {0x83, 0x00};
    CHECK_INT(sb__ws_decode(reserved_op, sizeof(reserved_op), 0, &f), -EPROTO);
    const uint8_t frag_ping[] = {0x09, 0x00};
    CHECK_INT(sb__ws_decode(frag_ping, sizeof(frag_ping), 0, &f), -EPROTO);
    const uint8_t long_ping[] = {0x89, 0x7E, 0x00, 0x7E};
    CHECK_INT(sb__ws_decode(long_ping, sizeof(long_ping), 0, &f), -EPROTO);
    const uint8_t close_frame[] = {0x88, 0x02, 0x03, 0xE8};
    CHECK_INT(sb__ws_decode(close_frame, sizeof(close_frame), 1, &f), 2); /* control: no limit */
    CHECK_INT(f.opcode, SB__WS_CLOSE);
}

int main(void)
{
    test_sha1();
    test_base64_accept();
    test_request_response();
    test_frames();
    return check_done();
}
