/*
 * libFuzzer driver for proto/http: parses the input under the default and under tiny limits, and
 * on success checks that every result stays inside the input and within the limits.
 */
#include "proto/http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed: %s (line %d)\n", #cond, __LINE__);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void require_inside(struct sb_slice s, const char *buf, size_t len)
{
    if (s.len == 0)
        return;
    REQUIRE(s.base >= buf);
    REQUIRE(s.len <= len);
    REQUIRE((size_t)(s.base - buf) <= len - s.len);
}

static bool is_known_error(ssize_t rc)
{
    return rc == -EAGAIN || rc == -EBADMSG || rc == -ENAMETOOLONG || rc == -EMSGSIZE ||
           rc == -EPROTONOSUPPORT;
}

static void exercise_helpers(const struct sb_http_request *req)
{
    char out[64];
    static const char *const names[] = {"a", "token", "q", ""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        ssize_t n = sb_http_query_param(req->query, names[i], out, sizeof out);
        REQUIRE(n == -ENOENT || n == -EBADMSG || n == -ENOSPC || (n >= 0 && n < 64));
        if (n >= 0) {
            REQUIRE(out[n] == '\0');
            REQUIRE((size_t)n <= req->query.len);
        }
        n = sb_http_query_param(req->query, names[i], out, 1);
        REQUIRE(n == -ENOENT || n == -EBADMSG || n == -ENOSPC || n == 0);
    }
    const struct sb_http_header *h = sb_http_find_header(req, "connection");
    if (h) {
        REQUIRE(h >= req->headers && h < req->headers + req->nheaders);
        bool has_close = sb_http_has_token(h->value, "close");
        /* The first Connection field alone may not decide it, but a close there always does. */
        if (has_close)
            REQUIRE(!req->keep_alive);
        (void)sb_http_has_token(h->value, "upgrade");
    }
    for (size_t i = 0; i < req->nheaders; i++) {
        (void)sb_http_has_token(req->headers[i].value, "chunked");
        char name[64];
        size_t n =
            req->headers[i].name.len < sizeof name - 1 ? req->headers[i].name.len : sizeof name - 1;
        memcpy(name, req->headers[i].name.base, n);
        name[n] = '\0';
        const struct sb_http_header *f = sb_http_find_header(req, name);
        REQUIRE(f != NULL || n < req->headers[i].name.len);
        if (f && n == req->headers[i].name.len)
            REQUIRE(f <= &req->headers[i]);
    }
    REQUIRE(sb_http_reason(200)[0] != '\0');
}

static void check_request(const char *buf, size_t size, const struct sb_http_limits *lim,
                          const struct sb_http_request *req, ssize_t rc)
{
    size_t max_headers =
        lim->max_headers < SB_HTTP_MAX_HEADERS ? lim->max_headers : SB_HTTP_MAX_HEADERS;
    REQUIRE((size_t)rc == req->header_len);
    REQUIRE(req->header_len <= size);
    REQUIRE(req->header_len <= lim->max_header_bytes);
    REQUIRE(req->header_len >= 4);
    REQUIRE(memcmp(buf + req->header_len - 4, "\r\n\r\n", 4) == 0);
    REQUIRE(req->nheaders <= max_headers);
    REQUIRE(req->minor_version == 0 || req->minor_version == 1);
    REQUIRE(req->method.len > 0 && req->target.len > 0 && req->path.len > 0);
    REQUIRE(req->method.base == buf);
    REQUIRE(req->target.len <= lim->max_request_line);
    REQUIRE(!(req->has_content_length && req->is_chunked));
    require_inside(req->method, buf, req->header_len);
    require_inside(req->target, buf, req->header_len);
    require_inside(req->path, buf, req->header_len);
    require_inside(req->query, buf, req->header_len);
    REQUIRE(req->path.base == req->target.base);
    REQUIRE(req->path.len + req->query.len <= req->target.len);
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct sb_http_header *h = &req->headers[i];
        REQUIRE(h->name.len > 0);
        require_inside(h->name, buf, req->header_len);
        require_inside(h->value, buf, req->header_len);
        REQUIRE(memchr(h->value.base, '\r', h->value.len) == NULL);
        REQUIRE(memchr(h->value.base, '\n', h->value.len) == NULL);
    }
    exercise_helpers(req);
}

/* Parsing is a pure function of the bytes: a longer buffer may only complete what was pending. */
static void check_prefix_consistency(const char *buf, size_t size, const struct sb_http_limits *lim,
                                     ssize_t full_rc)
{
    struct sb_http_request req;
    (void)size;
    if (full_rc <= 0)
        return;
    REQUIRE(sb_http_parse_request(buf, (size_t)full_rc, lim, &req) == full_rc);
    REQUIRE(sb_http_parse_request(buf, (size_t)full_rc - 1, lim, &req) == -EAGAIN);
    REQUIRE(sb_http_parse_request(buf, (size_t)full_rc / 2, lim, &req) == -EAGAIN);
}

/* Parses as a server would: one head, skip its Content-Length body, repeat on what is left. */
static void run(const char *buf, size_t size, const struct sb_http_limits *lim)
{
    const struct sb_http_limits *eff = lim ? lim : &sb_http_default_limits;
    for (int i = 0; i < 8; i++) {
        struct sb_http_request req;
        ssize_t rc = sb_http_parse_request(buf, size, lim, &req);
        check_prefix_consistency(buf, size, lim, rc);
        if (rc <= 0) {
            REQUIRE(is_known_error(rc));
            return;
        }
        check_request(buf, size, eff, &req, rc);
        size_t left = size - (size_t)rc;
        if (req.is_chunked || req.content_length > left)
            return;
        buf += (size_t)rc + req.content_length;
        size = left - req.content_length;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy of exactly size bytes, so ASan catches any read past the end. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);

    run(buf, size, NULL);
    static const struct sb_http_limits tiny = {24, 64, 3};
    run(buf, size, &tiny);
    static const struct sb_http_limits zero_headers = {4096, 4096, 0};
    run(buf, size, &zero_headers);
    free(buf);
    return 0;
}
