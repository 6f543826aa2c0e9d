/*
 * The client: connection state machine, request bookkeeping, and the delivery rules of
 * sdk_order.h applied to what the server sends. Everything runs under c->lock (recursive, so a
 * callback may call back into the client).
 */
#include "switchboard.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proto/binproto.h"
#include "sdk_hooks.h"
#include "sdk_order.h"
#include "sdk_tls.h"
#include "sdk_ws.h"

#define DEFAULT_PING_MS 30000
#define READ_CHUNK 65536
#define READS_PER_PROCESS 16 /* then return, so a busy connection cannot starve the caller */
/*
 * How long a gap in a conversation may stay before it is SYNCed. A device does not receive its
 * own messages, so a live stream has a gap at each of them until its ACK arrives (which may be
 * after the next message of someone else): the grace saves a SYNC per such race.
 */
#define GAP_GRACE_MS 250

enum conn_state {
    ST_WAIT,       /* no connection; the next attempt at retry_at_ms */
    ST_CONNECTING, /* TCP connect under way */
    ST_TLS,        /* TLS handshake under way (tls://, wss://) */
    ST_UPGRADING,  /* WebSocket upgrade sent */
    ST_HELLO,      /* HELLO sent, waiting for WELCOME */
    ST_READY,      /* WELCOME received */
    ST_FAILED,     /* gave up (reconnect_max_attempts) */
    ST_CLOSED,     /* freed or stopped for good */
};

enum req_kind {
    REQ_SEND,
    REQ_CONV,
    REQ_CONVS,
    REQ_SYNC,    /* the client's own SYNC of one conversation */
    REQ_CATCHUP, /* the client's own CONV_LIST after WELCOME */
    REQ_ONEWAY,  /* a receipt or unsubscribe queued while disconnected: dropped once written */
};

struct req {
    struct req *prev, *next;
    uint32_t id;
    uint8_t kind;
    bool is_sent;
    union {
        sb_client_send_cb send;
        sb_client_conv_cb conv;
        sb_client_convs_cb convs;
    } cb;
    void *arg;
    uint8_t *frame;
    size_t frame_len;
    char conv[SB__CONV_MAX + 1]; /* REQ_SYNC: which conversation */
};

struct buf {
    uint8_t *data;
    size_t off, len, cap; /* bytes [off, len) are live */
};

struct sb_client {
    pthread_mutex_t lock;
    /* Configuration (copied). */
    char *host, *port, *path, *host_header, *token, *server_name;
    char device[SB_CLIENT_DEVICE_MAX + 1];
    bool is_ws;
    bool is_tls;
    SSL_CTX *tls_ctx; /* is_tls: made once, at create */
    SSL *ssl;         /* is_tls: the connection's, from the TCP connect on */
    bool tls_want_write;
    struct sb_client_config cfg;
    /* Event plumbing: epfd holds the wakeup eventfd and the socket, so it never changes. */
    int epfd, evfd, fd;
    uint32_t fd_events;
    enum conn_state state;
    uint64_t retry_at_ms, deadline_ms, last_rx_ms, last_ping_ms;
    uint32_t attempts;
    bool has_welcomed; /* some connection reached WELCOME */
    bool is_returning; /* this session resumes a previous one: new conversations start at 0 */
    bool is_catching_up;
    bool has_gaps; /* some conversation has gap_at_ms set */
    bool is_processing;
    bool is_woken; /* the eventfd was written and process has not run since */
    int drop_err;  /* set while dispatching: close the connection after the batch */
    bool has_goaway;
    uint32_t goaway_ms;
    struct buf in, out, wsmsg;
    char ws_key[SB__WS_KEY_LEN + 1];
    struct req *reqs, *reqs_tail;
    size_t unsent_bytes;
    uint64_t hold_until_ms; /* rate limited: requests wait in the queue until then */
    uint32_t next_id, hello_id;
    struct sb__convs convs;
    char **subs;
    size_t nsubs, subs_cap;
    /* The session, from WELCOME. */
    uint64_t session;
    uint32_t max_body, ping_interval_ms;
    char user[SB_CLIENT_USER_MAX + 1], session_device[SB_CLIENT_DEVICE_MAX + 1];
    /* Threads. */
    pthread_t thread;
    bool has_thread;
    atomic_bool stop;
    uint64_t rng;
    uint64_t id_prefix, id_counter;
};

static void process_locked(struct sb_client *c);
static void close_conn(struct sb_client *c, int err);

/* ---- small helpers ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* xorshift64*: masks and jitter need spread, not secrecy (the seed comes from getrandom). */
static uint64_t rand64(struct sb_client *c)
{
    uint64_t x = c->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    c->rng = x;
    return x * 2685821657736338717ULL;
}

static void copy_slice(char *dst, size_t cap, struct sb_slice s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    memcpy(dst, s.base, n);
    dst[n] = '\0';
}

static struct sb_slice cstr(const char *s)
{
    return sb_slice_from(s, s != NULL ? strlen(s) : 0);
}

static int buf_reserve(struct buf *b, size_t extra)
{
    if (b->off > 0 && b->off == b->len) {
        b->off = b->len = 0;
    }
    if (b->len + extra <= b->cap) {
        return 0;
    }
    /* Compact first: the consumed front is usually most of the buffer. */
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap) {
            return 0;
        }
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) {
        cap *= 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL) {
        return -ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

static void buf_reset(struct buf *b)
{
    b->off = b->len = 0;
}

static void buf_free(struct buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

static size_t buf_live(const struct buf *b)
{
    return b->len - b->off;
}

/* Wakes the driving thread; one write until it has run, however many requests come. */
static void wake(struct sb_client *c)
{
    if (c->is_woken || c->is_processing) {
        return; /* it runs (or will) and sees the new output then */
    }
    c->is_woken = true;
    uint64_t one = 1;
    ssize_t n = write(c->evfd, &one, sizeof(one));
    (void)n; /* a full counter is still a wakeup */
}

static uint32_t new_id(struct sb_client *c)
{
    if (++c->next_id == 0) {
        c->next_id = 1;
    }
    return c->next_id;
}

/* ---- writing ---- */

/* Appends one frame to the output, in the transport's wrapping. */
static int queue_frame(struct sb_client *c, const uint8_t *frame, size_t len)
{
    if (!c->is_ws) {
        if (buf_reserve(&c->out, len) < 0) {
            return -ENOMEM;
        }
        memcpy(c->out.data + c->out.len, frame, len);
        c->out.len += len;
        return 0;
    }
    uint8_t hdr[SB__WS_MAX_HEADER], mask[4];
    uint64_t r = rand64(c);
    memcpy(mask, &r, 4);
    size_t hlen = sb__ws_encode(hdr, SB__WS_BINARY, len, mask);
    if (buf_reserve(&c->out, hlen + len) < 0) {
        return -ENOMEM;
    }
    uint8_t *p = c->out.data + c->out.len;
    memcpy(p, hdr, hlen);
    memcpy(p + hlen, frame, len);
    sb__ws_mask(p + hlen, len, mask);
    c->out.len += hlen + len;
    return 0;
}

static int queue_ws_control(struct sb_client *c, uint8_t opcode, const uint8_t *data, size_t len)
{
    uint8_t hdr[SB__WS_MAX_HEADER], mask[4];
    uint64_t r = rand64(c);
    memcpy(mask, &r, 4);
    size_t hlen = sb__ws_encode(hdr, opcode, len, mask);
    if (buf_reserve(&c->out, hlen + len) < 0) {
        return -ENOMEM;
    }
    uint8_t *p = c->out.data + c->out.len;
    memcpy(p, hdr, hlen);
    if (len > 0) {
        memcpy(p + hlen, data, len);
    }
    sb__ws_mask(p + hlen, len, mask);
    c->out.len += hlen + len;
    return 0;
}

/* Encodes op into a new allocation (*out, *len). */
static int encode_alloc(const struct sb_op *op, uint8_t **out, size_t *len)
{
    ssize_t n = sb_binproto_size(op);
    if (n < 0) {
        return (int)n;
    }
    uint8_t *p = malloc((size_t)n);
    if (p == NULL) {
        return -ENOMEM;
    }
    ssize_t m = sb_binproto_encode(op, p, (size_t)n);
    if (m < 0) {
        free(p);
        return (int)m;
    }
    *out = p;
    *len = (size_t)m;
    return 0;
}

/* Encodes op straight into the output (no copy kept). */
static int queue_op(struct sb_client *c, const struct sb_op *op)
{
    uint8_t stack[1024];
    ssize_t n = sb_binproto_size(op);
    if (n < 0) {
        return (int)n;
    }
    uint8_t *p = (size_t)n <= sizeof(stack) ? stack : malloc((size_t)n);
    if (p == NULL) {
        return -ENOMEM;
    }
    ssize_t m = sb_binproto_encode(op, p, (size_t)n);
    int rc = m < 0 ? (int)m : queue_frame(c, p, (size_t)m);
    if (p != stack) {
        free(p);
    }
    return rc;
}

static void update_events(struct sb_client *c)
{
    if (c->fd < 0) {
        return;
    }
    uint32_t ev = EPOLLIN;
    if (c->state == ST_CONNECTING || buf_live(&c->out) > 0 ||
        (c->state == ST_TLS && c->tls_want_write)) {
        ev |= EPOLLOUT;
    }
    if (ev != c->fd_events) {
        struct epoll_event e = {.events = ev, .data.fd = c->fd};
        if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->fd, &e) == 0) {
            c->fd_events = ev;
        }
    }
}

/* Writes what the socket takes. Returns 0 or -errno (the connection is broken). */
static int flush_out(struct sb_client *c)
{
    while (buf_live(&c->out) > 0) {
        if (c->ssl != NULL) {
            ssize_t n = sb__tls_send(c->ssl, c->out.data + c->out.off, buf_live(&c->out));
            if (n < 0) {
                return n == -EAGAIN ? 0 : (int)n;
            }
            c->out.off += (size_t)n;
            continue;
        }
        ssize_t n = send(c->fd, c->out.data + c->out.off, buf_live(&c->out), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
        }
        c->out.off += (size_t)n;
    }
    buf_reset(&c->out);
    return 0;
}

/* ---- requests ---- */

static void req_link(struct sb_client *c, struct req *r)
{
    r->prev = c->reqs_tail;
    r->next = NULL;
    if (c->reqs_tail != NULL) {
        c->reqs_tail->next = r;
    } else {
        c->reqs = r;
    }
    c->reqs_tail = r;
}

static void req_unlink(struct sb_client *c, struct req *r)
{
    if (r->prev != NULL) {
        r->prev->next = r->next;
    } else {
        c->reqs = r->next;
    }
    if (r->next != NULL) {
        r->next->prev = r->prev;
    } else {
        c->reqs_tail = r->prev;
    }
    if (!r->is_sent) {
        c->unsent_bytes -= r->frame_len;
    }
}

static void req_free(struct req *r)
{
    free(r->frame);
    free(r);
}

/* Answers mostly come in request order, so the search from the oldest is short. */
static struct req *req_find(struct sb_client *c, uint32_t id)
{
    if (id == 0) {
        return NULL;
    }
    for (struct req *r = c->reqs; r != NULL; r = r->next) {
        if (r->id == id && r->is_sent) {
            return r;
        }
    }
    return NULL;
}

/* Completes r with a local status (< 0) and frees it. */
static void req_fail(struct sb_client *c, struct req *r, int status)
{
    req_unlink(c, r);
    switch (r->kind) {
    case REQ_SEND:
        if (r->cb.send != NULL) {
            r->cb.send(c, status, NULL, NULL, r->arg);
        }
        break;
    case REQ_CONV:
        if (r->cb.conv != NULL) {
            r->cb.conv(c, status, NULL, NULL, r->arg);
        }
        break;
    case REQ_CONVS:
        if (r->cb.convs != NULL) {
            r->cb.convs(c, status, NULL, 0, NULL, r->arg);
        }
        break;
    default:
        break;
    }
    req_free(r);
}

static size_t queued_bytes(const struct sb_client *c)
{
    return buf_live(&c->out) + c->unsent_bytes;
}

/*
 * Registers a request whose frame is op (request id assigned here) and sends it now when the
 * session is up, else after the next WELCOME.
 */
static int submit(struct sb_client *c, struct sb_op *op, enum req_kind kind, void *cb, void *arg,
                  struct req **out)
{
    if (c->state == ST_FAILED || c->state == ST_CLOSED) {
        return -ENOTCONN;
    }
    struct req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return -ENOMEM;
    }
    r->id = new_id(c);
    op->request_id = r->id;
    int rc = encode_alloc(op, &r->frame, &r->frame_len);
    if (rc < 0) {
        free(r);
        return rc;
    }
    if (kind != REQ_SYNC && kind != REQ_CATCHUP &&
        queued_bytes(c) + r->frame_len > c->cfg.max_queue_bytes) {
        req_free(r);
        return -ENOBUFS;
    }
    r->kind = (uint8_t)kind;
    r->arg = arg;
    switch (kind) {
    case REQ_SEND:
        r->cb.send = (sb_client_send_cb)cb;
        break;
    case REQ_CONV:
        r->cb.conv = (sb_client_conv_cb)cb;
        break;
    case REQ_CONVS:
        r->cb.convs = (sb_client_convs_cb)cb;
        break;
    default:
        break;
    }
    c->unsent_bytes += r->frame_len;
    req_link(c, r);
    /* While rate limited, requests queue behind the held sends (order is kept). */
    if (c->state == ST_READY && (c->hold_until_ms == 0 || kind == REQ_SYNC)) {
        if (queue_frame(c, r->frame, r->frame_len) < 0) {
            req_unlink(c, r);
            req_free(r);
            return -ENOMEM;
        }
        r->is_sent = true;
        c->unsent_bytes -= r->frame_len;
        if (kind == REQ_ONEWAY) {
            req_unlink(c, r);
            req_free(r);
            r = NULL;
        }
        wake(c);
    }
    if (out != NULL) {
        *out = r;
    }
    return 0;
}

/* Sends every request not sent yet, oldest first (after WELCOME). */
static void send_unsent(struct sb_client *c)
{
    struct req *r = c->reqs;
    while (r != NULL) {
        struct req *next = r->next;
        if (!r->is_sent) {
            if (queue_frame(c, r->frame, r->frame_len) < 0) {
                c->drop_err = -ENOMEM;
                return;
            }
            c->unsent_bytes -= r->frame_len;
            r->is_sent = true;
            if (r->kind == REQ_ONEWAY) {
                req_unlink(c, r);
                r->is_sent = true;
                req_free(r);
            }
        }
        r = next;
    }
}

/* ---- conversations and delivery ---- */

static void deliver(struct sb_client *c, const struct sb_op_message *m)
{
    if (c->cfg.on_message == NULL) {
        return;
    }
    char conv[SB_CLIENT_CONV_MAX + 1], from[SB_CLIENT_USER_MAX + 1],
        device[SB_CLIENT_DEVICE_MAX + 1], subject[SB_CLIENT_NAME_MAX + 1];
    copy_slice(conv, sizeof(conv), m->conv);
    copy_slice(from, sizeof(from), m->from);
    copy_slice(device, sizeof(device), m->device);
    copy_slice(subject, sizeof(subject), m->subject);
    struct sb_client_message pub = {
        .msg_id = m->msg_id,
        .seq = m->seq,
        .ts_ms = m->ts_ms,
        .system = m->system,
        .conv = conv,
        .from = from,
        .device = device,
        .subject = subject,
        .body = (const uint8_t *)m->body.data.base,
        .body_len = m->body.data.len,
    };
    c->cfg.on_message(c, &pub, c->cfg.arg);
}

/* Sends a SYNC of cv from its position; the page comes back to handle_page. */
static void start_sync(struct sb_client *c, struct sb__conv *cv)
{
    if (c->state != ST_READY) {
        return; /* the next HELLO resumes it */
    }
    uint8_t lbuf[16 + SB__CONV_MAX];
    struct sb_binproto_list_writer w;
    sb_binproto_list_init(&w, lbuf, sizeof(lbuf));
    struct sb_op_resume item = {.last_seq = cv->delivered,
                                .conv = sb_slice_from(cv->conv, cv->conv_len)};
    sb_binproto_list_add_resume(&w, &item);
    struct sb_op op = {.type = SB_OP_SYNC};
    if (sb_binproto_list_finish(&w, &op.u.sync.convs) < 0) {
        return;
    }
    struct req *r = NULL;
    if (submit(c, &op, REQ_SYNC, NULL, NULL, &r) < 0 || r == NULL) {
        return;
    }
    memcpy(r->conv, cv->conv, cv->conv_len + 1);
    cv->is_syncing = true;
    cv->sync_from = cv->delivered;
}

/* Delivers the held messages that are now next in sequence. */
static void drain(struct sb_client *c, struct sb__conv *cv)
{
    struct sb__held *h;
    while ((h = sb__conv_pop_ready(cv)) != NULL) {
        struct sb_binproto_header hdr;
        struct sb_op op;
        if (h->len == 0) {
            cv->delivered = h->seq; /* our own message: the application had its ACK */
        } else if (sb_binproto_decode_frame(h->frame, h->len, 0, &hdr, &op) == 0 &&
                   op.type == SB_OP_MESSAGE) {
            cv->delivered = h->seq;
            deliver(c, &op.u.message);
        }
        free(h);
    }
}

/* Gives up on a gap that cannot be filled: delivers what is held after it. */
static void skip_gap(struct sb_client *c, struct sb__conv *cv)
{
    uint64_t first = sb__conv_first_held(cv);
    if (first > cv->delivered + 1) {
        cv->delivered = first - 1;
    }
    drain(c, cv);
}

/* Where a conversation the client has no position for starts, given its first seq seen. */
static uint64_t start_of_unknown(const struct sb_client *c, uint64_t seq)
{
    if (c->cfg.sync_new_convs || (c->is_catching_up && c->is_returning)) {
        return 0;
    }
    return seq > 0 ? seq - 1 : 0;
}

/* Schedules a SYNC of cv's gap, GAP_GRACE_MS from now, unless one is under way or due. */
static void note_gap(struct sb_client *c, struct sb__conv *cv)
{
    if (!cv->is_syncing && cv->gap_at_ms == 0) {
        cv->gap_at_ms = now_ms() + GAP_GRACE_MS;
        c->has_gaps = true;
    }
}

/* SYNCs the gaps whose grace ran out; forgets the ones that filled. */
static void check_gaps(struct sb_client *c, uint64_t now)
{
    bool has_more = false;
    for (struct sb__conv *cv = sb__convs_next(&c->convs, NULL); cv != NULL;
         cv = sb__convs_next(&c->convs, cv)) {
        if (cv->gap_at_ms == 0) {
            continue;
        }
        if (cv->is_syncing) {
            has_more = true; /* decided once that SYNC has ended */
        } else if (sb__conv_first_held(cv) == 0 && cv->delivered >= cv->sync_to) {
            cv->gap_at_ms = 0;
            cv->sync_to = 0;
        } else if (now >= cv->gap_at_ms) {
            cv->gap_at_ms = 0;
            cv->sync_to = 0;
            start_sync(c, cv);
        } else {
            has_more = true;
        }
    }
    c->has_gaps = has_more;
}

/*
 * One message, live (raw is its frame) or from a page (raw NULL): delivered if next, dropped if
 * old, held if early (and the gap synced).
 */
static void on_message(struct sb_client *c, const struct sb_op_message *m, const uint8_t *raw,
                       size_t raw_len)
{
    bool created;
    struct sb__conv *cv =
        sb__convs_get(&c->convs, m->conv.base, m->conv.len, start_of_unknown(c, m->seq), &created);
    if (cv == NULL) {
        return;
    }
    switch (sb__conv_classify(cv, m->seq)) {
    case SB__ORDER_DROP:
        return;
    case SB__ORDER_DELIVER:
        cv->delivered = m->seq;
        deliver(c, m);
        drain(c, cv);
        return;
    case SB__ORDER_HOLD:
        break;
    }
    if (raw != NULL) {
        sb__conv_hold(cv, m->seq, raw, raw_len);
    } else {
        struct sb_op op = {.type = SB_OP_MESSAGE, .u.message = *m};
        uint8_t *frame;
        size_t len;
        if (encode_alloc(&op, &frame, &len) == 0) {
            sb__conv_hold(cv, m->seq, frame, len);
            free(frame);
        }
    }
    note_gap(c, cv);
}

/* A SYNC of cv ended (its last page, or an error): sync again, or settle the gap. */
/*
 * A SYNC of cv ended: with its last page (page_last_seq: where the server's history ended) or
 * with an error. Syncs again while it makes progress; skips a gap only when it is gone for good.
 */
static void sync_ended(struct sb_client *c, struct sb__conv *cv, bool is_error,
                       uint64_t page_last_seq)
{
    cv->is_syncing = false;
    uint64_t first = sb__conv_first_held(cv);
    if (first == 0) {
        return;
    }
    if (is_error) {
        skip_gap(c, cv);
        return;
    }
    if (cv->delivered == cv->sync_from) {
        if (page_last_seq + 1 >= first) {
            skip_gap(c, cv); /* the history reaches past the gap without it: gone */
        } else {
            /* The history did not reach the held messages yet (they were being stored when
             * the page was made, say under fsync = always): try again after the grace. */
            note_gap(c, cv);
        }
        return;
    }
    start_sync(c, cv);
}

static void handle_page(struct sb_client *c, const struct sb_op *op)
{
    const struct sb_op_sync_page *p = &op->u.sync_page;
    struct req *r = req_find(c, op->request_id);
    if (r != NULL && r->kind == REQ_SYNC) {
        req_unlink(c, r);
        req_free(r);
    }
    bool created;
    struct sb__conv *cv = sb__convs_get(&c->convs, p->conv.base, p->conv.len, 0, &created);
    if (cv == NULL) {
        return;
    }
    struct sb_ops_list_iter it;
    struct sb_op_message m;
    bool is_first = true;
    sb_ops_list_begin(&it, &p->messages);
    while (sb_ops_list_next(&it, &m) == 1) {
        if (is_first && p->truncated && m.seq > cv->delivered + 1) {
            cv->delivered = m.seq - 1; /* older messages are gone from the server */
        }
        is_first = false;
        on_message(c, &m, NULL, 0);
    }
    if (p->has_more && p->last_seq > cv->delivered) {
        start_sync(c, cv);
        return;
    }
    if (p->has_more) {
        cv->sync_from = cv->delivered;
        start_sync(c, cv);
        return;
    }
    sync_ended(c, cv, false, p->last_seq);
}

static void handle_behind(struct sb_client *c, const struct sb_op_behind *b)
{
    bool created;
    struct sb__conv *cv = sb__convs_get(&c->convs, b->conv.base, b->conv.len,
                                        start_of_unknown(c, b->seq + 1), &created);
    if (cv != NULL && !cv->is_syncing) {
        start_sync(c, cv);
    }
    if (c->cfg.on_behind != NULL) {
        char conv[SB_CLIENT_CONV_MAX + 1];
        copy_slice(conv, sizeof(conv), b->conv);
        c->cfg.on_behind(c, conv, b->seq, c->cfg.arg);
    }
}

/* ---- answers ---- */

static void fill_error(const struct sb_op_error *e, struct sb_client_error *out, char *msg,
                       size_t msg_cap, char *conv, size_t conv_cap)
{
    copy_slice(msg, msg_cap, e->message);
    copy_slice(conv, conv_cap, e->conv);
    out->code = sb_ops_err_name(e->code) != NULL ? e->code : SB_CLIENT_ERR_INTERNAL;
    out->retry_after_ms = e->retry_after_ms;
    out->message = msg;
    out->conv = conv;
}

/* Copies a list of users into one allocation of pointers and strings. */
static const char **users_dup(const struct sb_ops_list *list, size_t *n)
{
    struct sb_ops_list_iter it;
    struct sb_slice s;
    size_t count = 0, bytes = 0;
    sb_ops_list_begin(&it, list);
    while (sb_ops_list_next(&it, &s) == 1) {
        count++;
        bytes += s.len + 1;
    }
    const char **v = malloc((count + 1) * sizeof(char *) + bytes);
    if (v == NULL) {
        *n = 0;
        return NULL;
    }
    char *p = (char *)(v + count + 1);
    size_t i = 0;
    sb_ops_list_begin(&it, list);
    while (i < count && sb_ops_list_next(&it, &s) == 1) {
        memcpy(p, s.base, s.len);
        p[s.len] = '\0';
        v[i++] = p;
        p += s.len + 1;
    }
    v[i] = NULL;
    *n = i;
    return v;
}

static void answer_conv(struct sb_client *c, struct req *r, const struct sb_op_conv *cv)
{
    char conv[SB_CLIENT_CONV_MAX + 1], name[SB_CLIENT_NAME_MAX + 1], owner[SB_CLIENT_USER_MAX + 1];
    copy_slice(conv, sizeof(conv), cv->conv);
    copy_slice(name, sizeof(name), cv->name);
    copy_slice(owner, sizeof(owner), cv->owner);
    struct sb_client_conv pub = {.last_seq = cv->last_seq,
                                 .read_seq = cv->read_seq,
                                 .conv = conv,
                                 .name = name,
                                 .owner = owner};
    const char **admins = users_dup(&cv->admins, &pub.n_admins);
    const char **members = users_dup(&cv->members, &pub.n_members);
    pub.admins = admins;
    pub.members = members;
    pub.member_count = (uint32_t)pub.n_members;
    if (r->cb.conv != NULL) {
        r->cb.conv(c, 0, &pub, NULL, r->arg);
    }
    free(admins);
    free(members);
}

/* A CONVS item; sized for either item layout the codec may hand out. */
union conv_item {
    struct sb_op_conv_summary summary;
    struct sb_op_conv full;
};

static void answer_convs(struct sb_client *c, struct req *r, const struct sb_op_convs *cs)
{
    size_t n = cs->convs.count;
    struct sb_client_conv *v = calloc(n ? n : 1, sizeof(*v));
    char *strs =
        calloc(n ? n : 1, SB_CLIENT_CONV_MAX + SB_CLIENT_NAME_MAX + SB_CLIENT_USER_MAX + 3);
    if (v == NULL || strs == NULL) {
        free(v);
        free(strs);
        if (r->cb.convs != NULL) {
            r->cb.convs(c, -ENOMEM, NULL, 0, NULL, r->arg);
        }
        return;
    }
    struct sb_ops_list_iter it;
    union conv_item item;
    size_t i = 0;
    char *p = strs;
    sb_ops_list_begin(&it, &cs->convs);
    while (i < n && sb_ops_list_next(&it, &item) == 1) {
        const struct sb_op_conv_summary *s = &item.summary;
        char *conv = p, *name = p + SB_CLIENT_CONV_MAX + 1, *owner = name + SB_CLIENT_NAME_MAX + 1;
        p = owner + SB_CLIENT_USER_MAX + 1;
        copy_slice(conv, SB_CLIENT_CONV_MAX + 1, s->conv);
        copy_slice(name, SB_CLIENT_NAME_MAX + 1, s->name);
        copy_slice(owner, SB_CLIENT_USER_MAX + 1, s->owner);
        v[i++] = (struct sb_client_conv){.last_seq = s->last_seq,
                                         .read_seq = s->read_seq,
                                         .member_count = s->member_count,
                                         .conv = conv,
                                         .name = name,
                                         .owner = owner};
    }
    if (r->cb.convs != NULL) {
        r->cb.convs(c, 0, v, i, NULL, r->arg);
    }
    free(v);
    free(strs);
}

/* The client's own CONV_LIST after WELCOME: finds conversations it has no position for. */
static void catch_up(struct sb_client *c, const struct sb_op_convs *cs)
{
    struct sb_ops_list_iter it;
    union conv_item item;
    bool sync_all = c->is_returning || c->cfg.sync_new_convs;
    sb_ops_list_begin(&it, &cs->convs);
    while (sb_ops_list_next(&it, &item) == 1) {
        const struct sb_op_conv_summary *s = &item.summary;
        struct sb__conv *known = sb__convs_find(&c->convs, s->conv.base, s->conv.len);
        if (known != NULL) {
            /*
             * HELLO resumed it. Should the server have more than the client ends up with
             * (a message sequenced while the connection came up, between the resume and live
             * delivery), a SYNC follows after the grace unless the messages arrive by then.
             */
            if (s->last_seq > known->delivered) {
                known->sync_to = s->last_seq > known->sync_to ? s->last_seq : known->sync_to;
                if (known->gap_at_ms == 0) {
                    known->gap_at_ms = now_ms() + GAP_GRACE_MS;
                }
                c->has_gaps = true;
            }
            continue;
        }
        bool created;
        struct sb__conv *cv = sb__convs_get(&c->convs, s->conv.base, s->conv.len,
                                            sync_all ? 0 : s->last_seq, &created);
        if (cv != NULL && sync_all && s->last_seq > 0) {
            start_sync(c, cv);
        }
    }
    c->is_catching_up = false;
    c->is_returning = true;
}

static void handle_error(struct sb_client *c, const struct sb_op *op)
{
    const struct sb_op_error *e = &op->u.error;
    struct sb_client_error pub;
    char msg[256], conv[SB_CLIENT_CONV_MAX + 1];
    fill_error(e, &pub, msg, sizeof(msg), conv, sizeof(conv));
    if (c->state == ST_HELLO && (op->request_id == c->hello_id || op->request_id == 0) &&
        e->conv.len == 0) {
        /* HELLO refused: the token (or the version) is not accepted. */
        c->drop_err = e->code == SB_OP_ERR_UNAUTHORIZED ? -EACCES : -EPROTO;
        if (c->cfg.on_error != NULL) {
            c->cfg.on_error(c, &pub, c->cfg.arg);
        }
        return;
    }
    struct req *r = req_find(c, op->request_id);
    if (r == NULL || r->kind == REQ_SYNC || r->kind == REQ_CATCHUP) {
        /* A SYNC (or a resume of the HELLO) failed for one conversation. */
        const char *name = r != NULL && r->kind == REQ_SYNC ? r->conv : conv;
        struct sb__conv *cv = sb__convs_find(&c->convs, name, strlen(name));
        if (r != NULL) {
            if (r->kind == REQ_CATCHUP) {
                c->is_catching_up = false;
            }
            req_unlink(c, r);
            req_free(r);
        }
        if (cv != NULL && cv->is_syncing &&
            (pub.code == SB_CLIENT_ERR_RATE_LIMITED || pub.code == SB_CLIENT_ERR_UNAVAILABLE)) {
            /* Refused for now, not for good: the same SYNC again after retry_after_ms. */
            cv->is_syncing = false;
            cv->sync_to = UINT64_MAX;
            cv->gap_at_ms = now_ms() + (pub.retry_after_ms ? pub.retry_after_ms : 100);
            c->has_gaps = true;
            return; /* the application is not told: nothing is lost */
        }
        if (cv != NULL && cv->is_syncing) {
            sync_ended(c, cv, true, 0);
        }
        if (c->cfg.on_error != NULL) {
            c->cfg.on_error(c, &pub, c->cfg.arg);
        }
        return;
    }
    if (r->kind == REQ_SEND && pub.code == SB_CLIENT_ERR_RATE_LIMITED) {
        /* The server refused it for now: send it again (same client id) once the bucket
         * refills, with everything queued after it. */
        uint64_t wait = pub.retry_after_ms ? pub.retry_after_ms : 100;
        uint64_t until = now_ms() + wait;
        c->hold_until_ms = until > c->hold_until_ms ? until : c->hold_until_ms;
        r->is_sent = false;
        c->unsent_bytes += r->frame_len;
        return;
    }
    req_unlink(c, r);
    switch (r->kind) {
    case REQ_SEND:
        if (r->cb.send != NULL) {
            r->cb.send(c, pub.code, NULL, &pub, r->arg);
        }
        break;
    case REQ_CONV:
        if (r->cb.conv != NULL) {
            r->cb.conv(c, pub.code, NULL, &pub, r->arg);
        }
        break;
    case REQ_CONVS:
        if (r->cb.convs != NULL) {
            r->cb.convs(c, pub.code, NULL, 0, &pub, r->arg);
        }
        break;
    default:
        break;
    }
    req_free(r);
}

/*
 * The ACK of our own message moves the conversation's position past it (the server does not
 * send it to the sending device), or marks its place when it is ahead of a gap.
 */
static void own_message(struct sb_client *c, const struct sb_op_ack *a)
{
    /*
     * A conversation first known from our own ACK starts at 0: the messages before ours may
     * still be on their way to us (the ACK can overtake them), and none of them is old to us.
     */
    bool created;
    struct sb__conv *cv = sb__convs_get(&c->convs, a->conv.base, a->conv.len, 0, &created);
    if (cv == NULL) {
        return;
    }
    switch (sb__conv_classify(cv, a->seq)) {
    case SB__ORDER_DROP:
        break;
    case SB__ORDER_DELIVER:
        cv->delivered = a->seq;
        drain(c, cv);
        break;
    case SB__ORDER_HOLD:
        sb__conv_hold(cv, a->seq, NULL, 0);
        note_gap(c, cv);
        break;
    }
}

static void handle_ack(struct sb_client *c, const struct sb_op *op)
{
    struct req *r = req_find(c, op->request_id);
    if (r == NULL || r->kind != REQ_SEND) {
        return;
    }
    req_unlink(c, r);
    const struct sb_op_ack *a = &op->u.ack;
    char client_id[SB_CLIENT_CLIENT_ID_MAX + 1], conv[SB_CLIENT_CONV_MAX + 1];
    copy_slice(client_id, sizeof(client_id), a->client_id);
    copy_slice(conv, sizeof(conv), a->conv);
    struct sb_client_ack pub = {.msg_id = a->msg_id,
                                .seq = a->seq,
                                .ts_ms = a->ts_ms,
                                .is_duplicate = a->is_duplicate,
                                .client_id = client_id,
                                .conv = conv};
    if (r->cb.send != NULL) {
        r->cb.send(c, 0, &pub, NULL, r->arg);
    }
    req_free(r);
    own_message(c, a);
}

/* Subscribes again, after WELCOME, to every user the application subscribed to. */
static void resubscribe(struct sb_client *c)
{
    for (size_t i = 0; i < c->nsubs; i += SB_OPS_REQUEST_LIST_MAX) {
        size_t n = c->nsubs - i < SB_OPS_REQUEST_LIST_MAX ? c->nsubs - i : SB_OPS_REQUEST_LIST_MAX;
        size_t cap = n * (SB_OPS_USER_MAX + 1) + 2;
        uint8_t *lbuf = malloc(cap);
        if (lbuf == NULL) {
            return;
        }
        struct sb_binproto_list_writer w;
        sb_binproto_list_init(&w, lbuf, cap);
        for (size_t k = 0; k < n; k++) {
            sb_binproto_list_add_user(&w, cstr(c->subs[i + k]));
        }
        struct sb_op op = {.type = SB_OP_PRESENCE_SUB};
        if (sb_binproto_list_finish(&w, &op.u.presence_sub.users) == 0) {
            op.request_id = new_id(c);
            queue_op(c, &op);
        }
        free(lbuf);
    }
}

static void handle_welcome(struct sb_client *c, const struct sb_op *op)
{
    const struct sb_op_welcome *w = &op->u.welcome;
    c->state = ST_READY;
    c->attempts = 0;
    c->session = w->session;
    c->max_body = w->max_body;
    c->ping_interval_ms = w->ping_interval_ms;
    copy_slice(c->user, sizeof(c->user), w->user);
    copy_slice(c->session_device, sizeof(c->session_device), w->device);
    c->has_welcomed = true;
    c->last_ping_ms = 0;
    /* Conversations the HELLO did not resume (over its 1,000) get their own SYNC. */
    for (struct sb__conv *cv = sb__convs_next(&c->convs, NULL); cv != NULL;
         cv = sb__convs_next(&c->convs, cv)) {
        if (!cv->is_syncing) {
            start_sync(c, cv);
        }
    }
    c->is_catching_up = true;
    struct sb_op list = {.type = SB_OP_CONV_LIST};
    submit(c, &list, REQ_CATCHUP, NULL, NULL, NULL);
    resubscribe(c);
    send_unsent(c);
    if (c->cfg.on_state != NULL) {
        struct sb_client_session s = {.session = c->session,
                                      .max_body = c->max_body,
                                      .ping_interval_ms = c->ping_interval_ms,
                                      .user = c->user,
                                      .device = c->session_device};
        c->cfg.on_state(c, SB_CLIENT_STATE_CONNECTED, 0, &s, c->cfg.arg);
    }
}

static void handle_event(struct sb_client *c, const struct sb_op *op)
{
    char a[SB_CLIENT_CONV_MAX + 1], b[SB_CLIENT_USER_MAX + 1];
    switch (op->type) {
    case SB_OP_RECEIPT:
        if (c->cfg.on_receipt != NULL) {
            copy_slice(a, sizeof(a), op->u.receipt.conv);
            copy_slice(b, sizeof(b), op->u.receipt.user);
            struct sb_client_receipt r = {
                .seq = op->u.receipt.seq, .kind = op->u.receipt.kind, .conv = a, .user = b};
            c->cfg.on_receipt(c, &r, c->cfg.arg);
        }
        break;
    case SB_OP_TYPING:
        if (c->cfg.on_typing != NULL) {
            copy_slice(a, sizeof(a), op->u.typing.conv);
            copy_slice(b, sizeof(b), op->u.typing.user);
            struct sb_client_typing t = {.conv = a, .user = b};
            c->cfg.on_typing(c, &t, c->cfg.arg);
        }
        break;
    case SB_OP_PRESENCE:
        if (c->cfg.on_presence != NULL) {
            copy_slice(b, sizeof(b), op->u.presence.user);
            struct sb_client_presence p = {.last_seen_ms = op->u.presence.last_seen_ms,
                                           .status = op->u.presence.status,
                                           .user = b};
            c->cfg.on_presence(c, &p, c->cfg.arg);
        }
        break;
    case SB_OP_GOAWAY:
        c->has_goaway = true;
        c->goaway_ms = op->u.goaway.reconnect_after_ms;
        c->drop_err = -ECONNRESET;
        if (c->cfg.on_goaway != NULL) {
            char reason[256];
            copy_slice(reason, sizeof(reason), op->u.goaway.reason);
            c->cfg.on_goaway(c, op->u.goaway.reconnect_after_ms, reason, c->cfg.arg);
        }
        break;
    default:
        break;
    }
}

/* One frame from the server. raw/raw_len are its bytes (to hold a MESSAGE). */
static void dispatch(struct sb_client *c, const struct sb_op *op, const uint8_t *raw,
                     size_t raw_len)
{
    if (c->state == ST_HELLO) {
        if (op->type == SB_OP_WELCOME) {
            handle_welcome(c, op);
        } else if (op->type == SB_OP_ERROR) {
            handle_error(c, op);
        }
        return; /* the server sends nothing else before WELCOME */
    }
    struct req *r;
    switch (op->type) {
    case SB_OP_MESSAGE:
        on_message(c, &op->u.message, raw, raw_len);
        break;
    case SB_OP_ACK:
        handle_ack(c, op);
        break;
    case SB_OP_SYNC_PAGE:
        handle_page(c, op);
        break;
    case SB_OP_ERROR:
        handle_error(c, op);
        break;
    case SB_OP_BEHIND:
        handle_behind(c, &op->u.behind);
        break;
    case SB_OP_CONV:
        r = req_find(c, op->request_id);
        if (r != NULL && r->kind == REQ_CONV) {
            req_unlink(c, r);
            answer_conv(c, r, &op->u.conv);
            req_free(r);
        }
        break;
    case SB_OP_CONVS:
        r = req_find(c, op->request_id);
        if (r != NULL && (r->kind == REQ_CONVS || r->kind == REQ_CATCHUP)) {
            req_unlink(c, r);
            if (r->kind == REQ_CONVS) {
                answer_convs(c, r, &op->u.convs);
            } else {
                catch_up(c, &op->u.convs);
            }
            req_free(r);
        }
        break;
    case SB_OP_PING: {
        struct sb_op pong = {
            .type = SB_OP_PONG, .request_id = op->request_id, .u.ping = op->u.ping};
        queue_op(c, &pong);
        break;
    }
    default:
        handle_event(c, op);
        break;
    }
}

/* ---- reading ---- */

static void report_malformed(struct sb_client *c, int err)
{
    if (c->cfg.on_error != NULL) {
        struct sb_client_error e = {.code = SB_CLIENT_ERR_INTERNAL,
                                    .message = err == -EOPNOTSUPP ? "unknown frame type skipped"
                                                                  : "malformed frame skipped",
                                    .conv = ""};
        if (err != -EOPNOTSUPP) {
            c->cfg.on_error(c, &e, c->cfg.arg);
        }
    }
}

/* One binary message of a WebSocket connection: exactly one frame. */
static void ws_binary(struct sb_client *c, const uint8_t *p, size_t len)
{
    struct sb_binproto_header hdr;
    struct sb_op op;
    int rc = sb_binproto_decode_frame(p, len, c->cfg.max_frame, &hdr, &op);
    if (rc == 0) {
        dispatch(c, &op, p, len);
    } else if (rc == -EBADMSG || rc == -EOPNOTSUPP) {
        report_malformed(c, rc);
    } else {
        c->drop_err = -EPROTO;
    }
}

/* Frames of a raw TCP stream. */
static void parse_tcp(struct sb_client *c)
{
    while (c->drop_err == 0 && buf_live(&c->in) > 0) {
        const uint8_t *p = c->in.data + c->in.off;
        struct sb_binproto_header hdr = {0};
        struct sb_op op;
        ssize_t n = sb_binproto_decode(p, buf_live(&c->in), c->cfg.max_frame, &hdr, &op);
        if (n == -EAGAIN) {
            if (buf_reserve(&c->in, hdr.frame_size - buf_live(&c->in)) < 0) {
                c->drop_err = -ENOMEM;
            }
            return;
        }
        if (n > 0) {
            c->in.off += (size_t)n;
            dispatch(c, &op, p, (size_t)n);
        } else if ((n == -EBADMSG || n == -EOPNOTSUPP) && hdr.frame_size > 0) {
            c->in.off += hdr.frame_size; /* the length is known: skip the frame */
            report_malformed(c, (int)n);
        } else {
            c->drop_err = -EPROTO;
        }
    }
}

/* WebSocket frames: binary messages (reassembled when fragmented), ping, close. */
static void parse_ws(struct sb_client *c)
{
    while (c->drop_err == 0 && buf_live(&c->in) > 0) {
        uint8_t *p = c->in.data + c->in.off;
        size_t avail = buf_live(&c->in);
        struct sb__ws_frame f;
        ssize_t h = sb__ws_decode(p, avail, c->cfg.max_frame, &f);
        if (h == -EAGAIN) {
            return;
        }
        if (h < 0) {
            c->drop_err = -EPROTO;
            return;
        }
        if (avail < f.header_len + f.payload_len) {
            if (buf_reserve(&c->in, f.header_len + f.payload_len - avail) < 0) {
                c->drop_err = -ENOMEM;
            }
            return;
        }
        uint8_t *payload = p + f.header_len;
        size_t plen = (size_t)f.payload_len;
        c->in.off += f.header_len + plen;
        switch (f.opcode) {
        case SB__WS_BINARY:
        case SB__WS_CONT:
            if (f.opcode == SB__WS_BINARY && f.fin && buf_live(&c->wsmsg) == 0) {
                ws_binary(c, payload, plen); /* the common case: no copy */
                break;
            }
            if (buf_live(&c->wsmsg) + plen > c->cfg.max_frame || buf_reserve(&c->wsmsg, plen) < 0) {
                c->drop_err = -EMSGSIZE;
                return;
            }
            memcpy(c->wsmsg.data + c->wsmsg.len, payload, plen);
            c->wsmsg.len += plen;
            if (f.fin) {
                ws_binary(c, c->wsmsg.data + c->wsmsg.off, buf_live(&c->wsmsg));
                buf_reset(&c->wsmsg);
            }
            break;
        case SB__WS_PING:
            queue_ws_control(c, SB__WS_PONG, payload, plen);
            break;
        case SB__WS_PONG:
            break;
        case SB__WS_CLOSE:
            queue_ws_control(c, SB__WS_CLOSE, payload, plen < 2 ? plen : 2);
            flush_out(c);
            c->drop_err = -ECONNRESET;
            return;
        default: /* text: this subprotocol has none */
            c->drop_err = -EPROTO;
            return;
        }
    }
}

static void send_hello(struct sb_client *c);

/* The 101 answer to the upgrade, then frames. */
static void parse_upgrade(struct sb_client *c)
{
    ssize_t n = sb__ws_response((const char *)c->in.data + c->in.off, buf_live(&c->in), c->ws_key,
                                SB_BINPROTO_SUBPROTOCOL);
    if (n == -EAGAIN) {
        return;
    }
    if (n < 0) {
        c->drop_err = (int)n;
        return;
    }
    c->in.off += (size_t)n;
    send_hello(c);
}

static void parse_in(struct sb_client *c)
{
    if (c->state == ST_UPGRADING) {
        parse_upgrade(c);
    }
    if (c->state == ST_UPGRADING || c->drop_err != 0) {
        return;
    }
    if (c->is_ws) {
        parse_ws(c);
    } else {
        parse_tcp(c);
    }
}

/* Reads and dispatches what is there. Returns 0, or -errno when the connection ended. */
static int read_in(struct sb_client *c)
{
    for (int i = 0; i < READS_PER_PROCESS; i++) {
        if (buf_reserve(&c->in, READ_CHUNK) < 0) {
            return -ENOMEM;
        }
        ssize_t n;
        if (c->ssl != NULL) {
            n = sb__tls_recv(c->ssl, c->in.data + c->in.len, c->in.cap - c->in.len);
            if (n == -EAGAIN) {
                return 0;
            }
            if (n < 0) {
                return (int)n;
            }
        } else {
            n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
            }
        }
        if (n == 0) {
            return -ECONNRESET;
        }
        c->in.len += (size_t)n;
        c->last_rx_ms = now_ms();
        parse_in(c);
        if (c->drop_err != 0) {
            return c->drop_err;
        }
    }
    if (c->ssl != NULL && sb__tls_pending(c->ssl)) {
        /* Decrypted bytes wait in the library, where epoll cannot see them: run again soon. */
        c->is_woken = true;
        uint64_t one = 1;
        ssize_t w = write(c->evfd, &one, sizeof(one));
        (void)w;
    }
    return 0;
}

/* ---- connection lifecycle ---- */

static void report_state(struct sb_client *c, int state, int err)
{
    if (c->cfg.on_state != NULL) {
        c->cfg.on_state(c, state, err, NULL, c->cfg.arg);
    }
}

static void send_hello(struct sb_client *c)
{
    size_t n = c->convs.count < SB_OPS_REQUEST_LIST_MAX ? c->convs.count : SB_OPS_REQUEST_LIST_MAX;
    size_t cap = n * (9 + SB__CONV_MAX) + 2;
    uint8_t *lbuf = malloc(cap);
    if (lbuf == NULL) {
        c->drop_err = -ENOMEM;
        return;
    }
    struct sb_binproto_list_writer w;
    sb_binproto_list_init(&w, lbuf, cap);
    size_t k = 0;
    for (struct sb__conv *cv = sb__convs_next(&c->convs, NULL); cv != NULL && k < n;
         cv = sb__convs_next(&c->convs, cv), k++) {
        struct sb_op_resume r = {.last_seq = cv->delivered,
                                 .conv = sb_slice_from(cv->conv, cv->conv_len)};
        sb_binproto_list_add_resume(&w, &r);
        cv->is_syncing = true;
        cv->sync_from = cv->delivered;
    }
    struct sb_op op = {.type = SB_OP_HELLO};
    op.u.hello.token = c->is_ws ? sb_slice_from("", 0) : cstr(c->token);
    op.u.hello.device = cstr(c->device);
    c->hello_id = new_id(c);
    op.request_id = c->hello_id;
    int rc = sb_binproto_list_finish(&w, &op.u.hello.resume);
    if (rc == 0) {
        rc = queue_op(c, &op);
    }
    free(lbuf);
    if (rc < 0) {
        c->drop_err = rc;
        return;
    }
    c->is_returning = c->has_welcomed || c->convs.count > 0;
    c->state = ST_HELLO;
}

static void start_upgrade(struct sb_client *c)
{
    uint8_t raw[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rand64(c);
        memcpy(raw + i, &r, 8);
    }
    sb__ws_base64(raw, sizeof(raw), c->ws_key);
    size_t cap = 1024 + strlen(c->token) + strlen(c->path) + strlen(c->host_header);
    if (buf_reserve(&c->out, cap) < 0) {
        c->drop_err = -ENOMEM;
        return;
    }
    ssize_t n = sb__ws_request((char *)c->out.data + c->out.len, cap, c->host_header, c->path,
                               c->ws_key, SB_BINPROTO_SUBPROTOCOL, c->token);
    if (n < 0) {
        c->drop_err = (int)n;
        return;
    }
    c->out.len += (size_t)n;
    c->state = ST_UPGRADING;
}

static void connected(struct sb_client *c)
{
    if (c->is_ws) {
        start_upgrade(c);
    } else {
        send_hello(c);
    }
}

static void start_connect(struct sb_client *c)
{
    report_state(c, SB_CLIENT_STATE_CONNECTING, 0);
    if (c->state == ST_CLOSED) {
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int grc = getaddrinfo(c->host, c->port, &hints, &res);
    int err = grc == 0 ? -ECONNREFUSED : -EHOSTUNREACH;
    for (struct addrinfo *ai = grc == 0 ? res : NULL; ai != NULL; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = -errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            err = -errno;
            close(fd);
            continue;
        }
        c->fd = fd;
        break;
    }
    if (res != NULL) {
        freeaddrinfo(res);
    }
    c->deadline_ms = now_ms() + c->cfg.connect_timeout_ms;
    if (c->fd < 0) {
        c->state = ST_CONNECTING;
        close_conn(c, err);
        return;
    }
    struct epoll_event e = {.events = EPOLLIN | EPOLLOUT, .data.fd = c->fd};
    epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->fd, &e);
    c->fd_events = e.events;
    c->state = ST_CONNECTING;
}

/* Advances the TLS handshake; once done, moves on to the upgrade or HELLO. */
static void tls_step(struct sb_client *c)
{
    int rc = sb__tls_handshake(c->ssl, &c->tls_want_write);
    if (rc < 0) {
        close_conn(c, rc);
        return;
    }
    if (rc == 0) {
        return;
    }
    connected(c);
    if (c->drop_err != 0) {
        close_conn(c, c->drop_err);
    }
}

/* Whether a connect under way finished; on success moves on to TLS, the upgrade or HELLO. */
static void check_connect(struct sb_client *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
    if (poll(&pfd, 1, 0) <= 0) {
        return;
    }
    int soerr = 0;
    socklen_t slen = sizeof(soerr);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) < 0) {
        soerr = errno;
    }
    if (soerr != 0) {
        close_conn(c, -soerr);
        return;
    }
    c->last_rx_ms = now_ms();
    if (c->is_tls) {
        const char *name = c->server_name != NULL ? c->server_name : c->host;
        c->ssl = sb__tls_new(c->tls_ctx, c->fd, name, !c->cfg.insecure);
        if (c->ssl == NULL) {
            close_conn(c, -ENOMEM);
            return;
        }
        c->state = ST_TLS;
        tls_step(c);
        return;
    }
    connected(c);
    if (c->drop_err != 0) {
        close_conn(c, c->drop_err);
    }
}

static uint64_t backoff_ms(struct sb_client *c)
{
    unsigned shift = c->attempts < 31 ? c->attempts : 31;
    uint64_t cap = (uint64_t)c->cfg.reconnect_base_ms << shift;
    if (cap > c->cfg.reconnect_max_ms) {
        cap = c->cfg.reconnect_max_ms;
    }
    return rand64(c) % (cap + 1); /* full jitter */
}

/*
 * Ends the connection: sends that were out go again after the next WELCOME, other requests
 * that were out fail with -ECONNRESET, and a retry is scheduled.
 */
static void close_conn(struct sb_client *c, int err)
{
    bool was_ready = c->state == ST_READY;
    if (c->ssl != NULL) {
        SSL_free(c->ssl); /* no close_notify: the connection is going away either way */
        c->ssl = NULL;
    }
    c->tls_want_write = false;
    if (c->fd >= 0) {
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->fd_events = 0;
    c->drop_err = 0;
    c->hold_until_ms = 0;
    buf_reset(&c->in);
    buf_reset(&c->out);
    buf_reset(&c->wsmsg);
    c->is_catching_up = false;
    for (struct sb__conv *cv = sb__convs_next(&c->convs, NULL); cv != NULL;
         cv = sb__convs_next(&c->convs, cv)) {
        cv->is_syncing = false;
        cv->gap_at_ms = 0;
        cv->sync_to = 0;
        sb__conv_clear_held(cv); /* the resume of the next HELLO brings them again */
    }
    struct req *r = c->reqs;
    while (r != NULL) {
        struct req *next = r->next;
        if (r->is_sent) {
            if (r->kind == REQ_SEND) {
                r->is_sent = false;
                c->unsent_bytes += r->frame_len;
            } else {
                req_fail(c, r, -ECONNRESET);
            }
        }
        r = next;
    }
    if (c->state == ST_CLOSED) {
        return;
    }
    if (!was_ready) {
        c->attempts++;
    }
    uint64_t now = now_ms();
    if (c->has_goaway) {
        c->retry_at_ms = now + c->goaway_ms;
        c->has_goaway = false;
    } else {
        c->retry_at_ms = now + backoff_ms(c);
    }
    bool is_done =
        c->cfg.reconnect_max_attempts != 0 && c->attempts >= c->cfg.reconnect_max_attempts;
    c->state = is_done ? ST_FAILED : ST_WAIT;
    report_state(c, SB_CLIENT_STATE_DISCONNECTED, err);
    if (is_done && c->state == ST_FAILED) {
        report_state(c, SB_CLIENT_STATE_FAILED, err);
        for (r = c->reqs; r != NULL; r = c->reqs) {
            req_fail(c, r, -ENOTCONN);
        }
    }
}

/* Keep-alive: PING after a ping interval of silence, give up after two more. */
static void keepalive(struct sb_client *c, uint64_t now)
{
    uint64_t interval = c->ping_interval_ms ? c->ping_interval_ms : DEFAULT_PING_MS;
    if (now >= c->last_rx_ms + 3 * interval) {
        close_conn(c, -ETIMEDOUT);
        return;
    }
    if (now >= c->last_rx_ms + interval && c->last_ping_ms <= c->last_rx_ms) {
        struct sb_op ping = {.type = SB_OP_PING, .request_id = new_id(c)};
        queue_op(c, &ping);
        c->last_ping_ms = now;
    }
}

static void process_locked(struct sb_client *c)
{
    uint64_t v;
    while (read(c->evfd, &v, sizeof(v)) > 0) {
    }
    c->is_woken = false;
    uint64_t now = now_ms();
    if (c->state == ST_WAIT && now >= c->retry_at_ms) {
        start_connect(c);
    }
    if (c->state == ST_CONNECTING) {
        check_connect(c);
    } else if (c->state == ST_TLS) {
        tls_step(c);
    }
    if (c->fd >= 0 && c->state != ST_CONNECTING && c->state != ST_TLS) {
        int rc = read_in(c);
        if (rc == 0 && c->drop_err == 0 && c->fd >= 0) {
            rc = flush_out(c);
        }
        if (c->fd >= 0 && (rc < 0 || c->drop_err != 0)) {
            close_conn(c, c->drop_err != 0 ? c->drop_err : rc);
        }
    }
    now = now_ms();
    if ((c->state == ST_CONNECTING || c->state == ST_TLS || c->state == ST_UPGRADING ||
         c->state == ST_HELLO) &&
        now >= c->deadline_ms) {
        close_conn(c, -ETIMEDOUT);
    } else if (c->state == ST_READY) {
        if (c->has_gaps) {
            check_gaps(c, now);
        }
        if (c->hold_until_ms != 0 && now >= c->hold_until_ms) {
            c->hold_until_ms = 0;
            send_unsent(c);
        }
        keepalive(c, now);
        if (c->fd >= 0 && flush_out(c) < 0) {
            close_conn(c, -EPIPE);
        }
    }
    update_events(c);
}

/* ---- public API ---- */

void sb_client_config_init(struct sb_client_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->reconnect_base_ms = 250;
    cfg->reconnect_max_ms = 30000;
    cfg->connect_timeout_ms = 10000;
    cfg->max_queue_bytes = 16u << 20;
    cfg->max_frame = 8u << 20;
}

/* Splits "tcp://host[:port]", "tls://host[:port]", "ws://host[:port][/path]" or
 * "wss://host[:port][/path]" (host may be "[v6]"). */
static int parse_url(struct sb_client *c, const char *url)
{
    static const struct {
        const char *scheme, *port;
        bool is_ws, is_tls;
    } schemes[] = {{"tcp://", "7000", false, false},
                   {"tls://", "7443", false, true},
                   {"ws://", "80", true, false},
                   {"wss://", "443", true, true}};
    const char *rest = NULL;
    const char *default_port = NULL;
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t n = strlen(schemes[i].scheme);
        if (strncmp(url, schemes[i].scheme, n) == 0) {
            rest = url + n;
            default_port = schemes[i].port;
            c->is_ws = schemes[i].is_ws;
            c->is_tls = schemes[i].is_tls;
        }
    }
    if (rest == NULL) {
        return -EINVAL;
    }
    size_t auth_len = strcspn(rest, "/?#");
    const char *path = rest + auth_len;
    if (auth_len == 0 || auth_len > 255) {
        return -EINVAL;
    }
    const char *host = rest, *host_end, *port = NULL;
    if (rest[0] == '[') {
        host = rest + 1;
        host_end = memchr(host, ']', auth_len - 1);
        if (host_end == NULL) {
            return -EINVAL;
        }
        if (host_end + 1 < rest + auth_len) {
            if (host_end[1] != ':') {
                return -EINVAL;
            }
            port = host_end + 2;
        }
    } else {
        host_end = memchr(rest, ':', auth_len);
        if (host_end != NULL) {
            port = host_end + 1;
        } else {
            host_end = rest + auth_len;
        }
    }
    size_t port_len = port != NULL ? (size_t)(rest + auth_len - port) : 0;
    if (host_end == host || (port != NULL && (port_len == 0 || port_len > 5 ||
                                              strspn(port, "0123456789") < port_len))) {
        return -EINVAL;
    }
    if (!c->is_ws && path[0] != '\0') {
        return -EINVAL;
    }
    c->host = strndup(host, (size_t)(host_end - host));
    c->port = port != NULL ? strndup(port, port_len) : strdup(default_port);
    c->host_header = strndup(rest, auth_len);
    c->path = strdup(path[0] == '\0' ? "/ws" : path);
    if (c->host == NULL || c->port == NULL || c->host_header == NULL || c->path == NULL) {
        return -ENOMEM;
    }
    return 0;
}

static bool len_ok(const char *s, size_t min, size_t max)
{
    size_t n = s != NULL ? strlen(s) : 0;
    return n >= min && n <= max;
}

int sb_client_create(const struct sb_client_config *cfg, struct sb_client **out)
{
    *out = NULL;
    if (cfg == NULL || cfg->url == NULL || !len_ok(cfg->token, 1, SB_CLIENT_TOKEN_MAX) ||
        !len_ok(cfg->device, 0, SB_CLIENT_DEVICE_MAX)) {
        return -EINVAL;
    }
    struct sb_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    c->fd = c->epfd = c->evfd = -1;
    c->cfg = *cfg;
    c->cfg.url = c->cfg.token = c->cfg.device = c->cfg.ca_file = c->cfg.server_name = NULL;
    struct sb_client_config d;
    sb_client_config_init(&d);
    if (c->cfg.reconnect_base_ms == 0) {
        c->cfg.reconnect_base_ms = d.reconnect_base_ms;
    }
    if (c->cfg.reconnect_max_ms == 0) {
        c->cfg.reconnect_max_ms = d.reconnect_max_ms;
    }
    if (c->cfg.connect_timeout_ms == 0) {
        c->cfg.connect_timeout_ms = d.connect_timeout_ms;
    }
    if (c->cfg.max_queue_bytes == 0) {
        c->cfg.max_queue_bytes = d.max_queue_bytes;
    }
    if (c->cfg.max_frame == 0) {
        c->cfg.max_frame = d.max_frame;
    }
    sb__convs_init(&c->convs);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&c->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    c->state = ST_WAIT;
    int rc = parse_url(c, cfg->url);
    if (rc == 0) {
        c->token = strdup(cfg->token);
        rc = c->token != NULL ? 0 : -ENOMEM;
    }
    if (rc == 0 && cfg->device != NULL) {
        snprintf(c->device, sizeof(c->device), "%s", cfg->device);
    }
    if (rc == 0 && cfg->server_name != NULL && cfg->server_name[0] != '\0') {
        if (!len_ok(cfg->server_name, 1, 255)) {
            rc = -EINVAL;
        } else if ((c->server_name = strdup(cfg->server_name)) == NULL) {
            rc = -ENOMEM;
        }
    }
    if (rc == 0 && c->is_tls) {
        rc = sb__tls_ctx_new(cfg->ca_file, cfg->insecure, c->is_ws, &c->tls_ctx);
    }
    if (rc == 0 && getrandom(&c->rng, sizeof(c->rng), 0) != sizeof(c->rng)) {
        c->rng = (uint64_t)now_ms() ^ (uint64_t)(uintptr_t)c;
    }
    c->rng |= 1; /* xorshift never leaves 0 */
    c->id_prefix = rand64(c);
    if (rc == 0) {
        c->epfd = epoll_create1(EPOLL_CLOEXEC);
        c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        rc = c->epfd < 0 || c->evfd < 0 ? -errno : 0;
    }
    if (rc == 0) {
        struct epoll_event e = {.events = EPOLLIN, .data.fd = c->evfd};
        rc = epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->evfd, &e) < 0 ? -errno : 0;
    }
    if (rc < 0) {
        c->state = ST_CLOSED;
        sb_client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void sb_client_free(struct sb_client *c)
{
    if (c == NULL) {
        return;
    }
    sb_client_stop(c);
    pthread_mutex_lock(&c->lock);
    c->state = ST_CLOSED;
    close_conn(c, -ECANCELED);
    for (struct req *r = c->reqs; r != NULL; r = c->reqs) {
        req_fail(c, r, -ECANCELED);
    }
    pthread_mutex_unlock(&c->lock);
    sb__convs_destroy(&c->convs);
    for (size_t i = 0; i < c->nsubs; i++) {
        free(c->subs[i]);
    }
    free(c->subs);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->wsmsg);
    if (c->epfd >= 0) {
        close(c->epfd);
    }
    if (c->evfd >= 0) {
        close(c->evfd);
    }
    free(c->host);
    free(c->port);
    free(c->path);
    free(c->host_header);
    free(c->token);
    free(c->server_name);
    SSL_CTX_free(c->tls_ctx);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static void *thread_main(void *arg)
{
    struct sb_client *c = arg;
    while (!atomic_load(&c->stop)) {
        int timeout = sb_client_timeout_ms(c);
        struct epoll_event ev[4];
        epoll_wait(c->epfd, ev, 4, timeout);
        if (atomic_load(&c->stop)) {
            break;
        }
        pthread_mutex_lock(&c->lock);
        c->is_processing = true;
        process_locked(c);
        c->is_processing = false;
        pthread_mutex_unlock(&c->lock);
    }
    return NULL;
}

int sb_client_start(struct sb_client *c)
{
    pthread_mutex_lock(&c->lock);
    int rc = 0;
    if (c->has_thread) {
        rc = -EALREADY;
    } else {
        atomic_store(&c->stop, false);
        rc = -pthread_create(&c->thread, NULL, thread_main, c);
        c->has_thread = rc == 0;
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

void sb_client_stop(struct sb_client *c)
{
    pthread_mutex_lock(&c->lock);
    bool has = c->has_thread;
    c->has_thread = false;
    atomic_store(&c->stop, true);
    wake(c);
    pthread_mutex_unlock(&c->lock);
    if (has) {
        pthread_join(c->thread, NULL);
    }
}

int sb_client_fd(const struct sb_client *c)
{
    return c->epfd;
}

int sb_client_timeout_ms(struct sb_client *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t now = now_ms();
    int64_t t = -1;
    switch (c->state) {
    case ST_WAIT:
        t = c->retry_at_ms > now ? (int64_t)(c->retry_at_ms - now) : 0;
        break;
    case ST_CONNECTING:
    case ST_UPGRADING:
    case ST_HELLO:
        t = c->deadline_ms > now ? (int64_t)(c->deadline_ms - now) : 0;
        break;
    case ST_READY: {
        uint64_t interval = c->ping_interval_ms ? c->ping_interval_ms : DEFAULT_PING_MS;
        uint64_t at = c->last_ping_ms <= c->last_rx_ms ? c->last_rx_ms + interval
                                                       : c->last_rx_ms + 3 * interval;
        if (c->hold_until_ms != 0 && c->hold_until_ms < at) {
            at = c->hold_until_ms;
        }
        if (c->has_gaps && now + GAP_GRACE_MS / 5 < at) {
            at = now + GAP_GRACE_MS / 5; /* check_gaps has no exact deadline to hand */
        }
        t = at > now ? (int64_t)(at - now) : 0;
        break;
    }
    default:
        break;
    }
    pthread_mutex_unlock(&c->lock);
    return t > INT32_MAX ? INT32_MAX : (int)t;
}

int sb_client_process(struct sb_client *c)
{
    pthread_mutex_lock(&c->lock);
    int rc = 0;
    if (c->has_thread) {
        rc = -EALREADY;
    } else if (c->is_processing) {
        rc = -EBUSY; /* from a callback */
    } else {
        c->is_processing = true;
        process_locked(c);
        c->is_processing = false;
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* Request helpers: each locks, builds an op, submits. */

/* "sdk-" + the client's 16 random hex digits + "-" + a counter in hex: unique per client. */
static void make_client_id(struct sb_client *c, char out[SB_CLIENT_CLIENT_ID_MAX + 1])
{
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    memcpy(p, "sdk-", 4);
    p += 4;
    for (int i = 60; i >= 0; i -= 4) {
        *p++ = hex[(c->id_prefix >> i) & 15];
    }
    *p++ = '-';
    uint64_t n = ++c->id_counter;
    char tmp[16];
    int k = 0;
    do {
        tmp[k++] = hex[n & 15];
        n >>= 4;
    } while (n != 0);
    while (k > 0) {
        *p++ = tmp[--k];
    }
    *p = '\0';
}

int sb_client_send(struct sb_client *c, const char *conv, const char *to, const void *body,
                   size_t body_len, const char *client_id, sb_client_send_cb cb, void *arg)
{
    if ((conv == NULL) == (to == NULL) || !len_ok(conv ? conv : to, 1, SB_CLIENT_CONV_MAX) ||
        (to != NULL && strlen(to) > SB_CLIENT_USER_MAX) ||
        (client_id != NULL && !len_ok(client_id, 1, SB_CLIENT_CLIENT_ID_MAX)) ||
        (body == NULL && body_len > 0) || body_len > UINT32_MAX) {
        return -EINVAL;
    }
    pthread_mutex_lock(&c->lock);
    int rc = -EMSGSIZE;
    if (body_len <= (c->max_body ? c->max_body : c->cfg.max_frame)) {
        char gen[SB_CLIENT_CLIENT_ID_MAX + 1];
        if (client_id == NULL) {
            make_client_id(c, gen);
            client_id = gen;
        }
        struct sb_op op = {.type = SB_OP_SEND};
        op.u.send.client_id = cstr(client_id);
        op.u.send.conv = cstr(conv);
        op.u.send.to = cstr(to);
        op.u.send.body.form = SB_OP_BODY_BYTES;
        op.u.send.body.data = sb_slice_from(body != NULL ? body : "", body_len);
        rc = submit(c, &op, REQ_SEND, (void *)cb, arg, NULL);
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static bool queue_bytes_ok(const struct sb_client *c)
{
    return queued_bytes(c) < c->cfg.max_queue_bytes;
}

/* Sends a request that has no answer: now when connected, else after the next WELCOME. */
static int oneway(struct sb_client *c, struct sb_op *op, bool is_kept)
{
    pthread_mutex_lock(&c->lock);
    int rc;
    if (c->state == ST_READY) {
        op->request_id = new_id(c);
        rc = queue_bytes_ok(c) ? queue_op(c, op) : -ENOBUFS;
        wake(c);
    } else if (is_kept) {
        rc = submit(c, op, REQ_ONEWAY, NULL, NULL, NULL);
    } else {
        rc = -ENOTCONN;
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int sb_client_mark(struct sb_client *c, const char *conv, uint64_t seq, int kind)
{
    if (!len_ok(conv, 1, SB_CLIENT_CONV_MAX) ||
        (kind != SB_CLIENT_RECEIPT_DELIVERED && kind != SB_CLIENT_RECEIPT_READ)) {
        return -EINVAL;
    }
    struct sb_op op = {.type = SB_OP_RECEIPT};
    op.u.receipt.seq = seq;
    op.u.receipt.kind = (uint8_t)kind;
    op.u.receipt.conv = cstr(conv);
    return oneway(c, &op, true);
}

int sb_client_typing(struct sb_client *c, const char *conv)
{
    if (!len_ok(conv, 1, SB_CLIENT_CONV_MAX)) {
        return -EINVAL;
    }
    struct sb_op op = {.type = SB_OP_TYPING};
    op.u.typing.conv = cstr(conv);
    return oneway(c, &op, false); /* stale by the time a connection is back */
}

/* Writes users into a list (lbuf must hold n * 65 + 2 bytes). */
static int users_list(const char *const *users, size_t n, uint8_t *lbuf, size_t cap,
                      struct sb_ops_list *out)
{
    if ((users == NULL && n > 0) || n > SB_CLIENT_LIST_MAX) {
        return -EINVAL;
    }
    struct sb_binproto_list_writer w;
    sb_binproto_list_init(&w, lbuf, cap);
    for (size_t i = 0; i < n; i++) {
        if (!len_ok(users[i], 1, SB_CLIENT_USER_MAX)) {
            return -EINVAL;
        }
        sb_binproto_list_add_user(&w, cstr(users[i]));
    }
    return sb_binproto_list_finish(&w, out);
}

static ssize_t sub_index(const struct sb_client *c, const char *user)
{
    for (size_t i = 0; i < c->nsubs; i++) {
        if (strcmp(c->subs[i], user) == 0) {
            return (ssize_t)i;
        }
    }
    return -1;
}

static int presence(struct sb_client *c, const char *const *users, size_t n, bool is_sub)
{
    if (n == 0) {
        return -EINVAL;
    }
    size_t cap = n * (SB_CLIENT_USER_MAX + 1) + 2;
    uint8_t *lbuf = malloc(cap);
    if (lbuf == NULL) {
        return -ENOMEM;
    }
    struct sb_op op = {.type = is_sub ? SB_OP_PRESENCE_SUB : SB_OP_PRESENCE_UNSUB};
    int rc = users_list(users, n, lbuf, cap, &op.u.presence_sub.users);
    pthread_mutex_lock(&c->lock);
    /* The set is what WELCOME subscribes to again. */
    for (size_t i = 0; rc == 0 && i < n; i++) {
        ssize_t k = sub_index(c, users[i]);
        if (is_sub && k < 0) {
            if (c->nsubs == c->subs_cap) {
                size_t ncap = c->subs_cap ? c->subs_cap * 2 : 16;
                char **v = realloc(c->subs, ncap * sizeof(*v));
                if (v == NULL) {
                    rc = -ENOMEM;
                    break;
                }
                c->subs = v;
                c->subs_cap = ncap;
            }
            c->subs[c->nsubs] = strdup(users[i]);
            if (c->subs[c->nsubs] == NULL) {
                rc = -ENOMEM;
                break;
            }
            c->nsubs++;
        } else if (!is_sub && k >= 0) {
            free(c->subs[k]);
            c->subs[k] = c->subs[--c->nsubs];
        }
    }
    if (rc == 0 && c->state == ST_READY) {
        rc = oneway(c, &op, false);
    }
    pthread_mutex_unlock(&c->lock);
    free(lbuf);
    return rc;
}

int sb_client_presence_subscribe(struct sb_client *c, const char *const *users, size_t n)
{
    return presence(c, users, n, true);
}

int sb_client_presence_unsubscribe(struct sb_client *c, const char *const *users, size_t n)
{
    return presence(c, users, n, false);
}

int sb_client_sync(struct sb_client *c, const char *conv)
{
    if (!len_ok(conv, 1, SB_CLIENT_CONV_MAX)) {
        return -EINVAL;
    }
    pthread_mutex_lock(&c->lock);
    bool created;
    struct sb__conv *cv = sb__convs_get(&c->convs, conv, strlen(conv), 0, &created);
    if (cv != NULL && !cv->is_syncing) {
        start_sync(c, cv);
    }
    pthread_mutex_unlock(&c->lock);
    return cv != NULL ? 0 : -ENOMEM;
}

/* A group request: conv (or name, for create) and an optional list of users. */
static int group_op(struct sb_client *c, enum sb_op_type type, const char *conv, const char *name,
                    const char *const *users, size_t n, bool needs_users, sb_client_conv_cb cb,
                    void *arg)
{
    if ((type != SB_OP_CONV_CREATE && !len_ok(conv, 1, SB_CLIENT_CONV_MAX)) ||
        !len_ok(name, 0, SB_CLIENT_NAME_MAX) || (needs_users && n == 0)) {
        return -EINVAL;
    }
    size_t cap = n * (SB_CLIENT_USER_MAX + 1) + 2;
    uint8_t *lbuf = malloc(cap);
    if (lbuf == NULL) {
        return -ENOMEM;
    }
    struct sb_op op = {.type = type};
    int rc = 0;
    switch (type) {
    case SB_OP_CONV_CREATE:
        op.u.conv_create.name = cstr(name);
        rc = users_list(users, n, lbuf, cap, &op.u.conv_create.members);
        break;
    case SB_OP_CONV_ADD:
    case SB_OP_CONV_REMOVE:
    case SB_OP_CONV_PROMOTE:
    case SB_OP_CONV_DEMOTE:
        op.u.conv_members.conv = cstr(conv);
        rc = users_list(users, n, lbuf, cap, &op.u.conv_members.users);
        break;
    default:
        op.u.conv_ref.conv = cstr(conv);
        op.u.conv_ref.name = cstr(name);
        break;
    }
    if (rc == 0) {
        pthread_mutex_lock(&c->lock);
        rc = submit(c, &op, REQ_CONV, (void *)cb, arg, NULL);
        pthread_mutex_unlock(&c->lock);
    }
    free(lbuf);
    return rc;
}

int sb_client_conv_create(struct sb_client *c, const char *name, const char *const *members,
                          size_t n, sb_client_conv_cb cb, void *arg)
{
    return group_op(c, SB_OP_CONV_CREATE, NULL, name, members, n, false, cb, arg);
}

int sb_client_conv_add(struct sb_client *c, const char *conv, const char *const *users, size_t n,
                       sb_client_conv_cb cb, void *arg)
{
    return group_op(c, SB_OP_CONV_ADD, conv, NULL, users, n, true, cb, arg);
}

int sb_client_conv_remove(struct sb_client *c, const char *conv, const char *const *users, size_t n,
                          sb_client_conv_cb cb, void *arg)
{
    return group_op(c, SB_OP_CONV_REMOVE, conv, NULL, users, n, true, cb, arg);
}

int sb_client_conv_promote(struct sb_client *c, const char *conv, const char *const *users,
                           size_t n, sb_client_conv_cb cb, void *arg)
{
    return group_op(c, SB_OP_CONV_PROMOTE, conv, NULL, users, n, true, cb, arg);
}

int sb_client_conv_demote(struct sb_client *c, const char *conv, const char *const *users, size_t n,
                          sb_client_conv_cb cb, void *arg)
{
    return group_op(c, SB_OP_CONV_DEMOTE, conv, NULL, users, n, true, cb, arg);
}

int sb_client_conv_leave(struct sb_client *c, const char *conv, sb_client_conv_cb cb, void *arg)
{
    return group_op(c, SB_OP_CONV_LEAVE, conv, NULL, NULL, 0, false, cb, arg);
}

int sb_client_conv_rename(struct sb_client *c, const char *conv, const char *name,
                          sb_client_conv_cb cb, void *arg)
{
    return group_op(c, SB_OP_CONV_RENAME, conv, name, NULL, 0, false, cb, arg);
}

int sb_client_conv_get(struct sb_client *c, const char *conv, sb_client_conv_cb cb, void *arg)
{
    return group_op(c, SB_OP_CONV_GET, conv, NULL, NULL, 0, false, cb, arg);
}

int sb_client_conv_list(struct sb_client *c, sb_client_convs_cb cb, void *arg)
{
    struct sb_op op = {.type = SB_OP_CONV_LIST};
    pthread_mutex_lock(&c->lock);
    int rc = submit(c, &op, REQ_CONVS, (void *)cb, arg, NULL);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int sb_client_position_set(struct sb_client *c, const char *conv, uint64_t seq)
{
    if (!len_ok(conv, 1, SB_CLIENT_CONV_MAX)) {
        return -EINVAL;
    }
    pthread_mutex_lock(&c->lock);
    bool created;
    struct sb__conv *cv = sb__convs_get(&c->convs, conv, strlen(conv), seq, &created);
    if (cv != NULL) {
        cv->delivered = seq;
        drain(c, cv);
        if (!cv->is_syncing) {
            start_sync(c, cv); /* catch up from there now (when connected) */
        }
    }
    pthread_mutex_unlock(&c->lock);
    return cv != NULL ? 0 : -ENOMEM;
}

int sb_client_position_get(struct sb_client *c, const char *conv, uint64_t *seq)
{
    if (!len_ok(conv, 1, SB_CLIENT_CONV_MAX)) {
        return -EINVAL;
    }
    pthread_mutex_lock(&c->lock);
    struct sb__conv *cv = sb__convs_find(&c->convs, conv, strlen(conv));
    if (cv != NULL) {
        *seq = cv->delivered;
    }
    pthread_mutex_unlock(&c->lock);
    return cv != NULL ? 0 : -ENOENT;
}

size_t sb_client_positions(struct sb_client *c, struct sb_client_position *out, size_t cap)
{
    pthread_mutex_lock(&c->lock);
    size_t i = 0;
    for (struct sb__conv *cv = sb__convs_next(&c->convs, NULL); cv != NULL;
         cv = sb__convs_next(&c->convs, cv), i++) {
        if (i < cap) {
            memcpy(out[i].conv, cv->conv, cv->conv_len + 1);
            out[i].seq = cv->delivered;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return i;
}

int sb_client_set_token(struct sb_client *c, const char *token)
{
    if (!len_ok(token, 1, SB_CLIENT_TOKEN_MAX)) {
        return -EINVAL;
    }
    char *t = strdup(token);
    if (t == NULL) {
        return -ENOMEM;
    }
    pthread_mutex_lock(&c->lock);
    free(c->token);
    c->token = t;
    pthread_mutex_unlock(&c->lock);
    return 0;
}

const char *sb_client_err_name(int code)
{
    const char *name = code > 0 ? sb_ops_err_name((unsigned)code) : NULL;
    return name != NULL ? name : "internal";
}

/* ---- hooks for white-box tests and benchmarks (sdk_hooks.h) ---- */

void sb__client_hook_ready(struct sb_client *c)
{
    pthread_mutex_lock(&c->lock);
    c->state = ST_READY;
    c->is_ws = false;
    c->last_rx_ms = now_ms();
    pthread_mutex_unlock(&c->lock);
}

void sb__client_hook_feed(struct sb_client *c, const uint8_t *bytes, size_t len)
{
    pthread_mutex_lock(&c->lock);
    if (len > 0 && buf_reserve(&c->in, len) == 0) {
        memcpy(c->in.data + c->in.len, bytes, len);
        c->in.len += len;
        parse_tcp(c);
        buf_reset(&c->in);
    }
    pthread_mutex_unlock(&c->lock);
}

size_t sb__client_hook_output(struct sb_client *c, uint8_t *out, size_t cap)
{
    pthread_mutex_lock(&c->lock);
    size_t n = buf_live(&c->out) < cap ? buf_live(&c->out) : cap;
    if (out != NULL && n > 0) {
        memcpy(out, c->out.data + c->out.off, n);
    }
    buf_reset(&c->out);
    pthread_mutex_unlock(&c->lock);
    return n;
}

void sb__client_hook_tick(struct sb_client *c, uint64_t advance_ms)
{
    pthread_mutex_lock(&c->lock);
    uint64_t now = now_ms() + advance_ms;
    if (c->has_gaps) {
        check_gaps(c, now);
    }
    if (c->hold_until_ms != 0 && now >= c->hold_until_ms) {
        c->hold_until_ms = 0;
        send_unsent(c);
    }
    pthread_mutex_unlock(&c->lock);
}
