/* Unit tests for proto/httpresp: the bounded HTTP/1.1 response reader. */
#include "proto/httpresp.h"

#include <errno.h>
#include <stdlib.h>

#include "check.h"

/*
 * Feeds s as the engine would: `step` new bytes at a time, the unconsumed rest presented again
 * with them. Returns the bytes consumed in total, or the first error. Each piece is a heap
 * block of exactly its size, so ASan flags a read past the end.
 */
static ssize_t feed_steps(struct sb_httpresp *r, const char *s, size_t len, size_t step)
{
    size_t consumed = 0, have = 0;
    while (have < len && !sb_httpresp_done(r)) {
        have = have + step < len ? have + step : len;
        size_t n = have - consumed;
        char *copy = malloc(n ? n : 1);
        memcpy(copy, s + consumed, n);
        ssize_t rc = sb_httpresp_feed(r, copy, n);
        free(copy);
        if (rc < 0)
            return rc;
        CHECK((size_t)rc <= n);
        consumed += (size_t)rc;
    }
    return (ssize_t)consumed;
}

/* Reads s whole and then in every piece size up to 9 and a few larger: all must agree. */
static ssize_t read_all(struct sb_httpresp *out, const char *s)
{
    size_t len = strlen(s);
    struct sb_httpresp r = {0};
    ssize_t whole = feed_steps(&r, s, len, len ? len : 1);
    static const size_t steps[] = {1, 2, 3, 5, 7, 9, 64, 1000};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct sb_httpresp q = {0};
        ssize_t rc = feed_steps(&q, s, len, steps[i]);
        CHECK_INT(rc, whole);
        CHECK_INT(q.state, r.state);
        CHECK_INT(q.status, r.status);
        CHECK_INT(q.keep_alive, r.keep_alive);
        CHECK_INT(q.body_len, r.body_len);
    }
    *out = r;
    return whole;
}

static void test_content_length(void)
{
    struct sb_httpresp r;
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
    CHECK_INT(read_all(&r, s), strlen(s));
    CHECK(sb_httpresp_done(&r));
    CHECK_INT(r.status, 200);
    CHECK_INT(r.minor_version, 1);
    CHECK(r.keep_alive);
    CHECK_INT(r.body_len, 5);

    /* The reader stops at the end of the response: a second one follows untouched. */
    s = "HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 500 x\r\n\r\n";
    CHECK_INT(read_all(&r, s), strlen(s) - strlen("HTTP/1.1 500 x\r\n\r\n"));
    CHECK_INT(r.status, 202);

    s = "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n";
    CHECK_INT(read_all(&r, s), strlen(s));
    CHECK(sb_httpresp_done(&r));
    CHECK_INT(r.body_len, 0);

    s = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    CHECK_INT(read_all(&r, s), strlen(s));
    CHECK(sb_httpresp_done(&r));

    /* Repeated Content-Length: the same value is harmless, another one is not. */
    s = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
    CHECK_INT(read_all(&r, s), strlen(s));
    CHECK_INT(read_all(&r, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx"),
              -EBADMSG);
    CHECK_INT(read_all(&r, "HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx"), -EBADMSG);
    CHECK_INT(read_all(&r, "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx"), -EBADMSG);
    CHECK_INT(read_all(&r, "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n"), -EBADMSG);
    CHECK_INT(read_all(&r, "HTTP/1.1 200 OK\r\nContent-Length: 1048577\r\n\r\n"), -EMSGSIZE);
    CHECK_INT(read_all(&r, "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"),
              -EMSGSIZE);
}

static void test_chunked(void)
{
    struct sb_httpresp r;
    const char *s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "5\r\nhello\r\n1A;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
    CHECK_INT(read_all(&r, s), strlen(s));
    CHECK(sb_httpresp_done(&r));
    CHECK_INT(r.body_len, 31);
    CHECK(r.keep_alive);

    s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n0\r\nX-Trailer: 1\r\n"
        "Other: two words \r\n\r\n";
    CHECK_INT(read_all(&r, s), strlen(s));
    CHECK(sb_httpresp_done(&r));
    CHECK_INT(r.trailers, 2);

    static const char *const bad[] = {
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_INT(read_all(&r, bad[i]), -EBADMSG);
        if (r.state == SB_HTTPRESP_DONE)
            fprintf(stderr, "case %zu\n", i);
    }
    /* Chunks add up against the body limit; a huge size is refused before any data. */
    CHECK_INT(read_all(&r, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "fffffffffffffffffffff\r\n"),
              -EMSGSIZE);
    s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000000000000000001\r\n"
        "a\r\n0\r\n\r\n";
    CHECK_INT(read_all(&r, s), strlen(s));
    {
        struct sb_httpresp q = {0};
        const char *h = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n80000\r\n";
        CHECK_INT(sb_httpresp_feed(&q, h, strlen(h)), strlen(h));
        static char chunk[0x80000];
        CHECK_INT(sb_httpresp_feed(&q, chunk, sizeof(chunk)), sizeof(chunk));
        CHECK_INT(sb_httpresp_feed(&q, "\r\n80001\r\n", 9), -EMSGSIZE);
    }
    /* A chunk-size line without its end is refused once it passes the line limit. */
    char line[2048];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;");
    memset(line + n, 'a', sizeof(line) - 1 - (size_t)n);
    line[sizeof(line) - 1] = '\0';
    CHECK_INT(read_all(&r, line), -EMSGSIZE);
}

static void test_until_close(void)
{
    struct sb_httpresp r;
    const char *s = "HTTP/1.0 200 OK\r\nServer: BaseHTTP/0.6\r\n\r\nsome body";
    CHECK_INT(read_all(&r, s), strlen(s));
    CHECK_INT(r.state, SB_HTTPRESP_UNTIL_CLOSE);
    CHECK(!r.keep_alive);
    CHECK_INT(r.body_len, 9);
    CHECK_INT(sb_httpresp_eof(&r), 0);
    CHECK(sb_httpresp_done(&r));

    struct sb_httpresp cut = {0};
    s = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    CHECK_INT(sb_httpresp_feed(&cut, s, strlen(s)), strlen(s));
    CHECK_INT(sb_httpresp_eof(&cut), -EPIPE);
    struct sb_httpresp none = {0};
    CHECK_INT(sb_httpresp_eof(&none), -EPIPE);
}

static void test_connection(void)
{
    struct sb_httpresp r;
    read_all(&r, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    CHECK(!r.keep_alive);
    read_all(&r, "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    CHECK(!r.keep_alive);
    CHECK_INT(r.minor_version, 0);
    read_all(&r, "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n");
    CHECK(r.keep_alive);
    read_all(&r, "HTTP/1.1 200 OK\r\nConnection: foo, close \r\nContent-Length: 0\r\n\r\n");
    CHECK(!r.keep_alive);
}

static void test_status_line(void)
{
    struct sb_httpresp r;
    CHECK_INT(read_all(&r, "HTTP/1.1 503 Service Unavailable\r\n\r\n"), 36);
    CHECK_INT(r.status, 503);
    CHECK_INT(read_all(&r, "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n"), 35);
    CHECK_INT(r.status, 404);
    CHECK_INT(read_all(&r, "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n"), 36);
    CHECK_INT(read_all(&r, "HTTP/1.1 200 caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n"), 41);

    static const char *const bad[] = {
        "http/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\n\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 600 OK\r\n\r\n",
        "HTTP/1.1 099 OK\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n",
        "HTTP/1.1 200OK\r\n\r\n",
        "HTTP/x.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 O\x01K\r\n\r\n",
        "HTTP/1.1 200 OK\r\r\n\r\n",
        "SSH-2.0-OpenSSH\r\n",
        "HTTP/1.1 101 Switching\r\n\r\n",
        "HTTP/1.1 200 OK\r\nName : v\r\n\r\n",
        "HTTP/1.1 200 OK\r\n folded\r\n\r\n",
        "HTTP/1.1 200 OK\r\nNo-colon\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA: b\x7f\r\n\r\n",
        "HTTP/1.1 200 OK\r\n: empty\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA: b\nB: c\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ssize_t rc = read_all(&r, bad[i]);
        if (rc != -EBADMSG)
            fprintf(stderr, "bad status case %zu: %zd\n", i, rc);
        CHECK_INT(rc, -EBADMSG);
    }
    CHECK_INT(read_all(&r, "HTTP/2.0 200 OK\r\n\r\n"), -EPROTONOSUPPORT);
    CHECK_INT(read_all(&r, "HTTP/1.2 200 OK\r\n\r\n"), -EPROTONOSUPPORT);
    /* Early refusal: a peer that is not HTTP is known from its first bytes. */
    struct sb_httpresp q = {0};
    CHECK_INT(sb_httpresp_feed(&q, "X", 1), -EBADMSG);
    struct sb_httpresp p = {0};
    CHECK_INT(sb_httpresp_feed(&p, "HTT", 3), 0);
}

static void test_interim(void)
{
    struct sb_httpresp r;
    const char *s = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
    CHECK_INT(read_all(&r, s), strlen(s));
    CHECK_INT(r.status, 200);
    CHECK_INT(r.interim, 2);
    char many[512] = "";
    for (int i = 0; i < 9; i++)
        strcat(many, "HTTP/1.1 100 Continue\r\n\r\n");
    CHECK_INT(read_all(&r, many), -EMSGSIZE);
}

static void test_limits(void)
{
    struct sb_httpresp r;
    /* A head one byte under, at and over the limit. */
    static char head[SB_HTTPRESP_MAX_HEAD + 64];
    for (int delta = -1; delta <= 1; delta++) {
        size_t total = SB_HTTPRESP_MAX_HEAD + (size_t)delta;
        const char *start = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: ";
        size_t n = strlen(start);
        memcpy(head, start, n);
        memset(head + n, 'a', total - n - 4);
        memcpy(head + total - 4, "\r\n\r\n", 5);
        ssize_t rc = read_all(&r, head);
        if (delta <= 0)
            CHECK_INT(rc, total);
        else
            CHECK_INT(rc, -EMSGSIZE);
    }
    /* Without an end of head, waiting stops at the limit. */
    memset(head, 'a', sizeof(head) - 1);
    memcpy(head, "HTTP/1.1 200 OK\r\nX: ", 20);
    head[sizeof(head) - 1] = '\0';
    CHECK_INT(read_all(&r, head), -EMSGSIZE);
    char fields[4096] = "HTTP/1.1 200 OK\r\n";
    for (int i = 0; i <= SB_HTTPRESP_MAX_HEADERS; i++)
        strcat(fields, "A: b\r\n");
    strcat(fields, "\r\n");
    CHECK_INT(read_all(&r, fields), -EMSGSIZE);
    fields[strlen(fields) - 8] = '\0';
    strcat(fields, "\r\n");
    CHECK_INT(read_all(&r, fields), strlen(fields));
    /* A body until close counts against the body limit too. */
    struct sb_httpresp q = {0};
    const char *h = "HTTP/1.0 200 OK\r\n\r\n";
    CHECK_INT(sb_httpresp_feed(&q, h, strlen(h)), strlen(h));
    static char big[SB_HTTPRESP_MAX_BODY + 1];
    CHECK_INT(sb_httpresp_feed(&q, big, sizeof(big) - 1), sizeof(big) - 1);
    CHECK_INT(sb_httpresp_feed(&q, big, 1), -EMSGSIZE);
}

static void test_zero_state(void)
{
    struct sb_httpresp r = {0};
    CHECK_INT(r.state, SB_HTTPRESP_HEAD);
    CHECK_INT(sb_httpresp_feed(&r, "", 0), 0);
    CHECK(!sb_httpresp_done(&r));
}

int main(void)
{
    test_content_length();
    test_chunked();
    test_until_close();
    test_connection();
    test_status_line();
    test_interim();
    test_limits();
    test_zero_state();
    return check_done();
}
