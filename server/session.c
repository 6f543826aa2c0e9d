/*
 * What every messaging session shares, whatever its transport: sending an encoded operation in
 * the session's framing, and ending the session.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/chunk.h"
#include "core/log.h"
#include "proto/binproto.h"
#include "proto/jsonops.h"
#include "server/gateway.h"

void sb__session_send(struct sb_conn *c, const void *data, size_t len)
{
    struct sb_session *s = sb_conn_app(c);
    int e = 0;
    if (s->state == SB_SESS_HTTP)
        sb__rest_respond(c, data, len); /* a REST request answered at once (an error) */
    else if (s->state == SB_SESS_RAW)
        e = sb_conn_write(c, data, len);
    else
        e = sb__ws_send(c, s->enc == SB_ENC_BINARY ? SB_WS_BINARY : SB_WS_TEXT, data, len);
    if (e < 0)
        sb_conn_close(c, -ENOMEM);
}

enum sb_framing sb__session_framing(struct sb_conn *c)
{
    const struct sb_session *s = sb_conn_app(c);
    if (s->state == SB_SESS_RAW)
        return SB_FRAME_RAW;
    return s->enc == SB_ENC_BINARY ? SB_FRAME_WS_BINARY : SB_FRAME_WS_TEXT;
}

struct sb_chunk *sb__session_chunk_of(struct sb_worker *w, const void *data, size_t len,
                                      enum sb_framing f)
{
    uint8_t hdr[SB_WS_MAX_HEADER];
    size_t hlen = 0;
    if (f != SB_FRAME_RAW)
        hlen = sb_ws_encode_header(hdr, true, f == SB_FRAME_WS_TEXT ? SB_WS_TEXT : SB_WS_BINARY,
                                   len, NULL);
    struct sb_chunk *ch = sb_chunk_new(w, hlen + len);
    if (!ch)
        return NULL;
    memcpy(ch->data, hdr, hlen);
    memcpy(ch->data + hlen, data, len);
    ch->len = (uint32_t)(hlen + len);
    return ch;
}

struct sb_chunk *sb__session_chunk(struct sb_worker *w, const struct sb_op *op, enum sb_framing f)
{
    bool json = f == SB_FRAME_WS_TEXT;
    char small[1024];
    ssize_t size = json ? (ssize_t)sb_jsonops_bound(op) : sb_binproto_size(op);
    char *buf = size <= 0 || (size_t)size <= sizeof(small) ? small : malloc((size_t)size);
    ssize_t n = size <= 0 ? -EINVAL
                : !buf    ? -ENOMEM
                : json    ? sb_jsonops_encode(op, buf, (size_t)size)
                          : sb_binproto_encode(op, (uint8_t *)buf, (size_t)size);
    struct sb_chunk *ch = n > 0 ? sb__session_chunk_of(w, buf, (size_t)n, f) : NULL;
    if (buf != small)
        free(buf);
    return ch;
}

void sb__session_send_op(struct sb_conn *c, const struct sb_op *op)
{
    const struct sb_session *s = sb_conn_app(c);
    bool json = s->state == SB_SESS_HTTP || s->enc == SB_ENC_JSON;
    char small[1024];
    ssize_t size = json ? (ssize_t)sb_jsonops_bound(op) : sb_binproto_size(op);
    char *buf = size <= 0 || (size_t)size <= sizeof(small) ? small : malloc((size_t)size);
    ssize_t n = size <= 0 ? -EINVAL
                : !buf    ? -ENOMEM
                : json    ? sb_jsonops_encode(op, buf, (size_t)size)
                          : sb_binproto_encode(op, (uint8_t *)buf, (size_t)size);
    if (n > 0)
        sb__session_send(c, buf, (size_t)n);
    else
        sb_log(SB_LOG_WARN, (int)n, "c%llx: %s not sent", (unsigned long long)sb_conn_id(c),
               sb_ops_type_name(op->type));
    if (buf != small)
        free(buf);
}

void sb__session_send_pong(struct sb_conn *c, uint32_t request_id, struct sb_slice data)
{
    /* PONG is the echo every keep-alive and benchmark exercises: its two fields are written
     * here directly into the output queue (layout: docs/protocol-binary.md; the codec's tests
     * and test_binary.py read it back) instead of through the table-driven encoder. */
    const struct sb_session *s = sb_conn_app(c);
    size_t flen = SB_BINPROTO_HEADER_SIZE + 2 + data.len;
    uint8_t hdr[SB_WS_MAX_HEADER];
    size_t hlen =
        s->state == SB_SESS_RAW ? 0 : sb_ws_encode_header(hdr, true, SB_WS_BINARY, flen, NULL);
    uint8_t *p = sb_conn_out_reserve(c, hlen + flen);
    if (!p) {
        sb_conn_close(c, -ENOMEM);
        return;
    }
    if (hlen) {
        memcpy(p, hdr, hlen);
        p += hlen;
    }
    /* Big-endian words, stored whole: length, then version/type/flags, request id, data length. */
    uint32_t w[3] = {
        __builtin_bswap32((uint32_t)(flen - 4)),
        __builtin_bswap32((uint32_t)SB_BINPROTO_VERSION << 24 | (uint32_t)SB_OP_PONG << 16),
        __builtin_bswap32(request_id)};
    uint16_t dlen = __builtin_bswap16((uint16_t)data.len);
    memcpy(p, w, sizeof(w));
    memcpy(p + sizeof(w), &dlen, sizeof(dlen));
    if (data.len)
        memcpy(p + sizeof(w) + sizeof(dlen), data.base, data.len);
}

void sb__session_close(struct sb_conn *c, uint16_t ws_code, const char *reason)
{
    struct sb_session *s = sb_conn_app(c);
    if (s->state == SB_SESS_WS) {
        sb__ws_close(c, ws_code, reason);
        return;
    }
    sb_log(SB_LOG_INFO, 0, "c%llx: closing: %s", (unsigned long long)sb_conn_id(c), reason);
    sb_conn_close_after_flush(c);
}
