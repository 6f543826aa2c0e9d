#include "loadgen/lg_rand.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

void lg_rand_seed(struct lg_rand *r)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
        /* Early boot or a seccomp filter: distinct workers still get distinct streams. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)r;
    }
    r->state = seed;
}

void lg_rand_fill(struct lg_rand *r, void *out, size_t len)
{
    uint8_t *p = out;
    while (len > 0) {
        uint64_t v = lg_rand_next(r);
        size_t n = len < sizeof(v) ? len : sizeof(v);
        memcpy(p, &v, n);
        p += n;
        len -= n;
    }
}
