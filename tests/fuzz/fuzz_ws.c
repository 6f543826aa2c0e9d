/*
 * libFuzzer target for proto/ws and proto/utf8. The input is two option bytes and then a stream
 * of frames, which is decoded the way a server (or a client) would, with every result checked
 * against a second way of computing it; any disagreement aborts.
 *
 *   byte 0: bit 0 = client side (else server), bits 1-3 = allowed RSV bits
 *   byte 1: where to split payloads for the streaming checks
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/utf8.h"
#include "proto/ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SERVER_MAX_PAYLOAD (1u << 20)

static void require(bool ok)
{
    if (!ok) {
        abort();
    }
}

static bool frames_equal(const struct sb_ws_frame *a, const struct sb_ws_frame *b)
{
    return a->fin == b->fin && a->rsv == b->rsv && a->opcode == b->opcode &&
           a->masked == b->masked && memcmp(a->mask, b->mask, 4) == 0 &&
           a->payload_len == b->payload_len && a->header_len == b->header_len;
}

/* Every shorter prefix must ask for more bytes or already give the same error. */
static void check_prefixes(const uint8_t *buf, size_t len, const struct sb_ws_decode_opts *opts,
                           ssize_t whole)
{
    size_t upto = whole > 0 ? (size_t)whole : len;

    if (upto > SB_WS_MAX_HEADER) {
        upto = SB_WS_MAX_HEADER;
    }
    for (size_t k = 0; k < upto; k++) {
        struct sb_ws_frame f;
        ssize_t rc = sb_ws_decode_header(buf, k, opts, &f);
        require(rc == -EAGAIN || (whole < 0 && rc == whole));
    }
}

/* Re-encoding a decoded header must give back the very same bytes: the wire form is canonical. */
static void check_reencode(const uint8_t *buf, const struct sb_ws_frame *f,
                           const struct sb_ws_decode_opts *opts)
{
    uint8_t out[SB_WS_MAX_HEADER];
    struct sb_ws_frame g;
    size_t n =
        sb_ws_encode_header(out, f->fin, f->opcode, f->payload_len, f->masked ? f->mask : NULL);

    out[0] |= (uint8_t)(f->rsv << 4);
    require(n == f->header_len);
    require(memcmp(out, buf, n) == 0);
    require(sb_ws_decode_header(out, n, opts, &g) == (ssize_t)n);
    require(frames_equal(f, &g));
}

static size_t split_at(size_t len, uint8_t sel)
{
    return len == 0 ? 0 : (size_t)sel % (len + 1);
}

static void check_unmask(uint8_t *plain, uint8_t *scratch, const uint8_t *src, size_t len,
                         const struct sb_ws_frame *f, uint8_t sel)
{
    size_t k = split_at(len, sel);
    uint64_t off;

    memcpy(plain, src, len);
    off = sb_ws_unmask(plain, k, f->mask, 0);
    off = sb_ws_unmask(plain + k, len - k, f->mask, off);
    require(off == len);
    require(sb_ws_unmask_copy(scratch, src, len, f->mask, 0) == len);
    require(memcmp(plain, scratch, len) == 0);
    for (size_t i = 0; i < len; i++) {
        require(plain[i] == (src[i] ^ f->mask[i & 3]));
    }
}

/* The index of the byte at which feeding one byte at a time first fails, or len. */
static size_t first_bad_bytewise(const uint8_t *s, size_t len)
{
    struct sb_utf8 st = {0};

    for (size_t i = 0; i < len; i++) {
        if (sb_utf8_feed(&st, s + i, 1) < 0) {
            return i;
        }
    }
    return len;
}

static void check_utf8(const uint8_t *s, size_t len, uint8_t sel)
{
    int whole = sb_utf8_validate(s, len);
    size_t k = split_at(len, sel);
    size_t k2 = k + split_at(len - k, (uint8_t)(sel * 7 + 3));
    size_t bad = first_bad_bytewise(s, len);
    struct sb_utf8 st = {0};
    int rc1 = sb_utf8_feed(&st, s, k);
    int rc2 = sb_utf8_feed(&st, s + k, k2 - k);
    int rc3 = sb_utf8_feed(&st, s + k2, len - k2);

    require(whole == 0 || whole == -EILSEQ);
    /* Each chunk fails exactly when it holds or follows the first bad byte. */
    require(rc1 == (bad < k ? -EILSEQ : 0));
    require(rc2 == (bad < k2 ? -EILSEQ : 0));
    require(rc3 == (bad < len ? -EILSEQ : 0));
    require((rc3 == 0 && sb_utf8_is_complete(&st)) == (whole == 0));
}

static void check_close(const uint8_t *p, size_t len)
{
    uint16_t code = 0;
    int rc = sb_ws_parse_close(p, len, &code);

    if (len == 0) {
        require(rc == 0 && code == SB_WS_CLOSE_NO_STATUS);
    } else if (len == 1) {
        require(rc == -EPROTO);
    } else {
        uint16_t c = (uint16_t)(p[0] << 8 | p[1]);
        bool ok = (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
        require(code == c);
        require(ok ? rc == sb_utf8_validate(p + 2, len - 2) : rc == -EPROTO);
    }
}

/* Decodes one frame at buf; returns the bytes it spans, or 0 to stop the stream. */
static size_t one_frame(const uint8_t *buf, size_t len, const struct sb_ws_decode_opts *opts,
                        uint8_t sel, uint8_t *plain, uint8_t *scratch, bool *in_text)
{
    static const struct sb_ws_decode_opts lenient = {.allowed_rsv = 7};
    struct sb_ws_frame f, g;
    ssize_t rc = sb_ws_decode_header(buf, len, opts, &f);

    check_prefixes(buf, len, opts, rc);
    if (rc < 0) {
        require(rc == -EAGAIN || rc == -EPROTO || rc == -EMSGSIZE);
        return 0;
    }
    require((size_t)rc == f.header_len && f.header_len >= 2 && f.header_len <= SB_WS_MAX_HEADER);
    require(f.opcode < 8 || f.payload_len <= SB_WS_MAX_CONTROL);
    /* Loosening the options can only accept more, and never changes what was read. */
    require(sb_ws_decode_header(buf, len, &lenient, &g) == rc && frames_equal(&f, &g));
    check_reencode(buf, &f, opts);

    if (f.payload_len > len - f.header_len) {
        return 0;
    }
    size_t plen = (size_t)f.payload_len;
    check_unmask(plain, scratch, buf + f.header_len, plen, &f, sel);
    if (f.opcode == SB_WS_TEXT || (f.opcode == SB_WS_CONT && *in_text)) {
        check_utf8(plain, plen, sel);
    }
    if (f.opcode == SB_WS_TEXT || f.opcode == SB_WS_BINARY) {
        *in_text = f.opcode == SB_WS_TEXT && !f.fin;
    } else if (f.opcode == SB_WS_CONT && f.fin) {
        *in_text = false;
    }
    if (f.opcode == SB_WS_CLOSE) {
        check_close(plain, plen);
    }
    return f.header_len + plen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sb_ws_decode_opts opts = {0};
    uint8_t *plain, *scratch;
    bool in_text = false;

    if (size < 2) {
        return 0;
    }
    if (data[0] & 1) {
        opts.forbid_mask = true;
    } else {
        opts.require_mask = true;
        opts.max_payload = SERVER_MAX_PAYLOAD;
    }
    opts.allowed_rsv = (data[0] >> 1) & 7;
    uint8_t sel = data[1];
    data += 2;
    size -= 2;

    /* Also the raw input as one text payload, so UTF-8 gets fuzzed without frame overhead. */
    check_utf8(data, size, sel);

    plain = malloc(size + 1);
    scratch = malloc(size + 1);
    require(plain && scratch);
    while (size > 0) {
        size_t used = one_frame(data, size, &opts, sel, plain, scratch, &in_text);
        if (used == 0) {
            break;
        }
        data += used;
        size -= used;
    }
    free(plain);
    free(scratch);
    return 0;
}
