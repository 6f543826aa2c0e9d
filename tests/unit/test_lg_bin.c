/*
 * loadgen's reassembly of binary-protocol frames (loadgen/lg_bin.h): whatever way the stream is
 * cut, every frame comes out whole, once, in order and byte for byte; whole frames come
 * straight from the input; bad length prefixes are refused as soon as they are read; a large
 * split frame's buffer is given back. Frames made by proto/binproto.c come out decodable.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "loadgen/lg_bin.h"
#include "proto/binproto.h"

#define MAX_FRAMES 16

struct got {
    int count;
    size_t len[MAX_FRAMES];
    size_t off[MAX_FRAMES]; /* where the frame starts in the stream */
    const uint8_t *ptr[MAX_FRAMES];
    uint8_t *copy[MAX_FRAMES];
    int stop_at; /* return -ENOSPC at this frame (0: never) */
};

static int on_frame(void *ctx, const uint8_t *frame, size_t len)
{
    struct got *g = ctx;
    if (g->count == MAX_FRAMES || (g->stop_at && g->count + 1 == g->stop_at))
        return -ENOSPC;
    g->len[g->count] = len;
    g->ptr[g->count] = frame;
    g->copy[g->count] = malloc(len);
    memcpy(g->copy[g->count], frame, len);
    g->count++;
    return 0;
}

static void got_free(struct got *g)
{
    for (int i = 0; i < g->count; i++)
        free(g->copy[i]);
    memset(g, 0, sizeof(*g));
}

/* A frame of len bytes (>= 12): the prefix, then a header and filler that tell frames apart. */
static size_t put_frame(uint8_t *out, size_t len, uint8_t tag)
{
    uint32_t n = (uint32_t)(len - 4);
    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    for (size_t i = 4; i < len; i++)
        out[i] = (uint8_t)(tag + i);
    return len;
}

static uint8_t stream[40000];
static size_t frame_off[MAX_FRAMES], frame_len[MAX_FRAMES];
static int nframes;

static size_t make_stream(void)
{
    static const size_t sizes[] = {12, 13, 100, 4095, 4096, 4097, 12, 20000, 30};
    size_t n = 0;
    nframes = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        frame_off[nframes] = n;
        frame_len[nframes] = sizes[i];
        n += put_frame(stream + n, sizes[i], (uint8_t)(i * 31));
        nframes++;
    }
    return n;
}

static void check_all(const struct got *g, const char *how, size_t step)
{
    if (g->count != nframes) {
        CHECK_FAIL_("%s %zu: %d frames, not %d", how, step, g->count, nframes);
        return;
    }
    for (int i = 0; i < nframes; i++) {
        if (g->len[i] != frame_len[i] || memcmp(g->copy[i], stream + frame_off[i], g->len[i])) {
            CHECK_FAIL_("%s %zu: frame %d differs", how, step, i);
            return;
        }
    }
    check_passed++;
}

static void test_steps(void)
{
    size_t n = make_stream();
    static const size_t steps[] = {40000, 1, 2, 3, 5, 11, 4096, 4093};
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        struct lg_bin_rx rx;
        memset(&rx, 0, sizeof(rx));
        struct got g;
        memset(&g, 0, sizeof(g));
        int err = 0;
        for (size_t off = 0; off < n && !err; off += steps[s]) {
            size_t len = n - off < steps[s] ? n - off : steps[s];
            err = lg_bin_feed(&rx, stream + off, len, 0, on_frame, &g);
        }
        CHECK_INT(err, 0);
        CHECK(lg_bin_rx_idle(&rx));
        check_all(&g, "step", steps[s]);
        /* Fed whole, every frame came straight from the input. */
        if (steps[s] == 40000)
            for (int i = 0; i < g.count; i++)
                CHECK(g.ptr[i] == stream + frame_off[i]);
        got_free(&g);
        lg_bin_rx_free(&rx);
    }
}

static void test_every_split(void)
{
    size_t n = make_stream();
    for (size_t cut = 0; cut <= n; cut++) {
        struct lg_bin_rx rx;
        memset(&rx, 0, sizeof(rx));
        struct got g;
        memset(&g, 0, sizeof(g));
        int err = lg_bin_feed(&rx, stream, cut, 0, on_frame, &g);
        if (!err)
            err = lg_bin_feed(&rx, stream + cut, n - cut, 0, on_frame, &g);
        if (err || g.count != nframes) {
            CHECK_FAIL_("cut at %zu: err %d, %d frames", cut, err, g.count);
            got_free(&g);
            lg_bin_rx_free(&rx);
            break;
        }
        for (int i = 0; i < nframes; i++)
            if (memcmp(g.copy[i], stream + frame_off[i], frame_len[i]) != 0)
                CHECK_FAIL_("cut at %zu: frame %d differs", cut, i);
        got_free(&g);
        lg_bin_rx_free(&rx);
    }
    check_passed++;
}

static void test_errors(void)
{
    struct lg_bin_rx rx;
    struct got g;
    uint8_t buf[64];
    /* A prefix below 8: refused from the prefix alone, whole or split. */
    memset(&rx, 0, sizeof(rx));
    memset(&g, 0, sizeof(g));
    uint8_t short_prefix[] = {0, 0, 0, 7};
    CHECK_INT(lg_bin_feed(&rx, short_prefix, 4, 0, on_frame, &g), -EPROTO);
    lg_bin_rx_free(&rx);
    CHECK_INT(lg_bin_feed(&rx, short_prefix, 3, 0, on_frame, &g), 0);
    CHECK(!lg_bin_rx_idle(&rx));
    CHECK_INT(lg_bin_feed(&rx, short_prefix + 3, 1, 0, on_frame, &g), -EPROTO);
    lg_bin_rx_free(&rx);
    /* Over max_frame: refused before the body arrives. */
    uint8_t huge[] = {0, 0, 0x10, 0};
    CHECK_INT(lg_bin_feed(&rx, huge, 4, 4096, on_frame, &g), -EMSGSIZE);
    lg_bin_rx_free(&rx);
    uint8_t max_prefix[] = {0xff, 0xff, 0xff, 0xff};
    CHECK_INT(lg_bin_feed(&rx, max_prefix, 4, LG_BIN_FRAME_MAX, on_frame, &g), -EMSGSIZE);
    lg_bin_rx_free(&rx);
    /* Exactly max_frame is fine. */
    size_t n = put_frame(buf, 64, 1);
    CHECK_INT(lg_bin_feed(&rx, buf, n, 64, on_frame, &g), 0);
    CHECK_INT(g.count, 1);
    got_free(&g);
    lg_bin_rx_free(&rx);
    /* The callback's error stops the feed, also for a frame completed from the buffer. */
    n = put_frame(buf, 20, 2);
    n += put_frame(buf + n, 20, 3);
    g.stop_at = 2;
    CHECK_INT(lg_bin_feed(&rx, buf, n, 0, on_frame, &g), -ENOSPC);
    CHECK_INT(g.count, 1);
    got_free(&g);
    lg_bin_rx_free(&rx);
    g.stop_at = 1;
    CHECK_INT(lg_bin_feed(&rx, buf, 10, 0, on_frame, &g), 0);
    CHECK_INT(lg_bin_feed(&rx, buf + 10, 10, 0, on_frame, &g), -ENOSPC);
    got_free(&g);
    lg_bin_rx_free(&rx);
}

static void test_buffer_given_back(void)
{
    static uint8_t big[10000];
    size_t n = put_frame(big, sizeof(big), 5);
    struct lg_bin_rx rx;
    memset(&rx, 0, sizeof(rx));
    struct got g;
    memset(&g, 0, sizeof(g));
    /* A small split frame keeps its buffer for the next one ... */
    uint8_t small[40];
    put_frame(small, sizeof(small), 9);
    CHECK_INT(lg_bin_feed(&rx, small, 20, 0, on_frame, &g), 0);
    CHECK_INT(lg_bin_feed(&rx, small + 20, 20, 0, on_frame, &g), 0);
    CHECK(rx.buf != NULL && rx.cap <= LG_BIN_KEEP);
    /* ... a large one gives it back once delivered. */
    CHECK_INT(lg_bin_feed(&rx, big, 5000, 0, on_frame, &g), 0);
    CHECK(rx.cap >= sizeof(big));
    CHECK_INT(lg_bin_feed(&rx, big + 5000, n - 5000, 0, on_frame, &g), 0);
    CHECK(rx.buf == NULL && rx.cap == 0);
    CHECK_INT(g.count, 2);
    CHECK_MEM(g.copy[1], big, sizeof(big));
    got_free(&g);
    lg_bin_rx_free(&rx);
    CHECK(rx.buf == NULL && rx.len == 0);
}

/* Frames of the real codec come out whole and decode to what was encoded. */
static void test_codec_frames(void)
{
    static uint8_t wire[8192];
    size_t n = 0;
    struct sb_op op;
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_ACK;
    op.request_id = 7;
    op.u.ack.msg_id = 99;
    op.u.ack.seq = 3;
    op.u.ack.client_id = sb_slice_from("run.1.2", 7);
    op.u.ack.conv = sb_slice_from("dm:lg0:lg1", 10);
    ssize_t k = sb_binproto_encode(&op, wire + n, sizeof(wire) - n);
    CHECK(k > 0);
    n += (size_t)k;
    static char body[3000];
    memset(body, 'b', sizeof(body));
    memset(&op, 0, sizeof(op));
    op.type = SB_OP_MESSAGE;
    op.u.message.msg_id = 5;
    op.u.message.seq = 1;
    op.u.message.conv = sb_slice_from("g:1", 3);
    op.u.message.from = sb_slice_from("lg0", 3);
    op.u.message.body.data = sb_slice_from(body, sizeof(body));
    k = sb_binproto_encode(&op, wire + n, sizeof(wire) - n);
    CHECK(k > 0);
    n += (size_t)k;
    for (size_t cut = 1; cut < n; cut += 97) {
        struct lg_bin_rx rx;
        memset(&rx, 0, sizeof(rx));
        struct got g;
        memset(&g, 0, sizeof(g));
        CHECK_INT(lg_bin_feed(&rx, wire, cut, LG_BIN_FRAME_MAX, on_frame, &g), 0);
        CHECK_INT(lg_bin_feed(&rx, wire + cut, n - cut, LG_BIN_FRAME_MAX, on_frame, &g), 0);
        CHECK_INT(g.count, 2);
        struct sb_binproto_header h;
        struct sb_op a, b;
        CHECK_INT(sb_binproto_decode_frame(g.copy[0], g.len[0], 0, &h, &a), 0);
        CHECK_INT(sb_binproto_decode_frame(g.copy[1], g.len[1], 0, &h, &b), 0);
        CHECK_INT(a.type, SB_OP_ACK);
        CHECK_INT(a.request_id, 7);
        CHECK(sb_slice_eq(a.u.ack.client_id, "run.1.2"));
        CHECK_INT(b.type, SB_OP_MESSAGE);
        CHECK_INT(b.u.message.body.data.len, sizeof(body));
        got_free(&g);
        lg_bin_rx_free(&rx);
    }
}

int main(void)
{
    test_steps();
    test_every_split();
    test_errors();
    test_buffer_given_back();
    test_codec_frames();
    return check_done();
}
