/*
 * Identifiers: user ids, conversation ids, home workers and message ids.
 */
#ifndef SB_SERVER_IDS_H
#define SB_SERVER_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SB_USER_ID_MAX 64
#define SB_CONV_ID_MAX (3 + 2 * SB_USER_ID_MAX + 1) /* "dm:" a ":" b */

/* True for 1-64 bytes of [A-Za-z0-9_.@-]. (':' is reserved: it separates a dm id's parts.) */
bool sb_user_id_valid(const char *id, size_t len);

/* The worker that owns a user or a conversation: XXH3 of the id, modulo workers. */
unsigned sb_home_worker(const char *id, size_t len, unsigned workers);

/*
 * Writes the id of the direct conversation between users a and b ("dm:<lesser>:<greater>",
 * NUL-terminated) into out (SB_CONV_ID_MAX + 1 bytes). Returns its length, or -EINVAL when a
 * and b are the same user.
 */
ssize_t sb_dm_conv_id(const char *a, size_t alen, const char *b, size_t blen, char *out);

/*
 * Message ids: 41 bits of milliseconds since 2025-01-01T00:00:00Z, 11 bits of generator
 * (node x workers + worker), 12 bits of sequence within the millisecond. Time-ordered and
 * unique without coordination. One generator per worker; not thread-safe.
 */
#define SB_MSGID_EPOCH_MS 1735689600000ull

struct sb_msgid_gen {
    uint64_t last_ms;
    uint32_t seq;
    uint32_t generator; /* < 2048 */
};

/* Returns 0 or -ERANGE when generator does not fit 11 bits. */
int sb_msgid_init(struct sb_msgid_gen *g, unsigned generator);

/*
 * The next id for wall-clock time now_ms (milliseconds since the Unix epoch). If the clock went
 * back, the last time is kept; if 4,096 ids were taken this millisecond, the next millisecond's
 * ids are used (ids stay unique and ordered; they may run a little ahead of the clock).
 */
uint64_t sb_msgid_next(struct sb_msgid_gen *g, uint64_t now_ms);

/* The Unix time in milliseconds at which id was made. */
static inline uint64_t sb_msgid_time_ms(uint64_t id)
{
    return (id >> 23) + SB_MSGID_EPOCH_MS;
}

#endif
