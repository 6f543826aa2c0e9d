#include "loadgen/lg_config.h"
#include "loadgen/lg_msgr.h"
#include "proto/binproto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

enum opt_type {
    OPT_U64,
    OPT_DOUBLE,
    OPT_TARGETS,
    OPT_PATH,
    OPT_FILE,
    OPT_IPV4,
    OPT_IO_MODE,
    OPT_FLAG,
    OPT_SECRET,
    OPT_WIRE,
};

struct lg_option {
    const char *name; /* without the leading "--" */
    unsigned modes;   /* LG_M() bits of the modes that take it */
    enum opt_type type;
    size_t offset; /* into struct lg_config */
    double min, max;
    const char *arg; /* metavariable in --help; NULL for a flag */
    const char *def; /* default as shown in --help */
    const char *help;
};

#define OFF(field) offsetof(struct lg_config, field)
#define M_HOLD LG_M(LG_MODE_HOLD)
#define M_ECHO LG_M(LG_MODE_ECHO)
#define M_LAT LG_M(LG_MODE_LATENCY)
#define M_CHAT LG_M(LG_MODE_CHAT)
#define M_FAN LG_M(LG_MODE_FANOUT)
#define M_MSGR (M_CHAT | M_FAN)

/* Two rows may share a name when their modes differ: --rate means what the mode rates. */
static const struct lg_option lg_options[] = {
    {"target", LG_M_ALL, OPT_TARGETS, 0, 0, 0, "HOST:PORT[,...]", "127.0.0.1:8080 (bin: :7000)",
     "server address; repeat or comma-separate for several ports (connection i uses target i % n)"},
    {"proto", LG_M_ALL, OPT_WIRE, 0, 0, 0, "ws|bin|ws-bin", "ws",
     "ws: WebSocket (echo: raw payloads; chat, fanout: JSON); bin: binary frames on raw TCP "
     "(the server's binary port, or binary_tls_listen with --tls); ws-bin: binary frames in "
     "WebSocket messages on /ws"},
    {"path", LG_M_ALL, OPT_PATH, 0, 0, 0, "PATH", "/echo (chat, fanout, ws-bin: /ws)",
     "request target of the upgrade (chat, fanout and ws-bin append ?token=...&device=...)"},
    {"connections", LG_M_ALL, OPT_U64, OFF(connections), 1, 1e8, "N", "100",
     "connections to open (k and M suffixes: 30k)"},
    {"rate", M_HOLD, OPT_DOUBLE, OFF(connect_rate), 0, 1e8, "N", "10000",
     "connections opened per second over all threads and processes (0 = unpaced)"},
    {"rate", M_LAT, OPT_DOUBLE, OFF(msg_rate), 1, 1e9, "N", "1000",
     "messages per second over all connections, on a fixed schedule"},
    {"rate", M_CHAT, OPT_DOUBLE, OFF(msg_rate), 0, 1e9, "N", "1000",
     "messages per second over all users, on a fixed schedule (0 = closed loop: each user "
     "sends its next message when the previous one is acked)"},
    {"connect-rate", M_ECHO | M_LAT | M_MSGR, OPT_DOUBLE, OFF(connect_rate), 0, 1e8, "N", "10000",
     "connections opened per second while ramping up (0 = unpaced)"},
    {"duration", LG_M_ALL, OPT_DOUBLE, OFF(duration_s), 0.001, 86400, "SECONDS", "10",
     "how long to hold (hold) or measure (echo, latency) once all connections are up"},
    {"timeout", LG_M_ALL, OPT_DOUBLE, OFF(timeout_s), 0.01, 3600, "SECONDS", "10",
     "limit for connect plus handshake of one connection"},
    {"size", M_ECHO | M_LAT, OPT_U64, OFF(size), 0, 16 << 20, "BYTES", "16",
     "payload bytes per message (latency needs at least 16; bin, ws-bin: PING data, at most "
     "16384)"},
    {"size", M_MSGR, OPT_U64, OFF(size), LG_MSGR_BODY_MIN, LG_MSGR_BODY_MAX, "BYTES", "64",
     "bytes of each message's body (it carries the send time and a message number)"},
    {"pipeline", M_ECHO, OPT_U64, OFF(pipeline), 1, 4096, "K", "1",
     "messages each connection keeps in flight"},
    {"pipeline", M_FAN, OPT_U64, OFF(pipeline), 1, 1024, "K", "8",
     "messages the sender keeps in flight (one is in flight until every member received it)"},
    {"batch-us", M_LAT | M_CHAT, OPT_DOUBLE, OFF(batch_us), 0, 1e6, "US", "0",
     "wake this long after a message falls due and send it with all that fell due meanwhile "
     "(fewer wake-ups per message; the wait counts in the latency)"},
    {"jwt-secret", LG_M_ALL, OPT_SECRET, 0, 0, 0, "SECRET", NULL,
     "the server's jwt_secret: loadgen mints each user's HS256 token with it (required by "
     "chat, fanout and --proto bin, ws-bin)"},
    {"group-share", M_CHAT, OPT_DOUBLE, OFF(group_share), 0, 1, "F", "0.5",
     "fraction of the users that are in groups; the others are paired in direct conversations"},
    {"group-min", M_CHAT, OPT_U64, OFF(group_min), 2, 10000, "N", "10", "smallest group"},
    {"group-max", M_CHAT, OPT_U64, OFF(group_max), 2, 10000, "N", "100", "largest group"},
    {"threads", LG_M_ALL, OPT_U64, OFF(threads), 0, 4096, "N", "CPUs",
     "worker threads over all processes, one io_uring each (0 = CPUs we may run on)"},
    {"processes", LG_M_ALL, OPT_U64, OFF(processes), 0, 1024, "N", "auto",
     "processes to spread connections over (0 = as the descriptor limit requires)"},
    {"per-process", LG_M_ALL, OPT_U64, OFF(per_process), 1, 1e7, "N", "15000",
     "connections per child process when the fd limit forces several"},
    {"sources", LG_M_ALL, OPT_U64, OFF(sources), 0, 1 << 24, "K", "0",
     "bind connection i to source address --source-from + i % K (0 = kernel's choice)"},
    {"source-from", LG_M_ALL, OPT_IPV4, OFF(source_from), 0, 0, "IP", "127.0.0.1",
     "first source address for --sources"},
    {"json", LG_M_ALL, OPT_FILE, OFF(json_path), 0, 0, "FILE", NULL,
     "also write every figure as JSON to FILE"},
    {"io-mode", LG_M_ALL, OPT_IO_MODE, 0, 0, 0, "auto|compat", "$SWITCHBOARD_IO_MODE or auto",
     "compat: the Linux 5.15 feature set (plain recv, no buffer ring)"},
    {"quiet", LG_M_ALL, OPT_FLAG, OFF(quiet), 0, 0, NULL, NULL, "no progress lines on stderr"},
    {"tls", LG_M_ALL, OPT_FLAG, OFF(tls), 0, 0, NULL, NULL,
     "wss://: TLS to the target, its certificate verified (--ca, --insecure)"},
    {"ca", LG_M_ALL, OPT_FILE, OFF(tls_ca), 0, 0, "FILE", "the system's CAs",
     "with --tls: PEM file of the CA certificates to verify the server with"},
    {"insecure", LG_M_ALL, OPT_FLAG, OFF(tls_insecure), 0, 0, NULL, NULL,
     "with --tls: do not verify the server certificate"},
};

#define NOPTIONS (sizeof(lg_options) / sizeof(lg_options[0]))

static const char *const mode_names[LG_MODE_COUNT] = {
    [LG_MODE_HOLD] = "hold", [LG_MODE_ECHO] = "echo",     [LG_MODE_LATENCY] = "latency",
    [LG_MODE_CHAT] = "chat", [LG_MODE_FANOUT] = "fanout",
};

static const char *const mode_help[LG_MODE_COUNT] = {
    [LG_MODE_HOLD] = "open --connections at --rate per second, answer pings, hold for --duration",
    [LG_MODE_ECHO] = "closed loop: each connection keeps --pipeline messages in flight",
    [LG_MODE_LATENCY] = ("open loop: --rate messages/s on a fixed schedule, latency corrected "
                         "for coordinated omission"),
    [LG_MODE_CHAT] = ("messaging: users in direct conversations and groups send at --rate; "
                      "end-to-end delivery latency from the intended send time"),
    [LG_MODE_FANOUT] = ("messaging: one sender posts to a group of every other connection; "
                        "deliveries/s and the latency to the last member"),
};

static const char *const wire_names[LG_WIRE_COUNT] = {
    [LG_WIRE_WS] = "ws",
    [LG_WIRE_BIN] = "bin",
    [LG_WIRE_WS_BIN] = "ws-bin",
};

const char *lg_mode_name(enum lg_mode mode)
{
    return (unsigned)mode < LG_MODE_COUNT ? mode_names[mode] : NULL;
}

const char *lg_wire_name(enum lg_wire wire)
{
    return (unsigned)wire < LG_WIRE_COUNT ? wire_names[wire] : NULL;
}

void lg_config_usage(FILE *out, enum lg_mode mode)
{
    if (mode == LG_MODE_COUNT) {
        fprintf(out, "usage: switchboard-loadgen MODE [options]\n\nmodes:\n");
        for (int m = 0; m < LG_MODE_COUNT; m++)
            fprintf(out, "  %-9s %s\n", mode_names[m], mode_help[m]);
        fprintf(out, "\n'switchboard-loadgen MODE --help' lists the options of a mode.\n");
        return;
    }
    fprintf(out, "usage: switchboard-loadgen %s [options]\n  %s\n\noptions:\n", mode_names[mode],
            mode_help[mode]);
    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct lg_option *o = &lg_options[i];
        if (!(o->modes & LG_M(mode)))
            continue;
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(out, "  %-30s %s", left, o->help);
        if (o->def)
            fprintf(out, " [%s]", o->def);
        fprintf(out, "\n");
    }
    fprintf(out, "  %-30s %s\n", "--help", "this text");
}

static void set_defaults(struct lg_config *cfg, enum lg_mode mode)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->mode = mode;
    lg_config_parse_target("127.0.0.1:8080", &cfg->targets[0]);
    cfg->ntargets = 1;
    snprintf(cfg->path, sizeof(cfg->path), "/echo");
    cfg->connections = 100;
    cfg->connect_rate = 10000;
    cfg->msg_rate = 1000;
    cfg->duration_s = 10;
    cfg->timeout_s = 10;
    cfg->size = 16;
    cfg->pipeline = 1;
    cfg->per_process = 15000;
    cfg->group_share = 0.5;
    cfg->group_min = 10;
    cfg->group_max = 100;
    if (LG_MODE_IS_MSGR(mode)) {
        snprintf(cfg->path, sizeof(cfg->path), "/ws");
        cfg->size = 64;
        cfg->pipeline = 8;
    }
    cfg->source_from.s_addr = htonl(INADDR_LOOPBACK);
    const char *io = getenv("SWITCHBOARD_IO_MODE");
    cfg->compat_io = io && strcmp(io, "compat") == 0;
}

int lg_config_parse_target(const char *text, struct lg_target *out)
{
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text || strlen(text) >= sizeof(out->text))
        return -EINVAL;
    char host[64];
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || colon[1] == '\0' || port == 0 || port > 65535)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    out->addr.sin_family = AF_INET;
    out->addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &out->addr.sin_addr) != 1) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
        struct addrinfo *res;
        if (getaddrinfo(host, NULL, &hints, &res) != 0)
            return -EINVAL;
        out->addr.sin_addr = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    }
    snprintf(out->text, sizeof(out->text), "%s", text);
    return 0;
}

/* Numbers take k (1e3) and M (1e6) suffixes: "--connections 30k" reads better than 30000. */
static int parse_number(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0)
        return -EINVAL;
    if (*end == 'k' || *end == 'K') {
        v *= 1e3;
        end++;
    } else if (*end == 'M' || *end == 'm') {
        v *= 1e6;
        end++;
    }
    if (*end != '\0' || !isfinite(v))
        return -EINVAL;
    *out = v;
    return 0;
}

static int add_targets(struct lg_config *cfg, const char *list, bool *replaced)
{
    if (!*replaced) {
        cfg->ntargets = 0;
        *replaced = true;
    }
    char buf[1024];
    if (strlen(list) >= sizeof(buf))
        return -EINVAL;
    snprintf(buf, sizeof(buf), "%s", list);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (cfg->ntargets == LG_MAX_TARGETS) {
            fprintf(stderr, "switchboard-loadgen: at most %d targets\n", LG_MAX_TARGETS);
            return -EINVAL;
        }
        if (lg_config_parse_target(tok, &cfg->targets[cfg->ntargets]) < 0) {
            fprintf(stderr, "switchboard-loadgen: bad --target '%s' (want HOST:PORT)\n", tok);
            return -EINVAL;
        }
        cfg->ntargets++;
    }
    return cfg->ntargets ? 0 : -EINVAL;
}

static int set_option(struct lg_config *cfg, const struct lg_option *o, const char *val,
                      bool *targets_replaced)
{
    char *field = (char *)cfg + o->offset;
    double d;
    switch (o->type) {
    case OPT_U64:
    case OPT_DOUBLE:
        if (parse_number(val, &d) < 0 || d < o->min || d > o->max ||
            (o->type == OPT_U64 && d != floor(d))) {
            fprintf(stderr, "switchboard-loadgen: --%s wants a %s in [%g, %g], not '%s'\n", o->name,
                    o->type == OPT_U64 ? "whole number" : "number", o->min, o->max, val);
            return -EINVAL;
        }
        if (o->type == OPT_U64)
            *(uint64_t *)(void *)field = (uint64_t)d;
        else
            *(double *)(void *)field = d;
        return 0;
    case OPT_TARGETS:
        return add_targets(cfg, val, targets_replaced);
    case OPT_PATH:
        if (val[0] != '/' || strlen(val) >= sizeof(cfg->path) || strpbrk(val, " \r\n\t")) {
            fprintf(stderr, "switchboard-loadgen: --path must start with '/' and have no spaces\n");
            return -EINVAL;
        }
        snprintf(cfg->path, sizeof(cfg->path), "%s", val);
        return 0;
    case OPT_FILE:
        if (strlen(val) >= LG_PATH_MAX || val[0] == '\0')
            return -EINVAL;
        snprintf(field, LG_PATH_MAX, "%s", val);
        return 0;
    case OPT_IPV4:
        if (inet_pton(AF_INET, val, field) != 1) {
            fprintf(stderr, "switchboard-loadgen: --%s wants an IPv4 address\n", o->name);
            return -EINVAL;
        }
        return 0;
    case OPT_IO_MODE:
        if (strcmp(val, "auto") != 0 && strcmp(val, "compat") != 0) {
            fprintf(stderr, "switchboard-loadgen: --io-mode is auto or compat\n");
            return -EINVAL;
        }
        cfg->compat_io = strcmp(val, "compat") == 0;
        return 0;
    case OPT_FLAG:
        *(bool *)(void *)field = true;
        return 0;
    case OPT_WIRE:
        for (int i = 0; i < LG_WIRE_COUNT; i++) {
            if (strcmp(val, wire_names[i]) == 0) {
                cfg->wire = (enum lg_wire)i;
                return 0;
            }
        }
        fprintf(stderr, "switchboard-loadgen: --proto is ws, bin or ws-bin\n");
        return -EINVAL;
    case OPT_SECRET:
        if (val[0] == '\0' || strlen(val) >= sizeof(cfg->jwt_secret)) {
            fprintf(stderr, "switchboard-loadgen: --%s wants 1 to %d bytes\n", o->name,
                    LG_SECRET_MAX - 1);
            return -EINVAL;
        }
        snprintf(cfg->jwt_secret, sizeof(cfg->jwt_secret), "%s", val);
        return 0;
    }
    return -EINVAL;
}

/* Finds the row for name in mode; *other_mode says whether some other mode has it. */
static const struct lg_option *find_option(const char *name, size_t len, enum lg_mode mode,
                                           bool *other_mode)
{
    *other_mode = false;
    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct lg_option *o = &lg_options[i];
        if (strlen(o->name) != len || strncmp(o->name, name, len) != 0)
            continue;
        if (o->modes & LG_M(mode))
            return o;
        *other_mode = true;
    }
    return NULL;
}

static int validate(const struct lg_config *cfg)
{
    if (cfg->mode == LG_MODE_LATENCY && cfg->size < 16) {
        fprintf(stderr, "switchboard-loadgen: latency needs --size of at least 16 (the payload "
                        "carries a sequence number and the intended send time)\n");
        return -EINVAL;
    }
    if ((LG_MODE_IS_MSGR(cfg->mode) || cfg->wire != LG_WIRE_WS) && cfg->jwt_secret[0] == '\0') {
        fprintf(stderr,
                "switchboard-loadgen: %s%s needs --jwt-secret (the server's jwt_secret), "
                "to mint the users' tokens\n",
                cfg->wire != LG_WIRE_WS ? "--proto " : "",
                cfg->wire != LG_WIRE_WS ? lg_wire_name(cfg->wire) : lg_mode_name(cfg->mode));
        return -EINVAL;
    }
    if (cfg->wire != LG_WIRE_WS && (cfg->mode == LG_MODE_ECHO || cfg->mode == LG_MODE_LATENCY) &&
        cfg->size > SB_OPS_PING_MAX) {
        fprintf(stderr,
                "switchboard-loadgen: with --proto %s, --size is the data of a PING: at most %d\n",
                lg_wire_name(cfg->wire), SB_OPS_PING_MAX);
        return -EINVAL;
    }
    if (cfg->mode == LG_MODE_FANOUT && cfg->connections < 2) {
        fprintf(stderr, "switchboard-loadgen: fanout needs at least 2 connections (a sender "
                        "and a member)\n");
        return -EINVAL;
    }
    if (cfg->mode == LG_MODE_CHAT && cfg->group_min > cfg->group_max) {
        fprintf(stderr, "switchboard-loadgen: --group-min is larger than --group-max\n");
        return -EINVAL;
    }
    uint64_t first = ntohl(cfg->source_from.s_addr);
    if (cfg->sources > 0 && first + cfg->sources - 1 > UINT32_MAX) {
        fprintf(stderr,
                "switchboard-loadgen: --source-from + --sources runs past 255.255.255.255\n");
        return -EINVAL;
    }
    return 0;
}

static int parse_args(struct lg_config *cfg, int argc, char **argv)
{
    bool targets_replaced = false, path_given = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            lg_config_usage(stdout, cfg->mode);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "switchboard-loadgen: unexpected argument '%s'\n", a);
            return -EINVAL;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        bool other_mode;
        const struct lg_option *o = find_option(name, len, cfg->mode, &other_mode);
        if (!o) {
            fprintf(stderr, "switchboard-loadgen: %s --%.*s\n",
                    other_mode ? "this mode does not take" : "unknown option", (int)len, name);
            return -EINVAL;
        }
        const char *val = NULL;
        if (o->type == OPT_FLAG) {
            if (eq) {
                fprintf(stderr, "switchboard-loadgen: --%s takes no value\n", o->name);
                return -EINVAL;
            }
        } else if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(stderr, "switchboard-loadgen: --%s needs a value\n", o->name);
            return -EINVAL;
        }
        int err = set_option(cfg, o, val, &targets_replaced);
        if (err)
            return err;
        path_given |= o->type == OPT_PATH;
    }
    /* The defaults follow --proto: binary frames live on the binary port, or on /ws. */
    if (cfg->wire == LG_WIRE_BIN && !targets_replaced) {
        char def[32];
        snprintf(def, sizeof(def), "127.0.0.1:%d", SB_BINPROTO_PORT);
        lg_config_parse_target(def, &cfg->targets[0]);
    }
    if (cfg->wire == LG_WIRE_WS_BIN && !path_given)
        snprintf(cfg->path, sizeof(cfg->path), "/ws");
    return validate(cfg);
}

int lg_config_parse(struct lg_config *cfg, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        lg_config_usage(argc < 2 ? stderr : stdout, LG_MODE_COUNT);
        return argc < 2 ? -EINVAL : 1;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("switchboard-loadgen %s\n", SB_VERSION);
        return 1;
    }
    for (int m = 0; m < LG_MODE_COUNT; m++) {
        if (strcmp(argv[1], mode_names[m]) == 0) {
            set_defaults(cfg, (enum lg_mode)m);
            return parse_args(cfg, argc, argv);
        }
    }
    fprintf(stderr, "switchboard-loadgen: unknown mode '%s'\n", argv[1]);
    lg_config_usage(stderr, LG_MODE_COUNT);
    return -EINVAL;
}
