/*
 * TLS under lg_proto_ws or lg_proto_bin (see lg_tls.h). Each connection has an SSL and a BIO of
 * its own: the BIO reads the receive being handled and appends records to the connection's send
 * queue.
 *
 * Sealing: the protocol under it writes plaintext into the collecting send buffer (directly, or
 * through lg_conn_send from a scenario called while a message is handled). Every hook of this
 * layer notes where the buffer ended when the outermost hook began (the mark; everything before
 * it is records already), and on the way out replaces the bytes after the mark with their
 * records. The collecting buffer only changes between iterations, never inside a hook.
 */
#include "loadgen/lg_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

struct lg_tls_conn {
    SSL *ssl;
    struct lg_worker *w; /* during a hook: where BIO writes go */
    struct lg_conn *c;
    const uint8_t *in; /* the receive being read */
    size_t in_len;
    uint32_t mark;  /* bytes of the collecting buffer that are records */
    uint8_t depth;  /* nested hooks */
    bool up;        /* handshake done, WebSocket layer started */
    bool write_err; /* the send queue refused records */
};

static SSL_CTX *client_ctx;
static BIO_METHOD *bio_method;
static struct lg_tls_conn *tls_conns; /* by connection id */
static uint64_t tls_nconns;
static _Atomic bool reported; /* the first handshake failure is printed, once */

static struct lg_buf *collecting(struct lg_conn *c)
{
    return &c->tx[(c->flags & LG_CF_TXB) ? 1 : 0];
}

static struct lg_tls_conn *tls_of(struct lg_conn *c)
{
    return c->id < tls_nconns ? &tls_conns[c->id] : NULL;
}

/* ---- the connection's BIO ------------------------------------------------------------------ */

static int bio_write(BIO *b, const char *data, int len)
{
    struct lg_tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    uint8_t *p = t->c ? lg_conn_tx_reserve(t->w, t->c, (size_t)len) : NULL;
    if (!p) {
        t->write_err = true;
        return -1;
    }
    memcpy(p, data, (size_t)len);
    lg_conn_tx_commit(t->w, t->c, (size_t)len);
    return len;
}

static int bio_read(BIO *b, char *out, int len)
{
    struct lg_tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!t->in_len) {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t n = t->in_len < (size_t)len ? t->in_len : (size_t)len;
    memcpy(out, t->in, n);
    t->in += n;
    t->in_len -= n;
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

/* ---- sealing ------------------------------------------------------------------------------- */

static void enter(struct lg_worker *w, struct lg_conn *c, struct lg_tls_conn *t)
{
    if (t->depth++ == 0) {
        t->mark = collecting(c)->len;
        t->w = w;
        t->c = c;
    }
}

/* Replaces the plaintext after the mark with records. Returns false when that failed. */
static bool seal_tail(struct lg_tls_conn *t)
{
    struct lg_buf *b = collecting(t->c);
    if (b->len <= t->mark || !t->up)
        return true;
    size_t n = b->len - t->mark;
    uint8_t *plain = malloc(n);
    if (!plain)
        return false;
    memcpy(plain, b->data + t->mark, n);
    b->len = t->mark; /* the records take the plaintext's place */
    bool ok = SSL_write(t->ssl, plain, (int)n) == (int)n;
    free(plain);
    t->mark = collecting(t->c)->len;
    return ok && !t->write_err;
}

/* Leaves a hook; the outermost one seals what was queued meanwhile. */
static void leave(struct lg_tls_conn *t)
{
    struct lg_worker *w = t->w;
    struct lg_conn *c = t->c;
    bool ok = seal_tail(t);
    if (--t->depth == 0) {
        t->c = NULL;
        t->in = NULL;
        t->in_len = 0;
    }
    if (!ok) {
        ERR_clear_error();
        if (c->state == LG_CS_HANDSHAKE)
            lg_conn_fail(w, c, LG_C_FAIL_OTHER);
        else if (c->state == LG_CS_OPEN)
            lg_conn_drop(w, c, LG_C_DROPPED, false);
    }
}

/* ---- the protocol hooks -------------------------------------------------------------------- */

/* What runs inside TLS: WebSocket (wss://, also with ws-bin), or binary frames (--proto bin,
 * against the server's binary_tls_listen). */
static const struct lg_proto *inner(const struct lg_worker *w)
{
    return w->cfg->wire == LG_WIRE_BIN ? &lg_proto_bin : &lg_proto_ws;
}

static void handshake_failed(struct lg_worker *w, struct lg_conn *c, struct lg_tls_conn *t)
{
    unsigned long e = ERR_peek_last_error();
    if (!atomic_exchange(&reported, true)) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof(buf));
        fprintf(stderr, "switchboard-loadgen: TLS handshake failed: %s\n",
                e ? buf : "connection closed");
    }
    ERR_clear_error();
    lg_conn_fail(w, c, LG_C_FAIL_HANDSHAKE);
}

/* Sets what the server certificate must name: the target's host, an IP address or a name. */
static int expect_name(SSL *ssl, const char *target)
{
    char host[64];
    const char *colon = strrchr(target, ':');
    size_t n = colon ? (size_t)(colon - target) : strlen(target);
    if (n >= sizeof(host))
        return -EINVAL;
    memcpy(host, target, n);
    host[n] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) == 1)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1 ? 0 : -EINVAL;
    if (SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1)
        return -EINVAL;
    return 0;
}

static void tls_connected(struct lg_worker *w, struct lg_conn *c)
{
    struct lg_tls_conn *t = tls_of(c);
    if (!t) {
        lg_conn_fail(w, c, LG_C_FAIL_OTHER);
        return;
    }
    SSL_free(t->ssl); /* a slot used before */
    memset(t, 0, sizeof(*t));
    t->ssl = SSL_new(client_ctx);
    BIO *b = t->ssl ? BIO_new(bio_method) : NULL;
    if (!b || expect_name(t->ssl, w->cfg->targets[c->id % w->cfg->ntargets].text) < 0) {
        BIO_free(b);
        ERR_clear_error();
        lg_conn_fail(w, c, LG_C_FAIL_OTHER);
        return;
    }
    BIO_set_data(b, t);
    BIO_set_init(b, 1);
    BIO_up_ref(b);
    SSL_set0_rbio(t->ssl, b);
    SSL_set0_wbio(t->ssl, b);
    SSL_set_connect_state(t->ssl);
    enter(w, c, t);
    int r = SSL_do_handshake(t->ssl); /* writes the ClientHello */
    if (r <= 0 && SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ)
        handshake_failed(w, c, t);
    leave(t);
}

static void tls_data(struct lg_worker *w, struct lg_conn *c, const uint8_t *data, size_t len)
{
    struct lg_tls_conn *t = tls_of(c);
    if (!t || !t->ssl)
        return;
    enter(w, c, t);
    t->in = data;
    t->in_len = len;
    if (!t->up) {
        int r = SSL_do_handshake(t->ssl);
        if (r <= 0) {
            if (SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ)
                handshake_failed(w, c, t);
            leave(t);
            return;
        }
        t->up = true;
        t->mark = collecting(c)->len;
        inner(w)->connected(w, c); /* the upgrade request or HELLO, sealed on the way out */
    }
    uint8_t buf[16384];
    while (c->state == LG_CS_HANDSHAKE || c->state == LG_CS_OPEN || c->state == LG_CS_CLOSING) {
        int n = SSL_read(t->ssl, buf, sizeof(buf));
        if (n > 0) {
            inner(w)->data(w, c, buf, (size_t)n);
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_ZERO_RETURN) {
            ERR_clear_error();
            if (c->state == LG_CS_HANDSHAKE)
                lg_conn_fail(w, c, LG_C_FAIL_HANDSHAKE);
            else if (c->state == LG_CS_OPEN)
                lg_conn_drop(w, c, LG_C_PROTO_ERRORS, false);
        }
        break;
    }
    leave(t);
}

static int tls_send(struct lg_worker *w, struct lg_conn *c, uint8_t opcode, const void *payload,
                    size_t len)
{
    struct lg_tls_conn *t = tls_of(c);
    if (!t || !t->up)
        return -ENOBUFS;
    enter(w, c, t);
    int r = inner(w)->send(w, c, opcode, payload, len);
    leave(t);
    return r;
}

static void tls_close(struct lg_worker *w, struct lg_conn *c, uint16_t code)
{
    struct lg_tls_conn *t = tls_of(c);
    if (!t || !t->up)
        return;
    enter(w, c, t);
    inner(w)->close(w, c, code);
    leave(t);
}

static int tls_send_op(struct lg_worker *w, struct lg_conn *c, const struct sb_op *op)
{
    struct lg_tls_conn *t = tls_of(c);
    if (!t || !t->up)
        return -ENOBUFS;
    enter(w, c, t);
    int r = inner(w)->send_op(w, c, op);
    leave(t);
    return r;
}

static const struct lg_proto lg_proto_tls = {
    .name = "wss",
    .connected = tls_connected,
    .data = tls_data,
    .send = tls_send,
    .close = tls_close,
    .send_op = tls_send_op,
};

/* ---- setup --------------------------------------------------------------------------------- */

static void tls_cleanup(void)
{
    for (uint64_t i = 0; i < tls_nconns; i++)
        SSL_free(tls_conns[i].ssl);
    free(tls_conns);
    SSL_CTX_free(client_ctx);
    BIO_meth_free(bio_method);
}

int lg_tls_init(const struct lg_config *cfg)
{
    if (!cfg->tls) {
        if (!cfg->tls_ca[0] && !cfg->tls_insecure)
            return 0;
        fprintf(stderr, "switchboard-loadgen: --ca and --insecure go with --tls\n");
        return -EINVAL;
    }
    client_ctx = SSL_CTX_new(TLS_client_method());
    bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "loadgen");
    tls_conns = calloc(cfg->connections, sizeof(*tls_conns));
    tls_nconns = cfg->connections;
    if (!client_ctx || !bio_method || !tls_conns || !BIO_meth_set_write(bio_method, bio_write) ||
        !BIO_meth_set_read(bio_method, bio_read) || !BIO_meth_set_ctrl(bio_method, bio_ctrl)) {
        fprintf(stderr, "switchboard-loadgen: out of memory for TLS\n");
        return -ENOMEM;
    }
    atexit(tls_cleanup);
    SSL_CTX_set_min_proto_version(client_ctx, TLS1_2_VERSION);
    /* Every connection a full handshake: no session cache, no tickets offered. */
    SSL_CTX_set_session_cache_mode(client_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(client_ctx, SSL_OP_NO_TICKET);
    static const uint8_t alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(client_ctx, alpn, sizeof(alpn));
    if (cfg->tls_insecure) {
        SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
        return 0;
    }
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_PEER, NULL);
    int ok = cfg->tls_ca[0] ? SSL_CTX_load_verify_locations(client_ctx, cfg->tls_ca, NULL)
                            : SSL_CTX_set_default_verify_paths(client_ctx);
    if (ok != 1) {
        char buf[256];
        ERR_error_string_n(ERR_peek_last_error(), buf, sizeof(buf));
        fprintf(stderr, "switchboard-loadgen: --ca %s: %s\n",
                cfg->tls_ca[0] ? cfg->tls_ca : "(system)", buf);
        ERR_clear_error();
        return -EINVAL;
    }
    return 0;
}

const struct lg_proto *lg_tls_proto(const struct lg_config *cfg)
{
    if (cfg->tls)
        return &lg_proto_tls;
    return cfg->wire == LG_WIRE_BIN ? &lg_proto_bin : &lg_proto_ws;
}
