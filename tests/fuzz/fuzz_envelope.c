/*
 * libFuzzer driver for server/envelope: what one node publishes to another in cluster mode. Any
 * input either parses or is refused; what parses stays inside the input, its users are well
 * formed, and encoding it again gives back the same bytes.
 */
#include "server/envelope.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/ids.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed: %s (line %d)\n", #cond, __LINE__);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int inside(const char *p, size_t n, const char *base, size_t size)
{
    return p >= base && n <= size && (size_t)(p - base) <= size - n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *msg = (const char *)data;
    struct sb_envelope e;
    if (sb_envelope_parse(msg, size, &e) < 0)
        return 0;
    REQUIRE(e.users_len > 0 && inside(e.users, e.users_len, msg, size));
    REQUIRE(e.users + e.users_len == msg + size);
    for (const char *u = e.users; u < e.users + e.users_len; u += 1 + (uint8_t)u[0])
        REQUIRE((uint8_t)u[0] >= 1 && (uint8_t)u[0] <= SB_USER_ID_MAX);
    char *again = malloc(size);
    REQUIRE(again);
    size_t head = 1;
    if (e.cls == SB_ENVELOPE_INVAL) {
        again[0] = (char)SB_ENVELOPE_INVAL;
    } else {
        REQUIRE(e.conv_len >= 1 && e.conv_len <= SB_CONV_ID_MAX);
        REQUIRE(inside(e.conv, e.conv_len, msg, size) && inside(e.json, e.json_len, msg, size) &&
                inside(e.bin, e.bin_len, msg, size));
        head = sb_envelope_head_len(&e);
        REQUIRE(head + e.users_len == size);
        sb_envelope_put_head(&e, again);
    }
    memcpy(again + head, e.users, e.users_len);
    REQUIRE(memcmp(again, msg, size) == 0);
    free(again);
    return 0;
}
