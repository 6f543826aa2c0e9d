/*
 * The loadgen command line: one table (lg_options) defines every flag with its modes, type,
 * bounds, default and help; parsing, validation and --help all come from it.
 */
#ifndef SB_LOADGEN_LG_CONFIG_H
#define SB_LOADGEN_LG_CONFIG_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LG_MAX_TARGETS 64
#define LG_PATH_MAX 256
#define LG_SECRET_MAX 512

enum lg_mode {
    LG_MODE_HOLD,
    LG_MODE_ECHO,
    LG_MODE_LATENCY,
    LG_MODE_CHAT,
    LG_MODE_FANOUT,
    LG_MODE_COUNT
};

/* The messaging scenarios: JSON protocol on /ws, one user per connection. */
#define LG_MODE_IS_MSGR(mode) ((mode) == LG_MODE_CHAT || (mode) == LG_MODE_FANOUT)

/* What runs over each connection (--proto). */
enum lg_wire {
    LG_WIRE_WS,     /* WebSocket: raw payloads (echo), the JSON protocol (chat, fanout) */
    LG_WIRE_BIN,    /* the binary protocol on raw TCP (the server's binary port) */
    LG_WIRE_WS_BIN, /* binary frames in WebSocket binary messages (/ws, switchboard.v1) */
    LG_WIRE_COUNT
};

#define LG_M(mode) (1u << (mode))
#define LG_M_ALL ((1u << LG_MODE_COUNT) - 1)

struct lg_target {
    struct sockaddr_in addr;
    char text[64]; /* "host:port" as given: the Host header and the report */
};

struct lg_config {
    enum lg_mode mode;
    enum lg_wire wire;
    struct lg_target targets[LG_MAX_TARGETS];
    unsigned ntargets;
    char path[LG_PATH_MAX];
    uint64_t connections;
    double connect_rate; /* connections opened per second overall; 0 = as fast as possible */
    double msg_rate;     /* latency, chat: messages per second overall (chat: 0 = closed loop) */
    double duration_s;
    double timeout_s; /* connect plus handshake */
    uint64_t size;    /* payload bytes per message */
    uint64_t pipeline;
    double batch_us; /* latency, chat: let due sends gather this long before sending them */
    char jwt_secret[LG_SECRET_MAX]; /* chat, fanout: the server's HS256 secret */
    double group_share;             /* chat: fraction of users in groups (the rest in DMs) */
    uint64_t group_min, group_max;  /* chat: group sizes, uniform in [min, max] */
    uint64_t threads;               /* worker threads over all processes; 0 = CPUs we may run on */
    uint64_t processes;             /* 0 = automatic (by the descriptor limit) */
    uint64_t per_process;           /* connections per child process in automatic mode */
    uint64_t sources; /* bind to this many source addresses; 0 = let the kernel choose */
    struct in_addr source_from;
    char json_path[LG_PATH_MAX];
    bool quiet;
    bool compat_io; /* the Linux 5.15 feature set: plain recv, no buffer ring, no DEFER_TASKRUN */
    bool tls;       /* wss:// (lg_tls.h) */
    bool tls_insecure; /* do not verify the server certificate */
    char tls_ca[LG_PATH_MAX];
};

/* Returns the mode's name ("hold"), or NULL for an invalid mode. */
const char *lg_mode_name(enum lg_mode mode);

/* Returns the --proto name ("ws", "bin", "ws-bin"), or NULL for an invalid value. */
const char *lg_wire_name(enum lg_wire wire);

/*
 * Parses argv (argv[1] is the mode) into *cfg, starting from the mode's defaults.
 * Returns 0; 1 when --help or --version was printed (exit 0); -EINVAL after printing a
 * message to stderr (exit 2).
 */
int lg_config_parse(struct lg_config *cfg, int argc, char **argv);

/* Prints usage for mode (or for every mode when mode is LG_MODE_COUNT). */
void lg_config_usage(FILE *out, enum lg_mode mode);

/* Parses "host:port" (IPv4 literal or a name resolving to IPv4). Returns 0 or -EINVAL. */
int lg_config_parse_target(const char *text, struct lg_target *out);

#endif
