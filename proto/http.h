/*
 * A strict, bounded HTTP/1.1 request parser for the WebSocket upgrade and the REST API.
 *
 * No I/O, no allocation: the caller passes the bytes it has, and every slice in the result points
 * into that buffer (valid while the buffer is). A zero-filled struct sb_http_request is a valid
 * empty state. The parser reads only the request line and headers; the caller consumes the body
 * (Content-Length bytes after header_len) itself, so pipelined requests are parsed one at a time.
 */
#ifndef SB_PROTO_HTTP_H
#define SB_PROTO_HTTP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/slice.h"

#define SB_HTTP_MAX_HEADERS 64

struct sb_http_header {
    struct sb_slice name;
    struct sb_slice value; /* leading and trailing spaces/tabs trimmed */
};

struct sb_http_request {
    struct sb_slice method;
    struct sb_slice target; /* the request-target as sent: path plus optional ?query */
    struct sb_slice path;   /* target up to '?' */
    struct sb_slice query;  /* after '?', without it; len 0 when absent */
    int minor_version;      /* HTTP/1.<minor_version>: 0 or 1 */
    size_t header_len;      /* bytes of request line and headers, including the blank line */
    uint64_t content_length;
    bool has_content_length;
    bool is_chunked; /* Transfer-Encoding: chunked (the parser does not decode it) */
    bool keep_alive; /* HTTP/1.1 without "Connection: close", or 1.0 with keep-alive */
    size_t nheaders;
    struct sb_http_header headers[SB_HTTP_MAX_HEADERS];
};

struct sb_http_limits {
    size_t max_request_line; /* bytes of "METHOD SP target SP HTTP/1.x", without CRLF */
    size_t max_header_bytes; /* bytes of the whole head, request line included */
    size_t max_headers;      /* at most SB_HTTP_MAX_HEADERS */
};

/* Defaults: 8 KiB request line, 16 KiB head, 64 headers. */
extern const struct sb_http_limits sb_http_default_limits;

/*
 * Parses the request head at the start of buf.
 *
 * Returns header_len (> 0) when the head is complete, and fills *req.
 * Errors:
 *   -EAGAIN          the head is incomplete and within limits: call again with more bytes.
 *   -EBADMSG         malformed (bad method/target/version syntax, bare LF, control bytes, header
 *                    without a colon, whitespace before the colon, obs-fold, conflicting or
 *                    invalid Content-Length, Content-Length together with chunked) -> 400.
 *   -ENAMETOOLONG    the request line exceeds max_request_line -> 414.
 *   -EMSGSIZE        the head exceeds max_header_bytes or max_headers -> 431.
 *   -EPROTONOSUPPORT a version other than HTTP/1.0 or HTTP/1.1 -> 505.
 * lim may be NULL for the defaults. *req is unspecified on error.
 */
ssize_t sb_http_parse_request(const char *buf, size_t len, const struct sb_http_limits *lim,
                              struct sb_http_request *req);

/* Returns the first header named name (ASCII case-insensitive), or NULL. */
const struct sb_http_header *sb_http_find_header(const struct sb_http_request *req,
                                                 const char *name);

/*
 * True when a comma-separated header value contains token (ASCII case-insensitive, surrounding
 * whitespace ignored), e.g. "keep-alive, Upgrade" contains "upgrade".
 */
bool sb_http_has_token(struct sb_slice value, const char *token);

/*
 * Finds query parameter name in a query string ("a=1&b=2") and percent-decodes its value
 * ('+' becomes a space) into out, NUL-terminated.
 * Returns the decoded length, -ENOENT when absent, -EBADMSG for a bad %-escape, -ENOSPC when
 * out (cap bytes) is too small.
 */
ssize_t sb_http_query_param(struct sb_slice query, const char *name, char *out, size_t cap);

/* The standard reason phrase for a status code ("Not Found"), or "Unknown". */
const char *sb_http_reason(int status);

#endif
