#include "loadgen/lg_bin.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The whole frame's size from its prefix, or a negative errno. */
static int64_t frame_size(const uint8_t *prefix, size_t max_frame)
{
    uint64_t n = (uint64_t)load32(prefix) + LG_BIN_PREFIX;
    if (n < LG_BIN_MIN_FRAME)
        return -EPROTO;
    if (max_frame && n > max_frame)
        return -EMSGSIZE;
    return (int64_t)n;
}

static int reserve(struct lg_bin_rx *rx, size_t n)
{
    if (rx->cap >= n)
        return 0;
    size_t cap = rx->cap ? rx->cap : 256;
    while (cap < n)
        cap *= 2;
    uint8_t *p = realloc(rx->buf, cap);
    if (!p)
        return -ENOMEM;
    rx->buf = p;
    rx->cap = (uint32_t)cap;
    return 0;
}

void lg_bin_rx_free(struct lg_bin_rx *rx)
{
    free(rx->buf);
    memset(rx, 0, sizeof(*rx));
}

/* The held frame is complete: hand it over and reset (a large buffer is given back). */
static int finish_held(struct lg_bin_rx *rx, lg_bin_frame_cb cb, void *ctx)
{
    size_t n = rx->len;
    rx->len = 0;
    rx->need = 0;
    int err = cb(ctx, rx->buf, n);
    if (rx->cap > LG_BIN_KEEP) {
        free(rx->buf);
        rx->buf = NULL;
        rx->cap = 0;
    }
    return err;
}

/* Adds bytes to a held partial frame. Returns the bytes used, or a negative errno. */
static ssize_t feed_held(struct lg_bin_rx *rx, const uint8_t *data, size_t len, size_t max_frame,
                         lg_bin_frame_cb cb, void *ctx)
{
    size_t used = 0;
    if (rx->need == 0) {
        /* The prefix itself was split: complete it first. */
        size_t k = LG_BIN_PREFIX - rx->len < len ? LG_BIN_PREFIX - rx->len : len;
        memcpy(rx->buf + rx->len, data, k);
        rx->len += (uint32_t)k;
        used = k;
        if (rx->len < LG_BIN_PREFIX)
            return (ssize_t)used;
        int64_t n = frame_size(rx->buf, max_frame);
        if (n < 0)
            return (ssize_t)n;
        int err = reserve(rx, (size_t)n);
        if (err)
            return err;
        rx->need = (uint32_t)n;
    }
    size_t k = rx->need - rx->len < len - used ? rx->need - rx->len : len - used;
    memcpy(rx->buf + rx->len, data + used, k);
    rx->len += (uint32_t)k;
    used += k;
    if (rx->len == rx->need) {
        int err = finish_held(rx, cb, ctx);
        if (err)
            return err;
    }
    return (ssize_t)used;
}

int lg_bin_feed(struct lg_bin_rx *rx, const uint8_t *data, size_t len, size_t max_frame,
                lg_bin_frame_cb cb, void *ctx)
{
    while (len > 0) {
        if (rx->len > 0) {
            ssize_t used = feed_held(rx, data, len, max_frame, cb, ctx);
            if (used < 0)
                return (int)used;
            data += used;
            len -= (size_t)used;
            continue;
        }
        if (len < LG_BIN_PREFIX) {
            int err = reserve(rx, LG_BIN_PREFIX);
            if (err)
                return err;
            memcpy(rx->buf, data, len);
            rx->len = (uint32_t)len;
            return 0;
        }
        int64_t n = frame_size(data, max_frame);
        if (n < 0)
            return (int)n;
        if ((size_t)n > len) {
            /* Split across reads: keep what is here, the rest follows. */
            int err = reserve(rx, (size_t)n);
            if (err)
                return err;
            memcpy(rx->buf, data, len);
            rx->len = (uint32_t)len;
            rx->need = (uint32_t)n;
            return 0;
        }
        int err = cb(ctx, data, (size_t)n);
        if (err)
            return err;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}
