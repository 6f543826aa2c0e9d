/*
 * Message bodies in their three forms, and canonical base64 (RFC 4648 section 4, padded).
 */
#include "proto/opsbody.h"

#include <string.h>

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The 6-bit value of a base64 character, or -1. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

void sb_base64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t i = 0;

    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = b64_alphabet[v >> 18];
        *out++ = b64_alphabet[(v >> 12) & 63];
        *out++ = b64_alphabet[(v >> 6) & 63];
        *out++ = b64_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *out++ = b64_alphabet[v >> 18];
        *out++ = b64_alphabet[(v >> 12) & 63];
        *out++ = '=';
        *out++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *out++ = b64_alphabet[v >> 18];
        *out++ = b64_alphabet[(v >> 12) & 63];
        *out++ = b64_alphabet[(v >> 6) & 63];
        *out++ = '=';
    }
}

bool sb_base64_valid(const char *text, size_t len, size_t *n_out)
{
    if (len % 4 != 0) {
        return false;
    }
    size_t pad = 0;
    if (len > 0 && text[len - 1] == '=') {
        pad = len > 1 && text[len - 2] == '=' ? 2 : 1;
    }
    for (size_t i = 0; i < len - pad; i++) {
        if (b64_value((unsigned char)text[i]) < 0) {
            return false;
        }
    }
    /* The bits the padding leaves over must be zero: one encoding per byte string. */
    if (pad == 1 && (b64_value((unsigned char)text[len - 2]) & 3) != 0) {
        return false;
    }
    if (pad == 2 && (b64_value((unsigned char)text[len - 3]) & 15) != 0) {
        return false;
    }
    if (n_out != NULL) {
        *n_out = len / 4 * 3 - pad;
    }
    return true;
}

size_t sb_base64_decode(const char *text, size_t len, uint8_t *out)
{
    size_t o = 0;

    for (size_t i = 0; i + 4 <= len; i += 4) {
        uint32_t v = 0;
        int chars = 0;
        for (int k = 0; k < 4; k++) {
            int d = b64_value((unsigned char)text[i + (size_t)k]);
            if (d < 0) {
                break; /* '=': the end */
            }
            v |= (uint32_t)d << (18 - 6 * k);
            chars++;
        }
        out[o++] = (uint8_t)(v >> 16);
        if (chars > 2) {
            out[o++] = (uint8_t)(v >> 8);
        }
        if (chars > 3) {
            out[o++] = (uint8_t)v;
        }
    }
    return o;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Reads the 4 hex digits at p (end bounds it). Returns the value, or -1. */
static int32_t hex4(const char *p, const char *end)
{
    int32_t v = 0;

    if (end - p < 4) {
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        int d = hex_value(p[i]);
        if (d < 0) {
            return -1;
        }
        v = v << 4 | d;
    }
    return v;
}

/* Writes code point cp as UTF-8 to out (when not NULL). Returns its length. */
static size_t put_utf8(uint32_t cp, uint8_t *out)
{
    uint8_t b[4];
    size_t n;

    if (cp < 0x80) {
        b[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (uint8_t)(0xC0 | cp >> 6);
        b[1] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (uint8_t)(0xE0 | cp >> 12);
        b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (uint8_t)(0xF0 | cp >> 18);
        b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 4;
    }
    if (out != NULL) {
        memcpy(out, b, n);
    }
    return n;
}

/*
 * Unescapes the JSON string literal s[0..len) (quotes included) into out, or only measures it
 * when out is NULL. Returns the bytes. The literal is well-formed (decoders make only those);
 * anything else stops the walk early rather than reading past len.
 */
static size_t json_unescape(const char *s, size_t len, uint8_t *out)
{
    const char *p = s + 1, *end = s + (len >= 2 ? len - 1 : 0);
    size_t o = 0;

    while (p < end) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        size_t run = (size_t)((bs != NULL ? bs : end) - p);
        if (out != NULL) {
            memcpy(out + o, p, run);
        }
        o += run;
        if (bs == NULL || end - bs < 2) {
            break;
        }
        p = bs + 2;
        uint32_t cp;
        switch (bs[1]) {
        case 'b':
            cp = '\b';
            break;
        case 'f':
            cp = '\f';
            break;
        case 'n':
            cp = '\n';
            break;
        case 'r':
            cp = '\r';
            break;
        case 't':
            cp = '\t';
            break;
        case 'u': {
            int32_t hi = hex4(p, end);
            if (hi < 0) {
                return o;
            }
            p += 4;
            cp = (uint32_t)hi;
            if (hi >= 0xD800 && hi <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                int32_t lo = hex4(p + 2, end);
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + (((uint32_t)hi - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
                    p += 6;
                }
            }
            break;
        }
        default: /* '"', '\\', '/' */
            cp = (unsigned char)bs[1];
            break;
        }
        o += put_utf8(cp, out != NULL ? out + o : NULL);
    }
    return o;
}

size_t sb_ops_body_len(const struct sb_op_body *b)
{
    size_t n = 0;

    switch (b->form) {
    case SB_OP_BODY_JSON:
        return json_unescape(b->data.base, b->data.len, NULL);
    case SB_OP_BODY_BASE64:
        return sb_base64_valid(b->data.base, b->data.len, &n) ? n : 0;
    default:
        return b->data.len;
    }
}

void sb_ops_body_copy(const struct sb_op_body *b, uint8_t *out)
{
    switch (b->form) {
    case SB_OP_BODY_JSON:
        json_unescape(b->data.base, b->data.len, out);
        break;
    case SB_OP_BODY_BASE64:
        if (sb_base64_valid(b->data.base, b->data.len, NULL)) {
            sb_base64_decode(b->data.base, b->data.len, out);
        }
        break;
    default:
        if (b->data.len > 0) {
            memcpy(out, b->data.base, b->data.len);
        }
        break;
    }
}
