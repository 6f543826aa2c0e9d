/*
 * JSON (RFC 8259): a strict, iterative tokenizer and a writer.
 *
 * The tokenizer keeps no stack of its own. While a container is open, its token's `next` field
 * holds the index of the container around it (or NO_PARENT), and closing the container restores
 * that parent and stores the real `next`. Nesting therefore costs no memory beyond the tokens
 * the caller already provides, however deep max_depth allows.
 *
 * Strings are where the bytes are, so their bodies are scanned eight bytes at a time for the
 * only bytes that need attention ('"', '\\' and controls); bytes at or above 0x80 are noted on
 * the way and the body is checked as UTF-8 once, after the closing quote is found. Escapes are
 * ASCII, so validating the raw body is the same as validating the text around them.
 */
#include "proto/json.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "proto/utf8.h"

#define NO_PARENT UINT32_MAX

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

struct parser {
    const char *base;
    const char *p;
    const char *end;
    struct sb_json_tok *toks;
    size_t n;
    size_t max_tokens;
    unsigned depth;
    unsigned max_depth;
    uint32_t open; /* innermost open container, or NO_PARENT at the top level */
};

static bool is_ws(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && is_ws(*p))
        p++;
    return p;
}

static bool is_digit(char c)
{
    return (unsigned char)(c - '0') < 10;
}

static const char *skip_digits(const char *p, const char *end)
{
    while (p < end && is_digit(*p))
        p++;
    return p;
}

static int hex_digit(char c)
{
    if (is_digit(c))
        return c - '0';
    unsigned char l = (unsigned char)(c | 0x20);
    if (l >= 'a' && l <= 'f')
        return l - 'a' + 10;
    return -1;
}

/* Reads four hex digits at p; returns the value, or -1. */
static int32_t hex4(const char *p, const char *end)
{
    if (end - p < 4)
        return -1;
    int32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(p[i]);
        if (d < 0)
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/*
 * Reads the escape after a backslash at p. Returns the position after it and the code point it
 * stands for, or NULL when it is not one of RFC 8259's escapes. A high surrogate must be followed
 * at once by an escaped low one, since only the pair names a character.
 */
static const char *read_escape(const char *p, const char *end, uint32_t *cp)
{
    static const char simple_from[] = "\"\\/bfnrt";
    static const char simple_to[] = "\"\\/\b\f\n\r\t";
    if (p == end)
        return NULL;
    if (*p != 'u') {
        const char *s = *p ? strchr(simple_from, *p) : NULL;
        if (!s)
            return NULL;
        *cp = (unsigned char)simple_to[s - simple_from];
        return p + 1;
    }
    int32_t hi = hex4(p + 1, end);
    if (hi < 0 || (hi >= 0xDC00 && hi <= 0xDFFF))
        return NULL;
    p += 5;
    if (hi < 0xD800 || hi > 0xDBFF) {
        *cp = (uint32_t)hi;
        return p;
    }
    if (end - p < 2 || p[0] != '\\' || p[1] != 'u')
        return NULL;
    int32_t lo = hex4(p + 2, end);
    if (lo < 0xDC00 || lo > 0xDFFF)
        return NULL;
    *cp = 0x10000 + ((uint32_t)(hi - 0xD800) << 10) + (uint32_t)(lo - 0xDC00);
    return p + 6;
}

/* Encodes a scalar value as UTF-8; returns the byte count. */
static size_t put_utf8(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the escape at p (just after a backslash) into UTF-8; returns p after it, or NULL. */
static const char *unescape(const char *p, const char *end, char out[4], size_t *n)
{
    uint32_t cp;
    p = read_escape(p, end, &cp);
    if (p)
        *n = put_utf8(cp, out);
    return p;
}

static uint64_t load64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/*
 * Nonzero when any of the eight bytes is '"', '\\' or below 0x20. Each term is the classic
 * "some byte is zero / below n" test; as a yes-or-no answer it is exact for any input.
 */
static uint64_t has_special(uint64_t v)
{
    uint64_t q = v ^ (ONES * '"');
    uint64_t b = v ^ (ONES * '\\');
    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | ((v - ONES * 0x20) & ~v)) & HIGHS;
}

static bool is_special(unsigned char c)
{
    return c == '"' || c == '\\' || c < 0x20;
}

/*
 * Scans a string body starting just after its opening quote. Returns the closing quote, or NULL
 * when the string is unterminated or holds a raw control character, a bad escape or invalid
 * UTF-8.
 */
static const char *scan_string(const char *p, const char *end, bool *escaped)
{
    const char *body = p;
    uint64_t seen = 0;
    for (;;) {
        while (end - p >= 8) {
            uint64_t v = load64(p);
            if (has_special(v))
                break;
            seen |= v;
            p += 8;
        }
        /* Within eight bytes of here there is a byte to look at, or the end. */
        while (p < end && !is_special((unsigned char)*p))
            seen |= (unsigned char)*p++;
        if (p == end)
            return NULL;
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            break;
        if (c == '\\') {
            uint32_t cp;
            p = read_escape(p + 1, end, &cp);
            if (!p)
                return NULL;
            *escaped = true;
            continue;
        }
        return NULL;
    }
    if ((seen & HIGHS) && sb_utf8_validate((const uint8_t *)body, (size_t)(p - body)) < 0)
        return NULL;
    return p;
}

/* The number grammar of RFC 8259 section 6; returns the end of the number, or NULL. */
static const char *scan_number(const char *p, const char *end)
{
    if (*p == '-')
        p++;
    if (p == end)
        return NULL;
    if (*p == '0')
        p++;
    else if (is_digit(*p))
        p = skip_digits(p + 1, end);
    else
        return NULL;
    if (p < end && *p == '.') {
        const char *f = ++p;
        p = skip_digits(p, end);
        if (p == f)
            return NULL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        const char *e = p;
        p = skip_digits(p, end);
        if (p == e)
            return NULL;
    }
    return p;
}

static int add_token(struct parser *ps, enum sb_json_type type, const char *start, size_t len)
{
    if (ps->n == ps->max_tokens)
        return -E2BIG;
    struct sb_json_tok *t = &ps->toks[ps->n];
    t->type = (uint8_t)type;
    t->escaped = false;
    t->start = (uint32_t)(start - ps->base);
    t->len = (uint32_t)len;
    t->size = 0;
    t->next = (uint32_t)(ps->n + 1);
    ps->n++;
    return 0;
}

/* A string at ps->p (its opening quote), as a value or as a key. */
static int parse_string(struct parser *ps)
{
    if (ps->p == ps->end || *ps->p != '"')
        return -EBADMSG;
    const char *body = ps->p + 1;
    bool escaped = false;
    const char *q = scan_string(body, ps->end, &escaped);
    if (!q)
        return -EBADMSG;
    int rc = add_token(ps, SB_JSON_STRING, body, (size_t)(q - body));
    if (rc < 0)
        return rc;
    ps->toks[ps->n - 1].escaped = escaped;
    ps->p = q + 1;
    return 0;
}

static int parse_literal(struct parser *ps, enum sb_json_type type, const char *word, size_t len)
{
    if ((size_t)(ps->end - ps->p) < len || memcmp(ps->p, word, len) != 0)
        return -EBADMSG;
    int rc = add_token(ps, type, ps->p, len);
    ps->p += len;
    return rc;
}

static int parse_number(struct parser *ps)
{
    const char *e = scan_number(ps->p, ps->end);
    if (!e)
        return -EBADMSG;
    int rc = add_token(ps, SB_JSON_NUMBER, ps->p, (size_t)(e - ps->p));
    ps->p = e;
    return rc;
}

/* Opens a container: its `next` holds the parent until it closes. */
static int open_container(struct parser *ps, enum sb_json_type type)
{
    if (ps->depth == ps->max_depth)
        return -ELOOP;
    int rc = add_token(ps, type, ps->p, 1);
    if (rc < 0)
        return rc;
    ps->toks[ps->n - 1].next = ps->open;
    ps->open = (uint32_t)(ps->n - 1);
    ps->depth++;
    ps->p++;
    return 1;
}

/* Parses the value at ps->p. Returns 1 when it opened a container, 0 for a scalar, or -errno. */
static int parse_value(struct parser *ps)
{
    if (ps->p == ps->end)
        return -EBADMSG;
    switch (*ps->p) {
    case '{':
        return open_container(ps, SB_JSON_OBJECT);
    case '[':
        return open_container(ps, SB_JSON_ARRAY);
    case '"':
        return parse_string(ps);
    case 't':
        return parse_literal(ps, SB_JSON_TRUE, "true", 4);
    case 'f':
        return parse_literal(ps, SB_JSON_FALSE, "false", 5);
    case 'n':
        return parse_literal(ps, SB_JSON_NULL, "null", 4);
    default:
        return parse_number(ps);
    }
}

static char closer_of(const struct sb_json_tok *t)
{
    return t->type == SB_JSON_OBJECT ? '}' : ']';
}

/* Closes the innermost container at ps->p (its closing bracket). */
static void close_container(struct parser *ps)
{
    struct sb_json_tok *t = &ps->toks[ps->open];
    uint32_t parent = t->next;
    t->next = (uint32_t)ps->n;
    t->len = (uint32_t)(ps->p + 1 - ps->base) - t->start;
    ps->p++;
    ps->open = parent;
    ps->depth--;
}

/*
 * Starts the next member of the open container, leaving ps->p at its value: an array counts the
 * element, an object reads "key :" first.
 */
static int begin_member(struct parser *ps)
{
    struct sb_json_tok *c = &ps->toks[ps->open];
    c->size++;
    if (c->type == SB_JSON_ARRAY)
        return 0;
    int rc = parse_string(ps);
    if (rc < 0)
        return rc;
    ps->p = skip_ws(ps->p, ps->end);
    if (ps->p == ps->end || *ps->p != ':')
        return -EBADMSG;
    ps->p = skip_ws(ps->p + 1, ps->end);
    return 0;
}

/*
 * After a value (or a closed container): a comma starts the next member, a bracket closes the
 * container. Returns 1 when the document is complete, 0 when a value is expected next.
 */
static int after_value(struct parser *ps)
{
    for (;;) {
        ps->p = skip_ws(ps->p, ps->end);
        if (ps->open == NO_PARENT)
            return ps->p == ps->end ? 1 : -EBADMSG;
        if (ps->p == ps->end)
            return -EBADMSG;
        char c = *ps->p;
        if (c == ',') {
            ps->p = skip_ws(ps->p + 1, ps->end);
            return begin_member(ps);
        }
        if (c != closer_of(&ps->toks[ps->open]))
            return -EBADMSG;
        close_container(ps);
    }
}

static ssize_t parse_document(struct parser *ps)
{
    ps->p = skip_ws(ps->p, ps->end);
    for (;;) {
        int rc = parse_value(ps);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            ps->p = skip_ws(ps->p, ps->end);
            if (ps->p < ps->end && *ps->p == closer_of(&ps->toks[ps->open])) {
                close_container(ps);
            } else {
                rc = begin_member(ps);
                if (rc < 0)
                    return rc;
                continue;
            }
        }
        rc = after_value(ps);
        if (rc < 0)
            return rc;
        if (rc == 1)
            return (ssize_t)ps->n;
    }
}

ssize_t sb_json_parse(const char *buf, size_t len, const struct sb_json_limits *lim,
                      struct sb_json_tok *toks)
{
    assert(lim != NULL);
    if (len > UINT32_MAX)
        return -EMSGSIZE;
    if (len == 0)
        return -EBADMSG;
    struct parser ps = {
        .base = buf,
        .p = buf,
        .end = buf + len,
        .toks = toks,
        .n = 0,
        .max_tokens = lim->max_tokens,
        .depth = 0,
        .max_depth = lim->max_depth,
        .open = NO_PARENT,
    };
    return parse_document(&ps);
}

/*
 * Compares a STRING token's value with the C string s, decoding escapes on the fly. Returns the
 * position in s after the match, or NULL when the value is not a prefix of s (or is malformed).
 */
static const char *match_prefix(const char *buf, const struct sb_json_tok *tok, const char *s)
{
    const char *p = buf + tok->start;
    const char *end = p + tok->len;
    if (!tok->escaped) {
        /* A raw string holds no NUL, so strncmp stops at the end of s, never beyond. */
        return strncmp(p, s, tok->len) == 0 ? s + tok->len : NULL;
    }
    while (p < end) {
        if (*p != '\\') {
            /* A raw byte is never NUL, so a mismatch also catches the end of s. */
            if (*p != *s)
                return NULL;
            p++;
            s++;
            continue;
        }
        char u[4];
        size_t n;
        p = unescape(p + 1, end, u, &n);
        if (!p)
            return NULL;
        for (size_t i = 0; i < n; i++) {
            /* An escaped NUL cannot match: s ends there. */
            if (*s == '\0' || *s++ != u[i])
                return NULL;
        }
    }
    return s;
}

bool sb_json_eq(const char *buf, const struct sb_json_tok *tok, const char *s)
{
    if (tok->type != SB_JSON_STRING)
        return false;
    const char *rest = match_prefix(buf, tok, s);
    return rest && *rest == '\0';
}

int sb_json_get(const char *buf, const struct sb_json_tok *toks, int obj, const char *key)
{
    if (obj < 0 || toks[obj].type != SB_JSON_OBJECT)
        return -1;
    uint32_t i = (uint32_t)obj + 1;
    for (uint32_t m = 0; m < toks[obj].size; m++) {
        if (i >= INT_MAX)
            return -1;
        if (sb_json_eq(buf, &toks[i], key))
            return (int)i + 1;
        i = toks[i + 1].next;
    }
    return -1;
}

ssize_t sb_json_string(const char *buf, const struct sb_json_tok *tok, char *out, size_t cap)
{
    if (tok->type != SB_JSON_STRING)
        return -EINVAL;
    const char *p = buf + tok->start;
    const char *end = p + tok->len;
    if (!tok->escaped) {
        if (tok->len >= cap)
            return -ENOSPC;
        memcpy(out, p, tok->len);
        out[tok->len] = '\0';
        return (ssize_t)tok->len;
    }
    if (cap == 0)
        return -ENOSPC;
    size_t o = 0;
    while (p < end) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        size_t run = (size_t)((bs ? bs : end) - p);
        if (run > cap - 1 - o)
            return -ENOSPC;
        memcpy(out + o, p, run);
        o += run;
        if (!bs)
            break;
        char u[4];
        size_t n;
        p = unescape(bs + 1, end, u, &n);
        if (!p)
            return -EINVAL;
        if (n > cap - 1 - o)
            return -ENOSPC;
        memcpy(out + o, u, n);
        o += n;
    }
    out[o] = '\0';
    return (ssize_t)o;
}

size_t sb_json_unescape(const char *s, size_t len, char *out)
{
    const char *p = s, *end = s + len;
    size_t o = 0;
    while (p < end) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        size_t run = (size_t)((bs ? bs : end) - p);
        if (out)
            memcpy(out + o, p, run);
        o += run;
        if (!bs)
            break;
        char u[4];
        size_t n = 0;
        p = unescape(bs + 1, end, u, &n);
        if (!p)
            break; /* not valid: the caller broke the contract; stop rather than overrun */
        if (out)
            memcpy(out + o, u, n);
        o += n;
    }
    return o;
}

int sb_json_int64(const char *buf, const struct sb_json_tok *tok, int64_t *out)
{
    if (tok->type != SB_JSON_NUMBER || tok->len == 0)
        return -EINVAL;
    const char *p = buf + tok->start;
    const char *end = p + tok->len;
    bool neg = *p == '-';
    p += neg;
    if (p == end || (*p == '0' && end - p > 1))
        return -EINVAL;
    /* The magnitude of INT64_MIN is one more than INT64_MAX. */
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    bool overflow = false;
    for (; p < end; p++) {
        if (!is_digit(*p))
            return -EINVAL;
        unsigned d = (unsigned)(*p - '0');
        if (v > (limit - d) / 10)
            overflow = true;
        else
            v = v * 10 + d;
    }
    if (overflow)
        return -ERANGE;
    /* Negating in unsigned arithmetic, then converting, is exact for INT64_MIN too. */
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/*
 * The writer. A failure for lack of room is told apart from misuse by leaving len past cap,
 * which no successful write can do; sb_json_finish reads it back as -ENOSPC.
 */

static void fail(struct sb_json_writer *w)
{
    w->error = true;
}

static void no_room(struct sb_json_writer *w)
{
    w->error = true;
    w->len = w->cap + 1;
}

static bool put(struct sb_json_writer *w, const void *s, size_t n)
{
    if (w->error)
        return false;
    if (n > w->cap - w->len) {
        no_room(w);
        return false;
    }
    if (n)
        memcpy(w->buf + w->len, s, n);
    w->len += n;
    return true;
}

static bool put_char(struct sb_json_writer *w, char c)
{
    return put(w, &c, 1);
}

static uint32_t top_bit(const struct sb_json_writer *w)
{
    return UINT32_C(1) << (w->depth - 1);
}

/* Before any value: checks it may appear here and writes the comma it needs. */
static bool begin_value(struct sb_json_writer *w)
{
    if (w->error)
        return false;
    if (w->depth == 0) {
        /* One value per document: anything written means it is done. */
        if (w->len > 0) {
            fail(w);
            return false;
        }
        return true;
    }
    uint32_t bit = top_bit(w);
    if (w->in_object & bit) {
        if (!w->after_key) {
            fail(w);
            return false;
        }
        w->after_key = false;
        return true;
    }
    if ((w->has_items & bit) && !put_char(w, ','))
        return false;
    w->has_items |= bit;
    return true;
}

/*
 * How each byte is written inside a string: 0 = as is, a letter = that short escape, 'u' =
 * \u00XX, and 'L' marks 0xE2, which may start U+2028 or U+2029 (JavaScript line terminators).
 */
static const char escape_of[256] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b',         't',           'n',          'u',
    'f', 'r', 'u', 'u', 'u', 'u', 'u', 'u', 'u',         'u',           'u',          'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', ['"'] = '"', ['\\'] = '\\', [0xE2] = 'L',
};

/* Writes the escape for the special byte at s[i]; returns how many input bytes it covered. */
static size_t put_escape(struct sb_json_writer *w, const unsigned char *s, size_t i, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char e = escape_of[s[i]];
    if (e == 'L') {
        if (len - i >= 3 && s[i + 1] == 0x80 && (s[i + 2] == 0xA8 || s[i + 2] == 0xA9)) {
            char u[6] = {'\\', 'u', '2', '0', '2', s[i + 2] == 0xA8 ? '8' : '9'};
            put(w, u, sizeof u);
            return 3;
        }
        put(w, s + i, 1);
        return 1;
    }
    if (e == 'u') {
        char u[6] = {'\\', 'u', '0', '0', hex[s[i] >> 4], hex[s[i] & 15]};
        put(w, u, sizeof u);
        return 1;
    }
    char two[2] = {'\\', e};
    put(w, two, sizeof two);
    return 1;
}

static void put_string(struct sb_json_writer *w, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    if (len && (!s || sb_utf8_validate(s, len) < 0)) {
        fail(w);
        return;
    }
    put_char(w, '"');
    size_t i = 0;
    while (i < len && !w->error) {
        size_t j = i;
        while (j < len && !escape_of[s[j]])
            j++;
        put(w, s + i, j - i);
        if (j == len)
            break;
        i = j + put_escape(w, s, j, len);
    }
    put_char(w, '"');
}

void sb_json_writer_init(struct sb_json_writer *w, char *buf, size_t cap)
{
    w->buf = buf;
    w->len = 0;
    w->cap = buf ? cap : 0;
    w->error = false;
    w->depth = 0;
    w->has_items = 0;
    w->in_object = 0;
    w->after_key = false;
}

static void begin_container(struct sb_json_writer *w, bool is_object)
{
    if (!begin_value(w))
        return;
    if (w->depth == SB_JSON_WRITER_DEPTH) {
        fail(w);
        return;
    }
    if (!put_char(w, is_object ? '{' : '['))
        return;
    w->depth++;
    uint32_t bit = top_bit(w);
    w->has_items &= ~bit;
    if (is_object)
        w->in_object |= bit;
    else
        w->in_object &= ~bit;
}

static void end_container(struct sb_json_writer *w, bool is_object)
{
    if (w->error)
        return;
    if (w->depth == 0 || w->after_key || !(w->in_object & top_bit(w)) != !is_object) {
        fail(w);
        return;
    }
    if (put_char(w, is_object ? '}' : ']'))
        w->depth--;
}

void sb_json_begin_object(struct sb_json_writer *w)
{
    begin_container(w, true);
}

void sb_json_end_object(struct sb_json_writer *w)
{
    end_container(w, true);
}

void sb_json_begin_array(struct sb_json_writer *w)
{
    begin_container(w, false);
}

void sb_json_end_array(struct sb_json_writer *w)
{
    end_container(w, false);
}

void sb_json_key(struct sb_json_writer *w, const char *key)
{
    if (w->error)
        return;
    if (!key || w->depth == 0 || !(w->in_object & top_bit(w)) || w->after_key) {
        fail(w);
        return;
    }
    uint32_t bit = top_bit(w);
    if ((w->has_items & bit) && !put_char(w, ','))
        return;
    w->has_items |= bit;
    put_string(w, key, strlen(key));
    put_char(w, ':');
    w->after_key = true;
}

void sb_json_str(struct sb_json_writer *w, const char *s, size_t len)
{
    if (begin_value(w))
        put_string(w, s, len);
}

void sb_json_cstr(struct sb_json_writer *w, const char *s)
{
    if (!s) {
        fail(w);
        return;
    }
    sb_json_str(w, s, strlen(s));
}

/* Formats v into the end of out[20]; returns where the digits start. */
static size_t format_u64(uint64_t v, char out[20])
{
    static const char pairs[] = "00010203040506070809101112131415161718192021222324"
                                "25262728293031323334353637383940414243444546474849"
                                "50515253545556575859606162636465666768697071727374"
                                "75767778798081828384858687888990919293949596979899";
    size_t i = 20;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        i -= 2;
        out[i] = pairs[2 * (size_t)r];
        out[i + 1] = pairs[2 * (size_t)r + 1];
    }
    if (v >= 10) {
        i -= 2;
        out[i] = pairs[2 * v];
        out[i + 1] = pairs[2 * v + 1];
    } else {
        out[--i] = (char)('0' + v);
    }
    return i;
}

static void put_number(struct sb_json_writer *w, bool neg, uint64_t magnitude)
{
    char digits[21];
    size_t i = 1 + format_u64(magnitude, digits + 1);
    if (neg)
        digits[--i] = '-';
    put(w, digits + i, sizeof digits - i);
}

void sb_json_int(struct sb_json_writer *w, int64_t v)
{
    if (begin_value(w))
        put_number(w, v < 0, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
}

void sb_json_uint(struct sb_json_writer *w, uint64_t v)
{
    if (begin_value(w))
        put_number(w, false, v);
}

void sb_json_bool(struct sb_json_writer *w, bool v)
{
    if (begin_value(w))
        put(w, v ? "true" : "false", v ? 4 : 5);
}

void sb_json_null(struct sb_json_writer *w)
{
    if (begin_value(w))
        put(w, "null", 4);
}

void sb_json_raw(struct sb_json_writer *w, const char *json, size_t len)
{
    if (w->error)
        return;
    /* Nothing is no value at all, and would leave the document malformed. */
    if (!json || len == 0) {
        fail(w);
        return;
    }
    if (begin_value(w))
        put(w, json, len);
}

ssize_t sb_json_finish(struct sb_json_writer *w)
{
    if (w->error)
        return w->len > w->cap ? -ENOSPC : -EINVAL;
    if (w->depth > 0 || w->len == 0)
        return -EINVAL;
    return (ssize_t)w->len;
}
