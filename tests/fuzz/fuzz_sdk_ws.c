/*
 * libFuzzer target for the SDK's parsers of what a server sends on WebSocket: the upgrade
 * answer and frame headers. The first byte picks the parser; the rest is the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sdk_ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    const uint8_t *in = data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        /* A copy sized exactly, so a read past the end is caught. */
        char *head = malloc(len ? len : 1);
        memcpy(head, in, len);
        ssize_t n = sb__ws_response(head, len, "dGhlIHNhbXBsZSBub25jZQ==", "switchboard.v1");
        if (n > 0 && (size_t)n > len) {
            abort();
        }
        free(head);
    } else {
        struct sb__ws_frame f;
        ssize_t n = sb__ws_decode(in, len, 1 << 20, &f);
        if (n > 0 && ((size_t)n > len || (size_t)n != f.header_len)) {
            abort();
        }
    }
    return 0;
}
