/*
 * The cluster registry, in Redis: which nodes are alive, and where each user's devices are.
 *
 * Keys (DESIGN.md §6; hash tags keep each multi-key step in one slot):
 *   sb:{nodes}       ZSET  node id -> the Redis time (ms) of its last heartbeat
 *   sb:{nodes}:info  HASH  node id -> {"name":..,"workers":..,"connections":..,"started_ms":..}
 *   sb:u:{<user>}    HASH  "<node id>/<worker>" -> "<devices> <device id> <device id> ..." (the
 *                          user's devices on that worker of that node; ids while they fit 4 KiB)
 *
 * A node id is node_name plus a suffix drawn at each start ("api-1~5f3a9c01"), so entries a
 * previous run of the same node left behind belong to a node that is dead. Each worker renews
 * the node's heartbeat every heartbeat_ms with one script that also returns the live nodes (those
 * heard from within ttl_ms, by Redis's clock: node clocks may disagree); a node silent for
 * 10 x ttl_ms is forgotten. Lookups ignore a user's entries that name a node not in the live
 * set, and delete them.
 *
 * The user's home worker writes its entry when the user's device count on this node changes
 * (HSET, or HDEL at 0). While Redis is unreachable the worker is degraded (sb_registry_status);
 * the users it touched meanwhile are remembered, and when a heartbeat succeeds again every user
 * of the worker and every user touched is written again, a batch per tick, so other nodes find
 * them whatever Redis lost or kept.
 *
 * Threads: sb_registry_create before sb_engine_start and sb_registry_free after sb_engine_wait,
 * on the main thread; sb_registry_status and sb_registry_nodes_json from any thread; the rest on
 * the worker named.
 */
#ifndef SB_CLUSTER_REGISTRY_H
#define SB_CLUSTER_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "cluster/redis.h"

#define SB_NODE_NAME_MAX 64
#define SB_NODE_ID_MAX (SB_NODE_NAME_MAX + 9)
#define SB_REGISTRY_MAX_NODES 256 /* live nodes a worker keeps track of */

struct sb_registry;

/* The application's users on a worker: calls fn for each user with devices on it. */
typedef void (*sb_registry_user_fn)(void *arg, const char *user, size_t len);
typedef void (*sb_registry_each_fn)(struct sb_worker *w, sb_registry_user_fn fn, void *arg);
/* How many devices user has on this worker (its home worker) now; their ids, separated by
 * spaces, into ids[0..cap) as far as they fit, NUL-terminated. */
typedef unsigned (*sb_registry_devices_fn)(struct sb_worker *w, const char *user, size_t len,
                                           char *ids, size_t cap);

/* A user's entry was written (so other nodes' caches of where it is may be stale). */
typedef void (*sb_registry_written_fn)(struct sb_worker *w, const char *user, size_t len);

struct sb_registry_config {
    const char *name;      /* node_name; NULL or "" = the host name */
    unsigned heartbeat_ms; /* >= 100 */
    unsigned ttl_ms;       /* >= 2 x heartbeat_ms */
    sb_registry_each_fn each_user;
    sb_registry_devices_fn devices;
    sb_registry_written_fn written; /* NULL: nobody needs to know */
};

/* Checks the settings, draws the node id and registers the workers' start hook. Logs the id.
 * Returns 0, -EINVAL (logged) or -ENOMEM. */
int sb_registry_create(struct sb_engine *e, struct sb_redis *redis,
                       const struct sb_registry_config *cfg, struct sb_registry **out);

/* This node's id (NUL-terminated). */
const char *sb_registry_node_id(const struct sb_registry *g);

/* The user's devices on this worker changed (the registry reads them with cfg.devices when it
 * writes, so a late or replayed write says what is true then). NULL g: nothing. */
void sb_registry_user(struct sb_worker *w, struct sb_registry *g, const char *user, size_t len);

/* A user's devices on one worker of a live node. */
struct sb_registry_loc {
    const char *node; /* its id */
    size_t node_len;
    unsigned worker;
    unsigned devices;
    const char *ids; /* "<id> <id> ..." (maybe fewer than devices) */
    size_t ids_len;
};
/* cb runs once, later, on this worker: err = 0 and the user's entries on live nodes (valid
 * during the call), or a Redis error and none. Entries of dead nodes are deleted on the way. */
typedef void (*sb_registry_lookup_cb)(struct sb_worker *w, void *arg, int err,
                                      const struct sb_registry_loc *locs, size_t n);
/* Returns 0 (cb will run) or -errno (it will not; see sb_redis_cmd). Worker. */
int sb_registry_lookup(struct sb_worker *w, struct sb_registry *g, const char *user, size_t len,
                       sb_registry_lookup_cb cb, void *arg);

/*
 * 0 when every worker's last heartbeat succeeded; else the error of the first worker that is
 * degraded (a Redis error, see sb_redis_strerror). Any thread.
 */
int sb_registry_status(const struct sb_registry *g);

/*
 * Appends to buf the live nodes as this worker last heard them, as a JSON array of
 * {"node":id,"name":..,"workers":..,"connections":..,"started_ms":..}; sets *connections to
 * their sum. Returns the bytes written (no NUL): "[]" when they do not fit. Worker.
 */
size_t sb_registry_nodes_json(struct sb_worker *w, const struct sb_registry *g, char *buf,
                              size_t cap, unsigned long long *connections);

/* The live nodes as this worker last heard them (this one included): up to cap ids (valid
 * until the next heartbeat answer) into ids[]; returns how many. Worker. */
size_t sb_registry_live(struct sb_worker *w, const struct sb_registry *g, const char **ids,
                        size_t cap);

/* The workers stop renewing (SIGTERM): main thread, before sb_engine_stop. */
void sb_registry_stop(struct sb_registry *g);
void sb_registry_free(struct sb_registry *g);

#endif
