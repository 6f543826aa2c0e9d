/* switchboard-loadgen: the command line around the engine (see docs/loadgen.md). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen/lg_config.h"
#include "loadgen/lg_loop.h"
#include "loadgen/lg_proc.h"
#include "loadgen/lg_report.h"
#include "loadgen/lg_tls.h"

static volatile sig_atomic_t sigint_count;

static void on_signal(int sig)
{
    /* The first Ctrl-C stops the run and still reports; a second one quits at once. */
    if (sig == SIGINT && ++sigint_count >= 2) {
        lg_proc_signal_children(SIGKILL);
        _exit(130);
    }
    lg_loop_request_stop();
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

int main(int argc, char **argv)
{
    static struct lg_config cfg;
    int r = lg_config_parse(&cfg, argc, argv);
    if (r != 0)
        return r > 0 ? 0 : 2;
    struct lg_plan plan;
    if (lg_proc_plan(&cfg, &plan) < 0 || lg_tls_init(&cfg) < 0)
        return 2;
    install_signals();
    if (!cfg.quiet)
        fprintf(stderr,
                "switchboard-loadgen %s: %llu connections, %u thread%s in %u process%s "
                "(fd limit %llu)\n",
                lg_mode_name(cfg.mode), (unsigned long long)cfg.connections, plan.threads,
                plan.threads > 1 ? "s" : "", plan.processes, plan.processes > 1 ? "es" : "",
                (unsigned long long)plan.fd_limit);

    struct lg_stats *s = calloc(1, sizeof(*s));
    if (!s)
        return 1;
    struct lg_progress progress = {.cfg = &cfg, .out = stderr};
    int err = lg_proc_run(&cfg, &plan, cfg.quiet ? NULL : lg_report_progress, &progress, s);
    lg_report_table(stdout, &cfg, &plan, s);
    fflush(stdout);
    bool failed = lg_report_hints(stderr, &cfg, &plan, s) || err < 0;
    if (cfg.json_path[0]) {
        int jerr = lg_report_json(cfg.json_path, &cfg, &plan, s);
        if (jerr < 0) {
            fprintf(stderr, "switchboard-loadgen: %s: %s\n", cfg.json_path, strerror(-jerr));
            failed = true;
        }
    }
    free(s);
    return failed ? 1 : 0;
}
