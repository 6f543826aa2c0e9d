/*
 * JSON Web Tokens (RFC 7519) signed with HS256 (RFC 7518: HMAC-SHA256), verified and minted.
 * Several keys may be configured at once (rotation); a token's "kid" header picks one, and a
 * token without "kid" is tried against each. Pure: no I/O, no allocation, any thread.
 */
#ifndef SB_PROTO_JWT_H
#define SB_PROTO_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SB_JWT_MAX_TOKEN 4096 /* longer tokens are refused unread */
#define SB_JWT_MAX_SUB 128    /* bytes of the subject (user id) */
#define SB_JWT_MAX_KID 64
#define SB_JWT_MAX_SCOPE 256

struct sb_jwt_key {
    char kid[SB_JWT_MAX_KID + 1]; /* "" = no key id */
    const uint8_t *secret;        /* borrowed: must outlive every call that uses the key */
    size_t secret_len;
};

struct sb_jwt_claims {
    char sub[SB_JWT_MAX_SUB + 1];
    char scope[SB_JWT_MAX_SCOPE + 1]; /* space-separated, "" when absent */
    int64_t exp, nbf, iat;            /* seconds since the epoch; 0 when absent */
    bool has_exp, has_nbf, has_iat;
};

/* Why a token was refused, for the 401 body and the log. */
enum sb_jwt_error {
    SB_JWT_OK,
    SB_JWT_MALFORMED,   /* not three base64url parts, bad JSON, wrong claim types */
    SB_JWT_ALG,         /* "alg" is not HS256 (e.g. "none") or "typ" is not JWT */
    SB_JWT_UNKNOWN_KID, /* "kid" names no configured key */
    SB_JWT_SIGNATURE,   /* no configured key verifies it */
    SB_JWT_EXPIRED,     /* now >= exp + leeway */
    SB_JWT_NOT_YET,     /* now < nbf - leeway */
    SB_JWT_NO_SUBJECT,  /* "sub" missing, empty, too long or not a string */
    SB_JWT_NO_EXPIRY,   /* "exp" missing while the caller requires it */
};

/* A short lower-case phrase for an error ("expired", "bad signature", ...). */
const char *sb_jwt_strerror(enum sb_jwt_error e);

struct sb_jwt_verify_opts {
    const struct sb_jwt_key *keys;
    size_t nkeys;
    int64_t now;      /* seconds since the epoch */
    int64_t leeway_s; /* clock skew allowed on exp and nbf */
    bool require_exp;
};

/*
 * Verifies token (len bytes). The signature is checked (in constant time) before any claim is
 * trusted. Returns SB_JWT_OK and fills *out, or the reason for refusing it.
 */
enum sb_jwt_error sb_jwt_verify(const char *token, size_t len,
                                const struct sb_jwt_verify_opts *opts, struct sb_jwt_claims *out);

/* True when the space-separated scope contains word (e.g. "admin"). */
bool sb_jwt_has_scope(const struct sb_jwt_claims *c, const char *word);

/*
 * Mints an HS256 token with header {"alg":"HS256","typ":"JWT"[,"kid":...]} and claims sub, iat,
 * exp (omitted when 0), scope (omitted when NULL or ""). Returns the token length (out is
 * NUL-terminated), -EINVAL for a bad argument (empty or too long sub), -ENOSPC if cap is short.
 */
ssize_t sb_jwt_sign(const struct sb_jwt_key *key, const char *sub, int64_t iat, int64_t exp,
                    const char *scope, char *out, size_t cap);

#endif
