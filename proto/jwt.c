/*
 * JWT HS256: strict base64url, a header that must say HS256, HMAC-SHA256 checked in constant time
 * against the configured keys, and only then the claims.
 *
 * Choices the RFCs leave open, made here once:
 * - A member name that occurs twice in the header or the claims (among the names we read) makes
 *   the token MALFORMED: RFC 7515 section 4 allows rejecting duplicates, and the tokenizer's
 *   lookup would otherwise see the first while other libraries see the last.
 * - Wrong JSON types (alg, typ, kid, exp, nbf, iat, scope) are MALFORMED; a missing or different
 *   "alg" and a "typ" other than JWT are ALG; a wrong or missing "sub" is NO_SUBJECT.
 * - An empty "kid" names no key (keys with kid "" have no id), so it is UNKNOWN_KID.
 * - A key with an empty secret verifies nothing and signs nothing.
 */
#include "proto/jwt.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

/* BoringSSL's crypto.h includes mem.h (CRYPTO_memcmp, OPENSSL_cleanse); OpenSSL 3 declares
 * both in crypto.h itself. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "proto/json.h"
#include "proto/utf8.h"

#define SIG_LEN 32      /* HMAC-SHA256 */
#define SIG_B64_LEN 43  /* 32 bytes in unpadded base64url */
#define JSON_TOKENS 256 /* per header or claims set; more is MALFORMED */
#define JSON_DEPTH 16
#define MAX_DECODED (SB_JWT_MAX_TOKEN / 4 * 3)
#define MAX_NUMERIC_DATE ((int64_t)1 << 53) /* the largest integer a double holds exactly */

/* What sb_jwt_sign writes, at worst: every character of kid, sub and scope escaped as \u00XX,
 * two 16-digit dates, and the fixed punctuation with room to spare. */
#define HEADER_JSON_MAX (64 + 6 * SB_JWT_MAX_KID)
#define CLAIMS_JSON_MAX (128 + 6 * SB_JWT_MAX_SUB + 6 * SB_JWT_MAX_SCOPE + 2 * 20)
#define B64_LEN(n) ((n) / 3 * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))

/* Whatever we mint must verify, so it must fit the verifier's limit. */
_Static_assert(B64_LEN(HEADER_JSON_MAX) + B64_LEN(CLAIMS_JSON_MAX) + SIG_B64_LEN + 2 <=
                   SB_JWT_MAX_TOKEN,
               "a minted token can exceed SB_JWT_MAX_TOKEN");

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The three dot-separated parts of a token, as offsets into it. */
struct jwt_parts {
    const char *header, *payload, *sig;
    size_t header_len, payload_len, sig_len;
    size_t signed_len; /* "<header>.<payload>": what the signature covers */
};

struct jwt_header {
    char kid[SB_JWT_MAX_KID + 1];
    size_t kid_len;
    bool has_kid;
};

/* ---- base64url (RFC 4648 section 5), unpadded ---- */

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '-') {
        return 62;
    }
    return c == '_' ? 63 : -1;
}

/*
 * Decodes len characters into out (room for len / 4 * 3 + 2 bytes), or only validates them when
 * out is NULL. Returns the decoded length, or -1 for anything but the one canonical encoding:
 * a character outside the alphabet (padding included), a length that leaves 6 stray bits, or
 * non-zero bits left over after the last whole byte.
 */
static ssize_t b64url_decode(const char *in, size_t len, uint8_t *out)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t n = 0;

    if (len % 4 == 1) {
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0) {
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (out != NULL) {
                out[n] = (uint8_t)(acc >> bits);
            }
            n++;
            acc &= (1u << bits) - 1;
        }
    }
    /* Leftover bits must be zero, or several strings would decode to the same bytes. */
    return acc == 0 ? (ssize_t)n : -1;
}

/* Encodes len bytes into out (room for B64_LEN(len) characters, no NUL). Returns the length. */
static size_t b64url_encode(const uint8_t *in, size_t len, char *out)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[n++] = b64url_alphabet[(acc >> bits) & 63];
        }
        acc &= (1u << bits) - 1;
    }
    if (bits > 0) {
        out[n++] = b64url_alphabet[(acc << (6 - bits)) & 63];
    }
    return n;
}

/* ---- token structure ---- */

/* Splits at exactly two dots. */
static bool split_parts(const char *token, size_t len, struct jwt_parts *p)
{
    const char *dot1 = memchr(token, '.', len);
    const char *dot2;
    const char *end = token + len;

    if (dot1 == NULL) {
        return false;
    }
    dot2 = memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1));
    if (dot2 == NULL || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)) != NULL) {
        return false;
    }
    p->header = token;
    p->header_len = (size_t)(dot1 - token);
    p->payload = dot1 + 1;
    p->payload_len = (size_t)(dot2 - p->payload);
    p->sig = dot2 + 1;
    p->sig_len = (size_t)(end - p->sig);
    p->signed_len = (size_t)(dot2 - token);
    return true;
}

/* ---- JSON helpers ---- */

/* Parses a JSON text that must be an object; toks has JSON_TOKENS entries. */
static bool parse_object(const char *json, size_t len, struct sb_json_tok *toks)
{
    static const struct sb_json_limits lim = {.max_tokens = JSON_TOKENS, .max_depth = JSON_DEPTH};

    return sb_json_parse(json, len, &lim, toks) > 0 && toks[0].type == SB_JSON_OBJECT;
}

/*
 * The token index of member `name`'s value in the object at toks[0]: -1 when absent, -2 when
 * the name occurs more than once.
 */
static int find_member(const char *json, const struct sb_json_tok *toks, const char *name)
{
    int found = -1;
    uint32_t key = 1;

    for (uint32_t m = 0; m < toks[0].size; m++) {
        if (sb_json_eq(json, &toks[key], name)) {
            if (found >= 0) {
                return -2;
            }
            found = (int)key + 1;
        }
        key = toks[key + 1].next;
    }
    return found;
}

/* Copies a STRING token unescaped into out (cap bytes). Returns its length, or -1 when it is
 * not a string, does not fit, or holds a NUL (which would silently cut a C string short). */
static ssize_t copy_string(const char *json, const struct sb_json_tok *tok, char *out, size_t cap)
{
    ssize_t n;

    if (tok->type != SB_JSON_STRING) {
        return -1;
    }
    n = sb_json_string(json, tok, out, cap);
    if (n < 0 || memchr(out, '\0', (size_t)n) != NULL) {
        return -1;
    }
    return n;
}

/* ---- header ---- */

static enum sb_jwt_error check_alg(const char *json, const struct sb_json_tok *toks, int alg)
{
    if (alg < 0) {
        return SB_JWT_ALG;
    }
    if (toks[alg].type != SB_JSON_STRING) {
        return SB_JWT_MALFORMED;
    }
    /* Exact and case-sensitive (RFC 7515 section 4.1.1): "hs256" and "none" are refused. */
    return sb_json_eq(json, &toks[alg], "HS256") ? SB_JWT_OK : SB_JWT_ALG;
}

static enum sb_jwt_error check_typ(const char *json, const struct sb_json_tok *toks, int typ)
{
    char v[4];

    if (typ < 0) {
        return SB_JWT_OK;
    }
    if (toks[typ].type != SB_JSON_STRING) {
        return SB_JWT_MALFORMED;
    }
    /* Media type names are case-insensitive (RFC 7519 section 5.1). */
    if (copy_string(json, &toks[typ], v, sizeof(v)) != 3 || strcasecmp(v, "JWT") != 0) {
        return SB_JWT_ALG;
    }
    return SB_JWT_OK;
}

static enum sb_jwt_error read_kid(const char *json, const struct sb_json_tok *toks, int kid,
                                  struct jwt_header *h)
{
    ssize_t n;

    if (kid < 0) {
        return SB_JWT_OK;
    }
    n = copy_string(json, &toks[kid], h->kid, sizeof(h->kid));
    if (n < 0) {
        return SB_JWT_MALFORMED;
    }
    h->has_kid = true;
    h->kid_len = (size_t)n;
    return SB_JWT_OK;
}

static enum sb_jwt_error parse_header(const char *json, size_t len, struct jwt_header *h)
{
    struct sb_json_tok toks[JSON_TOKENS];
    enum sb_jwt_error e;
    int alg, typ, kid;

    if (!parse_object(json, len, toks)) {
        return SB_JWT_MALFORMED;
    }
    alg = find_member(json, toks, "alg");
    typ = find_member(json, toks, "typ");
    kid = find_member(json, toks, "kid");
    /* "crit" lists extensions the recipient must understand; we understand none. */
    if (alg == -2 || typ == -2 || kid == -2 || find_member(json, toks, "crit") != -1) {
        return SB_JWT_MALFORMED;
    }
    e = check_alg(json, toks, alg);
    if (e == SB_JWT_OK) {
        e = check_typ(json, toks, typ);
    }
    if (e == SB_JWT_OK) {
        e = read_kid(json, toks, kid, h);
    }
    return e;
}

/* ---- signature ---- */

static bool hmac_sha256(const struct sb_jwt_key *key, const void *data, size_t len,
                        uint8_t mac[SIG_LEN])
{
    unsigned int mac_len = 0;

    if (key->secret == NULL || key->secret_len == 0 || key->secret_len > INT_MAX) {
        return false;
    }
    /* The key length is int in OpenSSL and size_t in BoringSSL; an int converts to both. */
    return HMAC(EVP_sha256(), key->secret, (int)key->secret_len, data, len, mac, &mac_len) !=
               NULL &&
           mac_len == SIG_LEN;
}

static bool key_verifies(const struct sb_jwt_key *key, const char *data, size_t len,
                         const uint8_t sig[SIG_LEN])
{
    uint8_t mac[SIG_LEN];
    bool ok = hmac_sha256(key, data, len, mac) && CRYPTO_memcmp(mac, sig, SIG_LEN) == 0;

    /* The correct MAC of an attacker's message is a forgery: leave none on the stack. */
    OPENSSL_cleanse(mac, sizeof(mac));
    return ok;
}

static bool kid_matches(const struct sb_jwt_key *key, const struct jwt_header *h)
{
    size_t n = strnlen(key->kid, sizeof(key->kid));

    return n > 0 && n == h->kid_len && memcmp(key->kid, h->kid, n) == 0;
}

static enum sb_jwt_error check_signature(const struct jwt_parts *p, const uint8_t sig[SIG_LEN],
                                         const struct jwt_header *h,
                                         const struct sb_jwt_verify_opts *o)
{
    bool kid_known = false;

    for (size_t i = 0; i < o->nkeys; i++) {
        if (h->has_kid && !kid_matches(&o->keys[i], h)) {
            continue;
        }
        kid_known = true;
        if (key_verifies(&o->keys[i], p->header, p->signed_len, sig)) {
            return SB_JWT_OK;
        }
    }
    return h->has_kid && !kid_known ? SB_JWT_UNKNOWN_KID : SB_JWT_SIGNATURE;
}

/* ---- claims ---- */

/* A number's integer and fraction digits, read as one run: digit k counts across the point. */
struct digit_run {
    const char *ip, *fp;
    size_t ni, nf;
};

static int digit_at(const struct digit_run *r, size_t k)
{
    return (k < r->ni ? r->ip[k] : r->fp[k - r->ni]) - '0';
}

static size_t skip_digits(const char *s, size_t i, size_t len)
{
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        i++;
    }
    return i;
}

/* Reads the exponent digits at s[i..len), saturating far beyond any meaningful shift. */
static size_t read_exponent(const char *s, size_t i, size_t len, int64_t *e)
{
    bool neg = i < len && s[i] == '-';
    int64_t v = 0;

    if (i < len && (s[i] == '-' || s[i] == '+')) {
        i++;
    }
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        v = v < 1000000 ? v * 10 + (s[i] - '0') : v;
    }
    *e = neg ? -v : v;
    return i;
}

/* Splits a JSON number's text into sign, digits and exponent; false when it is not one. */
static bool split_number(const char *s, size_t len, bool *neg, struct digit_run *r, int64_t *e)
{
    size_t i = 0, mark;

    *neg = len > 0 && s[0] == '-';
    i = *neg ? 1 : 0;
    mark = i;
    i = skip_digits(s, i, len);
    r->ip = s + mark;
    r->ni = i - mark;
    r->fp = s + i;
    r->nf = 0;
    *e = 0;
    if (i < len && s[i] == '.') {
        mark = ++i;
        i = skip_digits(s, i, len);
        r->fp = s + mark;
        r->nf = i - mark;
        if (r->nf == 0) {
            return false;
        }
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        mark = i + 1;
        i = read_exponent(s, mark, len, e);
        if (i == mark || s[i - 1] < '0' || s[i - 1] > '9') {
            return false;
        }
    }
    return r->ni > 0 && i == len;
}

/*
 * A NumericDate (RFC 7519 section 2) is any JSON number of seconds; fractions and exponents are
 * allowed, and we keep the whole seconds. Negative values and values above 2^53 are refused.
 */
static bool numeric_date(const char *s, size_t len, int64_t *out)
{
    struct digit_run r;
    bool neg;
    int64_t e, v = 0, whole;
    size_t ndigits, k;

    if (!split_number(s, len, &neg, &r, &e)) {
        return false;
    }
    ndigits = r.ni + r.nf;
    /* How many leading digits form the integer part once the exponent has moved the point. */
    whole = (int64_t)r.ni + e;
    for (k = 0; (int64_t)k < whole && k < ndigits; k++) {
        v = v * 10 + digit_at(&r, k);
        if (v > MAX_NUMERIC_DATE) {
            return false;
        }
    }
    /* Trailing zeros the exponent adds; a zero stays zero however far it is shifted. */
    for (; (int64_t)k < whole && v != 0; k++) {
        v *= 10;
        if (v > MAX_NUMERIC_DATE) {
            return false;
        }
    }
    if (neg) {
        for (k = 0; k < ndigits; k++) {
            if (digit_at(&r, k) != 0) {
                return false;
            }
        }
    }
    *out = v;
    return true;
}

/* Reads an optional date claim. False when present but not a valid NumericDate. */
static bool read_date(const char *json, const struct sb_json_tok *toks, int idx, int64_t *v,
                      bool *has)
{
    if (idx < 0) {
        return true;
    }
    if (toks[idx].type != SB_JSON_NUMBER ||
        !numeric_date(json + toks[idx].start, toks[idx].len, v)) {
        return false;
    }
    *has = true;
    return true;
}

/*
 * Reads "scope": a space-separated string (RFC 8693 section 4.2), or an array of scope words
 * that are joined with single spaces. An array element must be a non-empty string without a
 * space, or the words after joining would differ from the words in the token.
 */
static bool read_scope(const char *json, const struct sb_json_tok *toks, int idx, char *out)
{
    const size_t cap = SB_JWT_MAX_SCOPE + 1;
    size_t len = 0;
    uint32_t el;

    out[0] = '\0';
    if (idx < 0) {
        return true;
    }
    if (toks[idx].type != SB_JSON_ARRAY) {
        return copy_string(json, &toks[idx], out, cap) >= 0;
    }
    el = (uint32_t)idx + 1;
    for (uint32_t m = 0; m < toks[idx].size; m++) {
        ssize_t n;
        if (len > 0) {
            out[len++] = ' ';
        }
        n = len < cap ? copy_string(json, &toks[el], out + len, cap - len) : -1;
        if (n <= 0 || memchr(out + len, ' ', (size_t)n) != NULL) {
            out[0] = '\0';
            return false;
        }
        len += (size_t)n;
        el = toks[el].next;
    }
    return true;
}

static enum sb_jwt_error read_sub(const char *json, const struct sb_json_tok *toks, int idx,
                                  char *out)
{
    if (idx < 0 || copy_string(json, &toks[idx], out, SB_JWT_MAX_SUB + 1) <= 0) {
        out[0] = '\0';
        return SB_JWT_NO_SUBJECT;
    }
    return SB_JWT_OK;
}

static enum sb_jwt_error parse_claims(const char *json, size_t len, struct sb_jwt_claims *c)
{
    struct sb_json_tok toks[JSON_TOKENS];
    int sub, exp, nbf, iat, scope;

    if (!parse_object(json, len, toks)) {
        return SB_JWT_MALFORMED;
    }
    sub = find_member(json, toks, "sub");
    exp = find_member(json, toks, "exp");
    nbf = find_member(json, toks, "nbf");
    iat = find_member(json, toks, "iat");
    scope = find_member(json, toks, "scope");
    if (sub == -2 || exp == -2 || nbf == -2 || iat == -2 || scope == -2) {
        return SB_JWT_MALFORMED;
    }
    if (!read_date(json, toks, exp, &c->exp, &c->has_exp) ||
        !read_date(json, toks, nbf, &c->nbf, &c->has_nbf) ||
        !read_date(json, toks, iat, &c->iat, &c->has_iat) ||
        !read_scope(json, toks, scope, c->scope)) {
        return SB_JWT_MALFORMED;
    }
    return read_sub(json, toks, sub, c->sub);
}

static int64_t add_saturated(int64_t a, int64_t b)
{
    int64_t r;

    if (__builtin_add_overflow(a, b, &r)) {
        return b > 0 ? INT64_MAX : INT64_MIN;
    }
    return r;
}

static int64_t sub_saturated(int64_t a, int64_t b)
{
    int64_t r;

    if (__builtin_sub_overflow(a, b, &r)) {
        return b < 0 ? INT64_MAX : INT64_MIN;
    }
    return r;
}

static enum sb_jwt_error check_times(const struct sb_jwt_claims *c,
                                     const struct sb_jwt_verify_opts *o)
{
    if (!c->has_exp && o->require_exp) {
        return SB_JWT_NO_EXPIRY;
    }
    if (c->has_exp && o->now >= add_saturated(c->exp, o->leeway_s)) {
        return SB_JWT_EXPIRED;
    }
    if (c->has_nbf && o->now < sub_saturated(c->nbf, o->leeway_s)) {
        return SB_JWT_NOT_YET;
    }
    return SB_JWT_OK;
}

/* ---- public ---- */

const char *sb_jwt_strerror(enum sb_jwt_error e)
{
    static const char *const msg[] = {
        [SB_JWT_OK] = "ok",
        [SB_JWT_MALFORMED] = "malformed token",
        [SB_JWT_ALG] = "unsupported algorithm or type",
        [SB_JWT_UNKNOWN_KID] = "unknown key id",
        [SB_JWT_SIGNATURE] = "bad signature",
        [SB_JWT_EXPIRED] = "expired",
        [SB_JWT_NOT_YET] = "not yet valid",
        [SB_JWT_NO_SUBJECT] = "missing or invalid subject",
        [SB_JWT_NO_EXPIRY] = "missing expiry",
    };

    if ((unsigned)e >= sizeof(msg) / sizeof(msg[0])) {
        return "unknown error";
    }
    return msg[e];
}

/* Checks the base64url of all three parts and decodes the header into buf. */
static enum sb_jwt_error decode_header(const struct jwt_parts *p, char *buf, struct jwt_header *h)
{
    ssize_t n = b64url_decode(p->header, p->header_len, (uint8_t *)buf);

    if (n < 0 || b64url_decode(p->payload, p->payload_len, NULL) < 0 ||
        b64url_decode(p->sig, p->sig_len, NULL) < 0) {
        return SB_JWT_MALFORMED;
    }
    return parse_header(buf, (size_t)n, h);
}

enum sb_jwt_error sb_jwt_verify(const char *token, size_t len,
                                const struct sb_jwt_verify_opts *opts, struct sb_jwt_claims *out)
{
    /* Holds the decoded header, and later the decoded claims. */
    char buf[MAX_DECODED];
    uint8_t sig[SIG_LEN];
    struct jwt_parts p;
    struct jwt_header h = {0};
    struct sb_jwt_claims c = {0};
    enum sb_jwt_error e;
    ssize_t n;

    assert(opts != NULL && out != NULL);
    memset(out, 0, sizeof(*out));
    if (token == NULL || len > SB_JWT_MAX_TOKEN || !split_parts(token, len, &p)) {
        return SB_JWT_MALFORMED;
    }
    e = decode_header(&p, buf, &h);
    if (e != SB_JWT_OK) {
        return e;
    }
    if (p.sig_len != SIG_B64_LEN) {
        return SB_JWT_SIGNATURE;
    }
    (void)b64url_decode(p.sig, p.sig_len, sig);
    e = check_signature(&p, sig, &h, opts);
    if (e != SB_JWT_OK) {
        return e;
    }
    n = b64url_decode(p.payload, p.payload_len, (uint8_t *)buf);
    e = parse_claims(buf, (size_t)n, &c);
    if (e == SB_JWT_OK) {
        e = check_times(&c, opts);
    }
    if (e == SB_JWT_OK) {
        *out = c;
    }
    return e;
}

bool sb_jwt_has_scope(const struct sb_jwt_claims *c, const char *word)
{
    size_t n = word != NULL ? strlen(word) : 0;
    const char *p = c->scope;
    const char *end = p + strnlen(c->scope, sizeof(c->scope));

    if (n == 0) {
        return false;
    }
    while (p < end) {
        const char *space = memchr(p, ' ', (size_t)(end - p));
        const char *stop = space != NULL ? space : end;
        if ((size_t)(stop - p) == n && memcmp(p, word, n) == 0) {
            return true;
        }
        p = stop + 1;
    }
    return false;
}

/* A C string of 1..max bytes (or 0..max when may_be_empty) that is valid UTF-8. */
static bool text_ok(const char *s, size_t max, bool may_be_empty)
{
    size_t n = strnlen(s, max + 1);

    return n <= max && (n > 0 || may_be_empty) && sb_utf8_validate((const uint8_t *)s, n) == 0;
}

static bool sign_args_ok(const struct sb_jwt_key *key, const char *sub, int64_t iat, int64_t exp,
                         const char *scope)
{
    return key != NULL && key->secret != NULL && key->secret_len > 0 &&
           key->secret_len <= INT_MAX && text_ok(key->kid, SB_JWT_MAX_KID, true) && sub != NULL &&
           text_ok(sub, SB_JWT_MAX_SUB, false) &&
           (scope == NULL || text_ok(scope, SB_JWT_MAX_SCOPE, true)) && iat >= 0 &&
           iat <= MAX_NUMERIC_DATE && exp >= 0 && exp <= MAX_NUMERIC_DATE;
}

static ssize_t write_header(const struct sb_jwt_key *key, char *buf, size_t cap)
{
    struct sb_json_writer w;

    sb_json_writer_init(&w, buf, cap);
    sb_json_begin_object(&w);
    sb_json_key(&w, "alg");
    sb_json_cstr(&w, "HS256");
    sb_json_key(&w, "typ");
    sb_json_cstr(&w, "JWT");
    if (key->kid[0] != '\0') {
        sb_json_key(&w, "kid");
        sb_json_cstr(&w, key->kid);
    }
    sb_json_end_object(&w);
    return sb_json_finish(&w);
}

static ssize_t write_claims(const char *sub, int64_t iat, int64_t exp, const char *scope, char *buf,
                            size_t cap)
{
    struct sb_json_writer w;

    sb_json_writer_init(&w, buf, cap);
    sb_json_begin_object(&w);
    sb_json_key(&w, "sub");
    sb_json_cstr(&w, sub);
    sb_json_key(&w, "iat");
    sb_json_int(&w, iat);
    if (exp != 0) {
        sb_json_key(&w, "exp");
        sb_json_int(&w, exp);
    }
    if (scope != NULL && scope[0] != '\0') {
        sb_json_key(&w, "scope");
        sb_json_cstr(&w, scope);
    }
    sb_json_end_object(&w);
    return sb_json_finish(&w);
}

ssize_t sb_jwt_sign(const struct sb_jwt_key *key, const char *sub, int64_t iat, int64_t exp,
                    const char *scope, char *out, size_t cap)
{
    char header[HEADER_JSON_MAX], claims[CLAIMS_JSON_MAX];
    uint8_t mac[SIG_LEN];
    ssize_t hn, cn;
    size_t n;

    if (!sign_args_ok(key, sub, iat, exp, scope)) {
        return -EINVAL;
    }
    hn = write_header(key, header, sizeof(header));
    cn = write_claims(sub, iat, exp, scope, claims, sizeof(claims));
    if (hn < 0 || cn < 0) {
        /* Cannot happen: the arguments were checked and the buffers fit the worst case. */
        return -EINVAL;
    }
    if (B64_LEN((size_t)hn) + B64_LEN((size_t)cn) + SIG_B64_LEN + 3 > cap) {
        return -ENOSPC;
    }
    n = b64url_encode((const uint8_t *)header, (size_t)hn, out);
    out[n++] = '.';
    n += b64url_encode((const uint8_t *)claims, (size_t)cn, out + n);
    if (!hmac_sha256(key, out, n, mac)) {
        return -EINVAL;
    }
    out[n++] = '.';
    n += b64url_encode(mac, SIG_LEN, out + n);
    out[n] = '\0';
    return (ssize_t)n;
}
