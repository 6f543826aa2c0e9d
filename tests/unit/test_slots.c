/* Unit tests for cluster/slots: CRC16, hash tags, the CLUSTER SLOTS map and MOVED/ASK. */
#include "cluster/resp.h"
#include "cluster/slots.h"

#include <errno.h>
#include <hiredis/hiredis.h>

#include "check.h"

static unsigned slot(const char *key)
{
    return sb_slot_of(key, strlen(key));
}

static void test_crc_and_tags(void)
{
    CHECK_INT(sb_crc16("123456789", 9), 0x31C3);
    CHECK_INT(sb_crc16("", 0), 0);
    CHECK_INT(slot("123456789"), 0x31C3 & 16383);
    /* Values CLUSTER KEYSLOT gives. */
    CHECK_INT(slot("foo"), 12182);
    CHECK_INT(slot("bar"), 5061);
    CHECK_INT(slot("hello"), 866);
    CHECK_INT(slot(""), 0);
    /* The spec's examples. */
    CHECK_INT(slot("{user1000}.following"), slot("{user1000}.followers"));
    CHECK_INT(slot("{user1000}.following"), slot("user1000"));
    CHECK_INT(slot("foo{}{bar}"), sb_crc16("foo{}{bar}", 10) & 16383);
    CHECK_INT(slot("foo{{bar}}zap"), slot("{bar"));
    CHECK_INT(slot("foo{bar}{zap}"), slot("bar"));
    /* No closing brace, or a closing brace only before the first '{': the whole key. */
    CHECK_INT(slot("{"), sb_crc16("{", 1) & 16383);
    CHECK_INT(slot("a{b"), sb_crc16("a{b", 3) & 16383);
    CHECK_INT(slot("}a{b"), sb_crc16("}a{b", 4) & 16383);
    CHECK_INT(slot("}{a}"), slot("a"));
    CHECK_INT(slot("{}"), sb_crc16("{}", 2) & 16383);
    /* Bytes past the length never count, and a NUL is a byte like any other. */
    CHECK_INT(sb_slot_of("{a}xyz", 2), sb_crc16("{a", 2) & 16383);
    CHECK_INT(sb_slot_of("{a\0b}", 5), sb_crc16("a\0b", 3) & 16383);
    unsigned seen[16384] = {0}, distinct = 0;
    char k[32];
    for (int i = 0; i < 100000; i++) {
        int n = snprintf(k, sizeof(k), "key:%d", i);
        unsigned s = sb_slot_of(k, (size_t)n);
        CHECK(s < 16384);
        distinct += !seen[s]++;
    }
    CHECK(distinct > 16000); /* keys spread over (nearly) every slot */
}

/* The reply tree for RESP bytes; the caller frees it. */
static redisReply *resp(const char *bytes)
{
    redisReader *rd = sb_redis_reader_new();
    void *reply = NULL;
    redisReaderFeed(rd, bytes, strlen(bytes));
    if (redisReaderGetReply(rd, &reply) != REDIS_OK)
        reply = NULL;
    redisReaderFree(rd);
    return reply;
}

static int parse(const char *bytes, struct sb_slot_map *m)
{
    redisReply *r = resp(bytes);
    CHECK(r != NULL);
    if (!r)
        return -999;
    int rc = sb_slot_map_parse(m, r, "10.0.0.9");
    freeReplyObject(r);
    return rc;
}

static void test_map(void)
{
    struct sb_slot_map m;
    /* Redis 7: host, port, id and a metadata map (empty here, and with a hostname). */
    const char *three = "*3\r\n"
                        "*4\r\n:0\r\n:5460\r\n"
                        "*4\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n*0\r\n"
                        "*4\r\n$9\r\n127.0.0.1\r\n:7003\r\n$2\r\nid\r\n*0\r\n"
                        "*3\r\n:5461\r\n:10922\r\n"
                        "*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n"
                        "*2\r\n$8\r\nhostname\r\n$2\r\nh1\r\n"
                        "*4\r\n:10923\r\n:16383\r\n"
                        "*2\r\n$0\r\n\r\n:7002\r\n"
                        "*2\r\n$1\r\n?\r\n:7005\r\n";
    CHECK_INT(parse(three, &m), 0);
    CHECK_INT(m.nranges, 3);
    CHECK_INT(m.nnodes, 4);
    CHECK_STR(sb_slot_map_owner(&m, 0)->host, "127.0.0.1");
    CHECK_INT(sb_slot_map_owner(&m, 0)->port, 7000);
    CHECK_INT(sb_slot_map_owner(&m, 5460)->port, 7000);
    CHECK_INT(sb_slot_map_owner(&m, 5461)->port, 7001);
    CHECK_INT(sb_slot_map_owner(&m, 16383)->port, 7002);
    CHECK_STR(sb_slot_map_owner(&m, 16383)->host, "10.0.0.9"); /* "" = where we asked */
    CHECK(sb_slot_map_owner(&m, 16384) == NULL);
    CHECK_INT(m.ranges[0].nreplicas, 1);
    CHECK_INT(m.nodes[m.ranges[0].replicas[0]].port, 7003);
    CHECK_INT(m.ranges[2].nreplicas, 0); /* "?" has no endpoint */
    sb_slot_map_destroy(&m);
    CHECK_INT(m.nnodes, 0);
    CHECK(sb_slot_map_owner(&m, 0) == NULL);

    CHECK_INT(parse("*0\r\n", &m), 0); /* a cluster with no slot assigned yet */
    CHECK(sb_slot_map_owner(&m, 100) == NULL);
    sb_slot_map_destroy(&m);

    /* A master with no known endpoint leaves its range unserved. */
    CHECK_INT(parse("*1\r\n*3\r\n:0\r\n:10\r\n*2\r\n$1\r\n?\r\n:1\r\n", &m), 0);
    CHECK(sb_slot_map_owner(&m, 5) == NULL);
    sb_slot_map_destroy(&m);

    static const char *const bad[] = {
        "+OK\r\n",
        "-ERR This instance has cluster support disabled\r\n",
        "*1\r\n:1\r\n",
        "*1\r\n*2\r\n:0\r\n:1\r\n",
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n",
        "*1\r\n*3\r\n:-1\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n",
        "*1\r\n*3\r\n:6\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n",
        "*1\r\n*3\r\n$1\r\n0\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n",
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\na\r\n:0\r\n",
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\na\r\n:65536\r\n",
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n:1\r\n:1\r\n",
        "*1\r\n*3\r\n:0\r\n:5\r\n*1\r\n$1\r\na\r\n",
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$3\r\na b\r\n:1\r\n",
        "*1\r\n*3\r\n:0\r\n:5\r\n:1\r\n",
        /* two ranges that share slot 5 */
        "*2\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n*3\r\n:5\r\n:9\r\n*2\r\n$1\r\nb\r\n:1\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = parse(bad[i], &m);
        if (rc != -EBADMSG)
            fprintf(stderr, "case %zu\n", i);
        CHECK_INT(rc, -EBADMSG);
        CHECK_INT(m.nnodes, 0);
        CHECK(m.nodes == NULL && m.ranges == NULL);
    }

    /* 17 replicas is over the limit. */
    char big[4096] = "*1\r\n*20\r\n:0\r\n:5\r\n";
    for (int i = 0; i < 18; i++)
        snprintf(big + strlen(big), sizeof(big) - strlen(big), "*2\r\n$1\r\nh\r\n:%d\r\n", i + 1);
    CHECK_INT(parse(big, &m), -EMSGSIZE);
    /* A host over 255 bytes is malformed. */
    char longhost[600];
    int n = snprintf(longhost, sizeof(longhost), "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$256\r\n");
    memset(longhost + n, 'h', 256);
    strcpy(longhost + n + 256, "\r\n:1\r\n");
    CHECK_INT(parse(longhost, &m), -EBADMSG);
}

static void test_redirects(void)
{
    struct sb_slot_redirect r;
#define RD(s) sb_slot_redirect_parse(s, strlen(s), &r)
    CHECK_INT(RD("MOVED 3999 127.0.0.1:6381"), 0);
    CHECK(!r.is_ask);
    CHECK_INT(r.slot, 3999);
    CHECK_STR(r.host, "127.0.0.1");
    CHECK_INT(r.port, 6381);
    CHECK_INT(RD("ASK 16383 ::1:7000"), 0);
    CHECK(r.is_ask);
    CHECK_INT(r.slot, 16383);
    CHECK_STR(r.host, "::1");
    CHECK_INT(r.port, 7000);
    CHECK_INT(RD("MOVED 0 :7001"), 0);
    CHECK_STR(r.host, "");
    CHECK_INT(r.port, 7001);
    static const char *const bad[] = {
        "MOVED",           "MOVED ",           "MOVED 1",         "MOVED 16384 h:1",
        "MOVED -1 h:1",    "MOVED 1 h",        "MOVED 1 h:",      "MOVED 1 h:0",
        "MOVED 1 h:65536", "MOVED 1 h:1x",     "ASK 1  h:1",      "moved 1 h:1",
        "ERR wrong",       "MOVED 123456 h:1", "MOVED 1 h\x01:1", "ASKING 1 h:1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (RD(bad[i]) != -EINVAL)
            fprintf(stderr, "redirect case %zu: %s\n", i, bad[i]);
        CHECK_INT(RD(bad[i]), -EINVAL);
    }
#undef RD
}

/* The reader builds what hiredis' own would, and refuses a huge aggregate before allocating. */
static void test_reader(void)
{
    redisReply *r = resp("*3\r\n$3\nabc\r\n:42\r\n$-1\r\n");
    CHECK(r == NULL); /* a bulk string without its CR: a protocol error */
    r = resp("*4\r\n$3\r\nabc\r\n:42\r\n$-1\r\n*1\r\n+OK\r\n");
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 4);
    if (r && r->elements == 4) {
        CHECK(r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "abc") == 0);
        CHECK(r->element[1]->type == REDIS_REPLY_INTEGER && r->element[1]->integer == 42);
        CHECK(r->element[2]->type == REDIS_REPLY_NIL);
        CHECK(r->element[3]->elements == 1 &&
              r->element[3]->element[0]->type == REDIS_REPLY_STATUS);
    }
    freeReplyObject(r);
    CHECK(resp("*1048576\r\n") == NULL); /* incomplete, but allowed: no reply yet */
    redisReader *rd = sb_redis_reader_new();
    redisReaderFeed(rd, "*666666662\r\n", 12);
    void *reply = NULL;
    CHECK(redisReaderGetReply(rd, &reply) == REDIS_ERR && reply == NULL);
    redisReaderFree(rd);
}

int main(void)
{
    test_reader();
    test_crc_and_tags();
    test_map();
    test_redirects();
    return check_done();
}
