/*
 * TLS as an engine transport (struct sb_transport), on BoringSSL or OpenSSL 3 (-DSB_TLS=...).
 * The io_uring loop keeps every read and write: the library sees the socket only through a
 * per-worker BIO that reads the bytes of the current receive and appends what it writes to the
 * connection's output queue, so no TLS buffer stays with an idle connection.
 *
 * Certificates, SNI sites and settings form a generation; each connection holds the generation it
 * started with, so a reload (sb_tls_reload) serves new connections while old ones go on.
 * Session tickets use keys of the sb_tls itself, rotated every ticket_rotate_s and kept over
 * reloads: a ticket is accepted for up to two rotation periods.
 *
 * Application bytes queued before the handshake is complete cannot be sent: the seal hook fails
 * with -ENOTCONN then (HTTP never writes first). Handshake failures, TLS errors and plaintext sent
 * to the port each log one line and close cleanly (the alert, or for a plaintext HTTP request an
 * HTTP 400, is sent first).
 */
#ifndef SB_CORE_TLS_H
#define SB_CORE_TLS_H

#include <stddef.h>

#include "core/engine.h"

struct sb_tls;

struct sb_tls_config {
    const char *cert_file;    /* PEM: the certificate, then the chain */
    const char *key_file;     /* PEM private key */
    const char *sni_file;     /* NULL or "": none; else lines "<hostname> <cert> <key>" */
    unsigned min_version;     /* 12 (TLS 1.2) or 13 (TLS 1.3) */
    unsigned ticket_rotate_s; /* session ticket key lifetime; 0 = no tickets */
};

/* Lines in an SNI file at most; hostnames match exactly or by one leading "*." label. */
#define SB_TLS_MAX_SITES 1024

/*
 * Loads the certificates and makes a transport for an engine with `workers` workers. Main thread.
 * The file names are copied (reloads read them again). Returns 0, or -errno with a message in
 * err: -ENOENT/-EACCES for unreadable files, -EINVAL for bad PEM, a key that does not match its
 * certificate, or a malformed SNI line. The caller frees *out with sb_tls_free.
 */
int sb_tls_create(const struct sb_tls_config *cfg, unsigned workers, struct sb_tls **out, char *err,
                  size_t errlen);

/* The transport for sb_engine_set_transport; valid until sb_tls_free. */
const struct sb_transport *sb_tls_transport(struct sb_tls *t);

/*
 * Reads the certificate, key and SNI files again; new connections get the new generation, open
 * ones keep theirs. Any thread. Returns 0, or -errno with err filled and the old generation kept.
 */
int sb_tls_reload(struct sb_tls *t, char *err, size_t errlen);

/* Frees the transport after its engine is gone (no connection uses it any more). */
void sb_tls_free(struct sb_tls *t);

#endif
