/*
 * Unit tests for proto/jwt: known answers (ours computed independently, and RFC 7515 A.1),
 * round trips, every refusal reason, key rotation, leeway edges, NumericDate forms, strict
 * base64url, single-byte corruption of whole tokens, and the length limit at a PROT_NONE page.
 *
 * Tokens with hand-written JSON are minted here with the test's own base64url encoder and
 * HMAC() directly, so the code under test never checks its own output alone.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "check.h"
#include "proto/jwt.h"

#define NOW 1700000000
#define TOKEN_CAP 16384

static const uint8_t secret1[] = "0123456789abcdef0123456789abcdef";
static const uint8_t secret2[] = "another secret, also 32 bytes!!!";
static const uint8_t secret3[] = "a third secret that nobody knows";

static const struct sb_jwt_key key1 = {.kid = "k1", .secret = secret1, .secret_len = 32};
static const struct sb_jwt_key key1_nokid = {.kid = "", .secret = secret1, .secret_len = 32};

/* Computed with Python's hmac and base64 modules. */
static const char known_k1[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0."
    "eyJzdWIiOiJhbGljZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAzNjAwLCJzY29wZSI6InJlYWQgd3JpdGUif"
    "Q.NPur6v16rd6z4hqknO_mGngFvhv9K4oH8eq-7lDXlVM";
static const char known_nokid[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJib2IiLCJpYXQiOjB9"
    ".8BIassrQo8npFqlxcgbuu7d3Gv8b87aKL9YVb481-8A";

/* RFC 7515 Appendix A.1: its JWK "k" and the complete JWS. */
static const char rfc_jwk_k[] =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
static const char rfc_token[] =
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVl"
    "fQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/* ---- helpers ---- */

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Unpadded base64url in 3-byte groups; appends to out and returns the characters written. */
static size_t b64(const void *data, size_t len, char *out)
{
    const uint8_t *in = data;
    size_t n = 0, i = 0;

    for (; i + 3 <= len; i += 3) {
        uint32_t g = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[n++] = alphabet[g >> 18];
        out[n++] = alphabet[(g >> 12) & 63];
        out[n++] = alphabet[(g >> 6) & 63];
        out[n++] = alphabet[g & 63];
    }
    if (len - i == 1) {
        out[n++] = alphabet[in[i] >> 2];
        out[n++] = alphabet[(in[i] & 3) << 4];
    } else if (len - i == 2) {
        uint32_t g = (uint32_t)in[i] << 8 | in[i + 1];
        out[n++] = alphabet[g >> 10];
        out[n++] = alphabet[(g >> 4) & 63];
        out[n++] = alphabet[(g & 15) << 2];
    }
    return n;
}

static size_t unb64(const char *in, uint8_t *out)
{
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;

    for (; *in; in++) {
        acc = acc << 6 | (uint32_t)(strchr(alphabet, *in) - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return n;
}

/* "<b64 header>.<b64 payload>.<b64 HMAC>" with the given secret (NULL: the signature part is
 * sig_text verbatim). Returns the length; out has TOKEN_CAP bytes. */
static size_t mint_raw(char *out, const char *header, const char *payload, const uint8_t *secret,
                       size_t secret_len, const char *sig_text)
{
    uint8_t mac[32];
    unsigned mac_len = 0;
    size_t n = b64(header, strlen(header), out);

    out[n++] = '.';
    n += b64(payload, strlen(payload), out + n);
    if (secret != NULL) {
        HMAC(EVP_sha256(), secret, (int)secret_len, (const uint8_t *)out, n, mac, &mac_len);
        out[n++] = '.';
        n += b64(mac, mac_len, out + n);
    } else {
        n += (size_t)sprintf(out + n, ".%s", sig_text);
    }
    out[n] = '\0';
    return n;
}

static size_t mint(char *out, const char *header, const char *payload)
{
    return mint_raw(out, header, payload, secret1, 32, NULL);
}

static enum sb_jwt_error verify_opts(const char *tok, const struct sb_jwt_verify_opts *o,
                                     struct sb_jwt_claims *c)
{
    return sb_jwt_verify(tok, strlen(tok), o, c);
}

/* Verifies with key1 and key1_nokid at NOW, no leeway, exp optional. */
static enum sb_jwt_error verify(const char *tok, struct sb_jwt_claims *c)
{
    struct sb_jwt_verify_opts o = {.keys = &key1, .nkeys = 1, .now = NOW};
    struct sb_jwt_claims scratch;

    return verify_opts(tok, &o, c != NULL ? c : &scratch);
}

/* Verifies a token minted from this header (HS256) and payload with secret1. */
static enum sb_jwt_error verify_payload(const char *payload, struct sb_jwt_claims *c)
{
    char tok[TOKEN_CAP];

    mint(tok, "{\"alg\":\"HS256\"}", payload);
    return verify(tok, c);
}

static enum sb_jwt_error verify_header(const char *header)
{
    char tok[TOKEN_CAP];

    mint(tok, header, "{\"sub\":\"alice\"}");
    return verify(tok, NULL);
}

/* Verifies {"sub":"a","iat":<text>} and returns the error; *iat gets the claim. */
static enum sb_jwt_error iat_of(const char *text, int64_t *iat)
{
    char payload[256];
    struct sb_jwt_claims c;
    enum sb_jwt_error e;

    snprintf(payload, sizeof(payload), "{\"sub\":\"a\",\"iat\":%s}", text);
    e = verify_payload(payload, &c);
    *iat = c.has_iat ? c.iat : -1;
    return e;
}

/* ---- known answers and round trips ---- */

static void test_known_answers(void)
{
    char out[TOKEN_CAP];
    struct sb_jwt_claims c;

    CHECK_INT(sb_jwt_sign(&key1, "alice", NOW, NOW + 3600, "read write", out, sizeof(out)),
              strlen(known_k1));
    CHECK_STR(out, known_k1);
    CHECK_INT(sb_jwt_sign(&key1_nokid, "bob", 0, 0, NULL, out, sizeof(out)), strlen(known_nokid));
    CHECK_STR(out, known_nokid);
    CHECK_INT(sb_jwt_sign(&key1_nokid, "bob", 0, 0, "", out, sizeof(out)), strlen(known_nokid));
    CHECK_STR(out, known_nokid);

    CHECK_INT(verify(known_k1, &c), SB_JWT_OK);
    CHECK_STR(c.sub, "alice");
    CHECK_STR(c.scope, "read write");
    CHECK(c.has_exp && c.has_iat && !c.has_nbf);
    CHECK_INT(c.exp, NOW + 3600);
    CHECK_INT(c.iat, NOW);
    CHECK_INT(c.nbf, 0);

    CHECK_INT(verify(known_nokid, &c), SB_JWT_OK);
    CHECK_STR(c.sub, "bob");
    CHECK_STR(c.scope, "");
    CHECK(!c.has_exp && c.has_iat && !c.has_nbf);
    CHECK_INT(c.iat, 0);
}

static void test_round_trip(void)
{
    static const char *const subs[] = {"x",
                                       "user:42",
                                       "caf\xc3\xa9",
                                       "quote\"back\\slash",
                                       "tab\tnewline\n\x01\x1f\x7f",
                                       "\xf0\x9f\x98\x80"};
    char a[TOKEN_CAP], b[TOKEN_CAP];
    struct sb_jwt_claims c;

    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        ssize_t n =
            sb_jwt_sign(&key1, subs[i], 12345, NOW + 1, "chat:read  chat:write", a, sizeof(a));
        CHECK(n > 0);
        CHECK_INT(
            sb_jwt_sign(&key1, subs[i], 12345, NOW + 1, "chat:read  chat:write", b, sizeof(b)), n);
        CHECK_STR(a, b); /* deterministic */
        CHECK_INT(strlen(a), n);
        CHECK_INT(verify(a, &c), SB_JWT_OK);
        CHECK_STR(c.sub, subs[i]);
        CHECK_STR(c.scope, "chat:read  chat:write");
        CHECK_INT(c.iat, 12345);
        CHECK_INT(c.exp, NOW + 1);
    }
}

/* The longest token sign can make: every kid, sub and scope byte escaped, 16-digit dates. */
static void test_sign_worst_case(void)
{
    struct sb_jwt_key k = {.secret = secret2, .secret_len = 32};
    char sub[SB_JWT_MAX_SUB + 1], scope[SB_JWT_MAX_SCOPE + 1], out[TOKEN_CAP];
    struct sb_jwt_claims c;
    struct sb_jwt_verify_opts o = {.keys = &k, .nkeys = 1, .now = 0, .require_exp = true};
    ssize_t n;

    memset(k.kid, 0x01, SB_JWT_MAX_KID);
    memset(sub, 0x02, SB_JWT_MAX_SUB);
    sub[SB_JWT_MAX_SUB] = '\0';
    memset(scope, 0x03, SB_JWT_MAX_SCOPE);
    scope[SB_JWT_MAX_SCOPE] = '\0';
    n = sb_jwt_sign(&k, sub, INT64_C(1) << 53, INT64_C(1) << 53, scope, out, sizeof(out));
    CHECK(n > 3000 && n <= SB_JWT_MAX_TOKEN);
    CHECK_INT(verify_opts(out, &o, &c), SB_JWT_OK);
    CHECK_STR(c.sub, sub);
    CHECK_STR(c.scope, scope);
    CHECK_INT(c.exp, INT64_C(1) << 53);
}

static void test_sign_errors(void)
{
    char sub129[130], scope257[258], out[TOKEN_CAP], small[TOKEN_CAP];
    struct sb_jwt_key nosecret = {.kid = "x", .secret = secret1, .secret_len = 0};
    struct sb_jwt_key nullsecret = {.kid = "x", .secret = NULL, .secret_len = 32};
    struct sb_jwt_key badkid = {.kid = "\xff", .secret = secret1, .secret_len = 32};
    struct sb_jwt_key fullkid = {.secret = secret1, .secret_len = 32};
    const int64_t max = INT64_C(1) << 53;
    ssize_t n;

    memset(sub129, 'u', 129);
    sub129[129] = '\0';
    memset(scope257, 's', 257);
    scope257[257] = '\0';
    memset(fullkid.kid, 'k', SB_JWT_MAX_KID);

    CHECK_INT(sb_jwt_sign(NULL, "a", 0, 0, NULL, out, sizeof(out)), -EINVAL);
    CHECK_INT(sb_jwt_sign(&nosecret, "a", 0, 0, NULL, out, sizeof(out)), -EINVAL);
    CHECK_INT(sb_jwt_sign(&nullsecret, "a", 0, 0, NULL, out, sizeof(out)), -EINVAL);
    CHECK_INT(sb_jwt_sign(&badkid, "a", 0, 0, NULL, out, sizeof(out)), -EINVAL);
    CHECK(sb_jwt_sign(&fullkid, "a", 0, 0, NULL, out, sizeof(out)) > 0);
    CHECK_INT(sb_jwt_sign(&key1, NULL, 0, 0, NULL, out, sizeof(out)), -EINVAL);
    CHECK_INT(sb_jwt_sign(&key1, "", 0, 0, NULL, out, sizeof(out)), -EINVAL);
    CHECK_INT(sb_jwt_sign(&key1, sub129, 0, 0, NULL, out, sizeof(out)), -EINVAL);
    CHECK(sb_jwt_sign(&key1, sub129 + 1, 0, 0, NULL, out, sizeof(out)) > 0);
    CHECK_INT(sb_jwt_sign(&key1, "\xc3", 0, 0, NULL, out, sizeof(out)), -EINVAL);
    CHECK_INT(sb_jwt_sign(&key1, "\xed\xa0\x80", 0, 0, NULL, out, sizeof(out)), -EINVAL);
    CHECK_INT(sb_jwt_sign(&key1, "a", 0, 0, scope257, out, sizeof(out)), -EINVAL);
    CHECK(sb_jwt_sign(&key1, "a", 0, 0, scope257 + 1, out, sizeof(out)) > 0);
    CHECK_INT(sb_jwt_sign(&key1, "a", 0, 0, "\xc0\xaf", out, sizeof(out)), -EINVAL);
    CHECK_INT(sb_jwt_sign(&key1, "a", -1, 0, NULL, out, sizeof(out)), -EINVAL);
    CHECK_INT(sb_jwt_sign(&key1, "a", 0, -1, NULL, out, sizeof(out)), -EINVAL);
    CHECK_INT(sb_jwt_sign(&key1, "a", max + 1, 0, NULL, out, sizeof(out)), -EINVAL);
    CHECK_INT(sb_jwt_sign(&key1, "a", 0, max + 1, NULL, out, sizeof(out)), -EINVAL);
    CHECK(sb_jwt_sign(&key1, "a", max, max, NULL, out, sizeof(out)) > 0);

    /* Every capacity short of length + NUL is refused without writing past it. */
    n = sb_jwt_sign(&key1, "alice", NOW, NOW + 1, "s", out, sizeof(out));
    CHECK(n > 0);
    for (size_t cap = 0; cap <= (size_t)n; cap++) {
        memset(small, '#', sizeof(small));
        CHECK_INT(sb_jwt_sign(&key1, "alice", NOW, NOW + 1, "s", small, cap), -ENOSPC);
        CHECK_INT(small[cap], '#');
    }
    CHECK_INT(sb_jwt_sign(&key1, "alice", NOW, NOW + 1, "s", small, (size_t)n + 1), n);
    CHECK_STR(small, out);
}

static void test_strerror(void)
{
    static const enum sb_jwt_error all[] = {
        SB_JWT_OK,      SB_JWT_MALFORMED, SB_JWT_ALG,        SB_JWT_UNKNOWN_KID, SB_JWT_SIGNATURE,
        SB_JWT_EXPIRED, SB_JWT_NOT_YET,   SB_JWT_NO_SUBJECT, SB_JWT_NO_EXPIRY};
    size_t n = sizeof(all) / sizeof(all[0]);

    for (size_t i = 0; i < n; i++) {
        const char *s = sb_jwt_strerror(all[i]);
        CHECK(s != NULL && s[0] != '\0');
        for (size_t j = 0; j < i; j++) {
            CHECK(s != NULL && strcmp(s, sb_jwt_strerror(all[j])) != 0);
        }
    }
    CHECK_STR(sb_jwt_strerror(SB_JWT_EXPIRED), "expired");
    CHECK_STR(sb_jwt_strerror(SB_JWT_SIGNATURE), "bad signature");
    CHECK(sb_jwt_strerror((enum sb_jwt_error)99) != NULL);
}

/* ---- structure and base64url ---- */

static void test_structure(void)
{
    static const char *const bad[] = {
        "",
        ".",
        "..",
        "...",
        "abc",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9.e30",
        "eyJhbGciOiJIUzI1NiJ9.e30.", /* three parts, but "{}" has no sub: see below */
    };
    char tok[TOKEN_CAP];
    size_t n = mint(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"alice\"}");

    for (size_t i = 0; i < 7; i++) {
        CHECK_INT(verify(bad[i], NULL), SB_JWT_MALFORMED);
    }
    CHECK_INT(verify(bad[7], NULL), SB_JWT_SIGNATURE);
    CHECK_INT(verify(tok, NULL), SB_JWT_OK);
    /* An empty header part. */
    CHECK_INT(verify(strchr(tok, '.'), NULL), SB_JWT_MALFORMED);
    /* A fourth part, empty or not. */
    strcpy(tok + n, ".");
    CHECK_INT(verify(tok, NULL), SB_JWT_MALFORMED);
    strcpy(tok + n, ".AAAA");
    CHECK_INT(verify(tok, NULL), SB_JWT_MALFORMED);
    /* A NUL inside the counted length. */
    tok[n] = '\0';
    tok[3] = '\0';
    CHECK_INT(sb_jwt_verify(tok, n, &(struct sb_jwt_verify_opts){.keys = &key1, .nkeys = 1},
                            &(struct sb_jwt_claims){0}),
              SB_JWT_MALFORMED);
}

/* Replaces part `which` (0..2) of tok with text. */
static void replace_part(char *tok, int which, const char *text)
{
    char copy[TOKEN_CAP], *parts[3], *save = NULL;

    strcpy(copy, tok);
    parts[0] = strtok_r(copy, ".", &save);
    parts[1] = strtok_r(NULL, ".", &save);
    parts[2] = strtok_r(NULL, ".", &save);
    parts[which] = (char *)text;
    sprintf(tok, "%s.%s.%s", parts[0], parts[1], parts[2]);
}

static void test_base64url(void)
{
    static const char *const payloads[] = {"{\"sub\":\"ab\"}", "{\"sub\":\"abc\"}",
                                           "{\"sub\":\"abcd\"}"};
    char tok[TOKEN_CAP], part[TOKEN_CAP];
    size_t plen;

    /* Payloads of each length modulo 3 give parts of each length modulo 4 but 1. */
    for (size_t i = 0; i < 3; i++) {
        mint(tok, "{\"alg\":\"HS256\"}", payloads[i]);
        CHECK_INT(verify(tok, NULL), SB_JWT_OK);
    }

    /* {"sub":"ab"} is 12 bytes: 16 characters. Padding, standard-alphabet and stray characters. */
    plen = b64(payloads[0], strlen(payloads[0]), part);
    part[plen] = '\0';
    mint(tok, "{\"alg\":\"HS256\"}", payloads[0]);
    strcat(part, "==");
    replace_part(tok, 1, part);
    CHECK_INT(verify(tok, NULL), SB_JWT_MALFORMED);
    mint(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"~~\xc3\xbf\"}"); /* "eyJzdWIiOiJ-fsO_In0" */
    CHECK_INT(verify(tok, NULL), SB_JWT_OK);
    CHECK(strstr(tok, ".eyJzdWIiOiJ-fsO_In0.") != NULL);
    for (char *p = tok; *p; p++) {
        if (*p == '-') {
            *p = '+';
        } else if (*p == '_') {
            *p = '/';
        }
    }
    CHECK_INT(verify(tok, NULL), SB_JWT_MALFORMED);

    /* Non-zero trailing bits: "{}" is "e30"; "e31" decodes to the same two bytes. */
    mint(tok, "{\"alg\":\"HS256\"}", "{}");
    CHECK_INT(verify(tok, NULL), SB_JWT_NO_SUBJECT);
    replace_part(tok, 1, "e31");
    CHECK_INT(verify(tok, NULL), SB_JWT_MALFORMED);
    /* 'x' is 0x78: "eA"; "eB" leaves a bit set; "eAA" is not 'x'. "e" alone is impossible. */
    replace_part(tok, 1, "e");
    CHECK_INT(verify(tok, NULL), SB_JWT_MALFORMED);
    replace_part(tok, 1, "eB");
    CHECK_INT(verify(tok, NULL), SB_JWT_MALFORMED);
    replace_part(tok, 1, "e30 ");
    CHECK_INT(verify(tok, NULL), SB_JWT_MALFORMED);
    replace_part(tok, 1, "e30=");
    CHECK_INT(verify(tok, NULL), SB_JWT_MALFORMED);
    replace_part(tok, 1, "e3\x80");
    CHECK_INT(verify(tok, NULL), SB_JWT_MALFORMED);

    /* The signature: padded, with trailing bits set in its last character, or one short. */
    mint(tok, "{\"alg\":\"HS256\"}", payloads[0]);
    strcat(tok, "=");
    CHECK_INT(verify(tok, NULL), SB_JWT_MALFORMED);
    tok[strlen(tok) - 1] = '\0';
    CHECK_INT(verify(tok, NULL), SB_JWT_OK);
    {
        char *last = tok + strlen(tok) - 1;
        const char *pos = strchr(alphabet, *last);
        *last = alphabet[(pos - alphabet) ^ 1]; /* 43 characters: the low 2 bits must be 0 */
        CHECK_INT(verify(tok, NULL), SB_JWT_MALFORMED);
        *last = '\0';
        CHECK(verify(tok, NULL) != SB_JWT_OK); /* 42 characters */
    }
}

/* ---- header ---- */

static void test_alg(void)
{
    char tok[TOKEN_CAP];

    /* The classic: alg none and no signature at all. */
    mint_raw(tok, "{\"alg\":\"none\"}", "{\"sub\":\"alice\"}", NULL, 0, "");
    CHECK_INT(verify(tok, NULL), SB_JWT_ALG);
    mint_raw(tok, "{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"sub\":\"alice\"}", NULL, 0, "");
    CHECK_INT(verify(tok, NULL), SB_JWT_ALG);
    /* Even with a valid HS256 signature, a header that says none is refused. */
    CHECK_INT(verify_header("{\"alg\":\"none\"}"), SB_JWT_ALG);
    CHECK_INT(verify_header("{\"alg\":\"HS512\"}"), SB_JWT_ALG);
    CHECK_INT(verify_header("{\"alg\":\"hs256\"}"), SB_JWT_ALG);
    CHECK_INT(verify_header("{\"alg\":\"HS256 \"}"), SB_JWT_ALG);
    CHECK_INT(verify_header("{\"alg\":\"RS256\"}"), SB_JWT_ALG);
    CHECK_INT(verify_header("{\"alg\":\"HS256\\u0000\"}"), SB_JWT_ALG);
    CHECK_INT(verify_header("{\"typ\":\"JWT\"}"), SB_JWT_ALG);
    CHECK_INT(verify_header("{}"), SB_JWT_ALG);
    CHECK_INT(verify_header("{\"ALG\":\"HS256\"}"), SB_JWT_ALG);
    CHECK_INT(verify_header("{\"alg\":\"HS256\",\"typ\":\"JWS\"}"), SB_JWT_ALG);
    CHECK_INT(verify_header("{\"alg\":\"HS256\",\"typ\":\"\"}"), SB_JWT_ALG);
    CHECK_INT(verify_header("{\"alg\":\"HS256\",\"typ\":\"JWTX\"}"), SB_JWT_ALG);
    CHECK_INT(verify_header("{\"alg\":\"HS256\",\"typ\":\"JW\\u0000\"}"), SB_JWT_ALG);
    CHECK_INT(verify_header("{\"alg\":\"HS256\",\"typ\":\"application/jwt\"}"), SB_JWT_ALG);

    CHECK_INT(verify_header("{\"alg\":\"HS256\",\"typ\":\"JWT\"}"), SB_JWT_OK);
    CHECK_INT(verify_header("{\"alg\":\"HS256\",\"typ\":\"jwt\"}"), SB_JWT_OK);
    CHECK_INT(verify_header("{\"typ\":\"Jwt\",\"alg\":\"HS256\"}"), SB_JWT_OK);
    CHECK_INT(verify_header(" {\"alg\" : \"HS256\"}\r\n"), SB_JWT_OK);
    /* Escapes are JSON, not a different name: these are "HS256" and "alg". */
    CHECK_INT(verify_header("{\"alg\":\"HS\\u0032\\u0035\\u0036\"}"), SB_JWT_OK);
    CHECK_INT(verify_header("{\"\\u0061lg\":\"HS256\",\"t\\u0079p\":\"\\u004aWT\"}"), SB_JWT_OK);
    /* Unknown members, of any type, are ignored. */
    CHECK_INT(verify_header("{\"alg\":\"HS256\",\"x5u\":\"https://x\",\"n\":[1,{\"a\":null}],"
                            "\"cty\":\"JWT\",\"b64\":false}"),
              SB_JWT_OK);
}

static void test_header_malformed(void)
{
    static const char *const bad[] = {
        "",
        "null",
        "[]",
        "\"HS256\"",
        "{\"alg\":\"HS256\"",
        "{\"alg\":\"HS256\"} {}",
        "{\"alg\":\"HS256\",}",
        "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}",
        "{\"alg\":\"HS256\",\"crit\":[]}",
        "{\"alg\":\"HS256\",\"crit\":null}",
        "{\"alg\":\"HS256\",\"alg\":\"none\"}",
        "{\"alg\":\"HS256\",\"\\u0061lg\":\"HS256\"}",
        "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"typ\":\"JWT\"}",
        "{\"alg\":\"HS256\",\"kid\":\"k1\",\"kid\":\"k1\"}",
        "{\"alg\":256}",
        "{\"alg\":null}",
        "{\"alg\":[\"HS256\"]}",
        "{\"alg\":\"HS256\",\"typ\":1}",
        "{\"alg\":\"HS256\",\"kid\":1}",
        "{\"alg\":\"HS256\",\"kid\":null}",
        "{\"alg\":\"HS256\",\"kid\":\"k\\u0000\"}",
        ("{\"alg\":\"HS256\",\"kid\":"
         "\"0123456789012345678901234567890123456789012345678901234567890"
         "1234\"}"),
        "{\"alg\":\"HS256\",\"bad\":\"\xff\"}",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum sb_jwt_error e = verify_header(bad[i]);
        if (e != SB_JWT_MALFORMED) {
            fprintf(stderr, "header %s\n", bad[i]);
        }
        CHECK_INT(e, SB_JWT_MALFORMED);
    }
}

/* ---- signature and keys ---- */

static void test_signature(void)
{
    static const struct sb_jwt_key empty = {.kid = "", .secret = secret1, .secret_len = 0};
    struct sb_jwt_verify_opts none = {.keys = NULL, .nkeys = 0, .now = NOW};
    struct sb_jwt_verify_opts only_empty = {.keys = &empty, .nkeys = 1, .now = NOW};
    struct sb_jwt_claims c;
    char tok[TOKEN_CAP], sig[64];
    uint8_t zeros[33] = {0};

    mint_raw(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"alice\"}", secret2, 32, NULL);
    CHECK_INT(verify(tok, NULL), SB_JWT_SIGNATURE);
    /* A key that is a prefix of the right one. */
    mint_raw(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"alice\"}", secret1, 31, NULL);
    CHECK_INT(verify(tok, NULL), SB_JWT_SIGNATURE);
    mint_raw(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"alice\"}", NULL, 0, "");
    CHECK_INT(verify(tok, NULL), SB_JWT_SIGNATURE);
    sig[b64(zeros, 32, sig)] = '\0';
    mint_raw(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"alice\"}", NULL, 0, sig);
    CHECK_INT(verify(tok, NULL), SB_JWT_SIGNATURE);
    sig[b64(zeros, 33, sig)] = '\0';
    mint_raw(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"alice\"}", NULL, 0, sig);
    CHECK_INT(verify(tok, NULL), SB_JWT_SIGNATURE);
    /* The signature covers the base64 text: the right MAC over other text does not verify. */
    mint(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"alice\"}");
    CHECK_INT(verify(tok, NULL), SB_JWT_OK);
    CHECK_INT(verify_opts(tok, &none, &c), SB_JWT_SIGNATURE);
    CHECK_INT(verify_opts(tok, &only_empty, &c), SB_JWT_SIGNATURE);
    /* An empty secret signs nothing, and no HMAC with an empty key is ever accepted. */
    mint_raw(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"alice\"}", (const uint8_t *)"", 0, NULL);
    CHECK_INT(verify_opts(tok, &only_empty, &c), SB_JWT_SIGNATURE);
    /* The claims are not read before the signature holds: broken JSON is a signature error. */
    mint_raw(tok, "{\"alg\":\"HS256\"}", "{\"sub\":", secret2, 32, NULL);
    CHECK_INT(verify(tok, NULL), SB_JWT_SIGNATURE);
    mint(tok, "{\"alg\":\"HS256\"}", "{\"sub\":");
    CHECK_INT(verify(tok, NULL), SB_JWT_MALFORMED);
}

static void test_rotation(void)
{
    static const struct sb_jwt_key keys[] = {
        {.kid = "2024-old", .secret = secret1, .secret_len = 32},
        {.kid = "2025-new", .secret = secret2, .secret_len = 32},
    };
    struct sb_jwt_verify_opts o = {.keys = keys, .nkeys = 2, .now = NOW};
    struct sb_jwt_claims c;
    char tok[TOKEN_CAP];

    CHECK(sb_jwt_sign(&keys[0], "old", NOW, NOW + 60, NULL, tok, sizeof(tok)) > 0);
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_OK);
    CHECK_STR(c.sub, "old");
    CHECK(sb_jwt_sign(&keys[1], "new", NOW, NOW + 60, NULL, tok, sizeof(tok)) > 0);
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_OK);
    CHECK_STR(c.sub, "new");
    /* Once the old key is dropped, its tokens name an unknown kid. */
    o.keys = &keys[1];
    o.nkeys = 1;
    CHECK(sb_jwt_sign(&keys[0], "old", NOW, NOW + 60, NULL, tok, sizeof(tok)) > 0);
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_UNKNOWN_KID);
    o.keys = keys;
    o.nkeys = 2;

    /* A kid picks exactly one key: the other key's signature does not count. */
    mint_raw(tok, "{\"alg\":\"HS256\",\"kid\":\"2024-old\"}", "{\"sub\":\"x\"}", secret2, 32, NULL);
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_SIGNATURE);
    mint_raw(tok, "{\"alg\":\"HS256\",\"kid\":\"2026\"}", "{\"sub\":\"x\"}", secret1, 32, NULL);
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_UNKNOWN_KID);
    mint_raw(tok, "{\"alg\":\"HS256\",\"kid\":\"2024-OLD\"}", "{\"sub\":\"x\"}", secret1, 32, NULL);
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_UNKNOWN_KID);
    mint_raw(tok, "{\"alg\":\"HS256\",\"kid\":\"2024-old\\u0000\"}", "{\"sub\":\"x\"}", secret1, 32,
             NULL);
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_MALFORMED);
    mint_raw(tok, "{\"alg\":\"HS256\",\"kid\":\"2024-ol\"}", "{\"sub\":\"x\"}", secret1, 32, NULL);
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_UNKNOWN_KID);
    mint_raw(tok, "{\"alg\":\"HS256\",\"kid\":\"\"}", "{\"sub\":\"x\"}", secret1, 32, NULL);
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_UNKNOWN_KID);
    mint_raw(tok, "{\"alg\":\"HS256\",\"kid\":\"2025\\u002dnew\"}", "{\"sub\":\"x\"}", secret2, 32,
             NULL);
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_OK);
    /* An unknown kid is refused even when no key is configured at all. */
    o.nkeys = 0;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_UNKNOWN_KID);
    o.nkeys = 2;

    /* Without a kid, every key is tried. */
    mint_raw(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"x\"}", secret1, 32, NULL);
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_OK);
    mint_raw(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"x\"}", secret2, 32, NULL);
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_OK);
    mint_raw(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"x\"}", secret3, 32, NULL);
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_SIGNATURE);
    /* A configured key without a kid is never picked by a token's kid. */
    o.keys = &key1_nokid;
    o.nkeys = 1;
    mint_raw(tok, "{\"alg\":\"HS256\",\"kid\":\"k1\"}", "{\"sub\":\"x\"}", secret1, 32, NULL);
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_UNKNOWN_KID);
}

/* ---- claims ---- */

static void test_subject(void)
{
    char payload[1024], sub[200];
    struct sb_jwt_claims c;

    CHECK_INT(verify_payload("{\"sub\":\"al\\\"ice\\\\ \\u00e9\\n\\/\\ud83d\\ude00\"}", &c),
              SB_JWT_OK);
    CHECK_STR(c.sub, "al\"ice\\ \xc3\xa9\n/\xf0\x9f\x98\x80");
    CHECK_INT(verify_payload("{}", &c), SB_JWT_NO_SUBJECT);
    CHECK_INT(verify_payload("{\"Sub\":\"x\"}", &c), SB_JWT_NO_SUBJECT);
    CHECK_INT(verify_payload("{\"sub\":\"\"}", &c), SB_JWT_NO_SUBJECT);
    CHECK_INT(verify_payload("{\"sub\":42}", &c), SB_JWT_NO_SUBJECT);
    CHECK_INT(verify_payload("{\"sub\":null}", &c), SB_JWT_NO_SUBJECT);
    CHECK_INT(verify_payload("{\"sub\":[\"x\"]}", &c), SB_JWT_NO_SUBJECT);
    CHECK_INT(verify_payload("{\"sub\":{\"id\":\"x\"}}", &c), SB_JWT_NO_SUBJECT);
    /* A NUL would make "alice\0admin" read as "alice". */
    CHECK_INT(verify_payload("{\"sub\":\"alice\\u0000admin\"}", &c), SB_JWT_NO_SUBJECT);
    CHECK_INT(verify_payload("{\"sub\":\"x\",\"sub\":\"y\"}", &c), SB_JWT_MALFORMED);
    CHECK_STR(c.sub, ""); /* nothing is filled in on failure */

    /* 128 bytes after unescaping, however long the escaped text. */
    memset(sub, 's', 128);
    sub[128] = '\0';
    snprintf(payload, sizeof(payload), "{\"sub\":\"%s\"}", sub);
    CHECK_INT(verify_payload(payload, &c), SB_JWT_OK);
    CHECK_STR(c.sub, sub);
    snprintf(payload, sizeof(payload), "{\"sub\":\"%ss\"}", sub);
    CHECK_INT(verify_payload(payload, &c), SB_JWT_NO_SUBJECT);
    strcpy(payload, "{\"sub\":\"");
    for (int i = 0; i < 64; i++) {
        strcat(payload, "\\u00e9"); /* two bytes each */
    }
    CHECK_INT(verify_payload(strcat(payload, "\"}"), &c), SB_JWT_OK);
    CHECK_INT(strlen(c.sub), 128);
    strcpy(payload + strlen(payload) - 2, "x\"}");
    CHECK_INT(verify_payload(payload, &c), SB_JWT_NO_SUBJECT);
}

static void test_numeric_dates(void)
{
    static const struct {
        const char *text;
        int64_t value; /* -1: MALFORMED */
    } cases[] = {
        {"0", 0},
        {"1700000000", 1700000000},
        {"1.5", 1},
        {"0.5", 0},
        {"1700000000.999", 1700000000},
        {"1e3", 1000},
        {"1E+3", 1000},
        {"2.5e1", 25},
        {"123456789e-3", 123456},
        {"0.000123e5", 12},
        {"1e-999999999999", 0},
        {"0e999999999999", 0},
        {"0.0e99999", 0},
        {"-0", 0},
        {"-0.0", 0},
        {"-0e5", 0},
        {"9007199254740992", INT64_C(9007199254740992)},
        {"9007199254740992.999", INT64_C(9007199254740992)},
        {"9.007199254740992e15", INT64_C(9007199254740992)},
        {"90071992547409920e-1", INT64_C(9007199254740992)},
        {"9007199254740993", -1},
        {"9007199254740992.5e1", -1},
        {"1e16", -1},
        {"1e999999999999", -1},
        {"99999999999999999999999999", -1},
        {"-1", -1},
        {"-0.5", -1},
        {"-1e-9", -1},
        {"\"1700000000\"", -1},
        {"true", -1},
        {"null", -1},
        {"[1]", -1},
        {"{}", -1},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t iat;
        int before = check_failed;
        enum sb_jwt_error e = iat_of(cases[i].text, &iat);
        if (cases[i].value < 0) {
            CHECK_INT(e, SB_JWT_MALFORMED);
        } else {
            CHECK_INT(e, SB_JWT_OK);
            CHECK_INT(iat, cases[i].value);
        }
        if (check_failed != before) {
            fprintf(stderr, "  (iat %s)\n", cases[i].text);
        }
    }
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"exp\":\"soon\"}", NULL), SB_JWT_MALFORMED);
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"nbf\":-5}", NULL), SB_JWT_MALFORMED);
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"exp\":1e99,\"exp\":1}", NULL), SB_JWT_MALFORMED);
    /* Types are checked before the subject. */
    CHECK_INT(verify_payload("{\"exp\":false}", NULL), SB_JWT_MALFORMED);
}

static void test_times(void)
{
    struct sb_jwt_verify_opts o = {.keys = &key1, .nkeys = 1, .leeway_s = 30};
    struct sb_jwt_claims c;
    char tok[TOKEN_CAP];

    mint(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"a\",\"exp\":1000,\"nbf\":900}");
    o.now = 1029;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_OK);
    CHECK(c.has_exp && c.has_nbf && !c.has_iat);
    CHECK_INT(c.exp, 1000);
    CHECK_INT(c.nbf, 900);
    o.now = 1030;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_EXPIRED);
    o.now = 870;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_OK);
    o.now = 869;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_NOT_YET);
    o.leeway_s = 0;
    o.now = 999;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_OK);
    o.now = 1000;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_EXPIRED);
    o.now = 900;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_OK);
    o.now = 899;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_NOT_YET);
    o.now = INT64_MIN;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_NOT_YET);
    o.now = INT64_MAX;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_EXPIRED);

    /* A leeway at the ends of int64_t saturates instead of wrapping. */
    o.leeway_s = INT64_MAX;
    o.now = INT64_MAX - 1;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_OK);
    o.now = 0;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_OK);
    o.now = INT64_MIN;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_NOT_YET);
    o.leeway_s = INT64_MIN;
    o.now = 950;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_EXPIRED);

    /* exp 0 is present, and long past. */
    o.leeway_s = 0;
    o.now = 0;
    mint(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"a\",\"exp\":0}");
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_EXPIRED);
    o.now = -1;
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_OK);

    /* require_exp, checked before anything about time. */
    o.require_exp = true;
    o.now = NOW;
    mint(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"a\",\"nbf\":9999999999}");
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_NO_EXPIRY);
    mint(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"a\",\"exp\":9999999999}");
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_OK);
    /* A missing subject outranks a missing expiry. */
    mint(tok, "{\"alg\":\"HS256\"}", "{\"iat\":1}");
    CHECK_INT(verify_opts(tok, &o, &c), SB_JWT_NO_SUBJECT);
}

static void test_scope(void)
{
    char payload[1024], words[1024];
    struct sb_jwt_claims c;

    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":\"read write\"}", &c), SB_JWT_OK);
    CHECK_STR(c.scope, "read write");
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":[\"read\",\"write\",\"x:y\"]}", &c),
              SB_JWT_OK);
    CHECK_STR(c.scope, "read write x:y");
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":[\"r\\u00e9ad\"]}", &c), SB_JWT_OK);
    CHECK_STR(c.scope, "r\xc3\xa9"
                       "ad");
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":[]}", &c), SB_JWT_OK);
    CHECK_STR(c.scope, "");
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":\"\"}", &c), SB_JWT_OK);
    CHECK_STR(c.scope, "");

    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":7}", &c), SB_JWT_MALFORMED);
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":null}", &c), SB_JWT_MALFORMED);
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":{\"read\":true}}", &c), SB_JWT_MALFORMED);
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":[\"read\",1]}", &c), SB_JWT_MALFORMED);
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":[[\"read\"]]}", &c), SB_JWT_MALFORMED);
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":[\"read write\"]}", &c), SB_JWT_MALFORMED);
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":[\"read\",\"\"]}", &c), SB_JWT_MALFORMED);
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":[\"a\\u0000b\"]}", &c), SB_JWT_MALFORMED);
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":\"a\\u0000b\"}", &c), SB_JWT_MALFORMED);
    CHECK_INT(verify_payload("{\"sub\":\"a\",\"scope\":\"a\",\"scope\":\"b\"}", &c),
              SB_JWT_MALFORMED);

    /* 256 bytes as a string, and as words joined by spaces; one more is refused either way. */
    memset(words, 'w', 256);
    words[256] = '\0';
    snprintf(payload, sizeof(payload), "{\"sub\":\"a\",\"scope\":\"%s\"}", words);
    CHECK_INT(verify_payload(payload, &c), SB_JWT_OK);
    CHECK_STR(c.scope, words);
    snprintf(payload, sizeof(payload), "{\"sub\":\"a\",\"scope\":\"%sw\"}", words);
    CHECK_INT(verify_payload(payload, &c), SB_JWT_MALFORMED);
    /* 85 words of "ab" joined: 85 * 3 - 1 = 254 bytes; then "c" makes 256, "cd" 257. */
    strcpy(payload, "{\"sub\":\"a\",\"scope\":[");
    for (int i = 0; i < 85; i++) {
        strcat(payload, "\"ab\",");
    }
    strcpy(words, payload);
    CHECK_INT(verify_payload(strcat(payload, "\"c\"]}"), &c), SB_JWT_OK);
    CHECK_INT(strlen(c.scope), 256);
    CHECK(sb_jwt_has_scope(&c, "c") && sb_jwt_has_scope(&c, "ab"));
    CHECK_INT(verify_payload(strcat(words, "\"cd\"]}"), &c), SB_JWT_MALFORMED);
    /* Unknown and registered claims we do not use are ignored. */
    CHECK_INT(
        verify_payload("{\"aud\":[\"x\",1],\"iss\":5,\"sub\":\"a\",\"jti\":{},\"x\":[[[]]]}", &c),
        SB_JWT_OK);
}

static void test_has_scope(void)
{
    struct sb_jwt_claims c = {.scope = "read write admin"};

    CHECK(sb_jwt_has_scope(&c, "read"));
    CHECK(sb_jwt_has_scope(&c, "write"));
    CHECK(sb_jwt_has_scope(&c, "admin"));
    CHECK(!sb_jwt_has_scope(&c, "rea"));
    CHECK(!sb_jwt_has_scope(&c, "dmin"));
    CHECK(!sb_jwt_has_scope(&c, "read write"));
    CHECK(!sb_jwt_has_scope(&c, "Admin"));
    CHECK(!sb_jwt_has_scope(&c, ""));
    CHECK(!sb_jwt_has_scope(&c, NULL));
    strcpy(c.scope, " a  b ");
    CHECK(sb_jwt_has_scope(&c, "a"));
    CHECK(sb_jwt_has_scope(&c, "b"));
    CHECK(!sb_jwt_has_scope(&c, ""));
    CHECK(!sb_jwt_has_scope(&c, " "));
    strcpy(c.scope, "");
    CHECK(!sb_jwt_has_scope(&c, "a"));
    memset(c.scope, 'z', SB_JWT_MAX_SCOPE);
    c.scope[SB_JWT_MAX_SCOPE] = '\0';
    CHECK(!sb_jwt_has_scope(&c, "z"));
    CHECK(sb_jwt_has_scope(&c, c.scope));
}

/* ---- whole tokens ---- */

static void test_rfc7515_a1(void)
{
    uint8_t k[64];
    struct sb_jwt_key key = {.secret = k};
    struct sb_jwt_verify_opts o = {.keys = &key, .nkeys = 1, .now = 1300819379};
    struct sb_jwt_claims c;
    char tok[sizeof(rfc_token)];
    size_t len = strlen(rfc_token), refused = 0;

    key.secret_len = unb64(rfc_jwk_k, k);
    CHECK_INT(key.secret_len, 64);
    /* The signature holds; the example simply has no "sub". */
    CHECK_INT(verify_opts(rfc_token, &o, &c), SB_JWT_NO_SUBJECT);
    o.keys = &key1;
    CHECK_INT(verify_opts(rfc_token, &o, &c), SB_JWT_SIGNATURE);
    o.keys = &key;
    for (size_t i = 0; i < len; i++) {
        for (int v = 1; v < 256; v++) {
            enum sb_jwt_error e;
            memcpy(tok, rfc_token, sizeof(tok));
            tok[i] = (char)(tok[i] ^ v);
            e = sb_jwt_verify(tok, len, &o, &c);
            refused += e == SB_JWT_MALFORMED || e == SB_JWT_ALG || e == SB_JWT_SIGNATURE;
        }
    }
    CHECK_INT(refused, len * 255);
}

/* Every single-byte change of a token is refused before its claims are read. */
static void check_flips(const char *token, const struct sb_jwt_verify_opts *o, int step)
{
    char tok[TOKEN_CAP];
    size_t len = strlen(token), bad = 0;
    struct sb_jwt_claims c;

    CHECK_INT(sb_jwt_verify(token, len, o, &c), SB_JWT_OK);
    for (size_t i = 0; i < len; i++) {
        for (int v = 1; v < 256; v += step) {
            enum sb_jwt_error e;
            memcpy(tok, token, len + 1);
            tok[i] = (char)(tok[i] ^ v);
            e = sb_jwt_verify(tok, len, o, &c);
            bad += e != SB_JWT_MALFORMED && e != SB_JWT_ALG && e != SB_JWT_UNKNOWN_KID &&
                   e != SB_JWT_SIGNATURE;
        }
    }
    CHECK_INT(bad, 0);
}

static void test_flips(void)
{
    const struct sb_jwt_key keys[] = {key1, key1_nokid};
    struct sb_jwt_verify_opts o = {.keys = keys, .nkeys = 2, .now = NOW};
    char tok[TOKEN_CAP];

    check_flips(known_k1, &o, 1);
    check_flips(known_nokid, &o, 1);
    mint(tok, "{\"alg\":\"HS256\",\"typ\":\"jwt\"}", "{\"sub\":\"\\u00e9\",\"scope\":[\"a\"]}");
    check_flips(tok, &o, 1);
    /* A long token, with fewer values per position. */
    CHECK(sb_jwt_sign(&key1, "01234567890123456789012345678901234567890123456789", NOW, NOW + 9,
                      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa "
                      "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                      tok, sizeof(tok)) > 0);
    check_flips(tok, &o, 7);
}

/* A token of exactly n characters: {"sub":"a","pad":"xxx..."} padded to fit. */
static size_t token_of_length(char *tok, size_t n)
{
    static const char header[] = "{\"alg\":\"HS256\"}"; /* 20 characters */
    char payload[TOKEN_CAP];
    size_t part = n - 20 - 2 - 43; /* payload characters */
    size_t bytes = part / 4 * 3 + (part % 4 ? part % 4 - 1 : 0);
    size_t fixed = strlen("{\"sub\":\"a\",\"pad\":\"\"}");

    memset(payload, 0, sizeof(payload));
    strcpy(payload, "{\"sub\":\"a\",\"pad\":\"");
    memset(payload + strlen(payload), 'x', bytes - fixed);
    strcat(payload, "\"}");
    return mint(tok, header, payload);
}

static void test_long_tokens(void)
{
    struct sb_jwt_verify_opts o = {.keys = &key1, .nkeys = 1, .now = NOW};
    struct sb_jwt_claims c;
    char tok[TOKEN_CAP];
    long page = sysconf(_SC_PAGESIZE);
    char *map;

    CHECK_INT(token_of_length(tok, SB_JWT_MAX_TOKEN), SB_JWT_MAX_TOKEN);
    CHECK_INT(verify(tok, &c), SB_JWT_OK);
    CHECK_INT(token_of_length(tok, SB_JWT_MAX_TOKEN - 1), SB_JWT_MAX_TOKEN - 1);
    CHECK_INT(verify(tok, &c), SB_JWT_OK);
    CHECK_INT(token_of_length(tok, SB_JWT_MAX_TOKEN + 1), SB_JWT_MAX_TOKEN + 1);
    CHECK_INT(verify(tok, &c), SB_JWT_MALFORMED);
    CHECK_INT(token_of_length(tok, 10000), 10000);
    CHECK_INT(verify(tok, &c), SB_JWT_MALFORMED);

    /* Too long is refused unread; a token ending at a page boundary is read no further. */
    map = mmap(NULL, (size_t)page * 3, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(map != MAP_FAILED);
    if (map == MAP_FAILED) {
        return;
    }
    CHECK_INT(mprotect(map + 2 * page, (size_t)page, PROT_NONE), 0);
    CHECK_INT(sb_jwt_verify(map + 2 * page, SB_JWT_MAX_TOKEN + 1, &o, &c), SB_JWT_MALFORMED);
    CHECK_INT(sb_jwt_verify(map + 2 * page, SIZE_MAX, &o, &c), SB_JWT_MALFORMED);
    CHECK_INT(sb_jwt_verify(NULL, 0, &o, &c), SB_JWT_MALFORMED);
    /* No NUL: the token's last byte is the page's last byte. */
    /* NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
    memcpy(map + 2 * page - strlen(known_k1), known_k1, strlen(known_k1));
    CHECK_INT(sb_jwt_verify(map + 2 * page - strlen(known_k1), strlen(known_k1), &o, &c),
              SB_JWT_OK);
    token_of_length(tok, SB_JWT_MAX_TOKEN);
    memcpy(map + 2 * page - SB_JWT_MAX_TOKEN, tok, SB_JWT_MAX_TOKEN);
    CHECK_INT(sb_jwt_verify(map + 2 * page - SB_JWT_MAX_TOKEN, SB_JWT_MAX_TOKEN, &o, &c),
              SB_JWT_OK);
    munmap(map, (size_t)page * 3);
}

/* Big JSON inside a signed token: too many tokens or too deep is MALFORMED, not a crash. */
static void test_json_limits(void)
{
    char payload[TOKEN_CAP];
    struct sb_jwt_claims c;

    strcpy(payload, "{\"sub\":\"a\",\"n\":[");
    for (int i = 0; i < 1000; i++) {
        strcat(payload, "0,");
    }
    strcat(payload, "0]}");
    CHECK_INT(verify_payload(payload, &c), SB_JWT_MALFORMED);
    strcpy(payload, "{\"sub\":\"a\",\"n\":");
    for (int i = 0; i < 100; i++) {
        strcat(payload, "[");
    }
    for (int i = 0; i < 100; i++) {
        strcat(payload, "]");
    }
    CHECK_INT(verify_payload(strcat(payload, "}"), &c), SB_JWT_MALFORMED);
    strcpy(payload, "{\"sub\":\"a\",\"n\":[");
    for (int i = 0; i < 100; i++) {
        strcat(payload, "0,");
    }
    CHECK_INT(verify_payload(strcat(payload, "0]}"), &c), SB_JWT_OK);
}

int main(void)
{
    test_known_answers();
    test_round_trip();
    test_sign_worst_case();
    test_sign_errors();
    test_strerror();
    test_structure();
    test_base64url();
    test_alg();
    test_header_malformed();
    test_signature();
    test_rotation();
    test_subject();
    test_numeric_dates();
    test_times();
    test_scope();
    test_has_scope();
    test_rfc7515_a1();
    test_flips();
    test_long_tokens();
    test_json_limits();
    return check_done();
}
