/* Non-owning views into bytes that someone else owns. */
#ifndef SB_PROTO_SLICE_H
#define SB_PROTO_SLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* A borrowed run of bytes: valid exactly as long as the buffer it points into. */
struct sb_slice {
    const char *base;
    size_t len;
};

static inline struct sb_slice sb_slice_from(const char *base, size_t len)
{
    struct sb_slice s = {base, len};
    return s;
}

/* True when the slice equals the NUL-terminated string s, byte for byte. */
static inline bool sb_slice_eq(struct sb_slice a, const char *s)
{
    size_t n = strlen(s);
    return a.len == n && memcmp(a.base, s, n) == 0;
}

#endif
