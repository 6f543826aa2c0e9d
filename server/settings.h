/*
 * Every server setting, defined once in sb_settings_table (settings.c): config file, environment,
 * command line, --help and the config dump all come from it. See docs/operations.md.
 */
#ifndef SB_SERVER_SETTINGS_H
#define SB_SERVER_SETTINGS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"

struct sb_settings {
    char *listen;        /* host:port for HTTP and WebSocket */
    char *binary_listen; /* host:port for the binary protocol (raw TCP); empty = off */
    int64_t workers;
    int io_mode; /* enum sb_io_mode */
    bool pin_workers;
    int64_t max_connections;
    int64_t max_connections_per_ip;
    int64_t handshake_timeout_ms;
    int64_t ping_interval_ms;
    int64_t close_timeout_ms;
    int64_t shutdown_timeout_ms;
    uint64_t max_message_size;
    uint64_t max_header_size;
    uint64_t send_queue_limit;
    uint64_t recv_buffer_size;
    int64_t recv_buffers;
    int64_t ring_entries;
    bool echo;
    int log_level; /* enum sb_log_level */
    char *jwt_secret;
    char *jwt_keys_file;
    int64_t jwt_leeway_s;
    bool jwt_require_exp;
    int64_t history_max_messages;
    int64_t history_max_age_s;
    char *data_dir;
    int fsync; /* enum sb_store_fsync */
    uint64_t compact_min_size;
    int metrics; /* enum sb_metrics_access */
    int64_t max_devices;
    int device_policy; /* enum sb_device_policy */
    int64_t rate_messages;
    uint64_t rate_bytes;
    uint64_t max_body_size;
    int64_t max_group_members;
    int64_t max_groups_per_user;
    uint64_t slow_queue_bytes;
    char *webhook_url;
    int64_t webhook_batch;
    int64_t webhook_queue;
    int64_t webhook_timeout_ms;
    bool webhook_body;
    uint64_t webhook_body_max;
    char *webhook_secret;
    int64_t presence_grace_ms;
    int64_t presence_max_subscriptions;
    int64_t presence_last_seen_max;
    char *tls_listen;        /* host:port for HTTPS and wss://; empty = off */
    char *binary_tls_listen; /* host:port for the binary protocol over TLS; empty = off */
    char *tls_cert;
    char *tls_key;
    char *tls_sni_file;
    int tls_min_version; /* 0 = TLS 1.2, 1 = TLS 1.3 */
    int64_t tls_ticket_rotate_s;
    char *redis_nodes;
    char *redis_user;
    char *redis_password;
    int64_t redis_timeout_ms;
    int64_t redis_queue;
    char *node_name;
    int64_t cluster_heartbeat_ms;
    int64_t cluster_node_ttl_ms;
    int64_t cluster_wait_replicas;
    int64_t cluster_wait_ms;
};

extern const struct sb_setting sb_settings_table[];

#endif
