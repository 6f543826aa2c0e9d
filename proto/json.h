/*
 * JSON (RFC 8259) for the JSON mapping of the protocol: a zero-copy tokenizer and a writer.
 *
 * The tokenizer does no allocation: it fills a caller-provided array of tokens whose offsets
 * point into the input (valid while the input is). Tokens are in document order; a container's
 * children follow it, and `next` skips a whole subtree. The writer appends to a caller buffer.
 * Both are pure: no I/O, any thread.
 */
#ifndef SB_PROTO_JSON_H
#define SB_PROTO_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum sb_json_type {
    SB_JSON_NULL,
    SB_JSON_FALSE,
    SB_JSON_TRUE,
    SB_JSON_NUMBER,
    SB_JSON_STRING,
    SB_JSON_ARRAY,
    SB_JSON_OBJECT,
};

struct sb_json_tok {
    uint8_t type;   /* enum sb_json_type */
    bool escaped;   /* a STRING containing backslash escapes: read it with sb_json_string */
    uint32_t start; /* offset of the raw text; for a STRING, just inside the quotes */
    uint32_t len;   /* bytes of raw text; for a STRING, without the quotes */
    uint32_t size;  /* ARRAY: elements; OBJECT: members (each member is a key token, then
                       its value's tokens) */
    uint32_t next;  /* index of the first token after this one and all its descendants */
};

struct sb_json_limits {
    size_t max_tokens;  /* at most this many tokens (and the array's length) */
    unsigned max_depth; /* nesting of arrays/objects */
};

/*
 * Parses one complete JSON text (surrounding whitespace allowed, nothing else after it) into
 * toks[0..n). Strings must be valid UTF-8 and escapes valid (\uXXXX surrogates paired); numbers
 * follow the RFC grammar; duplicate object keys are allowed (sb_json_get finds the first).
 * Returns n (> 0), or -EBADMSG for malformed input, -E2BIG for more than max_tokens tokens,
 * -ELOOP for nesting deeper than max_depth. Input longer than 4 GiB is -EMSGSIZE.
 */
ssize_t sb_json_parse(const char *buf, size_t len, const struct sb_json_limits *lim,
                      struct sb_json_tok *toks);

/* The index of the value of member `key` in the OBJECT at toks[obj] (key compared after
 * unescaping), or -1 when absent or toks[obj] is not an object. */
int sb_json_get(const char *buf, const struct sb_json_tok *toks, int obj, const char *key);

/* True when the STRING token equals s (compared after unescaping). */
bool sb_json_eq(const char *buf, const struct sb_json_tok *tok, const char *s);

/*
 * Copies a STRING token's value, unescaped, into out (cap bytes, NUL-terminated).
 * Returns its length, -EINVAL when tok is not a string, -ENOSPC when out is too small.
 */
ssize_t sb_json_string(const char *buf, const struct sb_json_tok *tok, char *out, size_t cap);

/*
 * Unescapes the inside of a valid JSON string literal (s[0..len), without the quotes) into out,
 * or only counts the bytes when out is NULL. Returns the bytes (never more than len).
 */
size_t sb_json_unescape(const char *s, size_t len, char *out);

/* Reads a NUMBER token that is an integer within int64_t. Returns 0, -EINVAL (not an integer
 * number: fraction, exponent, or not a number) or -ERANGE. */
int sb_json_int64(const char *buf, const struct sb_json_tok *tok, int64_t *out);

/*
 * The writer. Values are separated by commas automatically; keys and values alternate inside
 * objects. Any failure (no room, nesting deeper than SB_JSON_WRITER_DEPTH, misuse) sets `error`
 * and later calls do nothing, so a sequence of calls needs one check at the end.
 */
#define SB_JSON_WRITER_DEPTH 32

struct sb_json_writer {
    char *buf;
    size_t len, cap;
    bool error;
    unsigned depth;
    uint32_t has_items; /* bit d: the container at depth d has an item already */
    uint32_t in_object; /* bit d: the container at depth d is an object */
    bool after_key;     /* the next value completes a member */
};

void sb_json_writer_init(struct sb_json_writer *w, char *buf, size_t cap);
void sb_json_begin_object(struct sb_json_writer *w);
void sb_json_end_object(struct sb_json_writer *w);
void sb_json_begin_array(struct sb_json_writer *w);
void sb_json_end_array(struct sb_json_writer *w);
/* An object key (escaped as needed). */
void sb_json_key(struct sb_json_writer *w, const char *key);
/* A string value of len bytes, escaped per RFC 8259 (control characters as \u00XX, '"' and
 * '\\' escaped). The bytes must be UTF-8; invalid UTF-8 sets error. */
void sb_json_str(struct sb_json_writer *w, const char *s, size_t len);
void sb_json_cstr(struct sb_json_writer *w, const char *s);
void sb_json_int(struct sb_json_writer *w, int64_t v);
void sb_json_uint(struct sb_json_writer *w, uint64_t v);
void sb_json_bool(struct sb_json_writer *w, bool v);
void sb_json_null(struct sb_json_writer *w);
/* Inserts already-encoded JSON (e.g. a value copied from a parsed message) as a value. */
void sb_json_raw(struct sb_json_writer *w, const char *json, size_t len);
/* Returns the length written, or -ENOSPC / -EINVAL if anything failed or a container is open. */
ssize_t sb_json_finish(struct sb_json_writer *w);

#endif
