/*
 * libFuzzer target for loadgen's readers of what a server sends: the JSON messaging readers of
 * loadgen/lg_msgr.c (kind, delivery, ack, conv answer, error text) on arbitrary bytes, and the
 * streaming frame parser of loadgen/lg_ws.c with a gather buffer, fed in two pieces. Anything a
 * reader claims to have found must lie inside the input; any crash or overread is a bug.
 *
 *   byte 0: where to split the input for the streaming parser
 *   byte 1: the body size the delivery reader expects (48 + byte)
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* White-box: the loadgen modules are compiled into the target for coverage. */
#include "loadgen/lg_msgr.c"
#include "loadgen/lg_ws.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(bool ok)
{
    if (!ok)
        abort();
}

static int on_msg(void *ctx, const struct lg_ws_msg *m)
{
    size_t *seen = ctx;
    require(m->head_len <= m->len || m->opcode >= SB_WS_CLOSE);
    require(m->head_len <= LG_MSGR_GATHER);
    (*seen)++;
    return 0;
}

static void read_json(const char *p, size_t len, size_t body)
{
    (void)lg_msgr_kind(p, len);
    struct lg_msgr_stamp st;
    int k = lg_msgr_delivery(p, len, body, &st);
    require(k == 1 || k == 0 || k == -EBADMSG);
    uint64_t t;
    (void)lg_msgr_ack(p, len, "0123abcd", &t);
    char id[32], conv[LG_MSGR_CONV_MAX], text[96];
    if (lg_msgr_conv(p, len, id, sizeof(id), conv, sizeof(conv)) == 0)
        require(strlen(id) < sizeof(id) && strlen(conv) > 0);
    lg_msgr_error_text(p, len, text, sizeof(text));
    require(strlen(text) < sizeof(text));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t split = data[0], body = 48 + (size_t)data[1];
    data += 2;
    size -= 2;
    /* An exact-size copy, so reading one byte past the input trips the sanitizer. */
    char *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    read_json(copy, size, body);

    static uint8_t gather[LG_MSGR_GATHER];
    struct lg_ws_rx rx = {.gather = gather, .gather_cap = sizeof(gather)};
    size_t seen = 0;
    if (split > size)
        split = size;
    if (lg_ws_parse(&rx, data, split, on_msg, &seen) == 0)
        (void)lg_ws_parse(&rx, data + split, size - split, on_msg, &seen);
    free(copy);
    return 0;
}
