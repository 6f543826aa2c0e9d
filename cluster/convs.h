/*
 * Conversations in Redis (cluster mode): the sequence, history, membership and send
 * de-duplication of every conversation, each changed by one script so that nodes never
 * disagree. Redis is the sequencer: a script's atomicity totally orders concurrent sends from
 * any number of nodes, and the seq it assigns is the stream entry's id, so no two sends can
 * get the same one.
 *
 * Keys (one hash tag per conversation: every script stays in one slot):
 *   sb:c:{<conv>}         HASH   seq (the last), mver (membership version), group, owner, name,
 *                                created (ms), jn (members ever joined: the join order)
 *   sb:c:{<conv>}:m       HASH   member -> role and join number: "a12" (admin), "m13"
 *   sb:c:{<conv>}:log     STREAM entry id "<seq>-0": i msg id, t ts ms, u from, d device,
 *                                c client id ("-": none), f body form, s system kind, b body
 *                                (a system message's subject); trimmed to about history_max
 *   sb:c:{<conv>}:r       HASH   "r:<user>" / "d:<user>" -> the user's read / delivered cursor
 *   sb:c:{<conv>}:k:<n>:<user><client id>  STRING  "<seq> <msg id> <ts>": a send's first ack,
 *                                for a day (n = the user id's length)
 *   sb:u:{<user>}:cv      HASH   conversation id -> "1": the user's conversations (conv_list),
 *                                written by the caller beside the scripts (another slot)
 *
 * Callback contract as sb_redis_cmd: when a call returns 0, cb runs once, later, on the same
 * worker, with err = 0 and a result (valid during the call), or err < 0 (see redis.h) and none.
 * -EAGAIN also when the replicas did not confirm a write in time (see sb_convs_set_wait).
 */
#ifndef SB_CLUSTER_CONVS_H
#define SB_CLUSTER_CONVS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/redis.h"

#define SB_CONVS_DEDUP_TTL_S 86400

/* A message as stored (strings point into the reply). */
struct sb_convs_msg {
    uint64_t seq, msg_id, ts_ms;
    uint8_t system; /* 0, or the kind of system message (server/store.h numbering) */
    uint8_t form;   /* the body's form (server/store.h numbering) */
    const char *user, *device, *client_id, *body;
    size_t user_len, device_len, client_id_len, body_len;
};

struct sb_convs_member {
    const char *id;
    size_t len;
    bool admin;
};

struct sb_convs_result {
    int status; /* 1 done; 2 a repeated send (seq, msg_id, ts_ms: the first's); 0 refused */
    /* Refused: "not_found", "forbidden", "conflict", and a message for the client. */
    const char *code, *message;
    size_t code_len, message_len;
    uint64_t seq, msg_id, ts_ms; /* a send's */
    uint64_t mver;               /* a group send's: the membership version (members: its) */
    /* A group's state after a create or a change, or as read (get); a sync's last_seq. */
    uint64_t last_seq, created_ms, read_seq; /* read_seq: the user's read cursor */
    uint64_t member_count;                   /* a summary's */
    const char *owner, *name;
    size_t owner_len, name_len;
    struct sb_convs_member *members; /* a group's (and a group send's, see there): all */
    size_t nmembers;
    bool have_members;
    struct sb_convs_msg *msgs; /* a sync's messages; a change's system messages */
    size_t nmsgs;
    struct sb_convs_member *removed; /* the users a change removed (admin: false) */
    size_t nremoved;
};

typedef void (*sb_convs_cb)(struct sb_worker *w, void *arg, int err,
                            const struct sb_convs_result *res);

/*
 * Writes are acknowledged (cb) once `replicas` replicas of the master have them (WAIT), or as
 * many as the current map lists for it if fewer, so a failover loses nothing acknowledged; past
 * timeout_ms the call fails with -EAGAIN (retryable: a repeated send is answered with the first
 * ack). 0 replicas: at once. Main thread, before the workers start.
 */
void sb_convs_set_wait(unsigned replicas, unsigned timeout_ms);

/* The conversation and who acts in it. */
struct sb_convs_who {
    const char *conv, *user, *device;
    size_t conv_len, user_len, device_len;
    bool group; /* a group (membership checked here) or a direct conversation (checked by the
                   caller: its id names its members) */
};

/*
 * Appends a message (m: msg_id, ts_ms, client_id (none: length 0), form, body; its seq is
 * assigned here) unless the user sent this client id before (status 2: the first send's ack, and
 * its message in msgs while history holds it). A group send's result carries the membership
 * version, and the members unless that version is known_mver (0: none known), whose members the
 * caller keeps. history_max bounds the stream (approximately).
 */
int sb_convs_send(struct sb_worker *w, struct sb_redis *r, const struct sb_convs_who *who,
                  const struct sb_convs_msg *m, uint32_t history_max, uint64_t known_mver,
                  sb_convs_cb cb, void *arg);

/* The messages after seq `after`, at most limit, and the last seq. */
int sb_convs_sync(struct sb_worker *w, struct sb_redis *r, const struct sb_convs_who *who,
                  uint64_t after, uint32_t limit, sb_convs_cb cb, void *arg);

/* A receipt: moves the user's delivered (and, when read, read) cursor forward to seq (at
 * most the last seq). The result's seq is where it moved to (0: it did not), its members the
 * senders of the messages now covered (at most max_senders, not the user). */
int sb_convs_receipt(struct sb_worker *w, struct sb_redis *r, const struct sb_convs_who *who,
                     bool read, uint64_t seq, unsigned max_senders, sb_convs_cb cb, void *arg);

/* A group change: what, its text (a create's or rename's name), the users it names. */
struct sb_convs_change {
    const char *kind; /* "create", "add", "remove", "leave", "rename", "promote", "demote",
                         "get" */
    const char *text;
    size_t text_len;
    const char *const *users;
    const size_t *user_lens;
    unsigned nusers;
    uint64_t ts_ms;
    const uint64_t *ids; /* message ids for the system messages it may post: max(1, nusers) */
    uint32_t history_max, max_members;
};

/* Creates, changes or reads a group with the rules of server/chat.c; answers its state. */
int sb_convs_change(struct sb_worker *w, struct sb_redis *r, const struct sb_convs_who *who,
                    const struct sb_convs_change *c, sb_convs_cb cb, void *arg);

/* A conversation as conv_list shows it: last_seq, owner, name, member_count, read_seq (the
 * user's). Refused (status 0) when the user is not a member of the group, or it is gone. */
int sb_convs_summary(struct sb_worker *w, struct sb_redis *r, const struct sb_convs_who *who,
                     sb_convs_cb cb, void *arg);

/* Adds conv to the user's index (member) or takes it out; cb: status 1, or err. */
int sb_convs_index(struct sb_worker *w, struct sb_redis *r, const char *user, size_t user_len,
                   const char *conv, size_t conv_len, bool member, sb_convs_cb cb, void *arg);

/* The user's index: the conversation ids as members (their admin flags false). */
int sb_convs_user_list(struct sb_worker *w, struct sb_redis *r, const char *user, size_t user_len,
                       sb_convs_cb cb, void *arg);

#endif
