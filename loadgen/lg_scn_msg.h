/*
 * What echo and latency share: every message carries its connection's sequence number and a
 * send time in its first 16 bytes, so a reply is matched and timed from its own payload with no
 * per-message state on our side.
 */
#ifndef SB_LOADGEN_LG_SCN_MSG_H
#define SB_LOADGEN_LG_SCN_MSG_H

#include <stdbool.h>
#include <stdint.h>

#include "loadgen/lg_loop.h"

#define LG_LATE_NS 1000000ULL /* a send this far behind its schedule counts as late */

/*
 * Stamps the worker's payload with c's next sequence number and time t (as far as --size
 * allows) and queues it on c. Returns 0, or -ENOBUFS after dropping c.
 */
int lg_msg_send(struct lg_worker *w, struct lg_conn *c, uint64_t t);

/*
 * Checks a reply against what c sent: opcode, length and sequence number. Counts it, records
 * its latency (now minus the stamped time) when the payload has room for a time, and returns
 * whether it matched.
 */
bool lg_msg_check(struct lg_worker *w, struct lg_conn *c, const struct lg_ws_msg *m);

/* c went away: what it had in flight is lost. */
void lg_msg_conn_lost(struct lg_worker *w, struct lg_conn *c);

/* True once every sent message has been answered or counted as lost. */
bool lg_msg_drained(struct lg_worker *w);

/* Counts the replies still missing at the end of DRAIN as lost. */
void lg_msg_finish(struct lg_worker *w);

#endif
