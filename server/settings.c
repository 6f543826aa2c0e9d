#include "server/settings.h"

#include <stddef.h>

#define F(field) offsetof(struct sb_settings, field)

static const char *const io_modes[] = {"auto", "compat", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const fsync_modes[] = {"always", "everysec", "never", NULL};
static const char *const metrics_access[] = {"public", "admin", "off", NULL};

/* Bounds keep every value inside what the engine and the protocol code accept. */
const struct sb_setting sb_settings_table[] = {
    {"listen", SB_SET_STR, F(listen), "127.0.0.1:8080", 0, 0, NULL,
     "address and port for HTTP and WebSocket (port 0 picks a free one)"},
    {"workers", SB_SET_INT, F(workers), "0", 0, 256, NULL,
     "worker threads; 0 = one per CPU the process may use"},
    {"io_mode", SB_SET_ENUM, F(io_mode), "auto", 0, 0, io_modes,
     "io_uring features: auto = all the kernel has, compat = the Linux 5.15 set"},
    {"pin_workers", SB_SET_BOOL, F(pin_workers), "on", 0, 0, NULL, "pin each worker to one CPU"},
    {"max_connections", SB_SET_INT, F(max_connections), "1000000", 1, 100000000, NULL,
     "open connections per process; more are closed at accept"},
    {"max_connections_per_ip", SB_SET_INT, F(max_connections_per_ip), "0", 0, 10000000, NULL,
     "open connections per client address (IPv6: per /64); 0 = no limit"},
    {"handshake_timeout_ms", SB_SET_INT, F(handshake_timeout_ms), "10000", 50, 3600000, NULL,
     "time to send a complete HTTP request (also the keep-alive idle limit)"},
    {"ping_interval_ms", SB_SET_INT, F(ping_interval_ms), "30000", 0, 86400000, NULL,
     "ping a silent WebSocket after this long, close it after twice; 0 = off"},
    {"close_timeout_ms", SB_SET_INT, F(close_timeout_ms), "5000", 10, 600000, NULL,
     "time a peer has to answer our WebSocket close frame"},
    {"shutdown_timeout_ms", SB_SET_INT, F(shutdown_timeout_ms), "10000", 0, 600000, NULL,
     "on SIGTERM, time to drain before closing what is left"},
    {"max_message_size", SB_SET_SIZE, F(max_message_size), "4M", 125, 1073741824, NULL,
     "largest WebSocket message (all fragments together); larger closes with 1009"},
    {"max_header_size", SB_SET_SIZE, F(max_header_size), "16K", 1024, 1048576, NULL,
     "largest HTTP request head; larger gets 431"},
    {"send_queue_limit", SB_SET_SIZE, F(send_queue_limit), "4M", 4096, 1073741824, NULL,
     "queued output per connection at which it stops being read"},
    {"recv_buffer_size", SB_SET_SIZE, F(recv_buffer_size), "16K", 512, 1048576, NULL,
     "size of each provided receive buffer"},
    {"recv_buffers", SB_SET_INT, F(recv_buffers), "1024", 1, 32768, NULL,
     "provided receive buffers per worker (a power of two)"},
    {"ring_entries", SB_SET_INT, F(ring_entries), "4096", 64, 32768, NULL,
     "io_uring submission queue entries per worker"},
    {"echo", SB_SET_BOOL, F(echo), "on", 0, 0, NULL, "serve the WebSocket echo endpoint /echo"},
    {"log_level", SB_SET_ENUM, F(log_level), "info", 0, 0, log_levels,
     "least severe level logged: debug, info, warn, error"},
    {"jwt_secret", SB_SET_STR, F(jwt_secret), "", 0, 0, NULL,
     "HS256 secret for client tokens; empty (with no keys file) = a development secret"},
    {"jwt_keys_file", SB_SET_STR, F(jwt_keys_file), "", 0, 0, NULL,
     "file of \"<kid> <secret>\" lines for key rotation; the first line signs new tokens"},
    {"jwt_leeway_s", SB_SET_INT, F(jwt_leeway_s), "30", 0, 3600, NULL,
     "clock skew allowed when checking exp and nbf"},
    {"jwt_require_exp", SB_SET_BOOL, F(jwt_require_exp), "on", 0, 0, NULL,
     "refuse tokens without an expiry"},
    {"history_max_messages", SB_SET_INT, F(history_max_messages), "1000", 1, 1000000, NULL,
     "messages kept per conversation"},
    {"history_max_age_s", SB_SET_INT, F(history_max_age_s), "0", 0, 3153600000, NULL,
     "messages older than this are dropped from history; 0 = keep by count only"},
    {"data_dir", SB_SET_STR, F(data_dir), "switchboard-data", 0, 0, NULL,
     "directory of the history logs (created if missing; relative to the working directory)"},
    {"fsync", SB_SET_ENUM, F(fsync), "everysec", 0, 0, fsync_modes,
     "history durability: always (fsync before acking), everysec, never"},
    {"compact_min_size", SB_SET_SIZE, F(compact_min_size), "64M", 0, 1099511627776, NULL,
     "a history log is rewritten when over twice its live size and at least this big"},
    {"metrics", SB_SET_ENUM, F(metrics), "public", 0, 0, metrics_access,
     "who may read GET /metrics: public, admin (a token with the admin scope), off"},
    {"presence_grace_ms", SB_SET_INT, F(presence_grace_ms), "5000", 0, 3600000, NULL,
     "a user goes offline this long after its last device leaves; a reconnect within shows "
     "nothing"},
    {"presence_max_subscriptions", SB_SET_INT, F(presence_max_subscriptions), "10000", 1, 1000000,
     NULL, "users one device may watch with presence_sub"},
    {"presence_last_seen_max", SB_SET_INT, F(presence_last_seen_max), "1000000", 0, 100000000, NULL,
     "offline users nobody watches whose last-seen time is kept; the longest idle are forgotten "
     "first"},
    {0},
};
