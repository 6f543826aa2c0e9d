/*
 * Who each connection is when the server wants to know: connection i is user "lg<i>" with
 * device "lg", and its HS256 token is minted here with --jwt-secret (valid for a day), for the
 * upgrade's ?token= (chat, fanout, ws-bin) and the HELLO of the binary port.
 */
#ifndef SB_LOADGEN_LG_AUTH_H
#define SB_LOADGEN_LG_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "loadgen/lg_config.h"

#define LG_AUTH_TOKEN_MAX 1024
#define LG_AUTH_DEVICE "lg"

/* Writes connection id's token (NUL-terminated). Returns its length or -ENOSPC. */
ssize_t lg_auth_token(const struct lg_config *cfg, uint32_t id, char *out, size_t cap);

/* Writes --path with connection id's token and device appended. Returns its length or -ENOSPC. */
ssize_t lg_auth_path(const struct lg_config *cfg, uint32_t id, char *out, size_t cap);

#endif
