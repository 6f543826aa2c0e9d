/*
 * HTTP/1.1 request heads (RFC 9110, RFC 9112), parsed strictly: wherever a lenient parser and a
 * proxy in front of us could read the same bytes differently, we reject instead of guessing,
 * because that disagreement is what request smuggling feeds on.
 */
#include "proto/http.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

const struct sb_http_limits sb_http_default_limits = {
    .max_request_line = 8192,
    .max_header_bytes = 16384,
    .max_headers = SB_HTTP_MAX_HEADERS,
};

enum {
    CC_TCHAR = 1,  /* token (RFC 9110 5.6.2): methods and field names */
    CC_TARGET = 2, /* request-target: VCHAR except '#', since a fragment is never sent */
    CC_VALUE = 4,  /* field-value: VCHAR, obs-text, SP, HTAB */
    CC_WS = 8,     /* OWS: SP, HTAB */
};

/* clang-format off */
static const unsigned char char_class[256] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0, 12,  0,  0,  0,  0,  0,  0, /* 0x00 */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 0x10 */
    12,  7,  6,  5,  7,  7,  7,  7,  6,  6,  7,  7,  6,  7,  7,  6, /* 0x20 */
     7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  6,  6,  6,  6,  6,  6, /* 0x30 */
     6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7, /* 0x40 */
     7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  6,  6,  6,  7,  7, /* 0x50 */
     7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7, /* 0x60 */
     7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  6,  7,  6,  7,  0, /* 0x70 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0x80 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0x90 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xa0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xb0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xc0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xd0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xe0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xf0 */
};
/* clang-format on */

/* What the header fields said about framing and the connection, gathered while parsing. */
struct head_facts {
    bool has_te;
    bool has_host;
    bool has_close;
    bool has_keep_alive;
};

static const char *scan(const char *p, const char *end, unsigned char cls)
{
    while (p < end && (char_class[(unsigned char)*p] & cls))
        p++;
    return p;
}

static unsigned char ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

/* Locale-independent, and safe on slices that are not NUL-terminated. */
static bool ascii_ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
            return false;
    }
    return true;
}

static bool slice_ieq(struct sb_slice s, const char *lit, size_t lit_len)
{
    return s.len == lit_len && ascii_ieq(s.base, lit, lit_len);
}

/*
 * The request line ran out of bytes in hand. If input continues past max_line, the line is
 * longer than allowed whatever follows, so there is no point waiting for its end.
 */
static ssize_t line_cut(size_t len, size_t max_line)
{
    return len > max_line ? -ENAMETOOLONG : -EAGAIN;
}

static int set_target(struct sb_http_request *req, const char *t, size_t n)
{
    req->target = sb_slice_from(t, n);
    if (t[0] == '/') {
        const char *q = memchr(t, '?', n);
        size_t path_len = q ? (size_t)(q - t) : n;
        req->path = sb_slice_from(t, path_len);
        req->query = q ? sb_slice_from(q + 1, n - path_len - 1) : sb_slice_from(t + n, 0);
        return 0;
    }
    /* Absolute- and authority-form are for proxies; we are an origin server only. */
    if (n == 1 && t[0] == '*' && sb_slice_eq(req->method, "OPTIONS")) {
        req->path = req->target;
        req->query = sb_slice_from(t + n, 0);
        return 0;
    }
    return -EBADMSG;
}

/* Checks the fixed-width "HTTP/d.d" at p, as far as the bytes before lim go. */
static ssize_t parse_version(const char *p, const char *lim, int *major, int *minor)
{
    static const char shape[] = "HTTP/0.0";
    for (size_t i = 0; i < 8; i++) {
        if (p + i == lim)
            return -EAGAIN;
        unsigned char c = (unsigned char)p[i];
        if (shape[i] == '0' ? (c < '0' || c > '9') : c != (unsigned char)shape[i])
            return -EBADMSG;
    }
    *major = p[5] - '0';
    *minor = p[7] - '0';
    return 8;
}

/* Parses "method SP target SP HTTP/1.x CRLF"; returns its length including the CRLF. */

/* A line must end in CRLF at p: 0 when it does, -EAGAIN before it is all there, else -EBADMSG
 * (a bare LF included). */
static ssize_t expect_crlf(const char *p, const char *end)
{
    if (p == end)
        return -EAGAIN;
    if (*p != '\r')
        return -EBADMSG;
    if (p + 1 == end)
        return -EAGAIN;
    return p[1] == '\n' ? 0 : -EBADMSG;
}
static ssize_t parse_request_line(const char *buf, size_t len, size_t max_line,
                                  struct sb_http_request *req)
{
    const char *end = buf + len;
    const char *lim = buf + (len < max_line ? len : max_line);

    const char *p = scan(buf, lim, CC_TCHAR);
    if (p == lim)
        return line_cut(len, max_line);
    if (p == buf || *p != ' ')
        return -EBADMSG;
    req->method = sb_slice_from(buf, (size_t)(p - buf));

    const char *t = ++p;
    p = scan(p, lim, CC_TARGET);
    if (p == lim)
        return line_cut(len, max_line);
    if (p == t || *p != ' ')
        return -EBADMSG;
    int rc = set_target(req, t, (size_t)(p - t));
    if (rc < 0)
        return rc;

    int major, minor;
    ssize_t n = parse_version(++p, lim, &major, &minor);
    if (n == -EAGAIN)
        return line_cut(len, max_line);
    if (n < 0)
        return n;
    p += n;
    ssize_t crlf = expect_crlf(p, end);
    if (crlf < 0)
        return crlf;
    if (major != 1 || minor > 1)
        return -EPROTONOSUPPORT;
    req->minor_version = minor;
    return p + 2 - buf;
}

/* Parses one "name: value CRLF" field line at start; returns its length including the CRLF. */
static ssize_t parse_field(const char *start, const char *end, struct sb_http_header *h)
{
    const char *p = scan(start, end, CC_TCHAR);
    if (p == end)
        return -EAGAIN;
    /*
     * An empty name here is a line starting with SP/HTAB (obs-fold, RFC 9112 5.2) or a bare LF;
     * whitespace before the colon must be rejected (RFC 9112 5.1) because parsers disagree on
     * whether it belongs to the name.
     */
    if (p == start || *p != ':')
        return -EBADMSG;
    h->name = sb_slice_from(start, (size_t)(p - start));

    const char *v = scan(p + 1, end, CC_WS);
    p = scan(v, end, CC_VALUE);
    ssize_t crlf = expect_crlf(p, end);
    if (crlf < 0)
        return crlf;
    const char *ve = p;
    while (ve > v && (char_class[(unsigned char)ve[-1]] & CC_WS))
        ve--;
    h->value = sb_slice_from(v, (size_t)(ve - v));
    return p + 2 - start;
}

static int parse_content_length(struct sb_slice v, uint64_t *out)
{
    uint64_t n = 0;
    if (v.len == 0)
        return -EBADMSG;
    for (size_t i = 0; i < v.len; i++) {
        unsigned d = (unsigned)((unsigned char)v.base[i] - '0');
        if (d > 9 || n > (UINT64_MAX - d) / 10)
            return -EBADMSG;
        n = n * 10 + d;
    }
    *out = n;
    return 0;
}

/* Records what a field means for framing and keep-alive; rejects ambiguous framing. */
static int apply_field(struct sb_http_request *req, const struct sb_http_header *h,
                       struct head_facts *facts)
{
    if (slice_ieq(h->name, "content-length", 14)) {
        uint64_t n;
        if (parse_content_length(h->value, &n) < 0)
            return -EBADMSG;
        /* Repeats are harmless only if every copy agrees (RFC 9112 6.3). */
        if (req->has_content_length && req->content_length != n)
            return -EBADMSG;
        req->content_length = n;
        req->has_content_length = true;
    } else if (slice_ieq(h->name, "transfer-encoding", 17)) {
        /*
         * chunked is the only coding we would ever accept, and it may appear once; a second
         * field would make the list "chunked, chunked", which RFC 9112 7 forbids.
         */
        if (facts->has_te || !slice_ieq(h->value, "chunked", 7))
            return -EBADMSG;
        facts->has_te = true;
        req->is_chunked = true;
    } else if (slice_ieq(h->name, "connection", 10)) {
        facts->has_close |= sb_http_has_token(h->value, "close");
        facts->has_keep_alive |= sb_http_has_token(h->value, "keep-alive");
    } else if (slice_ieq(h->name, "host", 4)) {
        /* Two Hosts let a proxy and us route the same request differently (RFC 9112 3.2). */
        if (facts->has_host)
            return -EBADMSG;
        facts->has_host = true;
    }
    return 0;
}

static int finish_head(struct sb_http_request *req, const struct head_facts *facts)
{
    /*
     * Both framings at once is the classic smuggling vector; RFC 9112 6.1 lets a server reject
     * it. HTTP/1.0 has no chunked coding, so a 1.0 message carrying it has faulty framing.
     */
    if (facts->has_te && (req->has_content_length || req->minor_version == 0))
        return -EBADMSG;
    if (req->minor_version == 1)
        req->keep_alive = !facts->has_close;
    else
        req->keep_alive = facts->has_keep_alive && !facts->has_close;
    return 0;
}

static void reset_request(struct sb_http_request *req)
{
    req->method = req->target = req->path = req->query = sb_slice_from(NULL, 0);
    req->minor_version = 0;
    req->header_len = 0;
    req->content_length = 0;
    req->has_content_length = false;
    req->is_chunked = false;
    req->keep_alive = false;
    req->nheaders = 0;
}

static ssize_t parse_head(const char *buf, size_t len, size_t max_line, size_t max_headers,
                          struct sb_http_request *req)
{
    reset_request(req);
    ssize_t n = parse_request_line(buf, len, max_line, req);
    if (n < 0)
        return n;
    size_t off = (size_t)n;
    struct head_facts facts = {0};
    for (;;) {
        if (off == len)
            return -EAGAIN;
        if (buf[off] == '\r')
            break;
        if (req->nheaders == max_headers)
            return -EMSGSIZE;
        struct sb_http_header *h = &req->headers[req->nheaders];
        n = parse_field(buf + off, buf + len, h);
        if (n < 0)
            return n;
        int rc = apply_field(req, h, &facts);
        if (rc < 0)
            return rc;
        req->nheaders++;
        off += (size_t)n;
    }
    if (off + 1 == len)
        return -EAGAIN;
    if (buf[off + 1] != '\n')
        return -EBADMSG;
    int rc = finish_head(req, &facts);
    if (rc < 0)
        return rc;
    req->header_len = off + 2;
    return (ssize_t)req->header_len;
}

ssize_t sb_http_parse_request(const char *buf, size_t len, const struct sb_http_limits *lim,
                              struct sb_http_request *req)
{
    if (!lim)
        lim = &sb_http_default_limits;
    if (len == 0)
        return lim->max_header_bytes == 0 ? -EMSGSIZE : -EAGAIN;
    size_t max_headers = lim->max_headers;
    if (max_headers > SB_HTTP_MAX_HEADERS)
        max_headers = SB_HTTP_MAX_HEADERS;
    /*
     * Parsing only the first max_header_bytes means a head still incomplete once that many bytes
     * are in hand is known to be too big: the earliest point the limit is provable.
     */
    size_t view = len < lim->max_header_bytes ? len : lim->max_header_bytes;
    ssize_t rc = parse_head(buf, view, lim->max_request_line, max_headers, req);
    if (rc == -EAGAIN && len >= lim->max_header_bytes)
        return -EMSGSIZE;
    return rc;
}

const struct sb_http_header *sb_http_find_header(const struct sb_http_request *req,
                                                 const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->nheaders; i++) {
        if (slice_ieq(req->headers[i].name, name, n))
            return &req->headers[i];
    }
    return NULL;
}

bool sb_http_has_token(struct sb_slice value, const char *token)
{
    size_t n = strlen(token);
    if (n == 0 || value.len == 0)
        return false;
    const char *p = value.base;
    const char *end = value.base + value.len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        const char *s = scan(p, e, CC_WS);
        while (e > s && (char_class[(unsigned char)e[-1]] & CC_WS))
            e--;
        if ((size_t)(e - s) == n && ascii_ieq(s, token, n))
            return true;
        p = comma ? comma + 1 : end;
    }
    return false;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = ascii_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes the form-encoded byte at *p and advances past it; returns it, or -EBADMSG. */
static int next_decoded(const char **p, const char *end)
{
    unsigned char c = (unsigned char)*(*p)++;
    if (c == '+')
        return ' ';
    if (c != '%')
        return c;
    if (end - *p < 2)
        return -EBADMSG;
    int hi = hex_value((unsigned char)(*p)[0]);
    int lo = hex_value((unsigned char)(*p)[1]);
    if (hi < 0 || lo < 0)
        return -EBADMSG;
    *p += 2;
    return hi << 4 | lo;
}

/* Compares a key in its decoded form, so "a%5Fb" finds "a_b"; a broken escape matches nothing. */
static bool key_matches(const char *p, const char *end, const char *name)
{
    while (p < end) {
        int c = next_decoded(&p, end);
        if (c < 0 || *name == '\0' || (unsigned char)*name != c)
            return false;
        name++;
    }
    return *name == '\0';
}

/*
 * The whole value is decoded even after out fills up, so a bad escape is reported the same way
 * whatever cap the caller chose.
 */
static ssize_t decode_value(const char *p, const char *end, char *out, size_t cap)
{
    size_t n = 0;
    while (p < end) {
        int c = next_decoded(&p, end);
        if (c < 0)
            return -EBADMSG;
        if (n < cap)
            out[n] = (char)c;
        n++;
    }
    if (n >= cap)
        return -ENOSPC;
    out[n] = '\0';
    return (ssize_t)n;
}

ssize_t sb_http_query_param(struct sb_slice query, const char *name, char *out, size_t cap)
{
    if (query.len == 0)
        return -ENOENT;
    const char *p = query.base;
    const char *end = query.base + query.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        const char *key_end = eq ? eq : e;
        if (e > p && key_matches(p, key_end, name))
            return decode_value(eq ? eq + 1 : e, e, out, cap);
        p = amp ? amp + 1 : end;
    }
    return -ENOENT;
}

const char *sb_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}
