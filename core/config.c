#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char *const bool_true[] = {"on", "true", "yes", "1", NULL};
static const char *const bool_false[] = {"off", "false", "no", "0", NULL};

static bool name_eq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char ca = *a == '-' ? '_' : *a, cb = *b == '-' ? '_' : *b;
        if (ca != cb)
            return false;
    }
    return *a == *b;
}

const struct sb_setting *sb_config_find(const struct sb_setting *table, const char *name)
{
    for (const struct sb_setting *s = table; s->name; s++) {
        if (name_eq(s->name, name))
            return s;
    }
    return NULL;
}

static int index_of(const char *const *list, const char *v)
{
    for (int i = 0; list[i]; i++) {
        if (strcasecmp(list[i], v) == 0)
            return i;
    }
    return -1;
}

static int parse_number(const struct sb_setting *s, const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (end == v || errno)
        return -EINVAL;
    if (s->type == SB_SET_SIZE && *end) {
        int shift = 0;
        switch (toupper((unsigned char)*end)) {
        case 'K':
            shift = 10;
            break;
        case 'M':
            shift = 20;
            break;
        case 'G':
            shift = 30;
            break;
        default:
            return -EINVAL;
        }
        end++;
        if (*end == 'B' || *end == 'b')
            end++;
        if (n < 0 || n > (INT64_MAX >> shift))
            return -ERANGE;
        n <<= shift;
    }
    if (*end)
        return -EINVAL;
    *out = n;
    return 0;
}

static int set_value(const struct sb_setting *s, void *obj, const char *v, char *err, size_t errlen)
{
    char *field = (char *)obj + s->offset;
    int64_t n;
    int r, i;
    switch (s->type) {
    case SB_SET_INT:
    case SB_SET_SIZE:
        r = parse_number(s, v, &n);
        if (r == 0 && (n < s->min || n > s->max))
            r = -ERANGE;
        if (r < 0) {
            snprintf(err, errlen, "%s: \"%s\" is not %s between %" PRId64 " and %" PRId64, s->name,
                     v, s->type == SB_SET_SIZE ? "a size" : "an integer", s->min, s->max);
            return r;
        }
        if (s->type == SB_SET_INT)
            memcpy(field, &n, sizeof(n));
        else
            memcpy(field, &(uint64_t){(uint64_t)n}, sizeof(uint64_t));
        return 0;
    case SB_SET_BOOL:
        if (index_of(bool_true, v) >= 0)
            *(bool *)field = true;
        else if (index_of(bool_false, v) >= 0)
            *(bool *)field = false;
        else {
            snprintf(err, errlen, "%s: \"%s\" is not on/off", s->name, v);
            return -EINVAL;
        }
        return 0;
    case SB_SET_STR: {
        char *copy = strdup(v);
        if (!copy)
            return -ENOMEM;
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    case SB_SET_ENUM:
        i = index_of(s->choices, v);
        if (i < 0) {
            int k = snprintf(err, errlen, "%s: \"%s\" is not one of", s->name, v);
            for (int j = 0; s->choices[j] && k > 0 && (size_t)k < errlen; j++)
                k += snprintf(err + k, errlen - (size_t)k, " %s", s->choices[j]);
            return -EINVAL;
        }
        *(int *)field = i;
        return 0;
    }
    return -EINVAL;
}

int sb_config_set(const struct sb_setting *table, void *obj, const char *name, const char *value,
                  char *err, size_t errlen)
{
    const struct sb_setting *s = sb_config_find(table, name);
    if (!s) {
        snprintf(err, errlen, "unknown setting \"%s\" (see --help)", name);
        return -ENOENT;
    }
    return set_value(s, obj, value, err, errlen);
}

int sb_config_defaults(const struct sb_setting *table, void *obj)
{
    char err[256];
    for (const struct sb_setting *s = table; s->name; s++) {
        int r = set_value(s, obj, s->def, err, sizeof(err));
        if (r < 0)
            return r;
    }
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

int sb_config_load_file(const struct sb_setting *table, void *obj, const char *path, char *err,
                        size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int r = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(-r));
        return r;
    }
    char line[1024], msg[256];
    int lineno = 0, r = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        /* A '#' starts a comment, except inside a double-quoted value. */
        bool quoted = false;
        for (char *p = line; *p; p++) {
            if (*p == '"')
                quoted = !quoted;
            else if (*p == '#' && !quoted) {
                *p = '\0';
                break;
            }
        }
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected \"name = value\"", path, lineno);
            r = -EINVAL;
            break;
        }
        *eq = '\0';
        char *name = trim(s), *value = trim(eq + 1);
        size_t vlen = strlen(value);
        if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
            value[vlen - 1] = '\0';
            value++;
        }
        r = sb_config_set(table, obj, name, value, msg, sizeof(msg));
        if (r < 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
            break;
        }
    }
    fclose(f);
    return r;
}

int sb_config_load_env(const struct sb_setting *table, void *obj, char *err, size_t errlen)
{
    for (const struct sb_setting *s = table; s->name; s++) {
        char var[96] = "SWITCHBOARD_";
        size_t k = strlen(var);
        for (const char *p = s->name; *p && k + 1 < sizeof(var); p++)
            var[k++] = (char)toupper((unsigned char)*p);
        var[k] = '\0';
        const char *v = getenv(var);
        if (!v)
            continue;
        int r = set_value(s, obj, v, err, errlen);
        if (r < 0)
            return r;
    }
    return 0;
}

void sb_config_free(const struct sb_setting *table, void *obj)
{
    for (const struct sb_setting *s = table; s->name; s++) {
        if (s->type == SB_SET_STR) {
            char **field = (char **)((char *)obj + s->offset);
            free(*field);
            *field = NULL;
        }
    }
}

static void format_value(const struct sb_setting *s, const void *obj, char *buf, size_t len)
{
    const char *field = (const char *)obj + s->offset;
    int64_t n;
    uint64_t u;
    switch (s->type) {
    case SB_SET_INT:
        memcpy(&n, field, sizeof(n));
        snprintf(buf, len, "%" PRId64, n);
        break;
    case SB_SET_SIZE:
        memcpy(&u, field, sizeof(u));
        snprintf(buf, len, "%" PRIu64, u);
        break;
    case SB_SET_BOOL:
        snprintf(buf, len, "%s", *(const bool *)field ? "on" : "off");
        break;
    case SB_SET_STR:
        /* Quoted, so that '#' and surrounding spaces survive a round trip through a file. */
        snprintf(buf, len, "\"%s\"", *(char *const *)field ? *(char *const *)field : "");
        break;
    case SB_SET_ENUM:
        snprintf(buf, len, "%s", s->choices[*(const int *)field]);
        break;
    }
}

void sb_config_print_help(const struct sb_setting *table, FILE *out)
{
    for (const struct sb_setting *s = table; s->name; s++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s", s->name);
        for (char *p = flag + 2; *p; p++)
            *p = *p == '_' ? '-' : *p;
        fprintf(out, "  %-28s %s (default: %s)\n", flag, s->help, *s->def ? s->def : "\"\"");
    }
}

void sb_config_dump(const struct sb_setting *table, const void *obj, FILE *out)
{
    for (const struct sb_setting *s = table; s->name; s++) {
        char v[256];
        format_value(s, obj, v, sizeof(v));
        fprintf(out, "%s = %s\n", s->name, v);
    }
}
