/*
 * Unit tests for core/config: a small settings table of every type, run through defaults,
 * sb_config_set, config files, the environment and the dump; then the server's real table.
 * The suite runs under ASan/LSan in CI, so a string the module forgets to free fails it.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "core/config.h"
#include "server/settings.h"

struct opts {
    int64_t count;
    int64_t offset_ms;
    uint64_t buffer_size;
    bool verbose;
    bool quiet;
    char *label;
    char *note;
    int mode;
};

#define F(field) offsetof(struct opts, field)

static const char *const modes[] = {"fast", "safe", "paranoid", NULL};

static const struct sb_setting table[] = {
    {"count", SB_SET_INT, F(count), "10", 1, 1000, NULL, "how many"},
    {"offset_ms", SB_SET_INT, F(offset_ms), "-5", -100, 100, NULL, "a signed offset"},
    {"buffer_size", SB_SET_SIZE, F(buffer_size), "16K", 512, 1073741824, NULL, "bytes"},
    {"verbose", SB_SET_BOOL, F(verbose), "off", 0, 0, NULL, "say more"},
    {"quiet", SB_SET_BOOL, F(quiet), "yes", 0, 0, NULL, "say less"},
    {"label", SB_SET_STR, F(label), "alpha", 0, 0, NULL, "a name"},
    {"note", SB_SET_STR, F(note), "", 0, 0, NULL, "free text"},
    {"mode", SB_SET_ENUM, F(mode), "safe", 0, 0, modes, "how careful"},
    {0},
};

static const char *const env_vars[] = {
    "SWITCHBOARD_COUNT", "SWITCHBOARD_OFFSET_MS", "SWITCHBOARD_BUFFER_SIZE", "SWITCHBOARD_VERBOSE",
    "SWITCHBOARD_QUIET", "SWITCHBOARD_LABEL",     "SWITCHBOARD_NOTE",        "SWITCHBOARD_MODE",
};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++)
        unsetenv(env_vars[i]);
}

/* A zeroed struct with the defaults applied: the state every test starts from. */
static void fresh(struct opts *o)
{
    memset(o, 0, sizeof(*o));
    CHECK_INT(sb_config_defaults(table, o), 0);
}

/* Sets name to value and returns the result; err is cleared first. */
static int set(struct opts *o, const char *name, const char *value, char *err, size_t errlen)
{
    err[0] = '\0';
    return sb_config_set(table, o, name, value, err, errlen);
}

/* Writes text to a new temporary file; path receives its name. */
static void write_temp(char path[64], const char *text)
{
    snprintf(path, 64, "/tmp/sb-test-config-XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    size_t n = strlen(text);
    CHECK_INT(write(fd, text, n), (ssize_t)n);
    close(fd);
}

static bool contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

static void test_defaults(void)
{
    struct opts o;
    fresh(&o);
    CHECK_INT(o.count, 10);
    CHECK_INT(o.offset_ms, -5);
    CHECK_INT(o.buffer_size, 16384);
    CHECK(!o.verbose);
    CHECK(o.quiet);
    CHECK_STR(o.label, "alpha");
    CHECK_STR(o.note, "");
    CHECK_INT(o.mode, 1);
    /* Applying the defaults again replaces the strings without leaking the old ones. */
    char err[128];
    CHECK_INT(set(&o, "label", "beta", err, sizeof(err)), 0);
    CHECK_INT(sb_config_defaults(table, &o), 0);
    CHECK_STR(o.label, "alpha");
    sb_config_free(table, &o);
    CHECK(o.label == NULL);
    CHECK(o.note == NULL);
    /* Freeing twice is harmless: the pointers were reset. */
    sb_config_free(table, &o);
}

static void test_int(void)
{
    struct opts o;
    char err[256];
    fresh(&o);
    CHECK_INT(set(&o, "count", "42", err, sizeof(err)), 0);
    CHECK_INT(o.count, 42);
    CHECK_INT(set(&o, "count", "1", err, sizeof(err)), 0);
    CHECK_INT(set(&o, "count", "1000", err, sizeof(err)), 0);
    CHECK_INT(o.count, 1000);
    CHECK_INT(set(&o, "offset_ms", "-100", err, sizeof(err)), 0);
    CHECK_INT(o.offset_ms, -100);

    CHECK_INT(set(&o, "count", "0", err, sizeof(err)), -ERANGE);
    CHECK(contains(err, "count"));
    CHECK(contains(err, "\"0\""));
    CHECK(contains(err, "between 1 and 1000"));
    CHECK_INT(set(&o, "count", "1001", err, sizeof(err)), -ERANGE);
    CHECK_INT(set(&o, "offset_ms", "-101", err, sizeof(err)), -ERANGE);
    CHECK(contains(err, "between -100 and 100"));
    CHECK_INT(o.count, 1000); /* a refused value leaves the old one */
    CHECK_INT(o.offset_ms, -100);

    static const char *const bad[] = {"", "abc", "12abc", "1.5", "0x10", "5K", "7 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_INT(set(&o, "count", bad[i], err, sizeof(err)), -EINVAL);
        CHECK(contains(err, "count") && contains(err, "is not an integer"));
    }
    /* Beyond int64_t: refused either way (strtoll overflow reports it as unparseable). */
    int r = set(&o, "count", "99999999999999999999", err, sizeof(err));
    CHECK(r == -EINVAL || r == -ERANGE);
    CHECK_INT(o.count, 1000);
    sb_config_free(table, &o);
}

static void test_size(void)
{
    static const struct {
        const char *text;
        uint64_t bytes;
    } good[] = {
        {"512", 512},      {"16K", 16384},        {"16k", 16384},      {"16KB", 16384},
        {"16kb", 16384},   {"2M", 2u << 20},      {"3m", 3u << 20},    {"1G", 1u << 30},
        {"1GB", 1u << 30}, {"1048576", 1u << 20}, {"1024M", 1u << 30},
    };
    struct opts o;
    char err[256];
    fresh(&o);
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        CHECK_INT(set(&o, "buffer_size", good[i].text, err, sizeof(err)), 0);
        CHECK_INT(o.buffer_size, good[i].bytes);
    }
    static const char *const too_big_or_small[] = {"511", "2G", "1025M",
                                                   "-1K", "-1", "9223372036854775807K"};
    for (size_t i = 0; i < sizeof(too_big_or_small) / sizeof(too_big_or_small[0]); i++) {
        CHECK_INT(set(&o, "buffer_size", too_big_or_small[i], err, sizeof(err)), -ERANGE);
        CHECK(contains(err, "buffer_size") && contains(err, "is not a size"));
    }
    static const char *const bad[] = {"", "K", "1T", "1.5M", "4 M", "1KiB", "1MBB", "M1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_INT(set(&o, "buffer_size", bad[i], err, sizeof(err)), -EINVAL);
    CHECK_INT(o.buffer_size, 1u << 30);
    sb_config_free(table, &o);
}

static void test_bool(void)
{
    static const char *const yes[] = {"on", "true", "yes", "1", "ON", "True", "YES"};
    static const char *const no[] = {"off", "false", "no", "0", "OFF", "False", "No"};
    struct opts o;
    char err[256];
    fresh(&o);
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        o.verbose = false;
        CHECK_INT(set(&o, "verbose", yes[i], err, sizeof(err)), 0);
        CHECK(o.verbose);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        o.verbose = true;
        CHECK_INT(set(&o, "verbose", no[i], err, sizeof(err)), 0);
        CHECK(!o.verbose);
    }
    static const char *const bad[] = {"", "maybe", "2", "y", "onn", " on"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_INT(set(&o, "verbose", bad[i], err, sizeof(err)), -EINVAL);
        CHECK(contains(err, "verbose") && contains(err, "on/off"));
    }
    CHECK(!o.verbose);
    sb_config_free(table, &o);
}

static void test_str(void)
{
    struct opts o;
    char err[256];
    fresh(&o);
    char value[] = "hello world";
    CHECK_INT(set(&o, "label", value, err, sizeof(err)), 0);
    /* The struct owns a copy, not the caller's buffer. */
    value[0] = 'J';
    CHECK_STR(o.label, "hello world");
    CHECK(o.label != value);
    CHECK_INT(set(&o, "label", "", err, sizeof(err)), 0);
    CHECK_STR(o.label, "");
    for (int i = 0; i < 100; i++)
        CHECK_INT(set(&o, "note", "replaced many times", err, sizeof(err)), 0);
    CHECK_STR(o.note, "replaced many times");
    sb_config_free(table, &o);
}

static void test_enum(void)
{
    struct opts o;
    char err[256];
    fresh(&o);
    CHECK_INT(set(&o, "mode", "fast", err, sizeof(err)), 0);
    CHECK_INT(o.mode, 0);
    CHECK_INT(set(&o, "mode", "PARANOID", err, sizeof(err)), 0);
    CHECK_INT(o.mode, 2);
    CHECK_INT(set(&o, "mode", "slow", err, sizeof(err)), -EINVAL);
    CHECK(contains(err, "mode") && contains(err, "\"slow\""));
    CHECK(contains(err, "fast safe paranoid"));
    CHECK_INT(set(&o, "mode", "", err, sizeof(err)), -EINVAL);
    CHECK_INT(o.mode, 2);
    /* A short error buffer still gets a terminated, truncated message. */
    char tiny[12];
    memset(tiny, 'x', sizeof(tiny));
    CHECK_INT(set(&o, "mode", "slow", tiny, sizeof(tiny)), -EINVAL);
    CHECK(memchr(tiny, '\0', sizeof(tiny)) != NULL);
    sb_config_free(table, &o);
}

static void test_names(void)
{
    struct opts o;
    char err[256];
    fresh(&o);
    CHECK_INT(set(&o, "nope", "1", err, sizeof(err)), -ENOENT);
    CHECK(contains(err, "unknown setting") && contains(err, "\"nope\""));
    CHECK_INT(set(&o, "coun", "1", err, sizeof(err)), -ENOENT);
    CHECK_INT(set(&o, "count_", "1", err, sizeof(err)), -ENOENT);
    CHECK_INT(set(&o, "", "1", err, sizeof(err)), -ENOENT);

    /* Dashes and underscores are the same character in names, wherever they appear. */
    CHECK(sb_config_find(table, "buffer-size") == &table[2]);
    CHECK(sb_config_find(table, "offset_ms") == &table[1]);
    CHECK(sb_config_find(table, "offset-ms") == &table[1]);
    CHECK(sb_config_find(table, "offset") == NULL);
    CHECK_INT(set(&o, "buffer-size", "1M", err, sizeof(err)), 0);
    CHECK_INT(o.buffer_size, 1u << 20);
    CHECK_INT(set(&o, "offset-ms", "7", err, sizeof(err)), 0);
    CHECK_INT(o.offset_ms, 7);
    sb_config_free(table, &o);
}

static void test_file(void)
{
    char path[64];
    write_temp(path, "# a comment line\n"
                     "\n"
                     "   \t \n"
                     "count = 7\n"
                     "  offset_ms=-3   # a trailing comment\n"
                     "buffer_size = \"2M\"\n"
                     "\tverbose\t=\tyes\t\n"
                     "label = \"  spaced out  \"\n"
                     "note = a=b c\n"
                     "mode = fast\r\n"
                     "# the end, without a newline after the last line\n"
                     "quiet = off");
    struct opts o;
    char err[256] = "";
    fresh(&o);
    CHECK_INT(sb_config_load_file(table, &o, path, err, sizeof(err)), 0);
    CHECK_STR(err, "");
    CHECK_INT(o.count, 7);
    CHECK_INT(o.offset_ms, -3);
    CHECK_INT(o.buffer_size, 2u << 20);
    CHECK(o.verbose);
    CHECK(!o.quiet);
    CHECK_STR(o.label, "  spaced out  "); /* quotes keep the spaces inside them */
    CHECK_STR(o.note, "a=b c");           /* only the first '=' separates */
    CHECK_INT(o.mode, 0);
    unlink(path);

    /* Quotes: an empty quoted value, a lone quote, an unbalanced pair. */
    write_temp(path, "label = \"\"\nnote = \"\n");
    CHECK_INT(sb_config_load_file(table, &o, path, err, sizeof(err)), 0);
    CHECK_STR(o.label, "");
    CHECK_STR(o.note, "\"");
    unlink(path);

    /* An empty file changes nothing. */
    write_temp(path, "");
    CHECK_INT(sb_config_load_file(table, &o, path, err, sizeof(err)), 0);
    CHECK_INT(o.count, 7);
    unlink(path);
    sb_config_free(table, &o);
}

/* Loads text as a config file into fresh options; returns the result, err names file:line. */
static int load_text(const char *text, char *err, size_t errlen, char path[64])
{
    struct opts o;
    fresh(&o);
    write_temp(path, text);
    err[0] = '\0';
    int r = sb_config_load_file(table, &o, path, err, errlen);
    unlink(path);
    sb_config_free(table, &o);
    return r;
}

static void test_file_errors(void)
{
    char path[64], err[256], want[96];

    CHECK_INT(load_text("count = 5\n\njust some words\n", err, sizeof(err), path), -EINVAL);
    snprintf(want, sizeof(want), "%s:3: ", path);
    CHECK(strncmp(err, want, strlen(want)) == 0);
    CHECK(contains(err, "name = value"));

    CHECK_INT(load_text("# first\ncount = many\n", err, sizeof(err), path), -EINVAL);
    snprintf(want, sizeof(want), "%s:2: ", path);
    CHECK(strncmp(err, want, strlen(want)) == 0);
    CHECK(contains(err, "count") && contains(err, "\"many\""));

    CHECK_INT(load_text("count = 5000\n", err, sizeof(err), path), -ERANGE);
    snprintf(want, sizeof(want), "%s:1: ", path);
    CHECK(strncmp(err, want, strlen(want)) == 0);

    CHECK_INT(load_text("\n\n\n\nnot_a_setting = 1\n", err, sizeof(err), path), -ENOENT);
    snprintf(want, sizeof(want), "%s:5: ", path);
    CHECK(strncmp(err, want, strlen(want)) == 0);
    CHECK(contains(err, "not_a_setting"));

    CHECK_INT(load_text("= 5\n", err, sizeof(err), path), -ENOENT);
    CHECK_INT(load_text("verbose = sometimes\n", err, sizeof(err), path), -EINVAL);

    /* A missing file: -errno from open, and the message names the file. */
    struct opts o;
    fresh(&o);
    const char *missing = "/tmp/sb-test-config-does-not-exist/x.conf";
    CHECK_INT(sb_config_load_file(table, &o, missing, err, sizeof(err)), -ENOENT);
    CHECK(contains(err, missing));
    sb_config_free(table, &o);
}

static void test_env(void)
{
    char path[64], err[256];
    clear_env();
    write_temp(path, "count = 7\nlabel = from_file\nmode = fast\n");
    struct opts o;
    fresh(&o);
    CHECK_INT(sb_config_load_file(table, &o, path, err, sizeof(err)), 0);
    unlink(path);
    setenv("SWITCHBOARD_COUNT", "9", 1);
    setenv("SWITCHBOARD_LABEL", "from_env", 1);
    setenv("SWITCHBOARD_BUFFER_SIZE", "1M", 1);
    setenv("SWITCHBOARD_OFFSET_MS", "-1", 1);
    setenv("SWITCHBOARD_VERBOSE", "true", 1);
    CHECK_INT(sb_config_load_env(table, &o, err, sizeof(err)), 0);
    CHECK_INT(o.count, 9);              /* environment beats the file */
    CHECK_STR(o.label, "from_env");     /* and frees the file's string */
    CHECK_INT(o.buffer_size, 1u << 20); /* and the default */
    CHECK_INT(o.offset_ms, -1);
    CHECK(o.verbose);
    CHECK_INT(o.mode, 0); /* unset variables leave the file's value */
    /* A command-line flag comes last and beats the environment. */
    CHECK_INT(set(&o, "count", "11", err, sizeof(err)), 0);
    CHECK_INT(o.count, 11);

    /* An empty variable is a value like any other. */
    setenv("SWITCHBOARD_LABEL", "", 1);
    CHECK_INT(sb_config_load_env(table, &o, err, sizeof(err)), 0);
    CHECK_STR(o.label, "");

    /* A bad value is reported with the setting's name. */
    setenv("SWITCHBOARD_VERBOSE", "perhaps", 1);
    err[0] = '\0';
    CHECK_INT(sb_config_load_env(table, &o, err, sizeof(err)), -EINVAL);
    CHECK(contains(err, "verbose") && contains(err, "\"perhaps\""));
    setenv("SWITCHBOARD_VERBOSE", "on", 1);
    setenv("SWITCHBOARD_COUNT", "0", 1);
    CHECK_INT(sb_config_load_env(table, &o, err, sizeof(err)), -ERANGE);
    CHECK(contains(err, "count"));
    /* Only the upper-case name is read. */
    clear_env();
    int64_t before = o.count;
    setenv("switchboard_count", "5", 1);
    setenv("SWITCHBOARD_count", "5", 1);
    CHECK_INT(sb_config_load_env(table, &o, err, sizeof(err)), 0);
    CHECK_INT(o.count, before);
    unsetenv("switchboard_count");
    unsetenv("SWITCHBOARD_count");
    sb_config_free(table, &o);
}

/* Dumps o, loads the dump as a config file into fresh options and compares every field. */
static void check_round_trip(const struct opts *o)
{
    char path[64];
    snprintf(path, sizeof(path), "/tmp/sb-test-config-XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    FILE *f = fdopen(fd, "w");
    sb_config_dump(table, o, f);
    fclose(f);
    struct opts back;
    char err[256] = "";
    fresh(&back);
    /* Start from other values, so the comparison shows the file really set each one. */
    back.count = 1;
    back.verbose = !o->verbose;
    CHECK_INT(sb_config_load_file(table, &back, path, err, sizeof(err)), 0);
    CHECK_STR(err, "");
    unlink(path);
    CHECK_INT(back.count, o->count);
    CHECK_INT(back.offset_ms, o->offset_ms);
    CHECK_INT(back.buffer_size, o->buffer_size);
    CHECK_INT(back.verbose, o->verbose);
    CHECK_INT(back.quiet, o->quiet);
    CHECK_STR(back.label, o->label);
    CHECK_STR(back.note, o->note);
    CHECK_INT(back.mode, o->mode);
    sb_config_free(table, &back);
}

static void test_dump(void)
{
    struct opts o;
    char err[256];
    fresh(&o);
    check_round_trip(&o);

    CHECK_INT(set(&o, "count", "999", err, sizeof(err)), 0);
    CHECK_INT(set(&o, "offset_ms", "-77", err, sizeof(err)), 0);
    CHECK_INT(set(&o, "buffer_size", "3G", err, sizeof(err)), -ERANGE);
    CHECK_INT(set(&o, "buffer_size", "768M", err, sizeof(err)), 0);
    CHECK_INT(set(&o, "verbose", "yes", err, sizeof(err)), 0);
    CHECK_INT(set(&o, "quiet", "no", err, sizeof(err)), 0);
    CHECK_INT(set(&o, "label", "two words", err, sizeof(err)), 0);
    CHECK_INT(set(&o, "note", "[::1]:8080", err, sizeof(err)), 0);
    CHECK_INT(set(&o, "mode", "paranoid", err, sizeof(err)), 0);
    check_round_trip(&o);

    /* The dump is one "name = value" line per setting, in table order. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    sb_config_dump(table, &o, f);
    fclose(f);
    CHECK_STR(text, "count = 999\n"
                    "offset_ms = -77\n"
                    "buffer_size = 805306368\n"
                    "verbose = on\n"
                    "quiet = off\n"
                    "label = \"two words\"\n"
                    "note = \"[::1]:8080\"\n"
                    "mode = paranoid\n");
    free(text);
    sb_config_free(table, &o);
}

/*
 * Strings the file syntax treats specially: '#', surrounding whitespace, surrounding quotes.
 * The dump quotes strings, and a '#' inside quotes is not a comment.
 */
static void test_dump_special_strings(void)
{
    struct opts o;
    char err[256], path[64];
    fresh(&o);
    CHECK_INT(set(&o, "label", "room #5", err, sizeof(err)), 0);
    CHECK_INT(set(&o, "note", "  padded  ", err, sizeof(err)), 0);
    check_round_trip(&o);
    sb_config_free(table, &o);

    fresh(&o);
    write_temp(path, "label = \"room #5\"\n");
    CHECK_INT(sb_config_load_file(table, &o, path, err, sizeof(err)), 0);
    unlink(path);
    CHECK_STR(o.label, "room #5");
    sb_config_free(table, &o);
}

static void test_help(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    sb_config_print_help(table, f);
    fclose(f);
    CHECK(contains(text, "--buffer-size"));
    CHECK(contains(text, "--offset-ms"));
    CHECK(!contains(text, "--offset_ms"));
    CHECK(contains(text, "bytes (default: 16K)"));
    CHECK(contains(text, "free text (default: \"\")"));
    free(text);
}

/* The server's own table: its defaults load, and every one lies within its bounds. */
static void test_server_table(void)
{
    struct sb_settings st;
    memset(&st, 0, sizeof(st));
    CHECK_INT(sb_config_defaults(sb_settings_table, &st), 0);
    size_t n = 0;
    for (const struct sb_setting *s = sb_settings_table; s->name; s++, n++) {
        const char *field = (const char *)&st + s->offset;
        CHECK(s->help != NULL && s->def != NULL);
        CHECK(s->offset < sizeof(st));
        /* Names are lower case with underscores, so SWITCHBOARD_<NAME> and --name map back. */
        CHECK(strspn(s->name, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(s->name));
        CHECK(sb_config_find(sb_settings_table, s->name) == s);
        if (s->type == SB_SET_INT || s->type == SB_SET_SIZE) {
            int64_t v;
            memcpy(&v, field, sizeof(v));
            CHECK(s->min <= s->max);
            if (v < s->min || v > s->max)
                CHECK_FAIL_("%s: default %" PRId64 " outside [%" PRId64 ", %" PRId64 "]", s->name,
                            v, s->min, s->max);
            else
                check_passed++;
        } else if (s->type == SB_SET_ENUM) {
            int k = 0;
            while (s->choices[k])
                k++;
            int v;
            memcpy(&v, field, sizeof(v));
            CHECK(v >= 0 && v < k);
        }
    }
    CHECK(n > 0);
    CHECK_STR(st.listen, "127.0.0.1:8080");
    CHECK_INT(st.workers, 0);
    CHECK_INT(st.max_message_size, 4u << 20);
    CHECK(st.echo);
    /* The engine wants a power of two here. */
    CHECK(st.recv_buffers > 0 && (st.recv_buffers & (st.recv_buffers - 1)) == 0);

    /* `switchboard config` output, read back, gives the same settings. */
    char path[64];
    snprintf(path, sizeof(path), "/tmp/sb-test-config-XXXXXX");
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    sb_config_dump(sb_settings_table, &st, f);
    fclose(f);
    struct sb_settings back;
    char err[256];
    memset(&back, 0, sizeof(back));
    CHECK_INT(sb_config_defaults(sb_settings_table, &back), 0);
    CHECK_INT(sb_config_set(sb_settings_table, &back, "workers", "3", err, sizeof(err)), 0);
    CHECK_INT(sb_config_load_file(sb_settings_table, &back, path, err, sizeof(err)), 0);
    unlink(path);
    CHECK_INT(back.workers, st.workers);
    CHECK_STR(back.listen, st.listen);
    CHECK_INT(back.send_queue_limit, st.send_queue_limit);
    CHECK_INT(back.log_level, st.log_level);
    sb_config_free(sb_settings_table, &back);
    sb_config_free(sb_settings_table, &st);
    CHECK(st.listen == NULL);
}

int main(void)
{
    clear_env();
    test_defaults();
    test_int();
    test_size();
    test_bool();
    test_str();
    test_enum();
    test_names();
    test_file();
    test_file_errors();
    test_env();
    test_dump();
    test_dump_special_strings();
    test_help();
    test_server_table();
    return check_done();
}
