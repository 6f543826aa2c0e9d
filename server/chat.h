/*
 * Messaging over the JSON mapping (docs/messaging-design.md): devices registered on their user's
 * home worker, conversations sequenced on theirs, delivery by one mail per worker, history kept
 * in memory and logged by the store (server/store.h).
 *
 * Threads: sb_chat_init, sb_chat_restore and sb_chat_free run on the main thread while no worker
 * runs; everything else runs on worker threads, each touching only its own shard.
 */
#ifndef SB_SERVER_CHAT_H
#define SB_SERVER_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/engine.h"
#include "server/ids.h"
#include "proto/ops.h"
#include "server/store.h"

struct sb_redis;
struct sb_registry;

#define SB_DEVICE_ID_MAX 32
#define SB_CLIENT_ID_MAX 64
#define SB_GROUP_NAME_MAX 128

enum sb_receipt_kind {
    SB_RECEIPT_DELIVERED = 1,
    SB_RECEIPT_READ = 2,
};

/* What happens to a user's device past max_devices. */
enum sb_device_policy {
    SB_DEVICES_REPLACE, /* the oldest is told (goaway) and closed */
    SB_DEVICES_REFUSE,  /* the new one gets an error and is closed */
};

struct sb_chat_config {
    struct sb_engine *engine;
    unsigned workers;
    uint32_t history_max;        /* messages kept per conversation */
    uint64_t history_max_age_ms; /* older messages are dropped; 0 = no limit */
    struct sb_store *store;      /* the history log; must outlive the shards' use of it */
    uint32_t max_devices;        /* devices online per user; 0 = no limit */
    enum sb_device_policy device_policy;
    uint32_t rate_messages;    /* per device: messages per second (bucket: two seconds' worth) */
    uint64_t rate_bytes;       /* per device: bytes per second (bucket: two seconds' worth) */
    uint64_t max_message_size; /* the largest WebSocket message: always fits the byte bucket */
    uint32_t max_body;         /* the largest send body (its JSON text) */
    uint32_t max_group_members;
    uint32_t max_groups_per_user;
    uint64_t slow_queue_bytes; /* past this much queued output a device is a slow consumer */
    /* Cluster mode (both set, or neither): conversations live in Redis (cluster/convs.h) and
     * pushes reach other nodes through each (node, worker)'s sharded channel. */
    struct sb_redis *redis;
    struct sb_registry *registry;
};

/* Allocates one shard per worker. Returns 0 or -ENOMEM. */
int sb_chat_init(const struct sb_chat_config *cfg);

/* The users with devices on this worker (their home), for the cluster registry. Worker. */
void sb_chat_each_user(struct sb_worker *w, void (*fn)(void *arg, const char *user, size_t len),
                       void *arg);
/* How many devices user has online on this worker (its home worker), and their ids (separated
 * by spaces, as many as fit cap with the NUL). Worker. */
unsigned sb_chat_devices(struct sb_worker *w, const char *user, size_t len, char *ids, size_t cap);

/* Cluster mode: the registry wrote the user's entry on this worker (sb_registry_written_fn):
 * every node's cache of where the user is gets dropped, shortly. Worker. */
void sb_chat_located(struct sb_worker *w, const char *user, size_t len);

/* Frees every shard. Call after sb_store_close (entries may be in its batches until then). */
void sb_chat_free(void);

/* The store's replay callback (sb_store_replay_cb): rebuilds a conversation on its home shard
 * (history, last_seq, de-duplication). Returns 0 or -ENOMEM. Main thread. */
int sb_chat_restore(void *ctx, const struct sb_store_rec *rec);

/* After the replay: derives each user's conversation index. Returns 0 or -ENOMEM. Main
 * thread. */
int sb_chat_loaded(void);

/* The store's compaction callback (sb_store_snapshot_cb): a shard's live records. */
int sb_chat_snapshot(void *ctx, unsigned worker, uint32_t gen, struct sb_store_buf *out,
                     size_t target, bool *done);

/* Who a connection authenticated as, carried from the accepting worker to the home worker. */
struct sb_chat_login {
    char user[SB_USER_ID_MAX + 1];
    char device[SB_DEVICE_ID_MAX + 1];
    bool is_admin;
    /* The binary encoding: the HELLO, whose request id WELCOME answers and whose resume list
     * is synced after it (a copy of its frame; NULL for JSON). */
    uint32_t hello_id;
    uint8_t *hello;
    size_t hello_len;
};

/* Frees a login (NULL is fine). */
void sb_chat_login_free(struct sb_chat_login *login);

/* On the user's home worker: registers the connection as a device (takes ownership of login),
 * sends `welcome` and answers the HELLO's resume list. Returns 0 or -ENOMEM (the caller closes
 * the connection). */
int sb_chat_register(struct sb_conn *c, struct sb_chat_login *login);

/* A text message (JSON) from a registered device. */
void sb_chat_on_message(struct sb_conn *c, const uint8_t *data, size_t len);

/* A decoded binary frame of wire_len bytes from a registered device (HELLO excepted). */
void sb_chat_on_op(struct sb_conn *c, const struct sb_op *op, size_t wire_len);

/* The device's connection is gone. */
void sb_chat_unregister(struct sb_conn *c);

/*
 * A REST request (server/rest.c): operation `type` (as on /ws: "send", "conv_create", ...) with
 * the JSON object json (len 0: none) on behalf of user, conv naming the conversation when the path
 * does (else NULL). Answered through sb__rest_respond / sb__rest_answer.
 */
void sb_chat_rest(struct sb_conn *c, const char *user, const char *type, const char *conv,
                  const char *json, size_t len);

#endif
