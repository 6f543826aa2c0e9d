/*
 * The embedded history store (format and rules in store.h): the record codec, replay and the
 * start-up rewrite on the main thread, and on each worker the append path (group commit) and
 * the run-time compaction.
 */
#include "server/store.h"

#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "server/metrics.h"

/* ---- CRC32C (Castagnoli, reflected polynomial 0x82F63B78), slicing by 8 ----------------- */

static uint32_t crc_table[8][256];

/* Before main: the table is read by every thread and never written again. */
__attribute__((constructor)) static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            uint32_t prev = crc_table[t - 1][i];
            crc_table[t][i] = (prev >> 8) ^ crc_table[0][prev & 0xff];
        }
    }
}

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

uint32_t sb_crc32c(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint32_t c = ~crc;
    while (len >= 8) {
        uint64_t v = load_le64(p) ^ c;
        c = crc_table[7][v & 0xff] ^ crc_table[6][(v >> 8) & 0xff] ^
            crc_table[5][(v >> 16) & 0xff] ^ crc_table[4][(v >> 24) & 0xff] ^
            crc_table[3][(v >> 32) & 0xff] ^ crc_table[2][(v >> 40) & 0xff] ^
            crc_table[1][(v >> 48) & 0xff] ^ crc_table[0][v >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return ~c;
}

/* ---- the record codec ---------------------------------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t rec_crc(const uint8_t *rec, size_t len)
{
    return sb_crc32c(sb_crc32c(0, rec, 4), rec + 8, len - 8);
}

/* The bounds of the format, per type. */
static bool rec_valid(const struct sb_store_rec *r)
{
    if (r->conv_len < 1 || r->conv_len > SB_CONV_ID_MAX)
        return false;
    if (r->type != SB_STORE_MESSAGE && (r->system != 0 || r->body_form != 0))
        return false;
    if (r->system != SB_STORE_SYS_NONE && r->body_form != 0)
        return false;
    bool user = r->user_len >= 1 && r->user_len <= SB_USER_ID_MAX;
    switch (r->type) {
    case SB_STORE_MESSAGE:
        return r->seq >= 1 && r->system <= SB_STORE_SYS_CREATED &&
               r->body_form <= SB_STORE_BODY_BASE64 && r->device_len <= SB_STORE_DEVICE_MAX &&
               user && r->client_id_len >= 1 && r->client_id_len <= SB_STORE_CLIENT_ID_MAX &&
               r->body_len <= SB_STORE_BODY_MAX;
    case SB_STORE_STATE:
        return r->device_len == 0 && r->user_len == 0 && r->client_id_len == 0 &&
               r->body_len == 0 && r->msg_id == 0 && r->ts_ms == 0;
    case SB_STORE_GROUP:
        return r->device_len == 0 && user && r->client_id_len == 0 && r->msg_id == 0 &&
               r->body_len >= 5 && r->body_len <= SB_STORE_BODY_MAX;
    case SB_STORE_CURSOR:
        return r->device_len == 0 && user && r->client_id_len == 0 && r->body_len == 0 &&
               r->msg_id == 0 && r->ts_ms == 0;
    default:
        return false;
    }
}

size_t sb_store_rec_size(const struct sb_store_rec *r)
{
    return SB_STORE_HEADER + r->conv_len + r->device_len + 1 + r->user_len + 1 + r->client_id_len +
           r->body_len;
}

static uint8_t *put_bytes(uint8_t *p, const char *s, size_t n)
{
    if (n)
        memcpy(p, s, n);
    return p + n;
}

ssize_t sb_store_encode(const struct sb_store_rec *r, uint8_t *buf, size_t cap)
{
    if (!rec_valid(r))
        return -EINVAL;
    size_t len = sb_store_rec_size(r);
    if (len > cap)
        return -ENOSPC;
    put_u32(buf, (uint32_t)len);
    buf[8] = r->type;
    buf[9] = (uint8_t)r->conv_len;
    buf[10] = (uint8_t)r->device_len;
    buf[11] = (uint8_t)(r->system | r->body_form << 6);
    put_u32(buf + 12, (uint32_t)r->body_len);
    put_u64(buf + 16, r->seq);
    put_u64(buf + 24, r->msg_id);
    put_u64(buf + 32, r->ts_ms);
    uint8_t *p = put_bytes(buf + SB_STORE_HEADER, r->conv, r->conv_len);
    p = put_bytes(p, r->device, r->device_len);
    *p++ = (uint8_t)r->user_len;
    p = put_bytes(p, r->user, r->user_len);
    *p++ = (uint8_t)r->client_id_len;
    p = put_bytes(p, r->client_id, r->client_id_len);
    put_bytes(p, r->body, r->body_len);
    put_u32(buf + 4, rec_crc(buf, len));
    return (ssize_t)len;
}

/* Slices the variable part of rec[0..len); false when the lengths do not add up to len. */
static bool slice_fields(const uint8_t *rec, size_t len, struct sb_store_rec *out)
{
    size_t pos = SB_STORE_HEADER;
    out->conv = (const char *)rec + pos;
    pos += out->conv_len;
    out->device = (const char *)rec + pos;
    pos += out->device_len;
    if (pos + 1 > len)
        return false;
    out->key = (const char *)rec + pos;
    out->user_len = rec[pos++];
    out->user = (const char *)rec + pos;
    pos += out->user_len;
    if (pos + 1 > len)
        return false;
    out->client_id_len = rec[pos++];
    out->client_id = (const char *)rec + pos;
    pos += out->client_id_len;
    out->key_len = (size_t)((const char *)rec + pos - out->key);
    out->body = (const char *)rec + pos;
    return pos + out->body_len == len;
}

static void read_header(const uint8_t *rec, struct sb_store_rec *out)
{
    out->type = rec[8];
    out->system = rec[11] & 0x3F;
    out->body_form = rec[11] >> 6;
    out->conv_len = rec[9];
    out->device_len = rec[10];
    out->body_len = get_u32(rec + 12);
    out->seq = load_le64(rec + 16);
    out->msg_id = load_le64(rec + 24);
    out->ts_ms = load_le64(rec + 32);
}

ssize_t sb_store_decode(const uint8_t *buf, size_t len, struct sb_store_rec *out)
{
    if (len < 8)
        return -EAGAIN;
    uint32_t n = get_u32(buf);
    if (n < SB_STORE_REC_MIN || n > SB_STORE_REC_MAX)
        return -EBADMSG;
    if (n > len)
        return -EAGAIN;
    if (get_u32(buf + 4) != rec_crc(buf, n))
        return -EBADMSG;
    struct sb_store_rec r;
    read_header(buf, &r);
    if (r.body_len > n || !slice_fields(buf, n, &r) || !rec_valid(&r))
        return -EBADMSG;
    *out = r;
    return n;
}

void sb_store_view(const uint8_t *rec, struct sb_store_rec *out)
{
    read_header(rec, out);
    slice_fields(rec, get_u32(rec), out);
}

uint8_t *sb_store_buf_reserve(struct sb_store_buf *b, size_t n)
{
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n)
            cap *= 2;
        uint8_t *data = realloc(b->data, cap);
        if (!data)
            return NULL;
        b->data = data;
        b->cap = cap;
    }
    uint8_t *p = b->data + b->len;
    b->len += n;
    return p;
}

static void buf_free(struct sb_store_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* ---- state --------------------------------------------------------------------------------- */

#define IOV_BATCH 1024         /* IOV_MAX: iovecs per write */
#define SNAP_CHUNK (256 << 10) /* bytes per compaction write at run time */
#define BOOT_CHUNK (4 << 20)   /* ... at start */
#define ERROR_EVERY_MS 1000

enum {
    ENT_PENDING = 1, /* in a batch that is not durable yet */
    ENT_DEAD = 2,    /* freed by the application: the batch frees it when done */
};

/* A reply mailed when its batch is durable. */
struct held {
    unsigned to;
    sb_mail_cb fn;
    void *arg;
};

/* Records appended together and written with one write, and the replies waiting for them. */
struct batch {
    struct sb_store_ent *head, *tail;
    uint64_t count, bytes;
    uint64_t off; /* file offset of the first byte, once submitted */
    struct held *items;
    size_t nitems, cap_items;
    struct sb_store_ent *cur; /* write progress: the first entry not wholly written */
    uint32_t cur_off;         /* bytes of cur written */
    uint64_t done;            /* bytes written */
    bool active;              /* submitted and not finished (maybe failed, to be retried) */
};

struct file_op {
    struct sb_file_op op;
    struct sb_store_log *log;
};

enum cp_phase {
    CP_SNAPSHOT, /* writing the live records, conversation by conversation */
    CP_FINAL,    /* appends held back; writing the records appended since (the tail) */
    CP_SYNC,     /* fdatasync of the new file */
    CP_DIRSYNC,  /* renamed; fsync of the directory */
};

/* A run-time rewrite of one log. */
struct compaction {
    struct file_op op;
    enum cp_phase phase;
    int fd;
    uint64_t off;              /* bytes in the new file */
    struct sb_store_buf chunk; /* being written */
    struct sb_store_buf tail;  /* records appended to conversations already written */
    size_t chunk_done;
    struct iovec iov;
    uint64_t old_bytes;
    bool snap_done, failed, busy;
};

struct sb_store_log {
    struct file_op op; /* the log's write or fsync */
    struct sb_store *st;
    unsigned id;
    int fd;
    uint64_t end; /* file size once the writes submitted complete */
    int64_t live;
    struct batch b[2];
    struct batch *open, *flight;
    struct batch covered; /* a compaction's new file holds these; waiting for its rename */
    bool busy, syncing, flush_posted, frozen, dirty, sync_armed;
    uint64_t last_sync_ms, sync_start_ns, last_error_ms;
    struct sb_worker_timer sync_timer; /* everysec: syncs a burst's tail within the second */
    uint32_t gen;
    uint64_t compact_after; /* after a failed compaction, none before end reaches this */
    struct compaction *cp;
    struct sb_store_stats stats;
    struct iovec iov[IOV_BATCH];
};

struct sb_store {
    struct sb_store_config cfg;
    char *dir;
    int dirfd, lockfd;
    struct sb_store_log **logs;
};

static const char *const fsync_names[] = {"always", "everysec", "never"};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void log_name(char *buf, size_t cap, unsigned id, bool tmp)
{
    snprintf(buf, cap, "w%u.log%s", id, tmp ? ".tmp" : "");
}

/* w<N>.log (tmp: w<N>.log.tmp) with N decimal and < 2^20; returns N or -1. */
static long parse_log_name(const char *name, bool tmp)
{
    if (name[0] != 'w' || name[1] < '0' || name[1] > '9')
        return -1;
    char *end;
    long n = strtol(name + 1, &end, 10);
    if (n >= (1L << 20) || (name[1] == '0' && end != name + 2))
        return -1;
    return strcmp(end, tmp ? ".log.tmp" : ".log") == 0 ? n : -1;
}

/* ---- batches ------------------------------------------------------------------------------- */

static void batch_push(struct batch *b, struct sb_store_ent *e)
{
    e->next = NULL;
    if (b->tail)
        b->tail->next = e;
    else
        b->head = e;
    b->tail = e;
    b->count++;
    b->bytes += e->len;
}

static int held_push(struct batch *b, unsigned to, sb_mail_cb fn, void *arg)
{
    if (b->nitems == b->cap_items) {
        size_t cap = b->cap_items ? b->cap_items * 2 : 64;
        struct held *items = realloc(b->items, cap * sizeof(*items));
        if (!items)
            return -ENOMEM;
        b->items = items;
        b->cap_items = cap;
    }
    b->items[b->nitems++] = (struct held){to, fn, arg};
    return 0;
}

/* The batch's records are durable (or never will be written by this batch): entries are the
 * application's again. */
static void batch_release_ents(struct batch *b)
{
    struct sb_store_ent *e = b->head;
    while (e) {
        struct sb_store_ent *next = e->next;
        e->flags &= (uint8_t)~ENT_PENDING;
        if (e->flags & ENT_DEAD)
            free(e);
        e = next;
    }
}

/* Empties the batch, keeping the items array. */
static void batch_reset(struct batch *b)
{
    struct held *items = b->items;
    size_t cap = b->cap_items;
    memset(b, 0, sizeof(*b));
    b->items = items;
    b->cap_items = cap;
}

static void batch_release(struct batch *b, struct sb_worker *w)
{
    batch_release_ents(b);
    for (size_t i = 0; i < b->nitems; i++) {
        struct held *h = &b->items[i];
        if (sb_worker_post(w, h->to, h->fn, h->arg) < 0) {
            sb_log(SB_LOG_WARN, -ENOMEM, "history: a reply was dropped");
            free(h->arg);
        }
    }
    batch_reset(b);
}

/* At close: nobody is left to receive the replies. */
static void batch_drop(struct batch *b)
{
    batch_release_ents(b);
    for (size_t i = 0; i < b->nitems; i++)
        free(b->items[i].arg);
    free(b->items);
    memset(b, 0, sizeof(*b));
}

/* ---- the append path (on the log's worker) ------------------------------------------------- */

static void log_kick(struct sb_store_log *log, struct sb_worker *w);
static void compact_check(struct sb_store_log *log, struct sb_worker *w);

static bool log_pending(const struct sb_store_log *log)
{
    return log->open->count || log->flight->active || log->covered.active;
}

static void log_error(struct sb_store_log *log, struct sb_worker *w, int err, const char *what)
{
    /* A disk that fails keeps failing: say so once a second, not once a batch. */
    uint64_t now = sb_worker_now_ms(w);
    if (log->last_error_ms && now - log->last_error_ms < ERROR_EVERY_MS)
        return;
    log->last_error_ms = now;
    sb_log(SB_LOG_ERROR, err, "history: w%u.log: %s failed; retrying with the next append", log->id,
           what);
}

static void flush_mail(struct sb_worker *w, void *arg)
{
    struct sb_store_log *log = arg;
    log->flush_posted = false;
    log_kick(log, w);
}

/* The flush runs once the mail already queued (this iteration's appends) has run. */
static void schedule_flush(struct sb_store_log *log, struct sb_worker *w)
{
    if (log->flush_posted || log->busy)
        return;
    if (sb_worker_post(w, sb_worker_id(w), flush_mail, log) == 0)
        log->flush_posted = true;
}

static void log_write(struct sb_store_log *log, struct sb_worker *w)
{
    struct batch *b = log->flight;
    unsigned n = 0;
    uint32_t skip = b->cur_off;
    for (struct sb_store_ent *e = b->cur; e && n < IOV_BATCH; e = e->next) {
        log->iov[n].iov_base = e->rec + skip;
        log->iov[n].iov_len = e->len - skip;
        skip = 0;
        n++;
    }
    int r = sb_worker_write(w, &log->op.op, log->fd, log->iov, n, (int64_t)(b->off + b->done));
    if (r < 0) {
        log_error(log, w, r, "write");
        return;
    }
    log->busy = true;
    log->syncing = false;
}

static bool sync_due(struct sb_store_log *log, struct sb_worker *w)
{
    const struct batch *b = log->flight;
    switch (log->st->cfg.fsync) {
    case SB_FSYNC_ALWAYS:
        return b->count > 0;
    case SB_FSYNC_EVERYSEC:
        log->dirty |= b->count > 0;
        return log->dirty && sb_worker_now_ms(w) - log->last_sync_ms >= 1000;
    case SB_FSYNC_NEVER:
        break;
    }
    return false;
}

/* Submits the fdatasync of the log's file. */
static void start_sync(struct sb_store_log *log, struct sb_worker *w)
{
    log->sync_start_ns = mono_ns();
    int r = sb_worker_fsync(w, &log->op.op, log->fd, true);
    if (r < 0) {
        log_error(log, w, r, "fsync");
        return;
    }
    log->busy = true;
    log->syncing = true;
}

static void sync_timer_fire(struct sb_worker *w, struct sb_worker_timer *t)
{
    struct sb_store_log *log =
        (struct sb_store_log *)((char *)t - offsetof(struct sb_store_log, sync_timer));
    log->sync_armed = false;
    /* A batch on its way syncs when it is written (a second has passed); else sync now. */
    if (!log->busy && !log->flight->active && log->dirty)
        start_sync(log, w);
}

/* everysec: what is written but not synced is synced within a second of the last sync, even
 * when nothing more is appended. */
static void arm_sync(struct sb_store_log *log, struct sb_worker *w)
{
    if (log->st->cfg.fsync != SB_FSYNC_EVERYSEC || !log->dirty || log->sync_armed)
        return;
    uint64_t since = sb_worker_now_ms(w) - log->last_sync_ms;
    log->sync_timer.cb = sync_timer_fire;
    log->sync_armed = true;
    sb_worker_timer_set(w, &log->sync_timer, since >= 1000 ? 10 : 1000 - since);
}

static void log_finish(struct sb_store_log *log, struct sb_worker *w)
{
    struct batch *b = log->flight;
    b->active = false;
    batch_release(b, w);
    compact_check(log, w);
    log_kick(log, w);
    arm_sync(log, w);
}

/* The batch is written: fsync it if the policy says so, else it is done. */
static void log_written(struct sb_store_log *log, struct sb_worker *w)
{
    if (sync_due(log, w))
        start_sync(log, w);
    else
        log_finish(log, w);
}

/* Continues the flight batch where it stopped (after a short write, or a failure). */
static void log_resume(struct sb_store_log *log, struct sb_worker *w)
{
    if (log->flight->done < log->flight->bytes)
        log_write(log, w);
    else
        log_written(log, w);
}

static void advance(struct batch *b, uint64_t n)
{
    b->done += n;
    while (b->cur && n >= b->cur->len - b->cur_off) {
        n -= b->cur->len - b->cur_off;
        b->cur = b->cur->next;
        b->cur_off = 0;
    }
    b->cur_off += (uint32_t)n;
}

static void on_log_io(struct sb_worker *w, struct sb_file_op *op, int res)
{
    struct sb_store_log *log = ((struct file_op *)op)->log;
    struct batch *b = log->flight;
    log->busy = false;
    if (log->syncing) {
        if (res < 0) {
            /* After a failed fsync the kernel may have dropped the dirty pages: write the
             * whole batch again from memory before the next fsync. */
            log_error(log, w, res, "fdatasync");
            b->done = 0;
            b->cur = b->head;
            b->cur_off = 0;
            arm_sync(log, w); /* tried again by the timer if nothing else comes */
            return;
        }
        uint64_t ns = mono_ns() - log->sync_start_ns;
        log->stats.fsyncs++;
        log->stats.fsync_us += ns / 1000;
        sb_metric_add(w, SB_M_STORE_FSYNCS, 1);
        sb_metric_add(w, SB_M_STORE_FSYNC_US, ns / 1000);
        log->last_sync_ms = sb_worker_now_ms(w);
        log->dirty = false;
        log_finish(log, w);
        return;
    }
    if (res <= 0) {
        log_error(log, w, res ? res : -EIO, "write");
        return;
    }
    advance(b, (uint64_t)res);
    log_resume(log, w);
}

static void log_kick(struct sb_store_log *log, struct sb_worker *w)
{
    if (log->busy)
        return;
    if (log->flight->active) {
        log_resume(log, w); /* a failed write or fsync, tried again */
        return;
    }
    if (log->frozen || (!log->open->count && !log->open->nitems))
        return;
    struct batch *b = log->open;
    log->open = log->flight;
    log->flight = b;
    b->active = true;
    b->off = log->end;
    b->cur = b->head;
    log->end += b->bytes;
    if (b->count)
        log->stats.batches++;
    log_resume(log, w);
}

void sb_store_append(struct sb_store_log *log, struct sb_worker *w, struct sb_store_ent *e,
                     uint32_t conv_gen)
{
    e->flags = ENT_PENDING;
    batch_push(log->open, e);
    log->stats.records++;
    sb_metric_add(w, SB_M_STORE_APPENDS, 1);
    struct compaction *cp = log->cp;
    if (cp && cp->phase != CP_DIRSYNC && conv_gen == log->gen && !cp->failed) {
        uint8_t *p = sb_store_buf_reserve(&cp->tail, e->len);
        if (p)
            memcpy(p, e->rec, e->len);
        else
            cp->failed = true;
    }
    schedule_flush(log, w);
}

void sb_store_ent_free(struct sb_store_ent *e)
{
    if (!e)
        return;
    if (e->flags & ENT_PENDING)
        e->flags |= ENT_DEAD;
    else
        free(e);
}

int sb_store_post_after(struct sb_store_log *log, struct sb_worker *w, unsigned to, sb_mail_cb fn,
                        void *arg)
{
    if (log->st->cfg.fsync != SB_FSYNC_ALWAYS || !log_pending(log))
        return sb_worker_post(w, to, fn, arg);
    /* Held in the open batch: it becomes durable after everything appended before. */
    int r = held_push(log->open, to, fn, arg);
    if (r == 0)
        schedule_flush(log, w);
    return r;
}

void sb_store_account(struct sb_store_log *log, int64_t delta)
{
    log->live += delta;
}

uint32_t sb_store_snapshot_gen(const struct sb_store_log *log)
{
    const struct compaction *cp = log->cp;
    return cp && cp->snap_done && cp->phase != CP_DIRSYNC ? log->gen : 0;
}

void sb_store_log_stats(const struct sb_store_log *log, struct sb_store_stats *out)
{
    *out = log->stats;
    out->bytes = log->end;
    out->live = log->live > 0 ? (uint64_t)log->live : 0;
    out->pending = log->open->bytes + log->covered.bytes +
                   (log->flight->active ? log->flight->bytes - log->flight->done : 0);
    out->compacting = log->cp != NULL;
}

struct sb_store_log *sb_store_log(struct sb_store *st, unsigned worker)
{
    return st->logs[worker];
}

/* ---- compaction at run time ---------------------------------------------------------------- */

/*
 * The new file is written beside the log (w<N>.log.tmp) while appends go on to the old one:
 * first every conversation's live records (the snapshot callback marks each one it wrote), then
 * the records appended since to conversations already written (the tail). At the end appends
 * are held back (frozen) until the tail is written and fsynced with nothing new behind it; the
 * new file then holds every record in memory, so it is renamed over the log, and the records
 * appended meanwhile (their batch is `covered`) are durable once the directory is.
 */

static void cp_step(struct sb_store_log *log, struct sb_worker *w);

static void cp_free(struct sb_store_log *log)
{
    struct compaction *cp = log->cp;
    buf_free(&cp->chunk);
    buf_free(&cp->tail);
    free(cp);
    log->cp = NULL;
}

static void cp_abort(struct sb_store_log *log, struct sb_worker *w, int err)
{
    struct compaction *cp = log->cp;
    char tmp[32];
    log_name(tmp, sizeof(tmp), log->id, true);
    sb_log(SB_LOG_ERROR, err, "history: compacting w%u.log failed; keeping the old file", log->id);
    close(cp->fd);
    unlinkat(log->st->dirfd, tmp, 0);
    cp_free(log);
    log->frozen = false;
    log->compact_after =
        log->end +
        (log->st->cfg.compact_min > log->end / 2 ? log->st->cfg.compact_min : log->end / 2);
    log_kick(log, w);
}

static void cp_write(struct sb_store_log *log, struct sb_worker *w)
{
    struct compaction *cp = log->cp;
    cp->iov.iov_base = cp->chunk.data + cp->chunk_done;
    cp->iov.iov_len = cp->chunk.len - cp->chunk_done;
    int r = sb_worker_write(w, &cp->op.op, cp->fd, &cp->iov, 1, (int64_t)cp->off);
    if (r < 0) {
        cp_abort(log, w, r);
        return;
    }
    cp->busy = true;
}

static void cp_switch(struct sb_store_log *log, struct sb_worker *w)
{
    struct compaction *cp = log->cp;
    char tmp[32], name[32];
    log_name(tmp, sizeof(tmp), log->id, true);
    log_name(name, sizeof(name), log->id, false);
    if (renameat(log->st->dirfd, tmp, log->st->dirfd, name) < 0) {
        cp_abort(log, w, -errno);
        return;
    }
    close(log->fd);
    log->fd = cp->fd;
    cp->fd = -1;
    log->end = cp->off;
    /* Everything appended so far is in the new file; those records (and the replies waiting
     * for them) are durable when the rename is. */
    log->covered = *log->open;
    log->covered.active = true;
    memset(log->open, 0, sizeof(*log->open));
    cp->phase = CP_DIRSYNC;
    int r = sb_worker_fsync(w, &cp->op.op, log->st->dirfd, false);
    if (r < 0) {
        sb_log(SB_LOG_ERROR, r, "history: fsync of %s failed", log->st->dir);
        cp_step(log, w);
        return;
    }
    cp->busy = true;
}

static void cp_done(struct sb_store_log *log, struct sb_worker *w)
{
    struct compaction *cp = log->cp;
    sb_log(SB_LOG_INFO, 0, "history: compacted w%u.log from %" PRIu64 " to %" PRIu64 " bytes",
           log->id, cp->old_bytes, log->end);
    log->covered.active = false;
    batch_release(&log->covered, w);
    free(log->covered.items);
    memset(&log->covered, 0, sizeof(log->covered));
    cp_free(log);
    log->frozen = false;
    log->stats.compactions++;
    log_kick(log, w);
}

/* Appends are held back: write the tail until nothing is left behind it, then fsync. */
static void cp_final(struct sb_store_log *log, struct sb_worker *w)
{
    struct compaction *cp = log->cp;
    /* The old log's last batch must finish first: its replies go out in order. */
    if (log->busy || log->flight->active)
        return;
    if (cp->tail.len) {
        struct sb_store_buf t = cp->tail;
        cp->tail = cp->chunk;
        cp->tail.len = 0;
        cp->chunk = t;
        cp->chunk_done = 0;
        cp_write(log, w);
        return;
    }
    cp->phase = CP_SYNC;
    int r = sb_worker_fsync(w, &cp->op.op, cp->fd, true);
    if (r < 0) {
        cp_abort(log, w, r);
        return;
    }
    cp->busy = true;
}

static void cp_step(struct sb_store_log *log, struct sb_worker *w)
{
    struct compaction *cp = log->cp;
    if (cp->failed && cp->phase != CP_DIRSYNC) {
        cp_abort(log, w, -ENOMEM);
        return;
    }
    switch (cp->phase) {
    case CP_SNAPSHOT:
        if (!cp->snap_done) {
            cp->chunk.len = 0;
            cp->chunk_done = 0;
            int r = log->st->cfg.snapshot(log->st->cfg.snapshot_ctx, log->id, log->gen, &cp->chunk,
                                          SNAP_CHUNK, &cp->snap_done);
            if (r < 0) {
                cp_abort(log, w, r);
                return;
            }
            if (cp->chunk.len) {
                cp_write(log, w);
                return;
            }
        }
        cp->phase = CP_FINAL;
        log->frozen = true;
        __attribute__((fallthrough));
    case CP_FINAL:
        cp_final(log, w);
        return;
    case CP_SYNC:
        if (cp->tail.len) {
            cp->phase = CP_FINAL;
            cp_step(log, w);
            return;
        }
        cp_switch(log, w);
        return;
    case CP_DIRSYNC:
        cp_done(log, w);
        return;
    }
}

static void on_cp_io(struct sb_worker *w, struct sb_file_op *op, int res)
{
    struct sb_store_log *log = ((struct file_op *)op)->log;
    struct compaction *cp = log->cp;
    cp->busy = false;
    if (cp->phase == CP_DIRSYNC) {
        if (res < 0)
            sb_log(SB_LOG_ERROR, res, "history: fsync of %s failed", log->st->dir);
        cp_step(log, w);
        return;
    }
    if (res < 0 || (res == 0 && cp->phase != CP_SYNC)) {
        cp_abort(log, w, res ? res : -EIO);
        return;
    }
    if (cp->phase != CP_SYNC) {
        cp->chunk_done += (size_t)res;
        cp->off += (uint64_t)res;
        if (cp->chunk_done < cp->chunk.len) {
            cp_write(log, w);
            return;
        }
    }
    cp_step(log, w);
}

static void cp_start(struct sb_store_log *log, struct sb_worker *w)
{
    char tmp[32];
    log_name(tmp, sizeof(tmp), log->id, true);
    int fd = openat(log->st->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    struct compaction *cp = fd >= 0 ? calloc(1, sizeof(*cp)) : NULL;
    if (!cp) {
        int err = fd < 0 ? -errno : -ENOMEM;
        if (fd >= 0) {
            close(fd);
            unlinkat(log->st->dirfd, tmp, 0);
        }
        sb_log(SB_LOG_ERROR, err, "history: cannot start compacting w%u.log", log->id);
        log->compact_after = log->end + log->st->cfg.compact_min;
        return;
    }
    cp->op.op.cb = on_cp_io;
    cp->op.log = log;
    cp->fd = fd;
    cp->old_bytes = log->end;
    log->cp = cp;
    log->gen++;
    sb_log(SB_LOG_INFO, 0, "history: compacting w%u.log (%" PRIu64 " bytes, %" PRId64 " live)",
           log->id, log->end, log->live);
    cp_step(log, w);
}

static void compact_check(struct sb_store_log *log, struct sb_worker *w)
{
    if (log->cp) {
        if (log->cp->phase == CP_FINAL && !log->cp->busy)
            cp_step(log, w);
        return;
    }
    uint64_t live = log->live > 0 ? (uint64_t)log->live : 0;
    if (log->end >= log->st->cfg.compact_min && log->end >= log->compact_after &&
        log->end > 2 * live)
        cp_start(log, w);
}

/* ---- open, replay, rewrite, close (main thread) -------------------------------------------- */

static int mkdirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -errno;
        buf[i] = c;
    }
    return 0;
}

/* The worker numbers of the logs (or temporary logs) in the directory, unsorted. */
static int scan_dir(struct sb_store *st, bool tmp, long **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    int fd = dup(st->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int err = errno ? -errno : -EIO;
        if (fd >= 0)
            close(fd);
        return err;
    }
    rewinddir(d);
    long *ids = NULL;
    size_t n = 0, cap = 0;
    int r = 0;
    for (struct dirent *de; (de = readdir(d));) {
        long id = parse_log_name(de->d_name, tmp);
        if (id < 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            long *more = realloc(ids, cap * sizeof(*ids));
            if (!more) {
                r = -ENOMEM;
                break;
            }
            ids = more;
        }
        ids[n++] = id;
    }
    closedir(d);
    if (r < 0) {
        free(ids);
        return r;
    }
    *out = ids;
    *count = n;
    return 0;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static void store_free(struct sb_store *st)
{
    for (unsigned i = 0; st->logs && i < st->cfg.workers; i++) {
        struct sb_store_log *log = st->logs[i];
        if (!log)
            continue;
        for (int k = 0; k < 2; k++)
            batch_drop(&log->b[k]);
        batch_drop(&log->covered);
        if (log->cp) {
            if (log->cp->fd >= 0)
                close(log->cp->fd);
            cp_free(log);
        }
        if (log->fd >= 0)
            close(log->fd);
        free(log);
    }
    free(st->logs);
    if (st->dirfd >= 0)
        close(st->dirfd);
    if (st->lockfd >= 0)
        close(st->lockfd);
    free(st->dir);
    free(st);
}

static int open_dir(struct sb_store *st)
{
    int r = mkdirs(st->dir);
    if (r < 0) {
        sb_log(SB_LOG_ERROR, r, "history: cannot create data_dir \"%s\"", st->dir);
        return r;
    }
    st->dirfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (st->dirfd < 0) {
        r = -errno;
        sb_log(SB_LOG_ERROR, r, "history: cannot open data_dir \"%s\"", st->dir);
        return r;
    }
    /* Two servers appending to the same logs would interleave records: one owner at a time. */
    st->lockfd = openat(st->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (st->lockfd < 0 || flock(st->lockfd, LOCK_EX | LOCK_NB) < 0) {
        r = -errno;
        sb_log(SB_LOG_ERROR, r, "history: cannot lock data_dir \"%s\"%s", st->dir,
               r == -EWOULDBLOCK ? " (another switchboard uses it)" : "");
        return r;
    }
    /* A compaction that did not finish left its new file behind; the old log is complete. */
    long *ids;
    size_t n;
    r = scan_dir(st, true, &ids, &n);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        char tmp[32];
        log_name(tmp, sizeof(tmp), (unsigned)ids[i], true);
        unlinkat(st->dirfd, tmp, 0);
    }
    free(ids);
    return 0;
}

int sb_store_open(const struct sb_store_config *cfg, struct sb_store **out)
{
    struct sb_store *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->cfg = *cfg;
    st->dirfd = st->lockfd = -1;
    st->dir = strdup(cfg->dir);
    st->logs = calloc(cfg->workers, sizeof(struct sb_store_log *));
    int r = st->dir && st->logs ? open_dir(st) : -ENOMEM;
    for (unsigned i = 0; r == 0 && i < cfg->workers; i++) {
        struct sb_store_log *log = calloc(1, sizeof(*log));
        if (!log) {
            r = -ENOMEM;
            break;
        }
        log->op.op.cb = on_log_io;
        log->op.log = log;
        log->st = st;
        log->id = i;
        log->fd = -1;
        log->open = &log->b[0];
        log->flight = &log->b[1];
        st->logs[i] = log;
    }
    st->cfg.dir = st->dir;
    if (r < 0) {
        store_free(st);
        return r;
    }
    *out = st;
    return 0;
}

/* A buffered reader over one log file. */
struct reader {
    int fd;
    uint64_t size; /* of the file */
    uint64_t off;  /* file offset of data[0] */
    uint8_t *data; /* data[pos..have) not decoded yet */
    size_t pos, have, cap;
};

/* Makes at least need bytes available from pos (need <= what the file has left). */
static int reader_fill(struct reader *rd, size_t need)
{
    if (rd->pos) {
        memmove(rd->data, rd->data + rd->pos, rd->have - rd->pos);
        rd->off += rd->pos;
        rd->have -= rd->pos;
        rd->pos = 0;
    }
    if (need > rd->cap) {
        uint8_t *data = realloc(rd->data, need);
        if (!data)
            return -ENOMEM;
        rd->data = data;
        rd->cap = need;
    }
    while (rd->have < need) {
        ssize_t n =
            pread(rd->fd, rd->data + rd->have, rd->cap - rd->have, (off_t)(rd->off + rd->have));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ENODATA; /* the file shrank under us */
        rd->have += (size_t)n;
    }
    return 0;
}

/* Decodes records until the end of the file or the first bad one; *why says which. */
static int replay_records(struct reader *rd, sb_store_replay_cb cb, void *ctx, size_t *count,
                          const char **why)
{
    for (;;) {
        struct sb_store_rec rec;
        ssize_t n = sb_store_decode(rd->data + rd->pos, rd->have - rd->pos, &rec);
        if (n > 0) {
            rd->pos += (size_t)n;
            (*count)++;
            int r = cb(ctx, &rec);
            if (r < 0)
                return r;
            continue;
        }
        if (n == -EBADMSG) {
            *why = "corrupt";
            return 0;
        }
        uint64_t left = rd->size - (rd->off + rd->pos);
        size_t avail = rd->have - rd->pos;
        if (left == 0)
            return 0;
        /* Incomplete: a header, or a record whose length (in bounds) is known. */
        size_t need = avail < 8 ? 8 : get_u32(rd->data + rd->pos);
        if (need > left) {
            *why = "torn";
            return 0;
        }
        int r = reader_fill(rd, need);
        if (r == -ENODATA) {
            *why = "torn";
            return 0;
        }
        if (r < 0)
            return r;
    }
}

/* Replays one file; *count gets the records. Stops at the first torn or corrupt record and
 * truncates the file there. */
static int replay_file(struct sb_store *st, const char *name, sb_store_replay_cb cb, void *ctx,
                       size_t *count)
{
    struct reader rd = {.fd = openat(st->dirfd, name, O_RDWR | O_CLOEXEC), .cap = 1 << 20};
    struct stat sb;
    rd.data = malloc(rd.cap);
    if (!rd.data || rd.fd < 0 || fstat(rd.fd, &sb) < 0) {
        int r = rd.data ? -errno : -ENOMEM;
        sb_log(SB_LOG_ERROR, r, "history: cannot read %s/%s", st->dir, name);
        if (rd.fd >= 0)
            close(rd.fd);
        free(rd.data);
        return r;
    }
    rd.size = (uint64_t)sb.st_size;
    const char *why = NULL;
    int r = replay_records(&rd, cb, ctx, count, &why);
    if (r < 0 && r != -ENOMEM)
        sb_log(SB_LOG_ERROR, r, "history: cannot read %s/%s", st->dir, name);
    if (why && r == 0) {
        uint64_t at = rd.off + rd.pos;
        sb_log(SB_LOG_WARN, 0,
               "history: %s/%s: %s record at offset %" PRIu64 "; truncating %" PRIu64 " bytes",
               st->dir, name, why, at, rd.size - at);
        if (ftruncate(rd.fd, (off_t)at) < 0 || fsync(rd.fd) < 0) {
            r = -errno;
            sb_log(SB_LOG_ERROR, r, "history: cannot truncate %s/%s", st->dir, name);
        }
    }
    free(rd.data);
    close(rd.fd);
    return r;
}

ssize_t sb_store_replay(struct sb_store *st, sb_store_replay_cb cb, void *ctx)
{
    uint64_t t0 = mono_ns();
    long *ids;
    size_t nfiles, count = 0;
    int r = scan_dir(st, false, &ids, &nfiles);
    if (r < 0) {
        sb_log(SB_LOG_ERROR, r, "history: cannot list %s", st->dir);
        return r;
    }
    if (nfiles > 1)
        qsort(ids, nfiles, sizeof(*ids), cmp_long);
    for (size_t i = 0; i < nfiles && r == 0; i++) {
        char name[32];
        log_name(name, sizeof(name), (unsigned)ids[i], false);
        r = replay_file(st, name, cb, ctx, &count);
    }
    free(ids);
    if (r < 0)
        return r;
    sb_log(SB_LOG_INFO, 0, "history: replayed %zu records from %zu files in %s in %" PRIu64 " ms",
           count, nfiles, st->dir, (mono_ns() - t0) / 1000000);
    return (ssize_t)count;
}

static int write_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Writes worker i's live records into a new temporary file; returns its fd or -errno. */
static int rewrite_one(struct sb_store *st, struct sb_store_log *log, uint64_t *size)
{
    char tmp[32];
    log_name(tmp, sizeof(tmp), log->id, true);
    int fd = openat(st->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    struct sb_store_buf buf = {0};
    uint64_t off = 0;
    bool done = false;
    log->gen++;
    int r = 0;
    while (!done && r == 0) {
        buf.len = 0;
        r = st->cfg.snapshot(st->cfg.snapshot_ctx, log->id, log->gen, &buf, BOOT_CHUNK, &done);
        if (r == 0)
            r = write_all(fd, buf.data, buf.len, off);
        off += buf.len;
    }
    buf_free(&buf);
    if (r == 0 && fdatasync(fd) < 0)
        r = -errno;
    if (r < 0) {
        close(fd);
        unlinkat(st->dirfd, tmp, 0);
        return r;
    }
    *size = off;
    return fd;
}

static int remove_stale(struct sb_store *st)
{
    long *ids;
    size_t n;
    int r = scan_dir(st, false, &ids, &n);
    if (r < 0)
        return r;
    size_t removed = 0;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned long)ids[i] < st->cfg.workers)
            continue;
        char name[32];
        log_name(name, sizeof(name), (unsigned)ids[i], false);
        if (unlinkat(st->dirfd, name, 0) == 0)
            removed++;
    }
    free(ids);
    if (removed && fsync(st->dirfd) < 0)
        return -errno;
    return 0;
}

int sb_store_rewrite(struct sb_store *st)
{
    uint64_t t0 = mono_ns(), total = 0;
    int r = 0;
    unsigned i;
    for (i = 0; i < st->cfg.workers; i++) {
        struct sb_store_log *log = st->logs[i];
        uint64_t size = 0;
        int fd = rewrite_one(st, log, &size);
        if (fd < 0) {
            r = fd;
            break;
        }
        log->fd = fd;
        log->end = size;
        total += size;
    }
    /* Renamed only once every new file is complete and durable: a crash before leaves the old
     * logs, a crash between two renames leaves records in both, and replay skips the copies. */
    for (unsigned k = 0; r == 0 && k < st->cfg.workers; k++) {
        char tmp[32], name[32];
        log_name(tmp, sizeof(tmp), k, true);
        log_name(name, sizeof(name), k, false);
        if (renameat(st->dirfd, tmp, st->dirfd, name) < 0)
            r = -errno;
    }
    if (r == 0 && fsync(st->dirfd) < 0)
        r = -errno;
    if (r == 0)
        r = remove_stale(st);
    if (r < 0) {
        sb_log(SB_LOG_ERROR, r, "history: cannot rewrite the logs in %s", st->dir);
        return r;
    }
    sb_log(SB_LOG_INFO, 0,
           "history: %u logs, %" PRIu64 " bytes, rewritten in %" PRIu64 " ms (fsync = %s)",
           st->cfg.workers, total, (mono_ns() - t0) / 1000000, fsync_names[st->cfg.fsync]);
    return 0;
}

/* Writes a batch's records at off with plain pwrite. */
static int write_batch(int fd, const struct batch *b, uint64_t off)
{
    for (const struct sb_store_ent *e = b->head; e; e = e->next) {
        int r = write_all(fd, e->rec, e->len, off);
        if (r < 0)
            return r;
        off += e->len;
    }
    return 0;
}

static void close_log(struct sb_store *st, struct sb_store_log *log)
{
    struct compaction *cp = log->cp;
    if (cp) {
        if (cp->phase == CP_DIRSYNC) {
            /* Renamed already: the new file is the log; make the rename durable. */
            if (fsync(st->dirfd) < 0)
                sb_log(SB_LOG_ERROR, -errno, "history: fsync of %s failed", st->dir);
        } else {
            char tmp[32];
            log_name(tmp, sizeof(tmp), log->id, true);
            close(cp->fd);
            unlinkat(st->dirfd, tmp, 0);
        }
        cp->fd = -1;
    }
    if (log->fd < 0)
        return;
    /*
     * The workers are gone, and with them any completion not seen yet. The kernel finished every
     * request of a thread before the thread exited (io_uring cancels or waits for them then),
     * so writing a batch in flight again, at the same offset and with the same bytes, is safe.
     */
    int r = 0;
    if (log->flight->active)
        r = write_batch(log->fd, log->flight, log->flight->off);
    if (r == 0 && log->open->count) {
        r = write_batch(log->fd, log->open, log->end);
        log->end += log->open->bytes;
    }
    if (r == 0 && st->cfg.fsync != SB_FSYNC_NEVER && fdatasync(log->fd) < 0)
        r = -errno;
    if (r < 0)
        sb_log(SB_LOG_ERROR, r, "history: w%u.log: final write failed", log->id);
    const struct sb_store_stats *s = &log->stats;
    sb_log(SB_LOG_INFO, 0,
           "history: w%u.log: %" PRIu64 " bytes, %" PRIu64 " records in %" PRIu64
           " batches, %" PRIu64 " fsyncs (%" PRIu64 " us each), %" PRIu64 " compactions",
           log->id, log->end, s->records, s->batches, s->fsyncs,
           s->fsyncs ? s->fsync_us / s->fsyncs : 0, s->compactions);
}

void sb_store_close(struct sb_store *st)
{
    if (!st)
        return;
    for (unsigned i = 0; i < st->cfg.workers; i++)
        close_log(st, st->logs[i]);
    store_free(st);
}
