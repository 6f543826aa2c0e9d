/*
 * The binary protocol's transports (docs/protocol-binary.md): the binary port, where frames
 * follow each other on a raw TCP stream, and WebSocket binary messages on /ws with the
 * subprotocol switchboard.v1. Either way the first frame is HELLO; after it the session is a
 * messaging session like JSON's, on its user's home worker.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "proto/binproto.h"
#include "server/chat.h"
#include "server/gateway.h"
#include "server/ids.h"
#include "server/metrics.h"

static struct sb_session *session(struct sb_conn *c)
{
    return sb_conn_app(c);
}

/* After HELLO: PING after ping_interval_ms of silence, close after another one. */
static void arm_ping(struct sb_conn *c)
{
    struct sb_session *s = session(c);
    s->timer = sb__gw.ping_interval_ms ? SB_TIMER_PING : SB_TIMER_NONE;
    sb_conn_set_timer(c, sb__gw.ping_interval_ms);
}

/* Refuses the session before (or at) its HELLO: ERROR, then the connection ends. */
static void refuse(struct sb_conn *c, uint32_t request_id, enum sb_op_err code, const char *why)
{
    sb_log(SB_LOG_INFO, 0, "c%llx: binary session refused: %s", (unsigned long long)sb_conn_id(c),
           why);
    struct sb_op op = {.type = SB_OP_ERROR, .request_id = request_id};
    op.u.error.code = (uint16_t)code;
    op.u.error.message = sb_slice_from(why, strlen(why));
    sb__session_send_op(c, &op);
    sb__session_close(c, SB_WS_CLOSE_POLICY, why);
}

/*
 * The HELLO (frame[0..len) decoded as op): authenticates (on the binary port by its token; on
 * WebSocket the upgrade did, and a token, if any, must name the same user), names the device
 * and registers the session on its home worker, moving it there first when needed. Returns
 * true when the session moved: what follows the frame is for the home worker to read.
 */
static bool hello(struct sb_conn *c, const struct sb_op *op, const uint8_t *frame, size_t len)
{
    struct sb_session *s = session(c);
    const struct sb_op_hello *h = &op->u.hello;
    struct sb_chat_login *login = s->chat;
    s->chat = NULL;
    if (h->token.len || !login) {
        struct sb_jwt_claims claims;
        enum sb_jwt_error e = h->token.len ? sb_auth_token(sb__gw.auth, h->token.base, h->token.len,
                                                           time(NULL), &claims)
                                           : SB_JWT_MALFORMED;
        const char *why = !h->token.len ? "missing token" : sb_jwt_strerror(e);
        if (e == SB_JWT_OK && !sb_user_id_valid(claims.sub, strlen(claims.sub)))
            why = "subject is not a valid user id";
        else if (e == SB_JWT_OK && login && strcmp(login->user, claims.sub) != 0)
            why = "the token names another user than the upgrade's";
        else if (e == SB_JWT_OK)
            why = NULL;
        if (why) {
            sb_metric_add(sb_conn_worker(c), SB_M_AUTH_FAILURES, 1);
            sb_chat_login_free(login);
            refuse(c, op->request_id, SB_OP_ERR_UNAUTHORIZED, why);
            return false;
        }
        if (!login && !(login = calloc(1, sizeof(*login)))) {
            refuse(c, op->request_id, SB_OP_ERR_UNAVAILABLE, "out of memory");
            return false;
        }
        memcpy(login->user, claims.sub, strlen(claims.sub) + 1);
        login->is_admin = login->is_admin || sb_jwt_has_scope(&claims, "admin");
    }
    if (h->device.len && !sb_user_id_valid(h->device.base, h->device.len)) {
        sb_chat_login_free(login);
        refuse(c, op->request_id, SB_OP_ERR_BAD_REQUEST,
               "device must be 1-32 bytes of [A-Za-z0-9_.@-]");
        return false;
    }
    if (h->device.len) {
        memcpy(login->device, h->device.base, h->device.len);
        login->device[h->device.len] = '\0';
    } else if (!login->device[0]) {
        snprintf(login->device, sizeof(login->device), "d%llx", (unsigned long long)sb_conn_id(c));
    }
    login->hello_id = op->request_id;
    login->hello = malloc(len);
    if (!login->hello) {
        sb_chat_login_free(login);
        refuse(c, op->request_id, SB_OP_ERR_UNAVAILABLE, "out of memory");
        return false;
    }
    memcpy(login->hello, frame, len);
    login->hello_len = len;
    s->chat = login;
    unsigned home =
        sb_home_worker(login->user, strlen(login->user), sb_engine_workers(sb__gw.engine));
    if (home != sb_worker_id(sb_conn_worker(c))) {
        if (sb_conn_handoff(c, home) < 0)
            sb_conn_close(c, -EIO);
        return true;
    }
    if (sb_chat_register(c, login) < 0) {
        s->chat = NULL;
        sb_conn_close(c, -ENOMEM);
    } else if (s->state == SB_SESS_RAW) {
        arm_ping(c);
    }
    return false;
}

/* A decoded frame of len bytes: the HELLO, or an operation of the registered session. Returns
 * true when the session moved to another worker. */
static bool on_frame(struct sb_conn *c, const struct sb_op *op, const uint8_t *frame, size_t len)
{
    struct sb_session *s = session(c);
    sb_metric_add(sb_conn_worker(c), SB_M_WS_MESSAGES_IN, 1);
    if (s->chat_registered) {
        sb_chat_on_op(c, op, len);
        return false;
    }
    if (op->type != SB_OP_HELLO) {
        refuse(c, op->request_id, SB_OP_ERR_UNAUTHORIZED, "the first frame must be HELLO");
        return false;
    }
    return hello(c, op, frame, len);
}

/*
 * A frame the codec refused (rc): answered with ERROR; the session ends when the stream
 * cannot go on, or when it has not said HELLO yet. Returns true when it ends.
 */
static bool on_refused(struct sb_conn *c, ssize_t rc, const struct sb_binproto_header *hdr)
{
    static const struct {
        ssize_t rc;
        enum sb_op_err code;
        bool fatal;
        const char *why;
    } table[] = {
        {-EMSGSIZE, SB_OP_ERR_TOO_LARGE, true, "frame larger than the server accepts"},
        {-EPROTO, SB_OP_ERR_BAD_REQUEST, true, "frame too short for a header"},
        {-EPROTONOSUPPORT, SB_OP_ERR_UNSUPPORTED, true, "protocol version not supported"},
        {-EOPNOTSUPP, SB_OP_ERR_UNSUPPORTED, false, "unknown operation type"},
        {-EBADMSG, SB_OP_ERR_BAD_REQUEST, false, "malformed frame"},
    };
    size_t i = 0;
    while (i < sizeof(table) / sizeof(table[0]) - 1 && table[i].rc != rc)
        i++;
    uint32_t rid = table[i].fatal ? 0 : hdr->request_id;
    if (table[i].fatal || !session(c)->chat_registered) {
        refuse(c, rid, table[i].code, table[i].why);
        return true;
    }
    struct sb_op op = {.type = SB_OP_ERROR, .request_id = rid};
    op.u.error.code = (uint16_t)table[i].code;
    op.u.error.message = sb_slice_from(table[i].why, strlen(table[i].why));
    sb__session_send_op(c, &op);
    return false;
}

size_t sb__binary_input(struct sb_conn *c, uint8_t *data, size_t len)
{
    struct sb_session *s = session(c);
    size_t off = 0;
    s->ping_pending = false;
    while (off < len && !sb_conn_is_closing(c)) {
        struct sb_binproto_header hdr;
        struct sb_op op;
        ssize_t n = sb_binproto_decode(data + off, len - off, sb__gw.max_message_size, &hdr, &op);
        if (n == -EAGAIN) {
            /* Wait for the whole frame; grow the input buffer once rather than repeatedly. */
            sb_conn_reserve_input(c, hdr.frame_size);
            break;
        }
        if (n < 0) {
            if (on_refused(c, n, &hdr))
                return len;
            off += hdr.frame_size;
            continue;
        }
        if (on_frame(c, &op, data + off, (size_t)n))
            return off + (size_t)n;
        off += (size_t)n;
    }
    return sb_conn_is_closing(c) ? len : off;
}

void sb__binary_message(struct sb_conn *c, const uint8_t *data, size_t len)
{
    struct sb_binproto_header hdr;
    struct sb_op op;
    int rc = sb_binproto_decode_frame(data, len, sb__gw.max_message_size, &hdr, &op);
    if (rc < 0)
        on_refused(c, rc, &hdr);
    else
        on_frame(c, &op, data, len); /* on WebSocket the session is on its home worker already */
}

/* ---- the binary port's connection callbacks -------------------------------------------------- */

static void on_open(struct sb_conn *c)
{
    struct sb_session *s = session(c);
    s->state = SB_SESS_RAW;
    s->route = SB_ROUTE_CHAT;
    s->enc = SB_ENC_BINARY;
    s->timer = SB_TIMER_HANDSHAKE;
    sb_conn_set_timer(c, sb__gw.handshake_timeout_ms);
}

static ssize_t on_data(struct sb_conn *c, uint8_t *data, size_t len)
{
    return (ssize_t)sb__binary_input(c, data, len);
}

static void on_timer(struct sb_conn *c)
{
    struct sb_session *s = session(c);
    if (s->timer == SB_TIMER_HANDSHAKE && !s->chat_registered) {
        sb_log(SB_LOG_INFO, 0, "c%llx: no HELLO within %" PRIu64 " ms; dropped",
               (unsigned long long)sb_conn_id(c), sb__gw.handshake_timeout_ms);
        sb_conn_close(c, -ETIMEDOUT);
        return;
    }
    uint64_t idle = sb_worker_now_ms(sb_conn_worker(c)) - sb_conn_last_rx_ms(c);
    uint64_t interval = sb__gw.ping_interval_ms;
    if (!interval)
        return;
    if (idle < interval) {
        s->ping_pending = false;
        sb_conn_set_timer(c, interval - idle);
        return;
    }
    if (s->ping_pending) {
        sb_log(SB_LOG_INFO, 0, "c%llx: no answer to PING; closing",
               (unsigned long long)sb_conn_id(c));
        sb_conn_close(c, -ETIMEDOUT);
        return;
    }
    s->ping_pending = true;
    struct sb_op ping = {.type = SB_OP_PING};
    sb__session_send_op(c, &ping);
    sb_conn_set_timer(c, interval);
}

static void on_close(struct sb_conn *c, int err)
{
    if (err && err != -ECONNRESET && err != -EPIPE && err != -ETIMEDOUT)
        sb_log(SB_LOG_INFO, err, "c%llx: connection error", (unsigned long long)sb_conn_id(c));
    sb_chat_unregister(c);
}

static void on_shutdown(struct sb_conn *c)
{
    if (session(c)->chat_registered) {
        static const char why[] = "server shutting down";
        struct sb_op op = {.type = SB_OP_GOAWAY};
        op.u.goaway.reason = sb_slice_from(why, sizeof(why) - 1);
        sb__session_send_op(c, &op);
    }
    sb_conn_close_after_flush(c);
}

static void on_handoff(struct sb_conn *c)
{
    struct sb_session *s = session(c);
    if (!s->chat_registered && s->chat && sb_chat_register(c, s->chat) < 0) {
        s->chat = NULL;
        sb_conn_close(c, -ENOMEM);
        return;
    }
    arm_ping(c);
}

const struct sb_conn_ops sb__binary_ops = {
    .on_open = on_open,
    .on_data = on_data,
    .on_timer = on_timer,
    .on_close = on_close,
    .on_shutdown = on_shutdown,
    .on_handoff = on_handoff,
};
