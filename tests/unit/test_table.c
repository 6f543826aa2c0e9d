/* The string-keyed hash table against a brute-force model, with heavy deletion. */
#include <stdbool.h>
#include <stdlib.h>

#include "check.h"
#include "server/table.h"

struct item {
    char key[16];
    size_t len;
    bool present;
};

static const char *key_of(const void *obj, size_t *len)
{
    const struct item *it = obj;
    *len = it->len;
    return it->key;
}

int main(void)
{
    enum { N = 5000 };
    static struct item items[N];
    for (int i = 0; i < N; i++)
        items[i].len = (size_t)snprintf(items[i].key, sizeof(items[i].key), "k%d", i * 7919);
    struct sb_table t;
    sb_table_init(&t, key_of);
    CHECK(sb_table_get(&t, "nothing", 7) == NULL);
    CHECK(sb_table_remove(&t, "nothing", 7) == NULL);
    uint64_t rng = 88172645463325252ull;
    size_t live = 0;
    int bad = 0;
    for (int step = 0; step < 200000; step++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        struct item *it = &items[rng % N];
        if (it->present && (rng >> 40) % 3 == 0) {
            if (sb_table_remove(&t, it->key, it->len) != it)
                bad++;
            it->present = false;
            live--;
        } else if (!it->present) {
            CHECK_INT(sb_table_add(&t, it), 0);
            it->present = true;
            live++;
        }
        /* Every so often, check every item against the model. */
        if (step % 20000 == 0) {
            for (int i = 0; i < N; i++) {
                void *got = sb_table_get(&t, items[i].key, items[i].len);
                if (got != (items[i].present ? &items[i] : NULL))
                    bad++;
            }
        }
    }
    CHECK_INT(bad, 0);
    CHECK_INT(t.count, live);
    for (int i = 0; i < N; i++) {
        if (items[i].present)
            CHECK(sb_table_remove(&t, items[i].key, items[i].len) == &items[i]);
    }
    CHECK_INT(t.count, 0);
    sb_table_destroy(&t);
    return check_done();
}
