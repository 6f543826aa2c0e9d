/* User ids, conversation ids, home workers and message ids. */
#include <errno.h>

#include "check.h"
#include "server/ids.h"

static void test_user_ids(void)
{
    CHECK(sb_user_id_valid("alice", 5));
    CHECK(sb_user_id_valid("a.b-c_d@example.org", 19));
    CHECK(!sb_user_id_valid("", 0));
    CHECK(!sb_user_id_valid("a b", 3));
    CHECK(!sb_user_id_valid("a:b", 3));
    CHECK(!sb_user_id_valid("caf\xc3\xa9", 5));
    char long_id[66];
    memset(long_id, 'x', sizeof(long_id));
    CHECK(sb_user_id_valid(long_id, 64));
    CHECK(!sb_user_id_valid(long_id, 65));
}

static void test_dm_ids(void)
{
    char a[SB_CONV_ID_MAX + 1], b[SB_CONV_ID_MAX + 1];
    CHECK_INT(sb_dm_conv_id("bob", 3, "alice", 5, a), 12);
    CHECK_STR(a, "dm:alice:bob");
    CHECK_INT(sb_dm_conv_id("alice", 5, "bob", 3, b), 12);
    CHECK_STR(b, "dm:alice:bob");
    /* A prefix sorts first. */
    CHECK_INT(sb_dm_conv_id("ann", 3, "an", 2, a), 9);
    CHECK_STR(a, "dm:an:ann");
    CHECK_INT(sb_dm_conv_id("x", 1, "x", 1, a), -EINVAL);
    char l1[64], l2[64];
    memset(l1, 'a', 64);
    memset(l2, 'b', 64);
    CHECK_INT(sb_dm_conv_id(l2, 64, l1, 64, a), SB_CONV_ID_MAX);
}

static void test_home_worker(void)
{
    CHECK_INT(sb_home_worker("alice", 5, 1), 0);
    unsigned counts[4] = {0};
    char id[16];
    for (int i = 0; i < 4000; i++) {
        int n = snprintf(id, sizeof(id), "user%d", i);
        unsigned w = sb_home_worker(id, (size_t)n, 4);
        CHECK(w < 4);
        counts[w]++;
        CHECK_INT(sb_home_worker(id, (size_t)n, 4), w); /* stable */
    }
    for (int w = 0; w < 4; w++)
        CHECK(counts[w] > 800 && counts[w] < 1200); /* spread evenly */
}

static void test_msgids(void)
{
    struct sb_msgid_gen g;
    CHECK_INT(sb_msgid_init(&g, 2048), -ERANGE);
    CHECK_INT(sb_msgid_init(&g, 5), 0);
    uint64_t now = SB_MSGID_EPOCH_MS + 123456;
    uint64_t prev = 0;
    for (int i = 0; i < 10000; i++) {
        uint64_t id = sb_msgid_next(&g, now + (uint64_t)(i / 3000));
        if (id <= prev) {
            CHECK(id > prev);
            break;
        }
        CHECK_INT((id >> 12) & 2047, 5);
        prev = id;
    }
    CHECK(sb_msgid_time_ms(prev) >= now + 3);
    /* A clock that goes back never produces a smaller id. */
    uint64_t before = sb_msgid_next(&g, now + 10);
    CHECK(sb_msgid_next(&g, now - 1000) > before);
    /* 4,096 ids in one millisecond roll into the next millisecond. */
    struct sb_msgid_gen h;
    sb_msgid_init(&h, 0);
    uint64_t first = sb_msgid_next(&h, now);
    uint64_t last = first;
    for (int i = 1; i < 4097; i++)
        last = sb_msgid_next(&h, now);
    CHECK_INT(sb_msgid_time_ms(first), now);
    CHECK_INT(sb_msgid_time_ms(last), now + 1);
    CHECK(last > first);
}

int main(void)
{
    test_user_ids();
    test_dm_ids();
    test_home_worker();
    test_msgids();
    return check_done();
}
