/*
 * Table-driven settings. One table (an array of struct sb_setting ending with a zeroed entry)
 * describes every setting of a struct: its name, type, default, bounds and help. Parsing the
 * config file, the environment and the command line, validation, --help and the config dump
 * all come from that table. Precedence: defaults < file < environment < command line.
 *
 * Config file format: one "name = value" per line; '#' starts a comment; blank lines ignored;
 * values may be wrapped in double quotes. Names use underscores; on the command line
 * "--name value" accepts dashes or underscores. Environment: SWITCHBOARD_<NAME> (upper case).
 */
#ifndef SB_CORE_CONFIG_H
#define SB_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum sb_setting_type {
    SB_SET_INT,  /* int64_t */
    SB_SET_SIZE, /* uint64_t bytes; accepts K, M, G suffixes (powers of 1024) */
    SB_SET_BOOL, /* bool; on/off, true/false, yes/no, 1/0 */
    SB_SET_STR,  /* char *, heap-owned by the settings struct */
    SB_SET_ENUM, /* int index into choices */
};

struct sb_setting {
    const char *name;
    enum sb_setting_type type;
    size_t offset; /* of the field in the settings struct */
    const char *def;
    int64_t min, max;           /* bounds for INT and SIZE */
    const char *const *choices; /* NULL-terminated names for ENUM */
    const char *help;
};

/* Fills every field of obj with its default. Returns 0 or -errno (a bad default is a bug). */
int sb_config_defaults(const struct sb_setting *table, void *obj);

/*
 * Sets one setting from text. Returns 0, -ENOENT for an unknown name, -EINVAL for a value that
 * does not parse, -ERANGE for one out of bounds; err (errlen bytes) gets a sentence for the user.
 */
int sb_config_set(const struct sb_setting *table, void *obj, const char *name, const char *value,
                  char *err, size_t errlen);

/* Reads a config file. Errors as sb_config_set, plus -errno from open; err names file:line. */
int sb_config_load_file(const struct sb_setting *table, void *obj, const char *path, char *err,
                        size_t errlen);

/* Applies every SWITCHBOARD_<NAME> variable that is set. Errors as sb_config_set. */
int sb_config_load_env(const struct sb_setting *table, void *obj, char *err, size_t errlen);

/* Frees the strings of obj. */
void sb_config_free(const struct sb_setting *table, void *obj);

/* Prints "--name VALUE  help (default: x)" for each setting. */
void sb_config_print_help(const struct sb_setting *table, FILE *out);

/* Prints the effective settings in config-file syntax. */
void sb_config_dump(const struct sb_setting *table, const void *obj, FILE *out);

/* Finds a setting by name (dashes and underscores are the same). NULL when unknown. */
const struct sb_setting *sb_config_find(const struct sb_setting *table, const char *name);

#endif
