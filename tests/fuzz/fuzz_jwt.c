/*
 * libFuzzer target for proto/jwt. The first byte picks a mode ('0', '1', '2' as text):
 *
 *   0  the rest is a token, verified with two fixed keys (with and without kids) at assorted
 *      times; whatever comes back must be consistent (an accepted token's claims obey the rules,
 *      a refused one leaves the claims zeroed).
 *   1  the rest chooses sign's arguments (key, iat, exp, sub, scope) and then edits: the signed
 *      token must verify with exactly those claims, and any edit that changes a byte must be
 *      refused before the claims are read.
 *      Layout: flags, iat (8 bytes LE), exp (8), sub length, sub, scope length, scope, then
 *      edits of 3 bytes (op, position, value). Missing bytes read as zero.
 *   2  the rest is header JSON, a NUL, and claims JSON, which the target signs itself (with
 *      its own base64url and HMAC), so the claims parser sees arbitrary JSON behind a valid
 *      signature. An accepted token is signed again from its claims and must round-trip.
 *
 * Any inconsistency aborts.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "proto/jwt.h"
#include "proto/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW INT64_C(1700000000)
#define MAX_DATE (INT64_C(1) << 53)
#define BUF 16384

static const uint8_t secret_a[] = "fuzz secret A, thirty-two bytes!";
static const uint8_t secret_b[] = "fuzz secret B, thirty-two bytes!";
static const uint8_t secret_c[] = "fuzz secret C, which is unknown.";

static const struct sb_jwt_key keys_kid[] = {
    {.kid = "a", .secret = secret_a, .secret_len = 32},
    {.kid = "b", .secret = secret_b, .secret_len = 32},
};
static const struct sb_jwt_key keys_nokid[] = {
    {.kid = "", .secret = secret_a, .secret_len = 32},
    {.kid = "", .secret = secret_b, .secret_len = 32},
};

struct when {
    int64_t now, leeway_s;
    bool require_exp;
};

static const struct when whens[] = {
    {NOW, 0, false},       {NOW, 60, true},       {0, 0, false},           {MAX_DATE, 0, true},
    {INT64_MAX, 0, false}, {INT64_MIN, 5, false}, {NOW, INT64_MAX, false}, {NOW, INT64_MIN, true},
};

static void require(bool ok)
{
    if (!ok) {
        abort();
    }
}

/* ---- a second base64url encoder and a reader of the fuzzer's bytes ---- */

static size_t b64(const void *data, size_t len, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const uint8_t *in = data;
    size_t n = 0;

    for (size_t i = 0; i < len; i += 3) {
        size_t left = len - i;
        uint32_t g = (uint32_t)in[i] << 16 | (left > 1 ? (uint32_t)in[i + 1] << 8 : 0) |
                     (left > 2 ? in[i + 2] : 0);
        out[n++] = abc[g >> 18];
        out[n++] = abc[(g >> 12) & 63];
        if (left > 1) {
            out[n++] = abc[(g >> 6) & 63];
        }
        if (left > 2) {
            out[n++] = abc[g & 63];
        }
    }
    return n;
}

struct reader {
    const uint8_t *p;
    size_t left;
};

static uint8_t read_u8(struct reader *r)
{
    if (r->left == 0) {
        return 0;
    }
    r->left--;
    return *r->p++;
}

static uint64_t read_u64(struct reader *r)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)read_u8(r) << (8 * i);
    }
    return v;
}

/* A length byte and that many bytes, as a C string (cut at the first NUL, like sign sees it). */
static void read_text(struct reader *r, char *out)
{
    size_t n = read_u8(r);

    for (size_t i = 0; i < n; i++) {
        out[i] = (char)read_u8(r);
    }
    out[n] = '\0';
}

/* ---- invariants ---- */

static int64_t add_sat(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_add_overflow(a, b, &r) ? (b > 0 ? INT64_MAX : INT64_MIN) : r;
}

static int64_t sub_sat(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_sub_overflow(a, b, &r) ? (b < 0 ? INT64_MAX : INT64_MIN) : r;
}

static void check_date(bool has, int64_t v)
{
    require(has ? v >= 0 && v <= MAX_DATE : v == 0);
}

/* Every word of the scope is found by has_scope. */
static void check_scope_words(const struct sb_jwt_claims *c)
{
    char word[SB_JWT_MAX_SCOPE + 1];
    const char *p = c->scope;

    while (*p) {
        size_t n = strcspn(p, " ");
        if (n > 0) {
            memcpy(word, p, n);
            word[n] = '\0';
            require(sb_jwt_has_scope(c, word));
        }
        p += n;
        p += *p == ' ';
    }
}

static void check_result(enum sb_jwt_error e, const struct sb_jwt_claims *c, const struct when *w)
{
    const uint8_t *bytes = (const uint8_t *)c;

    require((unsigned)e <= SB_JWT_NO_EXPIRY);
    require(sb_jwt_strerror(e) != NULL);
    if (e != SB_JWT_OK) {
        /* The claims were filled with 0xa5; a refusal must leave every byte zero. */
        for (size_t i = 0; i < sizeof(*c); i++) {
            require(bytes[i] == 0);
        }
        return;
    }
    require(strnlen(c->sub, sizeof(c->sub)) >= 1 && strnlen(c->sub, sizeof(c->sub)) <= 128);
    require(strnlen(c->scope, sizeof(c->scope)) <= SB_JWT_MAX_SCOPE);
    require(sb_utf8_validate((const uint8_t *)c->sub, strlen(c->sub)) == 0);
    check_date(c->has_exp, c->exp);
    check_date(c->has_nbf, c->nbf);
    check_date(c->has_iat, c->iat);
    require(c->has_exp || !w->require_exp);
    require(!c->has_exp || w->now < add_sat(c->exp, w->leeway_s));
    require(!c->has_nbf || w->now >= sub_sat(c->nbf, w->leeway_s));
    check_scope_words(c);
}

static enum sb_jwt_error verify_with(const char *tok, size_t len, const struct sb_jwt_key *keys,
                                     const struct when *w, struct sb_jwt_claims *c)
{
    struct sb_jwt_verify_opts o = {.keys = keys,
                                   .nkeys = 2,
                                   .now = w->now,
                                   .leeway_s = w->leeway_s,
                                   .require_exp = w->require_exp};
    enum sb_jwt_error e;

    memset(c, 0xa5, sizeof(*c));
    e = sb_jwt_verify(tok, len, &o, c);
    check_result(e, c, w);
    return e;
}

/* Refusals decided before any time is looked at. */
static bool timeless(enum sb_jwt_error e)
{
    return e == SB_JWT_MALFORMED || e == SB_JWT_ALG || e == SB_JWT_UNKNOWN_KID ||
           e == SB_JWT_SIGNATURE || e == SB_JWT_NO_SUBJECT;
}

/* Verifies at every time in whens with both key sets (the same secrets, with and without kids). */
static void verify_everywhere(const char *tok, size_t len)
{
    struct sb_jwt_claims c;
    enum sb_jwt_error first = SB_JWT_OK;

    for (size_t i = 0; i < sizeof(whens) / sizeof(whens[0]); i++) {
        enum sb_jwt_error e1 = verify_with(tok, len, keys_kid, &whens[i], &c);
        enum sb_jwt_error e2 = verify_with(tok, len, keys_nokid, &whens[i], &c);
        /* Only a token's kid can tell the key sets apart, and none of the second set has one. */
        require(e1 == e2 ||
                (e2 == SB_JWT_UNKNOWN_KID && e1 != SB_JWT_MALFORMED && e1 != SB_JWT_ALG));
        if (i == 0) {
            first = e1;
        }
        require((!timeless(e1) && !timeless(first)) || e1 == first);
    }
}

static bool same_claims(const struct sb_jwt_claims *a, const struct sb_jwt_claims *b)
{
    return strcmp(a->sub, b->sub) == 0 && strcmp(a->scope, b->scope) == 0 &&
           a->has_exp == b->has_exp && a->exp == b->exp && a->has_iat == b->has_iat &&
           a->iat == b->iat;
}

/* ---- mode 1: sign, verify, edit ---- */

static bool text_ok(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);
    return n >= min && n <= max && sb_utf8_validate((const uint8_t *)s, n) == 0;
}

static int64_t read_date(struct reader *r, bool clamp)
{
    uint64_t v = read_u64(r);
    return clamp ? (int64_t)(v % (uint64_t)(MAX_DATE + 1)) : (int64_t)v;
}

/* Applies the remaining 3-byte edits; true when the token changed. */
static bool apply_edits(struct reader *r, char *tok, size_t *len, const char *orig, size_t olen)
{
    while (r->left > 0 && *len > 0) {
        uint8_t op = read_u8(r);
        size_t pos = (size_t)read_u8(r) | (size_t)(op >> 2) << 8;
        uint8_t v = read_u8(r);
        pos %= *len;
        switch (op & 3) {
        case 0:
            tok[pos] = (char)(tok[pos] ^ (v ? v : 1));
            break;
        case 1:
            memmove(tok + pos + 1, tok + pos, *len - pos);
            tok[pos] = (char)v;
            (*len)++;
            break;
        case 2:
            memmove(tok + pos, tok + pos + 1, *len - pos - 1);
            (*len)--;
            break;
        default:
            *len = pos;
            break;
        }
        if (*len > BUF / 2) {
            break;
        }
    }
    return *len != olen || memcmp(tok, orig, olen) != 0;
}

static void check_edits(struct reader *r, const char *orig, size_t olen)
{
    static const struct when w = {0, 0, false};
    char tok[BUF];
    size_t len = olen;
    struct sb_jwt_claims c;
    enum sb_jwt_error e;

    if (r->left == 0) {
        return;
    }
    memcpy(tok, orig, olen);
    if (apply_edits(r, tok, &len, orig, olen)) {
        e = verify_with(tok, len, keys_kid, &w, &c);
        require(e == SB_JWT_MALFORMED || e == SB_JWT_ALG || e == SB_JWT_UNKNOWN_KID ||
                e == SB_JWT_SIGNATURE);
        e = verify_with(tok, len, keys_nokid, &w, &c);
        require(e == SB_JWT_MALFORMED || e == SB_JWT_ALG || e == SB_JWT_UNKNOWN_KID ||
                e == SB_JWT_SIGNATURE);
    }
}

static void mode_sign(struct reader *r)
{
    static const struct when w = {0, 0, true};
    uint8_t flags = read_u8(r);
    const struct sb_jwt_key *key = flags & 2 ? &keys_nokid[flags & 1] : &keys_kid[flags & 1];
    int64_t iat = read_date(r, flags & 4), exp = read_date(r, flags & 8);
    char sub[256], scope[256], tok[BUF], again[BUF];
    const char *sc = flags & 16 ? NULL : scope;
    struct sb_jwt_claims c;
    bool valid;
    ssize_t n;

    read_text(r, sub);
    read_text(r, scope);
    valid = text_ok(sub, 1, SB_JWT_MAX_SUB) && (sc == NULL || text_ok(sc, 0, SB_JWT_MAX_SCOPE)) &&
            iat >= 0 && iat <= MAX_DATE && exp >= 0 && exp <= MAX_DATE;
    n = sb_jwt_sign(key, sub, iat, exp, sc, tok, sizeof(tok));
    require(valid ? n > 0 && n <= SB_JWT_MAX_TOKEN && (size_t)n == strlen(tok) : n == -EINVAL);
    if (n < 0) {
        return;
    }
    require(sb_jwt_sign(key, sub, iat, exp, sc, again, (size_t)n) == -ENOSPC);
    require(sb_jwt_sign(key, sub, iat, exp, sc, again, (size_t)n + 1) == n);
    require(memcmp(tok, again, (size_t)n + 1) == 0);

    /* now = 0 is before any exp we can sign but 0, which means none. Without a kid the token is
     * tried against both keys of the first set, so it verifies either way. */
    require(verify_with(tok, (size_t)n, keys_kid, &w, &c) ==
            (exp == 0 ? SB_JWT_NO_EXPIRY : SB_JWT_OK));
    if (exp != 0) {
        struct sb_jwt_claims want = {.iat = iat, .has_iat = true, .exp = exp, .has_exp = true};
        strcpy(want.sub, sub);
        strcpy(want.scope, sc == NULL ? "" : sc);
        require(same_claims(&c, &want) && !c.has_nbf);
        require(verify_with(tok, (size_t)n, keys_nokid, &w, &c) ==
                (key->kid[0] ? SB_JWT_UNKNOWN_KID : SB_JWT_OK));
    }
    check_edits(r, tok, (size_t)n);
}

/* ---- mode 2: arbitrary JSON behind a valid signature ---- */

static size_t mint(const uint8_t *header, size_t hlen, const uint8_t *payload, size_t plen,
                   const uint8_t *secret, char *out)
{
    uint8_t mac[32];
    unsigned mac_len = 0;
    size_t n = b64(header, hlen, out);

    out[n++] = '.';
    n += b64(payload, plen, out + n);
    HMAC(EVP_sha256(), secret, 32, (const uint8_t *)out, n, mac, &mac_len);
    out[n++] = '.';
    n += b64(mac, mac_len, out + n);
    return n;
}

/* An accepted token's claims, signed again, verify to the same claims. */
static void check_resign(const struct sb_jwt_claims *c)
{
    static const struct when w = {0, 0, false};
    char tok[BUF];
    struct sb_jwt_claims again;
    ssize_t n = sb_jwt_sign(&keys_kid[0], c->sub, c->iat, c->exp, c->scope, tok, sizeof(tok));

    require(n > 0);
    require(verify_with(tok, (size_t)n, keys_kid, &w, &again) == SB_JWT_OK);
    require(strcmp(again.sub, c->sub) == 0 && strcmp(again.scope, c->scope) == 0);
    /* exp 0 is a claim that is present and long past; sign leaves it out. */
    require(again.iat == c->iat && again.exp == c->exp && again.has_exp == (c->exp != 0));
}

static void mode_json(const uint8_t *data, size_t size)
{
    static const uint8_t default_header[] = "{\"alg\":\"HS256\"}";
    static const uint8_t *const secrets[] = {secret_a, secret_b, secret_c, secret_a};
    const uint8_t *nul;
    const uint8_t *header = default_header, *payload;
    size_t hlen = sizeof(default_header) - 1, plen;
    char tok[BUF * 2];
    size_t n;

    if (size < 1 || size > BUF / 2) {
        return;
    }
    payload = data + 1;
    plen = size - 1;
    nul = memchr(payload, 0, plen);
    if (nul != NULL) {
        header = payload;
        hlen = (size_t)(nul - payload);
        payload = nul + 1;
        plen = size - 1 - hlen - 1;
    }
    n = mint(header, hlen, payload, plen, secrets[data[0] & 3], tok);
    for (size_t i = 0; i < sizeof(whens) / sizeof(whens[0]); i++) {
        struct sb_jwt_claims c;
        enum sb_jwt_error e1 = verify_with(tok, n, keys_kid, &whens[i], &c);
        if (e1 == SB_JWT_OK) {
            require(n <= SB_JWT_MAX_TOKEN && (data[0] & 3) != 2);
            check_resign(&c);
        }
        if (verify_with(tok, n, keys_nokid, &whens[i], &c) == SB_JWT_OK) {
            require(n <= SB_JWT_MAX_TOKEN && (data[0] & 3) != 2);
            check_resign(&c);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reader r = {data + 1, size > 0 ? size - 1 : 0};

    if (size == 0) {
        return 0;
    }
    switch (data[0] % 3) {
    case 0:
        verify_everywhere((const char *)data + 1, size - 1);
        break;
    case 1:
        mode_sign(&r);
        break;
    default:
        mode_json(data + 1, size - 1);
        break;
    }
    return 0;
}
