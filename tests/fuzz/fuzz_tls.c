/*
 * libFuzzer target for the TLS transport: core/tls.c is compiled in, and the few connection
 * calls it makes (deliver, write_wire, close) are provided below by a connection that records
 * what happens to it. Byte 0 of the input picks the mode; the rest is the payload:
 *
 *   bit 0 clear: the payload is what a client sends from its first byte (ClientHello parsing,
 *                plaintext detection), in pieces of 1 + (byte 0 >> 2) bytes;
 *   bit 0 set:   an in-memory client (the same library) completes a real handshake first, TLS 1.3
 *                or, with bit 1, TLS 1.2; then with bit 2 the client sends the payload as
 *                application data, which must arrive exactly, else the payload goes in as raw
 *                records. What arrived is sealed back and the client must read it.
 *
 * After the transport reports a failure it must not deliver anything more.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/tls.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static void require(bool ok)
{
    if (!ok)
        abort();
}

/* ---- the connection, as the transport sees it ---------------------------------------------- */

struct sb_worker {
    int unused;
};

struct sb_conn {
    bool closing;
    uint8_t *out; /* wire bytes queued */
    size_t out_len, out_cap;
    uint8_t *got; /* application bytes delivered */
    size_t got_len, got_cap;
};

static struct sb_worker the_worker;
static struct sb_tls *the_tls;
enum sb_log_level sb_log_threshold = SB_LOG_ERROR;

static void append(uint8_t **buf, size_t *len, size_t *cap, const void *p, size_t n)
{
    if (*len + n > *cap) {
        *cap = (*len + n) * 2;
        *buf = realloc(*buf, *cap);
        require(*buf != NULL);
    }
    memcpy(*buf + *len, p, n);
    *len += n;
}

const struct sb_transport *sb_conn_transport(const struct sb_conn *c)
{
    return sb_tls_transport(the_tls);
}

struct sb_worker *sb_conn_worker(const struct sb_conn *c)
{
    return &the_worker;
}

unsigned sb_worker_id(const struct sb_worker *w)
{
    return 0;
}

uint64_t sb_conn_id(const struct sb_conn *c)
{
    return 1;
}

void sb_conn_deliver(struct sb_conn *c, uint8_t *p, size_t len)
{
    require(!c->closing);
    append(&c->got, &c->got_len, &c->got_cap, p, len);
}

int sb_conn_write_wire(struct sb_conn *c, const void *p, size_t len)
{
    append(&c->out, &c->out_len, &c->out_cap, p, len);
    return 0;
}

void sb_conn_close(struct sb_conn *c, int err)
{
    c->closing = true;
}

void sb_conn_close_after_flush(struct sb_conn *c)
{
    c->closing = true;
}

bool sb_conn_is_closing(const struct sb_conn *c)
{
    return c->closing;
}

void sb_log(enum sb_log_level level, int err, const char *fmt, ...)
{
}

/* ---- setup --------------------------------------------------------------------------------- */

/* A throwaway self-signed P-256 certificate for "localhost", made for this target only. */
static const char cert_pem[] = "-----BEGIN CERTIFICATE-----\n"
                               "MIIBkzCCATigAwIBAgIUeqt+QgVr5FcgN8iZdjCP732ChCwwCgYIKoZIzj0EAwIw\n"
                               "FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMjA1MjIwMFoYDzIxMjYxMDI5\n"
                               "MDUyMjAwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO\n"
                               "PQMBBwNCAAQxZDGZYsRx2CpOvk97vYH9HM5Js/BakpgXO+Scf3TIkTV5asxGt0Eu\n"
                               "rLIrJUYXfbqNlCT5IHSXEqGp/Zku5xCBo2YwZDAdBgNVHQ4EFgQUmxO3oTtCPsTT\n"
                               "Wq7+lYsbWOuJ6w8wHwYDVR0jBBgwFoAUmxO3oTtCPsTTWq7+lYsbWOuJ6w8wDAYD\n"
                               "VR0TAQH/BAIwADAUBgNVHREEDTALgglsb2NhbGhvc3QwCgYIKoZIzj0EAwIDSQAw\n"
                               "RgIhAMqKpASzRBqB//OygRijCkz0atMKhYl51pLlmThJE2LBAiEAxlB5qQRgVBAv\n"
                               "CeGLMdKimmB0ptJ73Jlx52Q7QWjzm1c=\n"
                               "-----END CERTIFICATE-----\n";
static const char key_pem[] = "-----BEGIN EC PRIVATE KEY-----\n"
                              "MHcCAQEEILg5c6PiXqltTAv2r//Ol3eGL/xZW5LqSdIGuSDMTGo8oAoGCCqGSM49\n"
                              "AwEHoUQDQgAEMWQxmWLEcdgqTr5Pe72B/RzOSbPwWpKYFzvknH90yJE1eWrMRrdB\n"
                              "LqyyKyVGF326jZQk+SB0lxKhqf2ZLucQgQ==\n"
                              "-----END EC PRIVATE KEY-----\n";

static SSL_CTX *client_ctx[2]; /* [0] TLS 1.3, [1] TLS 1.2 */

static void write_temp(char *path, const char *text)
{
    int fd = mkstemp(path);
    require(fd >= 0);
    require(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char cert[] = "/tmp/sb-fuzz-tls-cert-XXXXXX", key[] = "/tmp/sb-fuzz-tls-key-XXXXXX";
    char err[256];
    write_temp(cert, cert_pem);
    write_temp(key, key_pem);
    struct sb_tls_config cfg = {
        .cert_file = cert, .key_file = key, .min_version = 12, .ticket_rotate_s = 3600};
    if (sb_tls_create(&cfg, 1, &the_tls, err, sizeof(err)) < 0) {
        fprintf(stderr, "fuzz_tls: %s\n", err);
        abort();
    }
    unlink(cert);
    unlink(key);
    for (int i = 0; i < 2; i++) {
        client_ctx[i] = SSL_CTX_new(TLS_client_method());
        require(client_ctx[i] != NULL);
        int v = i ? TLS1_2_VERSION : TLS1_3_VERSION;
        SSL_CTX_set_min_proto_version(client_ctx[i], v);
        SSL_CTX_set_max_proto_version(client_ctx[i], v);
    }
    return 0;
}

/* ---- one input ----------------------------------------------------------------------------- */

/* Feeds bytes to the transport the way a receive would (it may write into them). */
static void feed(struct sb_conn *c, void *state, const uint8_t *p, size_t len)
{
    if (c->closing || !len)
        return;
    uint8_t *copy = malloc(len);
    require(copy != NULL);
    memcpy(copy, p, len);
    size_t before = c->got_len;
    int r = tls_recv(c, state, copy, len);
    if (r < 0)
        c->closing = true;
    require(!((struct tls_conn *)state)->ended || c->got_len == before || c->closing);
    free(copy);
}

/* Moves what the server wrote to the client. */
static void to_client(struct sb_conn *c, BIO *client_in)
{
    if (c->out_len)
        BIO_write(client_in, c->out, (int)c->out_len);
    c->out_len = 0;
}

/* Moves what the client wrote to the server. */
static void to_server(struct sb_conn *c, void *state, BIO *client_out)
{
    uint8_t buf[4096];
    int n;
    while ((n = BIO_read(client_out, buf, sizeof(buf))) > 0)
        feed(c, state, buf, (size_t)n);
}

static void with_client(struct sb_conn *c, void *state, uint8_t mode, const uint8_t *p, size_t len)
{
    SSL *cl = SSL_new(client_ctx[(mode >> 1) & 1]);
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    require(cl && in && out);
    SSL_set_bio(cl, in, out);
    SSL_set_connect_state(cl);
    SSL_set_tlsext_host_name(cl, "localhost");
    for (int i = 0; i < 8 && !c->closing && SSL_do_handshake(cl) != 1; i++) {
        to_server(c, state, out);
        to_client(c, in);
    }
    require(c->closing || SSL_is_init_finished(cl));
    if (!c->closing) {
        if (mode & 4) {
            require(len == 0 || SSL_write(cl, p, (int)len) == (int)len);
            to_server(c, state, out);
            require(c->closing || (c->got_len == len && (len == 0 || memcmp(c->got, p, len) == 0)));
        } else {
            feed(c, state, p, len);
        }
    }
    if (!c->closing && c->got_len) {
        struct iovec iov = {c->got, c->got_len};
        c->out_len = 0;
        require(tls_seal(c, state, &iov, 1) == 0);
        to_client(c, in);
        uint8_t *back = malloc(c->got_len);
        require(back != NULL);
        size_t n = 0;
        int k;
        while (n < c->got_len && (k = SSL_read(cl, back + n, (int)(c->got_len - n))) > 0)
            n += (size_t)k;
        require(n == c->got_len && memcmp(back, c->got, n) == 0);
        free(back);
    }
    SSL_free(cl);
    ERR_clear_error();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct sb_conn c = {0};
    void *state;
    require(tls_open(&c, &state) == 0);
    uint8_t mode = data[0];
    const uint8_t *p = data + 1;
    size_t len = size - 1;
    if (mode & 1) {
        with_client(&c, state, mode, p, len);
    } else {
        size_t piece = 1 + (mode >> 2);
        for (size_t off = 0; off < len; off += piece)
            feed(&c, state, p + off, len - off < piece ? len - off : piece);
    }
    tls_close(&c, state);
    free(c.out);
    free(c.got);
    ERR_clear_error();
    return 0;
}
