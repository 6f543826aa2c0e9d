#include "core/timer.h"

#include <assert.h>

static void list_init(struct sb_timer *head)
{
    head->next = head->prev = head;
}

static void list_push(struct sb_timer *head, struct sb_timer *t)
{
    t->prev = head->prev;
    t->next = head;
    head->prev->next = t;
    head->prev = t;
}

static void list_unlink(struct sb_timer *t)
{
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->next = t->prev = NULL;
}

void sb__wheel_init(struct sb_wheel *wh, uint64_t now_ms)
{
    for (size_t i = 0; i < SB_WHEEL_SLOTS; i++)
        list_init(&wh->slots[i]);
    wh->tick = now_ms / SB_TIMER_TICK_MS;
    wh->count = 0;
}

void sb__wheel_add(struct sb_wheel *wh, struct sb_timer *t, uint64_t due_ms)
{
    sb__wheel_del(wh, t);
    uint64_t tick = (due_ms + SB_TIMER_TICK_MS - 1) / SB_TIMER_TICK_MS;
    /* A deadline in a tick already processed fires on the next one. */
    if (tick <= wh->tick)
        tick = wh->tick + 1;
    t->due_tick = tick;
    list_push(&wh->slots[tick & (SB_WHEEL_SLOTS - 1)], t);
    wh->count++;
}

void sb__wheel_del(struct sb_wheel *wh, struct sb_timer *t)
{
    if (!sb__timer_armed(t))
        return;
    list_unlink(t);
    assert(wh->count > 0);
    wh->count--;
}

void sb__wheel_expire(struct sb_wheel *wh, uint64_t now_ms, sb_timer_cb cb, void *ctx)
{
    uint64_t now_tick = now_ms / SB_TIMER_TICK_MS;
    /* After a long stall one full turn visits every slot; no need to step through more. */
    uint64_t first = wh->tick + 1;
    if (now_tick >= first + SB_WHEEL_SLOTS)
        first = now_tick - SB_WHEEL_SLOTS + 1;
    for (uint64_t tick = first; tick <= now_tick && wh->count > 0; tick++) {
        /* Callbacks that arm a timer for a deadline already passed must land on the next
         * tick, not in a slot this loop has gone by: sb__wheel_add reads wh->tick. */
        wh->tick = tick;
        struct sb_timer *head = &wh->slots[tick & (SB_WHEEL_SLOTS - 1)];
        /* Detach the slot first: callbacks may arm timers into this very slot. */
        struct sb_timer pending;
        list_init(&pending);
        if (head->next != head) {
            pending.next = head->next;
            pending.prev = head->prev;
            pending.next->prev = &pending;
            pending.prev->next = &pending;
            list_init(head);
        }
        while (pending.next != &pending) {
            struct sb_timer *t = pending.next;
            list_unlink(t);
            if (t->due_tick <= now_tick) {
                wh->count--;
                cb(t, ctx);
            } else {
                list_push(head, t); /* due in a later turn of the wheel */
            }
        }
    }
    wh->tick = now_tick;
}

int sb__wheel_timeout_ms(const struct sb_wheel *wh, uint64_t now_ms)
{
    if (wh->count == 0)
        return -1;
    uint64_t next_ms = (now_ms / SB_TIMER_TICK_MS + 1) * SB_TIMER_TICK_MS;
    return (int)(next_ms - now_ms);
}
