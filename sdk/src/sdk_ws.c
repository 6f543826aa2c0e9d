#include "sdk_ws.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static uint32_t rol32(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++) {
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    }
    for (int i = 16; i < 80; i++) {
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void sb__ws_sha1(const void *data, size_t len, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    const uint8_t *p = data;
    size_t n = len;
    for (; n >= 64; n -= 64, p += 64) {
        sha1_block(h, p);
    }
    /* The tail, the 0x80 marker and the bit length fill one or two last blocks. */
    uint8_t last[128] = {0};
    memcpy(last, p, n);
    last[n] = 0x80;
    size_t blocks = n + 9 <= 64 ? 1 : 2;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) {
        last[blocks * 64 - 1 - i] = (uint8_t)(bits >> (8 * i));
    }
    for (size_t i = 0; i < blocks; i++) {
        sha1_block(h, last + 64 * i);
    }
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (uint8_t)(h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(h[i] >> 8);
        out[4 * i + 3] = (uint8_t)h[i];
    }
}

size_t sb__ws_base64(const uint8_t *in, size_t len, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) {
            v |= (uint32_t)in[i + 1] << 8;
        }
        if (i + 2 < len) {
            v |= in[i + 2];
        }
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = i + 1 < len ? tab[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? tab[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

void sb__ws_accept(const char *key, char out[SB__WS_ACCEPT_LEN + 1])
{
    char buf[128];
    int n = snprintf(buf, sizeof(buf), "%s%s", key, WS_GUID);
    uint8_t digest[20];
    sb__ws_sha1(buf, n > 0 && (size_t)n < sizeof(buf) ? (size_t)n : 0, digest);
    sb__ws_base64(digest, sizeof(digest), out);
}

ssize_t sb__ws_request(char *out, size_t cap, const char *host, const char *path, const char *key,
                       const char *protocol, const char *token)
{
    int n;
    if (token != NULL && token[0] != '\0') {
        n = snprintf(out, cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: %s\r\nAuthorization: Bearer %s\r\n\r\n",
                     path, host, key, protocol, token);
    } else {
        n = snprintf(out, cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: %s\r\n\r\n",
                     path, host, key, protocol);
    }
    if (n < 0 || (size_t)n >= cap) {
        return -ENOSPC;
    }
    return n;
}

/* Whether the comma-separated header value holds token (case-insensitive). */
static bool value_has_token(const char *v, size_t len, const char *token)
{
    size_t tlen = strlen(token);
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) {
            i++;
        }
        size_t start = i;
        while (i < len && v[i] != ',') {
            i++;
        }
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t')) {
            end--;
        }
        if (end - start == tlen && strncasecmp(v + start, token, tlen) == 0) {
            return true;
        }
    }
    return false;
}

ssize_t sb__ws_response(const char *buf, size_t len, const char *key, const char *protocol)
{
    size_t head = 0;
    size_t scan = len < SB__WS_HEAD_MAX ? len : SB__WS_HEAD_MAX;
    for (size_t i = 3; i < scan; i++) {
        if (buf[i - 3] == '\r' && buf[i - 2] == '\n' && buf[i - 1] == '\r' && buf[i] == '\n') {
            head = i + 1;
            break;
        }
    }
    if (head == 0) {
        return len < SB__WS_HEAD_MAX ? -EAGAIN : -EPROTO;
    }
    /* The status line: "HTTP/1.1 101 ...". */
    if (head < 12 || memcmp(buf, "HTTP/1.1 ", 9) != 0) {
        return -EPROTO;
    }
    if (memcmp(buf + 9, "401", 3) == 0 || memcmp(buf + 9, "403", 3) == 0) {
        return -EACCES;
    }
    if (memcmp(buf + 9, "101", 3) != 0) {
        return -EPROTO;
    }
    char accept[SB__WS_ACCEPT_LEN + 1];
    sb__ws_accept(key, accept);
    bool has_upgrade = false, has_connection = false, has_accept = false, has_protocol = false;
    const char *p = memchr(buf, '\n', head);
    const char *end = buf + head;
    while (p != NULL && p + 1 < end) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL) {
            break;
        }
        size_t llen = (size_t)(eol - line);
        if (llen > 0 && line[llen - 1] == '\r') {
            llen--;
        }
        const char *colon = memchr(line, ':', llen);
        if (colon != NULL) {
            size_t nlen = (size_t)(colon - line);
            const char *v = colon + 1;
            size_t vlen = llen - nlen - 1;
            while (vlen > 0 && (*v == ' ' || *v == '\t')) {
                v++;
                vlen--;
            }
            while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) {
                vlen--;
            }
#define NAME_IS(s) (nlen == sizeof(s) - 1 && strncasecmp(line, s, nlen) == 0)
            if (NAME_IS("upgrade")) {
                has_upgrade = value_has_token(v, vlen, "websocket");
            } else if (NAME_IS("connection")) {
                has_connection = value_has_token(v, vlen, "upgrade");
            } else if (NAME_IS("sec-websocket-accept")) {
                has_accept = vlen == SB__WS_ACCEPT_LEN && memcmp(v, accept, vlen) == 0;
            } else if (NAME_IS("sec-websocket-protocol")) {
                has_protocol = vlen == strlen(protocol) && memcmp(v, protocol, vlen) == 0;
            }
#undef NAME_IS
        }
        p = eol;
    }
    if (!has_upgrade || !has_connection || !has_accept || !has_protocol) {
        return -EPROTO;
    }
    return (ssize_t)head;
}

ssize_t sb__ws_decode(const uint8_t *buf, size_t len, uint64_t max_payload,
                      struct sb__ws_frame *out)
{
    if (len < 2) {
        return -EAGAIN;
    }
    uint8_t b0 = buf[0], b1 = buf[1];
    out->fin = (b0 & 0x80) != 0;
    out->opcode = b0 & 0x0F;
    if ((b0 & 0x70) != 0 || (b1 & 0x80) != 0) {
        return -EPROTO; /* no extension was negotiated; a server never masks */
    }
    bool is_control = out->opcode >= 0x8;
    if (out->opcode > SB__WS_BINARY && out->opcode != SB__WS_CLOSE && out->opcode != SB__WS_PING &&
        out->opcode != SB__WS_PONG) {
        return -EPROTO;
    }
    uint64_t plen = b1 & 0x7F;
    size_t hlen = 2;
    if (plen == 126) {
        if (len < 4) {
            return -EAGAIN;
        }
        plen = (uint64_t)buf[2] << 8 | buf[3];
        hlen = 4;
        if (plen < 126) {
            return -EPROTO;
        }
    } else if (plen == 127) {
        if (len < 10) {
            return -EAGAIN;
        }
        plen = 0;
        for (int i = 0; i < 8; i++) {
            plen = plen << 8 | buf[2 + i];
        }
        hlen = 10;
        if (plen <= 0xFFFF || (plen >> 63) != 0) {
            return -EPROTO;
        }
    }
    if (is_control && (!out->fin || plen > SB__WS_MAX_CONTROL)) {
        return -EPROTO;
    }
    if (!is_control && max_payload != 0 && plen > max_payload) {
        return -EMSGSIZE;
    }
    out->payload_len = plen;
    out->header_len = hlen;
    return (ssize_t)hlen;
}

size_t sb__ws_encode(uint8_t out[SB__WS_MAX_HEADER], uint8_t opcode, uint64_t payload_len,
                     const uint8_t mask[4])
{
    size_t n = 2;
    out[0] = (uint8_t)(0x80 | opcode);
    if (payload_len < 126) {
        out[1] = (uint8_t)(0x80 | payload_len);
    } else if (payload_len <= 0xFFFF) {
        out[1] = 0x80 | 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        n = 4;
    } else {
        out[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) {
            out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
        }
        n = 10;
    }
    memcpy(out + n, mask, 4);
    return n + 4;
}

void sb__ws_mask(uint8_t *data, size_t len, const uint8_t mask[4])
{
    for (size_t i = 0; i < len; i++) {
        data[i] ^= mask[i & 3];
    }
}
