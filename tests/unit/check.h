/*
 * A minimal assertion kit for unit tests: each CHECK prints both sides on failure and counts it;
 * check_done() prints "N passed, N failed" and returns the exit code for main().
 */
#ifndef SB_TEST_CHECK_H
#define SB_TEST_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_passed;
static int check_failed;

#define CHECK_FAIL_(fmt, ...)                                                                      \
    do {                                                                                           \
        check_failed++;                                                                            \
        fprintf(stderr, "%s:%d: " fmt "\n", __FILE__, __LINE__, __VA_ARGS__);                      \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond)                                                                                  \
            check_passed++;                                                                        \
        else                                                                                       \
            CHECK_FAIL_("CHECK(%s) failed", #cond);                                                \
    } while (0)

#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (va_ == vb_)                                                                            \
            check_passed++;                                                                        \
        else                                                                                       \
            CHECK_FAIL_("%s == %s failed: %lld != %lld", #a, #b, va_, vb_);                        \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *s1_ = (a), *s2_ = (b);                                                         \
        if (s1_ && s2_ && strcmp(s1_, s2_) == 0)                                                   \
            check_passed++;                                                                        \
        else                                                                                       \
            CHECK_FAIL_("%s == %s failed: \"%s\" != \"%s\"", #a, #b, s1_ ? s1_ : "(null)",         \
                        s2_ ? s2_ : "(null)");                                                     \
    } while (0)

/* Compares n bytes; on failure prints the first differing offset. */
#define CHECK_MEM(a, b, n)                                                                         \
    do {                                                                                           \
        const unsigned char *ma_ = (const void *)(a), *mb_ = (const void *)(b);                    \
        size_t n_ = (n), i_ = 0;                                                                   \
        while (i_ < n_ && ma_[i_] == mb_[i_])                                                      \
            i_++;                                                                                  \
        if (i_ == n_)                                                                              \
            check_passed++;                                                                        \
        else                                                                                       \
            CHECK_FAIL_("%s vs %s: differ at byte %zu: 0x%02x != 0x%02x", #a, #b, i_, ma_[i_],     \
                        mb_[i_]);                                                                  \
    } while (0)

static inline int check_done(void)
{
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
