/*
 * libFuzzer driver for proto/json. The input is parsed under large and small limits; on success
 * the token tree is checked against the input, every accessor is exercised, and the tree is
 * written back out with the writer and parsed again, which must give the same structure and
 * values (and writing that again must give the same bytes). The same input is then replayed as
 * a script of writer calls into a small buffer, whose output must parse whenever it succeeds.
 */
#include "proto/json.h"
#include "proto/utf8.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed: %s (line %d)\n", #cond, __LINE__);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_TOKS 8192
#define MAX_DEPTH 512

static struct sb_json_tok toks[MAX_TOKS];
static struct sb_json_tok toks2[MAX_TOKS];
static struct sb_json_tok small[MAX_TOKS];

static bool is_known_error(ssize_t rc)
{
    return rc == -EBADMSG || rc == -E2BIG || rc == -ELOOP;
}

/* Checks that a container's children tile exactly the tokens up to its `next`. */
static void check_children(const struct sb_json_tok *t, size_t n, size_t i)
{
    size_t j = i + 1, count = 0;
    while (j < t[i].next) {
        if (t[i].type == SB_JSON_OBJECT) {
            REQUIRE(t[j].type == SB_JSON_STRING);
            REQUIRE(t[j].next == j + 1);
            j++;
            REQUIRE(j < t[i].next);
        }
        REQUIRE(t[j].next > j && t[j].next <= t[i].next);
        j = t[j].next;
        count++;
    }
    REQUIRE(j == t[i].next && j <= n);
    REQUIRE(count == t[i].size);
}

/* Every token lies inside the input, looks like its type there, and the tree is consistent. */
static unsigned check_tree(const char *buf, size_t size, const struct sb_json_tok *t, size_t n)
{
    /* Ends of the open containers, to measure depth without recursion. */
    static uint32_t ends[MAX_DEPTH + 1];
    unsigned open = 0, depth = 0;
    REQUIRE(n > 0 && t[0].next == n);
    for (size_t i = 0; i < n; i++) {
        while (open > 0 && ends[open - 1] == i)
            open--;
        REQUIRE(t[i].next > i && t[i].next <= n);
        REQUIRE(t[i].start <= size && t[i].len <= size - t[i].start);
        const char *s = buf + t[i].start;
        switch (t[i].type) {
        case SB_JSON_ARRAY:
        case SB_JSON_OBJECT:
            REQUIRE(t[i].len >= 2);
            REQUIRE(s[0] == (t[i].type == SB_JSON_ARRAY ? '[' : '{'));
            REQUIRE(s[t[i].len - 1] == (t[i].type == SB_JSON_ARRAY ? ']' : '}'));
            REQUIRE((t[i].size == 0) == (t[i].next == i + 1));
            check_children(t, n, i);
            REQUIRE(open < MAX_DEPTH);
            ends[open++] = t[i].next;
            if (open > depth)
                depth = open;
            break;
        case SB_JSON_STRING:
            REQUIRE(t[i].start >= 1 && t[i].start + t[i].len < size);
            REQUIRE(s[-1] == '"' && s[t[i].len] == '"');
            REQUIRE(t[i].escaped == (memchr(s, '\\', t[i].len) != NULL));
            REQUIRE(t[i].next == i + 1 && t[i].size == 0);
            break;
        case SB_JSON_NUMBER:
        case SB_JSON_TRUE:
        case SB_JSON_FALSE:
        case SB_JSON_NULL:
            REQUIRE(t[i].len > 0 && t[i].next == i + 1 && t[i].size == 0);
            break;
        default:
            REQUIRE(!"unknown token type");
        }
        /* Tokens are in document order and do not overlap, except a container's children. */
        if (i > 0)
            REQUIRE(t[i].start > t[i - 1].start);
    }
    return depth;
}

static char sbuf[1 << 17];
static char sbuf2[1 << 17];

/* Unescapes a string token, checking the other accessors agree; returns its length. */
static size_t string_of(const char *buf, const struct sb_json_tok *t, char *out)
{
    ssize_t n = sb_json_string(buf, t, out, t->len + 1);
    REQUIRE(n >= 0 && (size_t)n <= t->len);
    REQUIRE(out[n] == '\0');
    REQUIRE(sb_utf8_validate((const uint8_t *)out, (size_t)n) == 0);
    if (!t->escaped)
        REQUIRE((size_t)n == t->len && memcmp(out, buf + t->start, t->len) == 0);
    REQUIRE(sb_json_string(buf, t, sbuf2, (size_t)n) == -ENOSPC);
    if (memchr(out, '\0', (size_t)n) == NULL) {
        REQUIRE(sb_json_eq(buf, t, out));
        if (n > 0) {
            char c = out[n - 1];
            out[n - 1] = '\0';
            REQUIRE(!sb_json_eq(buf, t, out));
            out[n - 1] = c;
        }
    }
    return (size_t)n;
}

static void check_number(const char *buf, const struct sb_json_tok *t)
{
    int64_t v = 0;
    int rc = sb_json_int64(buf, t, &v);
    REQUIRE(rc == 0 || rc == -EINVAL || rc == -ERANGE);
    const char *s = buf + t->start;
    bool integral = memchr(s, '.', t->len) == NULL && memchr(s, 'e', t->len) == NULL &&
                    memchr(s, 'E', t->len) == NULL;
    REQUIRE(integral == (rc != -EINVAL));
    if (rc != 0)
        return;
    /* An integer in range prints back exactly as it was written, except for -0. */
    char out[32];
    struct sb_json_writer w;
    sb_json_writer_init(&w, out, sizeof out);
    sb_json_int(&w, v);
    ssize_t n = sb_json_finish(&w);
    REQUIRE(n > 0);
    if (!(t->len == 2 && s[0] == '-' && s[1] == '0'))
        REQUIRE((size_t)n == t->len && memcmp(out, s, t->len) == 0);
}

static void check_values(const char *buf, const struct sb_json_tok *t, size_t n)
{
    static char key[1 << 16];
    for (size_t i = 0; i < n; i++) {
        if (t[i].type == SB_JSON_STRING) {
            REQUIRE(t[i].len < sizeof sbuf);
            string_of(buf, &t[i], sbuf);
        } else {
            REQUIRE(sb_json_string(buf, &t[i], sbuf, sizeof sbuf) == -EINVAL);
            REQUIRE(!sb_json_eq(buf, &t[i], ""));
        }
        if (t[i].type == SB_JSON_NUMBER)
            check_number(buf, &t[i]);
        if (t[i].type != SB_JSON_OBJECT) {
            REQUIRE(sb_json_get(buf, t, (int)i, "a") == -1);
            continue;
        }
        /* Each key finds a member at or before its own, whose key is equal. */
        size_t j = i + 1;
        for (uint32_t m = 0; m < t[i].size; m++) {
            size_t klen = string_of(buf, &t[j], key);
            if (memchr(key, '\0', klen) == NULL) {
                int v = sb_json_get(buf, t, (int)i, key);
                REQUIRE(v > (int)i && (size_t)v <= j + 1);
                REQUIRE(sb_json_eq(buf, &t[v - 1], key));
            }
            j = t[j + 1].next;
        }
    }
}

/*
 * Writes the token tree back out: strings through sb_json_string, numbers verbatim. A key can
 * hold an escaped NUL, which the C-string key API cannot carry, so NULs in keys become 0x01
 * (compare_trees makes the same substitution).
 */
static ssize_t write_tree(const char *buf, const struct sb_json_tok *t, size_t n, char *out,
                          size_t cap)
{
    static uint32_t ends[MAX_DEPTH + 1];
    static bool is_obj[MAX_DEPTH + 1];
    static bool want_key[MAX_DEPTH + 1];
    unsigned open = 0;
    struct sb_json_writer w;
    sb_json_writer_init(&w, out, cap);
    for (size_t i = 0; i <= n; i++) {
        while (open > 0 && ends[open - 1] == i) {
            open--;
            if (is_obj[open])
                sb_json_end_object(&w);
            else
                sb_json_end_array(&w);
        }
        if (i == n)
            break;
        bool as_key = open > 0 && is_obj[open - 1] && want_key[open - 1];
        if (open > 0 && is_obj[open - 1])
            want_key[open - 1] = !want_key[open - 1];
        switch (t[i].type) {
        case SB_JSON_STRING: {
            size_t len = string_of(buf, &t[i], sbuf);
            if (as_key) {
                for (size_t k = 0; k < len; k++) {
                    if (sbuf[k] == '\0')
                        sbuf[k] = '\x01';
                }
                sb_json_key(&w, sbuf);
            } else {
                sb_json_str(&w, sbuf, len);
            }
            break;
        }
        case SB_JSON_NUMBER:
            sb_json_raw(&w, buf + t[i].start, t[i].len);
            break;
        case SB_JSON_TRUE:
        case SB_JSON_FALSE:
            sb_json_bool(&w, t[i].type == SB_JSON_TRUE);
            break;
        case SB_JSON_NULL:
            sb_json_null(&w);
            break;
        default:
            if (t[i].type == SB_JSON_OBJECT)
                sb_json_begin_object(&w);
            else
                sb_json_begin_array(&w);
            REQUIRE(open < MAX_DEPTH);
            is_obj[open] = t[i].type == SB_JSON_OBJECT;
            want_key[open] = true;
            ends[open++] = t[i].next;
            break;
        }
    }
    return sb_json_finish(&w);
}

static void compare_trees(const char *a, const struct sb_json_tok *ta, const char *b,
                          const struct sb_json_tok *tb, size_t n)
{
    static char sa[1 << 16], sb[1 << 16];
    for (size_t i = 0; i < n; i++) {
        REQUIRE(ta[i].type == tb[i].type);
        REQUIRE(ta[i].size == tb[i].size);
        REQUIRE(ta[i].next == tb[i].next);
        if (ta[i].type == SB_JSON_NUMBER)
            REQUIRE(ta[i].len == tb[i].len &&
                    memcmp(a + ta[i].start, b + tb[i].start, ta[i].len) == 0);
        if (ta[i].type != SB_JSON_STRING)
            continue;
        size_t la = string_of(a, &ta[i], sa);
        size_t lb = string_of(b, &tb[i], sb);
        REQUIRE(la == lb);
        for (size_t k = 0; k < la; k++)
            REQUIRE(sa[k] == sb[k] || (sa[k] == '\0' && sb[k] == '\x01'));
    }
}

/* Writing the tree, parsing the output and writing that again must reach a fixed point. */
static void check_round_trip(const char *buf, size_t size, const struct sb_json_tok *t, size_t n,
                             unsigned depth)
{
    static char out[1 << 17], out2[1 << 17];
    /* Escaping at most doubles a string (U+2028 is 3 bytes raw, 6 escaped). */
    size_t cap = 2 * size + 16;
    if (cap > sizeof out || depth > SB_JSON_WRITER_DEPTH)
        return;
    ssize_t len = write_tree(buf, t, n, out, cap);
    REQUIRE(len > 0);
    struct sb_json_limits lim = {MAX_TOKS, MAX_DEPTH};
    REQUIRE(sb_json_parse(out, (size_t)len, &lim, toks2) == (ssize_t)n);
    compare_trees(buf, t, out, toks2, n);
    ssize_t len2 = write_tree(out, toks2, n, out2, sizeof out2);
    REQUIRE(len2 == len && memcmp(out, out2, (size_t)len) == 0);
    /* Too little room is reported as such, never written past. */
    out2[len - 1] = '#';
    REQUIRE(write_tree(out, toks2, n, out2, (size_t)len - 1) == -ENOSPC);
    REQUIRE(out2[len - 1] == '#');
}

/* The limits are exact: the document needs exactly n tokens and depth levels. */
static void check_limits(const char *buf, size_t size, size_t n, unsigned depth)
{
    struct sb_json_limits exact = {n, depth};
    REQUIRE(sb_json_parse(buf, size, &exact, small) == (ssize_t)n);
    REQUIRE(memcmp(small, toks, n * sizeof toks[0]) == 0);
    struct sb_json_limits fewer = {n - 1, depth};
    REQUIRE(sb_json_parse(buf, size, &fewer, small) == -E2BIG);
    if (depth > 0) {
        struct sb_json_limits shallower = {n, depth - 1};
        REQUIRE(sb_json_parse(buf, size, &shallower, small) == -ELOOP);
    }
    struct sb_json_limits tiny = {16, 4};
    ssize_t rc = sb_json_parse(buf, size, &tiny, small);
    if (n <= 16 && depth <= 4)
        REQUIRE(rc == (ssize_t)n);
    else
        REQUIRE(rc == -E2BIG || rc == -ELOOP);
}

static void parse_and_check(const char *buf, size_t size)
{
    struct sb_json_limits lim = {MAX_TOKS, MAX_DEPTH};
    ssize_t rc = sb_json_parse(buf, size, &lim, toks);
    if (rc < 0) {
        REQUIRE(is_known_error(rc));
        /* With less room, a malformed document may be caught by a limit first, nothing else. */
        struct sb_json_limits tiny = {16, 4};
        ssize_t rc2 = sb_json_parse(buf, size, &tiny, small);
        REQUIRE(is_known_error(rc2));
        return;
    }
    size_t n = (size_t)rc;
    unsigned depth = check_tree(buf, size, toks, n);
    check_values(buf, toks, n);
    check_limits(buf, size, n, depth);
    check_round_trip(buf, size, toks, n, depth);
}

/* Replays the input as writer calls into a small buffer guarded on both sides. */
static void writer_script(const uint8_t *data, size_t size)
{
    char area[256 + 32];
    memset(area, 0x5A, sizeof area);
    size_t cap = size ? data[0] % 200 : 0;
    char *out = area + 16;
    struct sb_json_writer w;
    sb_json_writer_init(&w, out, cap);
    for (size_t i = 1; i < size; i++) {
        uint8_t op = data[i];
        size_t rest = size - i - 1;
        size_t take = (op >> 4) < rest ? (op >> 4) : rest;
        const char *arg = (const char *)data + i + 1;
        switch (op & 15) {
        case 0:
            sb_json_begin_object(&w);
            break;
        case 1:
            sb_json_end_object(&w);
            break;
        case 2:
            sb_json_begin_array(&w);
            break;
        case 3:
            sb_json_end_array(&w);
            break;
        case 4: {
            char key[16];
            memcpy(key, arg, take);
            key[take] = '\0';
            sb_json_key(&w, key);
            i += take;
            break;
        }
        case 5:
            sb_json_str(&w, arg, take);
            i += take;
            break;
        case 6:
            sb_json_int(&w, (int64_t)(((uint64_t)op << 56 | (uint64_t)op * 0x10203u) - 77));
            break;
        case 7:
            sb_json_uint(&w, (uint64_t)op * 0x0123456789ABCDEFu);
            break;
        case 8:
            sb_json_bool(&w, op & 16);
            break;
        case 9:
            sb_json_null(&w);
            break;
        case 10:
            sb_json_raw(&w, "[1,{}]", 6);
            break;
        default:
            sb_json_cstr(&w, "e\xe2\x80\xa8\x01\"");
            break;
        }
    }
    ssize_t rc = sb_json_finish(&w);
    REQUIRE(rc == -ENOSPC || rc == -EINVAL || (rc > 0 && (size_t)rc <= cap));
    for (size_t i = 0; i < 16; i++)
        REQUIRE(area[i] == 0x5A);
    for (size_t i = 16 + cap; i < sizeof area; i++)
        REQUIRE(area[i] == 0x5A);
    if (rc > 0) {
        struct sb_json_limits lim = {MAX_TOKS, MAX_DEPTH};
        REQUIRE(sb_json_parse(out, (size_t)rc, &lim, small) > 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    /* A private copy of exactly size bytes, so ASan catches any read past the end. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    parse_and_check(buf, size);
    free(buf);
    writer_script(data, size);
    return 0;
}
