#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum sb_log_level sb_log_threshold = SB_LOG_INFO;

static _Thread_local char thread_name[16] = "main";

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void sb_log_set_thread(const char *name)
{
    snprintf(thread_name, sizeof(thread_name), "%s", name);
}

int sb_log_level_parse(const char *s, enum sb_log_level *out)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (unsigned i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum sb_log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

void sb_log(enum sb_log_level level, int err, const char *fmt, ...)
{
    if (!sb_log_enabled(level))
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level], thread_name);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    /* A line that did not fit is cut, keeping room for the error and the newline. */
    if ((size_t)n > sizeof(line) - 64)
        n = (int)sizeof(line) - 64;
    if (err)
        n += snprintf(line + n, sizeof(line) - (size_t)n, ": %s (%d)", strerror(-err), -err);
    line[n++] = '\n';
    /* Whole lines only: stderr may be shared by all workers, and a short write to a pipe of
     * less than PIPE_BUF bytes does not happen. */
    ssize_t r = write(STDERR_FILENO, line, (size_t)n);
    (void)r;
}
