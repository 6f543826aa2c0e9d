/*
 * The TLS transport: see tls.h. Connection hooks run on the connection's worker; generations and
 * ticket keys are shared by all workers under one mutex, taken at accept and per ticket only.
 */
#include "core/tls.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "core/log.h"

/* The largest TLS record payload: plaintext is sealed in pieces of this size. */
#define TLS_RECORD 16384

struct tls_site {
    char *host; /* lower case; "*.example.com" matches one label */
    SSL_CTX *ctx;
};

/* Certificates and settings as loaded by one create or reload. */
struct tls_gen {
    atomic_uint refs; /* the sb_tls while current, plus each connection started on it */
    struct sb_tls *t;
    SSL_CTX *ctx; /* the default certificate; connections start here */
    size_t nsites;
    struct tls_site sites[];
};

struct tls_ticket_key {
    uint8_t name[16];
    uint8_t aes[16];
    uint8_t hmac[32];
};

/* What a worker's BIO reads from and writes to during one hook call. */
struct tls_worker {
    BIO *bio;
    struct sb_conn *c; /* writes go to its output queue; NULL outside hooks */
    const uint8_t *in; /* the receive being fed to the library */
    size_t in_len;
    int write_err;             /* -ENOMEM from the output queue */
    int peer_alert;            /* a plaintext alert at the start of this receive, or -1 */
    uint8_t plain[TLS_RECORD]; /* decrypted bytes for the app; plaintext to seal */
};

struct tls_conn {
    SSL *ssl;
    bool fed;   /* bytes have arrived: the first ones tell TLS from plaintext */
    bool ended; /* failed: the library is not called again */
};

struct sb_tls {
    struct sb_transport tp; /* first: hooks find the sb_tls from sb_conn_transport() */
    char *cert_file, *key_file, *sni_file;
    unsigned min_version, ticket_rotate_s;
    unsigned nworkers;
    struct tls_worker *workers;
    BIO_METHOD *bio_method;
    pthread_mutex_t lock; /* gen and the ticket keys */
    struct tls_gen *gen;
    struct tls_ticket_key keys[2]; /* [0] seals new tickets; [1], the one before, still opens */
    bool has_prev_key;
    uint64_t key_born_ms;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The library's reason for the last error, for a log line; clears the error queue. */
static const char *ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r)
        snprintf(buf, len, "%s", r);
    else if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "connection ended during the handshake");
    ERR_clear_error();
    return buf;
}

/* ---- the per-worker BIO -------------------------------------------------------------------- */

static int bio_write(BIO *b, const char *data, int len)
{
    struct tls_worker *tw = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!tw->c || len < 0)
        return -1;
    int r = sb_conn_write_wire(tw->c, data, (size_t)len);
    if (r < 0) {
        tw->write_err = r;
        return -1;
    }
    return len;
}

static int bio_read(BIO *b, char *out, int len)
{
    struct tls_worker *tw = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (!tw->in_len) {
        BIO_set_retry_read(b); /* more will come with the next receive */
        return -1;
    }
    size_t n = tw->in_len < (size_t)len ? tw->in_len : (size_t)len;
    memcpy(out, tw->in, n);
    tw->in += n;
    tw->in_len -= n;
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    /* Writes are queued at once, so a flush has nothing left to do; nothing else applies. */
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

/* Points the worker's BIO at connection c and attaches it to the connection's SSL (which may
 * have come from another worker in a handoff). */
static struct tls_worker *bind_worker(struct sb_tls *t, struct sb_conn *c, SSL *ssl)
{
    unsigned id = sb_worker_id(sb_conn_worker(c));
    assert(id < t->nworkers);
    struct tls_worker *tw = &t->workers[id];
    if (SSL_get_rbio(ssl) != tw->bio) {
        BIO_up_ref(tw->bio);
        BIO_up_ref(tw->bio);
        SSL_set0_rbio(ssl, tw->bio);
        SSL_set0_wbio(ssl, tw->bio);
    }
    tw->c = c;
    tw->write_err = 0;
    return tw;
}

static void unbind_worker(struct tls_worker *tw)
{
    tw->c = NULL;
    tw->in = NULL;
    tw->in_len = 0;
}

/* ---- callbacks of the library -------------------------------------------------------------- */

static int alpn_select(SSL *ssl, const uint8_t **out, uint8_t *out_len, const uint8_t *in,
                       unsigned in_len, void *arg)
{
    /* The client's list is length-prefixed names; HTTP/1.1 is all this port speaks. */
    for (unsigned i = 0; i < in_len;) {
        unsigned n = in[i];
        if (i + 1 + n > in_len)
            break;
        if (n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *out_len = 8;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol (RFC 7301 section 3.2) */
}

static bool host_matches(const char *pattern, const char *host)
{
    if (strncmp(pattern, "*.", 2) == 0) {
        const char *dot = strchr(host, '.');
        return dot && dot != host && strcasecmp(dot + 1, pattern + 2) == 0;
    }
    return strcasecmp(pattern, host) == 0;
}

static int servername(SSL *ssl, int *alert, void *arg)
{
    struct tls_gen *g = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!host)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < g->nsites; i++) {
        if (host_matches(g->sites[i].host, host)) {
            SSL_set_SSL_CTX(ssl, g->sites[i].ctx);
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK; /* an unknown name gets the default certificate */
}

static void ticket_key_new(struct tls_ticket_key *k)
{
    RAND_bytes((uint8_t *)k, sizeof(*k));
}

/* Copies the ticket keys, rotating them first when the current one is old. */
static void ticket_keys(struct sb_tls *t, struct tls_ticket_key keys[2], bool *has_prev)
{
    uint64_t now = mono_ms();
    pthread_mutex_lock(&t->lock);
    if (now - t->key_born_ms >= (uint64_t)t->ticket_rotate_s * 1000) {
        t->keys[1] = t->keys[0];
        t->has_prev_key = true;
        ticket_key_new(&t->keys[0]);
        t->key_born_ms = now;
    }
    memcpy(keys, t->keys, 2 * sizeof(keys[0]));
    *has_prev = t->has_prev_key;
    pthread_mutex_unlock(&t->lock);
}

/* Seals (encrypt = 1) or opens a session ticket: AES-128-CBC with HMAC-SHA256, the scheme both
 * libraries implement behind this callback. Returns as the libraries define (see ssl.h). */
static int ticket_cb(SSL *ssl, uint8_t *name, uint8_t *iv, EVP_CIPHER_CTX *ectx, HMAC_CTX *hctx,
                     int encrypt)
{
    struct tls_gen *g = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    struct tls_ticket_key keys[2];
    bool has_prev;
    ticket_keys(g->t, keys, &has_prev);
    if (encrypt) {
        if (RAND_bytes(iv, 16) != 1)
            return -1;
        memcpy(name, keys[0].name, 16);
        if (!EVP_EncryptInit_ex(ectx, EVP_aes_128_cbc(), NULL, keys[0].aes, iv) ||
            !HMAC_Init_ex(hctx, keys[0].hmac, sizeof(keys[0].hmac), EVP_sha256(), NULL))
            return -1;
        return 1;
    }
    for (int i = 0; i < (has_prev ? 2 : 1); i++) {
        if (memcmp(name, keys[i].name, 16) != 0)
            continue;
        if (!HMAC_Init_ex(hctx, keys[i].hmac, sizeof(keys[i].hmac), EVP_sha256(), NULL) ||
            !EVP_DecryptInit_ex(ectx, EVP_aes_128_cbc(), NULL, keys[i].aes, iv))
            return -1;
        return i == 0 ? 1 : 2; /* 2: sealed with the old key, so issue a fresh ticket */
    }
    return 0; /* unknown or expired key: a full handshake */
}

/* ---- generations --------------------------------------------------------------------------- */

static int file_error(const char *what, const char *path, char *err, size_t errlen)
{
    char reason[160];
    int r = access(path, R_OK) < 0 ? -errno : -EINVAL;
    if (r == -EINVAL)
        ssl_reason(reason, sizeof(reason));
    else
        snprintf(reason, sizeof(reason), "%s", strerror(-r));
    ERR_clear_error();
    snprintf(err, errlen, "%s %s: %s", what, path, reason);
    return r;
}

static SSL_CTX *ctx_new(struct tls_gen *g, const char *cert, const char *key, char *err,
                        size_t errlen, int *res)
{
    struct sb_tls *t = g->t;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "out of memory");
        *res = -ENOMEM;
        return NULL;
    }
    SSL_CTX_set_app_data(ctx, g);
    SSL_CTX_set_min_proto_version(ctx, t->min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    /* OpenSSL frees record buffers between records with this; BoringSSL always does. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    /* Stateless tickets only: a server-side session cache would cost memory per client. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (t->ticket_rotate_s) {
        SSL_CTX_set_tlsext_ticket_key_cb(ctx, ticket_cb);
        /* A ticket opens while its key is current or the one before: up to two periods. */
        SSL_CTX_set_timeout(ctx, 2 * (long)t->ticket_rotate_s);
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        *res = file_error("certificate", cert, err, errlen);
    } else if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 &&
               ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH) {
        *res = file_error("private key", key, err, errlen);
    } else if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "private key %s does not match certificate %s", key, cert);
        *res = -EINVAL;
    } else {
        return ctx;
    }
    SSL_CTX_free(ctx);
    return NULL;
}

static void gen_free(struct tls_gen *g)
{
    SSL_CTX_free(g->ctx);
    for (size_t i = 0; i < g->nsites; i++) {
        free(g->sites[i].host);
        SSL_CTX_free(g->sites[i].ctx);
    }
    free(g);
}

static void gen_unref(struct tls_gen *g)
{
    if (atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1)
        gen_free(g);
}

/* Splits an SNI line into its three fields in place. Returns the field count. */
static int split_fields(char *line, char *f[3])
{
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(line, " \t\r\n", &save); tok;
         tok = strtok_r(NULL, " \t\r\n", &save)) {
        if (n == 3)
            return 4;
        f[n++] = tok;
    }
    return n;
}

static int load_sites(struct tls_gen **gp, char *err, size_t errlen)
{
    struct tls_gen *g = *gp;
    FILE *f = fopen(g->t->sni_file, "r");
    if (!f) {
        int r = -errno;
        snprintf(err, errlen, "tls_sni_file %s: %s", g->t->sni_file, strerror(errno));
        return r;
    }
    char line[4096];
    int r = 0;
    for (unsigned no = 1; r == 0 && fgets(line, sizeof(line), f); no++) {
        char *fields[3];
        char *s = line + strspn(line, " \t");
        if (*s == '#' || *s == '\n' || *s == '\r' || *s == '\0')
            continue;
        int n = split_fields(s, fields);
        if (n != 3 || strlen(fields[0]) > 253) {
            snprintf(err, errlen, "tls_sni_file %s:%u: expected \"<hostname> <cert> <key>\"",
                     g->t->sni_file, no);
            r = -EINVAL;
            break;
        }
        if (g->nsites == SB_TLS_MAX_SITES) {
            snprintf(err, errlen, "tls_sni_file %s: more than %d sites", g->t->sni_file,
                     SB_TLS_MAX_SITES);
            r = -E2BIG;
            break;
        }
        struct tls_gen *bigger = realloc(g, sizeof(*g) + (g->nsites + 1) * sizeof(g->sites[0]));
        if (!bigger) {
            r = -ENOMEM;
            snprintf(err, errlen, "out of memory");
            break;
        }
        g = bigger;
        struct tls_site *site = &g->sites[g->nsites];
        site->host = strdup(fields[0]);
        site->ctx = site->host ? ctx_new(g, fields[1], fields[2], err, errlen, &r) : NULL;
        if (!site->ctx) {
            free(site->host);
            if (r == 0) {
                r = -ENOMEM;
                snprintf(err, errlen, "out of memory");
            }
            break;
        }
        for (char *p = site->host; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        g->nsites++;
    }
    fclose(f);
    /* realloc may have moved the generation the contexts point back to. */
    SSL_CTX_set_app_data(g->ctx, g);
    for (size_t i = 0; i < g->nsites; i++)
        SSL_CTX_set_app_data(g->sites[i].ctx, g);
    *gp = g;
    return r;
}

static int gen_load(struct sb_tls *t, struct tls_gen **out, char *err, size_t errlen)
{
    struct tls_gen *g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    atomic_init(&g->refs, 1);
    g->t = t;
    int r = 0;
    g->ctx = ctx_new(g, t->cert_file, t->key_file, err, errlen, &r);
    if (g->ctx && t->sni_file)
        r = load_sites(&g, err, errlen);
    if (!g->ctx || r < 0) {
        gen_free(g);
        return r < 0 ? r : -EINVAL;
    }
    SSL_CTX_set_tlsext_servername_callback(g->ctx, servername);
    *out = g;
    return 0;
}

/* ---- the transport hooks ------------------------------------------------------------------- */

static struct sb_tls *tls_of(struct sb_conn *c)
{
    return (struct sb_tls *)sb_conn_transport(c);
}

static int tls_open(struct sb_conn *c, void **state)
{
    struct sb_tls *t = tls_of(c);
    struct tls_conn *tc = calloc(1, sizeof(*tc));
    if (!tc)
        return -ENOMEM;
    pthread_mutex_lock(&t->lock);
    struct tls_gen *g = t->gen;
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&t->lock);
    tc->ssl = SSL_new(g->ctx);
    if (!tc->ssl) {
        ERR_clear_error();
        gen_unref(g);
        free(tc);
        return -ENOMEM;
    }
    SSL_set_accept_state(tc->ssl);
#ifdef OPENSSL_IS_BORINGSSL
    /* BoringSSL alone can drop the handshake configuration once the handshake is over, a saving
     * on every idle connection; OpenSSL has no equivalent and keeps it. */
    SSL_set_shed_handshake_config(tc->ssl, 1);
#endif
    *state = tc;
    return 0;
}

/* Answers a plaintext HTTP request on the TLS port the way a browser user can read. */
static void refuse_plaintext(struct sb_conn *c, struct tls_conn *tc)
{
    static const char reply[] = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                                "Content-Type: text/plain\r\nContent-Length: 39\r\n\r\n"
                                "This port speaks HTTPS (TLS), not HTTP\n";
    sb_log(SB_LOG_INFO, 0, "c%llx: plaintext HTTP on the TLS port; answered 400 and closed",
           (unsigned long long)sb_conn_id(c));
    tc->ended = true;
    if (sb_conn_write_wire(c, reply, sizeof(reply) - 1) < 0) {
        sb_conn_close(c, -ENOMEM);
        return;
    }
    sb_conn_close_after_flush(c);
}

/* A fatal TLS error: the alert the library queued goes out, then the connection closes. */
/*
 * The alert description of a plaintext alert record at the start of data, or -1. OpenSSL-based
 * clients that reject the certificate in TLS 1.3 send their alert unencrypted, which BoringSSL
 * then reports only as a record it could not decrypt.
 */
static int plaintext_alert(const uint8_t *data, size_t len)
{
    return len >= 7 && data[0] == 21 && data[1] == 3 && data[3] == 0 && data[4] == 2 ? data[6] : -1;
}

static const char *alert_name(int desc)
{
    switch (desc) {
    case 40:
        return "handshake_failure";
    case 42:
        return "bad_certificate";
    case 44:
        return "certificate_revoked";
    case 45:
        return "certificate_expired";
    case 46:
        return "certificate_unknown";
    case 48:
        return "unknown_ca";
    case 70:
        return "protocol_version";
    case 112:
        return "unrecognized_name";
    case 120:
        return "no_application_protocol";
    default:
        return "alert";
    }
}

static int tls_fail(struct sb_conn *c, struct tls_conn *tc, struct tls_worker *tw, int ssl_err)
{
    char reason[160];
    tc->ended = true;
    if (tw->write_err)
        return tw->write_err;
    ssl_reason(reason, sizeof(reason));
    if (tw->peer_alert >= 0)
        snprintf(reason, sizeof(reason), "the client sent alert %d (%s)", tw->peer_alert,
                 alert_name(tw->peer_alert));
    sb_log(SB_LOG_INFO, 0, "c%llx: TLS %s failed: %s; closed", (unsigned long long)sb_conn_id(c),
           SSL_is_init_finished(tc->ssl) ? "connection" : "handshake",
           ssl_err == SSL_ERROR_SYSCALL ? "unexpected end of data" : reason);
    sb_conn_close_after_flush(c);
    return 0;
}

static void log_established(struct sb_conn *c, SSL *ssl)
{
    if (!sb_log_enabled(SB_LOG_DEBUG))
        return;
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    sb_log(SB_LOG_DEBUG, 0, "c%llx: %s %s%s%s%s", (unsigned long long)sb_conn_id(c),
           SSL_get_version(ssl), SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)),
           SSL_session_reused(ssl) ? " resumed" : "", host ? " for " : "", host ? host : "");
}

/* Runs the handshake and reads what the bytes in tw->in hold. */
static int tls_feed(struct sb_conn *c, struct tls_conn *tc, struct tls_worker *tw)
{
    SSL *ssl = tc->ssl;
    if (!SSL_is_init_finished(ssl)) {
        int r = SSL_do_handshake(ssl);
        if (r <= 0) {
            int e = SSL_get_error(ssl, r);
            return e == SSL_ERROR_WANT_READ ? 0 : tls_fail(c, tc, tw, e);
        }
        log_established(c, ssl);
    }
    while (!sb_conn_is_closing(c)) {
        int n = SSL_read(ssl, tw->plain, sizeof(tw->plain));
        if (n > 0) {
            sb_conn_deliver(c, tw->plain, (size_t)n);
            continue;
        }
        int e = SSL_get_error(ssl, n);
        if (e == SSL_ERROR_WANT_READ)
            return 0;
        if (e == SSL_ERROR_ZERO_RETURN) {
            /* close_notify: the peer sends no more, but replies queued so far still go out. */
            sb_conn_close_after_flush(c);
            return 0;
        }
        return tls_fail(c, tc, tw, e);
    }
    return 0;
}

static int tls_recv(struct sb_conn *c, void *state, uint8_t *data, size_t len)
{
    struct tls_conn *tc = state;
    if (tc->ended)
        return 0;
    if (!tc->fed) {
        tc->fed = true;
        /* A TLS connection starts with a handshake record (22); a letter is an HTTP method. */
        if (len && data[0] >= 'A' && data[0] <= 'Z') {
            refuse_plaintext(c, tc);
            return 0;
        }
    }
    struct tls_worker *tw = bind_worker(tls_of(c), c, tc->ssl);
    tw->in = data;
    tw->in_len = len;
    tw->peer_alert = SSL_is_init_finished(tc->ssl) ? -1 : plaintext_alert(data, len);
    int r = tls_feed(c, tc, tw);
    /* After a failure the rest of the bytes are of no use; otherwise all were consumed. */
    assert(tw->in_len == 0 || tc->ended || sb_conn_is_closing(c));
    unbind_worker(tw);
    return r;
}

static int seal_piece(struct tls_conn *tc, struct tls_worker *tw, const uint8_t *p, size_t len)
{
    int n = SSL_write(tc->ssl, p, (int)len);
    if (n == (int)len)
        return 0;
    tc->ended = true;
    ERR_clear_error();
    return tw->write_err ? tw->write_err : -EPROTO;
}

static int tls_seal(struct sb_conn *c, void *state, const struct iovec *iov, size_t n)
{
    struct tls_conn *tc = state;
    if (tc->ended || !SSL_is_init_finished(tc->ssl))
        return -ENOTCONN;
    struct tls_worker *tw = bind_worker(tls_of(c), c, tc->ssl);
    /* Small writes are gathered into full records; large ones are sealed where they lie. */
    size_t fill = 0;
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t len = iov[i].iov_len;
        while (len && r == 0) {
            size_t k;
            if (fill == 0 && len >= TLS_RECORD) {
                k = len < (1u << 20) ? len : (1u << 20);
                r = seal_piece(tc, tw, p, k);
            } else {
                k = len < TLS_RECORD - fill ? len : TLS_RECORD - fill;
                memcpy(tw->plain + fill, p, k);
                fill += k;
                if (fill == TLS_RECORD) {
                    r = seal_piece(tc, tw, tw->plain, fill);
                    fill = 0;
                }
            }
            p += k;
            len -= k;
        }
    }
    if (fill && r == 0)
        r = seal_piece(tc, tw, tw->plain, fill);
    unbind_worker(tw);
    return r;
}

static void tls_close(struct sb_conn *c, void *state)
{
    struct tls_conn *tc = state;
    struct tls_gen *g = SSL_CTX_get_app_data(SSL_get_SSL_CTX(tc->ssl));
    SSL_free(tc->ssl);
    gen_unref(g);
    free(tc);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

int sb_tls_create(const struct sb_tls_config *cfg, unsigned workers, struct sb_tls **out, char *err,
                  size_t errlen)
{
    if (!cfg->cert_file || !*cfg->cert_file || !cfg->key_file || !*cfg->key_file || !workers ||
        (cfg->min_version != 12 && cfg->min_version != 13)) {
        snprintf(err, errlen, "TLS needs a certificate, a key and a version of 12 or 13");
        return -EINVAL;
    }
    struct sb_tls *t = calloc(1, sizeof(*t));
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    t->tp = (struct sb_transport){tls_open, tls_recv, tls_seal, tls_close};
    pthread_mutex_init(&t->lock, NULL);
    t->cert_file = strdup(cfg->cert_file);
    t->key_file = strdup(cfg->key_file);
    t->sni_file = dup_or_null(cfg->sni_file);
    t->min_version = cfg->min_version;
    t->ticket_rotate_s = cfg->ticket_rotate_s;
    t->nworkers = workers;
    t->workers = calloc(workers, sizeof(*t->workers));
    t->bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "switchboard");
    ticket_key_new(&t->keys[0]);
    t->key_born_ms = mono_ms();
    int r = 0;
    if (!t->cert_file || !t->key_file || (cfg->sni_file && *cfg->sni_file && !t->sni_file) ||
        !t->workers || !t->bio_method || !BIO_meth_set_write(t->bio_method, bio_write) ||
        !BIO_meth_set_read(t->bio_method, bio_read) ||
        !BIO_meth_set_ctrl(t->bio_method, bio_ctrl)) {
        r = -ENOMEM;
    }
    for (unsigned i = 0; r == 0 && i < workers; i++) {
        BIO *b = BIO_new(t->bio_method);
        if (!b) {
            r = -ENOMEM;
            break;
        }
        BIO_set_data(b, &t->workers[i]);
        BIO_set_init(b, 1);
        t->workers[i].bio = b;
    }
    if (r < 0)
        snprintf(err, errlen, "out of memory");
    else
        r = gen_load(t, &t->gen, err, errlen);
    if (r < 0) {
        ERR_clear_error();
        sb_tls_free(t);
        return r;
    }
    *out = t;
    return 0;
}

const struct sb_transport *sb_tls_transport(struct sb_tls *t)
{
    return &t->tp;
}

int sb_tls_reload(struct sb_tls *t, char *err, size_t errlen)
{
    struct tls_gen *g;
    int r = gen_load(t, &g, err, errlen);
    if (r < 0)
        return r;
    pthread_mutex_lock(&t->lock);
    struct tls_gen *old = t->gen;
    t->gen = g;
    pthread_mutex_unlock(&t->lock);
    gen_unref(old); /* freed once its last connection is gone */
    return 0;
}

void sb_tls_free(struct sb_tls *t)
{
    if (!t)
        return;
    if (t->gen)
        gen_unref(t->gen);
    for (unsigned i = 0; t->workers && i < t->nworkers; i++)
        BIO_free(t->workers[i].bio);
    free(t->workers);
    BIO_meth_free(t->bio_method);
    pthread_mutex_destroy(&t->lock);
    free(t->cert_file);
    free(t->key_file);
    free(t->sni_file);
    free(t);
}
