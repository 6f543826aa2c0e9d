#include "sdk_order.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* FNV-1a: conversation ids are short, and the table is private to one client. */
static size_t hash_conv(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    }
    return (size_t)h;
}

void sb__convs_init(struct sb__convs *t)
{
    memset(t, 0, sizeof(*t));
}

void sb__convs_destroy(struct sb__convs *t)
{
    for (size_t b = 0; b < t->nbuckets; b++) {
        struct sb__conv *cv = t->buckets[b];
        while (cv != NULL) {
            struct sb__conv *next = cv->next;
            sb__conv_clear_held(cv);
            free(cv);
            cv = next;
        }
    }
    free(t->buckets);
    memset(t, 0, sizeof(*t));
}

struct sb__conv *sb__convs_find(const struct sb__convs *t, const char *conv, size_t len)
{
    if (t->nbuckets == 0) {
        return NULL;
    }
    struct sb__conv *cv = t->buckets[hash_conv(conv, len) & (t->nbuckets - 1)];
    for (; cv != NULL; cv = cv->next) {
        if (cv->conv_len == len && memcmp(cv->conv, conv, len) == 0) {
            return cv;
        }
    }
    return NULL;
}

/* Doubles the buckets when the table is as full as it is wide. */
static int grow(struct sb__convs *t)
{
    size_t n = t->nbuckets == 0 ? 16 : t->nbuckets * 2;
    struct sb__conv **b = calloc(n, sizeof(*b));
    if (b == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct sb__conv *cv = t->buckets[i];
        while (cv != NULL) {
            struct sb__conv *next = cv->next;
            size_t k = hash_conv(cv->conv, cv->conv_len) & (n - 1);
            cv->next = b[k];
            b[k] = cv;
            cv = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return 0;
}

struct sb__conv *sb__convs_get(struct sb__convs *t, const char *conv, size_t len, uint64_t start,
                               bool *created)
{
    *created = false;
    if (len == 0 || len > SB__CONV_MAX) {
        return NULL;
    }
    struct sb__conv *cv = sb__convs_find(t, conv, len);
    if (cv != NULL) {
        return cv;
    }
    if (t->count >= t->nbuckets && grow(t) < 0) {
        return NULL;
    }
    cv = calloc(1, sizeof(*cv));
    if (cv == NULL) {
        return NULL;
    }
    memcpy(cv->conv, conv, len);
    cv->conv_len = len;
    cv->delivered = start;
    size_t k = hash_conv(conv, len) & (t->nbuckets - 1);
    cv->next = t->buckets[k];
    t->buckets[k] = cv;
    t->count++;
    *created = true;
    return cv;
}

struct sb__conv *sb__convs_next(const struct sb__convs *t, const struct sb__conv *prev)
{
    size_t b = 0;
    if (prev != NULL) {
        if (prev->next != NULL) {
            return prev->next;
        }
        b = (hash_conv(prev->conv, prev->conv_len) & (t->nbuckets - 1)) + 1;
    }
    for (; b < t->nbuckets; b++) {
        if (t->buckets[b] != NULL) {
            return t->buckets[b];
        }
    }
    return NULL;
}

enum sb__order_verdict sb__conv_classify(const struct sb__conv *cv, uint64_t seq)
{
    if (seq <= cv->delivered) {
        return SB__ORDER_DROP;
    }
    return seq == cv->delivered + 1 ? SB__ORDER_DELIVER : SB__ORDER_HOLD;
}

int sb__conv_hold(struct sb__conv *cv, uint64_t seq, const uint8_t *frame, size_t len)
{
    struct sb__held **pp = &cv->held;
    while (*pp != NULL && (*pp)->seq < seq) {
        pp = &(*pp)->next;
    }
    if ((*pp != NULL && (*pp)->seq == seq) || cv->held_count >= SB__HELD_MAX) {
        return 1;
    }
    struct sb__held *h = malloc(sizeof(*h) + len);
    if (h == NULL) {
        return -ENOMEM;
    }
    h->seq = seq;
    h->len = len;
    if (len > 0) {
        memcpy(h->frame, frame, len);
    }
    h->next = *pp;
    *pp = h;
    cv->held_count++;
    return 0;
}

struct sb__held *sb__conv_pop_ready(struct sb__conv *cv)
{
    while (cv->held != NULL && cv->held->seq <= cv->delivered) {
        struct sb__held *h = cv->held;
        cv->held = h->next;
        cv->held_count--;
        free(h);
    }
    if (cv->held == NULL || cv->held->seq != cv->delivered + 1) {
        return NULL;
    }
    struct sb__held *h = cv->held;
    cv->held = h->next;
    cv->held_count--;
    h->next = NULL;
    return h;
}

uint64_t sb__conv_first_held(const struct sb__conv *cv)
{
    return cv->held != NULL ? cv->held->seq : 0;
}

void sb__conv_clear_held(struct sb__conv *cv)
{
    while (cv->held != NULL) {
        struct sb__held *h = cv->held;
        cv->held = h->next;
        free(h);
    }
    cv->held_count = 0;
}
