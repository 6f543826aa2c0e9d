/*
 * Reference-counted output chunks. One encoded frame can be queued to many connections of the
 * same worker (fan-out) without copying. Chunks belong to the worker that created them and are
 * never shared across workers, so the count is a plain integer. Small chunks come from a
 * per-worker free list; large ones from malloc.
 */
#ifndef SB_CORE_CHUNK_H
#define SB_CORE_CHUNK_H

#include <stddef.h>
#include <stdint.h>

struct sb_worker;
struct sb_conn;

#define SB_CHUNK_SMALL 4096 /* bytes of data in a pooled chunk */

struct sb_chunk {
    uint32_t refs;
    uint32_t len; /* bytes written */
    uint32_t cap; /* bytes available in data */
    uint32_t pooled;
    struct sb_chunk *next_free;
    uint8_t data[] __attribute__((aligned(16)));
};

/* A chunk with at least cap bytes of room, len 0, one reference. NULL without memory. */
struct sb_chunk *sb_chunk_new(struct sb_worker *w, size_t cap);

static inline void sb_chunk_ref(struct sb_chunk *ch)
{
    ch->refs++;
}

/* Drops a reference; the last one returns the chunk to its pool or frees it. */
void sb_chunk_unref(struct sb_worker *w, struct sb_chunk *ch);

/* Queues the chunk's bytes [0, len) on c, taking a new reference. Returns 0 or -ENOMEM. */
int sb_conn_send_chunk(struct sb_conn *c, struct sb_chunk *ch);

#endif
