/*
 * Sharded pub/sub (Redis 7 SSUBSCRIBE/SPUBLISH) on the Redis Cluster client's workers
 * (cluster/redis.h). A worker subscribes to channels for as long as the client runs; each
 * message reaches cb on that worker. Subscriptions follow their slot by themselves: after a lost
 * connection, a failover, a slot migration (Redis drops the subscription with an unsolicited
 * sunsubscribe) or any topology change, the worker subscribes again where the slot is served.
 * Delivery is at most once: what is published while a subscription moves is lost, and when the
 * subscription is confirmed again after such a lapse, cb runs once with msg NULL to say so.
 *
 * Publishing is an ordinary command routed by the channel:
 *   sb_redis_cmd(w, r, channel, len, 3, {"SPUBLISH", channel, message}, ...).
 *
 * Threads: all on the worker named, as sb_redis_cmd.
 */
#ifndef SB_CLUSTER_PUBSUB_H
#define SB_CLUSTER_PUBSUB_H

#include <stdbool.h>
#include <stddef.h>

#include "cluster/redis.h"

#define SB_REDIS_CHANNEL_MAX 256 /* bytes of a channel name */
#define SB_REDIS_MAX_SUBS 1024   /* channels one worker subscribes to */

/* A message on channel (both valid during the call only), or msg NULL: a lapse ended. */
typedef void (*sb_redis_msg_cb)(struct sb_worker *w, void *arg, const char *channel, size_t clen,
                                const char *msg, size_t len);

/* Subscribes this worker to channel. Returns 0, -EINVAL (empty or longer than
 * SB_REDIS_CHANNEL_MAX, no cb), -EEXIST (subscribed already), -ENOBUFS (SB_REDIS_MAX_SUBS),
 * -ESHUTDOWN or -ENOMEM. */
int sb_redis_ssubscribe(struct sb_worker *w, struct sb_redis *r, const char *channel, size_t len,
                        sb_redis_msg_cb cb, void *arg);

/* Stops the subscription (0), or -ENOENT. */
int sb_redis_sunsubscribe(struct sb_worker *w, struct sb_redis *r, const char *channel, size_t len);

/* Whether Redis has confirmed every subscription of this worker, now. */
bool sb_redis_subscribed(struct sb_worker *w, struct sb_redis *r);

#endif
