#include "loadgen/lg_ws.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct sb_ws_decode_opts server_frames = {
    .forbid_mask = true,
    .allowed_rsv = 0,
    .max_payload = 0, /* the payload is never buffered, so its size costs nothing */
};

static void base64_16(const uint8_t in[16], char out[LG_WS_KEY_LEN + 1])
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = out;
    for (int i = 0; i < 15; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    /* 16 = 5 * 3 + 1: the last byte makes two characters and two pads. */
    *o++ = tab[in[15] >> 2];
    *o++ = tab[(in[15] & 3) << 4];
    *o++ = '=';
    *o++ = '=';
    *o = '\0';
}

ssize_t lg_ws_request(char *out, size_t cap, const char *host, const char *path,
                      const char *protocol, const uint8_t nonce[16], char key[LG_WS_KEY_LEN + 1])
{
    base64_16(nonce, key);
    int n = snprintf(out, cap,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "%s%s%s"
                     "\r\n",
                     path, host, key, protocol ? "Sec-WebSocket-Protocol: " : "",
                     protocol ? protocol : "", protocol ? "\r\n" : "");
    if (n < 0 || (size_t)n >= cap)
        return -ENOSPC;
    return n;
}

/* True when the comma-separated list [v, v+len) holds token, ignoring case and spaces. */
static bool has_token(const char *v, size_t len, const char *token)
{
    size_t tlen = strlen(token);
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tlen && strncasecmp(v + start, token, tlen) == 0)
            return true;
    }
    return false;
}

static int parse_status(const char *buf, size_t line_len, int *status)
{
    /* "HTTP/1.1 101 ..." : version, one space, three digits, then a space or the end. */
    if (line_len < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || (buf[7] != '1' && buf[7] != '0') ||
        buf[8] != ' ')
        return -EBADMSG;
    int s = 0;
    for (int i = 9; i < 12; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            return -EBADMSG;
        s = s * 10 + (buf[i] - '0');
    }
    if (line_len > 12 && buf[12] != ' ')
        return -EBADMSG;
    *status = s;
    return 0;
}

ssize_t lg_ws_check_response(const char *buf, size_t len, const char *key, const char *protocol,
                             int *status)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return len >= LG_WS_RESPONSE_MAX ? -EMSGSIZE : -EAGAIN;
    size_t head_len = (size_t)(end - buf) + 4;
    const char *eol = memmem(buf, head_len, "\r\n", 2);
    *status = 0;
    if (parse_status(buf, (size_t)(eol - buf), status) < 0)
        return -EBADMSG;
    if (*status != 101)
        return -EPROTO;
    if (buf[7] != '1')
        return -EBADMSG;

    char want[SB_WS_ACCEPT_LEN + 1];
    if (sb_ws_accept_key(key, strlen(key), want) < 0)
        return -EBADMSG;
    bool upgrade = false, connection = false, accept = false, subprotocol_ok = protocol == NULL;
    const char *line = eol + 2;
    while (line < end + 2) {
        const char *next = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        const char *colon = memchr(line, ':', (size_t)(next - line));
        if (!colon || colon == line)
            return -EBADMSG;
        size_t name_len = (size_t)(colon - line);
        const char *v = colon + 1;
        const char *ve = next;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t vlen = (size_t)(ve - v);
        if (name_len == 7 && strncasecmp(line, "Upgrade", 7) == 0)
            upgrade = has_token(v, vlen, "websocket");
        else if (name_len == 10 && strncasecmp(line, "Connection", 10) == 0)
            connection = has_token(v, vlen, "upgrade");
        else if (name_len == 20 && strncasecmp(line, "Sec-WebSocket-Accept", 20) == 0)
            accept = vlen == SB_WS_ACCEPT_LEN && memcmp(v, want, vlen) == 0;
        else if (name_len == 22 && strncasecmp(line, "Sec-WebSocket-Protocol", 22) == 0)
            subprotocol_ok = protocol && vlen == strlen(protocol) && memcmp(v, protocol, vlen) == 0;
        line = next + 2;
    }
    return upgrade && connection && accept && subprotocol_ok ? (ssize_t)head_len : -EBADMSG;
}

size_t lg_ws_frame(uint8_t *out, uint8_t opcode, const void *payload, size_t len, uint32_t mask)
{
    uint8_t key[4];
    memcpy(key, &mask, 4);
    size_t h = sb_ws_encode_header(out, true, opcode, len, key);
    /* Masking is the same XOR as unmasking, so the server codec's loop does the copy. */
    sb_ws_unmask_copy(out + h, payload, len, key, 0);
    return h + len;
}

/* Validates a new frame against the message state and sets up its payload. */
static int start_frame(struct lg_ws_rx *rx, const struct sb_ws_frame *f)
{
    bool control = f->opcode >= SB_WS_CLOSE;
    if (!control) {
        if (f->opcode == SB_WS_CONT && !rx->in_message)
            return -EPROTO;
        if (f->opcode != SB_WS_CONT && rx->in_message)
            return -EPROTO;
        if (f->opcode != SB_WS_CONT) {
            rx->msg_opcode = f->opcode;
            rx->msg_len = 0;
            rx->head_len = 0;
            rx->gather_len = 0;
        }
        rx->in_message = !f->fin;
    }
    rx->opcode = f->opcode;
    rx->fin = f->fin;
    rx->remaining = f->payload_len;
    rx->ctrl_len = 0;
    rx->in_frame = true;
    return 0;
}

static int end_frame(struct lg_ws_rx *rx, lg_ws_msg_cb cb, void *ctx)
{
    rx->in_frame = false;
    rx->hdr_len = 0;
    struct lg_ws_msg m;
    if (rx->opcode >= SB_WS_CLOSE) {
        m = (struct lg_ws_msg){rx->opcode, rx->ctrl_len, rx->ctrl, rx->ctrl_len, NULL};
        return cb(ctx, &m);
    }
    if (!rx->fin)
        return 0;
    if (rx->gather)
        m = (struct lg_ws_msg){rx->msg_opcode, rx->msg_len, rx->gather, rx->gather_len, NULL};
    else
        m = (struct lg_ws_msg){rx->msg_opcode, rx->msg_len, rx->head, rx->head_len, NULL};
    return cb(ctx, &m);
}

/* Parses a header from data, or from the bytes saved in rx->hdr plus data. Returns bytes used. */
static ssize_t take_header(struct lg_ws_rx *rx, const uint8_t *data, size_t len)
{
    struct sb_ws_frame f;
    ssize_t h;
    if (rx->hdr_len == 0) {
        h = sb_ws_decode_header(data, len, &server_frames, &f);
        if (h == -EAGAIN) {
            memcpy(rx->hdr, data, len);
            rx->hdr_len = (uint8_t)len;
            return (ssize_t)len;
        }
        if (h < 0)
            return -EPROTO;
        int err = start_frame(rx, &f);
        return err ? err : h;
    }
    size_t old = rx->hdr_len;
    size_t n = sizeof(rx->hdr) - old < len ? sizeof(rx->hdr) - old : len;
    memcpy(rx->hdr + old, data, n);
    h = sb_ws_decode_header(rx->hdr, old + n, &server_frames, &f);
    if (h == -EAGAIN) {
        rx->hdr_len = (uint8_t)(old + n);
        return (ssize_t)n;
    }
    if (h < 0)
        return -EPROTO;
    int err = start_frame(rx, &f);
    return err ? err : h - (ssize_t)old;
}

/*
 * The common case: a whole unfragmented message (or control frame) inside this read. It is
 * delivered straight from the caller's buffer, without touching rx. Returns the bytes used, 0
 * when the general path must handle the frame, or a negative errno.
 */
static ssize_t whole_frame(struct lg_ws_rx *rx, const uint8_t *data, size_t len, lg_ws_msg_cb cb,
                           void *ctx)
{
    struct sb_ws_frame f;
    ssize_t h = sb_ws_decode_header(data, len, &server_frames, &f);
    if (h < 0)
        return h == -EAGAIN ? 0 : -EPROTO;
    bool control = f.opcode >= SB_WS_CLOSE;
    if (f.payload_len > len - (size_t)h ||
        (!control && (!f.fin || f.opcode == SB_WS_CONT || rx->in_message)))
        return 0;
    size_t plen = (size_t)f.payload_len;
    size_t keep = rx->gather ? rx->gather_cap : LG_WS_HEAD;
    struct lg_ws_msg m = {f.opcode, plen, data + h, control || plen < keep ? plen : keep, NULL};
    int err = 0;
    if (rx->stream && !control && plen > 0)
        err = rx->stream(ctx, f.opcode, data + h, plen);
    if (!err)
        err = cb(ctx, &m);
    return err ? err : h + (ssize_t)plen;
}

int lg_ws_parse(struct lg_ws_rx *rx, const uint8_t *data, size_t len, lg_ws_msg_cb cb, void *ctx)
{
    while (len > 0) {
        if (!rx->in_frame && rx->hdr_len == 0) {
            ssize_t used = whole_frame(rx, data, len, cb, ctx);
            if (used < 0)
                return (int)used;
            if (used > 0) {
                data += used;
                len -= (size_t)used;
                continue;
            }
        }
        if (!rx->in_frame) {
            ssize_t used = take_header(rx, data, len);
            if (used < 0)
                return (int)used;
            data += used;
            len -= (size_t)used;
            if (rx->in_frame && rx->remaining == 0) {
                int err = end_frame(rx, cb, ctx);
                if (err)
                    return err;
            }
            continue;
        }
        size_t n = rx->remaining < len ? (size_t)rx->remaining : len;
        if (rx->opcode >= SB_WS_CLOSE) {
            memcpy(rx->ctrl + rx->ctrl_len, data, n);
            rx->ctrl_len = (uint8_t)(rx->ctrl_len + n);
        } else if (rx->stream) {
            rx->msg_len += n;
            if (n > 0) {
                int err = rx->stream(ctx, rx->msg_opcode, data, n);
                if (err)
                    return err;
            }
        } else if (rx->gather) {
            if (rx->gather_len < rx->gather_cap) {
                size_t k =
                    rx->gather_cap - rx->gather_len < n ? rx->gather_cap - rx->gather_len : n;
                memcpy(rx->gather + rx->gather_len, data, k);
                rx->gather_len += (uint32_t)k;
            }
            rx->msg_len += n;
        } else {
            if (rx->head_len < LG_WS_HEAD) {
                size_t k = LG_WS_HEAD - rx->head_len < n ? LG_WS_HEAD - rx->head_len : n;
                memcpy(rx->head + rx->head_len, data, k);
                rx->head_len = (uint8_t)(rx->head_len + k);
            }
            rx->msg_len += n;
        }
        rx->remaining -= n;
        data += n;
        len -= n;
        if (rx->remaining == 0) {
            int err = end_frame(rx, cb, ctx);
            if (err)
                return err;
        }
    }
    return 0;
}
