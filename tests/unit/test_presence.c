/*
 * Presence bookkeeping without an engine: the idle list of last-seen records (bounded, oldest
 * forgotten first), the subscription index (per user list + table) against a brute-force model,
 * and the held values of a backed-up device (latest per user, first-held order).
 */
#include "server/presence.c"

#include "check.h"

static struct pres_user *mk_user(struct pres_shard *sh, const char *id)
{
    return user_get(sh, id, strlen(id));
}

/* Checks the idle list against the table: linked both ways, bounded, in is_idle agreement. */
static void check_idle(struct pres_shard *sh)
{
    uint64_t n = 0;
    struct pres_user *prev = NULL;
    for (struct pres_user *u = sh->idle_head; u; prev = u, u = u->idle_next) {
        CHECK(u->is_idle);
        CHECK(u->idle_prev == prev);
        CHECK(sb_table_get(&sh->users, u->id, u->id_len) == u);
        CHECK(u->ndevices == 0 && !u->online && u->nsubs == 0 && u->last_seen_ms != 0);
        n++;
    }
    CHECK(sh->idle_tail == prev);
    CHECK_INT(n, sh->nidle);
    CHECK(sh->nidle <= sh->idle_max);
    uint64_t flagged = 0;
    for (size_t i = 0; i < sh->users.cap; i++) {
        struct pres_user *u = sh->users.slots[i].obj;
        if (!sh->users.slots[i].hash)
            continue;
        flagged += u->is_idle;
        /* Nothing else is kept that holds no information. */
        CHECK(u->is_idle || u->ndevices || u->online || u->nsubs);
    }
    CHECK_INT(flagged, sh->nidle);
}

static void test_idle_records(void)
{
    struct pres_shard sh = {0};
    shard_init(&sh, 3);
    /* Never seen and unwatched: nothing to remember, freed at once. */
    user_settle(&sh, mk_user(&sh, "ghost"));
    CHECK_INT(sh.users.count, 0);
    char id[16];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "u%d", i);
        struct pres_user *u = mk_user(&sh, id);
        u->last_seen_ms = 1000 + (uint64_t)i;
        user_settle(&sh, u);
        check_idle(&sh);
    }
    /* Three kept: the two idle the longest were forgotten. */
    CHECK_INT(sh.users.count, 3);
    CHECK(sb_table_get(&sh.users, "u0", 2) == NULL);
    CHECK(sb_table_get(&sh.users, "u1", 2) == NULL);
    CHECK_STR(sh.idle_head->id, "u2");
    /* Coming back online leaves the list; going idle again joins at the young end. */
    struct pres_user *u2 = sb_table_get(&sh.users, "u2", 2);
    u2->ndevices = 1;
    u2->online = true;
    user_settle(&sh, u2);
    check_idle(&sh);
    CHECK_INT(sh.nidle, 2);
    u2->ndevices = 0;
    u2->online = false;
    user_settle(&sh, u2);
    check_idle(&sh);
    CHECK_STR(sh.idle_tail->id, "u2");
    CHECK_STR(sh.idle_head->id, "u3");
    shard_destroy(&sh);

    /* idle_max 0 keeps no last-seen records at all. */
    struct pres_shard none = {0};
    shard_init(&none, 0);
    struct pres_user *u = mk_user(&none, "x");
    u->last_seen_ms = 5;
    user_settle(&none, u);
    CHECK_INT(none.users.count, 0);
    shard_destroy(&none);
}

enum { NCONN = 7, NUSER = 11 };

static void test_subscriptions_against_model(void)
{
    struct pres_shard sh = {0};
    shard_init(&sh, 4);
    bool model[NCONN][NUSER] = {{false}};
    char ids[NUSER][8];
    for (int u = 0; u < NUSER; u++)
        snprintf(ids[u], sizeof(ids[u]), "user%d", u);
    srand(7);
    for (int step = 0; step < 20000; step++) {
        int c = rand() % NCONN, u = rand() % NUSER, op = rand() % 8;
        uint64_t conn_id = 0x0100000000000000ull + (uint64_t)c;
        if (op < 4) {
            struct pres_user *pu = mk_user(&sh, ids[u]);
            CHECK(pu != NULL);
            CHECK_INT(sub_add(&sh, pu, (unsigned)c % 3, conn_id), 0);
            model[c][u] = true;
        } else if (op < 7) {
            sub_remove(&sh, conn_id, ids[u], strlen(ids[u]));
            model[c][u] = false;
        } else {
            /* A device comes and goes, so records also carry last-seen times. */
            struct pres_user *pu = mk_user(&sh, ids[u]);
            pu->last_seen_ms = (uint64_t)step + 1;
            user_settle(&sh, pu);
        }
        if (step % 97)
            continue;
        size_t total = 0;
        for (int k = 0; k < NUSER; k++) {
            unsigned want = 0;
            for (int j = 0; j < NCONN; j++)
                want += model[j][k];
            total += want;
            struct pres_user *pu = sb_table_get(&sh.users, ids[k], strlen(ids[k]));
            if (!want) {
                CHECK(!pu || pu->nsubs == 0);
                continue;
            }
            CHECK(pu != NULL);
            if (!pu)
                continue;
            CHECK_INT(pu->nsubs, want);
            unsigned listed = 0;
            for (struct sub *s = pu->subs; s; s = s->next) {
                CHECK(s->u == pu);
                CHECK(s->next == NULL || s->next->prev == s);
                CHECK(model[s->conn_id & 0xff][k]);
                CHECK_INT(s->worker, (s->conn_id & 0xff) % 3);
                listed++;
            }
            CHECK_INT(listed, want);
        }
        CHECK_INT(sh.subs.count, total);
        check_idle(&sh);
    }
    shard_destroy(&sh); /* frees subscriptions and records: the leak check is ASan's */
}

static struct watch *mk_watch(struct pres_dev *d, const char *id)
{
    struct watch *wt = calloc(1, sizeof(*wt));
    wt->id_len = strlen(id);
    memcpy(wt->id, id, wt->id_len + 1);
    CHECK_INT(sb_table_add(&d->watches, wt), 0);
    return wt;
}

static bool on_held_list(struct pres_shard *sh, struct pres_dev *d)
{
    for (struct pres_dev *x = sh->held; x; x = x->held_next) {
        if (x == d)
            return true;
    }
    return false;
}

static void test_held_values(void)
{
    struct pres_shard sh = {0};
    shard_init(&sh, 0);
    struct pres_dev *d1 = calloc(1, sizeof(*d1)), *d2 = calloc(1, sizeof(*d2));
    sb_table_init(&d1->watches, watch_key);
    sb_table_init(&d2->watches, watch_key);
    struct watch *a = mk_watch(d1, "a"), *b = mk_watch(d1, "b"), *c = mk_watch(d1, "c");
    struct watch *z = mk_watch(d2, "z");

    CHECK(!pend_hold(&sh, d1, a, ONLINE, 1));
    CHECK(!pend_hold(&sh, d1, b, ONLINE, 2));
    CHECK(!pend_hold(&sh, d2, z, OFFLINE, 3));
    /* A newer value replaces the held one in place: same position, latest status. */
    CHECK(pend_hold(&sh, d1, a, OFFLINE, 4));
    CHECK(!pend_hold(&sh, d1, c, ONLINE, 5));
    CHECK_INT(d1->npending, 3);
    CHECK(d1->pend_head == a && a->pend_next == b && b->pend_next == c && c->pend_next == NULL);
    CHECK(d1->pend_tail == c && c->pend_prev == b && b->pend_prev == a);
    CHECK_INT(a->status, OFFLINE);
    CHECK_INT(a->last_seen_ms, 4);
    CHECK(on_held_list(&sh, d1) && on_held_list(&sh, d2));

    /* Unlinking from the middle, the head and the tail; the device leaves the list when
     * nothing is held. */
    pend_unlink(&sh, d1, b);
    CHECK(d1->pend_head == a && a->pend_next == c && c->pend_prev == a);
    pend_unlink(&sh, d1, b); /* not held: nothing happens */
    CHECK_INT(d1->npending, 2);
    watch_remove(&sh, d1, a);
    CHECK(d1->pend_head == c && d1->pend_tail == c);
    CHECK(on_held_list(&sh, d1));
    pend_unlink(&sh, d1, c);
    CHECK(d1->pend_head == NULL && d1->pend_tail == NULL && d1->npending == 0);
    CHECK(!on_held_list(&sh, d1));
    CHECK(sh.held == d2 && d2->held_prev == NULL && d2->held_next == NULL);
    pend_unlink(&sh, d2, z);
    CHECK(sh.held == NULL);
    CHECK_INT(d1->watches.count, 2);
    dev_free(d1);
    dev_free(d2);
    shard_destroy(&sh);
}

int main(void)
{
    test_idle_records();
    test_subscriptions_against_model();
    test_held_values();
    return check_done();
}
