/*
 * The SDK's RFC 6455 client side: the upgrade request and the check of its 101 answer, frame
 * headers (masked out, unmasked in), and the SHA-1/base64 the handshake needs. Pure functions on
 * caller-owned bytes; no I/O, no allocation. Our own code so that the installed library needs no
 * crypto library.
 */
#ifndef SB_SDK_WS_H
#define SB_SDK_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SB__WS_KEY_LEN 24    /* base64 of 16 random bytes */
#define SB__WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */
#define SB__WS_HEAD_MAX 8192 /* the largest 101 answer head we read */
#define SB__WS_MAX_HEADER 14 /* a frame header: 2 + 8 length + 4 mask */
#define SB__WS_MAX_CONTROL 125

enum {
    SB__WS_CONT = 0x0,
    SB__WS_TEXT = 0x1,
    SB__WS_BINARY = 0x2,
    SB__WS_CLOSE = 0x8,
    SB__WS_PING = 0x9,
    SB__WS_PONG = 0xA,
};

/* SHA-1 (FIPS 180-4) of len bytes. */
void sb__ws_sha1(const void *data, size_t len, uint8_t out[20]);

/* Standard padded base64 of len bytes into out (4 * ceil(len / 3) bytes + NUL). */
size_t sb__ws_base64(const uint8_t *in, size_t len, char *out);

/* The Sec-WebSocket-Accept value for key: base64(SHA-1(key + GUID)). */
void sb__ws_accept(const char *key, char out[SB__WS_ACCEPT_LEN + 1]);

/*
 * Writes the upgrade request for host (with ":port" when given), path and the subprotocol, with
 * the token as Authorization: Bearer (when non-empty). Returns its length, or -ENOSPC.
 */
ssize_t sb__ws_request(char *out, size_t cap, const char *host, const char *path, const char *key,
                       const char *protocol, const char *token);

/*
 * Checks the answer head at the start of buf (len bytes so far). Returns the head's length
 * (through the blank line) when it is a valid 101 for key and protocol, or:
 *   -EAGAIN   the head is not complete yet (and is under SB__WS_HEAD_MAX);
 *   -EACCES   status 401 or 403 (the token was refused);
 *   -EPROTO   any other status, a missing or wrong Upgrade, Connection, Sec-WebSocket-Accept or
 *             Sec-WebSocket-Protocol, or a head over SB__WS_HEAD_MAX.
 */
ssize_t sb__ws_response(const char *buf, size_t len, const char *key, const char *protocol);

struct sb__ws_frame {
    bool fin;
    uint8_t opcode;
    uint64_t payload_len;
    size_t header_len;
};

/*
 * Decodes a server frame's header at the start of buf. Returns header_len, or -EAGAIN (more
 * bytes needed), -EPROTO (RSV bits, a reserved opcode, a masked frame, a bad control frame, a
 * non-minimal or 63-bit-overflowing length) or -EMSGSIZE (payload over max_payload).
 */
ssize_t sb__ws_decode(const uint8_t *buf, size_t len, uint64_t max_payload,
                      struct sb__ws_frame *out);

/* Writes a masked client frame header (fin set); returns its length (6..14). */
size_t sb__ws_encode(uint8_t out[SB__WS_MAX_HEADER], uint8_t opcode, uint64_t payload_len,
                     const uint8_t mask[4]);

/* XORs len bytes with the mask, data starting at payload offset 0. */
void sb__ws_mask(uint8_t *data, size_t len, const uint8_t mask[4]);

#endif
