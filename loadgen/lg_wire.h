/*
 * Little-endian integer encoding for the records a child process sends its parent. Both ends are
 * the same binary on the same host, but a fixed byte order keeps the format testable and the
 * reader independent of struct layout.
 */
#ifndef SB_LOADGEN_LG_WIRE_H
#define SB_LOADGEN_LG_WIRE_H

#include <stdint.h>

/* Writes v at p and returns the byte after it. */
static inline uint8_t *lg_wire_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 4;
}

static inline uint8_t *lg_wire_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 8;
}

static inline uint32_t lg_wire_get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t lg_wire_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

#endif
