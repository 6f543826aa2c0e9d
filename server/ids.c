#include "server/ids.h"

#include <errno.h>
#include <string.h>
#include <xxhash.h>

bool sb_user_id_valid(const char *id, size_t len)
{
    if (len == 0 || len > SB_USER_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '@' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

unsigned sb_home_worker(const char *id, size_t len, unsigned workers)
{
    return (unsigned)(XXH3_64bits(id, len) % workers);
}

ssize_t sb_dm_conv_id(const char *a, size_t alen, const char *b, size_t blen, char *out)
{
    size_t n = alen < blen ? alen : blen;
    int cmp = memcmp(a, b, n);
    if (cmp == 0 && alen == blen)
        return -EINVAL;
    if (cmp > 0 || (cmp == 0 && alen > blen)) {
        const char *t = a;
        a = b;
        b = t;
        size_t tl = alen;
        alen = blen;
        blen = tl;
    }
    memcpy(out, "dm:", 3);
    memcpy(out + 3, a, alen);
    out[3 + alen] = ':';
    memcpy(out + 4 + alen, b, blen);
    out[4 + alen + blen] = '\0';
    return (ssize_t)(4 + alen + blen);
}

int sb_msgid_init(struct sb_msgid_gen *g, unsigned generator)
{
    if (generator >= 2048)
        return -ERANGE;
    memset(g, 0, sizeof(*g));
    g->generator = generator;
    return 0;
}

uint64_t sb_msgid_next(struct sb_msgid_gen *g, uint64_t now_ms)
{
    uint64_t ms = now_ms > SB_MSGID_EPOCH_MS ? now_ms - SB_MSGID_EPOCH_MS : 0;
    if (ms > g->last_ms) {
        g->last_ms = ms;
        g->seq = 0;
    } else if (++g->seq == 4096) {
        /* This millisecond is used up (or the clock went back): borrow the next one. */
        g->last_ms++;
        g->seq = 0;
    }
    return (g->last_ms << 23) | ((uint64_t)g->generator << 12) | g->seq;
}
