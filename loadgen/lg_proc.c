#include "loadgen/lg_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loadgen/lg_wire.h"

#define MAX_CHILDREN 1024

/* Read by the signal handler: written before any child can be signalled. */
static pid_t child_pids[MAX_CHILDREN];
static volatile sig_atomic_t nchild_pids;

void lg_proc_signal_children(int sig)
{
    for (int i = 0; i < nchild_pids; i++)
        if (child_pids[i] > 0)
            kill(child_pids[i], sig);
}

static unsigned cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

int lg_proc_plan(const struct lg_config *cfg, struct lg_plan *plan)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    plan->fd_limit = rl.rlim_cur;

    uint64_t n = cfg->connections;
    uint64_t p = cfg->processes;
    if (p == 0)
        p = n + LG_FD_RESERVE <= plan->fd_limit ? 1 : (n + cfg->per_process - 1) / cfg->per_process;
    if (p > MAX_CHILDREN || p > n) {
        fprintf(stderr, "switchboard-loadgen: %llu processes for %llu connections is too many\n",
                (unsigned long long)p, (unsigned long long)n);
        return -EINVAL;
    }
    if (LG_MODE_IS_MSGR(cfg->mode) && p > 1) {
        fprintf(stderr,
                "switchboard-loadgen: %s runs in one process, and %llu connections need about "
                "%llu descriptors, but RLIMIT_NOFILE is %llu.\n  Raise it (ulimit -n) or use "
                "fewer --connections.\n",
                lg_mode_name(cfg->mode), (unsigned long long)n,
                (unsigned long long)n + LG_FD_RESERVE, (unsigned long long)plan->fd_limit);
        return -EINVAL;
    }
    uint64_t per = (n + p - 1) / p;
    if (per + LG_FD_RESERVE > plan->fd_limit) {
        fprintf(stderr,
                "switchboard-loadgen: each process would need about %llu descriptors, but "
                "RLIMIT_NOFILE is %llu.\n  Raise it (ulimit -n; the hard limit is capped by "
                "sysctl fs.nr_open, the system total by fs.file-max), or spread the connections "
                "with a lower --per-process or more --processes.\n",
                (unsigned long long)per + LG_FD_RESERVE, (unsigned long long)plan->fd_limit);
        return -EINVAL;
    }
    uint64_t t = cfg->threads ? cfg->threads : cpu_count();
    plan->processes = (unsigned)p;
    plan->threads = (unsigned)(t < p ? p : t);
    return 0;
}

static void share_of(const struct lg_config *cfg, const struct lg_plan *plan, unsigned i,
                     struct lg_share *s)
{
    uint64_t n = cfg->connections, p = plan->processes, t = plan->threads;
    s->first = n * i / p;
    s->count = n * (i + 1) / p - s->first;
    s->worker_base = (unsigned)(t * i / p);
    s->threads = (unsigned)(t * (i + 1) / p) - s->worker_base;
}

/* Writes all of buf, retrying short writes. */
static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int write_record(int fd, uint32_t type, const uint8_t *payload, size_t len)
{
    uint8_t hdr[LG_REC_HEADER];
    lg_wire_put32(hdr, type);
    lg_wire_put32(hdr + 4, (uint32_t)len);
    int err = write_all(fd, hdr, sizeof(hdr));
    return err ? err : write_all(fd, payload, len);
}

static void child_progress(void *ctx, double elapsed_s, const struct lg_live_snapshot *snap)
{
    int fd = *(int *)ctx;
    uint8_t buf[8 + LG_L_COUNT * 8];
    uint64_t bits;
    memcpy(&bits, &elapsed_s, sizeof(bits));
    uint8_t *p = lg_wire_put64(buf, bits);
    for (int i = 0; i < LG_L_COUNT; i++)
        p = lg_wire_put64(p, snap->v[i]);
    write_record(fd, LG_REC_PROGRESS, buf, sizeof(buf));
}

static _Noreturn void child_main(const struct lg_config *cfg, const struct lg_plan *plan,
                                 unsigned index, int fd)
{
    /* A child must not outlive its parent: nobody would stop it or read its results. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    nchild_pids = 0;
    struct lg_share share;
    share_of(cfg, plan, index, &share);
    struct lg_stats *s = calloc(1, sizeof(*s));
    size_t cap = 4 + lg_stats_serialized_max();
    uint8_t *buf = malloc(cap);
    if (!s || !buf)
        _exit(3);
    /* More often than the parent prints, so that its line is never a second behind. */
    int err = lg_loop_run(cfg, &share, child_progress, &fd, 250, s);
    lg_wire_put32(buf, (uint32_t)err);
    ssize_t n = lg_stats_serialize(s, buf + 4, cap - 4);
    if (n < 0 || write_record(fd, LG_REC_RESULT, buf, 4 + (size_t)n) < 0)
        _exit(3);
    _exit(err < 0 ? 3 : 0);
}

struct child {
    pid_t pid;
    int fd;
    uint8_t *buf;
    size_t len, cap;
    bool has_live, has_result;
    int run_err;
    struct lg_live_snapshot live;
};

/* Consumes the complete records at the front of c->buf. */
static void parse_records(struct child *c, unsigned index, struct lg_stats *out,
                          struct lg_stats *tmp)
{
    size_t off = 0;
    while (c->len - off >= LG_REC_HEADER) {
        uint32_t type = lg_wire_get32(c->buf + off);
        uint32_t len = lg_wire_get32(c->buf + off + 4);
        if (c->len - off - LG_REC_HEADER < len)
            break;
        const uint8_t *p = c->buf + off + LG_REC_HEADER;
        if (type == LG_REC_PROGRESS && len == 8 + LG_L_COUNT * 8) {
            for (size_t i = 0; i < LG_L_COUNT; i++)
                c->live.v[i] = lg_wire_get64(p + 8 + 8 * i);
            c->has_live = true;
        } else if (type == LG_REC_RESULT && len >= 4 &&
                   lg_stats_deserialize(tmp, p + 4, len - 4) >= 0) {
            c->run_err = (int32_t)lg_wire_get32(p);
            lg_stats_merge(out, tmp);
            c->has_result = true;
        } else {
            fprintf(stderr, "switchboard-loadgen: bad record from process %u\n", index);
        }
        off += LG_REC_HEADER + len;
    }
    if (off == 0)
        return;
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

/* Reads what the child's pipe has; returns false at end of file. */
static bool read_child(struct child *c)
{
    for (;;) {
        if (c->cap - c->len < 65536) {
            size_t cap = c->cap ? c->cap * 2 : 131072;
            uint8_t *b = realloc(c->buf, cap);
            if (!b)
                return false;
            c->buf = b;
            c->cap = cap;
        }
        ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (n > 0) {
            c->len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 && errno == EAGAIN;
    }
}

static int spawn_children(const struct lg_config *cfg, const struct lg_plan *plan, struct child *cs)
{
    fflush(NULL); /* buffered output must not be written twice */
    for (unsigned i = 0; i < plan->processes; i++) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) < 0)
            return -errno;
        pid_t pid = fork();
        if (pid < 0) {
            close(fds[0]);
            close(fds[1]);
            return -errno;
        }
        if (pid == 0) {
            for (unsigned j = 0; j < i; j++)
                close(cs[j].fd);
            close(fds[0]);
            child_main(cfg, plan, i, fds[1]);
        }
        close(fds[1]);
        fcntl(fds[0], F_SETFL, O_NONBLOCK);
        cs[i].pid = pid;
        cs[i].fd = fds[0];
        child_pids[i] = pid;
        nchild_pids = (sig_atomic_t)(i + 1);
    }
    return 0;
}

static void sum_children(const struct child *cs, unsigned n, struct lg_live_snapshot *sum)
{
    bool first = true;
    memset(sum, 0, sizeof(*sum));
    for (unsigned i = 0; i < n; i++) {
        if (!cs[i].has_live)
            continue;
        lg_live_add(sum, &cs[i].live, first);
        first = false;
    }
}

/* Reads the children's pipes until all are closed, printing the merged progress. */
static void watch_children(struct child *cs, unsigned n, lg_progress_cb progress, void *ctx,
                           struct lg_stats *out, struct lg_stats *tmp)
{
    struct pollfd *pfd = calloc(n, sizeof(*pfd));
    unsigned open = n;
    bool forwarded = false;
    uint64_t start = lg_now_ns(), next = start + 1000000000ULL;
    for (unsigned i = 0; i < n; i++)
        pfd[i] = (struct pollfd){.fd = cs[i].fd, .events = POLLIN};
    while (open > 0) {
        poll(pfd, n, 100);
        for (unsigned i = 0; i < n; i++) {
            if (pfd[i].fd < 0 || !pfd[i].revents)
                continue;
            bool alive = read_child(&cs[i]);
            parse_records(&cs[i], i, out, tmp);
            if (!alive) {
                close(pfd[i].fd);
                pfd[i].fd = -1;
                open--;
            }
        }
        if (lg_loop_stop_requested() && !forwarded) {
            /* SIGTERM, not SIGINT: a child counts SIGINTs, and a second one means "quit now". */
            lg_proc_signal_children(SIGTERM);
            forwarded = true;
        }
        uint64_t now = lg_now_ns();
        if (now >= next && progress && open > 0) {
            struct lg_live_snapshot sum;
            sum_children(cs, n, &sum);
            progress(ctx, (double)(now - start) / 1e9, &sum);
            next += 1000000000ULL;
        }
    }
    free(pfd);
}

static int reap_children(struct child *cs, unsigned n)
{
    int err = 0;
    for (unsigned i = 0; i < n; i++) {
        int status = 0;
        while (waitpid(cs[i].pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (!cs[i].has_result) {
            fprintf(stderr, "switchboard-loadgen: process %u (pid %d) %s %d without a result\n", i,
                    (int)cs[i].pid, WIFSIGNALED(status) ? "died of signal" : "exited with",
                    WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
            err = -ECHILD;
        } else if (cs[i].run_err < 0) {
            err = cs[i].run_err;
        }
        free(cs[i].buf);
    }
    nchild_pids = 0;
    return err;
}

int lg_proc_run(const struct lg_config *cfg, const struct lg_plan *plan, lg_progress_cb progress,
                void *ctx, struct lg_stats *out)
{
    if (plan->processes == 1) {
        struct lg_share share;
        share_of(cfg, plan, 0, &share);
        return lg_loop_run(cfg, &share, progress, ctx, 1000, out);
    }
    memset(out, 0, sizeof(*out));
    struct child *cs = calloc(plan->processes, sizeof(*cs));
    struct lg_stats *tmp = malloc(sizeof(*tmp));
    if (!cs || !tmp) {
        free(cs);
        free(tmp);
        return -ENOMEM;
    }
    int err = spawn_children(cfg, plan, cs);
    unsigned n = (unsigned)nchild_pids;
    if (err < 0) {
        fprintf(stderr, "switchboard-loadgen: could not start process %u: %s\n", n, strerror(-err));
        lg_proc_signal_children(SIGTERM);
    }
    watch_children(cs, n, progress, ctx, out, tmp);
    int rerr = reap_children(cs, n);
    free(cs);
    free(tmp);
    return err < 0 ? err : rerr;
}
