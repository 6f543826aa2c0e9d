/*
 * Authentication of connecting clients with HS256 JWTs (proto/jwt.h). The token comes from
 * `Authorization: Bearer <jwt>`, the query parameter `token`, or the WebSocket subprotocol list
 * (`Sec-WebSocket-Protocol: switchboard.json, bearer.<jwt>`) for browsers, which cannot set
 * headers. Keys are read at start and never change afterwards, so any worker may verify.
 */
#ifndef SB_SERVER_AUTH_H
#define SB_SERVER_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/http.h"
#include "proto/jwt.h"

#define SB_AUTH_MAX_KEYS 8
#define SB_AUTH_MAX_SECRET 512
/* What `serve` and `token` use when no secret is configured: for a first run on a laptop. */
#define SB_AUTH_DEV_SECRET "switchboard-development-secret-not-for-production"

struct sb_auth {
    struct sb_jwt_key keys[SB_AUTH_MAX_KEYS];
    uint8_t secrets[SB_AUTH_MAX_KEYS][SB_AUTH_MAX_SECRET];
    size_t nkeys;
    bool is_dev; /* no secret configured: the development secret is in use */
    int64_t leeway_s;
    bool require_exp;
};

/*
 * Sets up the keys: secret (one key without kid) and/or keys_file (lines "<kid> <secret>"; the
 * first line's key signs tokens minted by sb_auth_mint; '#' comments). With neither, the
 * development secret. Returns 0, or -errno with a sentence in err.
 */
int sb_auth_init(struct sb_auth *a, const char *secret, const char *keys_file, int64_t leeway_s,
                 bool require_exp, char *err, size_t errlen);

/*
 * Finds and verifies the request's token at time now (seconds since the epoch).
 * Returns SB_JWT_OK and fills *claims, or why it was refused (SB_JWT_MALFORMED with no token at
 * all is reported as "missing token" by sb_auth_reason).
 */
enum sb_jwt_error sb_auth_request(const struct sb_auth *a, const struct sb_http_request *req,
                                  int64_t now, struct sb_jwt_claims *claims, bool *has_token);

/* Verifies a token given on its own (the binary protocol's HELLO), as sb_auth_request does. */
enum sb_jwt_error sb_auth_token(const struct sb_auth *a, const char *token, size_t len, int64_t now,
                                struct sb_jwt_claims *claims);

/* Mints a token for sub valid for ttl_s seconds from now (0 = no expiry), with scope ("" or
 * NULL for none). Returns its length, or -errno. */
ssize_t sb_auth_mint(const struct sb_auth *a, const char *sub, int64_t now, int64_t ttl_s,
                     const char *scope, char *out, size_t cap);

#endif
