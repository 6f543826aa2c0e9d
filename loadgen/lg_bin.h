/*
 * The framing of switchboard's binary protocol (docs/protocol-binary.md) as loadgen receives
 * it: a stream of length-prefixed frames, on raw TCP or as the payloads of WebSocket binary
 * messages, cut back into whole frames for proto/binproto.c to decode.
 *
 * Only the 4-byte length prefix is read here (its meaning is fixed for every protocol version);
 * everything after it is the codec's business. A frame that is whole inside one read is handed
 * over straight from the caller's bytes; only a frame split across reads is copied, into a
 * buffer the receive state owns, grown to the frame's size and freed again once it is larger
 * than LG_BIN_KEEP, so that an idle connection holds no buffer at all.
 */
#ifndef SB_LOADGEN_LG_BIN_H
#define SB_LOADGEN_LG_BIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LG_BIN_PREFIX 4
#define LG_BIN_MIN_FRAME 12         /* the prefix and an 8-byte header */
#define LG_BIN_FRAME_MAX (4u << 20) /* the largest server frame accepted: 4 MiB as max_frame */
#define LG_BIN_KEEP 4096            /* a split-frame buffer up to this size stays allocated */

/* Receive state of one connection. Zero-filled is the state before the first byte. */
struct lg_bin_rx {
    uint8_t *buf;  /* the split frame so far (owned) */
    uint32_t len;  /* bytes in buf */
    uint32_t cap;  /* bytes allocated */
    uint32_t need; /* the whole frame's size once the prefix is in, else 0 */
};

/* Called with each whole frame (prefix included); returns 0 to go on or a negative errno. */
typedef int (*lg_bin_frame_cb)(void *ctx, const uint8_t *frame, size_t len);

/*
 * Feeds len bytes of the stream. Calls cb for each frame they complete. Returns 0 when every
 * byte was consumed, or:
 *   -EPROTO    a length prefix below 8 (no room for the header);
 *   -EMSGSIZE  a frame larger than max_frame bytes, prefix included;
 *   -ENOMEM    no memory for a split frame;
 *   the callback's error, which stops the feed where it was.
 * After an error the stream cannot be resynchronised: the caller drops the connection.
 */
int lg_bin_feed(struct lg_bin_rx *rx, const uint8_t *data, size_t len, size_t max_frame,
                lg_bin_frame_cb cb, void *ctx);

/* True between frames: no partial frame is held. */
static inline bool lg_bin_rx_idle(const struct lg_bin_rx *rx)
{
    return rx->len == 0;
}

/* Frees the split-frame buffer and resets rx to its zero-filled state. */
void lg_bin_rx_free(struct lg_bin_rx *rx);

#endif
