/*
 * A strict, bounded HTTP/1.1 response reader for the server's own outbound requests (the offline
 * webhook). It reads the status line and headers, skips interim (1xx) responses, and consumes
 * the body without keeping it: Content-Length, chunked (with trailers), or until the connection
 * closes. Only the status and the connection's fate are kept.
 *
 * No I/O, no allocation. The caller feeds the bytes it has; the reader consumes what it can and
 * the caller presents the rest again with whatever arrives next (the engine's on_data contract).
 * A zero-filled struct sb_httpresp is a reader at the start of a response. Any thread.
 */
#ifndef SB_PROTO_HTTPRESP_H
#define SB_PROTO_HTTPRESP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define SB_HTTPRESP_MAX_HEAD 8192       /* bytes of status line and headers */
#define SB_HTTPRESP_MAX_HEADERS 64      /* header fields of one head (trailers: the same) */
#define SB_HTTPRESP_MAX_LINE 1024       /* bytes of a chunk-size line or a trailer field */
#define SB_HTTPRESP_MAX_BODY (1u << 20) /* bytes of body, all chunks together */
#define SB_HTTPRESP_MAX_INTERIM 8       /* 1xx responses before the final one */

enum sb_httpresp_state {
    SB_HTTPRESP_HEAD = 0,    /* reading a head (zero: the start) */
    SB_HTTPRESP_BODY,        /* Content-Length body: `remaining` bytes left */
    SB_HTTPRESP_CHUNK_SIZE,  /* a chunk-size line */
    SB_HTTPRESP_CHUNK_DATA,  /* `remaining` bytes of chunk data */
    SB_HTTPRESP_CHUNK_END,   /* the CRLF after chunk data */
    SB_HTTPRESP_TRAILER,     /* trailer fields after the last chunk, up to an empty line */
    SB_HTTPRESP_UNTIL_CLOSE, /* a body that ends when the connection does */
    SB_HTTPRESP_DONE,        /* the final response is complete */
};

struct sb_httpresp {
    uint8_t state;        /* enum sb_httpresp_state */
    uint8_t interim;      /* 1xx responses skipped so far */
    int status;           /* the final response's status (100..599) once its head was read */
    int minor_version;    /* HTTP/1.<minor_version> of the final response */
    bool keep_alive;      /* the connection may carry another request after this response */
    uint64_t remaining;   /* bytes left in the Content-Length body or the current chunk */
    uint64_t body_len;    /* body bytes consumed */
    uint32_t trailer_len; /* bytes of trailer fields so far */
    uint32_t trailers;    /* trailer fields so far */
};

/*
 * Consumes the response's bytes from buf[0..len) and returns how many it consumed (0..len): it
 * stops at the end of the response (state DONE; what follows is not part of it) and before an
 * incomplete head or line (present those bytes again with more). Errors:
 *   -EBADMSG         malformed (status line, a header field, Content-Length, chunk framing, a
 *                    bare LF, Content-Length together with Transfer-Encoding, a Transfer-Encoding
 *                    that does not end in chunked, 101 Switching Protocols);
 *   -EMSGSIZE        over a limit above (head, headers, line, body, interim responses);
 *   -EPROTONOSUPPORT a version other than HTTP/1.0 or HTTP/1.1.
 * After an error the reader must not be fed again.
 */
ssize_t sb_httpresp_feed(struct sb_httpresp *r, const char *buf, size_t len);

/*
 * The connection ended (EOF). Returns 0 when that completes the response (a body delimited by
 * the close; the state becomes DONE) or it was complete already, -EPIPE when the response was
 * cut short.
 */
int sb_httpresp_eof(struct sb_httpresp *r);

static inline bool sb_httpresp_done(const struct sb_httpresp *r)
{
    return r->state == SB_HTTPRESP_DONE;
}

#endif
