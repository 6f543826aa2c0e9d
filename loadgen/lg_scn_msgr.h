/*
 * What chat and fanout share: users, conversations and the JSON protocol at run time.
 *
 * Connection i is user "lg<i>" with one device; its token is minted with --jwt-secret
 * (lg_auth.h).
 * Unlike echo, a message sent on one connection arrives on others, possibly on another worker
 * thread, so the state that ties them together lives in one struct per process (lg_msgr_rt,
 * filled in by the scenario's prepare hook before the workers start). Both scenarios therefore
 * run in a single process (one process holds up to ~19,700 connections here).
 *
 * SETUP waits until every worker of the process has ramped up, so that every member is online
 * (and counted in its conversation) before anything is sent. Groups are created in SETUP by
 * their owner's worker (conv_create, then conv_add for members
 * past LG_MSGR_PER_REQUEST, one request at a time); RUN starts once every group has been
 * answered. Each send adds the conversation's online members but the sender to
 * the deliveries expected, and the run drains until every one has arrived or LG_DRAIN_NS passed.
 */
#ifndef SB_LOADGEN_LG_SCN_MSGR_H
#define SB_LOADGEN_LG_SCN_MSGR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "loadgen/lg_loop.h"
#include "loadgen/lg_msgr.h"

#define LG_MSGR_NO_CONV UINT32_MAX
#define LG_MSGR_PER_REQUEST 1000 /* users one conv_create or conv_add may name */

enum lg_conv_state {
    LG_CONV_NEW,       /* a group not requested yet */
    LG_CONV_REQUESTED, /* conv_create sent */
    LG_CONV_READY,     /* a direct conversation, or a group the server created */
    LG_CONV_FAILED,    /* its owner is not connected, or the server refused it */
};

struct lg_msgr_conv {
    char id[LG_MSGR_CONV_MAX]; /* a group's id from the server ("g:..."); "" for a DM */
    uint32_t first, count;     /* members: connections first .. first + count - 1 */
    uint32_t owner;            /* creates the group */
    uint32_t added;            /* members named in requests so far (the owner not counted) */
    bool is_group;
    _Atomic uint32_t online; /* members connected now */
    _Atomic int state;       /* enum lg_conv_state */
};

struct lg_msgr_rt {
    const struct lg_config *cfg;
    uint32_t nusers;
    char run[12]; /* client ids start with it: unique per run, so no send is a duplicate */
    struct lg_msgr_conv *convs;
    uint32_t nconvs;
    uint32_t *user_conv;     /* per user: index into convs, or LG_MSGR_NO_CONV */
    unsigned workers;        /* worker threads of this process */
    _Atomic unsigned ramped; /* workers whose every connection is up (or failed) */
    _Atomic unsigned ran;    /* workers past RUN: until all are, more sends may come */
    _Atomic uint32_t groups_pending;
    _Atomic uint64_t expected, received; /* deliveries over all workers, for the drain */
    _Atomic int error_shown;             /* one sample of the server's errors goes to stderr */
    /* Set by the scenario: a delivery of one of ours arrived on c (after it was counted). */
    void (*on_delivery)(struct lg_worker *w, struct lg_conn *c, const struct lg_msgr_stamp *s);
    /* Set by the scenario: c's send was acked (after it was counted). */
    void (*on_ack)(struct lg_worker *w, struct lg_conn *c);
};

extern struct lg_msgr_rt lg_msgr_rt;

/*
 * Common part of prepare: the run id, the key and the user table, with nconvs conversations
 * (zeroed, for the scenario to fill in). Returns 0 or -errno after saying why on stderr.
 */
int lg_msgr_prepare(const struct lg_config *cfg, const struct lg_share *share, uint32_t nconvs);

/* Ends what lg_msgr_prepare set up. */
void lg_msgr_release(void);

/* The hooks both scenarios use as they are. */
void lg_msgr_established(struct lg_worker *w, struct lg_conn *c);
void lg_msgr_conn_lost(struct lg_worker *w, struct lg_conn *c);
bool lg_msgr_setup(struct lg_worker *w, uint64_t *next);
void lg_msgr_message(struct lg_worker *w, struct lg_conn *c, const struct lg_ws_msg *m);
bool lg_msgr_drained(struct lg_worker *w);
void lg_msgr_finish(struct lg_worker *w);

/* c's conversation when c may send now, else NULL. */
struct lg_msgr_conv *lg_msgr_conv_of(const struct lg_conn *c);

/*
 * Sends message number n from c to its conversation, stamped with time t; *due gets the
 * deliveries it should make. Returns 0, or a negative errno (c has no conversation, c was
 * dropped, or the request did not fit).
 */
int lg_msgr_send_msg(struct lg_worker *w, struct lg_conn *c, uint64_t n, uint64_t t, uint64_t *due);

/* The worker's connection for user u, or NULL when another worker has it. */
struct lg_conn *lg_msgr_conn_for(struct lg_worker *w, uint32_t u);

#endif
