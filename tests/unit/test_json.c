/*
 * Unit tests for proto/json: a table of valid and invalid documents by category, the token
 * layout of nested documents, the token and depth limits, the accessors (get, eq, string,
 * int64), the writer with its errors and every possible lack of room, and a round trip of
 * random documents through the writer and back through the tokenizer.
 */
#include "proto/json.h"

#include <errno.h>
#include <limits.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"

#define MAX_TOKS 4096

static struct sb_json_tok toks[MAX_TOKS];
static const struct sb_json_limits limits = {MAX_TOKS, 64};

/* Copies the input into a heap block of exactly its size, so ASan flags any byte read past it. */
static ssize_t parse_n(const char *s, size_t len, const struct sb_json_limits *lim)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, s, len);
    ssize_t rc = sb_json_parse(copy, len, lim, toks);
    free(copy);
    return rc;
}

static ssize_t parse(const char *s)
{
    return parse_n(s, strlen(s), &limits);
}

struct doc_case {
    const char *text;
    size_t len; /* 0: strlen(text) */
    ssize_t want;
};

static void check_cases(const struct doc_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct doc_case *c = &cases[i];
        size_t len = c->len ? c->len : strlen(c->text);
        ssize_t rc = parse_n(c->text, len, &limits);
        if (rc != c->want)
            fprintf(stderr, "case %zu: '%.*s'\n", i, (int)len, c->text);
        CHECK_INT(rc, c->want);
    }
}

#define NCASES(a) (sizeof(a) / sizeof((a)[0]))

static void test_valid_documents(void)
{
    static const struct doc_case y[] = {
        /* structure */
        {"[]", 0, 1},
        {"{}", 0, 1},
        {"[[]]", 0, 2},
        {"[{}]", 0, 2},
        {"{\"a\":[]}", 0, 3},
        {"[1,2,3]", 0, 4},
        {"{\"a\":1,\"b\":2}", 0, 5},
        {" [ 1 , { \"a\" : null } ] ", 0, 5},
        {"[null,true,false]", 0, 4},
        {"{\"a\":{\"b\":{\"c\":[]}}}", 0, 7},
        {"{\"a\":1,\"a\":2}", 0, 5},
        {"{\"\":0}", 0, 3},
        {"[[[[[[]]]]]]", 0, 6},
        {"[[],[[]],{}]", 0, 5},
        {"{\"a\":[{\"b\":[]}],\"c\":{}}", 0, 8},
        /* scalars at the top level */
        {"\"x\"", 0, 1},
        {"1", 0, 1},
        {"true", 0, 1},
        {"false", 0, 1},
        {"null", 0, 1},
        /* numbers */
        {"0", 0, 1},
        {"-0", 0, 1},
        {"0.5", 0, 1},
        {"-0.0", 0, 1},
        {"1e5", 0, 1},
        {"1E+5", 0, 1},
        {"1e-5", 0, 1},
        {"0e0", 0, 1},
        {"123.456e789", 0, 1},
        {"-123", 0, 1},
        {"1.0E-0", 0, 1},
        {"[-1]", 0, 2},
        {"100", 0, 1},
        {"9999999999999999999999999999", 0, 1},
        {"[0,-0,0.0,1e1]", 0, 5},
        {"{\"n\":-12.5e+3}", 0, 3},
        /* strings and escapes */
        {"\"\"", 0, 1},
        {"\"a b\"", 0, 1},
        {"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", 0, 1},
        {"\"\\u0041\"", 0, 1},
        {"\"\\u00e9\\u00E9\"", 0, 1},
        {"\"\\uD83D\\uDE00\"", 0, 1},
        {"\"\\udbff\\udfff\"", 0, 1},
        {"\"\\u0000\"", 0, 1},
        {"\"\\uFFFF\"", 0, 1},
        {"\"\\u2028\"", 0, 1},
        {"\"/\"", 0, 1},
        {"\"\x7f\"", 0, 1},
        /* raw UTF-8 */
        {"\"\xc3\xa9\"", 0, 1},
        {"\"\xe2\x82\xac\"", 0, 1},
        {"\"\xf0\x9f\x98\x80\"", 0, 1},
        {"\"\xef\xbf\xbf\"", 0, 1},
        {"\"\xf4\x8f\xbf\xbf\"", 0, 1},
        {"\"0123456789abcdef\xc3\xa9 0123456789abcdef\"", 0, 1},
        {"[\"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\", \"x\"]", 0, 3},
        /* whitespace */
        {"\t\r\n [] \n", 0, 1},
        {" 1 ", 0, 1},
        {"{\n\t\"a\"\r\n:\t1\n}", 0, 3},
    };
    check_cases(y, NCASES(y));
}

static void test_invalid_structure(void)
{
    static const struct doc_case n[] = {
        {"", 0, -EBADMSG},
        {"   ", 0, -EBADMSG},
        {"[", 0, -EBADMSG},
        {"]", 0, -EBADMSG},
        {"{", 0, -EBADMSG},
        {"}", 0, -EBADMSG},
        {"[1", 0, -EBADMSG},
        {"[1,", 0, -EBADMSG},
        {"[1,]", 0, -EBADMSG},
        {"[,1]", 0, -EBADMSG},
        {"[,]", 0, -EBADMSG},
        {"[1 2]", 0, -EBADMSG},
        {"[1,,2]", 0, -EBADMSG},
        {"{\"a\"}", 0, -EBADMSG},
        {"{\"a\":}", 0, -EBADMSG},
        {"{\"a\" 1}", 0, -EBADMSG},
        {"{\"a\"::1}", 0, -EBADMSG},
        {"{a:1}", 0, -EBADMSG},
        {"{'a':1}", 0, -EBADMSG},
        {"{1:1}", 0, -EBADMSG},
        {"{null:1}", 0, -EBADMSG},
        {"{\"a\":1,}", 0, -EBADMSG},
        {"{,}", 0, -EBADMSG},
        {"{\"a\":1,,\"b\":2}", 0, -EBADMSG},
        {"{\"a\":1 \"b\":2}", 0, -EBADMSG},
        {"[}", 0, -EBADMSG},
        {"{]", 0, -EBADMSG},
        {"{\"a\":1]", 0, -EBADMSG},
        {"[1}", 0, -EBADMSG},
        {"[[]", 0, -EBADMSG},
        {"{\"a\":{}", 0, -EBADMSG},
        {"[\"a\":1]", 0, -EBADMSG},
        {"/* c */ []", 0, -EBADMSG},
        {"[] // c", 0, -EBADMSG},
        /* trailing garbage */
        {"[1]]", 0, -EBADMSG},
        {"[][]", 0, -EBADMSG},
        {"{}{}", 0, -EBADMSG},
        {"1 2", 0, -EBADMSG},
        {"[1]x", 0, -EBADMSG},
        {"\"a\"b", 0, -EBADMSG},
        {"{\"a\":1}}", 0, -EBADMSG},
        {"[1],", 0, -EBADMSG},
        {"null,", 0, -EBADMSG},
        {"[1]\xff", 0, -EBADMSG},
        {"[1]\0", 4, -EBADMSG},
        /* literals */
        {"tru", 0, -EBADMSG},
        {"True", 0, -EBADMSG},
        {"nul", 0, -EBADMSG},
        {"nulll", 0, -EBADMSG},
        {"truefalse", 0, -EBADMSG},
        {"[true false]", 0, -EBADMSG},
        {"fals", 0, -EBADMSG},
        {"[f]", 0, -EBADMSG},
        {"undefined", 0, -EBADMSG},
        /* whitespace that RFC 8259 does not allow */
        {"\f[]", 0, -EBADMSG},
        {"\v[]", 0, -EBADMSG},
        {"[\0]", 3, -EBADMSG},
        {"\xc2\xa0[]", 0, -EBADMSG},
        {"\xef\xbb\xbf[]", 0, -EBADMSG},
        {"[1,\x0c 2]", 0, -EBADMSG},
    };
    check_cases(n, NCASES(n));
}

static void test_invalid_numbers(void)
{
    static const struct doc_case n[] = {
        {"01", 0, -EBADMSG},       {"-01", 0, -EBADMSG},      {"00", 0, -EBADMSG},
        {"[01]", 0, -EBADMSG},     {"+1", 0, -EBADMSG},       {".5", 0, -EBADMSG},
        {"-.5", 0, -EBADMSG},      {"1.", 0, -EBADMSG},       {"2.e5", 0, -EBADMSG},
        {"1e", 0, -EBADMSG},       {"1e+", 0, -EBADMSG},      {"1E-", 0, -EBADMSG},
        {"-", 0, -EBADMSG},        {"--1", 0, -EBADMSG},      {"0x10", 0, -EBADMSG},
        {"NaN", 0, -EBADMSG},      {"Infinity", 0, -EBADMSG}, {"-Infinity", 0, -EBADMSG},
        {"1_000", 0, -EBADMSG},    {"[1.]", 0, -EBADMSG},     {"[-]", 0, -EBADMSG},
        {"1ee5", 0, -EBADMSG},     {"1.5.5", 0, -EBADMSG},    {"1e5.5", 0, -EBADMSG},
        {"[1e]", 0, -EBADMSG},     {"- 1", 0, -EBADMSG},      {"1 .5", 0, -EBADMSG},
        {"\xd9\xa1", 0, -EBADMSG},
    };
    check_cases(n, NCASES(n));
}

static void test_invalid_strings(void)
{
    static const struct doc_case n[] = {
        /* termination and quoting */
        {"\"abc", 0, -EBADMSG},
        {"\"", 0, -EBADMSG},
        {"\"\\\"", 0, -EBADMSG},
        {"\"\\", 0, -EBADMSG},
        {"'a'", 0, -EBADMSG},
        {"[\"a]", 0, -EBADMSG},
        {"\"0123456789abcdef0123456789", 0, -EBADMSG},
        /* escapes */
        {"\"\\x41\"", 0, -EBADMSG},
        {"\"\\a\"", 0, -EBADMSG},
        {"\"\\'\"", 0, -EBADMSG},
        {"\"\\0\"", 0, -EBADMSG},
        {"\"\\U0041\"", 0, -EBADMSG},
        {"\"\\u12\"", 0, -EBADMSG},
        {"\"\\u12G4\"", 0, -EBADMSG},
        {"\"\\u\"", 0, -EBADMSG},
        {"\"\\u004", 0, -EBADMSG},
        {"\"\\ u0041\"", 0, -EBADMSG},
        {"\"\\\0\"", 4, -EBADMSG},
        /* surrogates */
        {"\"\\uD800\"", 0, -EBADMSG},
        {"\"\\uDBFF\"", 0, -EBADMSG},
        {"\"\\uDC00\"", 0, -EBADMSG},
        {"\"\\uDFFF\\uD800\"", 0, -EBADMSG},
        {"\"\\uD800\\u0041\"", 0, -EBADMSG},
        {"\"\\uD800x\"", 0, -EBADMSG},
        {"\"\\uD800\\n\"", 0, -EBADMSG},
        {"\"\\uD800\\\"", 0, -EBADMSG},
        {"\"\\uD800\\u\"", 0, -EBADMSG},
        {"\"\\uDBFF\\uE000\"", 0, -EBADMSG},
        {"\"\\uD800\\uD800\"", 0, -EBADMSG},
        {"\"\\uD800\\uDC0\"", 0, -EBADMSG},
        {"\"\\uD800", 0, -EBADMSG},
        /* raw control characters */
        {"\"a\tb\"", 0, -EBADMSG},
        {"\"a\nb\"", 0, -EBADMSG},
        {"\"\r\"", 0, -EBADMSG},
        {"\"\x01\"", 0, -EBADMSG},
        {"\"\x1f\"", 0, -EBADMSG},
        {"\"\0\"", 3, -EBADMSG},
        {"\"0123456789abcdef\x1f"
         "0123456789\"",
         0, -EBADMSG},
        /* UTF-8 */
        {"\"\xff\"", 0, -EBADMSG},
        {"\"\xfe\"", 0, -EBADMSG},
        {"\"\xc3\"", 0, -EBADMSG},
        {"\"\xc3(\"", 0, -EBADMSG},
        {"\"\xc0\xaf\"", 0, -EBADMSG},
        {"\"\xe0\x80\xaf\"", 0, -EBADMSG},
        {"\"\xed\xa0\x80\"", 0, -EBADMSG},
        {"\"\xed\xbf\xbf\"", 0, -EBADMSG},
        {"\"\xf4\x90\x80\x80\"", 0, -EBADMSG},
        {"\"\xf5\x80\x80\x80\"", 0, -EBADMSG},
        {"\"\x80\"", 0, -EBADMSG},
        {"\"\xe2\x82\"", 0, -EBADMSG},
        {"\"\xc3\\n\"", 0, -EBADMSG},
        {"\"0123456789abcdef0123456789abcdef\xe9t\xe9\"", 0, -EBADMSG},
        {"[\"ok\",\"\xc3\"]", 0, -EBADMSG},
        {"{\"\xff\":1}", 0, -EBADMSG},
    };
    check_cases(n, NCASES(n));
}

struct tok_want {
    uint8_t type;
    bool escaped;
    uint32_t start, len, size, next;
};

static void check_layout(const char *doc, const struct tok_want *want, size_t n)
{
    ssize_t rc = parse(doc);
    CHECK_INT(rc, n);
    if (rc != (ssize_t)n)
        return;
    for (size_t i = 0; i < n; i++) {
        CHECK_INT(toks[i].type, want[i].type);
        CHECK_INT(toks[i].escaped, want[i].escaped);
        CHECK_INT(toks[i].start, want[i].start);
        CHECK_INT(toks[i].len, want[i].len);
        CHECK_INT(toks[i].size, want[i].size);
        CHECK_INT(toks[i].next, want[i].next);
    }
}

static void test_token_layout(void)
{
    /*            0         1         2         3
     *            0123456789012345678901234567890123 */
    const char *d = "{\"a\":[1,{\"b\":null}],\"c\":\"x\\ny\"}";
    static const struct tok_want w[] = {
        {SB_JSON_OBJECT, false, 0, 31, 2, 9}, {SB_JSON_STRING, false, 2, 1, 0, 2},
        {SB_JSON_ARRAY, false, 5, 14, 2, 7},  {SB_JSON_NUMBER, false, 6, 1, 0, 4},
        {SB_JSON_OBJECT, false, 8, 10, 1, 7}, {SB_JSON_STRING, false, 10, 1, 0, 6},
        {SB_JSON_NULL, false, 13, 4, 0, 7},   {SB_JSON_STRING, false, 21, 1, 0, 8},
        {SB_JSON_STRING, true, 25, 4, 0, 9},
    };
    check_layout(d, w, NCASES(w));

    const char *a = " [ [ ] , [ [ 1 ] ] , { } , -2.5e1 , true , false , \"\" ] ";
    static const struct tok_want wa[] = {
        {SB_JSON_ARRAY, false, 1, 54, 7, 10}, {SB_JSON_ARRAY, false, 3, 3, 0, 2},
        {SB_JSON_ARRAY, false, 9, 9, 1, 5},   {SB_JSON_ARRAY, false, 11, 5, 1, 5},
        {SB_JSON_NUMBER, false, 13, 1, 0, 5}, {SB_JSON_OBJECT, false, 21, 3, 0, 6},
        {SB_JSON_NUMBER, false, 27, 6, 0, 7}, {SB_JSON_TRUE, false, 36, 4, 0, 8},
        {SB_JSON_FALSE, false, 43, 5, 0, 9},  {SB_JSON_STRING, false, 52, 0, 0, 10},
    };
    check_layout(a, wa, NCASES(wa));

    static const struct tok_want ws[] = {{SB_JSON_STRING, true, 2, 6, 0, 1}};
    check_layout(" \"\\u0041\" ", ws, 1);
    static const struct tok_want wn[] = {{SB_JSON_NUMBER, false, 1, 3, 0, 1}};
    check_layout("\t-10\n", wn, 1);
    static const struct tok_want we[] = {
        {SB_JSON_OBJECT, false, 0, 8, 1, 3},
        {SB_JSON_STRING, false, 2, 0, 0, 2},
        {SB_JSON_OBJECT, false, 5, 2, 0, 3},
    };
    check_layout("{\"\": {}}", we, NCASES(we));
}

/* Nested arrays (or objects with key "k") depth levels deep, around leaves 1s. */
static char *nested(unsigned depth, unsigned leaves, bool objects)
{
    size_t cap = (size_t)depth * 8 + (size_t)leaves * 2 + 8;
    char *s = malloc(cap);
    size_t n = 0;
    for (unsigned i = 0; i < depth; i++) {
        if (objects) {
            memcpy(s + n, "{\"k\":", 5);
            n += 5;
        } else {
            s[n++] = '[';
        }
    }
    for (unsigned i = 0; i < leaves; i++) {
        if (i)
            s[n++] = ',';
        s[n++] = '1';
    }
    if (leaves == 0 && objects && depth)
        s[n++] = '0';
    for (unsigned i = 0; i < depth; i++)
        s[n++] = objects ? '}' : ']';
    s[n] = '\0';
    return s;
}

static void test_depth_limit(void)
{
    static const unsigned depths[] = {1, 2, 3, 16, 63, 64, 1000};
    for (size_t i = 0; i < NCASES(depths); i++) {
        unsigned d = depths[i];
        char *arr = nested(d, 1, false);
        struct sb_json_limits at = {MAX_TOKS, d};
        struct sb_json_limits below = {MAX_TOKS, d - 1};
        CHECK_INT(parse_n(arr, strlen(arr), &at), d + 1);
        CHECK_INT(parse_n(arr, strlen(arr), &below), -ELOOP);
        free(arr);

        char *obj = nested(d, 0, true);
        CHECK_INT(parse_n(obj, strlen(obj), &at), 2 * d + 1);
        CHECK_INT(parse_n(obj, strlen(obj), &below), -ELOOP);
        free(obj);
    }
    /* Depth 0 allows scalars only. */
    struct sb_json_limits flat = {MAX_TOKS, 0};
    CHECK_INT(parse_n("1", 1, &flat), 1);
    CHECK_INT(parse_n("\"[\"", 3, &flat), 1);
    CHECK_INT(parse_n("[]", 2, &flat), -ELOOP);
    CHECK_INT(parse_n("{}", 2, &flat), -ELOOP);

    /* The limit counts open containers, not all containers: siblings do not add up. */
    struct sb_json_limits two = {MAX_TOKS, 2};
    CHECK_INT(parse_n("[[],[],{\"a\":1},[]]", 18, &two), 7);
    CHECK_INT(parse_n("[[],[[]]]", 9, &two), -ELOOP);

    /* Too deep is known when the container opens, before the input ends. */
    CHECK_INT(parse_n("[[[", 3, &two), -ELOOP);
    CHECK_INT(parse_n("[[", 2, &two), -EBADMSG);

    /* Deep nesting uses no stack: a million levels with the tokens to hold them. */
    unsigned deep = 1000000;
    char *big = nested(deep, 0, false);
    struct sb_json_tok *many = malloc(sizeof *many * (deep + 1));
    struct sb_json_limits huge = {deep + 1, deep};
    CHECK_INT(sb_json_parse(big, strlen(big), &huge, many), deep);
    CHECK_INT(many[0].next, deep);
    CHECK_INT(many[0].size, 1);
    CHECK_INT(many[deep - 1].size, 0);
    CHECK_INT(many[deep - 1].next, deep);
    CHECK_INT(many[deep - 1].len, 2);
    CHECK_INT(many[0].len, 2 * deep);
    free(many);
    free(big);
}

static void test_token_limit(void)
{
    static const char *const docs[] = {
        "[1,2,3]",  "{\"a\":{\"b\":[true,false,null]},\"c\":\"d\"}", "\"s\"",
        "[[[[]]]]", "{\"a\":[1,{\"b\":null}],\"c\":\"x\\ny\"}",
    };
    for (size_t i = 0; i < NCASES(docs); i++) {
        size_t len = strlen(docs[i]);
        ssize_t n = parse(docs[i]);
        CHECK(n > 0);
        for (ssize_t max = 0; max <= n + 1; max++) {
            /* Tokens past max_tokens are never written. */
            struct sb_json_tok guard[32];
            memset(guard, 0xA5, sizeof guard);
            struct sb_json_limits lim = {(size_t)max, 64};
            ssize_t rc = sb_json_parse(docs[i], len, &lim, guard);
            CHECK_INT(rc, max >= n ? n : -E2BIG);
            const unsigned char *g = (const unsigned char *)(guard + max);
            size_t untouched = 0;
            while (untouched < sizeof guard - (size_t)max * sizeof guard[0] && g[untouched] == 0xA5)
                untouched++;
            CHECK_INT(untouched, sizeof guard - (size_t)max * sizeof guard[0]);
        }
    }
    /* Malformed input is reported as such when the bad byte comes before the limit. */
    struct sb_json_limits one = {1, 8};
    CHECK_INT(parse_n("[1,]", 4, &one), -E2BIG);
    CHECK_INT(parse_n("[x", 2, &one), -EBADMSG);
    CHECK_INT(parse_n("x", 1, &one), -EBADMSG);
    struct sb_json_limits none = {0, 8};
    CHECK_INT(parse_n("1", 1, &none), -E2BIG);
    CHECK_INT(parse_n("", 0, &none), -EBADMSG);
}

static void test_proper_prefixes(void)
{
    /* Every proper prefix of a container is incomplete, hence malformed, wherever it stops. */
    static const char *const docs[] = {
        "{\"a\":[1,{\"b\":null}],\"c\":\"x\\ny\"}",
        "[\"\\uD83D\\uDE00\",-1.5e+10,true,false,null,\"\xf0\x9f\x98\x80\"]",
        "{\"k\" : [ [ ] , { } ] }",
    };
    long page = sysconf(_SC_PAGESIZE);
    char *map =
        mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(map != MAP_FAILED);
    if (map == MAP_FAILED)
        return;
    CHECK_INT(mprotect(map + page, (size_t)page, PROT_NONE), 0);
    char *edge = map + page;
    for (size_t i = 0; i < NCASES(docs); i++) {
        size_t len = strlen(docs[i]);
        memcpy(edge - len, docs[i], len);
        CHECK(sb_json_parse(edge - len, len, &limits, toks) > 0);
        int wrong = 0;
        for (size_t n = 0; n < len; n++) {
            memcpy(edge - n, docs[i], n);
            wrong += sb_json_parse(edge - n, n, &limits, toks) != -EBADMSG;
        }
        CHECK_INT(wrong, 0);
    }
    /* Scalars that end exactly at the end of the input, where a parser might peek further. */
    static const char *const edges[] = {"1", "-0", "1.5", "1e5", "true", "null", "\"\"", "\"ab\""};
    for (size_t i = 0; i < NCASES(edges); i++) {
        size_t len = strlen(edges[i]);
        memcpy(edge - len, edges[i], len);
        CHECK_INT(sb_json_parse(edge - len, len, &limits, toks), 1);
    }
    static const char *const cut[] = {"-",       "1.",          "1e",           "1e+",    "tru",
                                      "\"\\u00", "\"\\uD800\\", "\"\\uD800\\u", "\"\xc3", "\"\\"};
    for (size_t i = 0; i < NCASES(cut); i++) {
        size_t len = strlen(cut[i]);
        memcpy(edge - len, cut[i], len);
        CHECK_INT(sb_json_parse(edge - len, len, &limits, toks), -EBADMSG);
    }
    munmap(map, (size_t)page * 2);
}

static void test_long_strings(void)
{
    /* Every position of each special byte relative to the eight-byte scan. */
    char doc[64];
    for (size_t pos = 0; pos < 40; pos++) {
        static const char specials[] = {'"', '\\', '\x01', '\x1f', '\n', (char)0xff};
        for (size_t k = 0; k < sizeof specials; k++) {
            memset(doc, 'a', sizeof doc);
            doc[0] = '"';
            doc[41] = '"';
            doc[1 + pos] = specials[k];
            ssize_t rc = sb_json_parse(doc, 42, &limits, toks);
            /* A quote ends the string early: trailing garbage. A backslash escapes 'a'. */
            CHECK_INT(rc, -EBADMSG);
        }
        if (pos > 38)
            continue;
        memset(doc, 'a', sizeof doc);
        doc[0] = '"';
        doc[41] = '"';
        memcpy(doc + 1 + pos, "\\n", 2);
        CHECK_INT(sb_json_parse(doc, 42, &limits, toks), 1);
        CHECK(toks[0].escaped);
        CHECK_INT(toks[0].len, 40);
        doc[1 + pos] = 'a';
        doc[2 + pos] = '"';
        CHECK_INT(sb_json_parse(doc, 3 + pos, &limits, toks), 1);
        CHECK_INT(toks[0].len, pos + 1);
        CHECK(!toks[0].escaped);
    }
    /* Multi-byte characters across the eight-byte boundaries. */
    for (size_t pos = 1; pos < 30; pos++) {
        memset(doc, 'a', sizeof doc);
        doc[0] = '"';
        memcpy(doc + pos, "\xf0\x9f\x98\x80", 4);
        doc[40] = '"';
        CHECK_INT(sb_json_parse(doc, 41, &limits, toks), 1);
        doc[pos + 3] = 'a';
        CHECK_INT(sb_json_parse(doc, 41, &limits, toks), -EBADMSG);
    }
}

#define MSG                                                                                        \
    "{\"type\":\"msg\",\"ro\\u006fm\":\"lobby\",\"n\":42,\"a\\\"b\":1,"                            \
    "\"emoji\\ud83d\\ude00\":2,\"nested\":{\"type\":\"inner\",\"x\":[1,2]},\"list\":[\"type\"],"   \
    "\"nul\\u0000\":3,\"type\":\"dup\",\"\":\"empty\",\"esc\\/\":\"\\u00e9\\n\"}"

static void test_get_and_eq(void)
{
    const char *d = MSG;
    CHECK(parse(d) > 0);
    int t = sb_json_get(d, toks, 0, "type");
    CHECK(t > 0);
    CHECK(t > 0 && sb_json_eq(d, &toks[t], "msg"));
    CHECK(t > 0 && !sb_json_eq(d, &toks[t], "dup"));
    int r = sb_json_get(d, toks, 0, "room");
    CHECK(r > 0 && sb_json_eq(d, &toks[r], "lobby"));
    CHECK_INT(sb_json_get(d, toks, 0, "ro\\u006fm"), -1);
    int n = sb_json_get(d, toks, 0, "n");
    int64_t v = 0;
    CHECK(n > 0 && sb_json_int64(d, &toks[n], &v) == 0);
    CHECK_INT(v, 42);
    int q = sb_json_get(d, toks, 0, "a\"b");
    CHECK(q > 0 && toks[q].type == SB_JSON_NUMBER);
    int e = sb_json_get(d, toks, 0, "emoji\xf0\x9f\x98\x80");
    CHECK(e > 0 && sb_json_int64(d, &toks[e], &v) == 0 && v == 2);
    int nest = sb_json_get(d, toks, 0, "nested");
    CHECK(nest > 0 && toks[nest].type == SB_JSON_OBJECT);
    int inner = sb_json_get(d, toks, nest, "type");
    CHECK(inner > 0 && sb_json_eq(d, &toks[inner], "inner"));
    int x = sb_json_get(d, toks, nest, "x");
    CHECK(x > 0 && toks[x].type == SB_JSON_ARRAY && toks[x].size == 2);
    /* Keys of nested objects and strings inside arrays are not members of the outer object. */
    CHECK_INT(sb_json_get(d, toks, 0, "x"), -1);
    CHECK_INT(sb_json_get(d, toks, 0, "inner"), -1);
    CHECK_INT(sb_json_get(d, toks, 0, "msg"), -1);
    /* An escaped NUL never matches a C string, which ends there. */
    CHECK_INT(sb_json_get(d, toks, 0, "nul"), -1);
    int empty = sb_json_get(d, toks, 0, "");
    CHECK(empty > 0 && sb_json_eq(d, &toks[empty], "empty"));
    int esc = sb_json_get(d, toks, 0, "esc/");
    CHECK(esc > 0 && sb_json_eq(d, &toks[esc], "\xc3\xa9\n"));
    CHECK(esc > 0 && !sb_json_eq(d, &toks[esc], "\xc3\xa9"));
    CHECK(esc > 0 && !sb_json_eq(d, &toks[esc], "\xc3\xa9\n!"));
    CHECK(esc > 0 && !sb_json_eq(d, &toks[esc], ""));
    /* Prefixes and extensions of keys are different keys. */
    CHECK_INT(sb_json_get(d, toks, 0, "typ"), -1);
    CHECK_INT(sb_json_get(d, toks, 0, "types"), -1);
    CHECK_INT(sb_json_get(d, toks, 0, "emoji"), -1);
    CHECK_INT(sb_json_get(d, toks, 0, "a"), -1);
    /* Not an object. */
    CHECK_INT(sb_json_get(d, toks, t, "type"), -1);
    CHECK_INT(sb_json_get(d, toks, x, "type"), -1);
    CHECK_INT(sb_json_get(d, toks, -1, "type"), -1);
    CHECK(!sb_json_eq(d, &toks[0], "type"));
    CHECK(!sb_json_eq(d, &toks[n], "42"));

    CHECK_INT(parse("{}"), 1);
    CHECK_INT(sb_json_get("{}", toks, 0, ""), -1);
    const char *s = "\"\"";
    CHECK_INT(parse(s), 1);
    CHECK(sb_json_eq(s, &toks[0], ""));
    CHECK(!sb_json_eq(s, &toks[0], "a"));
    s = "\"\\u0000\"";
    CHECK_INT(parse(s), 1);
    CHECK(!sb_json_eq(s, &toks[0], ""));
}

static void test_string(void)
{
    const char *d = "[\"plain\",\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\",\"\\u0041\\u00e9\\u20ac"
                    "\\uD83D\\uDE00\",\"x\\u0000y\",\"\",\"\\u2028\",12]";
    CHECK_INT(parse(d), 8);
    char out[64];
    CHECK_INT(sb_json_string(d, &toks[1], out, sizeof out), 5);
    CHECK_STR(out, "plain");
    CHECK_INT(sb_json_string(d, &toks[2], out, sizeof out), 12);
    CHECK_STR(out, "a\"b\\c/d\b\f\n\r\t");
    CHECK_INT(sb_json_string(d, &toks[3], out, sizeof out), 1 + 2 + 3 + 4);
    CHECK_STR(out, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    CHECK_INT(sb_json_string(d, &toks[4], out, sizeof out), 3);
    CHECK_MEM(out, "x\0y", 4);
    CHECK_INT(sb_json_string(d, &toks[5], out, sizeof out), 0);
    CHECK_STR(out, "");
    CHECK_INT(sb_json_string(d, &toks[6], out, sizeof out), 3);
    CHECK_STR(out, "\xe2\x80\xa8");
    CHECK_INT(sb_json_string(d, &toks[7], out, sizeof out), -EINVAL);
    CHECK_INT(sb_json_string(d, &toks[0], out, sizeof out), -EINVAL);

    /* Room for the value and its NUL, and not a byte less, for plain and escaped values. */
    for (int i = 1; i <= 6; i++) {
        ssize_t full = sb_json_string(d, &toks[i], out, sizeof out);
        for (size_t cap = 0; cap <= (size_t)full + 1; cap++) {
            char small[64];
            memset(small, 0x5A, sizeof small);
            ssize_t rc = sb_json_string(d, &toks[i], small, cap);
            CHECK_INT(rc, cap > (size_t)full ? full : -ENOSPC);
            CHECK_INT(small[cap], 0x5A);
            if (rc >= 0)
                CHECK_MEM(small, out, (size_t)full + 1);
        }
    }
}

static void test_int64(void)
{
    static const struct {
        const char *text;
        int rc;
        int64_t value;
    } cases[] = {
        {"0", 0, 0},
        {"-0", 0, 0},
        {"1", 0, 1},
        {"-1", 0, -1},
        {"42", 0, 42},
        {"1234567890123", 0, 1234567890123},
        {"9223372036854775807", 0, INT64_MAX},
        {"-9223372036854775808", 0, INT64_MIN},
        {"9223372036854775806", 0, INT64_MAX - 1},
        {"-9223372036854775807", 0, -INT64_MAX},
        {"9223372036854775808", -ERANGE, 0},
        {"-9223372036854775809", -ERANGE, 0},
        {"9223372036854775810", -ERANGE, 0},
        {"18446744073709551615", -ERANGE, 0},
        {"18446744073709551616", -ERANGE, 0},
        {"99999999999999999999999999", -ERANGE, 0},
        {"1.0", -EINVAL, 0},
        {"1e2", -EINVAL, 0},
        {"1E2", -EINVAL, 0},
        {"-1.5", -EINVAL, 0},
        {"0.0", -EINVAL, 0},
        {"99999999999999999999999e1", -EINVAL, 0},
        {"\"1\"", -EINVAL, 0},
        {"true", -EINVAL, 0},
        {"null", -EINVAL, 0},
        {"[1]", -EINVAL, 0},
    };
    for (size_t i = 0; i < NCASES(cases); i++) {
        CHECK_INT(parse(cases[i].text) > 0, 1);
        int64_t v = 12345;
        int rc = sb_json_int64(cases[i].text, &toks[0], &v);
        if (rc != cases[i].rc)
            fprintf(stderr, "int64 case '%s'\n", cases[i].text);
        CHECK_INT(rc, cases[i].rc);
        CHECK_INT(v, rc == 0 ? cases[i].value : 12345);
    }
    /* Hand-made tokens: the syntax is checked, not assumed. */
    struct sb_json_tok t = {.type = SB_JSON_NUMBER, .start = 0, .len = 2};
    int64_t v;
    CHECK_INT(sb_json_int64("01", &t, &v), -EINVAL);
    CHECK_INT(sb_json_int64("+1", &t, &v), -EINVAL);
    CHECK_INT(sb_json_int64("1x", &t, &v), -EINVAL);
    t.len = 1;
    CHECK_INT(sb_json_int64("-", &t, &v), -EINVAL);
    t.len = 0;
    CHECK_INT(sb_json_int64("", &t, &v), -EINVAL);
}

/* Runs the writer into a buffer and checks the exact output. */
static char wbuf[4096];

static void check_written(struct sb_json_writer *w, const char *want)
{
    ssize_t n = sb_json_finish(w);
    CHECK_INT(n, strlen(want));
    if (n >= 0) {
        wbuf[n] = '\0';
        CHECK_STR(wbuf, want);
    }
}

static void test_writer_basic(void)
{
    struct sb_json_writer w;
    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    sb_json_begin_object(&w);
    sb_json_key(&w, "type");
    sb_json_cstr(&w, "msg");
    sb_json_key(&w, "n");
    sb_json_int(&w, -42);
    sb_json_key(&w, "list");
    sb_json_begin_array(&w);
    sb_json_uint(&w, 1);
    sb_json_bool(&w, true);
    sb_json_bool(&w, false);
    sb_json_null(&w);
    sb_json_begin_array(&w);
    sb_json_end_array(&w);
    sb_json_begin_object(&w);
    sb_json_end_object(&w);
    sb_json_begin_array(&w);
    sb_json_begin_array(&w);
    sb_json_int(&w, 0);
    sb_json_end_array(&w);
    sb_json_end_array(&w);
    sb_json_end_array(&w);
    sb_json_key(&w, "raw");
    sb_json_raw(&w, "{\"x\":1.5e3}", 11);
    sb_json_key(&w, "o");
    sb_json_begin_object(&w);
    sb_json_key(&w, "");
    sb_json_str(&w, "", 0);
    sb_json_end_object(&w);
    sb_json_end_object(&w);
    check_written(&w, "{\"type\":\"msg\",\"n\":-42,\"list\":[1,true,false,null,[],{},[[0]]],"
                      "\"raw\":{\"x\":1.5e3},\"o\":{\"\":\"\"}}");

    /* Scalars at the top level. */
    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    sb_json_cstr(&w, "x");
    check_written(&w, "\"x\"");
    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    sb_json_null(&w);
    check_written(&w, "null");
    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    sb_json_raw(&w, "1e5", 3);
    check_written(&w, "1e5");

    /* The deepest nesting the writer allows. */
    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    for (int i = 0; i < SB_JSON_WRITER_DEPTH; i++)
        sb_json_begin_array(&w);
    for (int i = 0; i < SB_JSON_WRITER_DEPTH; i++)
        sb_json_end_array(&w);
    CHECK_INT(sb_json_finish(&w), 2 * SB_JSON_WRITER_DEPTH);
    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    for (int i = 0; i < SB_JSON_WRITER_DEPTH; i++) {
        sb_json_begin_object(&w);
        sb_json_key(&w, "k");
    }
    sb_json_int(&w, 1);
    for (int i = 0; i < SB_JSON_WRITER_DEPTH; i++)
        sb_json_end_object(&w);
    ssize_t n = sb_json_finish(&w);
    CHECK_INT(n, 6 * SB_JSON_WRITER_DEPTH + 1);
    if (n > 0) {
        CHECK_INT(sb_json_parse(wbuf, (size_t)n, &limits, toks), 2 * SB_JSON_WRITER_DEPTH + 1);
        CHECK_INT(toks[2 * SB_JSON_WRITER_DEPTH].type, SB_JSON_NUMBER);
    }
}

static void test_writer_numbers(void)
{
    static const struct {
        int64_t v;
        const char *want;
    } ints[] = {
        {0, "0"},
        {1, "1"},
        {-1, "-1"},
        {9, "9"},
        {10, "10"},
        {99, "99"},
        {100, "100"},
        {-100, "-100"},
        {101, "101"},
        {12345, "12345"},
        {1000000007, "1000000007"},
        {INT64_MAX, "9223372036854775807"},
        {INT64_MIN, "-9223372036854775808"},
        {INT64_MIN + 1, "-9223372036854775807"},
    };
    struct sb_json_writer w;
    for (size_t i = 0; i < NCASES(ints); i++) {
        sb_json_writer_init(&w, wbuf, sizeof wbuf);
        sb_json_int(&w, ints[i].v);
        check_written(&w, ints[i].want);
    }
    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    sb_json_uint(&w, UINT64_MAX);
    check_written(&w, "18446744073709551615");
    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    sb_json_uint(&w, 0);
    check_written(&w, "0");

    /* Every power of ten and its neighbours, through the parser and back. */
    uint64_t p = 1;
    for (int e = 0; e < 19; e++, p *= 10) {
        int64_t vals[] = {(int64_t)p, (int64_t)p - 1, (int64_t)p + 1, -(int64_t)p};
        for (size_t k = 0; k < NCASES(vals); k++) {
            sb_json_writer_init(&w, wbuf, sizeof wbuf);
            sb_json_int(&w, vals[k]);
            ssize_t n = sb_json_finish(&w);
            int64_t back = 0;
            CHECK(n > 0 && sb_json_parse(wbuf, (size_t)n, &limits, toks) == 1);
            CHECK_INT(sb_json_int64(wbuf, &toks[0], &back), 0);
            CHECK_INT(back, vals[k]);
        }
    }
}

static void test_writer_escaping(void)
{
    struct sb_json_writer w;
    char ctl[32];
    for (int i = 0; i < 32; i++)
        ctl[i] = (char)i;
    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    sb_json_str(&w, ctl, sizeof ctl);
    check_written(&w, "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n"
                      "\\u000b\\f\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015"
                      "\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\"");

    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    sb_json_cstr(&w, "a\"b\\c/d\x7f");
    check_written(&w, "\"a\\\"b\\\\c/d\x7f\"");

    /* JavaScript line terminators are escaped; other characters from E2 are not. */
    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    sb_json_cstr(&w, "x\xe2\x80\xa8y\xe2\x80\xa9z\xe2\x82\xac\xe2\x80\xa7\xc3\xa9\xf0\x9f\x98\x80");
    check_written(&w, "\"x\\u2028y\\u2029z\xe2\x82\xac\xe2\x80\xa7\xc3\xa9\xf0\x9f\x98\x80\"");

    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    sb_json_begin_object(&w);
    sb_json_key(&w, "k\"\n\xe2\x80\xa8");
    sb_json_int(&w, 1);
    sb_json_end_object(&w);
    check_written(&w, "{\"k\\\"\\n\\u2028\":1}");

    /* Invalid UTF-8 is refused in values and keys alike. */
    static const char *const bad[] = {"\xff",         "\xc3",     "a\xc0\xaf",
                                      "\xed\xa0\x80", "\xe2\x80", "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < NCASES(bad); i++) {
        sb_json_writer_init(&w, wbuf, sizeof wbuf);
        sb_json_cstr(&w, bad[i]);
        CHECK_INT(sb_json_finish(&w), -EINVAL);
        sb_json_writer_init(&w, wbuf, sizeof wbuf);
        sb_json_begin_object(&w);
        sb_json_key(&w, bad[i]);
        sb_json_int(&w, 1);
        sb_json_end_object(&w);
        CHECK_INT(sb_json_finish(&w), -EINVAL);
    }
}

/* W_END is zero, so the rest of a short row in a table ends the list. */
enum wop { W_END, W_BOBJ, W_EOBJ, W_BARR, W_EARR, W_KEY, W_INT, W_STR, W_RAW, W_NULL };

/* Replays a list of writer calls; returns sb_json_finish's result. */
static ssize_t run_ops(const enum wop *ops, char *buf, size_t cap)
{
    struct sb_json_writer w;
    sb_json_writer_init(&w, buf, cap);
    for (const enum wop *op = ops; *op != W_END; op++) {
        switch (*op) {
        case W_BOBJ:
            sb_json_begin_object(&w);
            break;
        case W_EOBJ:
            sb_json_end_object(&w);
            break;
        case W_BARR:
            sb_json_begin_array(&w);
            break;
        case W_EARR:
            sb_json_end_array(&w);
            break;
        case W_KEY:
            sb_json_key(&w, "k");
            break;
        case W_INT:
            sb_json_int(&w, 7);
            break;
        case W_STR:
            sb_json_cstr(&w, "s");
            break;
        case W_RAW:
            sb_json_raw(&w, "[]", 2);
            break;
        case W_NULL:
            sb_json_null(&w);
            break;
        case W_END:
            break;
        }
    }
    return sb_json_finish(&w);
}

static void test_writer_misuse(void)
{
    static const enum wop misuse[][8] = {
        {W_BOBJ, W_INT, W_EOBJ, W_END},          /* a value without a key */
        {W_BARR, W_KEY, W_INT, W_EARR, W_END},   /* a key in an array */
        {W_KEY, W_INT, W_END},                   /* a key at the top level */
        {W_BOBJ, W_KEY, W_KEY, W_INT, W_EOBJ},   /* two keys in a row */
        {W_BOBJ, W_KEY, W_EOBJ, W_END},          /* a key without a value */
        {W_BOBJ, W_EARR, W_END},                 /* the wrong bracket */
        {W_BARR, W_EOBJ, W_END},                 /* the wrong bracket */
        {W_EARR, W_END},                         /* nothing to close */
        {W_INT, W_INT, W_END},                   /* two documents */
        {W_BARR, W_EARR, W_BARR, W_EARR, W_END}, /* two documents */
        {W_BARR, W_END},                         /* still open */
        {W_BOBJ, W_KEY, W_BARR, W_EARR, W_END},  /* still open */
        {W_END},                                 /* nothing at all */
        {W_NULL, W_EARR, W_END},                 /* closing a scalar */
        {W_BOBJ, W_KEY, W_RAW, W_RAW, W_EOBJ, W_END},
    };
    for (size_t i = 0; i < NCASES(misuse); i++) {
        ssize_t rc = run_ops(misuse[i], wbuf, sizeof wbuf);
        if (rc != -EINVAL)
            fprintf(stderr, "misuse case %zu\n", i);
        CHECK_INT(rc, -EINVAL);
    }

    struct sb_json_writer w;
    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    for (int i = 0; i <= SB_JSON_WRITER_DEPTH; i++)
        sb_json_begin_array(&w);
    CHECK(w.error);
    CHECK_INT(sb_json_finish(&w), -EINVAL);

    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    sb_json_raw(&w, "", 0);
    CHECK_INT(sb_json_finish(&w), -EINVAL);
    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    sb_json_cstr(&w, NULL);
    CHECK_INT(sb_json_finish(&w), -EINVAL);
    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    sb_json_begin_object(&w);
    sb_json_key(&w, NULL);
    CHECK_INT(sb_json_finish(&w), -EINVAL);

    /* After an error nothing more is written, and the error stays. */
    sb_json_writer_init(&w, wbuf, sizeof wbuf);
    sb_json_begin_array(&w);
    sb_json_key(&w, "k");
    size_t len = w.len;
    sb_json_int(&w, 1);
    sb_json_end_array(&w);
    CHECK_INT(w.len, len);
    CHECK_INT(sb_json_finish(&w), -EINVAL);
    CHECK_INT(sb_json_finish(&w), -EINVAL);
}

static void test_writer_no_room(void)
{
    /* A sample document with every kind of call; it must come out whole or not at all. */
    const char *want = "{\"type\":\"publish\",\"room\":\"lobby\\n\",\"id\":-9223372036854775808,"
                       "\"tags\":[\"a\",\"\\u2028\",\"\\u0001\"],\"ok\":true,\"none\":null,"
                       "\"n\":18446744073709551615,\"raw\":{\"x\":[1,2]},\"e\":{}}";
    size_t full = strlen(want);
    char buf[512];
    for (size_t cap = 0; cap <= full + 1; cap++) {
        memset(buf, 0x5A, sizeof buf);
        struct sb_json_writer w;
        sb_json_writer_init(&w, buf, cap);
        sb_json_begin_object(&w);
        sb_json_key(&w, "type");
        sb_json_cstr(&w, "publish");
        sb_json_key(&w, "room");
        sb_json_cstr(&w, "lobby\n");
        sb_json_key(&w, "id");
        sb_json_int(&w, INT64_MIN);
        sb_json_key(&w, "tags");
        sb_json_begin_array(&w);
        sb_json_cstr(&w, "a");
        sb_json_cstr(&w, "\xe2\x80\xa8");
        sb_json_str(&w, "\x01", 1);
        sb_json_end_array(&w);
        sb_json_key(&w, "ok");
        sb_json_bool(&w, true);
        sb_json_key(&w, "none");
        sb_json_null(&w);
        sb_json_key(&w, "n");
        sb_json_uint(&w, UINT64_MAX);
        sb_json_key(&w, "raw");
        sb_json_raw(&w, "{\"x\":[1,2]}", 11);
        sb_json_key(&w, "e");
        sb_json_begin_object(&w);
        sb_json_end_object(&w);
        sb_json_end_object(&w);
        ssize_t rc = sb_json_finish(&w);
        CHECK_INT(rc, cap >= full ? (ssize_t)full : -ENOSPC);
        if (rc >= 0)
            CHECK_MEM(buf, want, full);
        size_t untouched = cap;
        while (untouched < sizeof buf && (unsigned char)buf[untouched] == 0x5A)
            untouched++;
        CHECK_INT(untouched, sizeof buf);
    }
    /* A NULL buffer has no room. */
    struct sb_json_writer w;
    sb_json_writer_init(&w, NULL, 100);
    sb_json_null(&w);
    CHECK_INT(sb_json_finish(&w), -ENOSPC);
}

/* The round trip: random documents written with the writer, parsed, and compared. */

struct rng {
    uint64_t s;
};

static uint32_t rnd(struct rng *r, uint32_t n)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return (uint32_t)((r->s >> 16) % n);
}

#define RT_MAX 2048

/* What the parser should find, token by token. */
struct expect {
    uint8_t type;
    uint32_t size, next;
    int64_t ival;
    int ival_rc;
    char str[40];
    size_t slen;
};

struct gen {
    struct rng r;
    struct sb_json_writer w;
    struct expect ex[RT_MAX];
    size_t n;
};

static void gen_string(struct gen *g, char *out, size_t *len, bool as_key)
{
    static const char *const pieces[] = {
        "a",
        "Z",
        "0",
        " ",
        "\"",
        "\\",
        "/",
        "\n",
        "\t",
        "\x01",
        "\x1f",
        "\x7f",
        "\xc3\xa9",
        "\xe2\x82\xac",
        "\xe2\x80\xa8",
        "\xe2\x80\xa9",
        "\xf0\x9f\x98\x80",
        "\xef\xbf\xbf",
        "\0",
    };
    size_t n = 0;
    unsigned count = rnd(&g->r, 8);
    for (unsigned i = 0; i < count; i++) {
        size_t k = rnd(&g->r, (uint32_t)NCASES(pieces));
        /* Keys go through the C-string API, which cannot carry NUL. */
        size_t plen = k == NCASES(pieces) - 1 ? (as_key ? 0 : 1) : strlen(pieces[k]);
        memcpy(out + n, pieces[k], plen);
        n += plen;
    }
    out[n] = '\0';
    *len = n;
}

static struct expect *gen_add(struct gen *g, uint8_t type)
{
    struct expect *e = &g->ex[g->n];
    memset(e, 0, sizeof *e);
    e->type = type;
    e->next = (uint32_t)++g->n;
    return e;
}

static void gen_scalar(struct gen *g)
{
    static const char *const raws[] = {"1.5", "-0", "1e400", "-2.5E-3", "0.000", "7"};
    struct expect *e;
    switch (rnd(&g->r, 7)) {
    case 0:
        e = gen_add(g, SB_JSON_NUMBER);
        e->ival = (int64_t)((uint64_t)rnd(&g->r, 1u << 31) << 33 | rnd(&g->r, 1u << 30));
        if (rnd(&g->r, 2))
            e->ival = rnd(&g->r, 2) ? INT64_MIN : (int64_t)(0 - (uint64_t)e->ival);
        sb_json_int(&g->w, e->ival);
        break;
    case 1: {
        e = gen_add(g, SB_JSON_NUMBER);
        uint64_t u = rnd(&g->r, 2) ? UINT64_MAX - rnd(&g->r, 10) : rnd(&g->r, 1000);
        sb_json_uint(&g->w, u);
        e->ival = (int64_t)u;
        e->ival_rc = u > INT64_MAX ? -ERANGE : 0;
        break;
    }
    case 2: {
        e = gen_add(g, SB_JSON_NUMBER);
        const char *raw = raws[rnd(&g->r, (uint32_t)NCASES(raws))];
        sb_json_raw(&g->w, raw, strlen(raw));
        e->ival_rc = strcmp(raw, "7") == 0 ? 0 : strcmp(raw, "-0") == 0 ? 0 : -EINVAL;
        e->ival = strcmp(raw, "7") == 0 ? 7 : 0;
        break;
    }
    case 3:
        e = gen_add(g, rnd(&g->r, 2) ? SB_JSON_TRUE : SB_JSON_FALSE);
        sb_json_bool(&g->w, e->type == SB_JSON_TRUE);
        break;
    case 4:
        gen_add(g, SB_JSON_NULL);
        sb_json_null(&g->w);
        break;
    default:
        e = gen_add(g, SB_JSON_STRING);
        gen_string(g, e->str, &e->slen, false);
        sb_json_str(&g->w, e->str, e->slen);
        break;
    }
}

static void gen_value(struct gen *g, int depth)
{
    if (g->n > RT_MAX - 64 || depth >= 6 || rnd(&g->r, 3) == 0) {
        gen_scalar(g);
        return;
    }
    bool is_object = rnd(&g->r, 2);
    size_t at = g->n;
    gen_add(g, is_object ? SB_JSON_OBJECT : SB_JSON_ARRAY);
    if (is_object)
        sb_json_begin_object(&g->w);
    else
        sb_json_begin_array(&g->w);
    uint32_t members = rnd(&g->r, 6);
    for (uint32_t i = 0; i < members; i++) {
        if (is_object) {
            struct expect *k = gen_add(g, SB_JSON_STRING);
            gen_string(g, k->str, &k->slen, true);
            sb_json_key(&g->w, k->str);
        }
        gen_value(g, depth + 1);
    }
    g->ex[at].size = members;
    g->ex[at].next = (uint32_t)g->n;
    if (is_object)
        sb_json_end_object(&g->w);
    else
        sb_json_end_array(&g->w);
}

/* The first member of the object at obj whose key equals the key token at k, by expectation. */
static int expected_get(const struct gen *g, size_t obj, const char *key)
{
    size_t i = obj + 1;
    for (uint32_t m = 0; m < g->ex[obj].size; m++) {
        if (g->ex[i].slen == strlen(key) && memcmp(g->ex[i].str, key, g->ex[i].slen) == 0)
            return (int)i + 1;
        i = g->ex[i + 1].next;
    }
    return -1;
}

static int compare_tokens(const struct gen *g, const char *doc, const struct sb_json_tok *t)
{
    int bad = 0;
    for (size_t i = 0; i < g->n; i++) {
        const struct expect *e = &g->ex[i];
        bad += t[i].type != e->type || t[i].next != e->next;
        if (e->type == SB_JSON_ARRAY || e->type == SB_JSON_OBJECT)
            bad += t[i].size != e->size;
        if (e->type == SB_JSON_STRING) {
            char out[64];
            ssize_t n = sb_json_string(doc, &t[i], out, sizeof out);
            bad += n != (ssize_t)e->slen || memcmp(out, e->str, e->slen) != 0;
            if (memchr(e->str, '\0', e->slen) == NULL)
                bad += !sb_json_eq(doc, &t[i], e->str);
        }
        if (e->type == SB_JSON_NUMBER) {
            int64_t v = 0;
            int rc = sb_json_int64(doc, &t[i], &v);
            bad += rc != e->ival_rc || (rc == 0 && v != e->ival);
        }
        if (e->type == SB_JSON_OBJECT && e->size > 0)
            bad += sb_json_get(doc, t, (int)i, g->ex[i + 1].str) !=
                   expected_get(g, i, g->ex[i + 1].str);
    }
    return bad;
}

static void test_round_trip(void)
{
    static struct gen g;
    static char doc[1 << 18];
    static struct sb_json_tok t[RT_MAX];
    struct sb_json_limits lim = {RT_MAX, 16};
    int bad = 0, docs = 0;
    g.r.s = 0x9E3779B97F4A7C15ULL;
    for (int iter = 0; iter < 3000; iter++) {
        g.n = 0;
        sb_json_writer_init(&g.w, doc, sizeof doc);
        gen_value(&g, 0);
        ssize_t len = sb_json_finish(&g.w);
        CHECK(len > 0);
        if (len <= 0)
            return;
        ssize_t n = sb_json_parse(doc, (size_t)len, &lim, t);
        if (n != (ssize_t)g.n) {
            fprintf(stderr, "round trip %d: %zd tokens, want %zu: %.*s\n", iter, n, g.n, (int)len,
                    doc);
            bad++;
            continue;
        }
        int b = compare_tokens(&g, doc, t);
        if (b)
            fprintf(stderr, "round trip %d: %d mismatches: %.*s\n", iter, b, (int)len, doc);
        bad += b;
        docs++;
    }
    CHECK_INT(bad, 0);
    CHECK_INT(docs, 3000);
}

static void test_zero_writer(void)
{
    /* A writer over a zero-size buffer fails cleanly at the first byte. */
    char c = 'q';
    struct sb_json_writer w;
    sb_json_writer_init(&w, &c, 0);
    sb_json_begin_array(&w);
    CHECK_INT(sb_json_finish(&w), -ENOSPC);
    CHECK_INT(c, 'q');
}

int main(void)
{
    test_valid_documents();
    test_invalid_structure();
    test_invalid_numbers();
    test_invalid_strings();
    test_token_layout();
    test_depth_limit();
    test_token_limit();
    test_proper_prefixes();
    test_long_strings();
    test_get_and_eq();
    test_string();
    test_int64();
    test_writer_basic();
    test_writer_numbers();
    test_writer_escaping();
    test_writer_misuse();
    test_writer_no_room();
    test_round_trip();
    test_zero_writer();
    return check_done();
}
