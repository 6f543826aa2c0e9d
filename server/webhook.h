/*
 * The offline webhook: when a message reaches the home worker of a recipient who has no device
 * online, a JSON notice for it is queued on that worker and POSTed, in batches, to a configured
 * http:// URL, so that an operator's service can send push notifications. Delivery never waits
 * for it: the queue is bounded (the oldest notice is dropped past it), and the POSTs go out on
 * one kept-alive connection per worker, driven by the worker's own loop. Failed POSTs (no
 * connection, a 5xx, no response in time) are retried with exponential backoff and jitter; a 4xx
 * drops the batch. The notice format is in docs/protocol.md ("Webhooks").
 *
 * Threads: sb_webhook_init before sb_engine_start, sb_webhook_stop before sb_engine_stop and
 * sb_webhook_free after sb_engine_wait, all on the main thread. sb_webhook_offline on a worker,
 * for a user homed there. Each worker has its own queue, connection and timers: no locks.
 */
#ifndef SB_SERVER_WEBHOOK_H
#define SB_SERVER_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>

#include "core/engine.h"

struct sb_webhook_config {
    const char *url;     /* http://host[:port][/path]; NULL or "" = off */
    unsigned batch;      /* notices per POST at most (>= 1) */
    unsigned queue;      /* notices waiting per worker at most (>= 1) */
    unsigned timeout_ms; /* deadline for connecting and the whole response of one POST */
    bool body;           /* put message bodies in notices */
    size_t body_max;     /* a body longer than this (as JSON text) is left out of its notice */
    const char *secret;  /* HMAC-SHA256 key of the X-Switchboard-Signature header; "" = none */
};

/*
 * Checks the URL, resolves its host (once: the address is kept for the process's life) and
 * registers the outbound connection callbacks with the engine. With no URL it does nothing and
 * sb_webhook_offline does nothing either. Returns 0, -EINVAL for a bad URL (https included, until
 * TLS exists) or -EHOSTUNREACH when the host does not resolve (both logged), -ENOMEM.
 */
int sb_webhook_init(struct sb_engine *e, const struct sb_webhook_config *cfg);

/*
 * A message for `user` (homed on w, with no device online) reached w. `message` is the message
 * as delivered to JSON clients (the "message" operation of docs/protocol.md, message_len bytes);
 * nothing is kept pointing into it. A message from `user` itself (the sender) is ignored. Never
 * blocks and never fails: when the notice cannot be queued it is counted as dropped.
 */
void sb_webhook_offline(struct sb_worker *w, const char *user, size_t user_len, const char *message,
                        size_t message_len);

/* Stops new POSTs and retries on every worker (a POST in flight may finish within the engine's
 * shutdown deadline). Main thread, before sb_engine_stop. */
void sb_webhook_stop(void);

/* Frees the queues, logging how many notices were never sent. After sb_engine_wait. */
void sb_webhook_free(void);

#endif
