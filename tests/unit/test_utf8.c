/*
 * Unit tests for proto/utf8: fixed cases for every class of ill-formed input, the same cases
 * fed in every possible split, and a randomized comparison against a slow reference decoder.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "check.h"
#include "proto/utf8.h"

/*
 * The reference works differently from the code under test: it classifies lead bytes by bit
 * pattern alone and decides the code point range arithmetically, so the two share no tables.
 * A partial sequence is viable when filling its missing bytes with some continuation bytes
 * gives a scalar value encoded in its shortest form; the smallest and largest completions
 * (all 0x80, all 0xBF) bound the reachable values, and every value in between is reachable.
 */
static int ref_seq_len(uint8_t b)
{
    if ((b & 0x80) == 0) {
        return 1;
    }
    if ((b & 0xE0) == 0xC0) {
        return 2;
    }
    if ((b & 0xF0) == 0xE0) {
        return 3;
    }
    if ((b & 0xF8) == 0xF0) {
        return 4;
    }
    return 0;
}

static uint32_t ref_decode(const uint8_t *seq, int have, int n, uint8_t fill)
{
    static const uint8_t lead_bits[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    uint32_t cp = seq[0] & lead_bits[n];

    for (int i = 1; i < n; i++) {
        cp = cp << 6 | ((i < have ? seq[i] : fill) & 0x3F);
    }
    return cp;
}

static bool ref_viable(const uint8_t *seq, int have)
{
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    int n = ref_seq_len(seq[0]);

    if (n == 0) {
        return false;
    }
    for (int i = 1; i < have; i++) {
        if ((seq[i] & 0xC0) != 0x80) {
            return false;
        }
    }
    uint32_t lo = ref_decode(seq, have, n, 0x80);
    uint32_t hi = ref_decode(seq, have, n, 0xBF);
    if (lo < min_cp[n]) {
        lo = min_cp[n];
    }
    if (hi > 0x10FFFF) {
        hi = 0x10FFFF;
    }
    if (lo > hi) {
        return false;
    }
    /* Only a range lying wholly inside the surrogates has nothing left. */
    return !(lo >= 0xD800 && hi <= 0xDFFF);
}

/*
 * Returns the index of the first byte after which the input can no longer be valid UTF-8, or
 * len; *complete says whether the input ends at a character boundary.
 */
static size_t ref_first_bad(const uint8_t *s, size_t len, bool *complete)
{
    size_t start = 0;

    *complete = true;
    while (start < len) {
        int n = ref_seq_len(s[start]);
        int have = 1;
        for (;;) {
            if (!ref_viable(s + start, have)) {
                return start + (size_t)have - 1;
            }
            if (have == n) {
                break;
            }
            if (start + (size_t)have == len) {
                *complete = false;
                return len;
            }
            have++;
        }
        start += (size_t)n;
    }
    return len;
}

static size_t mismatches;

static void mismatch(const char *what, const uint8_t *s, size_t len, size_t at)
{
    if (++mismatches > 10) {
        return;
    }
    fprintf(stderr, "%s mismatch (split %zu):", what, at);
    for (size_t i = 0; i < len; i++) {
        fprintf(stderr, " %02x", s[i]);
    }
    fprintf(stderr, "\n");
}

/* Feeds s in two chunks split at k and compares every answer with the reference. */
static void check_split(const uint8_t *s, size_t len, size_t k, size_t bad, bool complete)
{
    struct sb_utf8 st = {0};
    int want1 = bad < k ? -EILSEQ : 0;
    int want2 = bad < len ? -EILSEQ : 0;

    if (sb_utf8_feed(&st, s, k) != want1) {
        mismatch("first chunk", s, len, k);
        return;
    }
    if (sb_utf8_feed(&st, s + k, len - k) != want2) {
        mismatch("second chunk", s, len, k);
        return;
    }
    if (sb_utf8_is_complete(&st) != (want2 == 0 && complete)) {
        mismatch("completeness", s, len, k);
    }
}

/* Feeds one byte per call: the first failure must come exactly at the reference's byte. */
static void check_bytewise(const uint8_t *s, size_t len, size_t bad, bool complete)
{
    struct sb_utf8 st = {0};

    for (size_t i = 0; i < len; i++) {
        int want = i >= bad ? -EILSEQ : 0;
        if (sb_utf8_feed(&st, s + i, 1) != want) {
            mismatch("byte-by-byte", s, len, i);
            return;
        }
    }
    if (sb_utf8_is_complete(&st) != (bad == len && complete)) {
        mismatch("byte-by-byte completeness", s, len, len);
    }
}

/* Checks whole, every two-way split, and byte by byte; returns the whole verdict. */
static int check_all_ways(const uint8_t *s, size_t len)
{
    bool complete;
    size_t bad = ref_first_bad(s, len, &complete);
    int want = bad == len && complete ? 0 : -EILSEQ;
    int got = sb_utf8_validate(s, len);

    if (got != want) {
        mismatch("whole", s, len, len);
    }
    for (size_t k = 0; k <= len; k++) {
        check_split(s, len, k, bad, complete);
    }
    check_bytewise(s, len, bad, complete);
    return got;
}

struct utf8_case {
    const char *s;
    bool valid;
};

#define CASE(str, ok)                                                                              \
    {                                                                                              \
        str, ok                                                                                    \
    }

static const struct utf8_case cases[] = {
    CASE("", true),
    CASE("hello, world", true),
    CASE("\x7f", true),
    CASE("\xc2\x80", true),         /* U+0080, first 2-byte */
    CASE("\xdf\xbf", true),         /* U+07FF, last 2-byte */
    CASE("\xe0\xa0\x80", true),     /* U+0800, first 3-byte */
    CASE("\xed\x9f\xbf", true),     /* U+D7FF, just below the surrogates */
    CASE("\xee\x80\x80", true),     /* U+E000, just above them */
    CASE("\xef\xbf\xbf", true),     /* U+FFFF */
    CASE("\xef\xbb\xbf", true),     /* BOM: allowed as text */
    CASE("\xf0\x90\x80\x80", true), /* U+10000, first 4-byte */
    CASE("\xf4\x8f\xbf\xbf", true), /* U+10FFFF, the maximum */
    CASE("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", true), /* "kosme" */
    CASE("\xe2\x82\xac 10", true),                              /* euro sign */
    CASE("\xf0\x9f\x98\x80!", true),                            /* emoji */
    CASE("\x80", false),                                        /* lone continuation */
    CASE("\xbf", false),
    CASE("a\x80z", false),
    CASE("\xc0\x80", false),                 /* overlong NUL */
    CASE("\xc1\xbf", false),                 /* overlong U+007F */
    CASE("\xe0\x80\x80", false),             /* overlong 3-byte */
    CASE("\xe0\x9f\xbf", false),             /* overlong U+07FF */
    CASE("\xf0\x80\x80\x80", false),         /* overlong 4-byte */
    CASE("\xf0\x8f\xbf\xbf", false),         /* overlong U+FFFF */
    CASE("\xed\xa0\x80", false),             /* U+D800 */
    CASE("\xed\xbf\xbf", false),             /* U+DFFF */
    CASE("\xed\xa0\x80\xed\xb0\x80", false), /* surrogate pair in CESU-8 */
    CASE("\xf4\x90\x80\x80", false),         /* U+110000 */
    CASE("\xf5\x80\x80\x80", false),
    CASE("\xf7\xbf\xbf\xbf", false),
    CASE("\xf8\x88\x80\x80\x80", false),     /* old 5-byte form */
    CASE("\xfc\x84\x80\x80\x80\x80", false), /* old 6-byte form */
    CASE("\xfe", false),
    CASE("\xff", false),
    CASE("\xc2", false), /* truncated at end */
    CASE("\xe1\x80", false),
    CASE("\xf1\x80\x80", false),
    CASE("\xc2"
         "a",
         false), /* truncated, then ASCII */
    CASE("\xe1\x80"
         "a",
         false),
    CASE("\xf1\x80\x80"
         "a",
         false),
    CASE("\xe1\xc2\x80", false), /* truncated, then a new lead */
    CASE("\xc2\xc2\x80", false),
    CASE("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
         false), /* Autobahn 6.4.x: fails at the surrogate */
    CASE("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64",
         false), /* Autobahn 6.4.x: fails at the byte after F4 */
    CASE("0123456789abcdef0123456789abcdef0123456789abcdef\xe2\x82\xac", true),
    CASE("0123456789abcdef0123456789abcdef0123456789abcdef\xe2\x82", false),
    CASE("0123456789abcdef0123456789abcdef01234567\x80"
         "9abcdef",
         false),
};

static void test_cases(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const uint8_t *s = (const uint8_t *)cases[i].s;
        size_t len = strlen(cases[i].s);
        int got = check_all_ways(s, len);
        if (got != (cases[i].valid ? 0 : -EILSEQ)) {
            fprintf(stderr, "case %zu: expected %s\n", i, cases[i].valid ? "valid" : "invalid");
        }
        CHECK_INT(got, cases[i].valid ? 0 : -EILSEQ);
    }
    CHECK_INT(mismatches, 0);
}

/* NUL is ASCII too: the validator must not stop at it. */
static void test_embedded_nul(void)
{
    static const uint8_t s[] = {'a', 0, 0xc3, 0xa9, 0, 'b'};

    CHECK_INT(sb_utf8_validate(s, sizeof(s)), 0);
}

/* Autobahn's case: the stream must fail in the chunk holding ED A0, not later. */
static void test_fail_fast_surrogate(void)
{
    static const char kosme[] = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";
    struct sb_utf8 st = {0};

    CHECK_INT(sb_utf8_feed(&st, (const uint8_t *)kosme, strlen(kosme)), 0);
    CHECK(sb_utf8_is_complete(&st));
    CHECK_INT(sb_utf8_feed(&st, (const uint8_t *)"\xed", 1), 0);
    CHECK(!sb_utf8_is_complete(&st));
    CHECK_INT(sb_utf8_feed(&st, (const uint8_t *)"\xa0\x80", 2), -EILSEQ);
    /* Once failed, a stream stays failed whatever follows. */
    CHECK_INT(sb_utf8_feed(&st, (const uint8_t *)"edited", 6), -EILSEQ);
    CHECK_INT(sb_utf8_feed(&st, (const uint8_t *)"", 0), -EILSEQ);
    CHECK(!sb_utf8_is_complete(&st));
}

/* The second byte's narrowed range must survive a split right after the lead byte. */
static void test_split_second_byte(void)
{
    static const struct {
        uint8_t lead, second;
        int want;
    } t[] = {
        {0xe0, 0xa0, 0}, {0xe0, 0x9f, -EILSEQ}, {0xed, 0x9f, 0}, {0xed, 0xa0, -EILSEQ},
        {0xf0, 0x90, 0}, {0xf0, 0x8f, -EILSEQ}, {0xf4, 0x8f, 0}, {0xf4, 0x90, -EILSEQ},
        {0xe1, 0x80, 0}, {0xe1, 0xc0, -EILSEQ}, {0xc2, 0xbf, 0}, {0xc2, 0x7f, -EILSEQ},
    };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct sb_utf8 st = {0};
        CHECK_INT(sb_utf8_feed(&st, &t[i].lead, 1), 0);
        CHECK_INT(sb_utf8_feed(&st, &t[i].second, 1), t[i].want);
    }
}

/* Every code point, encoded by hand, is valid, except the surrogates. */
static size_t encode_cp(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

static void test_every_code_point(void)
{
    size_t wrong = 0;

    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        uint8_t buf[4];
        size_t n = encode_cp(cp, buf);
        int want = cp >= 0xD800 && cp <= 0xDFFF ? -EILSEQ : 0;
        if (sb_utf8_validate(buf, n) != want) {
            wrong++;
        }
    }
    CHECK_INT(wrong, 0);
    /* Code points above U+10FFFF in the 4-byte form. */
    for (uint32_t cp = 0x110000; cp <= 0x1FFFFF; cp += 0x1111) {
        uint8_t buf[4];
        size_t n = encode_cp(cp, buf);
        if (sb_utf8_validate(buf, n) != -EILSEQ) {
            wrong++;
        }
    }
    CHECK_INT(wrong, 0);
}

/* A bad byte at each offset of a long ASCII run: the wide path must find it wherever it is. */
static void test_ascii_runs(void)
{
    uint8_t buf[200];

    for (size_t len = 1; len <= sizeof(buf); len += 7) {
        for (size_t at = 0; at < len; at++) {
            memset(buf, 'x', len);
            buf[at] = 0x80;
            struct sb_utf8 st = {0};
            CHECK_INT(sb_utf8_validate(buf, len), -EILSEQ);
            CHECK_INT(sb_utf8_feed(&st, buf, at), 0);
            CHECK_INT(sb_utf8_feed(&st, buf + at, len - at), -EILSEQ);
        }
        memset(buf, 'x', len);
        CHECK_INT(sb_utf8_validate(buf, len), 0);
    }
}

/* A small deterministic PRNG (xorshift64*) so failures reproduce. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32) % n;
}

/* Bytes at the edges of the RFC 3629 table, where mistakes live. */
static const uint8_t edge_bytes[] = {
    0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0,
    0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xF7, 0xF8, 0xFE, 0xFF,
};

static size_t random_piece(uint8_t *out)
{
    static const uint32_t tops[] = {0x80, 0x800, 0x10000, 0x110000};
    size_t n;

    switch (rnd(8)) {
    case 0:
        out[0] = (uint8_t)rnd(0x80);
        return 1;
    case 1:
        out[0] = (uint8_t)(0x80 + rnd(0x40));
        return 1;
    case 2:
    case 3:
        out[0] = edge_bytes[rnd(sizeof(edge_bytes))];
        return 1;
    case 4:
        /* A long ASCII run, to reach the wide paths. */
        n = 8 + rnd(40);
        memset(out, 'a' + (int)rnd(26), n);
        return n;
    default:
        /* A well-formed character, sometimes with one byte bent or cut. */
        n = encode_cp(rnd(tops[rnd(4)]), out);
        if (rnd(4) == 0) {
            out[rnd((uint32_t)n)] = edge_bytes[rnd(sizeof(edge_bytes))];
        }
        if (n > 1 && rnd(8) == 0) {
            n--;
        }
        return n;
    }
}

static void test_random_vs_reference(void)
{
    uint8_t buf[512];
    size_t valid = 0;

    mismatches = 0;
    for (int iter = 0; iter < 200000; iter++) {
        size_t len = 0;
        size_t pieces = rnd(12);
        for (size_t i = 0; i < pieces && len + 64 < sizeof(buf); i++) {
            len += random_piece(buf + len);
        }
        bool complete;
        size_t bad = ref_first_bad(buf, len, &complete);
        int want = bad == len && complete ? 0 : -EILSEQ;
        if (sb_utf8_validate(buf, len) != want) {
            mismatch("random whole", buf, len, len);
        }
        valid += want == 0;
        check_split(buf, len, rnd((uint32_t)len + 1), bad, complete);
        check_bytewise(buf, len, bad, complete);
    }
    CHECK_INT(mismatches, 0);
    /* The generator must exercise both outcomes in earnest. */
    CHECK(valid > 20000 && valid < 180000);
    printf("random: %zu of 200000 valid\n", valid);
}

int main(void)
{
    test_cases();
    test_embedded_nul();
    test_fail_fast_surrogate();
    test_split_second_byte();
    test_every_code_point();
    test_ascii_runs();
    test_random_vs_reference();
    return check_done();
}
