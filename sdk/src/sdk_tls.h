/*
 * TLS for the client (tls:// and wss://): BoringSSL or OpenSSL 3, whichever the build uses,
 * through the API subset both share. The socket stays the client's: a BIO of ours reads and
 * writes it with recv/send (MSG_NOSIGNAL: a closed peer never raises SIGPIPE in the caller).
 */
#ifndef SB_SDK_TLS_H
#define SB_SDK_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/*
 * A context for one client: TLS 1.2 or newer; unless insecure, peers are verified against
 * ca_file (PEM) or, when it is NULL, the system's default CAs. alpn_http offers "http/1.1"
 * (wss://). Returns 0, -EINVAL (ca_file cannot be loaded) or -ENOMEM.
 */
int sb__tls_ctx_new(const char *ca_file, bool insecure, bool alpn_http, SSL_CTX **out);

/*
 * A connection on the connected socket fd, sending SNI `name` (unless it is an IP address) and,
 * when verify, checking that the certificate names it. NULL when out of memory.
 */
SSL *sb__tls_new(SSL_CTX *ctx, int fd, const char *name, bool verify);

/*
 * Advances the handshake: 1 done, 0 under way (*want_write: it waits to write, else to read),
 * -EKEYREJECTED when the server's certificate was refused, -EPROTO for any other failure.
 */
int sb__tls_handshake(SSL *ssl, bool *want_write);

/* Bytes written (> 0), -EAGAIN (try again when writable), or -EPIPE. */
ssize_t sb__tls_send(SSL *ssl, const void *p, size_t n);

/* Bytes read (> 0), 0 at the peer's close, -EAGAIN (nothing yet), or -ECONNRESET. */
ssize_t sb__tls_recv(SSL *ssl, void *p, size_t n);

/* Whether decrypted bytes wait inside the library (the socket will not say so). */
bool sb__tls_pending(SSL *ssl);

#endif
