/* Unit tests for proto/http: the request-head parser and its helpers. */
#include "proto/http.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"

#define UPGRADE_REQ                                                                                \
    "GET /ws?token=abc%20d&room=1 HTTP/1.1\r\n"                                                    \
    "Host: example.com:8080\r\n"                                                                   \
    "Upgrade: websocket\r\n"                                                                       \
    "Connection: keep-alive, Upgrade\r\n"                                                          \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                                              \
    "Sec-WebSocket-Version: 13\r\n"                                                                \
    "\r\n"

#define POST_REQ                                                                                   \
    "POST /api/v1/publish HTTP/1.1\r\n"                                                            \
    "Host: localhost\r\n"                                                                          \
    "Content-Type: application/json\r\n"                                                           \
    "Content-Length: 13\r\n"                                                                       \
    "\r\n"

static struct sb_http_request req;

static ssize_t parse(const char *s)
{
    return sb_http_parse_request(s, strlen(s), NULL, &req);
}

/* Copies s into a heap block of exactly its size, so ASan flags any byte read past the end. */
static ssize_t parse_exact(const char *s, size_t len, const struct sb_http_limits *lim)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, s, len);
    ssize_t rc = sb_http_parse_request(copy, len, lim, &req);
    free(copy);
    return rc;
}

static bool slice_is(struct sb_slice s, const char *want)
{
    return sb_slice_eq(s, want);
}

static const char *header_value(const char *name, char *out, size_t cap)
{
    const struct sb_http_header *h = sb_http_find_header(&req, name);
    if (!h || h->value.len >= cap)
        return NULL;
    memcpy(out, h->value.base, h->value.len);
    out[h->value.len] = '\0';
    return out;
}

static void test_upgrade_request(void)
{
    const char *s = UPGRADE_REQ;
    char v[128];
    CHECK_INT(parse(s), strlen(s));
    CHECK_INT(req.header_len, strlen(s));
    CHECK(slice_is(req.method, "GET"));
    CHECK(slice_is(req.target, "/ws?token=abc%20d&room=1"));
    CHECK(slice_is(req.path, "/ws"));
    CHECK(slice_is(req.query, "token=abc%20d&room=1"));
    CHECK_INT(req.minor_version, 1);
    CHECK_INT(req.nheaders, 5);
    CHECK(req.keep_alive);
    CHECK(!req.has_content_length);
    CHECK(!req.is_chunked);
    CHECK(slice_is(req.headers[0].name, "Host"));
    CHECK(slice_is(req.headers[0].value, "example.com:8080"));
    CHECK_STR(header_value("upgrade", v, sizeof v), "websocket");
    CHECK_STR(header_value("SEC-WEBSOCKET-KEY", v, sizeof v), "dGhlIHNhbXBsZSBub25jZQ==");
    CHECK_STR(header_value("Sec-WebSocket-Version", v, sizeof v), "13");
    CHECK(sb_http_find_header(&req, "Sec-WebSocket-Protocol") == NULL);
    CHECK(sb_http_find_header(&req, "Hos") == NULL);
    const struct sb_http_header *conn = sb_http_find_header(&req, "connection");
    CHECK(conn != NULL);
    CHECK(conn && sb_http_has_token(conn->value, "upgrade"));
    CHECK(conn && !sb_http_has_token(conn->value, "close"));
    /* Every slice points into the caller's buffer. */
    CHECK(req.method.base == s);
    CHECK(req.target.base == s + 4);
    CHECK(req.headers[4].value.base + 2 + 2 == s + strlen(s) - 2);

    char tok[16];
    CHECK_INT(sb_http_query_param(req.query, "token", tok, sizeof tok), 5);
    CHECK_STR(tok, "abc d");
}

static void test_target_split(void)
{
    CHECK(parse("GET /a/b?x=1&y=2 HTTP/1.1\r\n\r\n") > 0);
    CHECK(slice_is(req.path, "/a/b"));
    CHECK(slice_is(req.query, "x=1&y=2"));

    CHECK(parse("GET /p? HTTP/1.1\r\n\r\n") > 0);
    CHECK(slice_is(req.path, "/p"));
    CHECK_INT(req.query.len, 0);

    CHECK(parse("GET /p HTTP/1.1\r\n\r\n") > 0);
    CHECK(slice_is(req.path, "/p"));
    CHECK(slice_is(req.target, "/p"));
    CHECK_INT(req.query.len, 0);

    CHECK(parse("GET /p?a?b=/c HTTP/1.1\r\n\r\n") > 0);
    CHECK(slice_is(req.path, "/p"));
    CHECK(slice_is(req.query, "a?b=/c"));

    CHECK(parse("GET / HTTP/1.1\r\n\r\n") > 0);
    CHECK(slice_is(req.path, "/"));

    CHECK(parse("GET /?q HTTP/1.1\r\n\r\n") > 0);
    CHECK(slice_is(req.path, "/"));
    CHECK(slice_is(req.query, "q"));

    CHECK_INT(parse("OPTIONS * HTTP/1.1\r\n\r\n"), 22);
    CHECK(slice_is(req.target, "*"));
    CHECK(slice_is(req.path, "*"));
    CHECK_INT(req.query.len, 0);

    /* Methods are case-sensitive, custom ones are tokens too. */
    CHECK(parse("PURGE /x HTTP/1.1\r\n\r\n") > 0);
    CHECK(slice_is(req.method, "PURGE"));
    CHECK(parse("M-SEARCH! /x HTTP/1.1\r\n\r\n") > 0);
}

static void test_http10_and_keep_alive(void)
{
    CHECK(parse("GET / HTTP/1.0\r\n\r\n") > 0);
    CHECK_INT(req.minor_version, 0);
    CHECK(!req.keep_alive);
    CHECK(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") > 0);
    CHECK(req.keep_alive);
    CHECK(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") > 0);
    CHECK(req.keep_alive);
    CHECK(parse("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n") > 0);
    CHECK(!req.keep_alive);
    CHECK(parse("GET / HTTP/1.0\r\nConnection: keep-alived\r\n\r\n") > 0);
    CHECK(!req.keep_alive);
    CHECK(parse("GET / HTTP/1.0\r\nKeep-Alive: timeout=5\r\n\r\n") > 0);
    CHECK(!req.keep_alive);

    CHECK(parse("GET / HTTP/1.1\r\n\r\n") > 0);
    CHECK_INT(req.minor_version, 1);
    CHECK(req.keep_alive);
    CHECK(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n") > 0);
    CHECK(!req.keep_alive);
    CHECK(parse("GET / HTTP/1.1\r\nConnection: Upgrade,  CLOSE \r\n\r\n") > 0);
    CHECK(!req.keep_alive);
    CHECK(parse("GET / HTTP/1.1\r\nConnection: upgrade\r\nconnection: close\r\n\r\n") > 0);
    CHECK(!req.keep_alive);
    CHECK(parse("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n") > 0);
    CHECK(req.keep_alive);
    CHECK(parse("GET / HTTP/1.1\r\nX-Connection: close\r\n\r\n") > 0);
    CHECK(req.keep_alive);
}

static void test_header_values(void)
{
    char v[64];
    CHECK(parse("GET / HTTP/1.1\r\nX-A: \t a  b \t \r\nX-B:\r\nX-C:   \r\nX-D:v\r\n\r\n") > 0);
    CHECK_INT(req.nheaders, 4);
    CHECK_STR(header_value("x-a", v, sizeof v), "a  b");
    CHECK_STR(header_value("x-b", v, sizeof v), "");
    CHECK_STR(header_value("x-c", v, sizeof v), "");
    CHECK_STR(header_value("x-d", v, sizeof v), "v");
    /* obs-text is allowed in values; only CTLs are not. */
    CHECK(parse("GET / HTTP/1.1\r\nX-Name: caf\xc3\xa9\r\n\r\n") > 0);
    CHECK_STR(header_value("x-name", v, sizeof v), "caf\xc3\xa9");
    /* Duplicate fields are kept in order; find_header returns the first. */
    CHECK(parse("GET / HTTP/1.1\r\nX: 1\r\nx: 2\r\n\r\n") > 0);
    CHECK_STR(header_value("X", v, sizeof v), "1");
    CHECK(slice_is(req.headers[1].value, "2"));
    /* Unusual but valid tchar names. */
    CHECK(parse("GET / HTTP/1.1\r\n!#$%&'*+-.^_`|~09az: ok\r\n\r\n") > 0);
    CHECK(slice_is(req.headers[0].name, "!#$%&'*+-.^_`|~09az"));
}

static void test_content_length(void)
{
    CHECK_INT(parse(POST_REQ), strlen(POST_REQ));
    CHECK(req.has_content_length);
    CHECK_INT(req.content_length, 13);
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n") > 0);
    CHECK(req.has_content_length);
    CHECK_INT(req.content_length, 0);
    CHECK(parse("POST / HTTP/1.1\r\ncontent-length: 42\r\nContent-Length: 42\r\n\r\n") > 0);
    CHECK_INT(req.content_length, 42);
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n") > 0);
    CHECK(req.content_length == UINT64_MAX);
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length:  7 \r\n\r\n") > 0);
    CHECK_INT(req.content_length, 7);

    CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length: 42\r\nContent-Length: 43\r\n\r\n"),
              -EBADMSG);
    CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n"), -EBADMSG);
    CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"), -EBADMSG);
    CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n"), -EBADMSG);
    CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), -EBADMSG);
    CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n"), -EBADMSG);
    CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n"), -EBADMSG);
    CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n"), -EBADMSG);
    CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\n"), -EBADMSG);
}

static void test_transfer_encoding(void)
{
    CHECK(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") > 0);
    CHECK(req.is_chunked);
    CHECK(!req.has_content_length);
    CHECK(parse("POST / HTTP/1.1\r\ntransfer-encoding:  Chunked \r\n\r\n") > 0);
    CHECK(req.is_chunked);

    CHECK_INT(parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), -EBADMSG);
    CHECK_INT(parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), -EBADMSG);
    CHECK_INT(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), -EBADMSG);
    CHECK_INT(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"),
              -EBADMSG);
    CHECK_INT(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
              -EBADMSG);
    CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
              -EBADMSG);
    CHECK_INT(parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), -EBADMSG);
}

static void test_bad_request_line(void)
{
    static const char *const bad[] = {
        " GET / HTTP/1.1\r\n\r\n",
        "\r\nGET / HTTP/1.1\r\n\r\n",
        "GE(T / HTTP/1.1\r\n\r\n",
        "GET\t/ HTTP/1.1\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n",
        "GET /  HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1 \r\n\r\n",
        "GET /\r\n\r\n",
        "GET / \r\n\r\n",
        "GET\r\n\r\n",
        "GET http://example.com/ HTTP/1.1\r\n\r\n",
        "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",
        "options * HTTP/1.1\r\n\r\n",
        "OPTIONS *x HTTP/1.1\r\n\r\n",
        "GET a/b HTTP/1.1\r\n\r\n",
        "GET /a\x01z HTTP/1.1\r\n\r\n",
        "GET /a\x7fz HTTP/1.1\r\n\r\n",
        "GET /a\tz HTTP/1.1\r\n\r\n",
        "GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
        "GET /a#frag HTTP/1.1\r\n\r\n",
        "GET / http/1.1\r\n\r\n",
        "GET / HTTP/1\r\n\r\n",
        "GET / HTTP/1.\r\n\r\n",
        "GET / HTTP/1.10\r\n\r\n",
        "GET / HTTP/11.1\r\n\r\n",
        "GET / HTTP/1.1x\r\n\r\n",
        "GET / HTTX/1.1\r\n\r\n",
        "GET / HTTP/1,1\r\n\r\n",
        "GET / HTTP/a.1\r\n\r\n",
        "GET / HTTP/1.1\n\r\n",
        "GET / HTTP/1.1\r\r\n\r\n",
        "GET / HTTP/1.1\rX\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ssize_t rc = parse_exact(bad[i], strlen(bad[i]), NULL);
        if (rc != -EBADMSG)
            fprintf(stderr, "bad request line #%zu parsed as %zd\n", i, rc);
        CHECK_INT(rc, -EBADMSG);
    }

    CHECK_INT(parse("GET / HTTP/2.0\r\n\r\n"), -EPROTONOSUPPORT);
    CHECK_INT(parse("GET / HTTP/1.2\r\n\r\n"), -EPROTONOSUPPORT);
    CHECK_INT(parse("GET / HTTP/1.9\r\n\r\n"), -EPROTONOSUPPORT);
    CHECK_INT(parse("GET / HTTP/0.9\r\n\r\n"), -EPROTONOSUPPORT);
    CHECK_INT(parse("GET / HTTP/3.0\r\n\r\n"), -EPROTONOSUPPORT);
    CHECK_INT(parse("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), -EBADMSG);

    /* Garbage is rejected as soon as it is seen, without waiting for a line end. */
    CHECK_INT(parse_exact("\x16\x03\x01\x02\x00\x01", 6, NULL), -EBADMSG);
    CHECK_INT(parse("GET /x\x01"), -EBADMSG);
    CHECK_INT(parse("GET /x HTTP/1.1\n"), -EBADMSG);
    CHECK_INT(parse("GET /x XTTP"), -EBADMSG);
}

static void test_bad_headers(void)
{
    static const char *const bad[] = {
        "GET / HTTP/1.1\r\nHost example.com\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : example.com\r\n\r\n",
        "GET / HTTP/1.1\r\nHost\t: example.com\r\n\r\n",
        "GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
        "GET / HTTP/1.1\r\n Host: example.com\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: 1\r\n continued\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: 1\r\n\tcontinued\r\n\r\n",
        "GET / HTTP/1.1\r\nX(A): 1\r\n\r\n",
        "GET / HTTP/1.1\r\nX/A: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nX\x80: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: a\x01z\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: a\x7fz\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: a\rz\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: a\n\r\n",
        "GET / HTTP/1.1\r\nX-A: a\r\n\n",
        "GET / HTTP/1.1\r\nX-A: a\r\n\rX",
        "GET / HTTP/1.1\r\n\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ssize_t rc = parse_exact(bad[i], strlen(bad[i]), NULL);
        if (rc != -EBADMSG)
            fprintf(stderr, "bad header #%zu parsed as %zd\n", i, rc);
        CHECK_INT(rc, -EBADMSG);
    }
    /* A NUL inside a value is a control byte like any other. */
    static const char nul[] = "GET / HTTP/1.1\r\nX-A: a\0z\r\n\r\n";
    CHECK_INT(parse_exact(nul, sizeof nul - 1, NULL), -EBADMSG);
}

static bool rfc_tchar(int c)
{
    return c != 0 && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Every byte value in every position, against the RFC grammar written out independently. */
static void test_char_classes(void)
{
    int wrong = 0;
    for (int c = 0; c < 256; c++) {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "G%cT / HTTP/1.1\r\n\r\n", c);
        wrong += (parse_exact(buf, (size_t)n, NULL) > 0) != rfc_tchar(c);

        /* With ':' the line is still valid: name "X", value "Y: v". */
        n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nX%cY: v\r\n\r\n", c);
        wrong += (parse_exact(buf, (size_t)n, NULL) > 0) != (rfc_tchar(c) || c == ':');

        bool field_char = c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f);
        n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nX: a%cb\r\n\r\n", c);
        wrong += (parse_exact(buf, (size_t)n, NULL) > 0) != field_char;

        bool target_char = c >= 0x21 && c <= 0x7e && c != '#';
        n = snprintf(buf, sizeof buf, "GET /a%cb HTTP/1.1\r\n\r\n", c);
        ssize_t rc = parse_exact(buf, (size_t)n, NULL);
        wrong += (rc > 0) != target_char;
        if (wrong)
            fprintf(stderr, "byte 0x%02x misclassified\n", c);
        CHECK_INT(wrong, 0);
        wrong = 0;
    }
}

/* Every proper prefix of a valid request is incomplete, never an error or a success. */
static void check_all_prefixes(const char *s, size_t len, const struct sb_http_limits *lim)
{
    int wrong = 0;
    for (size_t n = 0; n < len; n++) {
        ssize_t rc = parse_exact(s, n, lim);
        if (rc != -EAGAIN && wrong++ < 3)
            fprintf(stderr, "prefix %zu/%zu returned %zd\n", n, len, rc);
    }
    CHECK_INT(wrong, 0);
    CHECK_INT(parse_exact(s, len, lim), len);
}

static void test_prefixes(void)
{
    check_all_prefixes(UPGRADE_REQ, strlen(UPGRADE_REQ), NULL);
    check_all_prefixes(POST_REQ, strlen(POST_REQ), NULL);
    const char *opt = "OPTIONS * HTTP/1.0\r\nConnection: keep-alive\r\nX-Empty:\r\n\r\n";
    check_all_prefixes(opt, strlen(opt), NULL);
    const char *tiny = "A / HTTP/1.1\r\n\r\n";
    struct sb_http_limits exact = {12, 16, 0};
    check_all_prefixes(tiny, strlen(tiny), &exact);
}

static void test_pipelining(void)
{
    const char buf[] = "POST /publish HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
                       "GET /second?x=2 HTTP/1.1\r\nHost: b\r\n\r\n"
                       "GET /third HTTP/1.0\r\n";
    size_t len = sizeof buf - 1;
    ssize_t n1 = sb_http_parse_request(buf, len, NULL, &req);
    CHECK_INT(n1, 45);
    CHECK(slice_is(req.path, "/publish"));
    CHECK_INT(req.content_length, 5);
    CHECK_MEM(buf + n1, "hello", 5);

    size_t off = (size_t)n1 + (size_t)req.content_length;
    ssize_t n2 = sb_http_parse_request(buf + off, len - off, NULL, &req);
    CHECK_INT(n2, 37);
    CHECK(req.method.base == buf + off);
    CHECK(slice_is(req.path, "/second"));
    CHECK(slice_is(req.query, "x=2"));
    CHECK_INT(req.nheaders, 1);
    CHECK(req.headers[0].value.base + 1 + 2 + 2 == buf + off + (size_t)n2);

    off += (size_t)n2;
    CHECK_INT(sb_http_parse_request(buf + off, len - off, NULL, &req), -EAGAIN);

    /* Two bodiless requests back to back. */
    const char two[] = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
    CHECK_INT(sb_http_parse_request(two, sizeof two - 1, NULL, &req), 19);
    CHECK(slice_is(req.path, "/a"));
    CHECK_INT(sb_http_parse_request(two + 19, sizeof two - 1 - 19, NULL, &req), 19);
    CHECK(slice_is(req.path, "/b"));

    /* Garbage after the head is the caller's business, not the parser's. */
    const char trail[] = "GET / HTTP/1.1\r\n\r\n\x01\x02 junk";
    CHECK_INT(sb_http_parse_request(trail, sizeof trail - 1, NULL, &req), 18);
}

/* Builds "GET /aaa... HTTP/1.1" of exactly line_len bytes (without CRLF) into buf. */
static size_t build_line(char *buf, size_t line_len)
{
    size_t path_len = line_len - strlen("GET  HTTP/1.1");
    memcpy(buf, "GET /", 5);
    memset(buf + 5, 'a', path_len - 1);
    memcpy(buf + 4 + path_len, " HTTP/1.1", 9);
    return line_len;
}

static void test_request_line_limit(void)
{
    struct sb_http_limits lim = {64, 1024, 8};
    char buf[256];

    size_t n = build_line(buf, 64);
    memcpy(buf + n, "\r\n\r\n", 4);
    CHECK_INT(parse_exact(buf, n + 4, &lim), n + 4);
    check_all_prefixes(buf, n + 4, &lim);

    n = build_line(buf, 65);
    memcpy(buf + n, "\r\n\r\n", 4);
    CHECK_INT(parse_exact(buf, n + 4, &lim), -ENAMETOOLONG);
    /* Known as soon as the 65th byte of the line is in hand. */
    CHECK_INT(parse_exact(buf, 64, &lim), -EAGAIN);
    CHECK_INT(parse_exact(buf, 65, &lim), -ENAMETOOLONG);
    CHECK_INT(parse_exact(buf, 65 - 9, &lim), -EAGAIN);

    /* A long line whose end is nowhere in sight. */
    memset(buf, 'A', sizeof buf);
    CHECK_INT(parse_exact(buf, 64, &lim), -EAGAIN);
    CHECK_INT(parse_exact(buf, 65, &lim), -ENAMETOOLONG);
    memcpy(buf, "GET /", 5);
    memset(buf + 5, 'x', sizeof buf - 5);
    CHECK_INT(parse_exact(buf, 64, &lim), -EAGAIN);
    CHECK_INT(parse_exact(buf, sizeof buf, &lim), -ENAMETOOLONG);

    /* Defaults: 8192. */
    static char big[9000];
    n = build_line(big, 8192);
    memcpy(big + n, "\r\n\r\n", 4);
    CHECK_INT(parse_exact(big, n + 4, NULL), n + 4);
    n = build_line(big, 8193);
    memcpy(big + n, "\r\n\r\n", 4);
    CHECK_INT(parse_exact(big, n + 4, NULL), -ENAMETOOLONG);
}

/* Builds a head of exactly head_len bytes: "GET / HTTP/1.1\r\nX: vvv...\r\n\r\n". */
static size_t build_head(char *buf, size_t head_len)
{
    const char *start = "GET / HTTP/1.1\r\nX: ";
    size_t fixed = strlen(start) + 4;
    memcpy(buf, start, strlen(start));
    memset(buf + strlen(start), 'v', head_len - fixed);
    memcpy(buf + head_len - 4, "\r\n\r\n", 4);
    return head_len;
}

static void test_header_bytes_limit(void)
{
    struct sb_http_limits lim = {64, 100, 8};
    char buf[512];

    size_t n = build_head(buf, 100);
    CHECK_INT(parse_exact(buf, n, &lim), 100);
    check_all_prefixes(buf, n, &lim);
    /* The limit is on the head only: a body behind it does not count. */
    memcpy(buf + n, "body", 4);
    CHECK_INT(parse_exact(buf, n + 4, &lim), 100);

    n = build_head(buf, 101);
    CHECK_INT(parse_exact(buf, n, &lim), -EMSGSIZE);
    /* Once 100 bytes are in hand without the blank line, the head cannot fit. */
    CHECK_INT(parse_exact(buf, 99, &lim), -EAGAIN);
    CHECK_INT(parse_exact(buf, 100, &lim), -EMSGSIZE);

    /* A request line within its own limit but past the head limit. */
    struct sb_http_limits small_head = {8192, 40, 8};
    n = build_line(buf, 60);
    CHECK_INT(parse_exact(buf, 39, &small_head), -EAGAIN);
    CHECK_INT(parse_exact(buf, 40, &small_head), -EMSGSIZE);
    CHECK_INT(parse_exact(buf, n, &small_head), -EMSGSIZE);

    /* Defaults: 16384. */
    static char big[17000];
    n = build_head(big, 16384);
    CHECK_INT(parse_exact(big, n, NULL), 16384);
    n = build_head(big, 16385);
    CHECK_INT(parse_exact(big, n, NULL), -EMSGSIZE);
}

/* Builds a request with nheaders "Hn: v" fields. */
static size_t build_headers(char *buf, size_t nheaders, bool terminate)
{
    size_t n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\n");
    for (size_t i = 0; i < nheaders; i++)
        n += (size_t)sprintf(buf + n, "H%zu: v\r\n", i);
    if (terminate)
        n += (size_t)sprintf(buf + n, "\r\n");
    return n;
}

static void test_header_count_limit(void)
{
    struct sb_http_limits lim = {64, 4096, 4};
    char buf[4096];

    size_t n = build_headers(buf, 4, true);
    CHECK_INT(parse_exact(buf, n, &lim), n);
    CHECK_INT(req.nheaders, 4);
    n = build_headers(buf, 5, true);
    CHECK_INT(parse_exact(buf, n, &lim), -EMSGSIZE);
    /* Known as soon as the first byte of the fifth field arrives. */
    n = build_headers(buf, 4, false);
    CHECK_INT(parse_exact(buf, n, &lim), -EAGAIN);
    buf[n] = 'H';
    CHECK_INT(parse_exact(buf, n + 1, &lim), -EMSGSIZE);

    n = build_headers(buf, 0, true);
    struct sb_http_limits none = {64, 4096, 0};
    CHECK_INT(parse_exact(buf, n, &none), n);
    n = build_headers(buf, 1, true);
    CHECK_INT(parse_exact(buf, n, &none), -EMSGSIZE);

    /* Defaults: 64, and a larger max_headers is clamped to the array size. */
    n = build_headers(buf, 64, true);
    CHECK_INT(parse_exact(buf, n, NULL), n);
    CHECK_INT(req.nheaders, 64);
    n = build_headers(buf, 65, true);
    CHECK_INT(parse_exact(buf, n, NULL), -EMSGSIZE);
    struct sb_http_limits huge = {64, 4096, 1000};
    CHECK_INT(parse_exact(buf, n, &huge), -EMSGSIZE);
}

/* Places s so that its last byte is the last readable byte before a PROT_NONE page. */
static void test_guard_page(void)
{
    long page = sysconf(_SC_PAGESIZE);
    char *map =
        mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(map != MAP_FAILED);
    if (map == MAP_FAILED)
        return;
    CHECK_INT(mprotect(map + page, (size_t)page, PROT_NONE), 0);
    char *edge = map + page;

    static const char *const inputs[] = {
        UPGRADE_REQ,
        POST_REQ,
        "GET / HTTP/1.1\r\n\r\n",
        "GET /x?y HTTP/1.0\r\nA: b\r\nC:\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        size_t len = strlen(inputs[i]);
        memcpy(edge - len, inputs[i], len);
        CHECK_INT(sb_http_parse_request(edge - len, len, NULL, &req), len);
        int wrong = 0;
        for (size_t n = 0; n < len; n++) {
            memcpy(edge - n, inputs[i], n);
            wrong += sb_http_parse_request(edge - n, n, NULL, &req) != -EAGAIN;
        }
        CHECK_INT(wrong, 0);
    }

    /* Inputs that stop exactly where a parser might peek one byte further. */
    static const char *const cut[] = {
        "GET",
        "GET ",
        "GET /",
        "GET / ",
        "GET / HTTP/1.",
        "GET / HTTP/1.1",
        "GET / HTTP/1.1\r",
        "GET / HTTP/1.1\r\nX",
        "GET / HTTP/1.1\r\nX:",
        "GET / HTTP/1.1\r\nX: v ",
        "GET / HTTP/1.1\r\nX: v\r",
        "GET / HTTP/1.1\r\nX: v\r\n\r",
    };
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        size_t len = strlen(cut[i]);
        memcpy(edge - len, cut[i], len);
        CHECK_INT(sb_http_parse_request(edge - len, len, NULL, &req), -EAGAIN);
    }
    static const char *const bad[] = {
        "GET / HTTP/1.1\r\nX: v\rX",
        "GET / HTTP/1.1\r\n X",
        "GET /#",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = strlen(bad[i]);
        memcpy(edge - len, bad[i], len);
        CHECK_INT(sb_http_parse_request(edge - len, len, NULL, &req), -EBADMSG);
    }

    /* The helpers also stay inside their slices. */
    memcpy(edge - 5, "a=%4x", 5);
    char out[8];
    CHECK_INT(sb_http_query_param(sb_slice_from(edge - 5, 5), "a", out, sizeof out), -EBADMSG);
    memcpy(edge - 3, "a=%", 3);
    CHECK_INT(sb_http_query_param(sb_slice_from(edge - 3, 3), "a", out, sizeof out), -EBADMSG);
    memcpy(edge - 5, "close", 5);
    CHECK(sb_http_has_token(sb_slice_from(edge - 5, 5), "close"));
    CHECK(!sb_http_has_token(sb_slice_from(edge - 5, 5), "closed"));
    munmap(map, (size_t)page * 2);
}

static bool has_token(const char *value, const char *token)
{
    return sb_http_has_token(sb_slice_from(value, strlen(value)), token);
}

static void test_has_token(void)
{
    CHECK(has_token("Upgrade", "upgrade"));
    CHECK(has_token("keep-alive, Upgrade", "upgrade"));
    CHECK(has_token("keep-alive, Upgrade", "KEEP-ALIVE"));
    CHECK(has_token(" \tclose\t ", "close"));
    CHECK(has_token("a,,close,", "close"));
    CHECK(has_token("a , b ,c", "b"));
    CHECK(!has_token("upgraded", "upgrade"));
    CHECK(!has_token("xupgrade", "upgrade"));
    CHECK(!has_token("up grade", "upgrade"));
    CHECK(!has_token("", "close"));
    CHECK(!has_token(",", "close"));
    CHECK(!has_token("close", ""));
    CHECK(!has_token("a,,b", ""));
    CHECK(!sb_http_has_token(sb_slice_from(NULL, 0), "close"));
    /* Only the slice counts, not what follows it. */
    CHECK(!sb_http_has_token(sb_slice_from("clo", 3), "close"));
    CHECK(sb_http_has_token(sb_slice_from("close, more", 5), "close"));
}

static ssize_t qp(const char *query, const char *name, char *out, size_t cap)
{
    return sb_http_query_param(sb_slice_from(query, strlen(query)), name, out, cap);
}

static void test_query_param(void)
{
    char out[32];
    CHECK_INT(qp("a=1&b=22", "a", out, sizeof out), 1);
    CHECK_STR(out, "1");
    CHECK_INT(qp("a=1&b=22", "b", out, sizeof out), 2);
    CHECK_STR(out, "22");
    CHECK_INT(qp("a=1&b=22", "c", out, sizeof out), -ENOENT);
    CHECK_INT(qp("ab=1", "a", out, sizeof out), -ENOENT);
    CHECK_INT(qp("a=1", "ab", out, sizeof out), -ENOENT);
    CHECK_INT(qp("", "a", out, sizeof out), -ENOENT);
    CHECK_INT(sb_http_query_param(sb_slice_from(NULL, 0), "a", out, sizeof out), -ENOENT);
    CHECK_INT(qp("a=first&a=second", "a", out, sizeof out), 5);
    CHECK_STR(out, "first");
    CHECK_INT(qp("&&x=1&&", "x", out, sizeof out), 1);
    CHECK_STR(out, "1");
    CHECK_INT(qp("a=&b", "a", out, sizeof out), 0);
    CHECK_STR(out, "");
    CHECK_INT(qp("a=&b", "b", out, sizeof out), 0);
    CHECK_STR(out, "");
    CHECK_INT(qp("a=x=y", "a", out, sizeof out), 3);
    CHECK_STR(out, "x=y");
    CHECK_INT(qp("=v", "", out, sizeof out), 1);

    CHECK_INT(qp("q=hello+world%21", "q", out, sizeof out), 12);
    CHECK_STR(out, "hello world!");
    CHECK_INT(qp("q=%2Fa%2fb%25", "q", out, sizeof out), 5);
    CHECK_STR(out, "/a/b%");
    CHECK_INT(qp("q=%2B", "q", out, sizeof out), 1);
    CHECK_STR(out, "+");
    CHECK_INT(qp("q=%e2%82%AC", "q", out, sizeof out), 3);
    CHECK_STR(out, "\xe2\x82\xac");
    CHECK_INT(qp("q=a%00b", "q", out, sizeof out), 3);
    CHECK_MEM(out, "a\0b", 4);
    CHECK_INT(qp("my+key=1&my%5Fkey=2", "my key", out, sizeof out), 1);
    CHECK_INT(qp("my+key=1&my%5Fkey=2", "my_key", out, sizeof out), 1);
    CHECK_STR(out, "2");

    CHECK_INT(qp("q=%", "q", out, sizeof out), -EBADMSG);
    CHECK_INT(qp("q=%4", "q", out, sizeof out), -EBADMSG);
    CHECK_INT(qp("q=%4&r=1", "q", out, sizeof out), -EBADMSG);
    CHECK_INT(qp("q=%zz", "q", out, sizeof out), -EBADMSG);
    CHECK_INT(qp("q=%g0", "q", out, sizeof out), -EBADMSG);
    /* A broken escape elsewhere does not hide a good parameter. */
    CHECK_INT(qp("x=%&q%=1&q=ok", "q", out, sizeof out), 2);
    CHECK_STR(out, "ok");

    CHECK_INT(qp("q=abcd", "q", out, 5), 4);
    CHECK_STR(out, "abcd");
    CHECK_INT(qp("q=abcd", "q", out, 4), -ENOSPC);
    CHECK_INT(qp("q=", "q", out, 1), 0);
    CHECK_INT(qp("q=", "q", NULL, 0), -ENOSPC);
    CHECK_INT(qp("q=ab%zz", "q", out, 2), -EBADMSG);
    CHECK_INT(qp("q=%41%42", "q", out, 3), 2);
    CHECK_STR(out, "AB");
}

static void test_reason(void)
{
    static const struct {
        int status;
        const char *reason;
    } table[] = {
        {100, "Continue"},
        {101, "Switching Protocols"},
        {200, "OK"},
        {201, "Created"},
        {204, "No Content"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {411, "Length Required"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {426, "Upgrade Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {503, "Service Unavailable"},
        {505, "HTTP Version Not Supported"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        CHECK_STR(sb_http_reason(table[i].status), table[i].reason);
    CHECK_STR(sb_http_reason(0), "Unknown");
    CHECK_STR(sb_http_reason(299), "Unknown");
    CHECK_STR(sb_http_reason(-1), "Unknown");
}

static void test_zero_state(void)
{
    struct sb_http_request zero;
    memset(&zero, 0, sizeof zero);
    CHECK(sb_http_find_header(&zero, "host") == NULL);
    char out[4];
    CHECK_INT(sb_http_query_param(zero.query, "a", out, sizeof out), -ENOENT);
    CHECK_INT(sb_http_parse_request(NULL, 0, NULL, &zero), -EAGAIN);
    CHECK_INT(sb_http_default_limits.max_request_line, 8192);
    CHECK_INT(sb_http_default_limits.max_header_bytes, 16384);
    CHECK_INT(sb_http_default_limits.max_headers, 64);
}

int main(void)
{
    test_upgrade_request();
    test_target_split();
    test_http10_and_keep_alive();
    test_header_values();
    test_content_length();
    test_transfer_encoding();
    test_bad_request_line();
    test_bad_headers();
    test_char_classes();
    test_prefixes();
    test_pipelining();
    test_request_line_limit();
    test_header_bytes_limit();
    test_header_count_limit();
    test_guard_page();
    test_has_token();
    test_query_param();
    test_reason();
    test_zero_state();
    return check_done();
}
