/*
 * Connections: the slab, the input path (provided buffer -> app, keeping only the bytes of an
 * incomplete frame), the output queue (reference-counted chunks, one send in flight, gathered
 * writes), closing and handoff. Owner worker thread only.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/worker.h"

/* ---- slab ---------------------------------------------------------------------------------- */

static struct sb_conn *slab_get(struct sb_worker *w)
{
    if (!w->free_conns) {
        struct sb_conn **blocks = realloc(w->blocks, (w->nblocks + 1) * sizeof(*blocks));
        if (!blocks)
            return NULL;
        w->blocks = blocks;
        uint8_t *mem = aligned_alloc(64, w->conn_size * SB_CONN_BLOCK);
        if (!mem)
            return NULL;
        w->blocks[w->nblocks++] = (struct sb_conn *)mem;
        /* Thread the block onto the free list back to front so slots are used in order. */
        for (size_t i = SB_CONN_BLOCK; i-- > 0;) {
            struct sb_conn *c = (struct sb_conn *)(mem + i * w->conn_size);
            c->flags = 0;
            c->next_reap = w->free_conns;
            w->free_conns = c;
        }
    }
    struct sb_conn *c = w->free_conns;
    w->free_conns = c->next_reap;
    return c;
}

static void slab_put(struct sb_worker *w, struct sb_conn *c)
{
    assert(!(c->flags & (SB_CF_ON_FLUSH | SB_CF_ON_REAP)));
    c->flags = 0;
    c->next_reap = w->free_conns;
    w->free_conns = c;
}

struct sb_conn *sb__conn_alloc(struct sb_worker *w, int fd, const struct sb_listener *ls)
{
    struct sb_conn *c = slab_get(w);
    if (!c)
        return NULL;
    memset(c, 0, w->conn_size);
    c->w = w;
    c->ls = ls;
    c->fd = fd;
    c->flags = SB_CF_LIVE;
    c->handoff_to = -1;
    c->ip_slot = SB_NO_IP_SLOT;
    c->id = ((uint64_t)w->id << 56) | ++w->conn_seq;
    c->last_rx_ms = w->now_ms;
    atomic_fetch_add_explicit(&w->nconns, 1, memory_order_relaxed);
    return c;
}

void sb__conn_abandon(struct sb_conn *c)
{
    atomic_fetch_sub_explicit(&c->w->nconns, 1, memory_order_relaxed);
    slab_put(c->w, c);
}

/* ---- pools --------------------------------------------------------------------------------- */

struct sb_chunk *sb_chunk_new(struct sb_worker *w, size_t cap)
{
    struct sb_chunk *ch;
    if (cap <= SB_CHUNK_SMALL && w->free_chunks) {
        ch = w->free_chunks;
        w->free_chunks = ch->next_free;
    } else {
        bool pooled = cap <= SB_CHUNK_SMALL;
        size_t size = pooled ? SB_CHUNK_SMALL : cap;
        if (size > UINT32_MAX)
            return NULL;
        ch = malloc(sizeof(*ch) + size);
        if (!ch)
            return NULL;
        ch->cap = (uint32_t)size;
        ch->pooled = pooled;
    }
    ch->refs = 1;
    ch->len = 0;
    return ch;
}

void sb_chunk_unref(struct sb_worker *w, struct sb_chunk *ch)
{
    assert(ch->refs > 0);
    if (--ch->refs)
        return;
    if (ch->pooled) {
        ch->next_free = w->free_chunks;
        w->free_chunks = ch;
    } else {
        free(ch);
    }
}

static struct sb_qnode *qnode_get(struct sb_worker *w)
{
    struct sb_qnode *n = w->free_qnodes;
    if (n) {
        w->free_qnodes = n->next;
        return n;
    }
    return malloc(sizeof(*n));
}

static void qnode_put(struct sb_worker *w, struct sb_qnode *n)
{
    n->next = w->free_qnodes;
    w->free_qnodes = n;
}

static struct sb_sendctx *sendctx_get(struct sb_worker *w)
{
    struct sb_sendctx *s = w->free_sendctx;
    if (s) {
        w->free_sendctx = s->next_free;
        return s;
    }
    return malloc(sizeof(*s));
}

static void sendctx_put(struct sb_worker *w, struct sb_sendctx *s)
{
    s->next_free = w->free_sendctx;
    w->free_sendctx = s;
}

void sb__conn_free_pools(struct sb_worker *w)
{
    while (w->free_chunks) {
        struct sb_chunk *ch = w->free_chunks;
        w->free_chunks = ch->next_free;
        free(ch);
    }
    while (w->free_qnodes) {
        struct sb_qnode *n = w->free_qnodes;
        w->free_qnodes = n->next;
        free(n);
    }
    while (w->free_sendctx) {
        struct sb_sendctx *s = w->free_sendctx;
        w->free_sendctx = s->next_free;
        free(s);
    }
    for (size_t i = 0; i < w->nblocks; i++)
        free(w->blocks[i]);
    free(w->blocks);
    w->blocks = NULL;
    w->nblocks = 0;
    w->free_conns = NULL;
}

/* ---- accessors ----------------------------------------------------------------------------- */

void *sb_conn_app(struct sb_conn *c)
{
    return c->app;
}

struct sb_worker *sb_conn_worker(const struct sb_conn *c)
{
    return c->w;
}

uint64_t sb_conn_id(const struct sb_conn *c)
{
    return c->id;
}

uint64_t sb_conn_last_rx_ms(const struct sb_conn *c)
{
    return c->last_rx_ms;
}

size_t sb_conn_out_bytes(const struct sb_conn *c)
{
    return c->out_bytes;
}

bool sb_conn_is_closing(const struct sb_conn *c)
{
    return c->flags & (SB_CF_CLOSING | SB_CF_DRAINING);
}

/* ---- lists --------------------------------------------------------------------------------- */

/* Each list has its own link: one connection is often on both in the same iteration. */
static void want_flush(struct sb_conn *c)
{
    if (c->flags & (SB_CF_ON_FLUSH | SB_CF_CLOSING))
        return; /* a closing connection's output is dropped; it must not be on the list */
    c->flags |= SB_CF_ON_FLUSH;
    c->next_flush = c->w->flush_head;
    c->w->flush_head = c;
}

static void want_reap(struct sb_conn *c)
{
    if (c->flags & SB_CF_ON_REAP)
        return;
    c->flags |= SB_CF_ON_REAP;
    c->next_reap = c->w->reap_head;
    c->w->reap_head = c;
}

/* Cancels an armed receive once; its final completion clears SB_CF_RECV. */
static void stop_reading(struct sb_conn *c)
{
    if ((c->flags & SB_CF_RECV) && !(c->flags & SB_CF_CANCELLED)) {
        c->flags |= SB_CF_CANCELLED;
        sb__io_cancel(c->w, sb__ud(c, SB_OP_RECV));
    }
}

/* ---- input --------------------------------------------------------------------------------- */

static int input_grow(struct sb_conn *c, size_t need)
{
    if (need <= c->in_cap)
        return 0;
    if (need > UINT32_MAX)
        return -EMSGSIZE;
    size_t cap = c->in_cap ? c->in_cap : 512;
    while (cap < need)
        cap *= 2;
    if (cap > UINT32_MAX)
        cap = UINT32_MAX;
    uint8_t *in = realloc(c->in, cap);
    if (!in)
        return -ENOMEM;
    c->in = in;
    c->in_cap = (uint32_t)cap;
    return 0;
}

int sb_conn_reserve_input(struct sb_conn *c, size_t total)
{
    return input_grow(c, total);
}

static int input_append(struct sb_conn *c, const uint8_t *data, size_t len)
{
    int r = input_grow(c, (size_t)c->in_len + len);
    if (r < 0)
        return r;
    memcpy(c->in + c->in_len, data, len);
    c->in_len += (uint32_t)len;
    return 0;
}

static void input_release(struct sb_conn *c)
{
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
}

static bool can_deliver(const struct sb_conn *c)
{
    return !(c->flags &
             (SB_CF_CLOSING | SB_CF_DRAINING | SB_CF_PAUSED | SB_CF_HANDOFF | SB_CF_HELD));
}

/* Arms a receive if the connection should be reading and is not. The SQE leaves with the
 * loop's next submission, like everything else queued in this iteration. */
static void rearm(struct sb_conn *c)
{
    if (!(c->flags & SB_CF_RECV) && can_deliver(c))
        sb__io_arm_recv(c->w, c);
}

/* Called after queuing output from on_data: stop reading while the peer is not keeping up. */
static void check_backpressure(struct sb_conn *c)
{
    if (c->out_bytes > c->w->e->cfg.send_queue_limit && !(c->flags & SB_CF_PAUSED)) {
        c->flags |= SB_CF_PAUSED;
        stop_reading(c);
    }
}

/* Hands data to the app; returns the bytes it consumed (all of them when it closed). */
static size_t deliver(struct sb_conn *c, uint8_t *data, size_t len)
{
    ssize_t n = c->ls->ops->on_data(c, data, len);
    if (n < 0) {
        sb_conn_close(c, (int)n);
        return len;
    }
    assert((size_t)n <= len);
    check_backpressure(c);
    return (size_t)n;
}

/* Offers the buffered input to the app again (after a pause or a handoff). */
static void deliver_buffered(struct sb_conn *c)
{
    if (!c->in_len || !can_deliver(c))
        return;
    size_t used = deliver(c, c->in, c->in_len);
    if (c->flags & SB_CF_CLOSING) {
        input_release(c);
        return;
    }
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= (uint32_t)used;
    if (!c->in_len)
        input_release(c);
}

void sb_conn_hold_input(struct sb_conn *c)
{
    c->flags |= SB_CF_HELD;
    stop_reading(c);
}

void sb_conn_release_input(struct sb_conn *c)
{
    if (!(c->flags & SB_CF_HELD))
        return;
    c->flags &= (uint16_t)~SB_CF_HELD;
    deliver_buffered(c);
    rearm(c);
}

void sb_conn_deliver(struct sb_conn *c, uint8_t *data, size_t len)
{
    if (c->flags & (SB_CF_CLOSING | SB_CF_DRAINING))
        return; /* nobody will read it */
    if (c->in_len || !can_deliver(c)) {
        /* Either an incomplete frame is pending, or the bytes must wait (paused, moving). */
        int r = input_append(c, data, len);
        if (r < 0) {
            sb_conn_close(c, r);
            return;
        }
        deliver_buffered(c);
        return;
    }
    size_t used = deliver(c, data, len);
    if (used < len && !(c->flags & SB_CF_CLOSING)) {
        int r = input_append(c, data + used, len - used);
        if (r < 0)
            sb_conn_close(c, r);
    }
}

static void conn_input(struct sb_conn *c, uint8_t *data, size_t len)
{
    c->last_rx_ms = c->w->now_ms;
    if (!c->ls->tp) {
        sb_conn_deliver(c, data, len);
        return;
    }
    if (c->flags & (SB_CF_CLOSING | SB_CF_DRAINING))
        return;
    int r = c->ls->tp->recv(c, c->tp, data, len);
    if (r < 0)
        sb_conn_close(c, r);
}

void sb__conn_on_recv(struct sb_conn *c, int res, bool more, int bid)
{
    struct sb_worker *w = c->w;
    /* Clear the armed flag first, so a close from inside on_data cancels nothing stale. */
    if (!more)
        c->flags &= (uint16_t)~SB_CF_RECV;
    sb__stat_add(&w->st_recvs, 1);
    if (bid >= 0) {
        if (res > 0) {
            sb__stat_add(&w->st_bytes_in, (uint64_t)res);
            conn_input(c, sb__io_buffer(w, (unsigned)bid), (size_t)res);
        }
        sb__io_recycle(w, (unsigned)bid);
    }
    if (res == 0) {
        sb_conn_close(c, 0); /* the peer closed its side */
    } else if (res < 0 && res != -ENOBUFS && res != -ECANCELED) {
        sb_conn_close(c, res);
    } else if (!(c->flags & SB_CF_RECV)) {
        rearm(c); /* single-shot mode, or the multishot ended (no buffers) */
    }
    if ((c->flags & (SB_CF_CLOSING | SB_CF_DRAINING | SB_CF_HANDOFF)) && !(c->flags & SB_CF_RECV))
        want_reap(c);
}

/* ---- output -------------------------------------------------------------------------------- */

static int queue_node(struct sb_conn *c, struct sb_chunk *ch, uint32_t off, uint32_t len)
{
    struct sb_qnode *n = qnode_get(c->w);
    if (!n)
        return -ENOMEM;
    n->next = NULL;
    n->ch = ch;
    n->off = off;
    n->len = len;
    if (c->out_tail)
        c->out_tail->next = n;
    else
        c->out_head = n;
    c->out_tail = n;
    c->out_bytes += len;
    if (c->ls->tp && !c->unsealed && !(c->flags & SB_CF_SEALING))
        c->unsealed = n;
    if (!(c->flags & SB_CF_SEND))
        want_flush(c);
    return 0;
}

uint8_t *sb_conn_out_reserve(struct sb_conn *c, size_t len)
{
    struct sb_qnode *t = c->out_tail;
    /* Append to the tail chunk when this connection owns it alone and the tail node ends where
     * the chunk's data ends. Bytes a send in flight already covers are never moved. With a
     * transport, application bytes join only application bytes, and wire bytes wire bytes. */
    bool same_kind =
        !c->ls->tp || ((c->flags & SB_CF_SEALING) ? c->unsealed == NULL : c->unsealed != NULL);
    if (t && same_kind && t->ch->refs == 1 && t->off + t->len == t->ch->len &&
        t->ch->cap - t->ch->len >= len) {
        uint8_t *p = t->ch->data + t->ch->len;
        t->ch->len += (uint32_t)len;
        t->len += (uint32_t)len;
        c->out_bytes += len;
        if (!(c->flags & SB_CF_SEND))
            want_flush(c);
        return p;
    }
    struct sb_chunk *ch = sb_chunk_new(c->w, len);
    if (!ch)
        return NULL;
    ch->len = (uint32_t)len;
    if (queue_node(c, ch, 0, (uint32_t)len) < 0) {
        sb_chunk_unref(c->w, ch);
        return NULL;
    }
    return ch->data;
}

int sb_conn_write(struct sb_conn *c, const void *data, size_t len)
{
    uint8_t *p = sb_conn_out_reserve(c, len);
    if (!p)
        return -ENOMEM;
    memcpy(p, data, len);
    return 0;
}

int sb_conn_write_wire(struct sb_conn *c, const void *data, size_t len)
{
    if ((c->flags & SB_CF_SEALING) || !c->unsealed) {
        /* With no application bytes waiting, wire bytes simply go at the tail. */
        uint16_t sealing = c->flags & SB_CF_SEALING;
        c->flags |= SB_CF_SEALING;
        int r = sb_conn_write(c, data, len);
        c->flags = (uint16_t)((c->flags & ~SB_CF_SEALING) | sealing);
        return r;
    }
    /* From the recv hook with application bytes queued and not sealed yet: the transport made
     * these wire bytes first (a TLS handshake or key update record), so they go out before the
     * application bytes, which are sealed after them. */
    struct sb_chunk *ch = sb_chunk_new(c->w, len);
    struct sb_qnode *n = ch ? qnode_get(c->w) : NULL;
    if (!n) {
        if (ch)
            sb_chunk_unref(c->w, ch);
        return -ENOMEM;
    }
    memcpy(ch->data, data, len);
    ch->len = (uint32_t)len;
    *n = (struct sb_qnode){.next = c->unsealed, .ch = ch, .off = 0, .len = (uint32_t)len};
    struct sb_qnode **link = &c->out_head;
    while (*link != c->unsealed)
        link = &(*link)->next;
    *link = n;
    c->out_bytes += len;
    if (!(c->flags & SB_CF_SEND))
        want_flush(c);
    return 0;
}

const struct sb_transport *sb_conn_transport(const struct sb_conn *c)
{
    return c->ls->tp;
}

int sb_conn_send_chunk(struct sb_conn *c, struct sb_chunk *ch)
{
    sb_chunk_ref(ch);
    int r = queue_node(c, ch, 0, ch->len);
    if (r < 0)
        sb_chunk_unref(c->w, ch);
    return r;
}

static void queue_release(struct sb_conn *c)
{
    struct sb_qnode *n = c->out_head;
    while (n) {
        struct sb_qnode *next = n->next;
        sb_chunk_unref(c->w, n->ch);
        qnode_put(c->w, n);
        n = next;
    }
    c->out_head = c->out_tail = c->unsealed = NULL;
    c->out_bytes = 0;
}

/* Replaces the queued application bytes with the wire bytes the transport makes of them. */
static int seal_pending(struct sb_conn *c)
{
    struct sb_qnode *plain = c->unsealed, **link = &c->out_head;
    while (*link != plain)
        link = &(*link)->next;
    /* Detach the application bytes; the seal hook appends wire bytes in their place. */
    *link = NULL;
    /* link is the `next` field, the first member, of the node before: that node is the tail. */
    c->out_tail = link == &c->out_head ? NULL : (struct sb_qnode *)link;
    c->unsealed = NULL;
    c->flags |= SB_CF_SEALING;
    int r = 0;
    struct iovec iov[SB_SEND_IOV_MAX];
    struct sb_qnode *n = plain;
    while (n && r == 0) {
        size_t k = 0;
        for (; n && k < SB_SEND_IOV_MAX; n = n->next, k++) {
            iov[k].iov_base = n->ch->data + n->off;
            iov[k].iov_len = n->len;
            c->out_bytes -= n->len;
        }
        r = c->ls->tp->seal(c, c->tp, iov, k);
    }
    c->flags &= (uint16_t)~SB_CF_SEALING;
    while (plain) {
        struct sb_qnode *next = plain->next;
        sb_chunk_unref(c->w, plain->ch);
        qnode_put(c->w, plain);
        plain = next;
    }
    return r;
}

static void start_send(struct sb_conn *c)
{
    if (c->unsealed) {
        int r = seal_pending(c);
        if (r < 0) {
            sb_conn_close(c, r);
            return;
        }
        if (!c->out_head)
            return;
    }
    struct sb_sendctx *ctx = sendctx_get(c->w);
    if (!ctx) {
        sb_conn_close(c, -ENOMEM);
        return;
    }
    size_t n = 0;
    for (struct sb_qnode *q = c->out_head; q && n < SB_SEND_IOV_MAX; q = q->next) {
        ctx->iov[n].iov_base = q->ch->data + q->off;
        ctx->iov[n].iov_len = q->len;
        n++;
    }
    memset(&ctx->mh, 0, sizeof(ctx->mh));
    ctx->mh.msg_iov = ctx->iov;
    ctx->mh.msg_iovlen = n;
    c->send = ctx;
    sb__io_send(c->w, c, ctx);
}

void sb__conn_flush(struct sb_worker *w)
{
    struct sb_conn *c = w->flush_head;
    w->flush_head = NULL;
    while (c) {
        struct sb_conn *next = c->next_flush;
        c->flags &= (uint16_t)~SB_CF_ON_FLUSH;
        if (!(c->flags & (SB_CF_SEND | SB_CF_CLOSING | SB_CF_CONNECTING)) && c->out_head)
            start_send(c);
        c = next;
    }
}

/* Drops the first `sent` bytes of the queue. */
static void queue_consume(struct sb_conn *c, size_t sent)
{
    c->out_bytes -= sent;
    while (sent) {
        struct sb_qnode *n = c->out_head;
        assert(n != NULL);
        size_t take = n->len < sent ? n->len : sent;
        n->off += (uint32_t)take;
        n->len -= (uint32_t)take;
        sent -= take;
        if (n->len == 0) {
            c->out_head = n->next;
            if (!c->out_head)
                c->out_tail = NULL;
            sb_chunk_unref(c->w, n->ch);
            qnode_put(c->w, n);
        }
    }
}

void sb__conn_on_send(struct sb_conn *c, int res)
{
    struct sb_worker *w = c->w;
    c->flags &= (uint16_t)~SB_CF_SEND;
    sendctx_put(w, c->send);
    c->send = NULL;
    if (c->flags & SB_CF_CLOSING) {
        want_reap(c);
        return;
    }
    if (res < 0) {
        sb_conn_close(c, res);
        return;
    }
    sb__stat_add(&w->st_sends, 1);
    sb__stat_add(&w->st_bytes_out, (uint64_t)res);
    queue_consume(c, (size_t)res);
    if (c->out_head) {
        start_send(c); /* a short send, or more was queued meanwhile */
    } else if (c->flags & (SB_CF_DRAINING | SB_CF_HANDOFF)) {
        want_reap(c);
    }
    if ((c->flags & SB_CF_PAUSED) && c->out_bytes <= w->e->cfg.send_queue_limit / 2) {
        c->flags &= (uint16_t)~SB_CF_PAUSED;
        deliver_buffered(c);
        rearm(c);
    }
}

void sb__conn_on_connect(struct sb_conn *c, int res)
{
    c->flags &= (uint16_t)~SB_CF_CONNECTING;
    free(c->in); /* the peer address, kept for the operation */
    c->in = NULL;
    if (c->flags & SB_CF_CLOSING) {
        want_reap(c);
        return;
    }
    if (res < 0) {
        sb_conn_close(c, res);
        return;
    }
    c->last_rx_ms = c->w->now_ms;
    c->ls->ops->on_open(c);
    rearm(c);
    if (c->out_head)
        want_flush(c); /* what was queued while connecting */
}

/* ---- closing ------------------------------------------------------------------------------- */

void sb_conn_close(struct sb_conn *c, int err)
{
    if (c->flags & SB_CF_CLOSING)
        return;
    c->flags |= SB_CF_CLOSING;
    c->close_err = err;
    /* shutdown() makes a send stuck on a peer that stopped reading fail now, and tells the
     * peer at once; the fd itself is closed only when nothing is in flight on it. */
    shutdown(c->fd, SHUT_RDWR);
    stop_reading(c);
    sb__wheel_del(&c->w->wheel, &c->timer);
    want_reap(c);
}

void sb_conn_close_after_flush(struct sb_conn *c)
{
    if (c->flags & (SB_CF_CLOSING | SB_CF_DRAINING))
        return;
    c->flags |= SB_CF_DRAINING;
    stop_reading(c);
    if (!c->out_head && !(c->flags & SB_CF_SEND))
        sb_conn_close(c, 0);
}

int sb_conn_handoff(struct sb_conn *c, unsigned to)
{
    if (to >= c->w->e->nworkers)
        return -EINVAL;
    if (c->flags & (SB_CF_CLOSING | SB_CF_DRAINING | SB_CF_HANDOFF))
        return -EALREADY;
    c->flags |= SB_CF_HANDOFF;
    c->handoff_to = (int16_t)to;
    stop_reading(c);
    sb__wheel_del(&c->w->wheel, &c->timer);
    want_reap(c);
    return 0;
}

struct sb_handoff_msg {
    int fd;
    const struct sb_listener *ls;
    void *tp;
    uint64_t id;
    uint32_t ip_slot;
    uint8_t *in;
    uint32_t in_len, in_cap;
    uint8_t app[];
};

static void send_handoff(struct sb_conn *c)
{
    struct sb_worker *w = c->w;
    size_t app_size = w->e->cfg.conn_app_size;
    struct sb_handoff_msg *m = malloc(sizeof(*m) + app_size);
    if (!m) {
        c->flags &= (uint16_t)~SB_CF_HANDOFF;
        sb_conn_close(c, -ENOMEM);
        return;
    }
    m->fd = c->fd;
    m->ls = c->ls;
    m->tp = c->tp;
    m->id = c->id;
    m->ip_slot = c->ip_slot;
    /* The input buffer changes owner with the message; jemalloc frees across threads. */
    m->in = c->in;
    m->in_len = c->in_len;
    m->in_cap = c->in_cap;
    memcpy(m->app, c->app, app_size);
    int r = sb_worker_post(w, (unsigned)c->handoff_to, sb__conn_handoff_arrive, m);
    if (r < 0) {
        free(m);
        c->flags &= (uint16_t)~SB_CF_HANDOFF;
        sb_conn_close(c, r);
        return;
    }
    c->in = NULL;
    atomic_fetch_sub_explicit(&w->nconns, 1, memory_order_relaxed);
    slab_put(w, c);
}

void sb__conn_handoff_arrive(struct sb_worker *w, void *arg)
{
    struct sb_handoff_msg *m = arg;
    struct sb_conn *c = sb__conn_alloc(w, m->fd, m->ls);
    if (!c) {
        sb_log(SB_LOG_ERROR, -ENOMEM, "handoff of connection %llx refused",
               (unsigned long long)m->id);
        close(m->fd);
        free(m->in);
        sb__engine_uncount_address(w->e, m->ip_slot);
        free(m);
        atomic_fetch_sub_explicit(&w->e->nconns, 1, memory_order_relaxed);
        return;
    }
    w->conn_seq--; /* the connection keeps its id */
    sb__stat_add(&w->st_handoffs_in, 1);
    c->id = m->id;
    c->tp = m->tp;
    c->ip_slot = m->ip_slot;
    c->in = m->in;
    c->in_len = m->in_len;
    c->in_cap = m->in_cap;
    memcpy(c->app, m->app, w->e->cfg.conn_app_size);
    free(m);
    c->ls->ops->on_handoff(c);
    if (w->stopping && !(c->flags & SB_CF_CLOSING)) {
        c->flags |= SB_CF_SHUTDOWN;
        c->ls->ops->on_shutdown(c);
    }
    deliver_buffered(c);
    if (can_deliver(c))
        rearm(c);
}

/* Frees a connection whose operations have all completed. */
static void finish(struct sb_conn *c)
{
    struct sb_worker *w = c->w;
    close(c->fd);
    queue_release(c);
    input_release(c);
    if (c->ls->tp)
        c->ls->tp->close(c, c->tp);
    c->ls->ops->on_close(c, c->close_err);
    atomic_fetch_sub_explicit(&w->nconns, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&w->e->nconns, 1, memory_order_relaxed);
    sb__engine_uncount_address(w->e, c->ip_slot);
    slab_put(w, c);
}

void sb__conn_reap(struct sb_worker *w)
{
    struct sb_conn *c = w->reap_head;
    w->reap_head = NULL;
    while (c) {
        struct sb_conn *next = c->next_reap;
        c->flags &= (uint16_t)~SB_CF_ON_REAP;
        if (c->flags & (SB_CF_RECV | SB_CF_SEND | SB_CF_CONNECTING)) {
            /* Still in flight: its completion puts it back on this list. */
        } else if (c->flags & SB_CF_CLOSING) {
            finish(c);
        } else if (c->flags & SB_CF_HANDOFF) {
            if (c->out_head)
                want_flush(c); /* move once the queued output is out */
            else
                send_handoff(c);
        } else if ((c->flags & SB_CF_DRAINING) && !c->out_head) {
            sb_conn_close(c, 0);
        }
        c = next;
    }
}

/* ---- timers and shutdown ------------------------------------------------------------------- */

void sb_conn_set_timer(struct sb_conn *c, uint64_t ms)
{
    if (ms == 0)
        sb__wheel_del(&c->w->wheel, &c->timer);
    else if (!(c->flags & SB_CF_CLOSING))
        sb__wheel_add(&c->w->wheel, &c->timer, c->w->now_ms + ms);
}

void sb__conn_timer_fired(struct sb_timer *t, void *ctx)
{
    struct sb_conn *c = (struct sb_conn *)((char *)t - offsetof(struct sb_conn, timer));
    (void)ctx;
    if (!(c->flags & (SB_CF_CLOSING | SB_CF_HANDOFF)))
        c->ls->ops->on_timer(c);
}

void sb__conn_shutdown_all(struct sb_worker *w, bool force)
{
    for (size_t b = 0; b < w->nblocks; b++) {
        uint8_t *mem = (uint8_t *)w->blocks[b];
        for (size_t i = 0; i < SB_CONN_BLOCK; i++) {
            struct sb_conn *c = (struct sb_conn *)(mem + i * w->conn_size);
            if (!(c->flags & SB_CF_LIVE) || (c->flags & SB_CF_CLOSING))
                continue;
            if (force) {
                sb_conn_close(c, -ETIMEDOUT);
            } else if (!(c->flags & SB_CF_SHUTDOWN)) {
                c->flags |= SB_CF_SHUTDOWN;
                c->ls->ops->on_shutdown(c);
            }
        }
    }
}
