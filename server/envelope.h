/*
 * What one node publishes to another's channel in cluster mode (server/chat.c routes with it):
 * a push, or an invalidation of location caches. Pure encoding, no I/O.
 *
 * A push:          class (1 byte, < SB_ENVELOPE_INVAL), seq (8, big-endian), conversation id
 *                  length (1) and bytes, JSON length (4, big-endian) and bytes, binary length (4)
 *                  and bytes, then the users it is for.
 * An invalidation: SB_ENVELOPE_INVAL (1 byte), then users.
 * Users are packed: a length byte (1..SB_USER_ID_MAX) and the id's bytes, each.
 */
#ifndef SB_SERVER_ENVELOPE_H
#define SB_SERVER_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#define SB_ENVELOPE_INVAL 0xff
#define SB_ENVELOPE_FIXED 18 /* a push's bytes besides its conversation id, op and users */

struct sb_envelope {
    uint8_t cls; /* the push's traffic class, or SB_ENVELOPE_INVAL */
    uint64_t seq;
    const char *conv, *json, *bin, *users; /* (parsed: into the message) */
    size_t conv_len, json_len, bin_len, users_len;
};

/* The bytes of a push before its users. */
size_t sb_envelope_head_len(const struct sb_envelope *e);

/* Writes a push's bytes before its users (sb_envelope_head_len of them) to out. */
void sb_envelope_put_head(const struct sb_envelope *e, char *out);

/* Reads msg[0..len): 0, or -EBADMSG when it is neither a well-formed push nor invalidation
 * (lengths past the end, a conversation id of 0 or more than SB_CONV_ID_MAX bytes, a user of
 * 0 or more than SB_USER_ID_MAX bytes, no users). */
int sb_envelope_parse(const char *msg, size_t len, struct sb_envelope *out);

#endif
