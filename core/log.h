/*
 * Logging: one line per event, written whole with one write(2) to stderr.
 * Line format: "<UTC ISO-8601 ms> <LEVEL> [<thread>] <message>[: <strerror> (<errno>)]".
 * Any thread may call these; each thread names itself once with sb_log_set_thread().
 */
#ifndef SB_CORE_LOG_H
#define SB_CORE_LOG_H

#include <stdbool.h>

enum sb_log_level {
    SB_LOG_DEBUG,
    SB_LOG_INFO,
    SB_LOG_WARN,
    SB_LOG_ERROR,
};

/* The process-wide threshold; lines below it are dropped. Set once at start. */
extern enum sb_log_level sb_log_threshold;

/* Names the calling thread in its log lines ("main", "w0", ...). name is copied. */
void sb_log_set_thread(const char *name);

/* Parses "debug" / "info" / "warn" / "error". Returns 0 or -EINVAL. */
int sb_log_level_parse(const char *s, enum sb_log_level *out);

/*
 * Logs one line at level. err is 0 or a negative errno, rendered once after the message.
 */
void sb_log(enum sb_log_level level, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline bool sb_log_enabled(enum sb_log_level level)
{
    return level >= sb_log_threshold;
}

#endif
