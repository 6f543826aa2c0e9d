#include "loadgen/lg_report.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "loadgen/lg_loop.h"

static const char *const phase_names[] = {"ramp", "setup", "run", "drain", "close", "done"};

static const struct {
    const char *name;
    double p;
} percentiles[] = {{"p50", 50}, {"p90", 90}, {"p99", 99}, {"p99.9", 99.9}, {"p99.99", 99.99}};

#define NPERCENTILES (sizeof(percentiles) / sizeof(percentiles[0]))

static double us(uint64_t ns)
{
    return (double)ns / 1e3;
}

static unsigned long long ull(uint64_t v)
{
    return (unsigned long long)v;
}

void lg_report_progress(void *ctx, double elapsed_s, const struct lg_live_snapshot *snap)
{
    struct lg_progress *p = ctx;
    double dt = elapsed_s - p->prev_t;
    if (dt <= 0)
        dt = 1;
    const uint64_t *v = snap->v, *o = p->prev.v;
    uint64_t phase = v[LG_L_PHASE] <= LG_PHASE_DONE ? v[LG_L_PHASE] : LG_PHASE_DONE;
    fprintf(p->out, "[%5.0fs] %-5s open %llu (+%.0f/s) failed %llu", elapsed_s, phase_names[phase],
            ull(v[LG_L_OPEN]), (double)(v[LG_L_ESTABLISHED] - o[LG_L_ESTABLISHED]) / dt,
            ull(v[LG_L_FAILED]));
    if (p->cfg->mode != LG_MODE_HOLD)
        fprintf(p->out, "  sent %.0f/s  received %.0f msg/s  %.2f MB/s",
                (double)(v[LG_L_SENT] - o[LG_L_SENT]) / dt,
                (double)(v[LG_L_RECV] - o[LG_L_RECV]) / dt,
                (double)(v[LG_L_BYTES] - o[LG_L_BYTES]) / dt / 1e6);
    fprintf(p->out, "  errors %llu\n", ull(v[LG_L_ERRORS]));
    fflush(p->out);
    p->prev = *snap;
    p->prev_t = elapsed_s;
}

static void print_targets(FILE *out, const struct lg_config *cfg)
{
    for (unsigned i = 0; i < cfg->ntargets; i++)
        fprintf(out, "%s%s", i ? "," : "", cfg->targets[i].text);
}

static void print_hist_row(FILE *out, const char *label, const struct lg_hist *h)
{
    if (h->count == 0)
        return;
    fprintf(out, "  %-22s %10llu", label, ull(h->count));
    for (size_t i = 0; i < NPERCENTILES; i++)
        fprintf(out, " %10.1f", us(lg_hist_percentile(h, percentiles[i].p)));
    fprintf(out, " %10.1f %10.1f\n", us(h->max), lg_hist_mean(h) / 1e3);
}

static void print_failures(FILE *out, const struct lg_stats *s)
{
    fprintf(out, "failures     ");
    if (lg_stats_failed(s) == 0)
        fprintf(out, " none");
    for (int i = LG_C_FAIL_FIRST; i <= LG_C_FAIL_LAST; i++)
        if (s->c[i])
            fprintf(out, " %s %llu", lg_counter_info[i].name, ull(s->c[i]));
    if (s->c[LG_C_FAIL_STATUS] && s->status_sample)
        fprintf(out, " (e.g. HTTP %d)", s->status_sample);
    if (s->c[LG_C_FAIL_OTHER] && s->errno_sample)
        fprintf(out, " (e.g. %s)", strerror(s->errno_sample));
    fprintf(out, "\n");
}

/* Deliveries due and never seen: per process, sends and deliveries happen on any thread. */
static uint64_t lost_deliveries(const struct lg_stats *s)
{
    uint64_t want = s->c[LG_C_EXPECTED], got = s->c[LG_C_MSGS_RECV];
    return want > got ? want - got : 0;
}

static void print_msgr(FILE *out, const struct lg_config *cfg, const struct lg_stats *s)
{
    double secs = (double)s->run_ns / 1e9;
    fprintf(out, "run           %.2f s measured, %llu groups created\n", secs,
            ull(s->c[LG_C_GROUPS]));
    if (cfg->mode == LG_MODE_CHAT && cfg->msg_rate > 0)
        fprintf(out, "schedule      %.0f msg/s asked, %.1f msg/s sent, %llu late sends\n",
                cfg->msg_rate, s->send_rate, ull(s->c[LG_C_LATE]));
    fprintf(out, "sends         %llu  %.1f msg/s  acked %llu\n", ull(s->c[LG_C_MSGS_SENT]),
            s->send_rate, ull(s->c[LG_C_ACKS]));
    fprintf(out, "deliveries    %llu of %llu due  %.1f deliveries/s\n", ull(s->c[LG_C_MSGS_RECV]),
            ull(s->c[LG_C_EXPECTED]), s->msg_rate);
    fprintf(out,
            "errors        server errors %llu  unreadable %llu  unacked sends %llu  "
            "deliveries missing %llu  behind notices %llu\n",
            ull(s->c[LG_C_SERVER_ERRORS]), ull(s->c[LG_C_MISMATCHED]), ull(s->c[LG_C_LOST]),
            ull(lost_deliveries(s)), ull(s->c[LG_C_BEHIND]));
}

static void print_messages(FILE *out, const struct lg_config *cfg, const struct lg_stats *s)
{
    fprintf(out, "run           %.2f s measured\n", (double)s->run_ns / 1e9);
    if (cfg->mode == LG_MODE_LATENCY)
        fprintf(out, "schedule      %.0f msg/s asked, %.1f msg/s sent, %llu late sends\n",
                cfg->msg_rate, s->send_rate, ull(s->c[LG_C_LATE]));
    fprintf(out, "messages      sent %llu  received %llu  %.1f msg/s  %.2f MB/s (payload)\n",
            ull(s->c[LG_C_MSGS_SENT]), ull(s->c[LG_C_MSGS_RECV]), s->msg_rate, s->byte_rate / 1e6);
    fprintf(out, "errors        mismatched %llu  lost %llu\n", ull(s->c[LG_C_MISMATCHED]),
            ull(s->c[LG_C_LOST]));
}

void lg_report_table(FILE *out, const struct lg_config *cfg, const struct lg_plan *plan,
                     const struct lg_stats *s)
{
    fprintf(out, "switchboard-loadgen %s: ", lg_mode_name(cfg->mode));
    print_targets(out, cfg);
    fprintf(out, "%s%s%s%s, %llu connections, %u thread%s in %u process%s\n",
            cfg->wire == LG_WIRE_BIN ? "" : " ", cfg->wire == LG_WIRE_BIN ? "" : cfg->path,
            cfg->wire == LG_WIRE_WS ? "" : " --proto ",
            cfg->wire == LG_WIRE_WS ? "" : lg_wire_name(cfg->wire), ull(cfg->connections),
            plan->threads, plan->threads > 1 ? "s" : "", plan->processes,
            plan->processes > 1 ? "es" : "");
    fprintf(out,
            "connections   attempted %llu  established %llu  failed %llu  open at end %llu"
            "  peak %llu\n",
            ull(s->c[LG_C_ATTEMPTED]), ull(s->c[LG_C_ESTABLISHED]), ull(lg_stats_failed(s)),
            ull(s->c[LG_C_OPEN_AT_END]), ull(s->c[LG_C_PEAK_OPEN]));
    double ramp_s = (double)s->ramp_ns / 1e9;
    fprintf(out, "ramp          %.2f s, %.1f connections/s\n", ramp_s,
            ramp_s > 0 ? (double)s->c[LG_C_ESTABLISHED] / ramp_s : 0.0);
    print_failures(out, s);
    fprintf(out,
            "after open    closed by server %llu  dropped %llu  protocol errors %llu  pings "
            "answered %llu\n",
            ull(s->c[LG_C_CLOSED_BY_SERVER]), ull(s->c[LG_C_DROPPED]), ull(s->c[LG_C_PROTO_ERRORS]),
            ull(s->c[LG_C_PINGS]));
    if (cfg->mode == LG_MODE_HOLD)
        fprintf(out, "held          %.2f s\n", (double)s->run_ns / 1e9);
    else if (LG_MODE_IS_MSGR(cfg->mode))
        print_msgr(out, cfg, s);
    else
        print_messages(out, cfg, s);
    fprintf(out, "%-24s %10s", "latency (us)", "count");
    for (size_t i = 0; i < NPERCENTILES; i++)
        fprintf(out, " %10s", percentiles[i].name);
    fprintf(out, " %10s %10s\n", "max", "mean");
    print_hist_row(out, "connect", &s->h[LG_H_CONNECT]);
    print_hist_row(out, "handshake", &s->h[LG_H_HANDSHAKE]);
    if (LG_MODE_IS_MSGR(cfg->mode)) {
        bool sched = cfg->mode == LG_MODE_CHAT && cfg->msg_rate > 0;
        print_hist_row(out, sched ? "delivery (from sched.)" : "delivery", &s->h[LG_H_LATENCY]);
        if (cfg->mode == LG_MODE_FANOUT)
            print_hist_row(out, "last member", &s->h[LG_H_LAST]);
        print_hist_row(out, sched ? "ack (from schedule)" : "ack", &s->h[LG_H_ACK]);
        return;
    }
    print_hist_row(out, cfg->mode == LG_MODE_LATENCY ? "message (from schedule)" : "round trip",
                   &s->h[LG_H_LATENCY]);
}

bool lg_report_hints(FILE *out, const struct lg_config *cfg, const struct lg_plan *plan,
                     const struct lg_stats *s)
{
    const uint64_t *c = s->c;
    bool failed = false;
    if (c[LG_C_ESTABLISHED] == 0) {
        failed = true;
        fprintf(out, "switchboard-loadgen: error: no connection was established");
        if (c[LG_C_FAIL_REFUSED]) {
            fprintf(out, ": connection refused by ");
            print_targets(out, cfg);
            fprintf(out, " (is the server running and listening there?)");
        }
        fprintf(out, "\n");
    }
    if (c[LG_C_FAIL_FDLIMIT])
        fprintf(out,
                "hint: %llu sockets failed with EMFILE/ENFILE (descriptor limit %llu per "
                "process). Raise the hard limit (ulimit -Hn / -n, LimitNOFILE= under "
                "systemd); sysctl fs.nr_open caps it and fs.file-max limits the whole "
                "system. Or lower --per-process.\n",
                ull(c[LG_C_FAIL_FDLIMIT]), ull(plan->fd_limit));
    if (c[LG_C_FAIL_PORTS])
        fprintf(out,
                "hint: %llu connects failed with EADDRNOTAVAIL: the ephemeral ports of a "
                "(source, target) pair ran out (net.ipv4.ip_local_port_range, ~28k by "
                "default). Spread over source addresses with --sources K (e.g. "
                "--source-from 127.0.0.2 --sources 8), add --target ports, or widen the "
                "range.\n",
                ull(c[LG_C_FAIL_PORTS]));
    if (c[LG_C_FAIL_TIMEOUT])
        fprintf(out,
                "hint: %llu attempts took longer than --timeout %.1f s: the server's "
                "accept backlog may overflow (net.core.somaxconn, "
                "net.ipv4.tcp_max_syn_backlog), or lower --rate.\n",
                ull(c[LG_C_FAIL_TIMEOUT]), cfg->timeout_s);
    if (c[LG_C_FAIL_STATUS] && cfg->wire == LG_WIRE_BIN)
        fprintf(out,
                "hint: the server refused the HELLO as unauthorized (%d): is --jwt-secret "
                "the server's jwt_secret?\n",
                s->status_sample);
    else if (c[LG_C_FAIL_STATUS])
        fprintf(out, "hint: the server answered the upgrade with HTTP %d: is --path %s right?\n",
                s->status_sample, cfg->path);
    if (c[LG_C_FAIL_HANDSHAKE] && cfg->wire != LG_WIRE_WS)
        fprintf(out,
                "hint: %llu handshakes failed: no 101 with the switchboard.v1 subprotocol "
                "(ws-bin), or no WELCOME answering the HELLO: is this switchboard's binary "
                "%s?\n",
                ull(c[LG_C_FAIL_HANDSHAKE]), cfg->wire == LG_WIRE_BIN ? "port" : "/ws");
    else if (c[LG_C_FAIL_HANDSHAKE])
        fprintf(out,
                "hint: %llu 101 responses lacked Upgrade/Connection or had a wrong "
                "Sec-WebSocket-Accept.\n",
                ull(c[LG_C_FAIL_HANDSHAKE]));
    if (c[LG_C_FAIL_UNREACHABLE])
        fprintf(out, "hint: network unreachable: check the --target and --source-from "
                     "addresses.\n");
    /* A few late sends are scheduler jitter; more than 0.1% means loadgen fell behind. */
    if (c[LG_C_LATE] * 1000 > c[LG_C_MSGS_SENT])
        fprintf(out,
                "warning: %llu of %llu sends (%.2f%%) were more than 1 ms behind schedule: "
                "loadgen could not keep --rate (the delay is part of the latencies); use "
                "more --threads or a lower --rate.\n",
                ull(c[LG_C_LATE]), ull(c[LG_C_MSGS_SENT]),
                100.0 * (double)c[LG_C_LATE] / (double)c[LG_C_MSGS_SENT]);
    if (LG_MODE_IS_MSGR(cfg->mode) && c[LG_C_MSGS_SENT] == 0 && c[LG_C_ESTABLISHED] > 0) {
        failed = true;
        fprintf(out, "switchboard-loadgen: error: no message was sent (did the groups fail? see "
                     "the server's error above)\n");
    }
    if (LG_MODE_IS_MSGR(cfg->mode) && c[LG_C_SERVER_ERRORS])
        fprintf(out, "warning: the server answered %llu requests with an error\n",
                ull(c[LG_C_SERVER_ERRORS]));
    if (LG_MODE_IS_MSGR(cfg->mode) && c[LG_C_BEHIND])
        fprintf(out,
                "warning: %llu times the server stopped pushing a conversation to a device whose "
                "queue was full (`behind`; raise its slow_queue_bytes): the deliveries after "
                "that count as missing\n",
                ull(c[LG_C_BEHIND]));
    if (c[LG_C_MISMATCHED] || c[LG_C_PROTO_ERRORS]) {
        failed = true;
        fprintf(out, "switchboard-loadgen: error: %llu mismatched echoes, %llu protocol errors\n",
                ull(c[LG_C_MISMATCHED]), ull(c[LG_C_PROTO_ERRORS]));
    }
    return failed;
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void json_hist(FILE *f, const char *name, const struct lg_hist *h, bool last)
{
    fprintf(f, "    \"%s\": {\"count\": %llu, \"min\": %.3f", name, ull(h->count),
            us(h->count ? h->min : 0));
    for (size_t i = 0; i < NPERCENTILES; i++)
        fprintf(f, ", \"%s\": %.3f", percentiles[i].name,
                us(lg_hist_percentile(h, percentiles[i].p)));
    fprintf(f, ", \"max\": %.3f, \"mean\": %.3f}%s\n", us(h->max), lg_hist_mean(h) / 1e3,
            last ? "" : ",");
}

static void json_parameters(FILE *f, const struct lg_config *cfg, const struct lg_plan *plan)
{
    fprintf(f, "  \"parameters\": {\n    \"targets\": [");
    for (unsigned i = 0; i < cfg->ntargets; i++) {
        fprintf(f, "%s", i ? ", " : "");
        json_string(f, cfg->targets[i].text);
    }
    fprintf(f, "],\n    \"proto\": \"%s\",\n    \"path\": ", lg_wire_name(cfg->wire));
    json_string(f, cfg->path);
    char src[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &cfg->source_from, src, sizeof(src));
    fprintf(f,
            ",\n    \"connections\": %llu,\n    \"connect_rate\": %g,\n"
            "    \"duration_s\": %g,\n    \"timeout_s\": %g,\n    \"threads\": %u,\n"
            "    \"processes\": %u,\n    \"per_process\": %llu,\n    \"fd_limit\": %llu,\n"
            "    \"sources\": %llu,\n    \"source_from\": \"%s\",\n    \"io_mode\": \"%s\"",
            ull(cfg->connections), cfg->connect_rate, cfg->duration_s, cfg->timeout_s,
            plan->threads, plan->processes, ull(cfg->per_process), ull(plan->fd_limit),
            ull(cfg->sources), src, cfg->compat_io ? "compat" : "auto");
    if (cfg->mode != LG_MODE_HOLD)
        fprintf(f, ",\n    \"size\": %llu", ull(cfg->size));
    if (cfg->mode == LG_MODE_ECHO)
        fprintf(f, ",\n    \"pipeline\": %llu", ull(cfg->pipeline));
    if (cfg->mode == LG_MODE_LATENCY || cfg->mode == LG_MODE_CHAT)
        fprintf(f, ",\n    \"rate\": %g,\n    \"batch_us\": %g", cfg->msg_rate, cfg->batch_us);
    if (cfg->mode == LG_MODE_FANOUT)
        fprintf(f, ",\n    \"pipeline\": %llu", ull(cfg->pipeline));
    if (cfg->mode == LG_MODE_CHAT)
        fprintf(f, ",\n    \"group_share\": %g,\n    \"group_min\": %llu,\n    \"group_max\": %llu",
                cfg->group_share, ull(cfg->group_min), ull(cfg->group_max));
    fprintf(f, "\n  },\n");
}

int lg_report_json(const char *path, const struct lg_config *cfg, const struct lg_plan *plan,
                   const struct lg_stats *s)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    fprintf(f, "{\n  \"tool\": \"switchboard-loadgen\",\n  \"version\": \"%s\",\n", SB_VERSION);
    fprintf(f, "  \"mode\": \"%s\",\n", lg_mode_name(cfg->mode));
    json_parameters(f, cfg, plan);
    fprintf(f, "  \"counters\": {\n");
    for (int i = 0; i < LG_C_COUNT; i++)
        fprintf(f, "    \"%s\": %llu%s\n", lg_counter_info[i].name, ull(s->c[i]),
                i + 1 < LG_C_COUNT ? "," : "");
    fprintf(f, "  },\n  \"failed\": %llu,\n  \"failures\": {", ull(lg_stats_failed(s)));
    for (int i = LG_C_FAIL_FIRST; i <= LG_C_FAIL_LAST; i++)
        fprintf(f, "%s\"%s\": %llu", i > LG_C_FAIL_FIRST ? ", " : "", lg_counter_info[i].name,
                ull(s->c[i]));
    double ramp_s = (double)s->ramp_ns / 1e9;
    fprintf(f,
            "},\n  \"status_sample\": %d,\n  \"errno_sample\": %d,\n  \"ramp_s\": %.6f,\n"
            "  \"connect_rate_per_s\": %.3f,\n  \"run_s\": %.6f,\n"
            "  \"sent_per_s\": %.3f,\n  \"messages_per_s\": %.3f,\n  \"bytes_per_s\": %.3f,\n",
            s->status_sample, s->errno_sample, ramp_s,
            ramp_s > 0 ? (double)s->c[LG_C_ESTABLISHED] / ramp_s : 0.0, (double)s->run_ns / 1e9,
            s->send_rate, s->msg_rate, s->byte_rate);
    if (LG_MODE_IS_MSGR(cfg->mode))
        fprintf(f, "  \"deliveries_per_s\": %.3f,\n  \"deliveries_missing\": %llu,\n", s->msg_rate,
                ull(lost_deliveries(s)));
    fprintf(f, "  \"latency_us\": {\n");
    for (int i = 0; i < LG_H_COUNT; i++)
        json_hist(f, lg_hist_names[i], &s->h[i], i + 1 == LG_H_COUNT);
    fprintf(f, "  }\n}\n");
    if (ferror(f)) {
        fclose(f);
        return -EIO;
    }
    return fclose(f) == 0 ? 0 : -errno;
}
