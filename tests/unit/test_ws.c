/*
 * Unit tests for proto/ws: the RFC 6455 examples, header round trips, every decoding error
 * rule, masking against a naive loop, close payloads and the handshake key.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "check.h"
#include "proto/ws.h"

static const struct sb_ws_decode_opts no_opts = {0};
static const struct sb_ws_decode_opts server_opts = {.require_mask = true};
static const struct sb_ws_decode_opts client_opts = {.forbid_mask = true};

/*
 * Every proper prefix of a header must ask for more bytes, unless it already proves the
 * header broken, in which case it must give the same error as the whole header.
 */
static void check_prefixes(const uint8_t *buf, size_t header_len, const struct sb_ws_decode_opts *o,
                           ssize_t whole)
{
    size_t wrong = 0;

    for (size_t k = 0; k < header_len; k++) {
        struct sb_ws_frame f;
        ssize_t rc = sb_ws_decode_header(buf, k, o, &f);
        if (rc != -EAGAIN && (whole > 0 || rc != whole)) {
            fprintf(stderr, "prefix %zu of %zu: %zd (whole %zd)\n", k, header_len, rc, whole);
            wrong++;
        }
    }
    CHECK_INT(wrong, 0);
}

static void test_rfc_unmasked_hello(void)
{
    static const uint8_t msg[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    struct sb_ws_frame f;

    CHECK_INT(sb_ws_decode_header(msg, sizeof(msg), &client_opts, &f), 2);
    CHECK(f.fin);
    CHECK_INT(f.rsv, 0);
    CHECK_INT(f.opcode, SB_WS_TEXT);
    CHECK(!f.masked);
    CHECK_INT(f.payload_len, 5);
    CHECK_INT(f.header_len, 2);
    CHECK_MEM(msg + 2, "Hello", 5);
    check_prefixes(msg, 2, &client_opts, 2);
    /* A server must refuse the unmasked frame. */
    CHECK_INT(sb_ws_decode_header(msg, sizeof(msg), &server_opts, &f), -EPROTO);
}

static void test_rfc_masked_hello(void)
{
    static const uint8_t msg[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t payload[5];
    struct sb_ws_frame f;

    CHECK_INT(sb_ws_decode_header(msg, sizeof(msg), &server_opts, &f), 6);
    CHECK(f.fin);
    CHECK_INT(f.opcode, SB_WS_TEXT);
    CHECK(f.masked);
    CHECK_MEM(f.mask, key, 4);
    CHECK_INT(f.payload_len, 5);
    check_prefixes(msg, 6, &server_opts, 6);
    memcpy(payload, msg + 6, 5);
    CHECK_INT(sb_ws_unmask(payload, 5, f.mask, 0), 5);
    CHECK_MEM(payload, "Hello", 5);
    CHECK_INT(sb_ws_unmask_copy(payload, msg + 6, 5, f.mask, 0), 5);
    CHECK_MEM(payload, "Hello", 5);
    /* A client must refuse a masked frame. */
    CHECK_INT(sb_ws_decode_header(msg, sizeof(msg), &client_opts, &f), -EPROTO);
}

static void test_rfc_fragmented(void)
{
    static const uint8_t first[] = {0x01, 0x03, 0x48, 0x65, 0x6c};
    static const uint8_t last[] = {0x80, 0x02, 0x6c, 0x6f};
    struct sb_ws_frame f;

    CHECK_INT(sb_ws_decode_header(first, sizeof(first), &no_opts, &f), 2);
    CHECK(!f.fin);
    CHECK_INT(f.opcode, SB_WS_TEXT);
    CHECK_INT(f.payload_len, 3);
    CHECK_INT(sb_ws_decode_header(last, sizeof(last), &no_opts, &f), 2);
    CHECK(f.fin);
    CHECK_INT(f.opcode, SB_WS_CONT);
    CHECK_INT(f.payload_len, 2);
}

static void test_rfc_ping_pong(void)
{
    static const uint8_t ping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    static const uint8_t pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                   0x7f, 0x9f, 0x4d, 0x51, 0x58};
    struct sb_ws_frame f;

    CHECK_INT(sb_ws_decode_header(ping, sizeof(ping), &no_opts, &f), 2);
    CHECK(f.fin);
    CHECK_INT(f.opcode, SB_WS_PING);
    CHECK_INT(f.payload_len, 5);
    CHECK_INT(sb_ws_decode_header(pong, sizeof(pong), &server_opts, &f), 6);
    CHECK_INT(f.opcode, SB_WS_PONG);
    CHECK(f.masked);
    CHECK_INT(f.payload_len, 5);
}

static void test_rfc_long_lengths(void)
{
    static const uint8_t b256[] = {0x82, 0x7E, 0x01, 0x00};
    static const uint8_t b64k[] = {0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00};
    struct sb_ws_frame f;
    uint8_t out[SB_WS_MAX_HEADER];

    CHECK_INT(sb_ws_decode_header(b256, sizeof(b256), &no_opts, &f), 4);
    CHECK_INT(f.opcode, SB_WS_BINARY);
    CHECK_INT(f.payload_len, 256);
    CHECK_INT(sb_ws_encode_header(out, true, SB_WS_BINARY, 256, NULL), 4);
    CHECK_MEM(out, b256, 4);
    check_prefixes(b256, 4, &no_opts, 4);

    CHECK_INT(sb_ws_decode_header(b64k, sizeof(b64k), &no_opts, &f), 10);
    CHECK_INT(f.payload_len, 65536);
    CHECK_INT(sb_ws_encode_header(out, true, SB_WS_BINARY, 65536, NULL), 10);
    CHECK_MEM(out, b64k, 10);
    check_prefixes(b64k, 10, &no_opts, 10);
}

static void test_round_trips(void)
{
    static const uint64_t lens[] = {
        0, 1, 125, 126, 127, 65535, 65536, (1ULL << 32) + 1, (1ULL << 63) - 1};
    static const uint8_t key[4] = {0xde, 0xad, 0xbe, 0xef};
    static const uint8_t opcodes[] = {SB_WS_CONT, SB_WS_TEXT, SB_WS_BINARY};

    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        for (int masked = 0; masked < 2; masked++) {
            for (size_t j = 0; j < sizeof(opcodes); j++) {
                for (int fin = 0; fin < 2; fin++) {
                    uint8_t buf[SB_WS_MAX_HEADER];
                    size_t n =
                        sb_ws_encode_header(buf, fin, opcodes[j], lens[i], masked ? key : NULL);
                    size_t want = 2 +
                                  (lens[i] < 126     ? 0
                                   : lens[i] < 65536 ? 2
                                                     : 8) +
                                  (masked ? 4 : 0);
                    struct sb_ws_frame f;
                    CHECK_INT(n, want);
                    CHECK_INT(sb_ws_decode_header(buf, n, &no_opts, &f), (ssize_t)n);
                    CHECK_INT(f.fin, fin);
                    CHECK_INT(f.rsv, 0);
                    CHECK_INT(f.opcode, opcodes[j]);
                    CHECK_INT(f.masked, masked);
                    CHECK(f.payload_len == lens[i]);
                    CHECK_INT(f.header_len, n);
                    if (masked) {
                        CHECK_MEM(f.mask, key, 4);
                    }
                    check_prefixes(buf, n, &no_opts, (ssize_t)n);
                }
            }
        }
    }
}

/* Control frames round-trip at their limits. */
static void test_control_round_trips(void)
{
    static const uint8_t opcodes[] = {SB_WS_CLOSE, SB_WS_PING, SB_WS_PONG};

    for (size_t j = 0; j < sizeof(opcodes); j++) {
        for (uint64_t len = 0; len <= SB_WS_MAX_CONTROL; len += 25) {
            uint8_t buf[SB_WS_MAX_HEADER];
            struct sb_ws_frame f;
            size_t n = sb_ws_encode_header(buf, true, opcodes[j], len, NULL);
            CHECK_INT(sb_ws_decode_header(buf, n, &client_opts, &f), 2);
            CHECK_INT(f.opcode, opcodes[j]);
            CHECK_INT(f.payload_len, len);
        }
    }
}

struct decode_case {
    const char *name;
    uint8_t bytes[SB_WS_MAX_HEADER];
    size_t len;
    struct sb_ws_decode_opts opts;
    ssize_t want;
    size_t early; /* the shortest prefix that already gives the error */
};

static const struct decode_case decode_cases[] = {
    {"rsv1 without extension", {0xC1, 0x00}, 2, {0}, -EPROTO, 1},
    {"rsv2 without extension", {0xA1, 0x00}, 2, {0}, -EPROTO, 1},
    {"rsv3 without extension", {0x91, 0x00}, 2, {0}, -EPROTO, 1},
    {"rsv1 negotiated", {0xC1, 0x00}, 2, {.allowed_rsv = 4}, 2, 2},
    {"rsv2 when only rsv1 negotiated", {0xA1, 0x00}, 2, {.allowed_rsv = 4}, -EPROTO, 1},
    {"opcode 3", {0x83, 0x00}, 2, {0}, -EPROTO, 1},
    {"opcode 4", {0x84, 0x00}, 2, {0}, -EPROTO, 1},
    {"opcode 5", {0x85, 0x00}, 2, {0}, -EPROTO, 1},
    {"opcode 6", {0x86, 0x00}, 2, {0}, -EPROTO, 1},
    {"opcode 7", {0x87, 0x00}, 2, {0}, -EPROTO, 1},
    {"opcode B", {0x8B, 0x00}, 2, {0}, -EPROTO, 1},
    {"opcode C", {0x8C, 0x00}, 2, {0}, -EPROTO, 1},
    {"opcode D", {0x8D, 0x00}, 2, {0}, -EPROTO, 1},
    {"opcode E", {0x8E, 0x00}, 2, {0}, -EPROTO, 1},
    {"opcode F", {0x8F, 0x00}, 2, {0}, -EPROTO, 1},
    {"fragmented close", {0x08, 0x00}, 2, {0}, -EPROTO, 1},
    {"fragmented ping", {0x09, 0x00}, 2, {0}, -EPROTO, 1},
    {"fragmented pong", {0x0A, 0x00}, 2, {0}, -EPROTO, 1},
    {"ping of 126", {0x89, 0x7E, 0x00, 0x7E}, 4, {0}, -EPROTO, 2},
    {"close of 127 form", {0x88, 0x7F, 0, 0, 0, 0, 0, 0, 0, 0x7E}, 10, {0}, -EPROTO, 2},
    {"ping of 125", {0x89, 0x7D}, 2, {0}, 2, 2},
    {"unmasked to server", {0x81, 0x05}, 2, {.require_mask = true}, -EPROTO, 2},
    {"masked to client", {0x81, 0x85, 1, 2, 3, 4}, 6, {.forbid_mask = true}, -EPROTO, 2},
    {"16-bit form for 125", {0x82, 0x7E, 0x00, 0x7D}, 4, {0}, -EPROTO, 4},
    {"16-bit form for 0", {0x82, 0x7E, 0x00, 0x00}, 4, {0}, -EPROTO, 4},
    {"16-bit form for 126", {0x82, 0x7E, 0x00, 0x7E}, 4, {0}, 4, 4},
    {"64-bit form for 65535", {0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF}, 10, {0}, -EPROTO, 8},
    {"64-bit form for 0", {0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 0}, 10, {0}, -EPROTO, 8},
    {"64-bit form for 65536", {0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0}, 10, {0}, 10, 10},
    {"64-bit top bit set", {0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0}, 10, {0}, -EPROTO, 3},
    {"64-bit all ones",
     {0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4},
     14,
     {0},
     -EPROTO,
     3},
    {"max 64-bit length",
     {0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
     10,
     {0},
     10,
     10},
    {"over max_payload", {0x82, 0x7E, 0x01, 0x01}, 4, {.max_payload = 256}, -EMSGSIZE, 4},
    {"at max_payload", {0x82, 0x7E, 0x01, 0x00}, 4, {.max_payload = 256}, 4, 4},
    {"over max_payload 7-bit", {0x81, 0x0B}, 2, {.max_payload = 10}, -EMSGSIZE, 2},
    {"continuation over max_payload", {0x00, 0x0B}, 2, {.max_payload = 10}, -EMSGSIZE, 2},
    {"over max_payload, mask pending",
     {0x82, 0xFE, 0x01, 0x01, 1, 2, 3, 4},
     8,
     {.max_payload = 256},
     -EMSGSIZE,
     4},
    {"ping over a small max_payload", {0x89, 0x7D}, 2, {.max_payload = 10}, 2, 2},
    {"close over a small max_payload", {0x88, 0x0B}, 2, {.max_payload = 1}, 2, 2},
    {"protocol error wins over size", {0xC2, 0x7E, 0x01, 0x01}, 4, {.max_payload = 1}, -EPROTO, 1},
};

static void test_decode_errors(void)
{
    for (size_t i = 0; i < sizeof(decode_cases) / sizeof(decode_cases[0]); i++) {
        const struct decode_case *c = &decode_cases[i];
        struct sb_ws_frame f;
        ssize_t rc = sb_ws_decode_header(c->bytes, c->len, &c->opts, &f);
        if (rc != c->want) {
            fprintf(stderr, "decode case \"%s\"\n", c->name);
        }
        CHECK_INT(rc, c->want);
        check_prefixes(c->bytes, c->len, &c->opts, c->want);
        if (c->want < 0) {
            /* Fail as early as the bytes allow, and not one byte earlier. */
            CHECK_INT(sb_ws_decode_header(c->bytes, c->early, &c->opts, &f), c->want);
            CHECK_INT(sb_ws_decode_header(c->bytes, c->early - 1, &c->opts, &f), -EAGAIN);
        }
    }
}

/* Every first byte against the opcode/RSV/FIN rules, computed independently. */
static void test_decode_byte0_table(void)
{
    size_t wrong = 0;

    for (int b0 = 0; b0 < 256; b0++) {
        uint8_t buf[2] = {(uint8_t)b0, 0x00};
        int op = b0 & 0x0F;
        bool known = op == 0 || op == 1 || op == 2 || op == 8 || op == 9 || op == 10;
        bool ok = known && (b0 & 0x70) == 0 && (op < 8 || (b0 & 0x80));
        struct sb_ws_frame f;
        ssize_t rc = sb_ws_decode_header(buf, 2, &no_opts, &f);
        if (rc != (ok ? 2 : -EPROTO)) {
            wrong++;
        }
        if (ok && (f.opcode != op || f.fin != (b0 >> 7))) {
            wrong++;
        }
    }
    CHECK_INT(wrong, 0);
}

static void test_decode_empty(void)
{
    struct sb_ws_frame f;

    CHECK_INT(sb_ws_decode_header(NULL, 0, &no_opts, &f), -EAGAIN);
}

/* The naive definition from RFC 6455 section 5.3. */
static void naive_unmask(uint8_t *data, size_t len, const uint8_t key[4], uint64_t offset)
{
    for (size_t i = 0; i < len; i++) {
        data[i] ^= key[(offset + i) % 4];
    }
}

static void test_unmask_vs_naive(void)
{
    static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    uint8_t src[256], a[256], b[256];
    size_t wrong = 0;

    for (size_t i = 0; i < sizeof(src); i++) {
        src[i] = (uint8_t)(i * 37 + 11);
    }
    for (size_t len = 0; len <= 200; len++) {
        for (uint64_t offset = 0; offset < 8; offset++) {
            for (size_t shift = 0; shift < 8; shift++) {
                memcpy(a + shift, src, len);
                memcpy(b + shift, src, len);
                if (sb_ws_unmask(a + shift, len, key, offset) != offset + len) {
                    wrong++;
                }
                naive_unmask(b + shift, len, key, offset);
                if (memcmp(a + shift, b + shift, len) != 0) {
                    wrong++;
                }
                /* The copying form, with source and destination misaligned differently. */
                memset(a, 0, sizeof(a));
                if (sb_ws_unmask_copy(a + (7 - shift), src + shift, len, key, offset) !=
                    offset + len) {
                    wrong++;
                }
                memcpy(b, src + shift, len);
                naive_unmask(b, len, key, offset);
                if (memcmp(a + (7 - shift), b, len) != 0) {
                    wrong++;
                }
            }
        }
    }
    CHECK_INT(wrong, 0);
}

/* Offsets far beyond 32 bits matter only modulo 4. */
static void test_unmask_large_offset(void)
{
    static const uint8_t key[4] = {1, 2, 4, 8};
    uint8_t a[16] = {0}, b[16] = {0};
    uint64_t offset = (1ULL << 40) + 3;

    CHECK(sb_ws_unmask(a, sizeof(a), key, offset) == offset + sizeof(a));
    naive_unmask(b, sizeof(b), key, offset);
    CHECK_MEM(a, b, sizeof(a));
}

/* Unmasking a payload in pieces, carrying the returned offset, equals doing it at once. */
static void test_unmask_pieces(void)
{
    static const uint8_t key[4] = {0xa5, 0x5a, 0xc3, 0x3c};
    static const size_t cuts[] = {1, 2, 3, 5, 7, 8, 9, 13, 31, 64};
    uint8_t whole[300], pieces[300], copied[300];
    size_t wrong = 0;

    for (size_t i = 0; i < sizeof(whole); i++) {
        whole[i] = (uint8_t)(i ^ 0x5c);
    }
    memcpy(pieces, whole, sizeof(whole));
    sb_ws_unmask(whole, sizeof(whole), key, 0);
    for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
        uint8_t work[300];
        uint64_t off = 0, off2 = 0;
        memcpy(work, pieces, sizeof(work));
        for (size_t at = 0; at < sizeof(work); at += cuts[c]) {
            size_t n = sizeof(work) - at < cuts[c] ? sizeof(work) - at : cuts[c];
            off = sb_ws_unmask(work + at, n, key, off);
            off2 = sb_ws_unmask_copy(copied + at, pieces + at, n, key, off2);
        }
        if (off != sizeof(work) || off2 != sizeof(work) || memcmp(work, whole, sizeof(work)) != 0 ||
            memcmp(copied, whole, sizeof(work)) != 0) {
            wrong++;
        }
    }
    CHECK_INT(wrong, 0);
    /* Masking is its own inverse. */
    sb_ws_unmask(whole, sizeof(whole), key, 0);
    CHECK_MEM(whole, pieces, sizeof(whole));
}

static bool ref_close_code_valid(unsigned code)
{
    if (code >= 1000 && code <= 1003) {
        return true;
    }
    if (code >= 1007 && code <= 1014) {
        return true;
    }
    return code >= 3000 && code <= 4999;
}

static void test_close_codes(void)
{
    static const uint16_t valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                     1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    static const uint16_t invalid[] = {0,    1,    999,  1004, 1005, 1006, 1015,
                                       1016, 1100, 2000, 2999, 5000, 65535};
    size_t wrong = 0;

    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        CHECK(sb_ws_close_code_valid(valid[i]));
    }
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        CHECK(!sb_ws_close_code_valid(invalid[i]));
    }
    for (unsigned code = 0; code <= 65535; code++) {
        if (sb_ws_close_code_valid((uint16_t)code) != ref_close_code_valid(code)) {
            wrong++;
        }
    }
    CHECK_INT(wrong, 0);
}

static void test_parse_close(void)
{
    uint16_t code = 0;

    CHECK_INT(sb_ws_parse_close(NULL, 0, &code), 0);
    CHECK_INT(code, SB_WS_CLOSE_NO_STATUS);
    CHECK_INT(sb_ws_parse_close((const uint8_t *)"\x03", 1, &code), -EPROTO);
    CHECK_INT(sb_ws_parse_close((const uint8_t *)"\x03\xe8", 2, &code), 0);
    CHECK_INT(code, 1000);
    CHECK_INT(sb_ws_parse_close((const uint8_t *)"\x03\xe9going away", 12, &code), 0);
    CHECK_INT(code, 1001);
    CHECK_INT(sb_ws_parse_close((const uint8_t *)"\x0f\xa0\xce\xba\xe1\xbd\xb9", 7, &code), 0);
    CHECK_INT(code, 4000);
    CHECK_INT(sb_ws_parse_close((const uint8_t *)"\x03\xed", 2, &code), -EPROTO); /* 1005 */
    CHECK_INT(sb_ws_parse_close((const uint8_t *)"\x03\xee", 2, &code), -EPROTO); /* 1006 */
    CHECK_INT(sb_ws_parse_close((const uint8_t *)"\x03\xec", 2, &code), -EPROTO); /* 1004 */
    CHECK_INT(sb_ws_parse_close((const uint8_t *)"\x00\x00", 2, &code), -EPROTO);
    CHECK_INT(sb_ws_parse_close((const uint8_t *)"\x13\x88", 2, &code), -EPROTO); /* 5000 */
    CHECK_INT(sb_ws_parse_close((const uint8_t *)"\x03\xe8\xff", 3, &code), -EILSEQ);
    CHECK_INT(sb_ws_parse_close((const uint8_t *)"\x03\xe8\xed\xa0\x80", 5, &code), -EILSEQ);
    /* A reason cut inside a character is invalid, however it began. */
    CHECK_INT(sb_ws_parse_close((const uint8_t *)"\x03\xe8\xce", 3, &code), -EILSEQ);
    /* A bad code is reported as a protocol error before the reason is looked at. */
    CHECK_INT(sb_ws_parse_close((const uint8_t *)"\x03\xed\xff", 3, &code), -EPROTO);
}

static void test_accept_key(void)
{
    char out[SB_WS_ACCEPT_LEN + 1];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";

    memset(out, 'x', sizeof(out));
    CHECK_INT(sb_ws_accept_key(key, strlen(key), out), 0);
    CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    CHECK_INT(strlen(out), SB_WS_ACCEPT_LEN);

    /* The key need not be NUL-terminated: only key_len bytes count. */
    CHECK_INT(sb_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==trailing", 24, out), 0);
    CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    static const char *const bad[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ=",   /* 23 characters */
        "dGhlIHNhbXBsZSBub25jZQ===", /* 25 characters */
        "dGhlIHNhbXBsZSBub25jZQAA",  /* 18 bytes, not 16 */
        "dGhlIHNhbXBsZSBub25jZ===",  /* 17 bytes */
        "dGhlIHNhbXBsZSBub25j-Q==",  /* base64url, not base64 */
        "dGhlIHNhbXBsZSBub25j Q==",
        "dGhlIHNhbXBsZSBub25jZQ=A",
        "=GhlIHNhbXBsZSBub25jZQ==",
        "dGhlIHNhbXBsZSBub25jZ\0==",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t len = i == sizeof(bad) / sizeof(bad[0]) - 1 ? 24 : strlen(bad[i]);
        CHECK_INT(sb_ws_accept_key(bad[i], len, out), -EINVAL);
    }
    /* Every base64 character is allowed in the body. */
    CHECK_INT(sb_ws_accept_key("+/0123456789abcdefghAQ==", 24, out), 0);
    CHECK_INT(strlen(out), SB_WS_ACCEPT_LEN);
}

int main(void)
{
    test_rfc_unmasked_hello();
    test_rfc_masked_hello();
    test_rfc_fragmented();
    test_rfc_ping_pong();
    test_rfc_long_lengths();
    test_round_trips();
    test_control_round_trips();
    test_decode_errors();
    test_decode_byte0_table();
    test_decode_empty();
    test_unmask_vs_naive();
    test_unmask_large_offset();
    test_unmask_pieces();
    test_close_codes();
    test_parse_close();
    test_accept_key();
    return check_done();
}
