#include "server/auth.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static int add_key(struct sb_auth *a, const char *kid, size_t kid_len, const char *secret,
                   size_t len, char *err, size_t errlen)
{
    if (a->nkeys == SB_AUTH_MAX_KEYS) {
        snprintf(err, errlen, "more than %d keys", SB_AUTH_MAX_KEYS);
        return -E2BIG;
    }
    if (len == 0 || len > SB_AUTH_MAX_SECRET || kid_len > SB_JWT_MAX_KID) {
        snprintf(err, errlen, "a key must have a kid of at most %d bytes and a secret of 1-%d",
                 SB_JWT_MAX_KID, SB_AUTH_MAX_SECRET);
        return -EINVAL;
    }
    struct sb_jwt_key *k = &a->keys[a->nkeys];
    memcpy(k->kid, kid, kid_len);
    k->kid[kid_len] = '\0';
    memcpy(a->secrets[a->nkeys], secret, len);
    k->secret = a->secrets[a->nkeys];
    k->secret_len = len;
    a->nkeys++;
    return 0;
}

static int load_keys_file(struct sb_auth *a, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int r = -errno;
        snprintf(err, errlen, "jwt_keys_file %s: %s", path, strerror(errno));
        return r;
    }
    char line[1024];
    int lineno = 0, r = 0;
    while (r == 0 && fgets(line, sizeof(line), f)) {
        lineno++;
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '#' || *p == '\0')
            continue;
        char *kid = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        size_t kid_len = (size_t)(p - kid);
        while (*p == ' ' || *p == '\t')
            p++;
        size_t len = strcspn(p, "\r\n");
        char msg[160];
        r = add_key(a, kid, kid_len, p, len, msg, sizeof(msg));
        if (r < 0)
            snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
    }
    fclose(f);
    if (r == 0 && a->nkeys == 0) {
        snprintf(err, errlen, "%s: no keys", path);
        r = -EINVAL;
    }
    return r;
}

int sb_auth_init(struct sb_auth *a, const char *secret, const char *keys_file, int64_t leeway_s,
                 bool require_exp, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    a->leeway_s = leeway_s;
    a->require_exp = require_exp;
    int r = 0;
    if (keys_file && *keys_file)
        r = load_keys_file(a, keys_file, err, errlen);
    if (r == 0 && secret && *secret)
        r = add_key(a, "", 0, secret, strlen(secret), err, errlen);
    if (r == 0 && a->nkeys == 0) {
        a->is_dev = true;
        r = add_key(a, "", 0, SB_AUTH_DEV_SECRET, strlen(SB_AUTH_DEV_SECRET), err, errlen);
    }
    return r;
}

/* The token in "bearer.<jwt>" among the offered subprotocols, if any. */
static bool token_from_protocols(struct sb_slice list, struct sb_slice *out)
{
    const char *p = list.base, *end = list.base + list.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *start = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        if (p - start > 7 && strncmp(start, "bearer.", 7) == 0) {
            *out = sb_slice_from(start + 7, (size_t)(p - start - 7));
            return true;
        }
    }
    return false;
}

enum sb_jwt_error sb_auth_request(const struct sb_auth *a, const struct sb_http_request *req,
                                  int64_t now, struct sb_jwt_claims *claims, bool *has_token)
{
    char query_token[SB_JWT_MAX_TOKEN + 1];
    struct sb_slice token = {NULL, 0};
    const struct sb_http_header *h = sb_http_find_header(req, "Authorization");
    if (h && h->value.len > 7 && strncasecmp(h->value.base, "Bearer ", 7) == 0) {
        token = sb_slice_from(h->value.base + 7, h->value.len - 7);
    } else if ((h = sb_http_find_header(req, "Sec-WebSocket-Protocol")) &&
               token_from_protocols(h->value, &token)) {
        /* found in the subprotocol list */
    } else {
        ssize_t n = sb_http_query_param(req->query, "token", query_token, sizeof(query_token));
        if (n > 0)
            token = sb_slice_from(query_token, (size_t)n);
    }
    *has_token = token.len > 0;
    if (!*has_token)
        return SB_JWT_MALFORMED;
    return sb_auth_token(a, token.base, token.len, now, claims);
}

enum sb_jwt_error sb_auth_token(const struct sb_auth *a, const char *token, size_t len, int64_t now,
                                struct sb_jwt_claims *claims)
{
    struct sb_jwt_verify_opts opts = {.keys = a->keys,
                                      .nkeys = a->nkeys,
                                      .now = now,
                                      .leeway_s = a->leeway_s,
                                      .require_exp = a->require_exp};
    return sb_jwt_verify(token, len, &opts, claims);
}

ssize_t sb_auth_mint(const struct sb_auth *a, const char *sub, int64_t now, int64_t ttl_s,
                     const char *scope, char *out, size_t cap)
{
    return sb_jwt_sign(&a->keys[0], sub, now, ttl_s ? now + ttl_s : 0, scope, out, cap);
}
