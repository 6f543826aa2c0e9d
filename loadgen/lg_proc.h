/*
 * Spreading a run over processes. A process here may hold only RLIMIT_NOFILE descriptors
 * (20,000 on the reference machine), so a run that needs more sockets than that forks children
 * that each take a contiguous slice of the connection numbers (at most --per-process). Each
 * child runs its slice with its share of the threads and writes to its pipe: a progress record
 * once a second and one result record (counters plus serialized histograms) at the end. The
 * parent only coordinates: it merges the progress into one line and the results into one report.
 */
#ifndef SB_LOADGEN_LG_PROC_H
#define SB_LOADGEN_LG_PROC_H

#include <stdint.h>
#include <sys/types.h>

#include "loadgen/lg_config.h"
#include "loadgen/lg_loop.h"
#include "loadgen/lg_stats.h"

#define LG_FD_RESERVE 256 /* descriptors a process needs besides its sockets */

struct lg_plan {
    unsigned processes;
    unsigned threads;  /* over all processes, at least one per process */
    uint64_t fd_limit; /* RLIMIT_NOFILE after raising it */
};

/*
 * Raises the soft RLIMIT_NOFILE to the hard limit and decides how many processes and threads
 * the run uses. Returns 0, or -EINVAL after explaining on stderr why it cannot work.
 */
int lg_proc_plan(const struct lg_config *cfg, struct lg_plan *plan);

/*
 * Runs the whole load as planned, in this process or in children, and merges every result into
 * *out. progress (may be NULL) gets the summed live figures once a second.
 * Returns 0, or a negative errno when some part could not run (its figures are missing).
 */
int lg_proc_run(const struct lg_config *cfg, const struct lg_plan *plan, lg_progress_cb progress,
                void *ctx, struct lg_stats *out);

/* Sends sig to every child (async-signal-safe; a no-op in a child or before forking). */
void lg_proc_signal_children(int sig);

/* Record framing on a child's pipe, exposed for tests: type, length, then the payload. */
enum lg_record_type {
    LG_REC_PROGRESS = 1, /* elapsed seconds (double bits) + LG_L_COUNT counters */
    LG_REC_RESULT = 2,   /* int32 run status + serialized struct lg_stats */
};

#define LG_REC_HEADER 8

#endif
