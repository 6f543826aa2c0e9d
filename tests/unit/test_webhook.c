/* White-box unit tests for server/webhook: the URL, the notice made from a message, backoff. */
#include "server/webhook.c"

#include "check.h"

struct url_case {
    const char *url;
    int rc;
    const char *host, *port, *hdr, *target;
};

static void test_urls(void)
{
    static const struct url_case cases[] = {
        {"http://127.0.0.1:8080/hook", 0, "127.0.0.1", "8080", "127.0.0.1:8080", "/hook"},
        {"HTTP://example.com", 0, "example.com", "80", "example.com", "/"},
        {"http://h?x=1&y=2", 0, "h", "80", "h", "/?x=1&y=2"},
        {"http://[::1]:9/p/q?r", 0, "::1", "9", "[::1]:9", "/p/q?r"},
        {"http://h:00080/", 0, "h", "80", "h:00080", "/"},
        {"https://h/", -EINVAL, NULL, NULL, NULL, NULL},
        {"ftp://h/", -EINVAL, NULL, NULL, NULL, NULL},
        {"http://", -EINVAL, NULL, NULL, NULL, NULL},
        {"http:///path", -EINVAL, NULL, NULL, NULL, NULL},
        {"http://u:p@h/", -EINVAL, NULL, NULL, NULL, NULL},
        {"http://h:0/", -EINVAL, NULL, NULL, NULL, NULL},
        {"http://h:65536/", -EINVAL, NULL, NULL, NULL, NULL},
        {"http://h:/", -EINVAL, NULL, NULL, NULL, NULL},
        {"http://h:8x/", -EINVAL, NULL, NULL, NULL, NULL},
        {"http://h/a b", -EINVAL, NULL, NULL, NULL, NULL},
        {"http://h/a#frag", -EINVAL, NULL, NULL, NULL, NULL},
        {"http://h/\x7f", -EINVAL, NULL, NULL, NULL, NULL},
        {"http://[::1/", -EINVAL, NULL, NULL, NULL, NULL},
        {"http://[::1]x/", -EINVAL, NULL, NULL, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct url_case *c = &cases[i];
        char host[256], port[6], hdr[300], target[URL_MAX + 1];
        const char *why = NULL;
        int rc = parse_url(c->url, host, sizeof(host), port, hdr, sizeof(hdr), target,
                           sizeof(target), &why);
        if (rc != c->rc)
            fprintf(stderr, "url %s\n", c->url);
        CHECK_INT(rc, c->rc);
        if (rc == 0 && c->rc == 0) {
            CHECK_STR(host, c->host);
            CHECK_STR(port, c->port);
            CHECK_STR(hdr, c->hdr);
            CHECK_STR(target, c->target);
        } else {
            CHECK(why != NULL);
        }
    }
    char big[URL_MAX + 16] = "http://h/";
    memset(big + 9, 'a', sizeof(big) - 10);
    big[sizeof(big) - 1] = '\0';
    char host[256], port[6], hdr[300], target[URL_MAX + 1];
    const char *why;
    CHECK_INT(
        parse_url(big, host, sizeof(host), port, hdr, sizeof(hdr), target, sizeof(target), &why),
        -EINVAL);
}

#define MSG                                                                                        \
    "{\"type\":\"message\",\"conv\":\"dm:alice:bob\",\"seq\":3,\"msg_id\":\"4242\",\"from\":"      \
    "\"alice\",\"device\":\"d1\",\"ts\":1700000000000,\"body\":\"hi \\\"bob\\\" \\u00e9\"}"

/* The notice for MSG as a NUL-terminated string (static), or NULL with *err. */
static const char *notice_for(const char *user, const char *msg, int *err)
{
    static char out[1024];
    struct notice *n = make_notice(user, strlen(user), msg, strlen(msg), err);
    if (!n)
        return NULL;
    memcpy(out, n->json, n->len);
    out[n->len] = '\0';
    free(n);
    return out;
}

static void test_notices(void)
{
    int err;
    cfg.body = false;
    CHECK_STR(notice_for("bob", MSG, &err),
              "{\"user\":\"bob\",\"conv\":\"dm:alice:bob\",\"seq\":3,\"msg_id\":\"4242\","
              "\"from\":\"alice\",\"ts\":1700000000000}");
    /* The sender's own message makes no notice, and that is not an error. */
    err = 1;
    CHECK(notice_for("alice", MSG, &err) == NULL);
    CHECK_INT(err, 0);

    cfg.body = true;
    cfg.body_max = 4096;
    CHECK_STR(notice_for("bob", MSG, &err),
              "{\"user\":\"bob\",\"conv\":\"dm:alice:bob\",\"seq\":3,\"msg_id\":\"4242\","
              "\"from\":\"alice\",\"ts\":1700000000000,\"body\":\"hi \\\"bob\\\" \\u00e9\"}");
    /* The body's JSON text is 19 bytes: one under that leaves it out. */
    cfg.body_max = 18;
    const char *n = notice_for("bob", MSG, &err);
    CHECK(n && strstr(n, ",\"body_omitted\":true}") && !strstr(n, "\"body\""));
    cfg.body_max = 19;
    n = notice_for("bob", MSG, &err);
    CHECK(n && strstr(n, "\"body\":") && !strstr(n, "body_omitted"));
    /* A binary body reaches JSON clients as body_b64, and the notice keeps that form. */
    n = notice_for("bob",
                   "{\"type\":\"message\",\"conv\":\"g:00\",\"seq\":1,\"msg_id\":\"1\",\"from\":"
                   "\"x\",\"ts\":1,\"body_b64\":\"AP8QgA==\"}",
                   &err);
    CHECK(n && strstr(n, ",\"body_b64\":\"AP8QgA==\"}"));
    cfg.body = false;

    static const char *const bad[] = {
        "",
        "[]",
        "{\"conv\":\"c\",\"seq\":1,\"msg_id\":\"1\",\"from\":\"x\"}",
        "{\"conv\":1,\"seq\":1,\"msg_id\":\"1\",\"from\":\"x\",\"ts\":1}",
        "{\"conv\":\"c\",\"seq\":\"1\",\"msg_id\":\"1\",\"from\":\"x\",\"ts\":1}",
        "{\"conv\":\"c\",\"seq\":1,\"msg_id\":\"1\",\"from\":\"x\",\"ts\":1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(notice_for("bob", bad[i], &err) == NULL);
        CHECK_INT(err, -EBADMSG);
    }
}

static void test_backoff(void)
{
    struct hook h = {.rng = 12345};
    for (unsigned a = 1; a <= 40; a++) {
        h.attempts = a;
        uint64_t d = (uint64_t)BACKOFF_BASE_MS << (a - 1 > 19 ? 19 : a - 1);
        if (d > BACKOFF_MAX_MS)
            d = BACKOFF_MAX_MS;
        for (int k = 0; k < 50; k++) {
            uint64_t ms = backoff_ms(&h);
            CHECK(ms >= d / 2 && ms <= d);
        }
    }
}

int main(void)
{
    test_urls();
    test_notices();
    test_backoff();
    return check_done();
}
