#include "loadgen/lg_auth.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "loadgen/lg_msgr.h"
#include "proto/jwt.h"

#define TOKEN_TTL_S 86400

ssize_t lg_auth_token(const struct lg_config *cfg, uint32_t id, char *out, size_t cap)
{
    char user[LG_MSGR_USER_MAX];
    struct sb_jwt_key key = {.secret = (const uint8_t *)cfg->jwt_secret,
                             .secret_len = strlen(cfg->jwt_secret)};
    int64_t now = (int64_t)time(NULL);
    if (lg_msgr_user(user, sizeof(user), id) < 0)
        return -ENOSPC;
    ssize_t n = sb_jwt_sign(&key, user, now, now + TOKEN_TTL_S, NULL, out, cap);
    return n < 0 ? -ENOSPC : n;
}

ssize_t lg_auth_path(const struct lg_config *cfg, uint32_t id, char *out, size_t cap)
{
    char token[LG_AUTH_TOKEN_MAX];
    if (lg_auth_token(cfg, id, token, sizeof(token)) < 0)
        return -ENOSPC;
    return lg_msgr_path(out, cap, cfg->path, token);
}
