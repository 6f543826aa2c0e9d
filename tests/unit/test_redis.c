/*
 * cluster/redis against a real Redis Cluster (3 masters, 3 replicas) that this test starts with
 * tools/redis-cluster on free ports, on an engine with 2 workers:
 *   basic      SET/GET/INCR of 10,000 keys over every master from both workers, every answer
 *              checked; commands pipelined; CLUSTER KEYSLOT agrees with our CRC16
 *   wait       500 pipelined writes each waited on for a replica: far fewer WAITs go out
 *   timeouts   a node frozen by DEBUG SLEEP: -ETIMEDOUT, never a hang, then answers again
 *   migration  a slot moved (IMPORTING/MIGRATING, MIGRATE, SETSLOT) under INCR traffic: ASK and
 *              MOVED followed, no command lost or run twice
 *   failover   a master killed: retryable errors only, then its replica serves within seconds
 *   outage     every node stopped: commands fail fast with retryable errors; restarted: recover
 *   auth       with requirepass set: AUTH user password works; a wrong password gets -EACCES
 * Exits 77 (skipped) when redis-server is not installed. White-box: it includes redis.c to show
 * where commands are held when a callback does not come.
 */
#include "cluster/redis.c"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "cluster/slots.h"
#include "core/log.h"

#define WORKERS 2
#define KEYS 10000
#define WINDOW 64     /* commands each worker keeps in flight */
#define MIG_KEYS 1000 /* keys of the migrated slot */
#define TIMEOUT_MS 2000

static char dir[PATH_MAX], tool[PATH_MAX], nodes[512];
static struct sb_engine *engine;
static struct sb_redis *redis, *redis_fast;         /* redis_fast: a 200 ms timeout */
static struct sb_redis *redis_auth, *redis_badauth; /* AUTH default s3cret, and a wrong one */
static atomic_int phase_done;
static atomic_long bad; /* answers that were wrong: the test fails */

__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
    /* The first few, as whole lines: workers report at the same time. */
    if (atomic_fetch_add(&bad, 1) >= 20)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    n = n < 0 ? 0 : n > (int)sizeof(line) - 2 ? (int)sizeof(line) - 2 : n;
    line[n] = '\n';
    if (write(2, line, (size_t)n + 1) < 0)
        return;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs a shell command; returns its exit status. */
__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return st == -1 ? -1 : WEXITSTATUS(st);
}

static int cmdv(struct sb_worker *w, struct sb_redis *r, const char *key, sb_redis_cb cb, void *arg,
                int argc, ...)
{
    const char *argv[8];
    size_t argvlen[8];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++) {
        argv[i] = va_arg(ap, const char *);
        argvlen[i] = strlen(argv[i]);
    }
    va_end(ap);
    return sb_redis_cmd(w, r, key, key ? strlen(key) : 0, argc, argv, argvlen, cb, arg);
}

/* ---- basic ----------------------------------------------------------------------------------- */

struct basic {
    struct sb_worker *w;
    int next; /* next key index of this worker */
    int inflight;
    int done;
};
static struct basic basics[WORKERS];
static struct keyop {
    int i;
    int stage; /* 0 SET, 1 GET, 2 INCR */
} keyops[KEYS];

static void basic_pump(struct basic *b);

static void basic_answer(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    struct keyop *op = arg;
    struct basic *b = &basics[sb_worker_id(w)];
    char key[32], val[32];
    snprintf(key, sizeof(key), "k:%d", op->i);
    snprintf(val, sizeof(val), "v:%d", op->i);
    if (err < 0) {
        fail("key %d stage %d: %s", op->i, op->stage, sb_redis_strerror(err));
    } else if (op->stage == 0 &&
               !(reply->type == REDIS_REPLY_STATUS && !strcmp(reply->str, "OK"))) {
        fail("SET %s: unexpected reply type %d", key, reply->type);
    } else if (op->stage == 1 && !(reply->type == REDIS_REPLY_STRING && !strcmp(reply->str, val))) {
        fail("GET %s: unexpected reply", key);
    } else if (op->stage == 2 && !(reply->type == REDIS_REPLY_INTEGER && reply->integer == 1)) {
        fail("INCR c:%d: unexpected reply", op->i);
    }
    b->inflight--;
    if (err < 0 || ++op->stage == 3) {
        b->done++;
        if (b->done == KEYS / WORKERS)
            atomic_fetch_add(&phase_done, 1);
    } else {
        char ckey[32];
        snprintf(ckey, sizeof(ckey), "c:%d", op->i);
        int rc = op->stage == 1 ? cmdv(w, redis, key, basic_answer, op, 2, "GET", key)
                                : cmdv(w, redis, ckey, basic_answer, op, 2, "INCR", ckey);
        if (rc < 0) {
            fail("key %d: %s", op->i, sb_redis_strerror(rc));
            b->done++;
        } else {
            b->inflight++;
        }
    }
    basic_pump(b);
}

static void basic_pump(struct basic *b)
{
    while (b->inflight < WINDOW && b->next < KEYS) {
        struct keyop *op = &keyops[b->next];
        op->i = b->next;
        b->next += WORKERS;
        char key[32], val[32];
        snprintf(key, sizeof(key), "k:%d", op->i);
        snprintf(val, sizeof(val), "v:%d", op->i);
        int rc = cmdv(b->w, redis, key, basic_answer, op, 3, "SET", key, val);
        if (rc < 0) {
            fail("SET %s: %s", key, sb_redis_strerror(rc));
            b->done++;
            continue;
        }
        b->inflight++;
    }
}

static void keyslot_answer(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    const char *key = arg;
    if (err < 0 || reply->type != REDIS_REPLY_INTEGER ||
        reply->integer != (long long)sb_slot_of(key, strlen(key)))
        fail("CLUSTER KEYSLOT %s disagrees with sb_slot_of (%u)", key,
             sb_slot_of(key, strlen(key)));
}

static void basic_start(struct sb_worker *w, void *arg)
{
    struct basic *b = &basics[sb_worker_id(w)];
    b->w = w;
    b->next = (int)sb_worker_id(w);
    static const char *const keys[] = {"foo", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap",
                                       "123456789"};
    if (sb_worker_id(w) == 0) {
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            if (cmdv(w, redis, NULL, keyslot_answer, (void *)keys[i], 3, "CLUSTER", "KEYSLOT",
                     keys[i]) < 0)
                fail("CLUSTER KEYSLOT not sent");
        }
    }
    basic_pump(b);
}

/* ---- traffic: SET/GET or INCR in a loop, counting outcomes ----------------------------------- */

struct traffic {
    struct sb_worker *w;
    struct sb_worker_timer retry;
    bool incr_mig; /* INCR the migrated slot's keys (else SET on keys over every slot) */
    int inflight;
    uint64_t seq;
    long ok, errors, run; /* run: successes since the last error */
    long fast_errors;     /* -EHOSTUNREACH, -ECONNRESET: errors that came without a wait */
    long submitted, answered;
    long counts[MIG_KEYS];
};
static struct traffic traffic[WORKERS];
static atomic_bool traffic_stop;
static atomic_int traffic_idle; /* workers whose traffic stopped with nothing in flight */

static void traffic_pump(struct traffic *t);

static void traffic_err(struct traffic *t, int err)
{
    t->errors++;
    t->run = 0;
    if (err == -EHOSTUNREACH || err == -ECONNRESET)
        t->fast_errors++;
    if (!sb_redis_retryable(err))
        fail("a non-retryable error: %s (%d)", sb_redis_strerror(err), err);
}

static void traffic_answer(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    struct traffic *t = &traffic[sb_worker_id(w)];
    long n = (long)(intptr_t)arg;
    t->inflight--;
    t->answered++;
    if (err < 0) {
        traffic_err(t, err);
        if (t->incr_mig)
            fail("INCR {m}:%ld lost: %s", n, sb_redis_strerror(err));
    } else if (reply->type == REDIS_REPLY_ERROR) {
        fail("error reply: %.*s", (int)reply->len, reply->str);
    } else {
        t->ok++;
        t->run++;
        if (t->incr_mig)
            t->counts[n]++;
    }
    traffic_pump(t);
}

static void traffic_retry(struct sb_worker *w, struct sb_worker_timer *timer)
{
    traffic_pump(&traffic[sb_worker_id(w)]);
}

static void traffic_pump(struct traffic *t)
{
    while (!atomic_load(&traffic_stop) && t->inflight < 16) {
        char key[32];
        long n;
        int rc;
        uint64_t s = t->seq++;
        if (t->incr_mig) {
            n = (long)((s * WORKERS + sb_worker_id(t->w)) % MIG_KEYS);
            snprintf(key, sizeof(key), "{m}:%ld", n);
            rc = cmdv(t->w, redis, key, traffic_answer, (void *)(intptr_t)n, 2, "INCR", key);
        } else {
            n = (long)(s * 7919 % 100000);
            snprintf(key, sizeof(key), "t:%ld", n);
            rc = cmdv(t->w, redis, key, traffic_answer, NULL, 3, "SET", key, "x");
        }
        if (rc < 0) {
            traffic_err(t, rc);
            if (t->incr_mig)
                fail("INCR %s refused: %s", key, sb_redis_strerror(rc));
            /* Failing at once: try again a little later rather than spin. */
            sb_worker_timer_set(t->w, &t->retry, 10);
            return;
        }
        t->inflight++;
        t->submitted++;
    }
    if (atomic_load(&traffic_stop) && t->inflight == 0) {
        sb_worker_timer_set(t->w, &t->retry, 0);
        atomic_fetch_add(&traffic_idle, 1);
        t->inflight = -1; /* counted once */
    }
}

static void traffic_start(struct sb_worker *w, void *arg)
{
    struct traffic *t = &traffic[sb_worker_id(w)];
    long counts[MIG_KEYS];
    memcpy(counts, t->counts, sizeof(counts));
    memset(t, 0, sizeof(*t));
    memcpy(t->counts, counts, sizeof(counts)); /* the migration keys' totals carry on */
    t->w = w;
    t->incr_mig = arg != NULL;
    t->retry.cb = traffic_retry;
    traffic_pump(t);
}

/* ---- timeouts (redis_fast: 200 ms) ----------------------------------------------------------- */

static int timeouts_seen, fast_ok;
static struct sb_worker_timer later;

static void fast_answer(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    const char *what = arg;
    if (!strcmp(what, "late")) {
        if (err == 0 && reply->type == REDIS_REPLY_NIL)
            fast_ok++;
        else
            fail("GET after the sleep: %s", sb_redis_strerror(err));
        atomic_fetch_add(&phase_done, 1);
        return;
    }
    if (err == -ETIMEDOUT)
        timeouts_seen++;
    else
        fail("%s: expected a timeout, got %s", what, sb_redis_strerror(err));
}

static void fast_later(struct sb_worker *w, struct sb_worker_timer *t)
{
    if (cmdv(w, redis_fast, "t:nothing", fast_answer, "late", 2, "GET", "t:nothing") < 0)
        fail("late GET not sent");
}

static void fast_started(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    if (err < 0) {
        fail("warm-up GET: %s", sb_redis_strerror(err));
        return;
    }
    /* The node sleeps 600 ms (under cluster-node-timeout: no failover). */
    if (cmdv(w, redis_fast, "t:nothing", fast_answer, "DEBUG SLEEP", 3, "DEBUG", "SLEEP", "0.6") <
            0 ||
        cmdv(w, redis_fast, "t:nothing", fast_answer, "GET behind it", 2, "GET", "t:nothing") < 0)
        fail("timeout commands not sent");
    later.cb = fast_later;
    sb_worker_timer_set(w, &later, 1500);
}

static void timeouts_start(struct sb_worker *w, void *arg)
{
    /* A first command connects and reads the map; the test proper starts once it is answered. */
    if (cmdv(w, redis_fast, "t:nothing", fast_started, NULL, 2, "GET", "t:nothing") < 0)
        fail("warm-up GET not sent");
}

/* ---- the control connection: main asks workers to start a phase ----------------------------- */

static void (*phase_fn)(struct sb_worker *w, void *arg);
static void *phase_arg;
static bool phase_all;

static ssize_t ctl_data(struct sb_conn *c, uint8_t *data, size_t len)
{
    struct sb_worker *w = sb_conn_worker(c);
    for (size_t i = 0; i < len; i++) {
        for (unsigned k = 0; k < (phase_all ? WORKERS : 1); k++)
            sb_worker_post(w, k, phase_fn, phase_arg);
    }
    return (ssize_t)len;
}

static void ctl_nop(struct sb_conn *c)
{
}

static void ctl_close(struct sb_conn *c, int err)
{
}

static void ctl_shutdown(struct sb_conn *c)
{
    sb_conn_close(c, 0);
}

static const struct sb_conn_ops ctl_ops = {
    .on_open = ctl_nop,
    .on_data = ctl_data,
    .on_timer = ctl_nop,
    .on_close = ctl_close,
    .on_shutdown = ctl_shutdown,
    .on_handoff = ctl_nop,
};

static int ctl_fd;

static void run_phase(void (*fn)(struct sb_worker *w, void *arg), void *arg, bool all)
{
    phase_fn = fn;
    phase_arg = arg;
    phase_all = all;
    atomic_store(&phase_done, 0);
    if (write(ctl_fd, "x", 1) != 1)
        fail("control write");
}

static bool wait_until(bool (*cond)(void), unsigned timeout_ms)
{
    uint64_t end = now_ms() + timeout_ms;
    while (now_ms() < end) {
        if (cond())
            return true;
        usleep(10000);
    }
    return cond();
}

static bool two_done(void)
{
    return atomic_load(&phase_done) >= WORKERS;
}

static bool one_done(void)
{
    return atomic_load(&phase_done) >= 1;
}

static bool traffic_stopped(void)
{
    return atomic_load(&traffic_idle) >= WORKERS;
}

/* Reads traffic counters written by workers: a snapshot after they went idle, or racy but only
 * used as progress hints while they run. */
static long run_min(void)
{
    long m = LONG_MAX;
    for (int i = 0; i < WORKERS; i++)
        m = traffic[i].run < m ? traffic[i].run : m;
    return m;
}

static bool recovered(void)
{
    return run_min() >= 1000;
}

static void stop_traffic(void)
{
    atomic_store(&traffic_stop, true);
    if (!wait_until(traffic_stopped, 3 * TIMEOUT_MS)) {
        /* Some callback never came: say where the client still holds commands. */
        for (unsigned i = 0; i < WORKERS; i++) {
            struct rworker *rw = &redis->workers[i];
            fail("worker %u: %ld commands sent, %ld answered; %u wait for a map", i,
                 traffic[i].submitted, traffic[i].answered, rw->unrouted.n);
            for (struct node *n = rw->nodes; n; n = n->next)
                fail("  node :%u state %d: %u waiting, %u in flight", n->port, n->state, n->wait.n,
                     n->sent.n);
        }
    }
    atomic_store(&traffic_stop, false);
    atomic_store(&traffic_idle, 0);
}

/* The port of a master from `tools/redis-cluster status`, and its PID. */
static int first_master(int *pid)
{
    char cmd[PATH_MAX * 2 + 32], line[256];
    snprintf(cmd, sizeof(cmd), "%s status --dir %s", tool, dir);
    FILE *f = popen(cmd, "r");
    int port = -1;
    while (f && fgets(line, sizeof(line), f)) {
        int p, id;
        if (port < 0 && sscanf(line, "%d pid=%d master", &p, &id) == 2 && strstr(line, "master")) {
            port = p;
            *pid = id;
        }
    }
    if (f)
        pclose(f);
    return port;
}

/* ---- main ------------------------------------------------------------------------------------ */

static void setup(void)
{
    /* tools/ is found from this file's path (CMake compiles it by its absolute path). */
    snprintf(tool, sizeof(tool), "%s", __FILE__);
    char *p = strstr(tool, "/tests/unit/");
    if (!p) {
        fprintf(stderr, "test_redis: cannot find the source tree from %s\n", __FILE__);
        exit(1);
    }
    strcpy(p, "/tools/redis-cluster");
    snprintf(dir, sizeof(dir), "/tmp/sb-test-redis-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    char cmd[PATH_MAX * 2 + 64], line[600];
    snprintf(cmd, sizeof(cmd), "%s start --dir %s", tool, dir);
    FILE *f = popen(cmd, "r");
    while (f && fgets(line, sizeof(line), f)) {
        if (!strncmp(line, "nodes ", 6))
            snprintf(nodes, sizeof(nodes), "%.*s", (int)strcspn(line + 6, "\n"), line + 6);
    }
    if (!f || pclose(f) != 0 || !nodes[0]) {
        fprintf(stderr, "test_redis: tools/redis-cluster start failed (logs in %s)\n", dir);
        sh("%s stop --dir %s", tool, dir); /* whatever part of it did start */
        exit(1);
    }
    printf("cluster in %s: %s\n", dir, nodes);
}

static void teardown(void)
{
    sh("%s stop --dir %s", tool, dir);
    sh("rm -rf %s", dir);
}

static void phase_basic(void)
{
    uint64_t t0 = now_ms();
    run_phase(basic_start, NULL, true);
    CHECK(wait_until(two_done, 30000));
    struct sb_redis_stats st;
    sb_redis_stats(redis, &st);
    printf("basic: %d keys x 3 commands in %llu ms, pipelining depth up to %llu\n", KEYS,
           (unsigned long long)(now_ms() - t0), (unsigned long long)st.inflight_max);
    CHECK(st.inflight_max > 1);
    CHECK(st.commands >= 3 * KEYS);
    CHECK_INT(atomic_load(&bad), 0);
}

/* ---- wait: sb_redis_wait coalesces the WAITs of pipelined writes -------------------------------
 */

#define WAIT_KEYS 500
static int waits_ok, waits_outside;

static void wait_answer(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    if (err < 0 || reply->type != REDIS_REPLY_INTEGER || reply->integer < 1)
        fail("WAIT: %s", err < 0 ? sb_redis_strerror(err) : "fewer than 1 replica");
    else
        waits_ok++;
    if (++basics[0].done == WAIT_KEYS)
        atomic_fetch_add(&phase_done, 1);
}

static void wait_set_answer(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    if (err < 0 || reply->type != REDIS_REPLY_STATUS) {
        fail("SET {w}: %s", sb_redis_strerror(err));
        if (++basics[0].done == WAIT_KEYS)
            atomic_fetch_add(&phase_done, 1);
        return;
    }
    int e = sb_redis_wait(w, redis, 1, 1000, wait_answer, NULL);
    if (e < 0) {
        fail("sb_redis_wait: %d", e);
        if (++basics[0].done == WAIT_KEYS)
            atomic_fetch_add(&phase_done, 1);
    }
}

static void wait_start(struct sb_worker *w, void *arg)
{
    basics[0].done = 0;
    waits_outside = sb_redis_wait(w, redis, 1, 1000, wait_answer, NULL);
    for (int i = 0; i < WAIT_KEYS; i++) {
        char key[32];
        snprintf(key, sizeof(key), "{w}:%d", i);
        if (cmdv(w, redis, key, wait_set_answer, NULL, 3, "SET", key, "v") < 0)
            fail("SET %s not sent", key);
    }
}

static void phase_wait(void)
{
    struct sb_redis_stats before, after;
    sb_redis_stats(redis, &before);
    run_phase(wait_start, NULL, false);
    CHECK(wait_until(one_done, 10000));
    sb_redis_stats(redis, &after);
    unsigned long long waits = after.waits - before.waits;
    printf("wait: %d pipelined writes confirmed on a replica by %llu WAITs\n", waits_ok, waits);
    CHECK_INT(waits_outside, -EINVAL); /* only from an answer's callback */
    CHECK_INT(waits_ok, WAIT_KEYS);
    CHECK(waits >= 1 && waits <= WAIT_KEYS / 4);
}

static void phase_timeouts(void)
{
    run_phase(timeouts_start, NULL, false);
    CHECK(wait_until(one_done, 10000));
    usleep(50000);
    CHECK_INT(timeouts_seen, 2);
    CHECK_INT(fast_ok, 1);
    struct sb_redis_stats st;
    sb_redis_stats(redis_fast, &st);
    CHECK(st.timeouts >= 2);
    printf("timeouts: %llu commands timed out, then the node answered again\n",
           (unsigned long long)st.timeouts);
}

static void set0_answer(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    struct basic *b = &basics[sb_worker_id(w)];
    if (err < 0 || reply->type != REDIS_REPLY_STATUS)
        fail("SET {m}:n: %s", sb_redis_strerror(err));
    if (++b->done == MIG_KEYS / WORKERS)
        atomic_fetch_add(&phase_done, 1);
}

static void check_answer(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    struct basic *b = &basics[sb_worker_id(w)];
    long n = (long)(intptr_t)arg;
    long want = traffic[sb_worker_id(w)].counts[n];
    if (err < 0 || reply->type != REDIS_REPLY_STRING || atol(reply->str) != want)
        fail("{m}:%ld holds %s, but %ld INCRs were acknowledged", n,
             err < 0                             ? sb_redis_strerror(err)
             : reply->type == REDIS_REPLY_STRING ? reply->str
                                                 : "?",
             want);
    if (++b->done == MIG_KEYS / WORKERS)
        atomic_fetch_add(&phase_done, 1);
}

static void check_mig_keys(struct sb_worker *w, void *arg)
{
    struct basic *b = &basics[sb_worker_id(w)];
    b->done = 0;
    for (long n = (long)sb_worker_id(w); n < MIG_KEYS; n += WORKERS) {
        char key[32];
        snprintf(key, sizeof(key), "{m}:%ld", n);
        if (cmdv(w, redis, key, check_answer, (void *)(intptr_t)n, 2, "GET", key) < 0)
            fail("GET %s not sent", key);
    }
}

static void set_mig_key(struct sb_worker *w, void *arg)
{
    /* Fill the slot with MIG_KEYS keys so the migration takes a while. */
    struct basic *b = &basics[sb_worker_id(w)];
    b->w = w;
    b->done = 0;
    for (long n = (long)sb_worker_id(w); n < MIG_KEYS; n += WORKERS) {
        char key[32];
        snprintf(key, sizeof(key), "{m}:%ld", n);
        traffic[sb_worker_id(w)].counts[n] = 0;
        if (cmdv(w, redis, key, set0_answer, NULL, 3, "SET", key, "0") < 0)
            fail("SET %s not sent", key);
    }
}

static void phase_migration(void)
{
    run_phase(set_mig_key, NULL, true);
    CHECK(wait_until(two_done, 10000));
    struct sb_redis_stats before, after;
    sb_redis_stats(redis, &before);
    run_phase(traffic_start, (void *)1, true);
    usleep(200000);
    unsigned slot = sb_slot_of("{m}", 3);
    CHECK_INT(sh("%s migrate --dir %s --slot %u >/dev/null", tool, dir, slot), 0);
    usleep(300000);
    stop_traffic();
    sb_redis_stats(redis, &after);
    long total = traffic[0].ok + traffic[1].ok;
    printf("migration of slot %u under traffic: %ld INCRs, %llu ASK, %llu MOVED\n", slot, total,
           (unsigned long long)(after.ask - before.ask),
           (unsigned long long)(after.moved - before.moved));
    CHECK(after.ask > before.ask);
    CHECK(after.moved > before.moved);
    CHECK_INT(traffic[0].errors + traffic[1].errors, 0);
    /* Every INCR acknowledged ran exactly once: each key holds its count. */
    run_phase(check_mig_keys, NULL, true);
    CHECK(wait_until(two_done, 10000));
    CHECK_INT(atomic_load(&bad), 0);
}

static void phase_failover(void)
{
    int pid = 0;
    int port = first_master(&pid);
    CHECK(port > 0 && pid > 0);
    run_phase(traffic_start, NULL, true);
    usleep(300000);
    uint64_t t0 = now_ms();
    CHECK_INT(kill(pid, SIGKILL), 0);
    /* Recovered: every worker had 1,000 successes in a row (a third of them on the slots of the
     * master killed) after at least one error. */
    uint64_t end = now_ms() + 30000;
    while (now_ms() < end && !(traffic[0].errors && traffic[1].errors && recovered()))
        usleep(10000);
    uint64_t took = now_ms() - t0;
    stop_traffic();
    printf("failover: master :%d killed; commands resumed after %llu ms; %ld errors "
           "meanwhile, all retryable (%ld failed fast)\n",
           port, (unsigned long long)took, traffic[0].errors + traffic[1].errors,
           traffic[0].fast_errors + traffic[1].fast_errors);
    CHECK(traffic[0].errors + traffic[1].errors > 0);
    CHECK(recovered());
    CHECK_INT(atomic_load(&bad), 0);

    /* The old master comes back as a replica and takes over again (a manual failover): its
     * node, let go while it was down, must be used again. */
    CHECK_INT(sh("%s start --dir %s >/dev/null", tool, dir), 0);
    run_phase(traffic_start, NULL, true);
    CHECK_INT(sh("redis-cli -p %d cluster failover >/dev/null", port), 0);
    end = now_ms() + 20000;
    while (now_ms() < end && sh("redis-cli -p %d role | grep -q master", port) != 0)
        usleep(50000);
    /* A second for the switch to show (MOVED, a refresh); then a second with no error at all. */
    usleep(1000000);
    long errors = traffic[0].errors + traffic[1].errors, ok = traffic[0].ok + traffic[1].ok;
    usleep(1000000);
    long errors2 = traffic[0].errors + traffic[1].errors, ok2 = traffic[0].ok + traffic[1].ok;
    stop_traffic();
    printf("failback: :%d is a master again; then %ld commands in a second, %ld errors\n", port,
           ok2 - ok, errors2 - errors);
    CHECK_INT(errors2 - errors, 0);
    CHECK(ok2 - ok > 1000);
    CHECK_INT(atomic_load(&bad), 0);
}

static void phase_outage(void)
{
    run_phase(traffic_start, NULL, true);
    usleep(300000);
    CHECK_INT(sh("%s stop --dir %s", tool, dir), 0);
    uint64_t t0 = now_ms();
    usleep(1500000);
    long errors = traffic[0].errors + traffic[1].errors;
    long fast = traffic[0].fast_errors + traffic[1].fast_errors;
    printf("outage: every node stopped; %ld errors in 1.5 s, %ld of them at once "
           "(-EHOSTUNREACH, -ECONNRESET)\n",
           errors, fast);
    /* Failing fast: far more errors than a timeout-bound client could produce. */
    CHECK(fast > 50);
    char cmd[PATH_MAX * 2 + 64];
    snprintf(cmd, sizeof(cmd), "%s start --dir %s >/dev/null", tool, dir);
    CHECK_INT(sh("%s", cmd), 0);
    uint64_t restarted = now_ms();
    uint64_t end = now_ms() + 30000;
    while (now_ms() < end && !recovered())
        usleep(10000);
    printf("outage: restarted after %llu ms; commands succeed again %llu ms later\n",
           (unsigned long long)(restarted - t0), (unsigned long long)(now_ms() - restarted));
    stop_traffic();
    CHECK(recovered());
    struct sb_redis_stats st;
    sb_redis_stats(redis, &st);
    CHECK(st.reconnects > 0);
    CHECK_INT(atomic_load(&bad), 0);
}

/* ---- AUTH ------------------------------------------------------------------------------------ */

static int auth_ok, auth_refused;

static void auth_answer(struct sb_worker *w, void *arg, int err, const redisReply *reply)
{
    if (arg == redis_auth && err == 0 && reply->type == REDIS_REPLY_STATUS)
        auth_ok++;
    else if (arg == redis_badauth && err == -EACCES)
        auth_refused++;
    else
        fail("AUTH case: %s", sb_redis_strerror(err));
    atomic_fetch_add(&phase_done, 1);
}

static void auth_start(struct sb_worker *w, void *arg)
{
    struct sb_redis *r = arg;
    int rc = cmdv(w, r, "a:1", auth_answer, r, 3, "SET", "a:1", "x");
    if (rc == -EACCES) {
        auth_refused++;
        atomic_fetch_add(&phase_done, 1);
    } else if (rc < 0) {
        fail("AUTH case not sent: %s", sb_redis_strerror(rc));
    }
}

static void phase_auth(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "for p in $(cat %s/ports); do redis-cli -p $p config set masterauth s3cret "
             ">/dev/null && redis-cli -p $p config set requirepass s3cret >/dev/null || exit 1; "
             "done",
             dir);
    CHECK_INT(sh("%s", cmd), 0);
    run_phase(auth_start, redis_auth, false);
    CHECK(wait_until(one_done, 10000));
    run_phase(auth_start, redis_badauth, false);
    CHECK(wait_until(one_done, 10000));
    printf("auth: the right password works (%d), a wrong one gets -EACCES (%d)\n", auth_ok,
           auth_refused);
    CHECK_INT(auth_ok, 1);
    CHECK_INT(auth_refused, 1);
    snprintf(cmd, sizeof(cmd),
             "for p in $(cat %s/ports); do redis-cli -p $p -a s3cret --no-auth-warning "
             "config set requirepass '' >/dev/null; done",
             dir);
    sh("%s", cmd);
}

int main(void)
{
    if (sh("command -v redis-server >/dev/null && command -v redis-cli >/dev/null") != 0) {
        printf("redis-server is not installed (tools/setup installs it): skipped\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    setup();
    struct sb_engine_config ec;
    sb_engine_config_default(&ec);
    ec.workers = WORKERS;
    ec.pin_workers = false;
    ec.conn_app_size = 16;
    if (getenv("SWITCHBOARD_IO_MODE") && !strcmp(getenv("SWITCHBOARD_IO_MODE"), "compat"))
        ec.io_mode = SB_IO_COMPAT;
    int rc = sb_engine_create(&ec, &engine);
    if (rc < 0) {
        fprintf(stderr, "engine: %d\n", rc);
        teardown();
        return 1;
    }
    /* The main client knows one seed only, a replica's (the last node): the masters come from
     * the topology, and a master it let go must be found again (failback). */
    const char *last_seed = strrchr(nodes, ',') ? strrchr(nodes, ',') + 1 : nodes;
    struct sb_redis_config rc1 = {.nodes = last_seed, .timeout_ms = TIMEOUT_MS, .queue = 10000};
    struct sb_redis_config rc2 = {.nodes = nodes, .timeout_ms = 200, .queue = 100};
    CHECK_INT(sb_redis_create(engine, &rc1, &redis), 0);
    CHECK_INT(sb_redis_create(engine, &rc2, &redis_fast), 0);
    struct sb_redis_config rc3 = {
        .nodes = nodes, .user = "default", .password = "s3cret", .timeout_ms = 2000, .queue = 100};
    struct sb_redis_config rc4 = {
        .nodes = nodes, .password = "wrong", .timeout_ms = 2000, .queue = 100};
    CHECK_INT(sb_redis_create(engine, &rc3, &redis_auth), 0);
    CHECK_INT(sb_redis_create(engine, &rc4, &redis_badauth), 0);
    unsigned port;
    CHECK_INT(sb_engine_listen(engine, "127.0.0.1", 0, &ctl_ops, &port), 0);
    CHECK_INT(sb_engine_start(engine), 0);
    ctl_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK_INT(connect(ctl_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    if (redis && redis_fast && check_failed == 0) {
        phase_basic();
        phase_wait();
        phase_timeouts();
        phase_migration();
        phase_failover();
        phase_outage();
        phase_auth();
    }
    close(ctl_fd);
    sb_redis_stop(redis);
    sb_redis_stop(redis_fast);
    sb_redis_stop(redis_auth);
    sb_redis_stop(redis_badauth);
    sb_engine_stop(engine);
    sb_engine_wait(engine);
    sb_engine_free(engine);
    sb_redis_free(redis);
    sb_redis_free(redis_fast);
    sb_redis_free(redis_auth);
    sb_redis_free(redis_badauth);
    teardown();
    return check_done();
}
