#include "loadgen/lg_hist.h"

#include <errno.h>
#include <string.h>

#include "loadgen/lg_wire.h"

#define HIST_MAGIC 0x3148474cu /* "LGH1" */

uint64_t lg_hist_bucket_low(unsigned i)
{
    if (i < LG_HIST_SUB)
        return i;
    unsigned group = i >> LG_HIST_SUB_BITS;
    uint64_t sub = i & (LG_HIST_SUB - 1);
    return (LG_HIST_SUB + sub) << (group - 1);
}

uint64_t lg_hist_bucket_width(unsigned i)
{
    if (i < LG_HIST_SUB)
        return 1;
    return 1ULL << ((i >> LG_HIST_SUB_BITS) - 1);
}

void lg_hist_merge(struct lg_hist *dst, const struct lg_hist *src)
{
    if (src->count == 0)
        return;
    if (dst->count == 0 || src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    dst->count += src->count;
    dst->sum += src->sum;
    for (unsigned i = 0; i < LG_HIST_BUCKETS; i++)
        dst->bucket[i] += src->bucket[i];
}

uint64_t lg_hist_percentile(const struct lg_hist *h, double p)
{
    if (h->count == 0)
        return 0;
    if (p >= 100.0)
        return h->max;
    if (p <= 0.0)
        return h->min;
    /* The rank of the wanted value among count sorted values, 1-based ("nearest rank"). */
    uint64_t rank = (uint64_t)(p / 100.0 * (double)h->count);
    if ((double)rank < p / 100.0 * (double)h->count)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    unsigned i = 0;
    for (; i < LG_HIST_BUCKETS - 1; i++) {
        seen += h->bucket[i];
        if (seen >= rank)
            break;
    }
    /* The middle of the bucket halves the worst-case error of either edge. */
    uint64_t v = lg_hist_bucket_low(i) + lg_hist_bucket_width(i) / 2;
    if (v < h->min)
        v = h->min;
    if (v > h->max)
        v = h->max;
    return v;
}

double lg_hist_mean(const struct lg_hist *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}

ssize_t lg_hist_serialize(const struct lg_hist *h, uint8_t *out, size_t cap)
{
    uint32_t nonzero = 0;
    for (unsigned i = 0; i < LG_HIST_BUCKETS; i++)
        nonzero += h->bucket[i] != 0;
    size_t need = 4 + 4 * 8 + 4 + (size_t)nonzero * 12;
    if (need > cap)
        return -ENOSPC;
    uint8_t *p = out;
    p = lg_wire_put32(p, HIST_MAGIC);
    p = lg_wire_put64(p, h->count);
    p = lg_wire_put64(p, h->sum);
    p = lg_wire_put64(p, h->min);
    p = lg_wire_put64(p, h->max);
    p = lg_wire_put32(p, nonzero);
    for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
        if (h->bucket[i] == 0)
            continue;
        p = lg_wire_put32(p, i);
        p = lg_wire_put64(p, h->bucket[i]);
    }
    return (ssize_t)(p - out);
}

ssize_t lg_hist_deserialize(struct lg_hist *h, const uint8_t *in, size_t len)
{
    const size_t head = 4 + 4 * 8 + 4;
    if (len < head || lg_wire_get32(in) != HIST_MAGIC)
        return -EBADMSG;
    memset(h, 0, sizeof(*h));
    h->count = lg_wire_get64(in + 4);
    h->sum = lg_wire_get64(in + 12);
    h->min = lg_wire_get64(in + 20);
    h->max = lg_wire_get64(in + 28);
    uint32_t nonzero = lg_wire_get32(in + 36);
    if (nonzero > LG_HIST_BUCKETS || len - head < (size_t)nonzero * 12)
        return -EBADMSG;
    const uint8_t *p = in + head;
    uint64_t total = 0;
    long prev = -1;
    for (uint32_t n = 0; n < nonzero; n++, p += 12) {
        uint32_t i = lg_wire_get32(p);
        uint64_t c = lg_wire_get64(p + 4);
        /* Strictly increasing indices rule out duplicates that would double-count. */
        if (i >= LG_HIST_BUCKETS || (long)i <= prev || c == 0)
            return -EBADMSG;
        h->bucket[i] = c;
        total += c;
        prev = (long)i;
    }
    if (total != h->count || (h->count > 0 && h->min > h->max))
        return -EBADMSG;
    return (ssize_t)(p - in);
}
