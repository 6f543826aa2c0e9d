/*
 * Streaming UTF-8 validation, written from the table of well-formed byte sequences in RFC 3629
 * section 4.
 *
 * The whole decoder state is the answer to one question: "what must the next byte be?". It is
 * packed into the 32-bit state as
 *
 *     bits  0-7   continuation bytes still needed (0 = at a character boundary)
 *     bits  8-15  lowest byte allowed next
 *     bits 16-23  highest byte allowed next
 *
 * Only the second byte of a sequence has a range narrower than 80..BF (E0, ED, F0 and F4 lead
 * bytes are what rule out overlongs, surrogates and code points above U+10FFFF), so once one
 * continuation byte is accepted the range widens back to 80..BF. Because the state holds the
 * narrowed range itself, a chunk boundary between a lead byte and its second byte loses nothing.
 *
 * Speed comes from two paths in front of that state machine, both of which can only accept: a
 * wide test for runs of ASCII, and a loop over whole characters that lie far enough from the end
 * of the chunk. Whatever they stop at is judged byte by byte, so errors and the state kept
 * between chunks are decided in one place.
 */
#include "proto/utf8.h"

#include <errno.h>
#include <string.h>

#define ST(need, lo, hi) ((uint32_t)(need) | (uint32_t)(lo) << 8 | (uint32_t)(hi) << 16)

/*
 * A stream that failed stays failed: the need count 0xFF cannot arise from a lead byte, and a
 * caller who feeds more after -EILSEQ must not see the error forgotten.
 */
#define ST_REJECT UINT32_MAX

#define ASCII_MASK 0x8080808080808080ULL

/* The state after lead byte b, or 0 when b cannot start a character (ASCII is handled apart). */
static uint32_t lead_state(uint8_t b)
{
    if (b < 0xC2) {
        /* 80..BF are stray continuations; C0 and C1 could only encode overlong ASCII. */
        return 0;
    }
    if (b < 0xE0) {
        return ST(1, 0x80, 0xBF);
    }
    if (b < 0xF0) {
        /* E0 80..9F would be overlong; ED A0..BF would be a UTF-16 surrogate. */
        return ST(2, b == 0xE0 ? 0xA0 : 0x80, b == 0xED ? 0x9F : 0xBF);
    }
    if (b < 0xF5) {
        /* F0 80..8F would be overlong; F4 90..BF and F5..FF would exceed U+10FFFF. */
        return ST(3, b == 0xF0 ? 0x90 : 0x80, b == 0xF4 ? 0x8F : 0xBF);
    }
    return 0;
}

/* The state after continuation byte b, or ST_REJECT when b is not allowed here. */
static uint32_t cont_state(uint32_t s, uint8_t b)
{
    uint32_t lo = (s >> 8) & 0xFF;
    uint32_t hi = (s >> 16) & 0xFF;
    uint32_t need = s & 0xFF;

    /* One unsigned compare covers both ends of the range. */
    if ((uint32_t)b - lo > hi - lo) {
        return ST_REJECT;
    }
    return need > 1 ? ST(need - 1, 0x80, 0xBF) : 0;
}

static uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/*
 * Returns the first byte at or after p that is not ASCII, or end. Runs of text are mostly
 * ASCII even in other scripts (spaces, digits, markup, JSON), so this is where the time goes:
 * 32 bytes per test while the run lasts, then 8, then single bytes to find the exact spot.
 */
static const uint8_t *skip_ascii(const uint8_t *p, const uint8_t *end)
{
    while (end - p >= 32) {
        uint64_t any = load64(p) | load64(p + 8) | load64(p + 16) | load64(p + 24);
        if (any & ASCII_MASK) {
            break;
        }
        p += 32;
    }
    while (end - p >= 8) {
        if (load64(p) & ASCII_MASK) {
            break;
        }
        p += 8;
    }
    while (p < end && *p < 0x80) {
        p++;
    }
    return p;
}

/*
 * True when the rest of the sequence started by a lead byte with state s, at p, is valid. It
 * reads p[0..2] whatever the length, so the caller guarantees three bytes. Only the second byte
 * of a sequence has a narrowed range; later ones need just the 10xxxxxx pattern.
 */
static bool rest_is_valid(uint32_t s, const uint8_t *p)
{
    /* Indexed by need: which of p[1] and p[2] must match 10xxxxxx. */
    static const uint16_t tail_mask[4] = {0, 0, 0x00C0, 0xC0C0};
    uint32_t need = s & 0xFF;
    uint32_t lo = (s >> 8) & 0xFF;
    uint32_t hi = (s >> 16) & 0xFF;
    uint32_t tail = (uint32_t)p[1] | (uint32_t)p[2] << 8;

    return (uint32_t)p[0] - lo <= hi - lo && (tail & tail_mask[need]) == (tail_mask[need] & 0x8080);
}

/*
 * Returns the first byte at or after p that does not start a whole, valid character of two or
 * more bytes (or a lone ASCII byte between such characters), or a point less than four bytes
 * from end. It only ever accepts: whatever it stops at is judged by the byte-wise state machine,
 * which alone decides errors and state across chunks. Stepping by constants after a predicted
 * branch, instead of by the length read from the lead byte, lets the CPU start on the next
 * character before this one is done.
 */
static const uint8_t *skip_multibyte(const uint8_t *p, const uint8_t *end)
{
    while (end - p >= 4) {
        uint8_t b = p[0];
        uint32_t s;

        if (b < 0x80) {
            /* A lone space between words stays here; a run of ASCII goes to the wide path. */
            if (p[1] < 0x80) {
                break;
            }
            p++;
            continue;
        }
        s = lead_state(b);
        if (s == 0 || !rest_is_valid(s, p + 1)) {
            break;
        }
        if (b < 0xE0) {
            p += 2;
        } else if (b < 0xF0) {
            p += 3;
        } else {
            p += 4;
        }
    }
    return p;
}

/* Consumes continuation bytes from *pp while the state needs them; returns the new state. */
static uint32_t finish_seq(uint32_t s, const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;

    while (s != 0 && p < end) {
        s = cont_state(s, *p++);
        if (s == ST_REJECT) {
            break;
        }
    }
    *pp = p;
    return s;
}

int sb_utf8_feed(struct sb_utf8 *st, const uint8_t *data, size_t len)
{
    const uint8_t *p = data;
    const uint8_t *end = data + len;
    uint32_t s = st->state;

    if (s == ST_REJECT) {
        return -EILSEQ;
    }
    s = finish_seq(s, &p, end);
    while (s != ST_REJECT && p < end) {
        p = skip_ascii(p, end);
        p = skip_multibyte(p, end);
        if (p == end) {
            break;
        }
        if (*p < 0x80) {
            continue;
        }
        /* A bad sequence, or one near the end of the chunk: go byte by byte. */
        s = lead_state(*p++);
        if (s == 0) {
            s = ST_REJECT;
            break;
        }
        s = finish_seq(s, &p, end);
    }
    st->state = s;
    return s == ST_REJECT ? -EILSEQ : 0;
}

int sb_utf8_validate(const uint8_t *data, size_t len)
{
    struct sb_utf8 st = {0};
    int rc = sb_utf8_feed(&st, data, len);

    if (rc < 0) {
        return rc;
    }
    return sb_utf8_is_complete(&st) ? 0 : -EILSEQ;
}
