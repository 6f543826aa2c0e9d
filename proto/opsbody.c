/* Message bodies in their three forms, and base64 (see opsbody.h). */
#include "proto/opsbody.h"

#include <string.h>

#include "proto/json.h"

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The 6-bit value of a base64 character, or -1. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
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
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        *out++ = b64_alphabet[v >> 18];
        *out++ = b64_alphabet[(v >> 12) & 63];
        *out++ = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
        *out++ = '=';
    }
}

bool sb_base64_valid(const char *text, size_t len, size_t *n_out)
{
    if (len % 4)
        return false;
    size_t pad = 0;
    if (len && text[len - 1] == '=')
        pad = len >= 2 && text[len - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < len - pad; i++)
        if (b64_value((unsigned char)text[i]) < 0)
            return false;
    /* Canonical: the bits the padding leaves over in the last character are zero. */
    if (pad == 1 && (b64_value((unsigned char)text[len - 2]) & 3))
        return false;
    if (pad == 2 && (b64_value((unsigned char)text[len - 3]) & 15))
        return false;
    if (n_out)
        *n_out = len / 4 * 3 - pad;
    return true;
}

size_t sb_base64_decode(const char *text, size_t len, uint8_t *out)
{
    size_t o = 0;
    for (size_t i = 0; i + 4 <= len; i += 4) {
        uint32_t v = 0;
        int chars = 0;
        for (int k = 0; k < 4; k++) {
            int d = b64_value((unsigned char)text[i + k]);
            if (d < 0)
                break;
            v |= (uint32_t)d << (18 - 6 * k);
            chars++;
        }
        /* 4 characters give 3 bytes, 3 give 2, 2 give 1 (the rest is padding). */
        for (int k = 0; k < chars - 1; k++)
            out[o++] = (uint8_t)(v >> (16 - 8 * k));
    }
    return o;
}

size_t sb_ops_body_len(const struct sb_op_body *b)
{
    size_t n = 0;
    switch (b->form) {
    case SB_OP_BODY_JSON:
        return b->data.len >= 2 ? sb_json_unescape(b->data.base + 1, b->data.len - 2, NULL) : 0;
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
        if (b->data.len >= 2)
            sb_json_unescape(b->data.base + 1, b->data.len - 2, (char *)out);
        break;
    case SB_OP_BODY_BASE64:
        /* Never more than sb_ops_body_len said (0 for text that is not canonical base64). */
        if (sb_base64_valid(b->data.base, b->data.len, NULL))
            sb_base64_decode(b->data.base, b->data.len, out);
        break;
    default:
        if (b->data.len)
            memcpy(out, b->data.base, b->data.len);
    }
}
