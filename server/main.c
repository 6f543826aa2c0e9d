/*
 * switchboard: the command line. `switchboard serve` runs the server; see --help.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/convs.h"
#include "cluster/redis.h"
#include "core/engine.h"
#include "core/log.h"
#include "core/tls.h"
#include "server/auth.h"
#include "server/chat.h"
#include "proto/binproto.h"
#include "server/gateway.h"
#include "server/metrics.h"
#include "server/presence.h"
#include "server/settings.h"
#include "server/store.h"
#include "server/webhook.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: switchboard serve [--config FILE] [--SETTING VALUE ...]\n"
            "       switchboard config [--config FILE] [--SETTING VALUE ...]\n"
            "       switchboard version\n\n"
            "serve   runs the server until SIGTERM or SIGINT\n"
            "config  prints the effective settings in config-file syntax\n\n"
            "Settings (config file \"name = value\", environment SWITCHBOARD_NAME, or flag):\n");
    sb_config_print_help(sb_settings_table, out);
}

/* Defaults < config file < environment < command line. Returns 0, or 2 for a usage error. */
static int load_settings(int argc, char **argv, struct sb_settings *st)
{
    char err[256];
    if (sb_config_defaults(sb_settings_table, st) < 0)
        return 2;
    const char *file = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            file = argv[i + 1];
    }
    if (file && sb_config_load_file(sb_settings_table, st, file, err, sizeof(err)) < 0) {
        fprintf(stderr, "switchboard: %s\n", err);
        return 2;
    }
    if (sb_config_load_env(sb_settings_table, st, err, sizeof(err)) < 0) {
        fprintf(stderr, "switchboard: environment: %s\n", err);
        return 2;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) {
            fprintf(stderr, "switchboard: unexpected argument \"%s\" (see --help)\n", a);
            return 2;
        }
        const char *value = argv[++i];
        if (strcmp(a, "--config") == 0)
            continue;
        if (sb_config_set(sb_settings_table, st, a + 2, value, err, sizeof(err)) < 0) {
            fprintf(stderr, "switchboard: %s\n", err);
            return 2;
        }
    }
    return 0;
}

/* Splits "host:port" or "[v6]:port". Returns 0 or -EINVAL. */
static int split_hostport(const char *s, char *host, size_t hostlen, unsigned *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon[1] == '\0')
        return -EINVAL;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= hostlen)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end || p > 65535)
        return -EINVAL;
    *port = (unsigned)p;
    return 0;
}

static int init_auth(const struct sb_settings *st, struct sb_auth *auth)
{
    char err[256];
    int r = sb_auth_init(auth, st->jwt_secret, st->jwt_keys_file, st->jwt_leeway_s,
                         st->jwt_require_exp, err, sizeof(err));
    if (r < 0)
        fprintf(stderr, "switchboard: %s\n", err);
    return r;
}

/*
 * Opens one listener on spec (HOST:PORT) with ops, behind tls when not NULL, and appends
 * ", <what> on ADDR:PORT" to addr for the start-up line. Returns 0 or -errno (logged).
 */
static int listen_on(struct sb_engine *e, const char *setting, const char *spec,
                     const struct sb_conn_ops *ops, struct sb_tls *tls, const char *what,
                     char *addr, size_t addrlen)
{
    char host[256];
    unsigned port, bound;
    if (split_hostport(spec, host, sizeof(host), &port) < 0) {
        sb_log(SB_LOG_ERROR, 0, "%s: \"%s\" is not HOST:PORT", setting, spec);
        return -EINVAL;
    }
    int r = sb_engine_listen(e, host, port, ops, &bound);
    if (r == 0 && tls)
        r = sb_engine_set_transport(e, bound, sb_tls_transport(tls));
    if (r < 0) {
        sb_log(SB_LOG_ERROR, r, "cannot listen on %s", spec);
        return r;
    }
    size_t n = strlen(addr);
    if (strchr(host, ':'))
        snprintf(addr + n, addrlen - n, ", %s on [%s]:%u", what, host, bound);
    else
        snprintf(addr + n, addrlen - n, ", %s on %s:%u", what, *host ? host : "0.0.0.0", bound);
    return 0;
}

/*
 * Adds the listeners other than `listen`: TLS (tls_listen), the binary port (binary_listen) and
 * the binary port over TLS (binary_tls_listen), the TLS ones sharing one certificate set. Main
 * thread, before the engine starts. Returns 0 (*tls stays NULL without TLS) or -errno
 * (logged); addr gets what the start-up line adds.
 */
static int listen_more(const struct sb_settings *st, struct sb_engine *e, struct sb_tls **tls,
                       char *addr, size_t addrlen)
{
    char err[512];
    *tls = NULL;
    addr[0] = '\0';
    if (*st->tls_listen || *st->binary_tls_listen) {
        struct sb_tls_config tc = {.cert_file = st->tls_cert,
                                   .key_file = st->tls_key,
                                   .sni_file = st->tls_sni_file,
                                   .min_version = st->tls_min_version == 1 ? 13 : 12,
                                   .ticket_rotate_s = (unsigned)st->tls_ticket_rotate_s};
        int r = sb_tls_create(&tc, sb_engine_workers(e), tls, err, sizeof(err));
        if (r < 0) {
            sb_log(SB_LOG_ERROR, 0, "TLS: %s", err);
            return r;
        }
    }
    if (*st->tls_listen &&
        listen_on(e, "tls_listen", st->tls_listen, &sb_gateway_ops, *tls, "TLS", addr, addrlen) < 0)
        return -EINVAL;
    if (*st->binary_listen && listen_on(e, "binary_listen", st->binary_listen, &sb__binary_ops,
                                        NULL, "binary", addr, addrlen) < 0)
        return -EINVAL;
    if (*st->binary_tls_listen && listen_on(e, "binary_tls_listen", st->binary_tls_listen,
                                            &sb__binary_ops, *tls, "binary TLS", addr, addrlen) < 0)
        return -EINVAL;
    return 0;
}

/*
 * Opens the history store and rebuilds every conversation from it, then rewrites the logs for
 * today's worker count. Main thread, before the workers run. Returns 0 or -errno (logged).
 */
static int load_history(const struct sb_settings *st, struct sb_engine *e, struct sb_redis *redis,
                        struct sb_registry *registry, struct sb_store **out)
{
    struct sb_store_config sc = {.dir = st->data_dir,
                                 .workers = sb_engine_workers(e),
                                 .fsync = (enum sb_store_fsync)st->fsync,
                                 .compact_min = st->compact_min_size,
                                 .snapshot = sb_chat_snapshot};
    struct sb_store *store;
    int r = sb_store_open(&sc, &store);
    if (r < 0)
        return r;
    struct sb_chat_config cc = {.engine = e,
                                .workers = sb_engine_workers(e),
                                .history_max = (uint32_t)st->history_max_messages,
                                .history_max_age_ms = (uint64_t)st->history_max_age_s * 1000,
                                .store = store,
                                .max_devices = (uint32_t)st->max_devices,
                                .device_policy = (enum sb_device_policy)st->device_policy,
                                .rate_messages = (uint32_t)st->rate_messages,
                                .rate_bytes = st->rate_bytes,
                                .max_message_size = st->max_message_size,
                                .max_body = (uint32_t)st->max_body_size,
                                .max_group_members = (uint32_t)st->max_group_members,
                                .max_groups_per_user = (uint32_t)st->max_groups_per_user,
                                .slow_queue_bytes = st->slow_queue_bytes,
                                .redis = redis,
                                .registry = registry};
    r = sb_chat_init(&cc);
    if (r == 0) {
        ssize_t n = sb_store_replay(store, sb_chat_restore, NULL);
        r = n < 0 ? (int)n : sb_chat_loaded();
        if (r < 0)
            sb_log(SB_LOG_ERROR, r, "cannot load the history from %s", st->data_dir);
    }
    if (r == 0)
        r = sb_store_rewrite(store);
    if (r < 0) {
        sb_store_close(store);
        sb_chat_free();
        return r;
    }
    *out = store;
    return 0;
}

/* After the workers stopped: the last records reach the disk, then memory is freed. */
static void close_history(struct sb_store *store)
{
    sb_store_close(store);
    sb_chat_free();
}

/* SIGHUP: new TLS connections get the certificates as the files now are; open ones go on. */
static void reload_tls(struct sb_tls *tls)
{
    char err[512];
    if (!tls) {
        sb_log(SB_LOG_INFO, 0, "SIGHUP: nothing to reload (no TLS listener)");
        return;
    }
    int r = sb_tls_reload(tls, err, sizeof(err));
    if (r < 0)
        sb_log(SB_LOG_WARN, 0, "SIGHUP: TLS certificates not reloaded, the old ones stay: %s", err);
    else
        sb_log(SB_LOG_INFO, 0, "SIGHUP: TLS certificates reloaded");
}

static int serve(struct sb_settings *st)
{
    char host[256];
    unsigned port;
    if (split_hostport(st->listen, host, sizeof(host), &port) < 0) {
        sb_log(SB_LOG_ERROR, 0, "listen: \"%s\" is not HOST:PORT", st->listen);
        return 2;
    }
    /* Signals are taken synchronously by this thread; workers inherit the blocked mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (st->recv_buffers & (st->recv_buffers - 1)) {
        sb_log(SB_LOG_ERROR, 0, "recv_buffers must be a power of two (got %" PRId64 ")",
               st->recv_buffers);
        return 2;
    }
    /* A message must fit a frame whatever it travels in (a sync page holding only it). */
    uint64_t body_max = st->max_message_size > SB_BINPROTO_MESSAGE_OVERHEAD
                            ? st->max_message_size - SB_BINPROTO_MESSAGE_OVERHEAD
                            : 0;
    if (st->max_body_size > body_max) {
        sb_log(SB_LOG_WARN, 0,
               "max_body_size %" PRIu64 " does not fit max_message_size %" PRIu64
               " with a message's other fields: bodies are limited to %" PRIu64 " bytes",
               st->max_body_size, st->max_message_size, body_max);
        st->max_body_size = body_max;
    }
    struct sb_engine_config ec;
    sb_engine_config_default(&ec);
    ec.workers = (unsigned)st->workers;
    ec.pin_workers = st->pin_workers;
    ec.io_mode = (enum sb_io_mode)st->io_mode;
    ec.ring_entries = (unsigned)st->ring_entries;
    ec.recv_buffers = (unsigned)st->recv_buffers;
    ec.recv_buffer_size = (unsigned)st->recv_buffer_size;
    ec.max_connections = (unsigned)st->max_connections;
    ec.max_connections_per_ip = (unsigned)st->max_connections_per_ip;
    ec.conn_app_size = sb_gateway_session_size();
    ec.send_queue_limit = st->send_queue_limit;
    ec.shutdown_timeout_ms = (unsigned)st->shutdown_timeout_ms;
    struct sb_engine *e;
    int r = sb_engine_create(&ec, &e);
    if (r < 0) {
        sb_log(SB_LOG_ERROR, r, "cannot start the engine%s",
               r == -EPERM || r == -ENOSYS ? " (io_uring is disabled on this host)" : "");
        return 1;
    }
    static struct sb_auth auth; /* read by every worker; lives as long as the process */
    if (init_auth(st, &auth) < 0) {
        sb_engine_free(e);
        return 2;
    }
    if (auth.is_dev)
        sb_log(SB_LOG_WARN, 0,
               "no jwt_secret or jwt_keys_file: accepting tokens signed with "
               "the DEVELOPMENT secret (`switchboard token` mints them); set a "
               "secret before exposing this server");
    /* From here on every failure goes out through `out`, whose free functions all accept what
     * was never set up. */
    int rc = 1;
    struct sb_tls *tls = NULL;
    struct sb_store *store = NULL;
    struct sb_redis *redis = NULL;
    struct sb_registry *registry = NULL;
    bool started = false;
    struct sb_presence_config pc = {.workers = sb_engine_workers(e),
                                    .grace_ms = (uint64_t)st->presence_grace_ms,
                                    .max_subscriptions = (uint32_t)st->presence_max_subscriptions,
                                    .last_seen_max = (uint64_t)st->presence_last_seen_max};
    if (sb_metrics_init(sb_engine_workers(e)) < 0 || sb_presence_init(&pc) < 0)
        goto out;
    struct sb_webhook_config wc = {
        .url = st->webhook_url,
        .batch = (unsigned)st->webhook_batch,
        .queue = (unsigned)st->webhook_queue,
        .timeout_ms = (unsigned)st->webhook_timeout_ms,
        .body = st->webhook_body,
        .body_max = st->webhook_body_max,
        .secret = st->webhook_secret,
    };
    r = sb_webhook_init(e, &wc);
    if (r < 0) {
        rc = r == -ENOMEM ? 1 : 2;
        goto out;
    }
    struct sb_redis_config redis_cfg = {
        .nodes = st->redis_nodes,
        .user = st->redis_user,
        .password = st->redis_password,
        .timeout_ms = (unsigned)st->redis_timeout_ms,
        .queue = (unsigned)st->redis_queue,
    };
    r = sb_redis_create(e, &redis_cfg, &redis);
    if (r < 0) {
        rc = r == -ENOMEM ? 1 : 2;
        goto out;
    }
    sb_metrics_set_redis(redis);
    sb_convs_set_wait((unsigned)st->cluster_wait_replicas, (unsigned)st->cluster_wait_ms);
    struct sb_registry_config reg_cfg = {
        .name = st->node_name,
        .heartbeat_ms = (unsigned)st->cluster_heartbeat_ms,
        .ttl_ms = (unsigned)st->cluster_node_ttl_ms,
        .each_user = sb_chat_each_user,
        .devices = sb_chat_devices,
        .written = sb_chat_located,
    };
    r = sb_registry_create(e, redis, &reg_cfg, &registry);
    if (r < 0) {
        rc = r == -ENOMEM ? 1 : 2;
        goto out;
    }
    struct sb_gateway_config gc = {
        .engine = e,
        .handshake_timeout_ms = (uint64_t)st->handshake_timeout_ms,
        .ping_interval_ms = (uint64_t)st->ping_interval_ms,
        .close_timeout_ms = (uint64_t)st->close_timeout_ms,
        .max_message_size = st->max_message_size,
        .http_limits = {.max_request_line = 8192,
                        .max_header_bytes = st->max_header_size,
                        .max_headers = SB_HTTP_MAX_HEADERS},
        .echo = st->echo,
        .auth = &auth,
        .metrics_access = st->metrics,
        .registry = registry,
    };
    if (sb_gateway_init(&gc) < 0) {
        sb_log(SB_LOG_ERROR, -ENOMEM, "cannot start");
        goto out;
    }
    unsigned bound;
    r = sb_engine_listen(e, host, port, &sb_gateway_ops, &bound);
    if (r < 0) {
        sb_log(SB_LOG_ERROR, r, "cannot listen on %s", st->listen);
        goto out;
    }
    char more_addr[600];
    if (listen_more(st, e, &tls, more_addr, sizeof(more_addr)) < 0)
        goto out;
    /* After the listen: a server that cannot run leaves the data directory alone. */
    if (load_history(st, e, redis, registry, &store) < 0)
        goto out;
    if (sb_engine_start(e) < 0)
        goto out;
    started = true;
    char addr[300];
    if (strchr(host, ':'))
        snprintf(addr, sizeof(addr), "[%s]:%u", host, bound);
    else
        snprintf(addr, sizeof(addr), "%s:%u", *host ? host : "0.0.0.0", bound);
    sb_log(SB_LOG_INFO, 0, "listening on %s (workers=%u%s%s)", addr, sb_engine_workers(e),
           st->echo ? ", echo at /echo" : "", more_addr);
    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&sigs, &si);
        if (sig == SIGHUP) {
            reload_tls(tls);
            continue;
        }
        if (sig == SIGINT || sig == SIGTERM) {
            sb_log(SB_LOG_INFO, 0, "%s: shutting down (deadline %" PRId64 " ms)",
                   sig == SIGINT ? "SIGINT" : "SIGTERM", st->shutdown_timeout_ms);
            break;
        }
    }
    sb_webhook_stop();
    sb_presence_stop();
    sb_registry_stop(registry);
    sb_redis_stop(redis);
    sb_engine_stop(e);
    sb_engine_wait(e);
    rc = 0;
out:
    sb_engine_free(e);
    sb_tls_free(tls);
    if (store)
        close_history(store); /* the store first: its batches reference the chat's entries */
    sb_gateway_free();
    sb_webhook_free();
    sb_presence_free();
    sb_registry_free(registry);
    sb_redis_free(redis);
    sb_metrics_free();
    if (started)
        sb_log(SB_LOG_INFO, 0, "stopped");
    return rc;
}

/* "90", "90s", "15m", "24h", "7d" -> seconds; -1 when malformed. */
static int64_t parse_ttl(const char *s)
{
    char *end;
    long long n = strtoll(s, &end, 10);
    if (end == s || n < 0)
        return -1;
    int64_t unit = 1;
    if (*end == 'm')
        unit = 60;
    else if (*end == 'h')
        unit = 3600;
    else if (*end == 'd')
        unit = 86400;
    else if (*end != 's' && *end != '\0')
        return -1;
    if (*end && end[1])
        return -1;
    return n * unit;
}

/* switchboard token: takes --sub, --scope and --ttl, and every setting like serve. */
static int cmd_token(int argc, char **argv)
{
    const char *sub = NULL, *scope = NULL, *ttl = "24h";
    char *rest[256];
    int nrest = 0;
    for (int i = 0; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--sub") == 0)
            sub = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--scope") == 0)
            scope = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--ttl") == 0)
            ttl = argv[++i];
        else if (nrest < 256)
            rest[nrest++] = argv[i];
    }
    int64_t ttl_s = parse_ttl(ttl);
    if (!sub || ttl_s < 0) {
        fprintf(stderr, "switchboard token: needs --sub USER; --ttl like 90s, 15m, 24h, 7d\n");
        return 2;
    }
    struct sb_settings st;
    memset(&st, 0, sizeof(st));
    int r = load_settings(nrest, rest, &st);
    struct sb_auth *auth = malloc(sizeof(*auth));
    if (r == 0 && (!auth || init_auth(&st, auth) < 0))
        r = 1;
    char token[SB_JWT_MAX_TOKEN + 1];
    if (r == 0) {
        ssize_t n =
            sb_auth_mint(auth, sub, (int64_t)time(NULL), ttl_s, scope, token, sizeof(token));
        if (n < 0) {
            fprintf(stderr, "switchboard token: cannot mint a token for \"%s\"\n", sub);
            r = 1;
        } else {
            if (auth->is_dev)
                fprintf(stderr, "switchboard token: signed with the DEVELOPMENT secret\n");
            printf("%s\n", token);
        }
    }
    free(auth);
    sb_config_free(sb_settings_table, &st);
    return r;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("switchboard %s\n", SB_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "token") == 0)
        return cmd_token(argc - 2, argv + 2);
    if (strcmp(cmd, "serve") != 0 && strcmp(cmd, "config") != 0) {
        fprintf(stderr, "switchboard: unknown command \"%s\"\n", cmd);
        usage(stderr);
        return 2;
    }
    struct sb_settings st;
    memset(&st, 0, sizeof(st));
    int r = load_settings(argc - 2, argv + 2, &st);
    if (r == 0 && strcmp(cmd, "config") == 0) {
        sb_config_dump(sb_settings_table, &st, stdout);
    } else if (r == 0) {
        sb_log_threshold = (enum sb_log_level)st.log_level;
        r = serve(&st);
    }
    sb_config_free(sb_settings_table, &st);
    return r;
}
