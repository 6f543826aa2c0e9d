#include "server/envelope.h"

#include <errno.h>
#include <string.h>

#include "server/ids.h"

static void put_be(char *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xff);
}

static uint64_t get_be(const char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | (uint8_t)p[i];
    return v;
}

size_t sb_envelope_head_len(const struct sb_envelope *e)
{
    return SB_ENVELOPE_FIXED + e->conv_len + e->json_len + e->bin_len;
}

void sb_envelope_put_head(const struct sb_envelope *e, char *out)
{
    char *q = out;
    *q++ = (char)e->cls;
    put_be(q, e->seq, 8), q += 8;
    *q++ = (char)e->conv_len;
    memcpy(q, e->conv, e->conv_len), q += e->conv_len;
    put_be(q, e->json_len, 4), q += 4;
    memcpy(q, e->json, e->json_len), q += e->json_len;
    put_be(q, e->bin_len, 4), q += 4;
    memcpy(q, e->bin, e->bin_len);
}

/* Reads a 4-byte length and that many bytes at *q; false when they pass end. */
static int take(const char **q, const char *end, const char **out, size_t *len)
{
    if (end - *q < 4)
        return -EBADMSG;
    uint64_t n = get_be(*q, 4);
    *q += 4;
    if ((uint64_t)(end - *q) < n)
        return -EBADMSG;
    *out = *q;
    *len = (size_t)n;
    *q += n;
    return 0;
}

int sb_envelope_parse(const char *msg, size_t len, struct sb_envelope *out)
{
    const char *q = msg, *end = msg + len;
    *out = (struct sb_envelope){0};
    if (len < 1)
        return -EBADMSG;
    out->cls = (uint8_t)*q++;
    if (out->cls != SB_ENVELOPE_INVAL) {
        if (end - q < 9)
            return -EBADMSG;
        out->seq = get_be(q, 8), q += 8;
        out->conv_len = (uint8_t)*q++;
        if (out->conv_len == 0 || out->conv_len > SB_CONV_ID_MAX ||
            (size_t)(end - q) < out->conv_len)
            return -EBADMSG;
        out->conv = q, q += out->conv_len;
        if (take(&q, end, &out->json, &out->json_len) < 0 ||
            take(&q, end, &out->bin, &out->bin_len) < 0)
            return -EBADMSG;
    }
    out->users = q;
    out->users_len = (size_t)(end - q);
    if (q == end)
        return -EBADMSG;
    for (const char *u = q; u < end; u += 1 + (uint8_t)u[0]) {
        size_t n = (uint8_t)u[0];
        if (n == 0 || n > SB_USER_ID_MAX || (size_t)(end - u) < 1 + n)
            return -EBADMSG;
    }
    return 0;
}
