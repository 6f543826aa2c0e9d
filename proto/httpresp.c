/*
 * HTTP/1.1 responses (RFC 9110, RFC 9112), read strictly and within fixed bounds: the peer is a
 * server we call, but nothing it sends may make us buffer without limit or misframe the next
 * response on a kept-alive connection.
 */
#include "proto/httpresp.h"

#include <errno.h>
#include <string.h>

enum {
    CC_TCHAR = 1, /* token (RFC 9110 5.6.2): field names, transfer codings */
    CC_VALUE = 2, /* field-value and reason-phrase: VCHAR, obs-text, SP, HTAB */
    CC_WS = 4,    /* OWS: SP, HTAB */
};

static unsigned char char_class(unsigned char c)
{
    if (c == ' ' || c == '\t')
        return CC_VALUE | CC_WS;
    if (c < 0x21 || c == 0x7f)
        return 0;
    if (c >= 0x80)
        return CC_VALUE;
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        strchr("!#$%&'*+-.^_`|~", c))
        return CC_TCHAR | CC_VALUE;
    return CC_VALUE;
}

static const char *scan(const char *p, const char *end, unsigned char cls)
{
    while (p < end && (char_class((unsigned char)*p) & cls))
        p++;
    return p;
}

static bool ieq(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    if (alen != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if ((c >= 'A' && c <= 'Z' ? c | 0x20 : c) != (unsigned char)lit[i])
            return false;
    }
    return true;
}

/*
 * The line at p: returns the length of its content (CRLF excluded) when a CRLF ends it within
 * max content bytes; -EAGAIN when more bytes are needed; -EMSGSIZE when it is longer; -EBADMSG
 * for a bare LF. Depends only on the bytes inspected, so feeding in pieces decides the same.
 */
static ssize_t find_line(const char *p, size_t avail, size_t max)
{
    size_t lim = avail < max + 2 ? avail : max + 2;
    for (size_t i = 0; i < lim; i++) {
        if (p[i] != '\n')
            continue;
        if (i == 0 || p[i - 1] != '\r')
            return -EBADMSG;
        return (ssize_t)(i - 1);
    }
    return avail >= max + 2 ? -EMSGSIZE : -EAGAIN;
}

/* What the header fields of one head said about framing and the connection. */
struct facts {
    bool has_cl, has_te, te_chunked, conn_close, conn_keep_alive;
    uint64_t cl;
};

/* A comma-separated list of tokens (OWS around commas, empty elements allowed). Calls on_token
 * for each; returns 0 or -EBADMSG. */
static int token_list(const char *p, const char *end, struct facts *f,
                      int (*on_token)(struct facts *f, const char *t, size_t n))
{
    while (p < end) {
        p = scan(p, end, CC_WS);
        const char *t = p;
        p = scan(p, end, CC_TCHAR);
        if (p > t) {
            int r = on_token(f, t, (size_t)(p - t));
            if (r < 0)
                return r;
        }
        p = scan(p, end, CC_WS);
        if (p < end && *p++ != ',')
            return -EBADMSG;
    }
    return 0;
}

/* Transfer-Encoding: chunked must come last, once; we discard the body, so the codings before
 * it need no decoding. */
static int te_token(struct facts *f, const char *t, size_t n)
{
    if (f->te_chunked)
        return -EBADMSG;
    f->te_chunked = ieq(t, n, "chunked");
    return 0;
}

static int conn_token(struct facts *f, const char *t, size_t n)
{
    if (ieq(t, n, "close"))
        f->conn_close = true;
    else if (ieq(t, n, "keep-alive"))
        f->conn_keep_alive = true;
    return 0;
}

static int content_length(struct facts *f, const char *v, size_t n)
{
    /* Only 1*DIGIT: a list ("5, 5") or a sign is refused, as a repeat with another value is. */
    if (n == 0 || n > 18)
        return n ? -EMSGSIZE : -EBADMSG;
    uint64_t cl = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -EBADMSG;
        cl = cl * 10 + (uint64_t)(v[i] - '0');
    }
    if (f->has_cl && f->cl != cl)
        return -EBADMSG;
    f->has_cl = true;
    f->cl = cl;
    return 0;
}

/* One "name: value" field line (without its CRLF). With f, framing fields are recorded. */
static int field_line(const char *p, const char *end, struct facts *f)
{
    const char *name = p;
    p = scan(p, end, CC_TCHAR);
    size_t nlen = (size_t)(p - name);
    /* No whitespace before the colon, no obs-fold (a line starting with whitespace). */
    if (nlen == 0 || p == end || *p++ != ':')
        return -EBADMSG;
    p = scan(p, end, CC_WS);
    const char *v = p;
    p = scan(p, end, CC_VALUE);
    if (p != end)
        return -EBADMSG; /* a control byte, or a CR not followed by LF */
    const char *vend = end;
    while (vend > v && (char_class((unsigned char)vend[-1]) & CC_WS))
        vend--;
    if (!f)
        return 0;
    if (ieq(name, nlen, "content-length"))
        return content_length(f, v, (size_t)(vend - v));
    if (ieq(name, nlen, "transfer-encoding")) {
        f->has_te = true;
        return token_list(v, vend, f, te_token);
    }
    if (ieq(name, nlen, "connection"))
        return token_list(v, vend, f, conn_token);
    return 0;
}

/* "HTTP/1.x SP 3DIGIT [SP reason-phrase]". Returns 0, -EBADMSG or -EPROTONOSUPPORT. */
static int status_line(const char *p, size_t n, int *status, int *minor)
{
    const char *end = p + n;
    if (n < 12 || memcmp(p, "HTTP/", 5) != 0 || p[6] != '.' || p[5] < '0' || p[5] > '9' ||
        p[7] < '0' || p[7] > '9')
        return -EBADMSG;
    if (p[5] != '1' || p[7] > '1')
        return -EPROTONOSUPPORT;
    if (p[8] != ' ' || p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' ||
        p[11] > '9')
        return -EBADMSG;
    /* RFC 9112 wants the SP before an empty reason; some servers omit it, harmlessly. */
    if (n > 12 && (p[12] != ' ' || scan(p + 13, end, CC_VALUE) != end))
        return -EBADMSG;
    *minor = p[7] - '0';
    *status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    return 0;
}

/* The head at buf: its length when complete and valid (the state moves on), else an error or
 * -EAGAIN. */
static ssize_t read_head(struct sb_httpresp *r, const char *buf, size_t len)
{
    /* Refuse a peer that does not speak HTTP at once, not after 8 KiB of waiting. */
    size_t pre = len < 5 ? len : 5;
    if (memcmp(buf, "HTTP/", pre) != 0)
        return -EBADMSG;
    ssize_t n = find_line(buf, len, SB_HTTPRESP_MAX_HEAD - 2);
    if (n < 0)
        return n;
    int status, minor;
    int e = status_line(buf, (size_t)n, &status, &minor);
    if (e < 0)
        return e;
    struct facts f = {0};
    size_t pos = (size_t)n + 2;
    unsigned fields = 0;
    for (;;) {
        if (pos + 2 > SB_HTTPRESP_MAX_HEAD)
            return -EMSGSIZE;
        n = find_line(buf + pos, len - pos, SB_HTTPRESP_MAX_HEAD - 2 - pos);
        if (n < 0)
            return n;
        if (n == 0)
            break;
        if (++fields > SB_HTTPRESP_MAX_HEADERS)
            return -EMSGSIZE;
        e = field_line(buf + pos, buf + pos + n, &f);
        if (e < 0)
            return e;
        pos += (size_t)n + 2;
    }
    pos += 2;
    if (status < 200) {
        /* Interim: no body, and its fields say nothing about the final response. */
        if (status == 101)
            return -EBADMSG; /* we never ask to switch protocols */
        if (++r->interim > SB_HTTPRESP_MAX_INTERIM)
            return -EMSGSIZE;
        return (ssize_t)pos;
    }
    if (f.has_te && f.has_cl)
        return -EBADMSG;
    if (f.has_te && !f.te_chunked)
        return -EBADMSG; /* only a close could end such a body: too ambiguous to accept */
    r->status = status;
    r->minor_version = minor;
    r->keep_alive = minor == 1 ? !f.conn_close : f.conn_keep_alive && !f.conn_close;
    if (status == 204 || status == 304) {
        r->state = SB_HTTPRESP_DONE;
    } else if (f.has_te) {
        r->state = SB_HTTPRESP_CHUNK_SIZE;
    } else if (f.has_cl) {
        if (f.cl > SB_HTTPRESP_MAX_BODY)
            return -EMSGSIZE;
        r->remaining = f.cl;
        r->state = f.cl ? SB_HTTPRESP_BODY : SB_HTTPRESP_DONE;
    } else {
        r->keep_alive = false;
        r->state = SB_HTTPRESP_UNTIL_CLOSE;
    }
    return (ssize_t)pos;
}

/* "1*HEXDIG [ext]" where ext is BWS ";" and the rest of the line. */
static int chunk_size(struct sb_httpresp *r, const char *p, size_t n)
{
    const char *end = p + n, *q = p;
    uint64_t size = 0;
    for (; q < end; q++) {
        int d;
        if (*q >= '0' && *q <= '9')
            d = *q - '0';
        else if ((*q | 0x20) >= 'a' && (*q | 0x20) <= 'f')
            d = (*q | 0x20) - 'a' + 10;
        else
            break;
        size = size * 16 + (uint64_t)d;
        if (size > SB_HTTPRESP_MAX_BODY)
            return -EMSGSIZE;
    }
    if (q == p)
        return -EBADMSG;
    if (q < end) {
        q = scan(q, end, CC_WS);
        if (q == end || *q != ';' || scan(q, end, CC_VALUE) != end)
            return -EBADMSG;
    }
    if (r->body_len + size > SB_HTTPRESP_MAX_BODY)
        return -EMSGSIZE;
    r->remaining = size;
    r->state = size ? SB_HTTPRESP_CHUNK_DATA : SB_HTTPRESP_TRAILER;
    return 0;
}

/* Body bytes: the smaller of what is left and what is here. */
static size_t take(struct sb_httpresp *r, size_t avail)
{
    size_t n = r->remaining < avail ? (size_t)r->remaining : avail;
    r->remaining -= n;
    r->body_len += n;
    return n;
}

ssize_t sb_httpresp_feed(struct sb_httpresp *r, const char *buf, size_t len)
{
    size_t pos = 0;
    while (pos < len && r->state != SB_HTTPRESP_DONE) {
        const char *p = buf + pos;
        size_t avail = len - pos;
        ssize_t n;
        int e;
        switch ((enum sb_httpresp_state)r->state) {
        case SB_HTTPRESP_HEAD:
            n = read_head(r, p, avail);
            if (n == -EAGAIN)
                return (ssize_t)pos;
            if (n < 0)
                return n;
            pos += (size_t)n;
            break;
        case SB_HTTPRESP_BODY:
            pos += take(r, avail);
            if (r->remaining == 0)
                r->state = SB_HTTPRESP_DONE;
            break;
        case SB_HTTPRESP_CHUNK_SIZE:
            n = find_line(p, avail, SB_HTTPRESP_MAX_LINE);
            if (n == -EAGAIN)
                return (ssize_t)pos;
            if (n < 0)
                return n;
            e = chunk_size(r, p, (size_t)n);
            if (e < 0)
                return e;
            pos += (size_t)n + 2;
            break;
        case SB_HTTPRESP_CHUNK_DATA:
            pos += take(r, avail);
            if (r->remaining == 0)
                r->state = SB_HTTPRESP_CHUNK_END;
            break;
        case SB_HTTPRESP_CHUNK_END:
            if (p[0] != '\r' || (avail > 1 && p[1] != '\n'))
                return -EBADMSG;
            if (avail < 2)
                return (ssize_t)pos;
            pos += 2;
            r->state = SB_HTTPRESP_CHUNK_SIZE;
            break;
        case SB_HTTPRESP_TRAILER:
            n = find_line(p, avail, SB_HTTPRESP_MAX_LINE);
            if (n == -EAGAIN)
                return (ssize_t)pos;
            if (n < 0)
                return n;
            if (n == 0) {
                r->state = SB_HTTPRESP_DONE;
            } else {
                r->trailer_len += (uint32_t)n + 2;
                if (++r->trailers > SB_HTTPRESP_MAX_HEADERS ||
                    r->trailer_len > SB_HTTPRESP_MAX_HEAD)
                    return -EMSGSIZE;
                e = field_line(p, p + n, NULL);
                if (e < 0)
                    return e;
            }
            pos += (size_t)n + 2;
            break;
        case SB_HTTPRESP_UNTIL_CLOSE:
            if (r->body_len + avail > SB_HTTPRESP_MAX_BODY)
                return -EMSGSIZE;
            r->body_len += avail;
            pos = len;
            break;
        case SB_HTTPRESP_DONE:
            break;
        default:
            return -EBADMSG; /* a corrupted reader */
        }
    }
    return (ssize_t)pos;
}

int sb_httpresp_eof(struct sb_httpresp *r)
{
    if (r->state == SB_HTTPRESP_UNTIL_CLOSE)
        r->state = SB_HTTPRESP_DONE;
    return r->state == SB_HTTPRESP_DONE ? 0 : -EPIPE;
}
