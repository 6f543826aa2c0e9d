/*
 * The offline webhook (see webhook.h). Each worker owns one `struct hook`: a ring of encoded
 * notices, at most one batch being sent (kept as the request bytes, so a retry resends exactly
 * them), one outbound connection and two worker timers (the batching delay and the backoff).
 */
#include "server/webhook.h"

#include <errno.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "core/log.h"
#include "proto/httpresp.h"
#include "proto/json.h"
#include "server/ids.h"
#include "server/metrics.h"

#define BATCH_DELAY_MS 100   /* a batch that is not full waits this long for company */
#define BACKOFF_BASE_MS 100  /* the first retry comes after 50..100 ms */
#define BACKOFF_MAX_MS 30000 /* retries are at most this far apart (before jitter) */
#define URL_MAX 2048         /* bytes of webhook_url */
#define REFUSED_LOG_MS 10000 /* 4xx answers are logged at most this often per worker */
#define MESSAGE_TOKENS 32    /* a "message" operation has 9 members: 19 tokens */

struct notice {
    uint32_t len;
    char json[]; /* one notice object */
};

struct hook {
    struct sb_worker *w;
    struct notice **q; /* ring of cfg.queue slots: count notices from head */
    uint32_t head, count;
    char *req; /* the batch being sent: request bytes [req_off, req_off + req_len) */
    size_t req_off, req_len;
    uint32_t req_notices; /* notices in it */
    struct sb_conn *conn; /* NULL until needed; dropped when closing */
    bool awaiting;        /* the request was written on conn; its response is being read */
    bool reused;          /* conn had answered a request before this one */
    bool resp_bytes;      /* some byte of the response arrived */
    bool batch_armed, backoff;
    bool failing;      /* POSTs fail: the first failure was logged, the recovery will be */
    bool dropping;     /* the queue overflowed since the last successful POST (logged once) */
    bool stopping;     /* the engine is shutting down: no new POSTs */
    unsigned attempts; /* consecutive failed POSTs */
    uint64_t refused_log_ms, refused_quiet; /* 4xx log rate limit */
    uint64_t rng;
    struct sb_httpresp resp;
    struct sb_worker_timer batch_timer, retry_timer;
};

static struct sb_webhook_config cfg;
static char url[URL_MAX + 1];  /* as configured, for logs */
static char host_hdr[300];     /* the Host header: the URL's authority */
static char path[URL_MAX + 1]; /* the request target */
static char *secret;
static size_t secret_len;
static struct sockaddr_storage addr;
static socklen_t addr_len;
static unsigned client;
static struct hook *hooks;
static unsigned nhooks;
static atomic_bool stop_requested;

/* ---- the URL --------------------------------------------------------------------------------- */

/* Splits http://host[:port][/path] into host (no brackets), port and Host header and target.
 * Returns 0 or -EINVAL with *why set. */
static int parse_url(const char *u, char *host, size_t host_cap, char *port, char *hdr,
                     size_t hdr_cap, char *target, size_t target_cap, const char **why)
{
    size_t len = strlen(u);
    *why = "must look like http://host:port/path";
    if (len > URL_MAX) {
        *why = "is longer than 2048 bytes";
        return -EINVAL;
    }
    if (strncasecmp(u, "https://", 8) == 0) {
        *why = "uses https, which needs TLS support (not built yet): use http://";
        return -EINVAL;
    }
    if (strncasecmp(u, "http://", 7) != 0)
        return -EINVAL;
    const char *a = u + 7, *aend = a + strcspn(a, "/?#");
    for (const char *p = u; *p; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '#') {
            *why = "may hold only visible ASCII, and no #fragment";
            return -EINVAL;
        }
    }
    if (memchr(a, '@', (size_t)(aend - a))) {
        *why = "may not carry user:password@ (use webhook_secret to authenticate)";
        return -EINVAL;
    }
    const char *h = a, *hend;
    if (*a == '[') {
        hend = memchr(a, ']', (size_t)(aend - a));
        if (!hend)
            return -EINVAL;
        h = a + 1;
    } else {
        hend = memchr(a, ':', (size_t)(aend - a));
        if (!hend)
            hend = aend;
    }
    size_t hlen = (size_t)(hend - h);
    if (hlen == 0 || hlen >= host_cap || (size_t)(aend - a) >= hdr_cap)
        return -EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    const char *pp = hend + (*a == '[');
    strcpy(port, "80");
    if (pp < aend) {
        if (*pp != ':' || aend - pp < 2 || aend - pp > 6)
            return -EINVAL;
        unsigned long n = 0;
        for (const char *d = pp + 1; d < aend; d++) {
            if (*d < '0' || *d > '9')
                return -EINVAL;
            n = n * 10 + (unsigned long)(*d - '0');
        }
        if (n == 0 || n > 65535) {
            *why = "has a port outside 1..65535";
            return -EINVAL;
        }
        snprintf(port, 6, "%lu", n);
    }
    memcpy(hdr, a, (size_t)(aend - a));
    hdr[aend - a] = '\0';
    /* "http://h?q" asks for "/?q". */
    snprintf(target, target_cap, "%s%s", *aend == '/' ? "" : "/", aend);
    return 0;
}

static int resolve(const char *host, const char *port)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    int r = getaddrinfo(host, port, &hints, &res);
    if (r != 0) {
        sb_log(SB_LOG_ERROR, 0, "webhook_url: cannot resolve \"%s\": %s", host, gai_strerror(r));
        return -EHOSTUNREACH;
    }
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static const char *addr_text(char *buf, size_t cap)
{
    char h[64], p[8];
    if (getnameinfo((const struct sockaddr *)&addr, addr_len, h, sizeof(h), p, sizeof(p),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return "?";
    snprintf(buf, cap, addr.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", h, p);
    return buf;
}

/* ---- notices --------------------------------------------------------------------------------- */

/* A string member's JSON text, quotes included; NULL when absent or not a string. */
static const char *raw_member(const char *json, const struct sb_json_tok *t, const char *key,
                              enum sb_json_type type, size_t *len)
{
    int i = sb_json_get(json, t, 0, key);
    if (i < 0 || t[i].type != type)
        return NULL;
    bool quoted = type == SB_JSON_STRING;
    *len = t[i].len + (quoted ? 2 : 0);
    return json + t[i].start - (quoted ? 1 : 0);
}

/*
 * The notice for a message, or NULL: *err = 0 when the message is the user's own (no notice),
 * -EBADMSG when it is not a message operation, -ENOMEM. Values are copied as JSON text: the
 * body keeps its form ("body" string or "body_b64"), exactly as a JSON client would get it.
 */
static struct notice *make_notice(const char *user, size_t user_len, const char *msg, size_t len,
                                  int *err)
{
    struct sb_json_tok t[MESSAGE_TOKENS];
    struct sb_json_limits lim = {.max_tokens = MESSAGE_TOKENS, .max_depth = 4};
    *err = -EBADMSG;
    if (user_len > SB_USER_ID_MAX || sb_json_parse(msg, len, &lim, t) < 0 ||
        t[0].type != SB_JSON_OBJECT)
        return NULL;
    static const char *const keys[] = {"conv", "seq", "msg_id", "from", "ts"};
    static const enum sb_json_type types[] = {SB_JSON_STRING, SB_JSON_NUMBER, SB_JSON_STRING,
                                              SB_JSON_STRING, SB_JSON_NUMBER};
    const char *v[5];
    size_t vlen[5], need = 6 * user_len + 96;
    for (int k = 0; k < 5; k++) {
        v[k] = raw_member(msg, t, keys[k], types[k], &vlen[k]);
        if (!v[k])
            return NULL;
        need += vlen[k] + 16;
    }
    char uz[SB_USER_ID_MAX + 1];
    memcpy(uz, user, user_len);
    uz[user_len] = '\0';
    if (sb_json_eq(msg, &t[sb_json_get(msg, t, 0, "from")], uz)) {
        *err = 0; /* the sender's own message */
        return NULL;
    }
    const char *body_key = "body", *body = NULL;
    size_t blen = 0;
    bool omitted = false;
    if (cfg.body) {
        body = raw_member(msg, t, "body", SB_JSON_STRING, &blen);
        if (!body) {
            body_key = "body_b64";
            body = raw_member(msg, t, body_key, SB_JSON_STRING, &blen);
        }
        omitted = body && blen > cfg.body_max;
        need += (omitted ? 0 : blen) + 32;
    }
    struct notice *n = malloc(sizeof(*n) + need);
    if (!n) {
        *err = -ENOMEM;
        return NULL;
    }
    struct sb_json_writer jw;
    sb_json_writer_init(&jw, n->json, need);
    sb_json_begin_object(&jw);
    sb_json_key(&jw, "user");
    sb_json_str(&jw, user, user_len);
    for (int k = 0; k < 5; k++) {
        sb_json_key(&jw, keys[k]);
        sb_json_raw(&jw, v[k], vlen[k]);
    }
    if (omitted) {
        sb_json_key(&jw, "body_omitted");
        sb_json_bool(&jw, true);
    } else if (body) {
        sb_json_key(&jw, body_key);
        sb_json_raw(&jw, body, blen);
    }
    sb_json_end_object(&jw);
    ssize_t w = sb_json_finish(&jw);
    if (w < 0) {
        free(n);
        return NULL;
    }
    n->len = (uint32_t)w;
    return n;
}

/* ---- the request ----------------------------------------------------------------------------- */

static void release_req(struct hook *h)
{
    free(h->req);
    h->req = NULL;
    h->req_len = h->req_off = 0;
    h->req_notices = 0;
}

/* {"notices":[...]} of up to cfg.batch queued notices, and the head before it. 0 or -ENOMEM. */
static int build_request(struct hook *h)
{
    uint32_t n = h->count < cfg.batch ? h->count : cfg.batch;
    size_t body_len = strlen("{\"notices\":[]}") + (n - 1);
    for (uint32_t i = 0; i < n; i++)
        body_len += h->q[(h->head + i) % cfg.queue]->len;
    /* Room for the head in front of the body: it is written last (it signs the body). */
    size_t head_cap = strlen(path) + strlen(host_hdr) + 512;
    char *req = malloc(head_cap + body_len);
    if (!req)
        return -ENOMEM;
    char *body = req + head_cap, *p = body;
    p += sprintf(p, "{\"notices\":[");
    for (uint32_t i = 0; i < n; i++) {
        const struct notice *nt = h->q[(h->head + i) % cfg.queue];
        if (i)
            *p++ = ',';
        memcpy(p, nt->json, nt->len);
        p += nt->len;
    }
    memcpy(p, "]}", 2);
    char sig[128] = "";
    if (secret_len) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned mac_len = 0;
        HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)body, body_len, mac,
             &mac_len);
        char *s = sig + sprintf(sig, "X-Switchboard-Signature: sha256=");
        for (unsigned i = 0; i < mac_len; i++)
            s += sprintf(s, "%02x", mac[i]);
        strcpy(s, "\r\n");
    }
    char head[URL_MAX + 600];
    int hl = snprintf(head, sizeof(head),
                      "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: switchboard/%s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n",
                      path, host_hdr, SB_VERSION, body_len, sig);
    if (hl < 0 || (size_t)hl > head_cap) {
        free(req); /* cannot happen: head_cap bounds every field */
        return -ENOMEM;
    }
    memcpy(body - hl, head, (size_t)hl);
    for (uint32_t i = 0; i < n; i++) {
        free(h->q[h->head]);
        h->q[h->head] = NULL;
        h->head = (h->head + 1) % cfg.queue;
    }
    h->count -= n;
    h->req = req;
    h->req_off = head_cap - (size_t)hl;
    h->req_len = (size_t)hl + body_len;
    h->req_notices = n;
    return 0;
}

/* ---- sending --------------------------------------------------------------------------------- */

static bool is_stopping(struct hook *h)
{
    if (!h->stopping && atomic_load(&stop_requested))
        h->stopping = true;
    return h->stopping;
}

static uint64_t next_rand(struct hook *h)
{
    h->rng ^= h->rng << 13;
    h->rng ^= h->rng >> 7;
    h->rng ^= h->rng << 17;
    return h->rng;
}

/* Exponential, capped, with equal jitter: servers and workers that failed together spread out. */
static uint64_t backoff_ms(struct hook *h)
{
    unsigned shift = h->attempts > 20 ? 19 : h->attempts - 1;
    uint64_t d = (uint64_t)BACKOFF_BASE_MS << shift;
    if (d > BACKOFF_MAX_MS)
        d = BACKOFF_MAX_MS;
    return d / 2 + next_rand(h) % (d / 2 + 1);
}

static void send_batch(struct hook *h);

/* What a failed POST's error means, for the operator. */
static const char *failure_text(int err)
{
    switch (err) {
    case -ETIMEDOUT:
        return "no complete response within webhook_timeout_ms";
    case -EBADMSG:
    case -EPROTONOSUPPORT:
        return "malformed HTTP response";
    case -EMSGSIZE:
        return "HTTP response over the size limits";
    case -EPIPE:
        return "connection closed before the response ended";
    case -EPROTO:
        return "bytes from the receiver nobody asked for";
    default:
        return "cannot connect or send";
    }
}

/* A POST failed (err, or an HTTP status >= 500): log the first failure, retry after a backoff. */
static void post_failed(struct hook *h, int err, int status)
{
    sb_metric_add(h->w, SB_M_WEBHOOK_FAILED, 1);
    h->attempts++;
    if (!h->failing) {
        h->failing = true;
        if (status)
            sb_log(SB_LOG_WARN, 0,
                   "webhook: POST to %s failed: HTTP %d; retrying with backoff (the next line "
                   "says when it works again)",
                   url, status);
        else
            sb_log(SB_LOG_WARN, err,
                   "webhook: POST to %s failed (%s); retrying with backoff (the next line says "
                   "when it works again)",
                   url, failure_text(err));
    }
    if (is_stopping(h))
        return;
    h->backoff = true;
    sb_worker_timer_set(h->w, &h->retry_timer, backoff_ms(h));
}

/* The receiver answered: the batch is done with, one way or the other. */
static void post_answered(struct hook *h, int status)
{
    if (status >= 500) {
        post_failed(h, 0, status);
        return;
    }
    if (h->failing)
        sb_log(SB_LOG_INFO, 0, "webhook: POST to %s works again (HTTP %d) after %u failed attempts",
               url, status, h->attempts);
    h->failing = false;
    h->attempts = 0;
    if (status >= 200 && status < 300) {
        sb_metric_add(h->w, SB_M_WEBHOOK_SENT, h->req_notices);
        h->dropping = false;
    } else {
        /* The receiver refused these notices; sending them again would not change its mind. */
        sb_metric_add(h->w, SB_M_WEBHOOK_FAILED, 1);
        sb_metric_add(h->w, SB_M_WEBHOOK_DROPPED, h->req_notices);
        uint64_t now = sb_worker_now_ms(h->w);
        if (!h->refused_log_ms || now - h->refused_log_ms >= REFUSED_LOG_MS) {
            sb_log(SB_LOG_WARN, 0,
                   "webhook: %s refused a POST with HTTP %d: %u notices dropped (%llu more "
                   "refusals since the last such line)",
                   url, status, h->req_notices, (unsigned long long)h->refused_quiet);
            h->refused_log_ms = now;
            h->refused_quiet = 0;
        } else {
            h->refused_quiet++;
        }
    }
    release_req(h);
    /* What queued up meanwhile has waited long enough. */
    if (h->count)
        send_batch(h);
}

static void send_batch(struct hook *h)
{
    if (h->awaiting || h->backoff || is_stopping(h))
        return;
    if (!h->req) {
        if (!h->count)
            return;
        if (build_request(h) < 0) {
            sb_log(SB_LOG_WARN, -ENOMEM, "webhook: cannot build a POST; the notices wait");
            return;
        }
    }
    /* A connection the receiver closed may wait for its on_close until the end of this loop
     * iteration: let it go now. */
    if (h->conn && sb_conn_is_closing(h->conn))
        h->conn = NULL;
    h->reused = h->conn != NULL;
    if (!h->conn) {
        h->conn = sb_worker_connect(h->w, client, (const struct sockaddr *)&addr, addr_len);
        if (!h->conn) {
            post_failed(h, -errno, 0);
            return;
        }
    }
    memset(&h->resp, 0, sizeof(h->resp));
    h->resp_bytes = false;
    h->awaiting = true;
    if (sb_conn_write(h->conn, h->req + h->req_off, h->req_len) < 0) {
        sb_conn_close(h->conn, -ENOMEM); /* on_close reports the failure */
        return;
    }
    sb_conn_set_timer(h->conn, cfg.timeout_ms);
}

static void batch_due(struct sb_worker *w, struct sb_worker_timer *t)
{
    struct hook *h = &hooks[sb_worker_id(w)];
    h->batch_armed = false;
    send_batch(h);
}

static void retry_due(struct sb_worker *w, struct sb_worker_timer *t)
{
    struct hook *h = &hooks[sb_worker_id(w)];
    h->backoff = false;
    if (is_stopping(h))
        return;
    sb_metric_add(w, SB_M_WEBHOOK_RETRIES, 1);
    send_batch(h);
}

void sb_webhook_offline(struct sb_worker *w, const char *user, size_t user_len, const char *message,
                        size_t message_len)
{
    if (!hooks)
        return;
    struct hook *h = &hooks[sb_worker_id(w)];
    h->w = w; /* every POST of this hook starts from here, so it is known before it is used */
    int err;
    struct notice *n = make_notice(user, user_len, message, message_len, &err);
    if (!n) {
        if (err < 0) {
            sb_metric_add(w, SB_M_WEBHOOK_DROPPED, 1);
            sb_log(SB_LOG_WARN, err, "webhook: no notice for %.*s", (int)user_len, user);
        }
        return;
    }
    if (h->count == cfg.queue) {
        free(h->q[h->head]);
        h->q[h->head] = NULL;
        h->head = (h->head + 1) % cfg.queue;
        h->count--;
        sb_metric_add(w, SB_M_WEBHOOK_DROPPED, 1);
        if (!h->dropping) {
            h->dropping = true;
            sb_log(SB_LOG_WARN, 0,
                   "webhook: queue full (%u notices on this worker): dropping the oldest until a "
                   "POST to %s succeeds (see switchboard_webhook_notices_dropped_total)",
                   cfg.queue, url);
        }
    }
    h->q[(h->head + h->count) % cfg.queue] = n;
    h->count++;
    sb_metric_add(w, SB_M_WEBHOOK_QUEUED, 1);
    if (h->count >= cfg.batch) {
        send_batch(h);
    } else if (!h->batch_armed) {
        h->batch_armed = true;
        sb_worker_timer_set(w, &h->batch_timer, BATCH_DELAY_MS);
    }
}

/* ---- the connection -------------------------------------------------------------------------- */

static struct hook *hook_of(struct sb_conn *c)
{
    return &hooks[sb_worker_id(sb_conn_worker(c))];
}

static void hook_open(struct sb_conn *c)
{
}

static ssize_t hook_data(struct sb_conn *c, uint8_t *data, size_t len)
{
    struct hook *h = hook_of(c);
    if (c != h->conn || !h->awaiting)
        return -EPROTO; /* bytes nobody asked for */
    h->resp_bytes = true;
    ssize_t n = sb_httpresp_feed(&h->resp, (const char *)data, len);
    if (n < 0 || !sb_httpresp_done(&h->resp))
        return n; /* an error closes the connection: on_close counts the failure */
    sb_conn_set_timer(c, 0);
    h->awaiting = false;
    /* Bytes past the response were never asked for: that connection cannot be trusted. */
    if (!h->resp.keep_alive || (size_t)n < len || is_stopping(h)) {
        h->conn = NULL;
        sb_conn_close(c, 0);
    }
    post_answered(h, h->resp.status);
    return (ssize_t)len;
}

static void hook_timer(struct sb_conn *c)
{
    sb_conn_close(c, -ETIMEDOUT);
}

static void hook_close(struct sb_conn *c, int err)
{
    struct hook *h = hook_of(c);
    if (c != h->conn)
        return; /* one we had let go already */
    h->conn = NULL;
    if (!h->awaiting)
        return; /* an idle kept-alive connection the receiver closed */
    h->awaiting = false;
    if (err == 0 && sb_httpresp_eof(&h->resp) == 0) {
        post_answered(h, h->resp.status); /* a body that ends with the connection */
        return;
    }
    /* The receiver closed an idle kept-alive connection just as we reused it: not a failure of
     * the receiver; try once more at once on a fresh connection. */
    if (h->reused && !h->resp_bytes && (err == 0 || err == -ECONNRESET || err == -EPIPE)) {
        send_batch(h);
        return;
    }
    post_failed(h, err ? err : -EPIPE, 0);
}

static void hook_shutdown(struct sb_conn *c)
{
    struct hook *h = hook_of(c);
    h->stopping = true;
    if (!h->awaiting || c != h->conn) {
        if (c == h->conn)
            h->conn = NULL;
        sb_conn_close(c, 0);
    }
}

static void hook_handoff(struct sb_conn *c)
{
    sb_conn_close(c, -EINVAL); /* never handed off */
}

static const struct sb_conn_ops hook_ops = {
    .on_open = hook_open,
    .on_data = hook_data,
    .on_timer = hook_timer,
    .on_close = hook_close,
    .on_shutdown = hook_shutdown,
    .on_handoff = hook_handoff,
};

/* ---- lifecycle ------------------------------------------------------------------------------- */

int sb_webhook_init(struct sb_engine *e, const struct sb_webhook_config *c)
{
    if (!c->url || !*c->url)
        return 0;
    cfg = *c;
    if (cfg.batch < 1 || cfg.queue < 1 || cfg.timeout_ms < 1)
        return -EINVAL;
    char host[256], port[6];
    const char *why;
    if (parse_url(c->url, host, sizeof(host), port, host_hdr, sizeof(host_hdr), path, sizeof(path),
                  &why) < 0) {
        sb_log(SB_LOG_ERROR, 0, "webhook_url \"%s\" %s", c->url, why);
        return -EINVAL;
    }
    int r = resolve(host, port);
    if (r < 0)
        return r;
    snprintf(url, sizeof(url), "%s", c->url);
    secret_len = c->secret ? strlen(c->secret) : 0;
    secret = secret_len ? strdup(c->secret) : NULL;
    nhooks = sb_engine_workers(e);
    hooks = calloc(nhooks, sizeof(*hooks));
    if (!hooks || (secret_len && !secret)) {
        sb_webhook_free();
        return -ENOMEM;
    }
    for (unsigned i = 0; i < nhooks; i++) {
        struct hook *h = &hooks[i];
        h->q = calloc(cfg.queue, sizeof(*h->q));
        if (!h->q) {
            sb_webhook_free();
            return -ENOMEM;
        }
        h->rng = 0x9e3779b97f4a7c15ull * (i + 1) ^ (uint64_t)time(NULL);
        h->batch_timer.cb = batch_due;
        h->retry_timer.cb = retry_due;
    }
    r = sb_engine_add_client(e, &hook_ops, &client);
    if (r < 0) {
        sb_webhook_free();
        return r;
    }
    atomic_store(&stop_requested, false);
    char a[80];
    sb_log(SB_LOG_INFO, 0,
           "webhook: notices for offline users go to %s (%s) in batches of up to %u, queue %u "
           "per worker, bodies %s, %s",
           url, addr_text(a, sizeof(a)), cfg.batch, cfg.queue, cfg.body ? "on" : "off",
           secret_len ? "signed" : "unsigned");
    return 0;
}

void sb_webhook_stop(void)
{
    atomic_store(&stop_requested, true);
}

void sb_webhook_free(void)
{
    uint64_t unsent = 0;
    for (unsigned i = 0; hooks && i < nhooks; i++) {
        struct hook *h = &hooks[i];
        unsent += h->count + h->req_notices;
        for (uint32_t k = 0; h->q && k < h->count; k++)
            free(h->q[(h->head + k) % cfg.queue]);
        free(h->q);
        free(h->req);
    }
    if (unsent)
        sb_log(SB_LOG_INFO, 0, "webhook: %llu notices were not sent before shutdown",
               (unsigned long long)unsent);
    free(hooks);
    hooks = NULL;
    nhooks = 0;
    free(secret);
    secret = NULL;
    secret_len = 0;
}
