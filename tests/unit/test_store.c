/*
 * server/store: the record codec (round trips, bounds, every truncation, every flipped byte),
 * replay of real files (torn tails truncated, copies skipped), replay into chat's shards for a
 * different worker count with the start-up rewrite, and the append path on a real worker in
 * both I/O modes and every fsync policy: group commit, replies held until durable and released
 * in order, run-time compaction while appends go on, and the final flush at close.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "check.h"
#include "core/engine.h"
#include "core/log.h"
#include "server/chat.h"
#include "server/ids.h"
#include "server/metrics.h"
#include "server/store.h"

static char base_dir[64];

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    char path[512];
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static void make_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", base_dir, name);
    rm_rf(out);
}

static struct sb_store_rec message(const char *conv, uint64_t seq, const char *user,
                                   const char *client_id, const char *body)
{
    struct sb_store_rec r = {
        .type = SB_STORE_MESSAGE,
        .seq = seq,
        .msg_id = 1000 + seq,
        .ts_ms = 1795318161000 + seq,
        .conv = conv,
        .conv_len = strlen(conv),
        .device = "phone",
        .device_len = 5,
        .user = user,
        .user_len = strlen(user),
        .client_id = client_id,
        .client_id_len = strlen(client_id),
        .body = body,
        .body_len = strlen(body),
    };
    return r;
}

/* n bytes equal (NULL is fine when n is 0). */
static bool eq(const char *a, const char *b, size_t n)
{
    return n == 0 || memcmp(a, b, n) == 0;
}

static bool same_rec(const struct sb_store_rec *a, const struct sb_store_rec *b)
{
    return a->type == b->type && a->seq == b->seq && a->msg_id == b->msg_id &&
           a->ts_ms == b->ts_ms && a->conv_len == b->conv_len &&
           eq(a->conv, b->conv, a->conv_len) && a->device_len == b->device_len &&
           eq(a->device, b->device, a->device_len) && a->user_len == b->user_len &&
           eq(a->user, b->user, a->user_len) && a->client_id_len == b->client_id_len &&
           eq(a->client_id, b->client_id, a->client_id_len) && a->body_len == b->body_len &&
           eq(a->body, b->body, a->body_len);
}

static void test_crc32c(void)
{
    CHECK_INT(sb_crc32c(0, "123456789", 9), 0xE3069283u);
    CHECK_INT(sb_crc32c(0, "", 0), 0);
    /* Chaining equals one pass, for every split (the slicing path and the byte path). */
    char buf[100];
    for (int i = 0; i < 100; i++)
        buf[i] = (char)(i * 7 + 1);
    uint32_t whole = sb_crc32c(0, buf, sizeof(buf));
    int bad = 0;
    for (size_t k = 0; k <= sizeof(buf); k++)
        bad += sb_crc32c(sb_crc32c(0, buf, k), buf + k, sizeof(buf) - k) != whole;
    CHECK_INT(bad, 0);
}

static void test_round_trip(void)
{
    uint8_t buf[1024];
    struct sb_store_rec r = message("dm:alice:bob", 7, "alice", "c1", "\"hi \\u00e9\"");
    ssize_t n = sb_store_encode(&r, buf, sizeof(buf));
    CHECK_INT(n, (ssize_t)sb_store_rec_size(&r));
    CHECK_INT(n, 40 + 12 + 5 + 1 + 5 + 1 + 2 + 11);
    struct sb_store_rec d;
    CHECK_INT(sb_store_decode(buf, (size_t)n, &d), n);
    CHECK(same_rec(&r, &d));
    CHECK_INT(d.key_len, 1 + 5 + 1 + 2);
    CHECK_MEM(d.key,
              "\x05"
              "alice"
              "\x02"
              "c1",
              9);
    size_t klen;
    const char *key = sb_store_rec_key(buf, &klen);
    CHECK_INT(klen, d.key_len);
    CHECK(key == d.key);
    CHECK_INT(sb_store_rec_seq(buf), 7);
    CHECK_INT(sb_store_rec_ts(buf), 1795318161007);
    struct sb_store_rec v;
    sb_store_view(buf, &v);
    CHECK(same_rec(&r, &v));
    /* Bytes after the record do not matter. */
    CHECK_INT(sb_store_decode(buf, sizeof(buf), &d), n);

    /* A state record; an empty device and body are fine in a message too. */
    struct sb_store_rec s = {.type = SB_STORE_STATE, .seq = 99, .conv = "x", .conv_len = 1};
    n = sb_store_encode(&s, buf, sizeof(buf));
    CHECK_INT(n, SB_STORE_REC_MIN);
    CHECK_INT(sb_store_decode(buf, (size_t)n, &d), n);
    CHECK(same_rec(&s, &d));
    r = message("c", 1, "u", "i", "");
    r.device_len = 0;
    n = sb_store_encode(&r, buf, sizeof(buf));
    CHECK_INT(sb_store_decode(buf, (size_t)n, &d), n);
    CHECK(same_rec(&r, &d));

    /* Out of bounds: refused by encode. */
    struct sb_store_rec bad = message("dm:alice:bob", 0, "alice", "c1", "\"x\"");
    CHECK_INT(sb_store_encode(&bad, buf, sizeof(buf)), -EINVAL); /* seq 0 */
    bad = message("dm:alice:bob", 1, "", "c1", "\"x\"");
    CHECK_INT(sb_store_encode(&bad, buf, sizeof(buf)), -EINVAL); /* no user */
    bad = message("dm:alice:bob", 1, "alice", "", "\"x\"");
    CHECK_INT(sb_store_encode(&bad, buf, sizeof(buf)), -EINVAL); /* no client id */
    bad = message("", 1, "alice", "c", "\"x\"");
    CHECK_INT(sb_store_encode(&bad, buf, sizeof(buf)), -EINVAL); /* no conv */
    bad = message("dm:alice:bob", 1, "alice", "c", "\"x\"");
    bad.device_len = SB_STORE_DEVICE_MAX + 1;
    CHECK_INT(sb_store_encode(&bad, buf, sizeof(buf)), -EINVAL);
    bad = message("dm:alice:bob", 1, "alice", "c", "\"x\"");
    bad.type = 5;
    CHECK_INT(sb_store_encode(&bad, buf, sizeof(buf)), -EINVAL);
    bad.type = SB_STORE_MESSAGE;
    bad.system = SB_STORE_SYS_CREATED + 1;
    CHECK_INT(sb_store_encode(&bad, buf, sizeof(buf)), -EINVAL);
    /* Group and cursor records name a user and carry no message id. */
    struct sb_store_rec g = {.type = SB_STORE_GROUP,
                             .seq = 1,
                             .conv = "g:1",
                             .conv_len = 3,
                             .user = "alice",
                             .user_len = 5,
                             .body = "\0\0\0\0\0",
                             .body_len = 5};
    n = sb_store_encode(&g, buf, sizeof(buf));
    CHECK(n > 0);
    CHECK_INT(sb_store_decode(buf, (size_t)n, &d), n);
    CHECK_INT(d.type, SB_STORE_GROUP);
    CHECK_INT(d.body_len, 5);
    g.body_len = 4;
    CHECK_INT(sb_store_encode(&g, buf, sizeof(buf)), -EINVAL);
    struct sb_store_rec cur = {.type = SB_STORE_CURSOR,
                               .seq = 7,
                               .conv = "g:1",
                               .conv_len = 3,
                               .user = "bob",
                               .user_len = 3};
    n = sb_store_encode(&cur, buf, sizeof(buf));
    CHECK(n > 0);
    CHECK_INT(sb_store_decode(buf, (size_t)n, &d), n);
    CHECK_INT(d.seq, 7);
    cur.system = 1; /* only messages are system messages */
    CHECK_INT(sb_store_encode(&cur, buf, sizeof(buf)), -EINVAL);
    s.msg_id = 1; /* a state record has no message id */
    CHECK_INT(sb_store_encode(&s, buf, sizeof(buf)), -EINVAL);
    r = message("dm:alice:bob", 1, "alice", "c", "\"x\"");
    CHECK_INT(sb_store_encode(&r, buf, sb_store_rec_size(&r) - 1), -ENOSPC);

    /* Lengths that do not add up, and an unknown system kind, are malformed even with a good
     * checksum. */
    n = sb_store_encode(&r, buf, sizeof(buf));
    uint8_t copy[1024];
    memcpy(copy, buf, (size_t)n);
    copy[11] = SB_STORE_SYS_CREATED + 1;
    uint32_t crc = sb_crc32c(sb_crc32c(0, copy, 4), copy + 8, (size_t)n - 8);
    memcpy(copy + 4, &crc, 4);
    CHECK_INT(sb_store_decode(copy, (size_t)n, &d), -EBADMSG);
    memcpy(copy, buf, (size_t)n);
    copy[12]++; /* body_len one more than there is */
    crc = sb_crc32c(sb_crc32c(0, copy, 4), copy + 8, (size_t)n - 8);
    memcpy(copy + 4, &crc, 4);
    CHECK_INT(sb_store_decode(copy, (size_t)n, &d), -EBADMSG);
    /* A length field below the minimum or above the maximum. */
    memcpy(copy, buf, (size_t)n);
    copy[0] = 10;
    copy[1] = copy[2] = copy[3] = 0;
    CHECK_INT(sb_store_decode(copy, (size_t)n, &d), -EBADMSG);
    copy[3] = 0x80;
    CHECK_INT(sb_store_decode(copy, (size_t)n, &d), -EBADMSG);
}

/* A log of three records in memory; offs[i] is where record i starts, offs[3] the end. */
static size_t three_records(uint8_t *buf, size_t cap, size_t offs[4])
{
    struct sb_store_rec r[3] = {
        message("dm:alice:bob", 1, "alice", "c1", "\"one\""),
        message("dm:alice:bob", 2, "bob", "r1", "\"two, a little longer\""),
        {.type = SB_STORE_STATE, .seq = 2, .conv = "dm:alice:bob", .conv_len = 12},
    };
    size_t len = 0;
    for (int i = 0; i < 3; i++) {
        offs[i] = len;
        len += (size_t)sb_store_encode(&r[i], buf + len, cap - len);
    }
    offs[3] = len;
    return len;
}

/* Decodes records from buf like replay does; returns how many before the first failure. */
static int decode_all(const uint8_t *buf, size_t len, ssize_t *last)
{
    int n = 0;
    size_t pos = 0;
    for (;;) {
        struct sb_store_rec r;
        ssize_t k = sb_store_decode(buf + pos, len - pos, &r);
        *last = k;
        if (k <= 0)
            return n;
        pos += (size_t)k;
        n++;
    }
}

static void test_truncations_and_flips(void)
{
    uint8_t buf[1024];
    size_t offs[4];
    size_t len = three_records(buf, sizeof(buf), offs);
    /* Every prefix decodes to the whole records it holds, then asks for more. */
    int bad = 0;
    for (size_t cut = 0; cut <= len; cut++) {
        ssize_t last;
        int whole = cut >= offs[3] ? 3 : cut >= offs[2] ? 2 : cut >= offs[1] ? 1 : 0;
        bad += decode_all(buf, cut, &last) != whole || last != -EAGAIN;
    }
    CHECK_INT(bad, 0);
    /* A flipped bit anywhere, in any position of the byte: the records before it decode, the
     * one holding it does not. */
    bad = 0;
    for (size_t pos = 0; pos < len; pos++) {
        for (int bit = 0; bit < 8; bit++) {
            buf[pos] ^= (uint8_t)(1u << bit);
            ssize_t last;
            int before = pos >= offs[2] ? 2 : pos >= offs[1] ? 1 : 0;
            bad += decode_all(buf, len, &last) != before || last > 0;
            buf[pos] ^= (uint8_t)(1u << bit);
        }
        /* And a whole byte replaced. */
        uint8_t old = buf[pos];
        buf[pos] = (uint8_t)~old;
        ssize_t last;
        bad += decode_all(buf, len, &last) != (pos >= offs[2] ? 2 : pos >= offs[1] ? 1 : 0);
        buf[pos] = old;
    }
    CHECK_INT(bad, 0);
}

/* ---- files ---- */

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK_INT(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static long file_size(const char *dir, const char *name)
{
    char path[512];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

/* Reads a whole file into a malloc'd buffer (*len bytes); NULL if absent. */
static uint8_t *read_file(const char *dir, const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDONLY);
    *len = 0;
    if (fd < 0)
        return NULL;
    struct stat sb;
    fstat(fd, &sb);
    uint8_t *data = malloc((size_t)sb.st_size + 1);
    *len = (size_t)read(fd, data, (size_t)sb.st_size);
    close(fd);
    return data;
}

struct collected {
    int count;
    uint64_t seqs[64];
};

static int collect(void *ctx, const struct sb_store_rec *rec)
{
    struct collected *c = ctx;
    if (c->count < 64)
        c->seqs[c->count] = rec->seq;
    c->count++;
    return 0;
}

static int no_snapshot(void *ctx, unsigned worker, uint32_t gen, struct sb_store_buf *out,
                       size_t target, bool *done)
{
    *done = true;
    return 0;
}

static struct sb_store *open_store(const char *dir, unsigned workers, sb_store_snapshot_cb snap)
{
    struct sb_store_config cfg = {.dir = dir,
                                  .workers = workers,
                                  .fsync = SB_FSYNC_ALWAYS,
                                  .compact_min = 1 << 20,
                                  .snapshot = snap};
    struct sb_store *st = NULL;
    CHECK_INT(sb_store_open(&cfg, &st), 0);
    return st;
}

static void test_replay_files(void)
{
    char dir[256];
    make_dir(dir, sizeof(dir), "replay");
    uint8_t buf[1024];
    size_t offs[4];
    size_t len = three_records(buf, sizeof(buf), offs);
    /* Every truncation of a file is replayed up to its last whole record, and the file is cut
     * there. */
    int bad = 0;
    for (size_t cut = 0; cut <= len; cut++) {
        rm_rf(dir);
        mkdir(dir, 0755);
        write_file(dir, "w0.log", buf, cut);
        struct sb_store *st = open_store(dir, 1, no_snapshot);
        struct collected c = {0};
        int whole = cut >= offs[3] ? 3 : cut >= offs[2] ? 2 : cut >= offs[1] ? 1 : 0;
        bad += sb_store_replay(st, collect, &c) != whole || c.count != whole;
        bad += file_size(dir, "w0.log") != (long)offs[whole];
        sb_store_close(st);
    }
    CHECK_INT(bad, 0);

    /* Garbage after the records, and a corrupt record in the middle: replay stops there. */
    rm_rf(dir);
    mkdir(dir, 0755);
    uint8_t junk[1100];
    memcpy(junk, buf, len);
    memset(junk + len, '!', 16);
    write_file(dir, "w0.log", junk, len + 16);
    memcpy(junk, buf, len);
    junk[offs[1] + 20] ^= 0x40;
    write_file(dir, "w1.log", junk, len);
    write_file(dir, "w7.log", buf, len);   /* a worker that no longer exists is read too */
    write_file(dir, "w1.log.tmp", buf, 3); /* a compaction's leftover is removed at open */
    write_file(dir, "wx.log", buf, len);   /* not a log name: ignored */
    struct sb_store *st = open_store(dir, 2, no_snapshot);
    CHECK_INT(file_size(dir, "w1.log.tmp"), -1);
    struct collected c = {0};
    CHECK_INT(sb_store_replay(st, collect, &c), 3 + 1 + 3);
    CHECK_INT(c.seqs[0], 1); /* w0 first, then w1, then w7 */
    CHECK_INT(c.seqs[3], 1);
    CHECK_INT(c.seqs[4], 1);
    CHECK_INT(file_size(dir, "w0.log"), (long)len);
    CHECK_INT(file_size(dir, "w1.log"), (long)offs[1]);
    /* The rewrite (nothing live here) leaves one empty log per worker. */
    CHECK_INT(sb_store_rewrite(st), 0);
    CHECK_INT(file_size(dir, "w0.log"), 0);
    CHECK_INT(file_size(dir, "w1.log"), 0);
    CHECK_INT(file_size(dir, "w7.log"), -1);
    CHECK_INT(file_size(dir, "wx.log"), (long)len);
    /* A second server cannot take the directory while the first holds it. */
    struct sb_store_config cfg = {.dir = dir, .workers = 1, .snapshot = no_snapshot};
    struct sb_store *other = NULL;
    CHECK_INT(sb_store_open(&cfg, &other), -EWOULDBLOCK);
    sb_store_close(st);
    rm_rf(dir);
}

/* ---- replay into chat's shards with another worker count ---- */

#define NCONV 12
#define PER_CONV 9

static void conv_id(char *out, int i)
{
    char a[16], b[16];
    snprintf(a, sizeof(a), "u%02d", i);
    snprintf(b, sizeof(b), "v%02d", i);
    sb_dm_conv_id(a, strlen(a), b, strlen(b), out);
}

/* Writes NCONV conversations of PER_CONV messages as `from` workers would have. */
static void write_logs(const char *dir, unsigned from)
{
    static uint8_t files[8][64 << 10];
    size_t lens[8] = {0};
    for (int m = 1; m <= PER_CONV; m++) {
        for (int i = 0; i < NCONV; i++) {
            char conv[SB_CONV_ID_MAX + 1], user[16], client[16], body[32];
            conv_id(conv, i);
            snprintf(user, sizeof(user), "%s%02d", m % 2 ? "u" : "v", i);
            snprintf(client, sizeof(client), "c%d", m);
            snprintf(body, sizeof(body), "\"message %d of %d\"", m, i);
            struct sb_store_rec r = message(conv, (uint64_t)m, user, client, body);
            unsigned home = sb_home_worker(conv, strlen(conv), from);
            lens[home] += (size_t)sb_store_encode(&r, files[home] + lens[home],
                                                  sizeof(files[0]) - lens[home]);
        }
    }
    for (unsigned k = 0; k < from; k++) {
        char name[32];
        snprintf(name, sizeof(name), "w%u.log", k);
        write_file(dir, name, files[k], lens[k]);
    }
}

/* Opens dir for `workers`, replays into chat, rewrites; returns the store (chat initialised). */
static struct sb_store *load(const char *dir, unsigned workers, uint32_t history_max)
{
    struct sb_store *st = open_store(dir, workers, sb_chat_snapshot);
    struct sb_chat_config cc = {.workers = workers, .history_max = history_max, .store = st};
    CHECK_INT(sb_chat_init(&cc), 0);
    CHECK(sb_store_replay(st, sb_chat_restore, NULL) >= 0);
    CHECK_INT(sb_store_rewrite(st), 0);
    return st;
}

/* Checks that each log holds only conversations homed on its worker, each as its newest
 * `keep` messages in order followed by its state record; returns the total bytes. */
static long check_logs(const char *dir, unsigned workers, int keep)
{
    int seen[NCONV] = {0}, bad = 0;
    long total = 0;
    for (unsigned k = 0; k < workers; k++) {
        char name[32];
        snprintf(name, sizeof(name), "w%u.log", k);
        size_t len = 0, pos = 0;
        uint8_t *data = read_file(dir, name, &len);
        CHECK(data != NULL);
        total += (long)len;
        int expect = -1, i = -1;
        while (data && pos < len) {
            struct sb_store_rec r;
            ssize_t n = sb_store_decode(data + pos, len - pos, &r);
            if (n <= 0) {
                bad++;
                break;
            }
            pos += (size_t)n;
            bad += sb_home_worker(r.conv, r.conv_len, workers) != k;
            if (expect < 0) { /* a conversation starts */
                i = atoi(r.conv + 4);
                expect = PER_CONV - keep + 1;
                seen[i]++;
            }
            char conv[SB_CONV_ID_MAX + 1];
            conv_id(conv, i);
            bad += r.conv_len != strlen(conv) || memcmp(r.conv, conv, r.conv_len) != 0;
            if (r.type == SB_STORE_STATE) {
                bad += r.seq != PER_CONV || expect != PER_CONV + 1;
                expect = -1;
                continue;
            }
            bad += r.seq != (uint64_t)expect++;
        }
        free(data);
    }
    for (int i = 0; i < NCONV; i++)
        bad += seen[i] != 1;
    CHECK_INT(bad, 0);
    return total;
}

static void test_reshard(void)
{
    char dir[256];
    make_dir(dir, sizeof(dir), "reshard");
    mkdir(dir, 0755);
    write_logs(dir, 3);
    /* Three workers' logs replayed by two: every conversation lands in its new home's log. */
    struct sb_store *st = load(dir, 2, 100);
    CHECK_INT(file_size(dir, "w2.log"), -1);
    long total = check_logs(dir, 2, PER_CONV);
    struct sb_store_stats s0, s1;
    sb_store_log_stats(sb_store_log(st, 0), &s0);
    sb_store_log_stats(sb_store_log(st, 1), &s1);
    CHECK_INT((long)(s0.live + s1.live), total); /* the rewrite wrote exactly what is live */
    CHECK_INT((long)(s0.bytes + s1.bytes), total);
    sb_store_close(st);
    sb_chat_free();

    /* Again with the same count: the same bytes (compaction is stable). */
    size_t l0 = 0, l1 = 0, m0 = 0, m1 = 0;
    uint8_t *a0 = read_file(dir, "w0.log", &l0), *a1 = read_file(dir, "w1.log", &l1);
    st = load(dir, 2, 100);
    uint8_t *b0 = read_file(dir, "w0.log", &m0), *b1 = read_file(dir, "w1.log", &m1);
    CHECK(l0 == m0 && memcmp(a0, b0, l0) == 0);
    CHECK(l1 == m1 && memcmp(a1, b1, l1) == 0);
    free(a0), free(a1), free(b0), free(b1);
    sb_store_close(st);
    sb_chat_free();

    /* A crash between two renames leaves copies in two files: they are skipped. Then a smaller
     * history: the rewrite keeps the newest 4 of each conversation, and the state record keeps
     * last_seq. Up to five workers and back. */
    write_logs(dir, 2);
    write_file(dir, "w5.log", "", 0);
    st = load(dir, 5, 4);
    check_logs(dir, 5, 4);
    sb_store_close(st);
    sb_chat_free();
    st = load(dir, 1, 4);
    total = check_logs(dir, 1, 4);
    sb_store_log_stats(sb_store_log(st, 0), &s0);
    CHECK_INT((long)s0.live, total);
    sb_store_close(st);
    sb_chat_free();
    rm_rf(dir);
}

/* ---- the append path on a worker ---- */

#define CONVS 4
#define LIVE 12               /* records kept per conversation */
#define ROUNDS 240            /* each appends 1..7 records and holds one reply */
#define BODY (6 << 10)        /* so that a snapshot takes several 256 KiB writes */
#define COMPACT_MIN (1 << 20) /* several compactions in a run */

struct conv_model {
    struct sb_store_ent *live[LIVE]; /* ring */
    unsigned head, count;
    uint32_t gen;
};

static struct model {
    struct sb_store *st;
    struct sb_store_log *log;
    enum sb_store_fsync fsync;
    struct conv_model convs[CONVS];
    uint64_t next_seq; /* one sequence across conversations keeps checks simple */
    int round, released, bad;
    uint64_t last_released;
    unsigned snap_next;
    uint32_t snap_gen;
    struct sb_conn *conn;
    char dir[256];
} M;

static int model_snapshot(void *ctx, unsigned worker, uint32_t gen, struct sb_store_buf *out,
                          size_t target, bool *done)
{
    if (M.snap_gen != gen) {
        M.snap_gen = gen;
        M.snap_next = 0;
    }
    while (M.snap_next < CONVS && out->len < target) {
        struct conv_model *cv = &M.convs[M.snap_next++];
        for (unsigned i = 0; i < cv->count; i++) {
            struct sb_store_ent *e = cv->live[(cv->head + i) % LIVE];
            memcpy(sb_store_buf_reserve(out, e->len), e->rec, e->len);
        }
        cv->gen = gen;
    }
    *done = M.snap_next == CONVS;
    return 0;
}

static struct sb_store_ent *model_ent(int conv, uint64_t seq)
{
    static char body[BODY + 3];
    memset(body + 1, 'a' + (int)(seq % 26), BODY);
    body[0] = body[BODY + 1] = '"';
    char id[16], client[24];
    snprintf(id, sizeof(id), "c%d", conv);
    snprintf(client, sizeof(client), "k%llu", (unsigned long long)seq);
    struct sb_store_rec r = message(id, seq, "user", client, "");
    r.body = body;
    r.body_len = BODY + 2;
    size_t len = sb_store_rec_size(&r);
    struct sb_store_ent *e = malloc(sizeof(*e) + len);
    e->len = (uint32_t)len;
    e->flags = 0;
    sb_store_encode(&r, e->rec, len);
    return e;
}

/* Every record still live with a seq <= upto is in the log file (durable, under always). */
static void check_durable(uint64_t upto)
{
    size_t len;
    uint8_t *data = read_file(M.dir, "w0.log", &len);
    static bool present[ROUNDS * 8 + 1];
    memset(present, 0, sizeof(present));
    for (size_t pos = 0; data && pos < len;) {
        struct sb_store_rec r;
        ssize_t n = sb_store_decode(data + pos, len - pos, &r);
        if (n <= 0)
            break; /* a write in flight */
        if (r.seq < sizeof(present))
            present[r.seq] = true;
        pos += (size_t)n;
    }
    free(data);
    for (int c = 0; c < CONVS; c++) {
        struct conv_model *cv = &M.convs[c];
        for (unsigned i = 0; i < cv->count; i++) {
            uint64_t seq = sb_store_rec_seq(cv->live[(cv->head + i) % LIVE]->rec);
            if (seq <= upto && !present[seq]) {
                fprintf(stderr, "record %llu (<= %llu) not in the log\n", (unsigned long long)seq,
                        (unsigned long long)upto);
                M.bad++;
            }
        }
    }
}

struct reply {
    uint64_t seq;
};

static void reply_released(struct sb_worker *w, void *arg)
{
    struct reply *r = arg;
    if (r->seq <= M.last_released)
        M.bad++; /* out of order */
    M.last_released = r->seq;
    if (M.fsync == SB_FSYNC_ALWAYS && M.released % 8 == 0)
        check_durable(r->seq);
    free(r);
    M.released++;
    sb_conn_write(M.conn, "k", 1);
}

static void model_step(struct sb_worker *w, void *arg)
{
    int n = 1 + M.round % 7;
    for (int i = 0; i < n; i++) {
        int c = (M.round * 3 + i) % CONVS;
        struct conv_model *cv = &M.convs[c];
        struct sb_store_ent *e = model_ent(c, ++M.next_seq);
        if (cv->count == LIVE) {
            struct sb_store_ent *old = cv->live[cv->head];
            cv->head = (cv->head + 1) % LIVE;
            cv->count--;
            sb_store_account(M.log, -(int64_t)old->len);
            sb_store_ent_free(old);
        }
        cv->live[(cv->head + cv->count++) % LIVE] = e;
        sb_store_account(M.log, (int64_t)e->len);
        sb_store_append(M.log, w, e, cv->gen);
    }
    struct reply *r = malloc(sizeof(*r));
    r->seq = M.next_seq;
    CHECK_INT(sb_store_post_after(M.log, w, sb_worker_id(w), reply_released, r), 0);
    M.round++;
}

static void m_open(struct sb_conn *c)
{
    M.conn = c;
}

/* Answers "1" when everything appended is written and no compaction runs, else "0". */
static void answer_idle(struct sb_conn *c)
{
    struct sb_store_stats s;
    sb_store_log_stats(M.log, &s);
    sb_conn_write(c, s.pending || s.compacting ? "0" : "1", 1);
}

/* Each "r" line from the test thread is one round: batches of several rounds form while a write
 * or fsync is in flight. "s" asks whether the log is idle. */
static ssize_t m_data(struct sb_conn *c, uint8_t *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (data[i] == 'r' && M.round < ROUNDS)
            model_step(sb_conn_worker(c), NULL);
        if (data[i] == 's')
            answer_idle(c);
    }
    return (ssize_t)len;
}

/* Reads exactly n bytes (the test's socket has a receive timeout). */
static void read_n(int fd, char *buf, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            fprintf(stderr, "read: %zd %s\n", k, strerror(errno));
            CHECK(k > 0);
            return;
        }
        got += (size_t)k;
    }
}

static void m_close(struct sb_conn *c, int err)
{
}

static void m_shutdown(struct sb_conn *c)
{
    sb_conn_close(c, 0);
}

static const struct sb_conn_ops model_ops = {
    .on_open = m_open, .on_data = m_data, .on_close = m_close, .on_shutdown = m_shutdown};

static int dial(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_INT(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct timeval tv = {.tv_sec = 60};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void test_worker(enum sb_io_mode mode, enum sb_store_fsync fsync)
{
    memset(&M, 0, sizeof(M));
    M.fsync = fsync;
    make_dir(M.dir, sizeof(M.dir), "worker");
    struct sb_store_config sc = {.dir = M.dir,
                                 .workers = 1,
                                 .fsync = fsync,
                                 .compact_min = COMPACT_MIN,
                                 .snapshot = model_snapshot};
    CHECK_INT(sb_store_open(&sc, &M.st), 0);
    CHECK_INT(sb_store_replay(M.st, collect, &(struct collected){0}), 0);
    CHECK_INT(sb_store_rewrite(M.st), 0);
    M.log = sb_store_log(M.st, 0);

    struct sb_engine_config ec;
    sb_engine_config_default(&ec);
    ec.workers = 1;
    ec.pin_workers = false;
    ec.io_mode = mode;
    ec.recv_buffers = 64;
    ec.recv_buffer_size = 4096;
    ec.shutdown_timeout_ms = 2000;
    struct sb_engine *e;
    unsigned port;
    CHECK_INT(sb_engine_create(&ec, &e), 0);
    CHECK_INT(sb_engine_listen(e, "127.0.0.1", 0, &model_ops, &port), 0);
    CHECK_INT(sb_engine_start(e), 0);
    /* Rounds go in groups of three, each sent when the replies of the one before came back. */
    int fd = dial(port);
    for (int i = 0; i < ROUNDS; i += 3) {
        CHECK_INT(write(fd, "r\nr\nr\n", 6), 6);
        char k[3];
        read_n(fd, k, sizeof(k));
        /* Replies are not held without fsync = always: pace the rounds so that writes finish
         * between them and compactions start and finish while appends go on. */
        if (fsync != SB_FSYNC_ALWAYS)
            usleep(1000);
    }
    /* Appends under never and everysec run ahead of the disk: let the log catch up (and a
     * compaction finish) before the stop, or there is little to check. */
    char idle = '0';
    for (int i = 0; i < 10000 && idle == '0'; i++) {
        usleep(1000);
        CHECK_INT(write(fd, "s\n", 2), 2);
        read_n(fd, &idle, 1);
    }
    CHECK(idle == '1');
    close(fd);
    sb_engine_stop(e);
    sb_engine_wait(e);
    sb_engine_free(e);

    struct sb_store_stats s;
    sb_store_log_stats(M.log, &s);
    CHECK_INT(M.bad, 0);
    CHECK_INT(M.released, ROUNDS);
    CHECK_INT(s.records, M.next_seq);
    CHECK(s.batches > 0 && s.batches < ROUNDS); /* rounds were grouped */
    CHECK(s.compactions >= (fsync == SB_FSYNC_ALWAYS ? 2u : 1u));
    if (fsync == SB_FSYNC_ALWAYS)
        CHECK(s.fsyncs >= s.batches);
    if (fsync == SB_FSYNC_NEVER)
        CHECK_INT(s.fsyncs, 0);
    fprintf(
        stderr, "  %s: %llu records, %llu batches, %llu fsyncs (%llu us each), %llu compactions\n",
        fsync == SB_FSYNC_ALWAYS     ? "always"
        : fsync == SB_FSYNC_EVERYSEC ? "everysec"
                                     : "never",
        (unsigned long long)s.records, (unsigned long long)s.batches, (unsigned long long)s.fsyncs,
        (unsigned long long)(s.fsyncs ? s.fsync_us / s.fsyncs : 0),
        (unsigned long long)s.compactions);
    sb_store_close(M.st);

    /* Replayed: every live record is there, each conversation's in order, and nothing twice. */
    struct sb_store_config rc = {.dir = M.dir, .workers = 1, .snapshot = no_snapshot};
    struct sb_store *st;
    CHECK_INT(sb_store_open(&rc, &st), 0);
    static struct seen_log {
        uint64_t last[CONVS];
        bool seen[ROUNDS * 8 + 1];
        int bad;
    } sl;
    memset(&sl, 0, sizeof(sl));
    size_t len;
    long before = file_size(M.dir, "w0.log");
    struct collected all = {0};
    CHECK(sb_store_replay(st, collect, &all) > 0);
    CHECK_INT(file_size(M.dir, "w0.log"), before); /* nothing torn */
    sb_store_close(st);
    uint8_t *data = read_file(M.dir, "w0.log", &len);
    for (size_t pos = 0; data && pos < len;) {
        struct sb_store_rec r;
        ssize_t n = sb_store_decode(data + pos, len - pos, &r);
        if (n <= 0) {
            sl.bad++;
            break;
        }
        pos += (size_t)n;
        int c = r.conv[1] - '0';
        sl.bad += r.seq <= sl.last[c] || sl.seen[r.seq];
        sl.last[c] = r.seq;
        sl.seen[r.seq] = true;
    }
    free(data);
    for (int c = 0; c < CONVS; c++) {
        struct conv_model *cv = &M.convs[c];
        for (unsigned i = 0; i < cv->count; i++) {
            struct sb_store_ent *ent = cv->live[(cv->head + i) % LIVE];
            sl.bad += !sl.seen[sb_store_rec_seq(ent->rec)];
            sb_store_ent_free(ent);
        }
    }
    CHECK_INT(sl.bad, 0);
    rm_rf(M.dir);
}

int main(void)
{
    sb_log_threshold = SB_LOG_ERROR; /* the WARNs of the truncation tests are expected */
    snprintf(base_dir, sizeof(base_dir), "/tmp/sb-test-store-%d", (int)getpid());
    mkdir(base_dir, 0755);
    sb_metrics_init(8); /* the logs count their appends and fsyncs */
    test_crc32c();
    test_round_trip();
    test_truncations_and_flips();
    test_replay_files();
    test_reshard();
    for (int m = 0; m < 2; m++) {
        fprintf(stderr, "mode %s\n", m ? "compat" : "auto");
        test_worker(m ? SB_IO_COMPAT : SB_IO_AUTO, SB_FSYNC_ALWAYS);
        test_worker(m ? SB_IO_COMPAT : SB_IO_AUTO, SB_FSYNC_EVERYSEC);
        test_worker(m ? SB_IO_COMPAT : SB_IO_AUTO, SB_FSYNC_NEVER);
    }
    rmdir(base_dir);
    sb_metrics_free();
    return check_done();
}
