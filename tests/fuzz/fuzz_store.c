/*
 * libFuzzer target for the history log decoder (server/store.c). The first byte picks a mode:
 *
 *   even  the rest is a log file as found on disk.
 *   odd   the rest is a log whose records get correct checksums first (each record's length
 *         field read as it stands, clamped to what is left), so that the field checks behind the
 *         CRC see arbitrary bytes.
 *
 * Invariants: every decoded record lies inside the input, obeys the format's bounds, views the
 * same through sb_store_view and sb_store_rec_key, and encodes back to exactly its bytes;
 * decoding stops only at -EAGAIN (a prefix of a record) or -EBADMSG; and the file replay (the
 * buffered reader over a memfd) finds the same records and stops at the same offset. Any
 * inconsistency aborts.
 *
 * store.c is compiled in (fuzz targets get the codecs' sources, not the server library); the
 * engine calls of its run-time half are never reached and are stubbed below.
 */
#include "server/store.c"

#include <sys/mman.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int sb_worker_write(struct sb_worker *w, struct sb_file_op *op, int fd, const struct iovec *iov,
                    unsigned n, int64_t offset)
{
    abort();
}

int sb_worker_fsync(struct sb_worker *w, struct sb_file_op *op, int fd, bool data_only)
{
    abort();
}

int sb_worker_post(struct sb_worker *from, unsigned to, sb_mail_cb fn, void *arg)
{
    abort();
}

unsigned sb_worker_id(const struct sb_worker *w)
{
    abort();
}

uint64_t sb_worker_now_ms(const struct sb_worker *w)
{
    abort();
}

void sb_worker_timer_set(struct sb_worker *w, struct sb_worker_timer *timer, uint64_t ms)
{
    abort();
}

void sb_log(enum sb_log_level level, int err, const char *fmt, ...)
{
}

void sb_metric_add(struct sb_worker *w, enum sb_metric m, uint64_t n)
{
    abort();
}

static void require(bool ok)
{
    if (!ok)
        abort();
}

static bool inside(const char *p, size_t n, const uint8_t *rec, size_t len)
{
    return n == 0 || ((const uint8_t *)p >= rec && (const uint8_t *)p + n <= rec + len);
}

static bool same(const char *a, const char *b, size_t n)
{
    return n == 0 || memcmp(a, b, n) == 0;
}

static void check_record(const uint8_t *rec, size_t n, const struct sb_store_rec *r)
{
    require(n >= SB_STORE_REC_MIN && n <= SB_STORE_REC_MAX && n == sb_store_rec_size(r));
    require(r->type >= SB_STORE_MESSAGE && r->type <= SB_STORE_CURSOR);
    require(r->conv_len >= 1 && r->conv_len <= SB_CONV_ID_MAX);
    require(r->device_len <= SB_STORE_DEVICE_MAX && r->user_len <= SB_USER_ID_MAX);
    require(r->client_id_len <= SB_STORE_CLIENT_ID_MAX && r->body_len <= SB_STORE_BODY_MAX);
    if (r->type == SB_STORE_MESSAGE)
        require(r->seq >= 1 && r->user_len >= 1 && r->client_id_len >= 1 &&
                r->system <= SB_STORE_SYS_CREATED);
    else if (r->type == SB_STORE_STATE)
        require(r->user_len == 0 && r->client_id_len == 0 && r->device_len == 0 &&
                r->body_len == 0 && r->msg_id == 0 && r->ts_ms == 0 && r->system == 0);
    else
        require(r->user_len >= 1 && r->client_id_len == 0 && r->device_len == 0 && r->msg_id == 0 &&
                r->system == 0 &&
                (r->type == SB_STORE_GROUP ? r->body_len >= 5 : r->body_len == 0));
    require(inside(r->conv, r->conv_len, rec, n) && inside(r->device, r->device_len, rec, n) &&
            inside(r->user, r->user_len, rec, n) &&
            inside(r->client_id, r->client_id_len, rec, n) &&
            inside(r->body, r->body_len, rec, n) && inside(r->key, r->key_len, rec, n));
    require(r->key_len == 2 + r->user_len + r->client_id_len);

    /* The trusted accessors agree with the checked decoder. */
    struct sb_store_rec v;
    sb_store_view(rec, &v);
    require(v.seq == r->seq && v.body == r->body && v.key == r->key && v.key_len == r->key_len);
    size_t klen;
    require(sb_store_rec_key(rec, &klen) == r->key && klen == r->key_len);
    require(sb_store_rec_seq(rec) == r->seq && sb_store_rec_ts(rec) == r->ts_ms);

    /* Encoding the fields gives back the same bytes. */
    uint8_t *again = malloc(n);
    require(again != NULL);
    require(sb_store_encode(r, again, n) == (ssize_t)n);
    require(memcmp(again, rec, n) == 0);
    struct sb_store_rec d;
    require(sb_store_decode(again, n, &d) == (ssize_t)n);
    require(d.seq == r->seq && d.msg_id == r->msg_id && d.conv_len == r->conv_len &&
            same(d.conv, r->conv, r->conv_len) && d.body_len == r->body_len &&
            same(d.body, r->body, r->body_len));
    free(again);
}

/* Decodes the log in buf like replay does; returns the offset where it stopped. */
static size_t decode_log(const uint8_t *buf, size_t len, size_t *count)
{
    size_t pos = 0;
    *count = 0;
    for (;;) {
        struct sb_store_rec r;
        ssize_t n = sb_store_decode(buf + pos, len - pos, &r);
        if (n > 0) {
            require((size_t)n <= len - pos);
            check_record(buf + pos, (size_t)n, &r);
            pos += (size_t)n;
            (*count)++;
            continue;
        }
        require(n == -EAGAIN || n == -EBADMSG);
        if (n == -EAGAIN)
            require(len - pos < 8 || get_u32(buf + pos) > len - pos);
        return pos;
    }
}

static int count_cb(void *ctx, const struct sb_store_rec *rec)
{
    (*(size_t *)ctx)++;
    return 0;
}

/* The file replay over the same bytes stops at the same record. */
static void check_reader(const uint8_t *buf, size_t len, size_t count, size_t stop)
{
    int fd = memfd_create("fuzz_store", MFD_CLOEXEC);
    if (fd < 0)
        return;
    if (len && write(fd, buf, len) != (ssize_t)len) {
        close(fd);
        return;
    }
    struct reader rd = {.fd = fd, .size = len, .cap = 64, .data = malloc(64)};
    require(rd.data != NULL);
    size_t seen = 0, counted = 0;
    const char *why = NULL;
    require(replay_records(&rd, count_cb, &seen, &counted, &why) == 0);
    require(seen == count && counted == count && rd.off + rd.pos == stop);
    require((why == NULL) == (stop == len));
    free(rd.data);
    close(fd);
}

/* Gives each record (by its length field, clamped) a correct checksum. */
static void fix_checksums(uint8_t *buf, size_t len)
{
    size_t pos = 0;
    while (len - pos >= 8) {
        uint32_t n = get_u32(buf + pos);
        if (n < 8 || n > len - pos)
            n = (uint32_t)(len - pos);
        put_u32(buf + pos, n);
        put_u32(buf + pos + 4, rec_crc(buf + pos, n));
        pos += n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > (1 << 20))
        return 0;
    size_t len = size - 1;
    uint8_t *buf = malloc(len ? len : 1);
    require(buf != NULL);
    if (len)
        memcpy(buf, data + 1, len);
    if (data[0] & 1)
        fix_checksums(buf, len);
    size_t count;
    size_t stop = decode_log(buf, len, &count);
    check_reader(buf, len, count, stop);
    free(buf);
    return 0;
}
