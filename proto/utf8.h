/*
 * Streaming UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF),
 * with an ASCII fast path that checks 8 bytes at a time.
 */
#ifndef SB_PROTO_UTF8_H
#define SB_PROTO_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Validation state carried across chunks (WebSocket fragments). Zero-filled = start of text. */
struct sb_utf8 {
    uint32_t state; /* 0 = at a character boundary; otherwise inside a multi-byte sequence */
};

/*
 * Validates the next len bytes of a stream.
 * Returns 0 when every byte so far can still be part of valid UTF-8 (the stream may end inside a
 * sequence: see sb_utf8_is_complete), -EILSEQ as soon as the stream cannot be valid. The
 * failure is reported at the chunk in which the first invalid byte occurs ("fail fast").
 */
int sb_utf8_feed(struct sb_utf8 *st, const uint8_t *data, size_t len);

/* True when the stream ends at a character boundary (no partial sequence pending). */
static inline bool sb_utf8_is_complete(const struct sb_utf8 *st)
{
    return st->state == 0;
}

/* Validates a complete string: 0 or -EILSEQ. */
int sb_utf8_validate(const uint8_t *data, size_t len);

#endif
