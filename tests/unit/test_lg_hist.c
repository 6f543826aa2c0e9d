/* loadgen's log-linear histogram against a sorted-array reference. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "loadgen/lg_hist.h"
#include "loadgen/lg_rand.h"
#include "loadgen/lg_stats.h"

static const double pcts[] = {0, 1, 25, 50, 90, 99, 99.9, 99.99, 100};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The nearest-rank percentile of a sorted array: what lg_hist_percentile approximates. */
static uint64_t reference(const uint64_t *sorted, size_t n, double p)
{
    if (p <= 0)
        return sorted[0];
    double r = ceil(p / 100.0 * (double)n);
    size_t rank = r < 1 ? 1 : (size_t)r;
    return sorted[(rank > n ? n : rank) - 1];
}

/* Random values spread over 1 ns .. ~100 s on a log scale, like real latencies. */
static uint64_t random_value(struct lg_rand *r)
{
    unsigned bits = (unsigned)(lg_rand_next(r) % 37);
    uint64_t v = lg_rand_next(r) & ((2ULL << bits) - 1);
    return v;
}

static void test_percentiles(void)
{
    enum { N = 200000 };
    uint64_t *vals = malloc(N * sizeof(*vals));
    struct lg_hist *h = calloc(1, sizeof(*h));
    struct lg_rand r = {12345};
    uint64_t sum = 0;
    for (size_t i = 0; i < N; i++) {
        vals[i] = random_value(&r);
        sum += vals[i];
        lg_hist_record(h, vals[i]);
    }
    qsort(vals, N, sizeof(*vals), cmp_u64);
    CHECK_INT(h->count, N);
    CHECK_INT(h->min, vals[0]);
    CHECK_INT(h->max, vals[N - 1]);
    CHECK(fabs(lg_hist_mean(h) - (double)sum / N) < 1e-6 * (double)sum / N);
    for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++) {
        uint64_t want = reference(vals, N, pcts[i]);
        uint64_t got = lg_hist_percentile(h, pcts[i]);
        uint64_t err = got > want ? got - want : want - got;
        /* The stated bound: within 1/256 of the true value (exact below 256). */
        if (err * 256 > want) {
            CHECK_FAIL_("p%g: got %llu, want %llu", pcts[i], (unsigned long long)got,
                        (unsigned long long)want);
        } else {
            check_passed++;
        }
    }
    free(vals);
    free(h);
}

static void test_small_exact(void)
{
    struct lg_hist *h = calloc(1, sizeof(*h));
    for (uint64_t v = 0; v < 256; v++)
        lg_hist_record(h, v);
    CHECK_INT(lg_hist_percentile(h, 50), 127);
    CHECK_INT(lg_hist_percentile(h, 100), 255);
    CHECK_INT(lg_hist_percentile(h, 0), 0);
    for (unsigned i = 0; i < 256; i++)
        CHECK_INT(lg_hist_index(i), i);
    free(h);
}

static void test_buckets(void)
{
    /* Every bucket's values map back to it, and buckets tile the range without gaps. */
    for (unsigned i = 0; i + 1 < LG_HIST_BUCKETS; i++) {
        uint64_t lo = lg_hist_bucket_low(i), w = lg_hist_bucket_width(i);
        if (lg_hist_index(lo) != i || lg_hist_index(lo + w - 1) != i ||
            lg_hist_bucket_low(i + 1) != lo + w) {
            CHECK_FAIL_("bucket %u [%llu, +%llu) does not tile", i, (unsigned long long)lo,
                        (unsigned long long)w);
            return;
        }
    }
    check_passed++;
    /* Relative width never exceeds 1/128 above the exact range. */
    for (unsigned i = LG_HIST_SUB; i < LG_HIST_BUCKETS; i++)
        if (lg_hist_bucket_width(i) * 128 > lg_hist_bucket_low(i)) {
            CHECK_FAIL_("bucket %u too wide", i);
            return;
        }
    check_passed++;
}

static void test_extremes(void)
{
    struct lg_hist *h = calloc(1, sizeof(*h));
    CHECK_INT(lg_hist_percentile(h, 99), 0);
    CHECK(lg_hist_mean(h) == 0.0);
    lg_hist_record(h, UINT64_MAX);
    lg_hist_record(h, 200000000000ULL); /* 200 s: past the precise range */
    lg_hist_record(h, 0);
    CHECK_INT(lg_hist_index(UINT64_MAX), LG_HIST_BUCKETS - 1);
    CHECK_INT(h->min, 0);
    CHECK(h->max == UINT64_MAX);
    CHECK(lg_hist_percentile(h, 100) == UINT64_MAX);
    CHECK_INT(lg_hist_percentile(h, 10), 0);
    /* Clamped values report at least the last bucket's start, never more than max. */
    uint64_t p50 = lg_hist_percentile(h, 50);
    CHECK(p50 >= lg_hist_bucket_low(LG_HIST_BUCKETS - 1));
    /* 100 s still within the stated precision. */
    memset(h, 0, sizeof(*h));
    lg_hist_record(h, 100000000000ULL);
    lg_hist_record(h, 100000000001ULL);
    uint64_t got = lg_hist_percentile(h, 50);
    CHECK(got >= 100000000000ULL - 100000000000ULL / 256 &&
          got <= 100000000000ULL + 100000000000ULL / 256);
    free(h);
}

static void test_merge(void)
{
    struct lg_hist *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    struct lg_hist *all = calloc(1, sizeof(*all));
    struct lg_rand r = {777};
    for (int i = 0; i < 50000; i++) {
        uint64_t v = random_value(&r);
        lg_hist_record(i % 3 ? a : b, v);
        lg_hist_record(all, v);
    }
    struct lg_hist *m = calloc(1, sizeof(*m));
    lg_hist_merge(m, a); /* into an empty one: min must come from a, not the zero */
    lg_hist_merge(m, b);
    CHECK_MEM(m, all, sizeof(*m));
    struct lg_hist *empty = calloc(1, sizeof(*empty));
    lg_hist_merge(m, empty);
    CHECK_MEM(m, all, sizeof(*m));
    free(a);
    free(b);
    free(all);
    free(m);
    free(empty);
}

static void test_serialize(void)
{
    struct lg_hist *h = calloc(1, sizeof(*h)), *back = calloc(1, sizeof(*back));
    uint8_t *buf = malloc(LG_HIST_SERIALIZED_MAX);
    struct lg_rand r = {99};
    /* Empty first, then full. */
    ssize_t n = lg_hist_serialize(h, buf, LG_HIST_SERIALIZED_MAX);
    CHECK(n > 0);
    CHECK_INT(lg_hist_deserialize(back, buf, (size_t)n), n);
    CHECK_MEM(back, h, sizeof(*h));
    for (int i = 0; i < 100000; i++)
        lg_hist_record(h, random_value(&r));
    lg_hist_record(h, UINT64_MAX);
    n = lg_hist_serialize(h, buf, LG_HIST_SERIALIZED_MAX);
    CHECK(n > 0 && n <= LG_HIST_SERIALIZED_MAX);
    CHECK_INT(lg_hist_deserialize(back, buf, (size_t)n), n);
    CHECK_MEM(back, h, sizeof(*h));
    CHECK_INT(lg_hist_serialize(h, buf, (size_t)n - 1), -ENOSPC);
    /* Truncated or corrupted input is refused, never read past. */
    CHECK_INT(lg_hist_deserialize(back, buf, (size_t)n - 1), -EBADMSG);
    CHECK_INT(lg_hist_deserialize(back, buf, 10), -EBADMSG);
    buf[45]++; /* a bucket count: no longer adds up to count */
    CHECK_INT(lg_hist_deserialize(back, buf, (size_t)n), -EBADMSG);
    free(h);
    free(back);
    free(buf);
}

static void test_stats_roundtrip(void)
{
    struct lg_stats *s = calloc(1, sizeof(*s)), *back = calloc(1, sizeof(*back));
    struct lg_stats *sum = calloc(1, sizeof(*sum));
    for (int i = 0; i < LG_C_COUNT; i++)
        s->c[i] = (uint64_t)i * 1000 + 7;
    s->ramp_ns = 123;
    s->run_ns = 10000000000ULL;
    s->msg_rate = 12345.678;
    s->byte_rate = 1e9 / 3;
    s->send_rate = 0.1;
    s->status_sample = 404;
    s->errno_sample = EPERM;
    struct lg_rand r = {5};
    for (int i = 0; i < 1000; i++)
        lg_hist_record(&s->h[i % LG_H_COUNT], random_value(&r));
    size_t cap = lg_stats_serialized_max();
    uint8_t *buf = malloc(cap);
    ssize_t n = lg_stats_serialize(s, buf, cap);
    CHECK(n > 0);
    CHECK_INT(lg_stats_deserialize(back, buf, (size_t)n), n);
    CHECK_MEM(back, s, sizeof(*s));
    CHECK_INT(lg_stats_deserialize(back, buf, (size_t)n / 2), -EBADMSG);
    /* Merging two copies doubles counters and rates, keeps samples and the longer window. */
    lg_stats_merge(sum, s);
    lg_stats_merge(sum, s);
    CHECK_INT(sum->c[LG_C_ESTABLISHED], 2 * s->c[LG_C_ESTABLISHED]);
    CHECK(sum->msg_rate == 2 * s->msg_rate);
    CHECK_INT(sum->run_ns, s->run_ns);
    CHECK_INT(sum->status_sample, 404);
    CHECK_INT(sum->h[0].count, 2 * s->h[0].count);
    free(s);
    free(back);
    free(sum);
    free(buf);
}

int main(void)
{
    test_percentiles();
    test_small_exact();
    test_buckets();
    test_extremes();
    test_merge();
    test_serialize();
    test_stats_roundtrip();
    return check_done();
}
