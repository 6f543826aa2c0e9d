/*
 * A log-linear latency histogram: every power of two is split into 128 linear sub-buckets, so a
 * recorded value is known to within 1/128 of itself and a reported percentile (the middle of its
 * bucket) to within 1/256. Values below 256 are exact. Values up to 2^37 ns (~137 s) keep that
 * precision; larger ones land in the last bucket (max stays exact).
 *
 * Recording is a few instructions and never allocates. Histograms merge by adding buckets, so
 * each worker thread records into its own and the results are combined across threads and child
 * processes at the end (the serialized form crosses the pipe from a child to its parent).
 * A zero-filled struct lg_hist is a valid empty histogram. Not thread-safe: one writer at a time.
 */
#ifndef SB_LOADGEN_LG_HIST_H
#define SB_LOADGEN_LG_HIST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LG_HIST_SUB_BITS 7
#define LG_HIST_SUB (1u << LG_HIST_SUB_BITS)
#define LG_HIST_MAX_BITS 37
#define LG_HIST_BUCKETS ((LG_HIST_MAX_BITS - LG_HIST_SUB_BITS + 1) * LG_HIST_SUB)

/* Upper bound of lg_hist_serialize's output: header plus every bucket. */
#define LG_HIST_SERIALIZED_MAX (4 + 4 * 8 + 4 + LG_HIST_BUCKETS * (4 + 8))

struct lg_hist {
    uint64_t count;
    uint64_t sum; /* wraps after 1.8e19: far beyond any run's total nanoseconds */
    uint64_t min; /* valid when count > 0 */
    uint64_t max;
    uint64_t bucket[LG_HIST_BUCKETS];
};

/* Returns the bucket that holds value v. */
static inline unsigned lg_hist_index(uint64_t v)
{
    if (v < LG_HIST_SUB)
        return (unsigned)v;
    unsigned k = 63u - (unsigned)__builtin_clzll(v); /* v in [2^k, 2^(k+1)) */
    if (k >= LG_HIST_MAX_BITS)
        return LG_HIST_BUCKETS - 1;
    unsigned sub = (unsigned)(v >> (k - LG_HIST_SUB_BITS)) & (LG_HIST_SUB - 1);
    return ((k - LG_HIST_SUB_BITS + 1) << LG_HIST_SUB_BITS) + sub;
}

/* Records one value (nanoseconds, by convention). */
static inline void lg_hist_record(struct lg_hist *h, uint64_t v)
{
    if (v < h->min || h->count == 0)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count++;
    h->sum += v;
    h->bucket[lg_hist_index(v)]++;
}

/* The smallest value that falls into bucket i, and the bucket's width. */
uint64_t lg_hist_bucket_low(unsigned i);
uint64_t lg_hist_bucket_width(unsigned i);

/* Adds every value recorded in src to dst. */
void lg_hist_merge(struct lg_hist *dst, const struct lg_hist *src);

/*
 * Returns the value at percentile p (0..100): the p-th smallest recorded value to within 1/256 of
 * it, clamped to [min, max]; p = 100 gives max exactly. Returns 0 for an empty histogram.
 */
uint64_t lg_hist_percentile(const struct lg_hist *h, double p);

/* Returns the exact mean, or 0 for an empty histogram. */
double lg_hist_mean(const struct lg_hist *h);

/*
 * Writes h into out in a compact little-endian form (only non-empty buckets).
 * Returns the number of bytes written, or -ENOSPC when cap is too small
 * (LG_HIST_SERIALIZED_MAX is always enough).
 */
ssize_t lg_hist_serialize(const struct lg_hist *h, uint8_t *out, size_t cap);

/*
 * Reads a histogram written by lg_hist_serialize from the start of in into *h (overwritten).
 * Returns the number of bytes consumed, or -EBADMSG when in is truncated or inconsistent.
 */
ssize_t lg_hist_deserialize(struct lg_hist *h, const uint8_t *in, size_t len);

#endif
