/*
 * RFC 6455 WebSocket framing: frame headers, masking, close payloads and the handshake key.
 * Pure functions on caller-owned bytes; no I/O, no allocation.
 */
#ifndef SB_PROTO_WS_H
#define SB_PROTO_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum sb_ws_opcode {
    SB_WS_CONT = 0x0,
    SB_WS_TEXT = 0x1,
    SB_WS_BINARY = 0x2,
    SB_WS_CLOSE = 0x8,
    SB_WS_PING = 0x9,
    SB_WS_PONG = 0xA,
};

/* Close status codes we send (RFC 6455 section 7.4.1). */
enum sb_ws_close_code {
    SB_WS_CLOSE_NORMAL = 1000,
    SB_WS_CLOSE_GOING_AWAY = 1001,
    SB_WS_CLOSE_PROTOCOL_ERROR = 1002,
    SB_WS_CLOSE_UNSUPPORTED = 1003,
    SB_WS_CLOSE_NO_STATUS = 1005, /* never on the wire */
    SB_WS_CLOSE_INVALID_DATA = 1007,
    SB_WS_CLOSE_POLICY = 1008,
    SB_WS_CLOSE_TOO_BIG = 1009,
    SB_WS_CLOSE_INTERNAL = 1011,
    SB_WS_CLOSE_TRY_AGAIN = 1013,
};

#define SB_WS_MAX_HEADER 14   /* 2 + 8 length + 4 mask */
#define SB_WS_MAX_CONTROL 125 /* control frame payload limit */
#define SB_WS_ACCEPT_LEN 28   /* base64 of a SHA-1 digest */
#define SB_WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

struct sb_ws_frame {
    bool fin;
    uint8_t rsv;    /* the three RSV bits, as (byte0 >> 4) & 7 */
    uint8_t opcode; /* enum sb_ws_opcode */
    bool masked;
    uint8_t mask[4];
    uint64_t payload_len;
    size_t header_len; /* bytes of the header, 2..14 */
};

struct sb_ws_decode_opts {
    bool require_mask;    /* server side: client frames must be masked */
    bool forbid_mask;     /* client side: server frames must not be masked */
    uint8_t allowed_rsv;  /* RSV bits an extension negotiated (0 without extensions) */
    uint64_t max_payload; /* larger data frames fail with -EMSGSIZE; 0 = no limit */
};

/*
 * Decodes the frame header at the start of buf (the payload need not be present yet).
 * Returns header_len (> 0) and fills *out, or:
 *   -EAGAIN   fewer bytes than the header needs;
 *   -EPROTO   protocol error (close 1002): RSV bits not allowed, reserved opcode (3-7, 0xB-0xF),
 *             control frame fragmented or longer than 125, 64-bit length with the top bit set,
 *             a length not in its shortest form, masking rule broken;
 *   -EMSGSIZE a data frame longer than max_payload (close 1009).
 */
ssize_t sb_ws_decode_header(const uint8_t *buf, size_t len, const struct sb_ws_decode_opts *opts,
                            struct sb_ws_frame *out);

/*
 * Encodes a frame header into out and returns its length (2..14). mask is NULL for an unmasked
 * (server) frame, or the 4-byte key for a client frame (the caller masks the payload).
 */
size_t sb_ws_encode_header(uint8_t out[SB_WS_MAX_HEADER], bool fin, uint8_t opcode,
                           uint64_t payload_len, const uint8_t *mask);

/*
 * XORs len bytes of data in place with the masking key, where data starts at byte `offset` of
 * the payload (so a payload can be unmasked in pieces). Works 8 bytes at a time.
 * Returns the offset after these bytes (offset + len).
 */
uint64_t sb_ws_unmask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t offset);

/* Like sb_ws_unmask, but reads src and writes the unmasked bytes to dst (no overlap). */
uint64_t sb_ws_unmask_copy(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t mask[4],
                           uint64_t offset);

/* True for a close code a peer may send (1000-1003, 1007-1014, 3000-4999). */
bool sb_ws_close_code_valid(uint16_t code);

/*
 * Validates an (unmasked) close frame payload: empty, or a valid code followed by UTF-8 text.
 * Sets *code to the code, or SB_WS_CLOSE_NO_STATUS for an empty payload.
 * Returns 0, -EPROTO (1-byte payload or invalid code: close 1002) or -EILSEQ (bad UTF-8: 1007).
 */
int sb_ws_parse_close(const uint8_t *payload, size_t len, uint16_t *code);

/*
 * Computes Sec-WebSocket-Accept for the client's Sec-WebSocket-Key into out (28 chars + NUL).
 * Returns 0, or -EINVAL when key is not the base64 encoding of 16 bytes (24 characters).
 */
int sb_ws_accept_key(const char *key, size_t key_len, char out[SB_WS_ACCEPT_LEN + 1]);

#endif
