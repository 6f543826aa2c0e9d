/*
 * A small, fast PRNG for masking keys and handshake nonces: one per worker thread, never shared.
 * Masking keys only have to be unpredictable to intermediaries, not cryptographically strong, so
 * a wyrand-style generator (one 64x64->128 multiply per call) seeded from getrandom(2) is enough.
 */
#ifndef SB_LOADGEN_LG_RAND_H
#define SB_LOADGEN_LG_RAND_H

#include <stddef.h>
#include <stdint.h>

struct lg_rand {
    uint64_t state;
};

/* Seeds r from getrandom(2), falling back to the clock and r's address if that fails. */
void lg_rand_seed(struct lg_rand *r);

/* Returns the next 64 random bits. */
static inline uint64_t lg_rand_next(struct lg_rand *r)
{
    r->state += 0xa0761d6478bd642fULL;
    __uint128_t t = (__uint128_t)r->state * (r->state ^ 0xe7037ed1a0b428dbULL);
    return (uint64_t)(t >> 64) ^ (uint64_t)t;
}

/* Fills len bytes of out with random bytes. */
void lg_rand_fill(struct lg_rand *r, void *out, size_t len);

#endif
