/*
 * The REST API under /api/ (docs/protocol.md "REST API"): bearer-token auth, then the same
 * operations as /ws, answered with the same JSON objects. An operation that needs another worker
 * holds the connection's input (pipelined requests wait their turn) until its answer is mailed
 * back; a per-worker table finds the connection by id when it arrives.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "proto/json.h"
#include "server/chat.h"
#include "server/gateway.h"
#include "server/ids.h"
#include "server/metrics.h"
#include "server/presence.h"
#include "server/table.h"

/* A request waiting for its answer, by connection id. */
struct rest_wait {
    uint64_t id;
    struct sb_conn *c;
};

static struct sb_table *waits; /* one table per worker */
static unsigned nwaits;

static const char *wait_key(const void *obj, size_t *len)
{
    const struct rest_wait *rw = obj;
    *len = sizeof(rw->id);
    return (const char *)&rw->id;
}

int sb__rest_init(unsigned workers)
{
    waits = calloc(workers, sizeof(*waits));
    if (!waits)
        return -ENOMEM;
    nwaits = workers;
    for (unsigned i = 0; i < workers; i++)
        sb_table_init(&waits[i], wait_key);
    return 0;
}

void sb__rest_free(void)
{
    for (unsigned i = 0; waits && i < nwaits; i++) {
        for (size_t k = 0; k < waits[i].cap; k++)
            free(waits[i].slots[k].obj);
        sb_table_destroy(&waits[i]);
    }
    free(waits);
    waits = NULL;
}

static struct sb_session *session(struct sb_conn *c)
{
    return sb_conn_app(c);
}

/* Writes a response with a JSON body (len bytes, no newline added). */
static void respond_json(struct sb_conn *c, int status, const char *extra, const char *json,
                         size_t len, bool keep_alive)
{
    char head[384];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nServer: switchboard\r\nContent-Type: application/json\r\n"
                     "Cache-Control: no-store\r\nContent-Length: %zu\r\n%s%s\r\n",
                     status, sb_http_reason(status), len + 1,
                     keep_alive ? "" : "Connection: close\r\n", extra ? extra : "");
    if (status >= 400)
        sb_metric_add(sb_conn_worker(c), SB_M_HTTP_ERRORS, 1);
    uint8_t *p = sb_conn_out_reserve(c, (size_t)n + len + 1);
    if (!p) {
        sb_conn_close(c, -ENOMEM);
        return;
    }
    memcpy(p, head, (size_t)n);
    memcpy(p + n, json, len);
    p[(size_t)n + len] = '\n';
    if (!keep_alive)
        sb_conn_close_after_flush(c);
}

static void respond_problem(struct sb_conn *c, int status, const char *extra, const char *code,
                            const char *message, bool keep_alive)
{
    char body[512];
    struct sb_json_writer w;
    sb_json_writer_init(&w, body, sizeof(body));
    sb_json_begin_object(&w);
    sb_json_key(&w, "type");
    sb_json_cstr(&w, "error");
    sb_json_key(&w, "code");
    sb_json_cstr(&w, code);
    sb_json_key(&w, "message");
    sb_json_cstr(&w, message);
    sb_json_end_object(&w);
    ssize_t n = sb_json_finish(&w);
    respond_json(c, status, extra, body, n > 0 ? (size_t)n : 0, keep_alive);
}

/* The HTTP status of a messaging answer: its error code's, or 200. */
static int answer_status(const char *json, size_t len, uint64_t *retry_after_ms)
{
    static const struct {
        const char *code;
        int status;
    } map[] = {
        {"\"bad_request\"", 400}, {"\"unauthorized\"", 401}, {"\"forbidden\"", 403},
        {"\"not_found\"", 404},   {"\"too_large\"", 413},    {"\"rate_limited\"", 429},
        {"\"conflict\"", 409},    {"\"unavailable\"", 503},  {"\"internal\"", 500},
    };
    static const char err[] = "{\"type\":\"error\"";
    *retry_after_ms = 0;
    if (len < sizeof(err) - 1 || memcmp(json, err, sizeof(err) - 1) != 0)
        return 200;
    /* Answers are ours: the code follows "code": and names one of the codes above. */
    const char *code = memmem(json, len, "\"code\":", 7);
    if (!code)
        return 500;
    code += 7;
    size_t rest = len - (size_t)(code - json);
    const char *retry = memmem(json, len, "\"retry_after_ms\":", 17);
    if (retry)
        *retry_after_ms = strtoull(retry + 17, NULL, 10);
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        size_t n = strlen(map[i].code);
        if (rest >= n && memcmp(code, map[i].code, n) == 0)
            return map[i].status;
    }
    return 500;
}

void sb__rest_respond(struct sb_conn *c, const char *json, size_t len)
{
    struct sb_session *s = session(c);
    uint64_t retry_ms;
    int status = answer_status(json, len, &retry_ms);
    char extra[64] = "";
    if (retry_ms)
        snprintf(extra, sizeof(extra), "Retry-After: %" PRIu64 "\r\n", (retry_ms + 999) / 1000);
    bool keep_alive = s->rest_keep_alive, held = s->rest_held;
    if (!s->rest_waiting)
        return; /* answered already (a second answer cannot happen; be safe) */
    s->rest_waiting = false;
    if (held) {
        s->rest_held = false;
        sb__rest_forget(c);
    }
    respond_json(c, status, extra[0] ? extra : NULL, json, len, keep_alive);
    /* Answered from a mail: the requests that waited behind this one may go on. (Answered at
     * once, inside on_data, nothing was held.) */
    if (held && keep_alive && !sb_conn_is_closing(c)) {
        sb_conn_set_timer(c, sb__gw.handshake_timeout_ms);
        sb_conn_release_input(c);
    }
}

void sb__rest_answer(struct sb_worker *w, uint64_t conn_id, const char *json, size_t len)
{
    struct rest_wait *rw =
        sb_table_get(&waits[sb_worker_id(w)], (const char *)&conn_id, sizeof(conn_id));
    if (rw)
        sb__rest_respond(rw->c, json, len); /* forgets rw */
}

void sb__rest_forget(struct sb_conn *c)
{
    uint64_t id = sb_conn_id(c);
    free(sb_table_remove(&waits[sb_worker_id(sb_conn_worker(c))], (const char *)&id, sizeof(id)));
}

/*
 * Runs an operation. One that was not answered at once waits for an answer from another
 * worker: registered by connection id, its input held so that pipelined requests wait.
 */
static void run(struct sb_conn *c, const char *user, const char *op, const char *conv,
                const char *body, size_t body_len, bool keep_alive)
{
    struct sb_session *s = session(c);
    s->rest_waiting = true;
    s->rest_keep_alive = keep_alive;
    if (strcmp(op, "user_status") == 0)
        sb_presence_status(c, body_len ? body : "{}", body_len ? body_len : 2);
    else
        sb_chat_rest(c, user, op, conv, body, body_len);
    if (!s->rest_waiting || sb_conn_is_closing(c))
        return;
    struct rest_wait *rw = malloc(sizeof(*rw));
    struct sb_table *t = &waits[sb_worker_id(sb_conn_worker(c))];
    if (!rw || (rw->id = sb_conn_id(c), rw->c = c, sb_table_add(t, rw) < 0)) {
        free(rw);
        s->rest_waiting = false;
        respond_problem(c, 503, NULL, "unavailable", "out of memory; retry", false);
        return;
    }
    s->rest_held = true;
    sb_conn_hold_input(c);
}

/* GET /api/connections/stats (admin): connections per worker. */
static void connections_stats(struct sb_conn *c, bool keep_alive)
{
    struct sb_engine *e = sb__gw.engine;
    unsigned n = sb_engine_workers(e);
    size_t cap = 128 + (size_t)n * 160 + (sb__gw.registry ? SB_REGISTRY_MAX_NODES * 240 : 0);
    char *buf = malloc(cap);
    if (!buf) {
        respond_problem(c, 503, NULL, "unavailable", "out of memory; retry", false);
        return;
    }
    size_t len =
        (size_t)snprintf(buf, cap, "{\"type\":\"stats\",\"connections\":%" PRIu64 ",\"workers\":[",
                         sb_engine_connections(e));
    for (unsigned i = 0; i < n; i++) {
        struct sb_worker_stats st;
        sb_engine_worker_stats(e, i, &st);
        len += (size_t)snprintf(buf + len, cap - len,
                                "%s{\"worker\":%u,\"connections\":%" PRIu64 ",\"accepted\":%" PRIu64
                                ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64 "}",
                                i ? "," : "", i, st.connections, st.accepted, st.bytes_in,
                                st.bytes_out);
    }
    len += (size_t)snprintf(buf + len, cap - len, "]");
    if (sb__gw.registry) {
        /* Every live node, as this worker last heard them (at most one heartbeat ago). */
        unsigned long long total;
        len +=
            (size_t)snprintf(buf + len, cap - len,
                             ",\"node\":\"%s\",\"nodes\":", sb_registry_node_id(sb__gw.registry));
        len += sb_registry_nodes_json(sb_conn_worker(c), sb__gw.registry, buf + len, cap - len,
                                      &total);
        len += (size_t)snprintf(buf + len, cap - len, ",\"cluster_connections\":%llu", total);
    }
    len += (size_t)snprintf(buf + len, cap - len, "}");
    respond_json(c, 200, NULL, buf, len, keep_alive);
    free(buf);
}

/* Splits "/api/conversations/<id>[/<action>]": the id (NUL-terminated into conv) and action. */
static bool conv_path(struct sb_slice path, char conv[SB_CONV_ID_MAX + 1], struct sb_slice *action)
{
    static const char prefix[] = "/api/conversations/";
    size_t plen = sizeof(prefix) - 1;
    if (path.len <= plen || memcmp(path.base, prefix, plen) != 0)
        return false;
    const char *id = path.base + plen, *end = path.base + path.len;
    const char *slash = memchr(id, '/', (size_t)(end - id));
    size_t idlen = (size_t)((slash ? slash : end) - id);
    if (idlen == 0 || idlen > SB_CONV_ID_MAX)
        return false;
    memcpy(conv, id, idlen);
    conv[idlen] = '\0';
    *action = slash ? sb_slice_from(slash + 1, (size_t)(end - slash - 1)) : sb_slice_from("", 0);
    return true;
}

/* Which operation a method and path name; NULL when none (*conv set when the path names one). */
static const char *operation(const struct sb_http_request *req, char conv[SB_CONV_ID_MAX + 1],
                             bool *has_conv, bool *allowed)
{
    static const char *const actions[][2] = {
        {"add", "conv_add"},       {"remove", "conv_remove"},   {"leave", "conv_leave"},
        {"rename", "conv_rename"}, {"promote", "conv_promote"}, {"demote", "conv_demote"},
        {"typing", "typing"},
    };
    bool post = sb_slice_eq(req->method, "POST"), get = sb_slice_eq(req->method, "GET");
    struct sb_slice action;
    *has_conv = false;
    *allowed = true;
    if (sb_slice_eq(req->path, "/api/messages")) {
        *allowed = post;
        return "send";
    }
    if (sb_slice_eq(req->path, "/api/messages/read")) {
        *allowed = post;
        return "receipt";
    }
    if (sb_slice_eq(req->path, "/api/conversations")) {
        *allowed = post || get;
        return post ? "conv_create" : "conv_list";
    }
    if (sb_slice_eq(req->path, "/api/user/status")) {
        *allowed = post;
        return "user_status";
    }
    if (sb_slice_eq(req->path, "/api/connections/info")) {
        *allowed = get;
        return "devices";
    }
    if (!conv_path(req->path, conv, &action))
        return NULL;
    *has_conv = true;
    if (action.len == 0) {
        *allowed = get;
        return "conv_get";
    }
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
        if (sb_slice_eq(action, actions[i][0])) {
            *allowed = post;
            return actions[i][1];
        }
    }
    return NULL;
}

/* Copies a string field of a send's JSON object ("from"); false when absent (or when the object
 * is not one a send accepts: then the send itself is refused). */
static bool json_field(const char *body, size_t len, const char *key, char *out, size_t cap)
{
    struct sb_json_tok t[128];
    struct sb_json_limits lim = {.max_tokens = 128, .max_depth = 8};
    if (sb_json_parse(body, len, &lim, t) < 0 || t[0].type != SB_JSON_OBJECT)
        return false;
    int i = sb_json_get(body, t, 0, key);
    return i >= 0 && t[i].type == SB_JSON_STRING && sb_json_string(body, &t[i], out, cap) > 0;
}

void sb__rest_route(struct sb_conn *c, const struct sb_http_request *req, const char *body,
                    size_t body_len)
{
    char conv[SB_CONV_ID_MAX + 1];
    bool has_conv, allowed;
    bool stats = sb_slice_eq(req->path, "/api/connections/stats");
    const char *op = stats ? "stats" : operation(req, conv, &has_conv, &allowed);
    if (!op) {
        respond_problem(c, 404, NULL, "not_found", "no such endpoint", req->keep_alive);
        return;
    }
    if (stats ? !sb_slice_eq(req->method, "GET") : !allowed) {
        respond_problem(c, 405, NULL, "bad_request", "method not allowed", req->keep_alive);
        return;
    }
    struct sb_jwt_claims claims;
    bool has_token;
    enum sb_jwt_error e = sb_auth_request(sb__gw.auth, req, time(NULL), &claims, &has_token);
    if (e != SB_JWT_OK || !sb_user_id_valid(claims.sub, strlen(claims.sub))) {
        respond_problem(c, 401, "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n",
                        "unauthorized",
                        !has_token       ? "missing token"
                        : e != SB_JWT_OK ? sb_jwt_strerror(e)
                                         : "subject is not a valid user id",
                        req->keep_alive);
        sb_metric_add(sb_conn_worker(c), SB_M_AUTH_FAILURES, 1);
        return;
    }
    bool admin = sb_jwt_has_scope(&claims, "admin");
    if (stats) {
        if (!admin)
            respond_problem(c, 403, NULL, "forbidden", "the token lacks the admin scope",
                            req->keep_alive);
        else
            connections_stats(c, req->keep_alive);
        return;
    }
    /* A backend with the admin scope may publish as any user ("from"). */
    char user[SB_USER_ID_MAX + 1];
    memcpy(user, claims.sub, strlen(claims.sub) + 1);
    char from[SB_USER_ID_MAX + 1];
    if (strcmp(op, "send") == 0 && json_field(body, body_len, "from", from, sizeof(from))) {
        if (!admin) {
            respond_problem(c, 403, NULL, "forbidden", "\"from\" needs the admin scope",
                            req->keep_alive);
            return;
        }
        if (!sb_user_id_valid(from, strlen(from))) {
            respond_problem(c, 400, NULL, "bad_request", "\"from\" is not a valid user id",
                            req->keep_alive);
            return;
        }
        memcpy(user, from, strlen(from) + 1);
    }
    run(c, user, op, has_conv ? conv : NULL, body, body_len, req->keep_alive);
}
