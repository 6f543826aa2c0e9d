/*
 * RFC 6455 framing. Every function works on caller-owned bytes and may be called from any thread.
 */
#include "proto/ws.h"

#include <assert.h>
#include <errno.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "proto/utf8.h"

#define WS_FIN 0x80
#define WS_MASK_BIT 0x80
#define WS_LEN16 126
#define WS_LEN64 127
#define WS_KEY_LEN 24 /* base64 of 16 bytes: 22 characters and "==" */

static bool opcode_is_control(uint8_t opcode)
{
    return (opcode & 0x8) != 0;
}

static bool opcode_is_known(uint8_t opcode)
{
    return opcode <= SB_WS_BINARY || (opcode >= SB_WS_CLOSE && opcode <= SB_WS_PONG);
}

/* The checks that need only the first byte, so a bad frame fails before the rest arrives. */
static int check_byte0(uint8_t b0, const struct sb_ws_decode_opts *opts)
{
    uint8_t rsv = (b0 >> 4) & 7;
    uint8_t opcode = b0 & 0x0F;

    if (rsv & ~opts->allowed_rsv) {
        return -EPROTO;
    }
    if (!opcode_is_known(opcode)) {
        return -EPROTO;
    }
    if (opcode_is_control(opcode) && !(b0 & WS_FIN)) {
        return -EPROTO;
    }
    return 0;
}

static int check_byte1(uint8_t b0, uint8_t b1, const struct sb_ws_decode_opts *opts)
{
    bool masked = (b1 & WS_MASK_BIT) != 0;

    if (opts->require_mask && !masked) {
        return -EPROTO;
    }
    if (opts->forbid_mask && masked) {
        return -EPROTO;
    }
    /* 126 and 127 announce longer lengths, so this also rejects any extended length. */
    if (opcode_is_control(b0 & 0x0F) && (b1 & 0x7F) > SB_WS_MAX_CONTROL) {
        return -EPROTO;
    }
    return 0;
}

/*
 * Reads the extended length that follows the first two bytes. ext holds avail bytes (possibly
 * fewer than the encoding needs); the function still reports a broken encoding as soon as the
 * bytes present prove it. Returns 0 with *plen set, -EAGAIN or -EPROTO.
 */
static int read_len16(const uint8_t *ext, size_t avail, uint64_t *plen)
{
    if (avail < 2) {
        return -EAGAIN;
    }
    *plen = (uint64_t)ext[0] << 8 | ext[1];
    /* A length below 126 fits the 7-bit field and must be sent there. */
    return *plen < WS_LEN16 ? -EPROTO : 0;
}

static int read_len64(const uint8_t *ext, size_t avail, uint64_t *plen)
{
    uint64_t v = 0;
    size_t i;

    if (avail >= 1 && (ext[0] & 0x80)) {
        return -EPROTO;
    }
    for (i = 0; i < avail && i < 8; i++) {
        v = v << 8 | ext[i];
        /* After six bytes v is the length shifted right by 16: zero means it fits 16 bits. */
        if (i == 5 && v == 0) {
            return -EPROTO;
        }
    }
    if (avail < 8) {
        return -EAGAIN;
    }
    *plen = v;
    return 0;
}

ssize_t sb_ws_decode_header(const uint8_t *buf, size_t len, const struct sb_ws_decode_opts *opts,
                            struct sb_ws_frame *out)
{
    uint64_t plen;
    size_t ext_len;
    size_t header_len;
    bool masked;
    int rc;

    if (len < 1) {
        return -EAGAIN;
    }
    rc = check_byte0(buf[0], opts);
    if (rc < 0) {
        return rc;
    }
    if (len < 2) {
        return -EAGAIN;
    }
    rc = check_byte1(buf[0], buf[1], opts);
    if (rc < 0) {
        return rc;
    }
    masked = (buf[1] & WS_MASK_BIT) != 0;
    plen = buf[1] & 0x7F;
    ext_len = 0;
    if (plen == WS_LEN16) {
        ext_len = 2;
        rc = read_len16(buf + 2, len - 2, &plen);
    } else if (plen == WS_LEN64) {
        ext_len = 8;
        rc = read_len64(buf + 2, len - 2, &plen);
    }
    if (rc < 0) {
        return rc;
    }
    /* Control frames are bounded by 125 already; a small limit must not refuse a ping. */
    if (opts->max_payload != 0 && plen > opts->max_payload && !opcode_is_control(buf[0] & 0x0F)) {
        return -EMSGSIZE;
    }
    header_len = 2 + ext_len + (masked ? 4 : 0);
    if (len < header_len) {
        return -EAGAIN;
    }
    out->fin = (buf[0] & WS_FIN) != 0;
    out->rsv = (buf[0] >> 4) & 7;
    out->opcode = buf[0] & 0x0F;
    out->masked = masked;
    if (masked) {
        memcpy(out->mask, buf + 2 + ext_len, 4);
    } else {
        memset(out->mask, 0, sizeof(out->mask));
    }
    out->payload_len = plen;
    out->header_len = header_len;
    return (ssize_t)header_len;
}

size_t sb_ws_encode_header(uint8_t out[SB_WS_MAX_HEADER], bool fin, uint8_t opcode,
                           uint64_t payload_len, const uint8_t *mask)
{
    uint8_t mask_bit = mask ? WS_MASK_BIT : 0;
    size_t n = 2;

    /* The wire format has 63 bits for the length. */
    assert(payload_len >> 63 == 0);
    out[0] = (uint8_t)((fin ? WS_FIN : 0) | (opcode & 0x0F));
    if (payload_len < WS_LEN16) {
        out[1] = (uint8_t)(mask_bit | payload_len);
    } else if (payload_len <= 0xFFFF) {
        out[1] = mask_bit | WS_LEN16;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        n = 4;
    } else {
        out[1] = mask_bit | WS_LEN64;
        for (int i = 0; i < 8; i++) {
            out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
        }
        n = 10;
    }
    if (mask) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

/*
 * The key repeated over 8 bytes, starting at key byte (offset % 4). Since 8 is a multiple of 4,
 * the same pattern lines up with every later 8-byte step, whatever the pointer's alignment.
 */
static uint64_t mask_pattern(const uint8_t mask[4], uint64_t offset)
{
    uint8_t bytes[8];
    uint64_t pat;

    for (int i = 0; i < 8; i++) {
        bytes[i] = mask[(offset + (uint64_t)i) & 3];
    }
    memcpy(&pat, bytes, sizeof(pat));
    return pat;
}

uint64_t sb_ws_unmask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t offset)
{
    uint64_t pat = mask_pattern(mask, offset);
    size_t i = 0;

    /* memcpy keeps unaligned access defined; compilers turn this loop into vector XORs. */
    for (; len - i >= 8; i += 8) {
        uint64_t v;
        memcpy(&v, data + i, 8);
        v ^= pat;
        memcpy(data + i, &v, 8);
    }
    for (; i < len; i++) {
        data[i] ^= mask[(offset + i) & 3];
    }
    return offset + len;
}

uint64_t sb_ws_unmask_copy(uint8_t *restrict dst, const uint8_t *restrict src, size_t len,
                           const uint8_t mask[4], uint64_t offset)
{
    uint64_t pat = mask_pattern(mask, offset);
    size_t i = 0;

    for (; len - i >= 8; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= pat;
        memcpy(dst + i, &v, 8);
    }
    for (; i < len; i++) {
        dst[i] = src[i] ^ mask[(offset + i) & 3];
    }
    return offset + len;
}

bool sb_ws_close_code_valid(uint16_t code)
{
    if (code >= 3000) {
        /* 3000-3999 are registered by IANA, 4000-4999 private; the rest is undefined. */
        return code <= 4999;
    }
    if (code < 1000 || code > 1014) {
        return false;
    }
    /* 1004 is reserved; 1005, 1006 and 1015 only describe a close locally, never on the wire. */
    return code != 1004 && code != 1005 && code != 1006;
}

int sb_ws_parse_close(const uint8_t *payload, size_t len, uint16_t *code)
{
    if (len == 0) {
        *code = SB_WS_CLOSE_NO_STATUS;
        return 0;
    }
    if (len == 1) {
        return -EPROTO;
    }
    *code = (uint16_t)(payload[0] << 8 | payload[1]);
    if (!sb_ws_close_code_valid(*code)) {
        return -EPROTO;
    }
    return sb_utf8_validate(payload + 2, len - 2);
}

static bool is_base64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/*
 * 16 bytes encode to 22 characters and "==". The last character carries 4 unused bits; they
 * are not required to be zero, since any such key still decodes to 16 bytes.
 */
static bool key_is_valid(const char *key, size_t key_len)
{
    if (key_len != WS_KEY_LEN || key[22] != '=' || key[23] != '=') {
        return false;
    }
    for (size_t i = 0; i < 22; i++) {
        if (!is_base64_char(key[i])) {
            return false;
        }
    }
    return true;
}

int sb_ws_accept_key(const char *key, size_t key_len, char out[SB_WS_ACCEPT_LEN + 1])
{
    static const char guid[] = SB_WS_GUID;
    uint8_t input[WS_KEY_LEN + sizeof(guid) - 1];
    uint8_t digest[SHA_DIGEST_LENGTH];

    if (!key_is_valid(key, key_len)) {
        return -EINVAL;
    }
    memcpy(input, key, WS_KEY_LEN);
    memcpy(input + WS_KEY_LEN, guid, sizeof(guid) - 1);
    SHA1(input, sizeof(input), digest);
    /* Writes 28 characters and a NUL. */
    EVP_EncodeBlock((uint8_t *)out, digest, SHA_DIGEST_LENGTH);
    return 0;
}
