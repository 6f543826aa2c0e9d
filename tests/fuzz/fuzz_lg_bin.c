/*
 * libFuzzer target for loadgen's reassembly of binary-protocol frames (loadgen/lg_bin.c), on
 * its own (raw TCP) and behind the streaming WebSocket parser (ws-bin), with every frame it
 * hands over decoded by proto/binproto.c as the session does. A frame must be exactly what its
 * prefix says, at least a header long and never over the limit; a frame that decodes must
 * re-encode to the same bytes; any crash, overread or leak is a bug.
 *
 *   bytes 0-1: where to cut the rest of the input into three pieces
 *   byte 2:    bit 0: read the rest as WebSocket frames carrying the stream (ws-bin)
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* White-box: the loadgen modules are compiled into the target for coverage. */
#include "loadgen/lg_bin.c"
#include "loadgen/lg_ws.c"
#include "proto/binproto.h"

#define MAX_FRAME 65536

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(bool ok)
{
    if (!ok)
        abort();
}

static int on_frame(void *ctx, const uint8_t *frame, size_t len)
{
    (void)ctx;
    require(len >= LG_BIN_MIN_FRAME && len <= MAX_FRAME);
    require(load32(frame) + 4ull == len);
    struct sb_binproto_header h;
    struct sb_op op;
    if (sb_binproto_decode_frame(frame, len, MAX_FRAME, &h, &op) == 0) {
        uint8_t *again = malloc(len);
        require(again != NULL);
        require(sb_binproto_encode(&op, again, len) == (ssize_t)len);
        require(memcmp(again, frame, len) == 0);
        free(again);
    }
    return 0;
}

struct ws_ctx {
    struct lg_bin_rx *rx;
};

static int on_stream(void *ctx, uint8_t opcode, const uint8_t *p, size_t len)
{
    struct ws_ctx *x = ctx;
    (void)opcode;
    require(len > 0);
    return lg_bin_feed(x->rx, p, len, MAX_FRAME, on_frame, NULL);
}

static int on_msg(void *ctx, const struct lg_ws_msg *m)
{
    (void)ctx;
    require(m->head_len <= m->len || m->opcode >= SB_WS_CLOSE);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    size_t a = data[0], b = data[1];
    bool ws = data[2] & 1;
    data += 3;
    size -= 3;
    a = a < size ? a : size;
    b = a + b < size ? a + b : size;
    const size_t cuts[4] = {0, a, b, size};
    struct lg_bin_rx rx;
    memset(&rx, 0, sizeof(rx));
    struct lg_ws_rx wrx;
    memset(&wrx, 0, sizeof(wrx));
    wrx.stream = on_stream;
    struct ws_ctx x = {&rx};
    for (int i = 0; i < 3; i++) {
        const uint8_t *p = data + cuts[i];
        size_t len = cuts[i + 1] - cuts[i];
        int err = ws ? lg_ws_parse(&wrx, p, len, on_msg, &x)
                     : lg_bin_feed(&rx, p, len, MAX_FRAME, on_frame, NULL);
        if (err < 0)
            break;
        require(rx.len <= MAX_FRAME && (rx.need == 0 || rx.len < rx.need));
    }
    lg_bin_rx_free(&rx);
    return 0;
}
