/*
 * Message bodies in their three forms (proto/ops.h, enum sb_op_body_form), and base64
 * (RFC 4648 section 4, padded) which one of them uses. Pure functions, any thread.
 */
#ifndef SB_PROTO_OPSBODY_H
#define SB_PROTO_OPSBODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/ops.h"

/* The body's length in bytes: a JSON literal unescaped, base64 decoded. */
size_t sb_ops_body_len(const struct sb_op_body *b);

/* Writes the body's bytes (sb_ops_body_len of them) to out. */
void sb_ops_body_copy(const struct sb_op_body *b, uint8_t *out);

/* Characters of the padded base64 of n bytes. */
static inline size_t sb_base64_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

/* Writes the padded base64 of in[0..n) to out (sb_base64_len(n) characters, no NUL). */
void sb_base64_encode(const uint8_t *in, size_t n, char *out);

/*
 * True when text[0..len) is canonical padded base64: a multiple of 4 characters of the standard
 * alphabet, '=' only as the last one or two, and padding bits zero (so that every byte string
 * has exactly one encoding). *n_out, when not NULL, gets the decoded length.
 */
bool sb_base64_valid(const char *text, size_t len, size_t *n_out);

/* Decodes valid base64 (sb_base64_valid) into out. Returns the bytes written. */
size_t sb_base64_decode(const char *text, size_t len, uint8_t *out);

#endif
