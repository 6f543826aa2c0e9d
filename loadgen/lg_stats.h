/*
 * What a run measures: counters, latency histograms and rates, per worker thread first, then
 * merged per process and across child processes. The counter table (lg_counter_info) is the one
 * list of every figure: the report, the JSON output and the parent/child wire format all walk it.
 */
#ifndef SB_LOADGEN_LG_STATS_H
#define SB_LOADGEN_LG_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "loadgen/lg_hist.h"

enum lg_counter {
    LG_C_ATTEMPTED,
    LG_C_ESTABLISHED,
    /* Connections that never completed the handshake, by reason (the failure group). */
    LG_C_FAIL_REFUSED,
    LG_C_FAIL_TIMEOUT,
    LG_C_FAIL_STATUS,
    LG_C_FAIL_HANDSHAKE,
    LG_C_FAIL_RESET,
    LG_C_FAIL_FDLIMIT,
    LG_C_FAIL_PORTS,
    LG_C_FAIL_UNREACHABLE,
    LG_C_FAIL_OTHER,
    /* What happened to established connections. */
    LG_C_CLOSED_BY_SERVER,
    LG_C_DROPPED,
    LG_C_PROTO_ERRORS,
    LG_C_OPEN_AT_END,
    LG_C_PEAK_OPEN,
    LG_C_PINGS,
    /* Messages (data frames) of the echo and latency scenarios; bytes are payload bytes. */
    LG_C_MSGS_SENT,
    LG_C_MSGS_RECV,
    LG_C_BYTES_SENT,
    LG_C_BYTES_RECV,
    LG_C_MISMATCHED,
    LG_C_LOST,
    LG_C_LATE,
    /* The messaging scenarios (chat, fanout); deliveries count as messages received. */
    LG_C_ACKS,
    LG_C_EXPECTED,
    LG_C_SERVER_ERRORS,
    LG_C_GROUPS,
    LG_C_BEHIND,
    LG_C_COUNT
};

#define LG_C_FAIL_FIRST LG_C_FAIL_REFUSED
#define LG_C_FAIL_LAST LG_C_FAIL_OTHER

struct lg_counter_info {
    const char *name; /* JSON key and report label */
    const char *help; /* one line for docs and --help */
};

extern const struct lg_counter_info lg_counter_info[LG_C_COUNT];

enum lg_hist_kind {
    LG_H_CONNECT,   /* socket() to TCP connected */
    LG_H_HANDSHAKE, /* socket() to the 101 response, i.e. connect plus upgrade */
    LG_H_LATENCY,   /* message round trip (echo) or from intended send time (latency);
                       chat, fanout: send (or intended send) to each delivery */
    LG_H_LAST,      /* fanout: send to the last member's delivery of the message */
    LG_H_ACK,       /* chat, fanout: send (or intended send) to the ack */
    LG_H_COUNT
};

extern const char *const lg_hist_names[LG_H_COUNT];

struct lg_stats {
    uint64_t c[LG_C_COUNT];
    uint64_t ramp_ns;      /* longest time from first attempt to last establishment */
    uint64_t run_ns;       /* longest measurement window */
    double send_rate;      /* messages/s sent in the window, summed over workers */
    double msg_rate;       /* messages/s received in the window, summed over workers */
    double byte_rate;      /* payload bytes/s received in the window, summed over workers */
    int32_t status_sample; /* an HTTP status that failed a handshake, 0 if none */
    int32_t errno_sample;  /* an errno behind LG_C_FAIL_OTHER, 0 if none */
    struct lg_hist h[LG_H_COUNT];
};

/* Failed connection attempts: the sum of the failure group. */
uint64_t lg_stats_failed(const struct lg_stats *s);

/* Adds src into dst (counters and rates add, windows take the longer, samples the first). */
void lg_stats_merge(struct lg_stats *dst, const struct lg_stats *src);

/* Upper bound of lg_stats_serialize's output. */
size_t lg_stats_serialized_max(void);

/* Writes s into out; returns the length or -ENOSPC. */
ssize_t lg_stats_serialize(const struct lg_stats *s, uint8_t *out, size_t cap);

/* Reads what lg_stats_serialize wrote into *s; returns bytes consumed or -EBADMSG. */
ssize_t lg_stats_deserialize(struct lg_stats *s, const uint8_t *in, size_t len);

/*
 * Live progress figures: each worker stores its own with relaxed atomics once per loop
 * iteration, and the process's main thread sums them once a second. Cumulative, so a parent can
 * sum the latest snapshot of each child without ever double counting.
 */
enum lg_live_field {
    LG_L_PHASE, /* enum lg_phase; a sum takes the minimum */
    LG_L_OPEN,
    LG_L_ESTABLISHED,
    LG_L_FAILED,
    LG_L_SENT,
    LG_L_RECV,
    LG_L_BYTES,
    LG_L_ERRORS,
    LG_L_COUNT
};

struct lg_live {
    _Atomic uint64_t v[LG_L_COUNT];
};

struct lg_live_snapshot {
    uint64_t v[LG_L_COUNT];
};

/* Adds one worker's (or one child's) figures into *sum; phase takes the minimum. */
void lg_live_add(struct lg_live_snapshot *sum, const struct lg_live_snapshot *one, bool first);

/* Reads live into *out (relaxed loads). */
void lg_live_read(struct lg_live *live, struct lg_live_snapshot *out);

#endif
