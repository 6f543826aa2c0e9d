/*
 * The server side of an RFC 6455 session: frames in, messages out, control frames, the close
 * handshake and liveness pings. The echo service is the only message consumer for now.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "server/chat.h"
#include "server/gateway.h"
#include "server/metrics.h"

static struct sb_session *session(struct sb_conn *c)
{
    return sb_conn_app(c);
}

int sb__ws_send(struct sb_conn *c, uint8_t opcode, const uint8_t *payload, size_t len)
{
    uint8_t hdr[SB_WS_MAX_HEADER];
    size_t hlen = sb_ws_encode_header(hdr, true, opcode, len, NULL);
    uint8_t *p = sb_conn_out_reserve(c, hlen + len);
    if (!p)
        return -ENOMEM;
    memcpy(p, hdr, hlen);
    if (len)
        memcpy(p + hlen, payload, len);
    return 0;
}

void sb__ws_close(struct sb_conn *c, uint16_t code, const char *reason)
{
    struct sb_session *s = session(c);
    if (s->close_sent)
        return;
    uint8_t payload[SB_WS_MAX_CONTROL];
    size_t len = 0;
    if (code != SB_WS_CLOSE_NO_STATUS) {
        size_t rlen = reason ? strlen(reason) : 0;
        if (rlen > sizeof(payload) - 2)
            rlen = sizeof(payload) - 2;
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        if (rlen)
            memcpy(payload + 2, reason, rlen); /* reason may be NULL */
        len = 2 + rlen;
    }
    s->close_sent = true;
    if (sb__ws_send(c, SB_WS_CLOSE, payload, len) < 0) {
        sb_conn_close(c, -ENOMEM);
        return;
    }
    s->timer = SB_TIMER_CLOSE;
    sb_conn_set_timer(c, sb__gw.close_timeout_ms);
}

/* Fails the connection (RFC 6455 section 7.1.7): close frame with code, then TCP close. */
static void fail(struct sb_conn *c, uint16_t code, const char *why)
{
    sb_log(SB_LOG_INFO, 0, "c%llx: closing with %u: %s", (unsigned long long)sb_conn_id(c), code,
           why);
    sb_metric_add(sb_conn_worker(c), SB_M_WS_FAILURES, 1);
    struct sb_session *s = session(c);
    if (!s->close_sent)
        sb__ws_close(c, code, why);
    sb_conn_close_after_flush(c);
}

void sb__ws_release(struct sb_session *s)
{
    free(s->msg);
    s->msg = NULL;
    s->msg_len = s->msg_cap = 0;
}

static int msg_append(struct sb_session *s, const uint8_t *data, size_t len)
{
    if (len == 0)
        return 0; /* an empty fragment; s->msg may not exist yet */
    size_t need = (size_t)s->msg_len + len;
    if (need > s->msg_cap) {
        size_t cap = s->msg_cap ? s->msg_cap : 1024;
        while (cap < need)
            cap *= 2;
        uint8_t *m = realloc(s->msg, cap);
        if (!m)
            return -ENOMEM;
        s->msg = m;
        s->msg_cap = (uint32_t)cap;
    }
    memcpy(s->msg + s->msg_len, data, len);
    s->msg_len += (uint32_t)len;
    return 0;
}

/* A complete message arrived. */
static void on_message(struct sb_conn *c, uint8_t opcode, const uint8_t *data, size_t len)
{
    /* After sending a close frame an endpoint sends no more data (RFC 6455 section 5.5.1). */
    if (session(c)->close_sent)
        return;
    sb_metric_add(sb_conn_worker(c), SB_M_WS_MESSAGES_IN, 1);
    if (session(c)->route == SB_ROUTE_CHAT) {
        bool binary = session(c)->enc == SB_ENC_BINARY;
        if (opcode == SB_WS_TEXT && !binary)
            sb_chat_on_message(c, data, len);
        else if (opcode == SB_WS_BINARY && binary)
            sb__binary_message(c, data, len);
        else
            fail(c, SB_WS_CLOSE_UNSUPPORTED,
                 binary ? "switchboard.v1 takes binary messages only"
                        : "the JSON protocol takes text messages only");
        return;
    }
    if (sb__ws_send(c, opcode, data, len) < 0)
        sb_conn_close(c, -ENOMEM);
}

static void on_close_frame(struct sb_conn *c, const uint8_t *payload, size_t len)
{
    struct sb_session *s = session(c);
    uint16_t code;
    int r = sb_ws_parse_close(payload, len, &code);
    if (r == -EPROTO) {
        fail(c, SB_WS_CLOSE_PROTOCOL_ERROR, "invalid close frame");
        return;
    }
    if (r == -EILSEQ) {
        fail(c, SB_WS_CLOSE_INVALID_DATA, "close reason is not UTF-8");
        return;
    }
    /* Answer with the peer's code (section 5.5.1); then the TCP close is ours to make. */
    if (!s->close_sent)
        sb__ws_close(c, code, NULL);
    sb_conn_close_after_flush(c);
}

/* Handles one complete, unmasked frame. */
static void on_frame(struct sb_conn *c, const struct sb_ws_frame *f, uint8_t *payload)
{
    struct sb_session *s = session(c);
    size_t len = (size_t)f->payload_len;
    switch (f->opcode) {
    case SB_WS_PING:
        if (!s->close_sent && sb__ws_send(c, SB_WS_PONG, payload, len) < 0)
            sb_conn_close(c, -ENOMEM);
        return;
    case SB_WS_PONG:
        return;
    case SB_WS_CLOSE:
        on_close_frame(c, payload, len);
        return;
    case SB_WS_TEXT:
    case SB_WS_BINARY:
        if (s->frag_opcode) {
            fail(c, SB_WS_CLOSE_PROTOCOL_ERROR, "data frame inside a fragmented message");
            return;
        }
        if (f->fin) {
            if (f->opcode == SB_WS_TEXT && sb_utf8_validate(payload, len) < 0) {
                fail(c, SB_WS_CLOSE_INVALID_DATA, "text message is not UTF-8");
                return;
            }
            on_message(c, f->opcode, payload, len);
            return;
        }
        s->frag_opcode = f->opcode;
        memset(&s->utf8, 0, sizeof(s->utf8));
        break;
    case SB_WS_CONT:
        if (!s->frag_opcode) {
            fail(c, SB_WS_CLOSE_PROTOCOL_ERROR, "continuation without a message");
            return;
        }
        break;
    }
    /* A fragment: validate as it comes (fail fast), then gather. */
    if (s->frag_opcode == SB_WS_TEXT && sb_utf8_feed(&s->utf8, payload, len) < 0) {
        fail(c, SB_WS_CLOSE_INVALID_DATA, "text message is not UTF-8");
        return;
    }
    if (msg_append(s, payload, len) < 0) {
        sb_conn_close(c, -ENOMEM);
        return;
    }
    if (!f->fin)
        return;
    if (s->frag_opcode == SB_WS_TEXT && !sb_utf8_is_complete(&s->utf8)) {
        fail(c, SB_WS_CLOSE_INVALID_DATA, "text message ends inside a character");
        return;
    }
    on_message(c, s->frag_opcode, s->msg, s->msg_len);
    s->frag_opcode = 0;
    /* Keep a modest buffer for the next fragmented message; drop a big one. */
    if (s->msg_cap > 65536)
        sb__ws_release(s);
    s->msg_len = 0;
}

size_t sb__ws_input(struct sb_conn *c, uint8_t *data, size_t len)
{
    struct sb_session *s = session(c);
    const struct sb_ws_decode_opts opts = {
        .require_mask = true, .allowed_rsv = 0, .max_payload = sb__gw.max_message_size};
    size_t off = 0;
    s->ping_pending = false;
    while (off < len && !sb_conn_is_closing(c)) {
        struct sb_ws_frame f;
        ssize_t h = sb_ws_decode_header(data + off, len - off, &opts, &f);
        if (h == -EAGAIN)
            break;
        if (h == -EMSGSIZE) {
            fail(c, SB_WS_CLOSE_TOO_BIG, "message too big");
            return len;
        }
        if (h < 0) {
            fail(c, SB_WS_CLOSE_PROTOCOL_ERROR, "protocol error in frame header");
            return len;
        }
        bool is_data = f.opcode < 8;
        if (is_data && s->frag_opcode && s->msg_len + f.payload_len > sb__gw.max_message_size) {
            fail(c, SB_WS_CLOSE_TOO_BIG, "message too big");
            return len;
        }
        size_t total = (size_t)h + (size_t)f.payload_len;
        if (len - off < total) {
            /* Wait for the whole frame; grow the input buffer once rather than repeatedly. */
            sb_conn_reserve_input(c, total);
            break;
        }
        uint8_t *payload = data + off + h;
        sb_ws_unmask(payload, (size_t)f.payload_len, f.mask, 0);
        off += total;
        on_frame(c, &f, payload);
    }
    return sb_conn_is_closing(c) ? len : off;
}

void sb__ws_timer(struct sb_conn *c)
{
    struct sb_session *s = session(c);
    struct sb_worker *w = sb_conn_worker(c);
    if (s->timer == SB_TIMER_CLOSE) {
        sb_log(SB_LOG_INFO, 0, "c%llx: close handshake timed out",
               (unsigned long long)sb_conn_id(c));
        sb_conn_close(c, -ETIMEDOUT);
        return;
    }
    uint64_t idle = sb_worker_now_ms(w) - sb_conn_last_rx_ms(c);
    uint64_t interval = sb__gw.ping_interval_ms;
    if (idle < interval) {
        s->ping_pending = false;
        sb_conn_set_timer(c, interval - idle);
        return;
    }
    if (s->ping_pending) {
        sb_log(SB_LOG_INFO, 0, "c%llx: no answer to ping; closing",
               (unsigned long long)sb_conn_id(c));
        sb_conn_close(c, -ETIMEDOUT);
        return;
    }
    s->ping_pending = true;
    if (sb__ws_send(c, SB_WS_PING, NULL, 0) < 0) {
        sb_conn_close(c, -ENOMEM);
        return;
    }
    sb_conn_set_timer(c, interval);
}
