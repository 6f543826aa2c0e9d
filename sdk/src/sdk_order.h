/*
 * The SDK's conversation table: per conversation the last sequence number delivered to the
 * application, whether a SYNC of it is under way, and the messages that arrived ahead of a gap
 * (held, in seq order, until the gap is filled). The rules of exactly-once, in-order delivery
 * live here; the client decides when to SYNC. Not thread-safe (the client's lock covers it).
 */
#ifndef SB_SDK_ORDER_H
#define SB_SDK_ORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SB__CONV_MAX 132
/* Messages held per conversation; later ones are dropped and come again with the SYNC. */
#define SB__HELD_MAX 1024

/*
 * A message that arrived early, kept as an encoded MESSAGE frame; len 0 marks one of the
 * client's own messages (known from its ACK), which only moves the position.
 */
struct sb__held {
    struct sb__held *next;
    uint64_t seq;
    size_t len;
    uint8_t frame[];
};

struct sb__conv {
    struct sb__conv *next; /* hash chain */
    uint64_t delivered;    /* the last seq delivered to the application (0: none) */
    uint64_t sync_from;    /* delivered when the SYNC under way was sent */
    uint64_t gap_at_ms; /* a gap was seen: SYNC it at this time unless it fills first (0: none) */
    bool is_syncing;
    uint64_t sync_to;      /* at gap_at_ms, SYNC while delivered < this, even with nothing held */
    struct sb__held *held; /* ascending seq, no two alike, all > delivered + 1 when stored */
    size_t held_count;
    size_t conv_len;
    char conv[SB__CONV_MAX + 1];
};

struct sb__convs {
    struct sb__conv **buckets;
    size_t nbuckets; /* a power of two, or 0 before the first insert */
    size_t count;
};

enum sb__order_verdict {
    SB__ORDER_DELIVER = 0, /* the next in sequence: deliver it now */
    SB__ORDER_DROP = 1,    /* at or before the position: delivered already */
    SB__ORDER_HOLD = 2,    /* after a gap: hold it and SYNC the gap */
};

void sb__convs_init(struct sb__convs *t);
void sb__convs_destroy(struct sb__convs *t); /* frees every entry and its held messages */

/* The entry of conv, or NULL. */
struct sb__conv *sb__convs_find(const struct sb__convs *t, const char *conv, size_t len);

/*
 * The entry of conv, created at position start when missing (*created says which). Returns NULL
 * when len is 0 or over SB__CONV_MAX, or out of memory.
 */
struct sb__conv *sb__convs_get(struct sb__convs *t, const char *conv, size_t len, uint64_t start,
                               bool *created);

/* Iterates: pass NULL first, then the previous entry; NULL at the end. */
struct sb__conv *sb__convs_next(const struct sb__convs *t, const struct sb__conv *prev);

enum sb__order_verdict sb__conv_classify(const struct sb__conv *cv, uint64_t seq);

/*
 * Holds a copy of frame (len bytes), the MESSAGE of seq (len 0, frame NULL: an own message).
 * Returns 0, 1 when seq is held already or the conversation holds SB__HELD_MAX (the copy is
 * dropped), or -ENOMEM.
 */
int sb__conv_hold(struct sb__conv *cv, uint64_t seq, const uint8_t *frame, size_t len);

/*
 * Unlinks and returns the held message that is next in sequence (seq == delivered + 1), after
 * freeing any at or before the position; NULL when there is none. The caller frees it.
 */
struct sb__held *sb__conv_pop_ready(struct sb__conv *cv);

/* The lowest held seq, or 0 when nothing is held. */
uint64_t sb__conv_first_held(const struct sb__conv *cv);

void sb__conv_clear_held(struct sb__conv *cv);

#endif
