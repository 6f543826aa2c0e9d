/*
 * The embedded history store: one append-only log per worker, <data_dir>/w<N>.log. Every
 * conversation is sequenced on one worker, so each log has one writer and needs no lock.
 *
 * Record format (integers little-endian; every record is self-delimiting and checksummed):
 *
 *   offset  size           field
 *   0       4              len         bytes of the whole record, this field included
 *   4       4              crc         CRC32C (Castagnoli) of bytes [0, 4) then [8, len)
 *   8       1              type        1 = message, 2 = conversation state, 3 = group, 4 = cursor
 *   9       1              conv_len    1 .. SB_CONV_ID_MAX
 *   10      1              device_len  0 .. SB_STORE_DEVICE_MAX
 *   11      1              system      message: bits 0-5 enum sb_store_system (0 = ordinary),
 *                                      bits 6-7 enum sb_store_body_form; others: 0
 *   12      4              body_len    0 .. SB_STORE_BODY_MAX
 *   16      8              seq         the message's sequence number; state: the last one used
 *   24      8              msg_id      state: 0
 *   32      8              ts_ms       Unix milliseconds; state: 0
 *   40      conv_len       conv
 *           device_len     device      (sender's device)
 *           1              user_len    1 .. SB_USER_ID_MAX; state: 0
 *           user_len       user        (sender)
 *           1              client_len  1 .. SB_STORE_CLIENT_ID_MAX; state: 0
 *           client_len     client id   (the sender's request id, for de-duplication)
 *           body_len       body        the body in its form (JSON text, quotes included; bytes;
 *                                      base64), as it arrived: converted only when sent
 *
 * len must equal the sum of the parts exactly, so a decoded record encodes back to the same
 * bytes. A state record (written by compaction after a conversation's messages) keeps last_seq
 * when every message of the conversation has aged out; it has no device, user, client id or body.
 *
 * A system message (membership change, rename) has the actor as user, the request id as client id
 * and its subject (a user id or the new name) as body. A group record is a whole group: seq = the
 * last seq it includes (system messages up to it are already applied), ts = creation, user = the
 * owner, body = name_len u8, name, member count u32, then per member: id_len u8, id, flags u8
 * (1 = admin). A cursor record moves a member's read cursor: user = the member, seq = read up to.
 *
 * Group commit: records appended while a worker runs one loop iteration go out in one
 * sb_worker_write (iovecs pointing at the records in memory), followed under fsync = always by
 * one fdatasync. Replies that must not leave before their records are durable are held by
 * sb_store_post_after and mailed, in order, when the fsync completed.
 *
 * Threads: sb_store_open, _replay, _rewrite and _close run on the main thread while no worker
 * runs (before sb_engine_start, after sb_engine_wait). Everything taking a struct sb_store_log
 * runs on that log's worker. The codec (sb_store_decode and friends) is pure: any thread.
 */
#ifndef SB_SERVER_STORE_H
#define SB_SERVER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/engine.h"
#include "server/ids.h"

#define SB_STORE_HEADER 40 /* bytes before the conversation id */
#define SB_STORE_DEVICE_MAX 32
#define SB_STORE_CLIENT_ID_MAX 64
#define SB_STORE_BODY_MAX (1u << 30)
#define SB_STORE_REC_MIN (SB_STORE_HEADER + 1 + 2) /* a state record of a 1-byte conv id */
#define SB_STORE_REC_MAX                                                                           \
    (SB_STORE_HEADER + SB_CONV_ID_MAX + SB_STORE_DEVICE_MAX + 2 + SB_USER_ID_MAX +                 \
     SB_STORE_CLIENT_ID_MAX + SB_STORE_BODY_MAX)

enum sb_store_type {
    SB_STORE_MESSAGE = 1,
    SB_STORE_STATE = 2,
    SB_STORE_GROUP = 3,
    SB_STORE_CURSOR = 4,
};

/* What a system message records (the values of proto/ops.h enum sb_op_system). */
enum sb_store_system {
    SB_STORE_SYS_NONE = 0,
    SB_STORE_SYS_ADDED = 1,   /* subject: the user added */
    SB_STORE_SYS_REMOVED = 2, /* subject: the user removed (actor == subject: left) */
    SB_STORE_SYS_RENAMED = 3, /* subject: the new name */
    SB_STORE_SYS_CREATED = 4, /* subject: the group's name */
};

/* A record's fields. Decoded: slices into the bytes decoded (valid while they are). */
/* The form an ordinary message's body is stored in (system messages: always 0). Records
 * written before there were forms are all JSON, which is why it is 0. */
enum sb_store_body_form {
    SB_STORE_BODY_JSON = 0,   /* a JSON string literal, quotes included */
    SB_STORE_BODY_BYTES = 1,  /* the bytes */
    SB_STORE_BODY_BASE64 = 2, /* canonical padded base64 of the bytes */
};

struct sb_store_rec {
    uint8_t type;      /* enum sb_store_type */
    uint8_t system;    /* enum sb_store_system (messages) */
    uint8_t body_form; /* enum sb_store_body_form (messages) */
    uint64_t seq, msg_id, ts_ms;
    const char *conv, *device, *user, *client_id, *body;
    size_t conv_len, device_len, user_len, client_id_len, body_len;
    /* De-duplication key: user_len, user, client_len, client id, as stored (length-prefixed,
     * so two different (user, client id) pairs never share a key). Set by decode and view. */
    const char *key;
    size_t key_len;
};

/* CRC32C of buf, continuing crc (0 to start). */
uint32_t sb_crc32c(uint32_t crc, const void *buf, size_t len);

/* Bytes r takes encoded (its fields' lengths must be in bounds). */
size_t sb_store_rec_size(const struct sb_store_rec *r);

/*
 * Encodes r into buf (cap bytes). Returns the record's length, -EINVAL when a field is out of
 * bounds (see the format), or -ENOSPC when cap is too small. r->key is ignored.
 */
ssize_t sb_store_encode(const struct sb_store_rec *r, uint8_t *buf, size_t cap);

/*
 * Decodes the record at the start of buf[0..len). Returns its length (> 0) with *out filled,
 * -EAGAIN when buf holds only a prefix of a record (a torn write when nothing follows), or
 * -EBADMSG when the bytes are not a record (length out of bounds, checksum, type or a field).
 * Does no I/O and never allocates.
 */
ssize_t sb_store_decode(const uint8_t *buf, size_t len, struct sb_store_rec *out);

/* Fills *out from a record this process encoded (no checks: trusted bytes only). */
void sb_store_view(const uint8_t *rec, struct sb_store_rec *out);

/* Fields of a trusted record, without a whole view. */
static inline uint64_t sb_store_rec_u64(const uint8_t *rec, size_t off)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | rec[off + (size_t)i];
    return v;
}

/* A record's size in bytes (its len field). */
static inline size_t sb_store_rec_size_of(const uint8_t *rec)
{
    return (size_t)rec[0] | (size_t)rec[1] << 8 | (size_t)rec[2] << 16 | (size_t)rec[3] << 24;
}

static inline uint64_t sb_store_rec_seq(const uint8_t *rec)
{
    return sb_store_rec_u64(rec, 16);
}

static inline uint64_t sb_store_rec_ts(const uint8_t *rec)
{
    return sb_store_rec_u64(rec, 32);
}

/* The de-duplication key of a trusted record (see struct sb_store_rec). */
static inline const char *sb_store_rec_key(const uint8_t *rec, size_t *len)
{
    const uint8_t *k = rec + SB_STORE_HEADER + rec[9] + rec[10];
    *len = 2u + k[0] + k[1 + k[0]];
    return (const char *)k;
}

/* ---- the logs ------------------------------------------------------------------------------ */

enum sb_store_fsync {
    SB_FSYNC_ALWAYS,   /* fdatasync every batch before its replies leave */
    SB_FSYNC_EVERYSEC, /* fdatasync at most once a second, from the flush after it is due */
    SB_FSYNC_NEVER,    /* leave it to the kernel */
};

/* A growable byte buffer (snapshots). */
struct sb_store_buf {
    uint8_t *data;
    size_t len, cap;
};

/* Appends n bytes and returns where to write them, or NULL when memory runs out. */
uint8_t *sb_store_buf_reserve(struct sb_store_buf *b, size_t n);

/*
 * Compaction asks the application for worker's live records: append the next conversations'
 * records to out (whole conversations, each one's messages in order and then its state record)
 * until out holds at least `target` bytes or none are left; set *done when none are left.
 * Mark each conversation written with `gen`: later records of a marked conversation are
 * passed to sb_store_append with that gen. A new gen starts a new pass from the first
 * conversation. Returns 0 or -ENOMEM. Runs on the worker (at start: on the main thread).
 */
typedef int (*sb_store_snapshot_cb)(void *ctx, unsigned worker, uint32_t gen,
                                    struct sb_store_buf *out, size_t target, bool *done);

/* Called for each record replayed, in log order. Returns 0 or -errno to stop the replay. */
typedef int (*sb_store_replay_cb)(void *ctx, const struct sb_store_rec *rec);

struct sb_store_config {
    const char *dir; /* created if missing */
    unsigned workers;
    enum sb_store_fsync fsync;
    uint64_t compact_min; /* a log is rewritten past 2x its live bytes and at least this */
    sb_store_snapshot_cb snapshot;
    void *snapshot_ctx;
};

struct sb_store;
struct sb_store_log;

/*
 * Opens (creates) the data directory, locks it against a second server and removes leftover
 * temporary files. Returns 0 or -errno (-EWOULDBLOCK: another process holds the lock); errors
 * are logged. Main thread.
 */
int sb_store_open(const struct sb_store_config *cfg, struct sb_store **out);

/*
 * Reads every w<N>.log of the directory (whatever N: the worker count may have changed) and
 * calls cb for each record. A log ends at its first torn or corrupt record: the file is
 * truncated there and a WARN names the file and offset. Returns the records replayed, or
 * -errno (an I/O error, or cb's). Main thread, before sb_store_rewrite.
 */
ssize_t sb_store_replay(struct sb_store *st, sb_store_replay_cb cb, void *ctx);

/*
 * Rewrites every worker's log from the snapshot callback (temporary file, fsync, rename, fsync
 * of the directory), deletes logs of workers that no longer exist, and opens the logs for
 * appending. Returns 0 or -errno (logged). Main thread, before sb_engine_start.
 */
int sb_store_rewrite(struct sb_store *st);

/*
 * After the engine stopped: writes what the workers had not written (again, when a write's
 * completion was not seen), fsyncs (unless fsync = never), closes and frees everything. Held
 * replies are dropped (free(arg)). Entries stay valid; free them with sb_store_ent_free.
 */
void sb_store_close(struct sb_store *st);

/* The log of a worker. */
struct sb_store_log *sb_store_log(struct sb_store *st, unsigned worker);

/*
 * A record in memory, owned by the application (malloc'd: sizeof + len bytes), appended to the
 * log by reference: the store links it into a batch and writes rec from there.
 */
struct sb_store_ent {
    struct sb_store_ent *next; /* the store's: batch list */
    uint32_t len;              /* bytes of rec */
    uint8_t flags;             /* the store's */
    uint8_t rec[] __attribute__((aligned(8)));
};

/*
 * Appends e (its rec encoded, len set) to the worker's log. conv_gen is the mark the snapshot
 * callback left on e's conversation (0 if none). Never fails: the write happens later, and its
 * errors are retried and logged.
 */
void sb_store_append(struct sb_store_log *log, struct sb_worker *w, struct sb_store_ent *e,
                     uint32_t conv_gen);

/* Frees an entry now, or when the write that reads it completes. Any time on its worker. */
void sb_store_ent_free(struct sb_store_ent *e);

/*
 * sb_worker_post(w, to, fn, arg) once every record appended so far is durable: at once unless
 * fsync = always and some are not. Replies held are posted in the order given. arg must be a
 * single malloc'd block (freed with free() if the store closes first). Returns 0 or -ENOMEM (then
 * the caller still owns arg).
 */
int sb_store_post_after(struct sb_store_log *log, struct sb_worker *w, unsigned to, sb_mail_cb fn,
                        void *arg);

/* Adds delta to the live bytes of the log (records compaction would keep). */
void sb_store_account(struct sb_store_log *log, int64_t delta);

/* The gen a conversation created now starts with: nonzero when a compaction already passed
 * every conversation and needs this one's records as they come. */
uint32_t sb_store_snapshot_gen(const struct sb_store_log *log);

/* Counters of a log, for tests and metrics (its worker, or the main thread when stopped). */
struct sb_store_stats {
    uint64_t bytes;       /* file size, including writes in flight */
    uint64_t live;        /* bytes compaction would keep */
    uint64_t batches;     /* writes of appended records */
    uint64_t records;     /* records appended */
    uint64_t fsyncs;      /* completed */
    uint64_t fsync_us;    /* total time of completed fsyncs, for an average */
    uint64_t compactions; /* completed at run time */
    uint64_t pending;     /* bytes appended and not yet written */
    bool compacting;
};
void sb_store_log_stats(const struct sb_store_log *log, struct sb_store_stats *out);

#endif
