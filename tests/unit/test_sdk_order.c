/* The SDK's conversation table: positions, verdicts, held messages. */
#include <errno.h>

#include "check.h"
#include "sdk_order.h"

static const uint8_t frame[] = {1, 2, 3};

static void test_table(void)
{
    struct sb__convs t;
    sb__convs_init(&t);
    CHECK(sb__convs_find(&t, "dm:a:b", 6) == NULL);
    bool created;
    struct sb__conv *cv = sb__convs_get(&t, "dm:a:b", 6, 5, &created);
    CHECK(cv != NULL && created);
    CHECK_INT(cv->delivered, 5);
    CHECK(sb__convs_get(&t, "dm:a:b", 6, 9, &created) == cv && !created);
    CHECK(sb__convs_get(&t, "", 0, 0, &created) == NULL);
    char big[SB__CONV_MAX + 2];
    memset(big, 'x', sizeof(big));
    CHECK(sb__convs_get(&t, big, SB__CONV_MAX + 1, 0, &created) == NULL);
    CHECK(sb__convs_get(&t, big, SB__CONV_MAX, 0, &created) != NULL);
    /* Enough entries to grow the buckets several times; iteration sees each once. */
    char name[32];
    for (int i = 0; i < 500; i++) {
        int n = snprintf(name, sizeof(name), "g:%016x", i);
        CHECK(sb__convs_get(&t, name, (size_t)n, (uint64_t)i, &created) != NULL);
    }
    CHECK_INT(t.count, 502);
    size_t seen = 0;
    for (struct sb__conv *p = sb__convs_next(&t, NULL); p != NULL; p = sb__convs_next(&t, p)) {
        seen++;
    }
    CHECK_INT(seen, 502);
    int n = snprintf(name, sizeof(name), "g:%016x", 321);
    cv = sb__convs_find(&t, name, (size_t)n);
    CHECK(cv != NULL && cv->delivered == 321);
    sb__convs_destroy(&t);
    CHECK_INT(t.count, 0);
}

static void test_verdicts_and_held(void)
{
    struct sb__convs t;
    sb__convs_init(&t);
    bool created;
    struct sb__conv *cv = sb__convs_get(&t, "c", 1, 3, &created);
    CHECK_INT(sb__conv_classify(cv, 2), SB__ORDER_DROP);
    CHECK_INT(sb__conv_classify(cv, 3), SB__ORDER_DROP);
    CHECK_INT(sb__conv_classify(cv, 4), SB__ORDER_DELIVER);
    CHECK_INT(sb__conv_classify(cv, 6), SB__ORDER_HOLD);
    /* Held out of order, kept sorted, duplicates refused. */
    CHECK_INT(sb__conv_hold(cv, 7, frame, sizeof(frame)), 0);
    CHECK_INT(sb__conv_hold(cv, 6, frame, sizeof(frame)), 0);
    CHECK_INT(sb__conv_hold(cv, 9, frame, sizeof(frame)), 0);
    CHECK_INT(sb__conv_hold(cv, 7, frame, sizeof(frame)), 1);
    CHECK_INT(cv->held_count, 3);
    CHECK_INT(sb__conv_first_held(cv), 6);
    CHECK(sb__conv_pop_ready(cv) == NULL); /* 4 and 5 are missing */
    cv->delivered = 5;                     /* the gap was filled by a sync */
    struct sb__held *h = sb__conv_pop_ready(cv);
    CHECK(h != NULL && h->seq == 6 && h->len == sizeof(frame));
    CHECK_MEM(h->frame, frame, sizeof(frame));
    free(h);
    cv->delivered = 6;
    h = sb__conv_pop_ready(cv);
    CHECK(h != NULL && h->seq == 7);
    free(h);
    cv->delivered = 7;
    CHECK(sb__conv_pop_ready(cv) == NULL); /* 8 is missing */
    CHECK_INT(sb__conv_first_held(cv), 9);
    /* A sync that delivered past a held message frees it. */
    cv->delivered = 10;
    CHECK(sb__conv_pop_ready(cv) == NULL);
    CHECK_INT(cv->held_count, 0);
    CHECK_INT(sb__conv_first_held(cv), 0);
    sb__convs_destroy(&t);
}

static void test_held_limit(void)
{
    struct sb__convs t;
    sb__convs_init(&t);
    bool created;
    struct sb__conv *cv = sb__convs_get(&t, "c", 1, 0, &created);
    for (uint64_t s = 2; s < 2 + SB__HELD_MAX; s++) {
        CHECK_INT(sb__conv_hold(cv, s, frame, sizeof(frame)), 0);
    }
    CHECK_INT(sb__conv_hold(cv, 5000, frame, sizeof(frame)), 1);
    CHECK_INT(cv->held_count, SB__HELD_MAX);
    sb__conv_clear_held(cv);
    CHECK_INT(cv->held_count, 0);
    CHECK(cv->held == NULL);
    sb__convs_destroy(&t);
}

int main(void)
{
    test_table();
    test_verdicts_and_held();
    test_held_limit();
    return check_done();
}
