/*
 * A Redis Cluster client that lives on the engine's workers. Each worker has its own connection
 * to each master, its own copy of the slot map and its own queues, all driven by its io_uring
 * loop: no locks, no threads of its own. hiredis serves only as the RESP codec
 * (redisFormatCommandArgv to encode, redisReader* to decode); the bytes go through the worker's
 * ring like any other connection's.
 *
 * A command is routed by its key's slot to the master serving it, pipelined behind the commands
 * already in flight there, and answered in order. MOVED updates the map and resends; ASK resends
 * once, after ASKING, to the node named. The map is read again (CLUSTER SLOTS) periodically and
 * soon after any error. A lost node is reconnected with exponential backoff and jitter.
 *
 * Callback contract: when sb_redis_cmd returns 0, cb runs exactly once, later, on the same
 * worker, with err = 0 and the reply, or err < 0 and no reply. When it returns an error, cb never
 * runs. The reply is valid only during the call. Redis's own error replies (WRONGTYPE, ...) come
 * with err = 0 and reply->type == REDIS_REPLY_ERROR; the cluster's own (MOVED, ASK, TRYAGAIN,
 * CLUSTERDOWN, ...) are handled here and never reach the caller as replies.
 *
 * Typed errors (sb_redis_retryable says which ones a caller may retry):
 *   -EHOSTUNREACH  the slot's master cannot be reached (down, reconnecting): not sent
 *   -ENOBUFS       redis_queue commands already wait for that node: not sent
 *   -EAGAIN        the cluster is reconfiguring (TRYAGAIN, CLUSTERDOWN, LOADING, MASTERDOWN)
 *   -ECONNRESET    the connection broke after the command was sent: it may or may not have run
 *   -ETIMEDOUT     no answer within redis_timeout_ms: it may or may not have run
 *   -ELOOP         redirected more than 5 times
 *   -EACCES        AUTH was refused (not retryable)
 *   -ESHUTDOWN     the client is stopping (not retryable)
 *   -EINVAL, -ENOMEM
 *
 * Threads: sb_redis_create before sb_engine_start, sb_redis_stop before sb_engine_stop and
 * sb_redis_free after sb_engine_wait, on the main thread. sb_redis_cmd on a worker thread, for
 * that worker. sb_redis_stats from any thread.
 */
#ifndef SB_CLUSTER_REDIS_H
#define SB_CLUSTER_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/engine.h"

struct sb_redis;
struct redisReply;

#define SB_REDIS_MAX_SEEDS 32          /* host:port entries in the seed list */
#define SB_REDIS_MAX_REDIRECTS 5       /* MOVED/ASK hops for one command */
#define SB_REDIS_MAX_REPLY (64u << 20) /* bytes buffered for one reply at most */

struct sb_redis_config {
    const char *nodes;    /* seed list "host:port,host:port"; NULL or "" = off */
    const char *user;     /* ACL user for AUTH; NULL or "" = the default user */
    const char *password; /* NULL or "" = no AUTH */
    unsigned timeout_ms;  /* to connect, and for each command's answer (>= 1) */
    unsigned queue;       /* commands waiting or in flight per connection at most (>= 1) */
    unsigned refresh_ms;  /* the topology is read again this often; 0 = 5000 */
};

typedef void (*sb_redis_cb)(struct sb_worker *w, void *arg, int err,
                            const struct redisReply *reply);

/*
 * Checks and resolves the seed list (once: host names are resolved here, on the main thread) and
 * registers the connection callbacks with the engine. *out is NULL when the seed list is empty
 * (standalone mode: nothing to do). Returns 0, -EINVAL for a malformed list or setting (logged),
 * -EHOSTUNREACH when a seed does not resolve (logged), -ENOMEM.
 */
int sb_redis_create(struct sb_engine *e, const struct sb_redis_config *cfg, struct sb_redis **out);

/*
 * Sends argv[0..argc) (argvlen[i] bytes each) to the master serving key[0..keylen), or to any
 * connected master when key is NULL. The worker's connections start with its first command.
 * Returns 0 (cb will run) or -errno (cb will not): -EHOSTUNREACH, -ENOBUFS, -ESHUTDOWN, -EINVAL
 * (argc < 1), -ENOMEM. argv, argvlen and key are copied.
 */
int sb_redis_cmd(struct sb_worker *w, struct sb_redis *r, const char *key, size_t keylen, int argc,
                 const char **argv, const size_t *argvlen, sb_redis_cb cb, void *arg);

/*
 * Waits until `replicas` replicas have the write whose answer is being handled (call it from
 * that command's callback only), or timeout_ms passed: cb gets WAIT's answer, the number of
 * replicas that have it. The WAITs of the writes answered on one connection in one read (or
 * while a WAIT is out) go as one. Returns 0 (cb will run), -EINVAL (not in an answer's
 * callback), -ECONNRESET (that connection is closing: a WAIT elsewhere would not count the
 * write), -ESHUTDOWN, -ENOMEM.
 */
int sb_redis_wait(struct sb_worker *w, struct sb_redis *r, unsigned replicas, unsigned timeout_ms,
                  sb_redis_cb cb, void *arg);

/* How many healthy replicas this worker's current map lists for key's master (0 before a map;
 * CLUSTER SLOTS leaves failed replicas out). */
unsigned sb_redis_replicas(struct sb_worker *w, struct sb_redis *r, const void *key, size_t len);

/* Whether a caller may retry a command that failed with err (the cluster may heal). */
bool sb_redis_retryable(int err);

/* A short text for a typed error, for logs. */
const char *sb_redis_strerror(int err);

/* Stops new commands on every worker; what is in flight fails with -ESHUTDOWN. Main thread. */
void sb_redis_stop(struct sb_redis *r);

/* Frees everything. After sb_engine_wait. NULL is fine. */
void sb_redis_free(struct sb_redis *r);

struct sb_redis_stats {
    uint64_t commands;     /* commands accepted by sb_redis_cmd */
    uint64_t errors;       /* commands answered with err < 0 or a Redis error reply */
    uint64_t timeouts;     /* of those, -ETIMEDOUT */
    uint64_t moved, ask;   /* redirections followed */
    uint64_t reconnects;   /* connections made again after one was lost or failed */
    uint64_t refreshes;    /* CLUSTER SLOTS queries sent */
    uint64_t inflight_max; /* most commands in flight on one connection at once */
    uint64_t messages;     /* sharded pub/sub messages received (cluster/pubsub.h) */
    uint64_t resubscribes; /* subscriptions a node dropped (a slot moved) and made again */
    uint64_t waits;        /* WAITs sent for sb_redis_wait (one covers many writes) */
};

/* Sums every worker's counters into *out (inflight_max: the largest). Any thread. */
void sb_redis_stats(const struct sb_redis *r, struct sb_redis_stats *out);

#endif
