/*
 * A hashed timer wheel with 10 ms ticks, one per worker. Timers are intrusive (embedded in their
 * owner); adding and removing are O(1); expiry visits only the slots whose ticks have passed.
 * Owner thread only.
 */
#ifndef SB_CORE_TIMER_H
#define SB_CORE_TIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SB_TIMER_TICK_MS 10
#define SB_WHEEL_SLOTS 1024 /* a power of two: 10.24 s per turn; later deadlines wait turns */

struct sb_timer {
    struct sb_timer *next, *prev; /* NULL when not armed */
    uint64_t due_tick;
};

struct sb_wheel {
    struct sb_timer slots[SB_WHEEL_SLOTS]; /* list heads */
    uint64_t tick;                         /* the last tick processed */
    size_t count;                          /* armed timers */
};

typedef void (*sb_timer_cb)(struct sb_timer *t, void *ctx);

void sb__wheel_init(struct sb_wheel *wh, uint64_t now_ms);

/* Arms t to fire at due_ms (rounded up to the next tick); re-arms it if armed. */
void sb__wheel_add(struct sb_wheel *wh, struct sb_timer *t, uint64_t due_ms);

/* Disarms t; harmless when not armed. */
void sb__wheel_del(struct sb_wheel *wh, struct sb_timer *t);

static inline bool sb__timer_armed(const struct sb_timer *t)
{
    return t->next != NULL;
}

/* Fires (disarms, then calls cb) every timer due at or before now_ms. cb may re-arm timers. */
void sb__wheel_expire(struct sb_wheel *wh, uint64_t now_ms, sb_timer_cb cb, void *ctx);

/* Milliseconds until the next tick when timers are armed, or -1 when none are. */
int sb__wheel_timeout_ms(const struct sb_wheel *wh, uint64_t now_ms);

#endif
