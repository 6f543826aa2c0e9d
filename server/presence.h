/*
 * Presence: who is online, decided on each user's home worker, and the devices that watch it.
 *
 * A user is online from its first device on; offline once its last device has been gone for
 * grace_ms (a reconnect inside the grace shows nothing to anyone). Watchers subscribe per
 * device with presence_sub / presence_unsub (docs/protocol.md); the subscription lives on the
 * watched user's home worker, which mails each change once per subscriber worker. A device whose
 * send queue is backed up gets only the latest value per user once it drains (DESIGN.md §5).
 *
 * Threads: sb_presence_init and sb_presence_free run on the main thread while no worker runs;
 * the rest on the worker that owns the connection (the device's user's home worker).
 */
#ifndef SB_SERVER_PRESENCE_H
#define SB_SERVER_PRESENCE_H

#include <stddef.h>
#include <stdint.h>

#include "core/engine.h"
#include "proto/ops.h"

#define SB_PRESENCE_USERS_PER_REQUEST 1000

struct sb_presence_config {
    unsigned workers;
    uint64_t grace_ms;          /* offline this long after the last device leaves; 0 = at once */
    uint32_t max_subscriptions; /* users one device may watch */
    uint64_t last_seen_max;     /* last-seen times kept for idle users, per process */
};

/* Allocates one shard per worker. Returns 0 or -ENOMEM. */
int sb_presence_init(const struct sb_presence_config *cfg);

/*
 * Call just before sb_engine_stop (any thread): presence mails nothing between workers from then
 * on. The devices closing at shutdown would otherwise mail every watcher's worker an offline
 * event and an unsubscribe that nobody will read.
 */
void sb_presence_stop(void);

/* Frees every shard and what is left in them (users in their grace period, idle records). */
void sb_presence_free(void);

/* A device of user (len bytes) registered on this worker, its home worker. */
void sb_presence_device_up(struct sb_conn *c, const char *user, size_t len);

/* That device is gone: counts it down and drops its subscriptions. */
void sb_presence_device_down(struct sb_conn *c, const char *user, size_t len);

/* presence_sub or presence_unsub of a registered device; answers errors itself. */
void sb_presence_on_op(struct sb_conn *c, const struct sb_op *req);

/*
 * REST POST /api/user/status: json holds "users" (1-1,000 ids). Answers the waiting request
 * (server/rest.c) with {"type":"status","users":[{"user","status","last_seen"}]} once every
 * home worker has answered, or with an error at once.
 */
void sb_presence_status(struct sb_conn *c, const char *json, size_t len);

#endif
