#include "server/table.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

void sb_table_init(struct sb_table *t, sb_table_key_cb key)
{
    memset(t, 0, sizeof(*t));
    t->key = key;
}

void sb_table_destroy(struct sb_table *t)
{
    free(t->slots);
    t->slots = NULL;
    t->cap = t->count = 0;
}

uint64_t sb_table_hash(const char *key, size_t len)
{
    uint64_t h = XXH3_64bits(key, len);
    return h ? h : 1;
}

static bool matches(const struct sb_table *t, const struct sb_table_slot *s, uint64_t h,
                    const char *key, size_t len)
{
    if (s->hash != h)
        return false;
    size_t klen;
    const char *k = t->key(s->obj, &klen);
    return klen == len && memcmp(k, key, len) == 0;
}

void *sb_table_get(const struct sb_table *t, const char *key, size_t len)
{
    if (!t->count)
        return NULL;
    uint64_t h = sb_table_hash(key, len);
    size_t mask = t->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const struct sb_table_slot *s = &t->slots[i];
        if (!s->hash)
            return NULL;
        if (matches(t, s, h, key, len))
            return s->obj;
    }
}

static void insert(struct sb_table_slot *slots, size_t cap, uint64_t h, void *obj)
{
    size_t mask = cap - 1, i = h & mask;
    while (slots[i].hash)
        i = (i + 1) & mask;
    slots[i].hash = h;
    slots[i].obj = obj;
}

static int grow(struct sb_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 16;
    struct sb_table_slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].hash)
            insert(slots, cap, t->slots[i].hash, t->slots[i].obj);
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

int sb_table_add(struct sb_table *t, void *obj)
{
    if ((t->count + 1) * 4 > t->cap * 3) {
        int r = grow(t);
        if (r < 0)
            return r;
    }
    size_t len;
    const char *key = t->key(obj, &len);
    insert(t->slots, t->cap, sb_table_hash(key, len), obj);
    t->count++;
    return 0;
}

void *sb_table_remove(struct sb_table *t, const char *key, size_t len)
{
    if (!t->count)
        return NULL;
    uint64_t h = sb_table_hash(key, len);
    size_t mask = t->cap - 1, i = h & mask;
    while (t->slots[i].hash && !matches(t, &t->slots[i], h, key, len))
        i = (i + 1) & mask;
    if (!t->slots[i].hash)
        return NULL;
    void *obj = t->slots[i].obj;
    /* Backward shift: pull later entries of the probe run into the hole, so lookups never
     * stop early at it. An entry may move to the hole only if its home is not between the
     * hole and its current slot. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; t->slots[j].hash; j = (j + 1) & mask) {
        size_t home = t->slots[j].hash & mask;
        bool movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
        if (movable) {
            t->slots[hole] = t->slots[j];
            hole = j;
        }
    }
    t->slots[hole].hash = 0;
    t->slots[hole].obj = NULL;
    t->count--;
    return obj;
}
