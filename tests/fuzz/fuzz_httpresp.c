/*
 * libFuzzer driver for proto/httpresp: reads the input as a stream of responses (as a kept-alive
 * connection would carry them), once whole and once in pieces whose sizes come from the first
 * byte, and checks that both agree and that every result stays within the reader's limits.
 */
#include "proto/httpresp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed: %s (line %d)\n", #cond, __LINE__);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct outcome {
    ssize_t rc; /* bytes consumed over all responses, or the error */
    unsigned responses;
    int last_status;
    uint64_t body;
};

static void check_reader(const struct sb_httpresp *r)
{
    REQUIRE(r->state <= SB_HTTPRESP_DONE);
    REQUIRE(r->body_len <= SB_HTTPRESP_MAX_BODY);
    REQUIRE(r->interim <= SB_HTTPRESP_MAX_INTERIM);
    REQUIRE(r->trailers <= SB_HTTPRESP_MAX_HEADERS);
    if (r->state != SB_HTTPRESP_HEAD)
        REQUIRE(r->status >= 200 && r->status <= 599);
    if (r->state == SB_HTTPRESP_UNTIL_CLOSE)
        REQUIRE(!r->keep_alive);
}

/* Reads up to 4 responses from buf, `step` new bytes at a time (0: all at once), presenting
 * what was not consumed again with the next bytes, as the engine does. */
static struct outcome run(const char *buf, size_t size, size_t step)
{
    struct outcome o = {0};
    struct sb_httpresp r = {0};
    size_t consumed = 0, have = 0;
    for (;;) {
        if (consumed == have) {
            if (have == size)
                break;
            have = step == 0 || have + step > size ? size : have + step;
        }
        size_t n = have - consumed;
        /* A private copy of exactly n bytes, so ASan catches any read past the end. */
        char *piece = malloc(n);
        if (!piece)
            abort();
        memcpy(piece, buf + consumed, n);
        ssize_t rc = sb_httpresp_feed(&r, piece, n);
        free(piece);
        if (rc < 0) {
            REQUIRE(rc == -EBADMSG || rc == -EMSGSIZE || rc == -EPROTONOSUPPORT);
            o.rc = rc;
            return o;
        }
        REQUIRE((size_t)rc <= n);
        check_reader(&r);
        consumed += (size_t)rc;
        if (sb_httpresp_done(&r)) {
            o.responses++;
            o.last_status = r.status;
            o.body += r.body_len;
            memset(&r, 0, sizeof(r));
            if (o.responses == 4)
                break;
            continue;
        }
        REQUIRE(consumed == have || r.state == SB_HTTPRESP_HEAD ||
                r.state == SB_HTTPRESP_CHUNK_SIZE || r.state == SB_HTTPRESP_CHUNK_END ||
                r.state == SB_HTTPRESP_TRAILER);
        if (have == size)
            break;
        have = step == 0 || have + step > size ? size : have + step;
    }
    int e = sb_httpresp_eof(&r);
    REQUIRE(e == 0 || e == -EPIPE);
    o.rc = (ssize_t)consumed;
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t step = 1 + data[0] % 17;
    const char *buf = (const char *)data + 1;
    size--;
    struct outcome whole = run(buf, size, 0);
    struct outcome pieces = run(buf, size, step);
    /* The reader decides from the bytes alone, however they are split. */
    REQUIRE(whole.rc == pieces.rc);
    REQUIRE(whole.responses == pieces.responses);
    REQUIRE(whole.last_status == pieces.last_status);
    REQUIRE(whole.body == pieces.body);
    return 0;
}
