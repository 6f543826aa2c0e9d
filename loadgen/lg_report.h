/*
 * What a run prints: a progress line per second on stderr, the result table on stdout, hints on
 * stderr for the failures a user can fix (descriptor limits, ports, a wrong path), and with
 * --json every figure in a file. Runs on the main thread, after or beside the workers.
 */
#ifndef SB_LOADGEN_LG_REPORT_H
#define SB_LOADGEN_LG_REPORT_H

#include <stdbool.h>
#include <stdio.h>

#include "loadgen/lg_config.h"
#include "loadgen/lg_proc.h"
#include "loadgen/lg_stats.h"

/* State of the progress printer; zero-filled apart from cfg and out. */
struct lg_progress {
    const struct lg_config *cfg;
    FILE *out;
    struct lg_live_snapshot prev;
    double prev_t;
};

/* An lg_progress_cb: prints one line with the rates since the previous call. */
void lg_report_progress(void *ctx, double elapsed_s, const struct lg_live_snapshot *snap);

/* Prints the result table. */
void lg_report_table(FILE *out, const struct lg_config *cfg, const struct lg_plan *plan,
                     const struct lg_stats *s);

/* Explains failures the user can act on; returns true when the run counts as failed. */
bool lg_report_hints(FILE *out, const struct lg_config *cfg, const struct lg_plan *plan,
                     const struct lg_stats *s);

/* Writes every figure as JSON to path. Returns 0 or -errno. */
int lg_report_json(const char *path, const struct lg_config *cfg, const struct lg_plan *plan,
                   const struct lg_stats *s);

#endif
