/*
 * TLS for the load generator (--tls): a protocol layer that wraps lg_proto_ws (or lg_proto_bin
 * with --proto bin, for the server's binary_tls_listen), so wss://
 * traffic runs through the same io_uring loop. The TLS library (BoringSSL, or OpenSSL 3 with
 * -DSB_TLS=openssl) reads each receive through a memory BIO of the connection and its records
 * are appended to the connection's send queue; what the WebSocket layer queues is sealed before
 * it leaves. The server certificate is verified against --ca FILE (else the system's CAs) and
 * the target's host name or IP address, unless --insecure.
 */
#ifndef SB_LOADGEN_LG_TLS_H
#define SB_LOADGEN_LG_TLS_H

#include "loadgen/lg_config.h"
#include "loadgen/lg_loop.h"

/*
 * Loads the CA file and makes the client context for cfg. Call once before the workers start.
 * Returns 0, or -errno after printing why to stderr.
 */
int lg_tls_init(const struct lg_config *cfg);

/* The protocol to use for cfg: lg_proto_ws or lg_proto_bin (--proto), under the TLS layer with
 * --tls. */
const struct lg_proto *lg_tls_proto(const struct lg_config *cfg);

#endif
