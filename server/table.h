/*
 * A hash table from string keys to objects that contain their key (users, conversations).
 * Open addressing with linear probing and backward-shift deletion (no tombstones); grows at
 * 3/4 load. One owner thread; no locking.
 */
#ifndef SB_SERVER_TABLE_H
#define SB_SERVER_TABLE_H

#include <stddef.h>
#include <stdint.h>

/* Returns the key of an object stored in the table. */
typedef const char *(*sb_table_key_cb)(const void *obj, size_t *len);

struct sb_table_slot {
    uint64_t hash; /* 0 = empty (a real hash of 0 is stored as 1) */
    void *obj;
};

struct sb_table {
    struct sb_table_slot *slots;
    size_t cap; /* a power of two */
    size_t count;
    sb_table_key_cb key;
};

void sb_table_init(struct sb_table *t, sb_table_key_cb key);
void sb_table_destroy(struct sb_table *t); /* frees the slots, not the objects */

uint64_t sb_table_hash(const char *key, size_t len);

/* The object with this key, or NULL. */
void *sb_table_get(const struct sb_table *t, const char *key, size_t len);

/* Adds obj (whose key must not be present). Returns 0 or -ENOMEM. */
int sb_table_add(struct sb_table *t, void *obj);

/* Removes the object with this key; returns it, or NULL when absent. */
void *sb_table_remove(struct sb_table *t, const char *key, size_t len);

#endif
