/*
 * The JSON mapping of the operation set (docs/protocol.md, "Messaging: /ws"): one JSON object
 * per operation, with a "type" naming it. Pure functions on caller-owned bytes: no I/O, no
 * allocation, any thread.
 *
 * Decoding reads what clients send (HELLO is binary-only, PING/PONG are WebSocket frames, so
 * neither is JSON); encoding writes what the server sends. Decoded operations point into the
 * JSON text (see proto/ops.h): strings that are ids, and cursors, must not be escaped (valid
 * ones never need escapes), a "body" is kept as its JSON string literal (SB_OP_BODY_JSON), a
 * "body_b64" as its base64 text (SB_OP_BODY_BASE64). A name (which JSON writers often escape)
 * is the one exception: escaped, it is unescaped into the caller's token array. Lists iterate
 * over the JSON text of their array or object.
 */
#ifndef SB_PROTO_JSONOPS_H
#define SB_PROTO_JSONOPS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/json.h"
#include "proto/ops.h"

/* Tokens sb_jsonops_decode may need: a request of SB_OPS_REQUEST_LIST_MAX list items. */
#define SB_JSONOPS_MAX_TOKENS (32 + 2 * SB_OPS_REQUEST_LIST_MAX)

/* Decoding flags. */
enum {
    /*
     * A REST request's body (server/rest.c): "id" is optional (op->json_id stays empty), the
     * conversation may be absent (the route names it; both conv and to stay empty), a
     * receipt without "kind" is a read receipt, and an empty body reads as {}.
     */
    SB_JSONOPS_REST = 1u << 0,
};

/* Why a decode failed: an error code and a message for people (a static string). */
struct sb_jsonops_error {
    uint16_t code; /* enum sb_op_err: always BAD_REQUEST (an unknown "type" too, as ever) */
    const char *message;
};

/*
 * Decodes one JSON text a client sent into *op (zeroed first). type is the operation's type,
 * or SB_OP_NONE to read it from the "type" member. toks (SB_JSONOPS_MAX_TOKENS of them) is
 * scratch for the tokenizer; an escaped name (CONV_CREATE, CONV_RENAME) is unescaped into it,
 * so keep it, like json, while op is in use. Checks every field's presence, JSON type and the
 * limits of proto/ops.h (not max_body, not which characters an id holds: the server's
 * business). Returns 0, or -EBADMSG with *err filled; op->json_id is set
 * whenever the "id" member was read, so the error can be answered to it.
 */
int sb_jsonops_decode(const char *json, size_t len, enum sb_op_type type, unsigned flags,
                      struct sb_json_tok *toks, struct sb_op *op, struct sb_jsonops_error *err);

/*
 * At least the bytes sb_jsonops_encode needs for op (a cheap upper bound: every string
 * escaped at 6 bytes per byte, lists walked once).
 */
size_t sb_jsonops_bound(const struct sb_op *op);

/*
 * Encodes a server operation (WELCOME, ACK, MESSAGE, RECEIPT, TYPING, PRESENCE, SYNC_PAGE,
 * SYNC_DONE, CONV, CONVS, DEVICE_LIST, ERROR, BEHIND, GOAWAY) as one JSON text into out (cap
 * bytes), "id" from op->json_id when non-empty (an ACK's falls back to its client_id). Keys and
 * values are those the server has always written, in the same order: an ERROR's "conv" and
 * "retry_after_ms" only when set, an ACK's "duplicate" only when true, a CONV's "kind" from its
 * id ("g:" a group). A body is written as "body" (a JSON body verbatim; BYTES escaped when
 * valid UTF-8) or "body_b64" (BASE64 verbatim; other BYTES encoded). Returns the length,
 * -EINVAL for another type, a value outside its enumeration, a string that is not UTF-8 or a
 * list whose iterator fails, or -ENOSPC when cap is too small.
 */
ssize_t sb_jsonops_encode(const struct sb_op *op, char *out, size_t cap);

#endif
