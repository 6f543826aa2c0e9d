/*
 * HTTP on a fresh connection: REST routes and the WebSocket upgrade, keep-alive and pipelining,
 * the handshake deadline, and the connection callbacks the engine calls.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "proto/binproto.h"
#include "server/chat.h"
#include "server/gateway.h"
#include "server/ids.h"
#include "server/metrics.h"

struct sb_gateway_config sb__gw;
static uint64_t started_ms;

int sb_gateway_init(const struct sb_gateway_config *cfg)
{
    sb__gw = *cfg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    started_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    return sb__rest_init(sb_engine_workers(cfg->engine));
}

void sb_gateway_free(void)
{
    sb__rest_free();
}

size_t sb_gateway_session_size(void)
{
    return sizeof(struct sb_session);
}

static struct sb_session *session(struct sb_conn *c)
{
    return sb_conn_app(c);
}

/*
 * Queues a complete response. extra holds additional header lines, each ending in CRLF; a
 * response that closes the connection says so, and one that names Upgrade lists it too
 * (RFC 9110 section 7.8).
 */
static void respond(struct sb_conn *c, int status, const char *extra, const char *type,
                    const char *body, bool keep_alive)
{
    char head[512];
    size_t blen = body ? strlen(body) : 0;
    bool upgrade = extra && strstr(extra, "Upgrade:");
    const char *connection =
        keep_alive ? (upgrade ? "Connection: Upgrade\r\n" : "")
                   : (upgrade ? "Connection: Upgrade, close\r\n" : "Connection: close\r\n");
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nServer: switchboard\r\nContent-Length: %zu\r\n%s%s%s%s%s"
                     "\r\n",
                     status, sb_http_reason(status), blen, type ? "Content-Type: " : "",
                     type ? type : "", type ? "\r\n" : "", connection, extra ? extra : "");
    if (status >= 400)
        sb_metric_add(sb_conn_worker(c), SB_M_HTTP_ERRORS, 1);
    uint8_t *p = sb_conn_out_reserve(c, (size_t)n + blen);
    if (!p) {
        sb_conn_close(c, -ENOMEM);
        return;
    }
    memcpy(p, head, (size_t)n);
    memcpy(p + n, body, blen);
    if (!keep_alive)
        sb_conn_close_after_flush(c);
}

static void respond_error(struct sb_conn *c, int status, const char *extra, const char *why)
{
    char body[160];
    snprintf(body, sizeof(body), "{\"error\":\"%s\",\"status\":%d}\n", why, status);
    respond(c, status, extra, "application/json", body, false);
}

static void route_health(struct sb_conn *c, bool keep_alive)
{
    struct sb_engine *e = sb__gw.engine;
    struct sb_worker *w = sb_conn_worker(c);
    /* Degraded (cluster mode, Redis unreachable) still answers 200: the node serves its own
     * connections; a load balancer should keep it, an operator should look. */
    int err = sb_registry_status(sb__gw.registry);
    char why[160] = "";
    if (err)
        snprintf(why, sizeof(why), ",\"reason\":\"redis: %s\"", sb_redis_strerror(err));
    char node[SB_NODE_ID_MAX + 16] = "";
    if (sb__gw.registry)
        snprintf(node, sizeof(node), ",\"node\":\"%s\"", sb_registry_node_id(sb__gw.registry));
    char body[512];
    snprintf(body, sizeof(body),
             "{\"status\":\"%s\"%s,\"version\":\"%s\",\"workers\":%u,\"connections\":%" PRIu64
             ",\"uptime_s\":%" PRIu64 "%s}\n",
             err ? "degraded" : "healthy", why, SB_VERSION, sb_engine_workers(e),
             sb_engine_connections(e), (sb_worker_now_ms(w) - started_ms) / 1000, node);
    respond(c, 200, "Cache-Control: no-store\r\n", "application/json", body, keep_alive);
}

/*
 * Checks an upgrade request (RFC 6455 section 4.2.1). On success fills accept and returns true;
 * otherwise it has answered with the error and returns false.
 */
static bool upgrade_valid(struct sb_conn *c, const struct sb_http_request *req,
                          char accept[SB_WS_ACCEPT_LEN + 1])
{
    if (!sb_slice_eq(req->method, "GET")) {
        respond_error(c, 405, "Allow: GET\r\n", "method not allowed");
        return false;
    }
    const struct sb_http_header *upgrade = sb_http_find_header(req, "Upgrade");
    const struct sb_http_header *connection = sb_http_find_header(req, "Connection");
    if (!upgrade || !sb_http_has_token(upgrade->value, "websocket")) {
        respond_error(c, 426, "Upgrade: websocket\r\n", "this endpoint speaks WebSocket only");
        return false;
    }
    if (!connection || !sb_http_has_token(connection->value, "upgrade") || req->minor_version < 1) {
        respond_error(c, 400, NULL, "not a valid WebSocket upgrade");
        return false;
    }
    const struct sb_http_header *version = sb_http_find_header(req, "Sec-WebSocket-Version");
    if (!version || !sb_slice_eq(version->value, "13")) {
        respond_error(c, 426, "Sec-WebSocket-Version: 13\r\n", "unsupported WebSocket version");
        return false;
    }
    const struct sb_http_header *key = sb_http_find_header(req, "Sec-WebSocket-Key");
    if (!key || sb_ws_accept_key(key->value.base, key->value.len, accept) < 0) {
        respond_error(c, 400, NULL, "missing or invalid Sec-WebSocket-Key");
        return false;
    }
    return true;
}

/* Answers 101 and switches the session to WebSocket. protocol may be NULL. */
static bool upgrade(struct sb_conn *c, const char *accept, const char *protocol, uint8_t route)
{
    char head[320];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s%s\r\n",
                     accept, protocol ? "Sec-WebSocket-Protocol: " : "", protocol ? protocol : "",
                     protocol ? "\r\n" : "");
    if (sb_conn_write(c, head, (size_t)n) < 0) {
        sb_conn_close(c, -ENOMEM);
        return false;
    }
    sb_metric_add(sb_conn_worker(c),
                  route == SB_ROUTE_CHAT ? SB_M_UPGRADES_CHAT : SB_M_UPGRADES_ECHO, 1);
    struct sb_session *s = session(c);
    s->state = SB_SESS_WS;
    s->route = route;
    s->timer = sb__gw.ping_interval_ms ? SB_TIMER_PING : SB_TIMER_NONE;
    sb_conn_set_timer(c, sb__gw.ping_interval_ms);
    return true;
}

static void route_echo(struct sb_conn *c, const struct sb_http_request *req)
{
    char accept[SB_WS_ACCEPT_LEN + 1];
    if (upgrade_valid(c, req, accept))
        upgrade(c, accept, NULL, SB_ROUTE_ECHO);
}

static void respond_unauthorized(struct sb_conn *c, const char *reason)
{
    char body[160];
    snprintf(body, sizeof(body), "{\"error\":\"unauthorized\",\"reason\":\"%s\",\"status\":401}\n",
             reason);
    respond(c, 401, "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n", "application/json",
            body, false);
    sb_log(SB_LOG_INFO, 0, "c%llx: /ws refused: %s", (unsigned long long)sb_conn_id(c), reason);
    sb_metric_add(sb_conn_worker(c), SB_M_AUTH_FAILURES, 1);
}

/*
 * /ws: authenticate, answer 101, then move the connection to its user's home worker, which
 * registers the device (sb_chat_register via on_handoff).
 */
static void route_chat(struct sb_conn *c, const struct sb_http_request *req)
{
    char accept[SB_WS_ACCEPT_LEN + 1];
    if (!upgrade_valid(c, req, accept))
        return;
    /* A browser that offers subprotocols must get one back: switchboard.v1 (binary frames)
     * or switchboard.json. */
    const struct sb_http_header *protos = sb_http_find_header(req, "Sec-WebSocket-Protocol");
    bool binary = protos && sb_http_has_token(protos->value, SB_BINPROTO_SUBPROTOCOL);
    if (protos && !binary && !sb_http_has_token(protos->value, "switchboard.json")) {
        respond_error(c, 400, NULL,
                      "subprotocols offered, but neither switchboard.json nor "
                      "switchboard.v1");
        return;
    }
    struct sb_jwt_claims claims;
    bool has_token;
    enum sb_jwt_error e = sb_auth_request(sb__gw.auth, req, time(NULL), &claims, &has_token);
    if (!has_token) {
        respond_unauthorized(c, "missing token");
        return;
    }
    if (e != SB_JWT_OK) {
        respond_unauthorized(c, sb_jwt_strerror(e));
        return;
    }
    if (!sb_user_id_valid(claims.sub, strlen(claims.sub))) {
        respond_unauthorized(c, "subject is not a valid user id");
        return;
    }
    struct sb_chat_login *login = calloc(1, sizeof(*login));
    if (!login) {
        respond_error(c, 503, NULL, "out of memory");
        return;
    }
    memcpy(login->user, claims.sub, strlen(claims.sub) + 1);
    login->is_admin = sb_jwt_has_scope(&claims, "admin");
    ssize_t dn = sb_http_query_param(req->query, "device", login->device, sizeof(login->device));
    if (dn == -ENOENT || dn == 0) {
        snprintf(login->device, sizeof(login->device), "d%llx", (unsigned long long)sb_conn_id(c));
    } else if (dn < 0 || !sb_user_id_valid(login->device, (size_t)dn)) {
        free(login);
        respond_error(c, 400, NULL, "device must be 1-32 bytes of [A-Za-z0-9_.@-]");
        return;
    }
    const char *proto = !protos ? NULL : binary ? SB_BINPROTO_SUBPROTOCOL : "switchboard.json";
    if (!upgrade(c, accept, proto, SB_ROUTE_CHAT)) {
        free(login);
        return;
    }
    struct sb_session *s = session(c);
    s->chat = login;
    s->enc = binary ? SB_ENC_BINARY : SB_ENC_JSON;
    struct sb_worker *w = sb_conn_worker(c);
    unsigned home =
        sb_home_worker(login->user, strlen(login->user), sb_engine_workers(sb__gw.engine));
    /* A binary session registers when its HELLO comes (on the home worker). */
    if (home != sb_worker_id(w)) {
        s->moving = true;
        if (sb_conn_handoff(c, home) < 0)
            sb_conn_close(c, -EIO);
    } else if (!binary && sb_chat_register(c, login) < 0) {
        s->chat = NULL;
        sb_conn_close(c, -ENOMEM);
    }
}

static void route_metrics(struct sb_conn *c, const struct sb_http_request *req)
{
    if (!sb_slice_eq(req->method, "GET")) {
        respond_error(c, 405, "Allow: GET\r\n", "method not allowed");
        return;
    }
    if (sb__gw.metrics_access == SB_METRICS_ADMIN) {
        struct sb_jwt_claims claims;
        bool has_token;
        enum sb_jwt_error e = sb_auth_request(sb__gw.auth, req, time(NULL), &claims, &has_token);
        if (e != SB_JWT_OK) {
            respond_error(c, 401, "WWW-Authenticate: Bearer\r\n", "a valid admin token is needed");
            return;
        }
        if (!sb_jwt_has_scope(&claims, "admin")) {
            respond_error(c, 403, NULL, "the token lacks the admin scope");
            return;
        }
    }
    size_t cap = 8192 + (size_t)sb_engine_workers(sb__gw.engine) * 1024;
    char *body = malloc(cap);
    ssize_t n = body ? sb_metrics_render(sb__gw.engine, body, cap) : -ENOMEM;
    if (n < 0)
        respond_error(c, 500, NULL, "cannot render metrics");
    else
        respond(c, 200, NULL, "text/plain; version=0.0.4", body, req->keep_alive);
    free(body);
}

static void route(struct sb_conn *c, const struct sb_http_request *req, const char *body)
{
    sb_metric_add(sb_conn_worker(c), SB_M_HTTP_REQUESTS, 1);
    if (sb_slice_eq(req->path, "/api/health")) {
        if (!sb_slice_eq(req->method, "GET")) {
            respond_error(c, 405, "Allow: GET\r\n", "method not allowed");
            return;
        }
        route_health(c, req->keep_alive);
        return;
    }
    if (sb__gw.echo && sb_slice_eq(req->path, "/echo")) {
        route_echo(c, req);
        return;
    }
    if (sb_slice_eq(req->path, "/ws")) {
        route_chat(c, req);
        return;
    }
    if (sb__gw.metrics_access != SB_METRICS_OFF && sb_slice_eq(req->path, "/metrics")) {
        route_metrics(c, req);
        return;
    }
    if (req->path.len > 5 && memcmp(req->path.base, "/api/", 5) == 0) {
        sb__rest_route(c, req, body, (size_t)req->content_length);
        return;
    }
    respond_error(c, 404, NULL, "not found");
}

/* Handles one request at the start of data; returns bytes consumed (0 = need more). */
static size_t http_input(struct sb_conn *c, const uint8_t *data, size_t len)
{
    struct sb_http_request req;
    ssize_t r = sb_http_parse_request((const char *)data, len, &sb__gw.http_limits, &req);
    switch (r) {
    case -EAGAIN:
        return 0;
    case -ENAMETOOLONG:
        respond_error(c, 414, NULL, "request line too long");
        return len;
    case -EMSGSIZE:
        respond_error(c, 431, NULL, "request header fields too large");
        return len;
    case -EPROTONOSUPPORT:
        respond_error(c, 505, NULL, "HTTP version not supported");
        return len;
    default:
        if (r < 0 && data[0] == 0x16) {
            /* A TLS handshake record: say so in the log; the client sees a bad record. */
            sb_log(SB_LOG_INFO, 0, "c%llx: TLS handshake on a plaintext port; answered 400",
                   (unsigned long long)sb_conn_id(c));
            respond_error(c, 400, NULL, "this port speaks plain HTTP, not TLS");
            return len;
        }
        if (r < 0) {
            respond_error(c, 400, NULL, "malformed request");
            return len;
        }
    }
    if (req.is_chunked) {
        respond_error(c, 411, NULL, "chunked request bodies are not accepted");
        return len;
    }
    /* Bodies (REST requests) are read whole, up to 64 KiB. */
    if (req.content_length > 65536) {
        respond_error(c, 413, NULL, "request body too large");
        return len;
    }
    size_t total = (size_t)r + (size_t)req.content_length;
    if (len < total)
        return 0;
    route(c, &req, (const char *)data + r);
    return total;
}

static void on_open(struct sb_conn *c)
{
    struct sb_session *s = session(c);
    s->timer = SB_TIMER_HANDSHAKE;
    sb_conn_set_timer(c, sb__gw.handshake_timeout_ms);
}

static ssize_t on_data(struct sb_conn *c, uint8_t *data, size_t len)
{
    struct sb_session *s = session(c);
    size_t off = 0;
    /* Pipelined requests, and frames sent right behind an upgrade request, are all in data. */
    while (off < len && !sb_conn_is_closing(c)) {
        size_t n;
        if (s->state == SB_SESS_WS)
            return (ssize_t)(off + sb__ws_input(c, data + off, len - off));
        n = http_input(c, data + off, len - off);
        if (n == 0)
            break;
        off += n;
        /* Moving to the user's home worker: what follows is for that worker to read. A REST
         * request waits for its answer: what follows waits too (its input is held). */
        if (s->moving || s->rest_held)
            return (ssize_t)off;
        if (s->state == SB_SESS_HTTP && !sb_conn_is_closing(c))
            sb_conn_set_timer(c, sb__gw.handshake_timeout_ms);
    }
    return sb_conn_is_closing(c) ? (ssize_t)len : (ssize_t)off;
}

static void on_timer(struct sb_conn *c)
{
    struct sb_session *s = session(c);
    if (s->state == SB_SESS_HTTP) {
        sb_log(SB_LOG_INFO, 0, "c%llx: no complete request within %" PRIu64 " ms; dropped",
               (unsigned long long)sb_conn_id(c), sb__gw.handshake_timeout_ms);
        sb_conn_close(c, -ETIMEDOUT);
        return;
    }
    sb__ws_timer(c);
}

static void on_close(struct sb_conn *c, int err)
{
    if (err && err != -ECONNRESET && err != -EPIPE && err != -ETIMEDOUT)
        sb_log(SB_LOG_INFO, err, "c%llx: connection error", (unsigned long long)sb_conn_id(c));
    sb__ws_release(session(c));
    if (session(c)->rest_held)
        sb__rest_forget(c);
    if (session(c)->route == SB_ROUTE_CHAT)
        sb_chat_unregister(c);
}

static void on_shutdown(struct sb_conn *c)
{
    struct sb_session *s = session(c);
    if (s->state == SB_SESS_WS)
        sb__ws_close(c, SB_WS_CLOSE_GOING_AWAY, "server shutting down");
    else
        sb_conn_close_after_flush(c);
}

static void on_handoff(struct sb_conn *c)
{
    /* The session moved as it was; only its timer stayed behind on the old worker. */
    struct sb_session *s = session(c);
    s->moving = false;
    if (s->route == SB_ROUTE_CHAT && s->enc == SB_ENC_JSON && !s->chat_registered &&
        sb_chat_register(c, s->chat) < 0) {
        s->chat = NULL;
        sb_conn_close(c, -ENOMEM);
        return;
    }
    if (s->state == SB_SESS_HTTP)
        sb_conn_set_timer(c, sb__gw.handshake_timeout_ms);
    else if (s->timer == SB_TIMER_CLOSE)
        sb_conn_set_timer(c, sb__gw.close_timeout_ms);
    else if (s->timer == SB_TIMER_PING)
        sb_conn_set_timer(c, sb__gw.ping_interval_ms);
}

const struct sb_conn_ops sb_gateway_ops = {
    .on_open = on_open,
    .on_data = on_data,
    .on_timer = on_timer,
    .on_close = on_close,
    .on_shutdown = on_shutdown,
    .on_handoff = on_handoff,
};
