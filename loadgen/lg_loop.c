#include "loadgen/lg_loop.h"
#include "loadgen/lg_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* What a completion is for: the low bits of user_data (connections are 8-byte aligned). */
enum {
    OP_CONNECT = 0,
    OP_RECV = 1,
    OP_SEND = 2,
    OP_IGNORE = 3,
    OP_MASK = 3,
};

#define RING_ENTRIES 4096
#define RING_CQ_ENTRIES 32768
#define BUF_COUNT 2048 /* a power of two (ring mask) */
#define BUF_SIZE 4096
#define COMPAT_RX_SIZE 4096
#define LG_TX_MAX (64u << 20)
#define START_BATCH 1024         /* connects started per iteration, so the loop stays live */
#define MAX_WAIT_NS 100000000ULL /* wake at least every 100 ms to notice a stop request */
#define PUBLISH_NS 50000000ULL

static _Atomic int stop_requested;

void lg_loop_request_stop(void)
{
    atomic_store_explicit(&stop_requested, 1, memory_order_relaxed);
}

bool lg_loop_stop_requested(void)
{
    return atomic_load_explicit(&stop_requested, memory_order_relaxed) != 0;
}

uint64_t lg_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

const struct lg_scenario *lg_scenario_for(enum lg_mode mode)
{
    switch (mode) {
    case LG_MODE_HOLD:
        return &lg_scenario_hold;
    case LG_MODE_ECHO:
        return &lg_scenario_echo;
    case LG_MODE_LATENCY:
        return &lg_scenario_latency;
    case LG_MODE_CHAT:
        return &lg_scenario_chat;
    case LG_MODE_FANOUT:
        return &lg_scenario_fanout;
    case LG_MODE_COUNT:
        break;
    }
    return NULL;
}

static inline uint64_t ud_make(struct lg_conn *c, unsigned op)
{
    return (uint64_t)(uintptr_t)c | op;
}

static inline struct lg_buf *tx_collecting(struct lg_conn *c)
{
    return &c->tx[(c->flags & LG_CF_TXB) ? 1 : 0];
}

static inline struct lg_buf *tx_inflight(struct lg_conn *c)
{
    return &c->tx[(c->flags & LG_CF_TXB) ? 0 : 1];
}

/*
 * Returns a free SQE, submitting what is queued when the ring is full. NULL only when the
 * kernel refuses the submission too (it cannot take more until we reap completions).
 */
static struct io_uring_sqe *get_sqe(struct lg_worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    if (!sqe) {
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    return sqe;
}

static enum lg_counter reason_for_errno(struct lg_worker *w, int err)
{
    switch (err) {
    case ECONNREFUSED:
        return LG_C_FAIL_REFUSED;
    case ETIMEDOUT:
    case ECANCELED:
        return LG_C_FAIL_TIMEOUT;
    case ECONNRESET:
    case ECONNABORTED:
    case EPIPE:
        return LG_C_FAIL_RESET;
    case EMFILE:
    case ENFILE:
        return LG_C_FAIL_FDLIMIT;
    case EADDRNOTAVAIL:
    case EADDRINUSE:
        return LG_C_FAIL_PORTS;
    case ENETUNREACH:
    case EHOSTUNREACH:
        return LG_C_FAIL_UNREACHABLE;
    default:
        if (w->stats.errno_sample == 0)
            w->stats.errno_sample = err;
        return LG_C_FAIL_OTHER;
    }
}

static void conn_release(struct lg_conn *c)
{
    free(c->hs);
    free(c->rxbuf);
    free(c->tx[0].data);
    free(c->tx[1].data);
    free(c->rx.gather);
    c->rx.gather = NULL;
    lg_bin_rx_free(&c->brx);
    c->hs = NULL;
    c->rxbuf = NULL;
    memset(c->tx, 0, sizeof(c->tx));
}

/* Closes the socket; only called once nothing is in flight on it (or the ring is going away). */
static void conn_finish(struct lg_worker *w, struct lg_conn *c)
{
    if (c->flags & LG_CF_ABORT) {
        struct linger lin = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin));
    }
    close(c->fd);
    c->fd = -1;
    c->state = LG_CS_DONE;
    w->active--;
    conn_release(c);
}

static void maybe_finish(struct lg_worker *w, struct lg_conn *c)
{
    if (c->state == LG_CS_CLOSING && !(c->flags & LG_CF_OPS))
        conn_finish(w, c);
}

/* Ends reads and writes on c so that every operation in flight completes soon. */
static void conn_shut(struct lg_worker *w, struct lg_conn *c)
{
    if (c->flags & LG_CF_SHUT)
        return;
    c->flags |= LG_CF_SHUT;
    if (c->flags & LG_CF_CONNECT) {
        /* shutdown(2) does not reliably end a SYN in flight; cancelling the connect does. */
        struct io_uring_sqe *sqe = get_sqe(w);
        if (sqe) {
            io_uring_prep_cancel64(sqe, ud_make(c, OP_CONNECT), 0);
            io_uring_sqe_set_data64(sqe, OP_IGNORE);
        }
    } else if (c->flags & (LG_CF_RECV | LG_CF_SEND)) {
        shutdown(c->fd, SHUT_RDWR);
    }
}

/* Moves c to LG_CS_CLOSING, keeping the open/pending counts right. */
static void conn_leave(struct lg_worker *w, struct lg_conn *c)
{
    if (c->state == LG_CS_CONNECTING || c->state == LG_CS_HANDSHAKE)
        w->pending--;
    else if (c->state == LG_CS_OPEN)
        w->open--;
    c->state = LG_CS_CLOSING;
}

void lg_conn_fail(struct lg_worker *w, struct lg_conn *c, enum lg_counter reason)
{
    if (c->state != LG_CS_CONNECTING && c->state != LG_CS_HANDSHAKE)
        return;
    w->stats.c[reason]++;
    conn_leave(w, c);
    c->flags |= LG_CF_ABORT;
    conn_shut(w, c);
    maybe_finish(w, c);
}

void lg_conn_drop(struct lg_worker *w, struct lg_conn *c, enum lg_counter why, bool graceful)
{
    if (c->state != LG_CS_OPEN)
        return;
    if (why != LG_C_COUNT)
        w->stats.c[why]++;
    conn_leave(w, c);
    if (w->scn->conn_lost)
        w->scn->conn_lost(w, c);
    if (!graceful) {
        c->flags |= LG_CF_ABORT;
        conn_shut(w, c);
    }
    maybe_finish(w, c);
}

void lg_conn_established(struct lg_worker *w, struct lg_conn *c)
{
    lg_hist_record(&w->stats.h[LG_H_HANDSHAKE], w->now - c->t_start);
    w->stats.c[LG_C_ESTABLISHED]++;
    w->pending--;
    w->open++;
    if (w->open > w->stats.c[LG_C_PEAK_OPEN])
        w->stats.c[LG_C_PEAK_OPEN] = w->open;
    w->last_established = w->now;
    c->state = LG_CS_OPEN;
    free(c->hs);
    c->hs = NULL;
    /* Binary frames arrive whole (lg_bin.h): the gather buffer is for the JSON protocol. */
    if (w->scn->gather && !c->rx.gather && w->cfg->wire == LG_WIRE_WS) {
        c->rx.gather = malloc(w->scn->gather);
        if (!c->rx.gather) {
            lg_conn_drop(w, c, LG_C_DROPPED, false);
            return;
        }
        c->rx.gather_cap = w->scn->gather;
    }
    if (w->scn->established)
        w->scn->established(w, c);
}

/* An I/O error on c: a failed attempt before the handshake ended, a drop after. */
static void conn_io_error(struct lg_worker *w, struct lg_conn *c, int err)
{
    if (c->state == LG_CS_OPEN)
        lg_conn_drop(w, c, LG_C_DROPPED, false);
    else
        lg_conn_fail(w, c, reason_for_errno(w, err));
}

uint8_t *lg_conn_tx_reserve(struct lg_worker *w, struct lg_conn *c, size_t n)
{
    struct lg_buf *b = tx_collecting(c);
    if (b->cap - b->len >= n)
        return b->data + b->len;
    size_t need = (size_t)b->len + n;
    if (need > LG_TX_MAX)
        return NULL;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    /* Only the collecting buffer ever moves: the kernel may still read the in-flight one. */
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return NULL;
    b->data = p;
    b->cap = (uint32_t)cap;
    return b->data + b->len;
}

void lg_conn_tx_commit(struct lg_worker *w, struct lg_conn *c, size_t n)
{
    tx_collecting(c)->len += (uint32_t)n;
    if (!(c->flags & LG_CF_FLUSH)) {
        c->flags |= LG_CF_FLUSH;
        c->flush_next = w->flush_head;
        w->flush_head = c;
    }
}

int lg_conn_send(struct lg_worker *w, struct lg_conn *c, const void *payload, size_t len)
{
    return lg_conn_send_op(w, c, SB_WS_BINARY, payload, len);
}

int lg_conn_send_op(struct lg_worker *w, struct lg_conn *c, uint8_t opcode, const void *payload,
                    size_t len)
{
    int err = w->proto->send(w, c, opcode, payload, len);
    if (err < 0)
        lg_conn_drop(w, c, LG_C_DROPPED, false);
    return err;
}

int lg_conn_send_frame(struct lg_worker *w, struct lg_conn *c, const struct sb_op *op)
{
    int err = w->proto->send_op(w, c, op);
    if (err < 0)
        lg_conn_drop(w, c, LG_C_DROPPED, false);
    return err;
}

void lg_conn_half_close(struct lg_worker *w, struct lg_conn *c)
{
    (void)w;
    if (c->fd < 0 || (c->flags & LG_CF_SHUT))
        return;
    if (!(c->flags & LG_CF_SEND) && tx_collecting(c)->len == 0)
        shutdown(c->fd, SHUT_WR);
    else
        c->flags |= LG_CF_HALF_CLOSE; /* on_send does it once the queue drains */
}

static void send_inflight(struct lg_worker *w, struct lg_conn *c)
{
    struct lg_buf *b = tx_inflight(c);
    struct io_uring_sqe *sqe = get_sqe(w);
    if (!sqe) {
        conn_io_error(w, c, EBUSY);
        return;
    }
    io_uring_prep_send(sqe, c->fd, b->data + c->tx_off, b->len - c->tx_off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ud_make(c, OP_SEND));
    c->flags |= LG_CF_SEND;
}

/* Sends everything collected so far as one operation; new frames collect in the other buffer. */
static void conn_send(struct lg_worker *w, struct lg_conn *c)
{
    c->flags ^= LG_CF_TXB;
    c->tx_off = 0;
    send_inflight(w, c);
}

static void flush_sends(struct lg_worker *w)
{
    struct lg_conn *c;
    while ((c = w->flush_head) != NULL) {
        w->flush_head = c->flush_next;
        c->flags &= (uint16_t)~LG_CF_FLUSH;
        if (c->fd >= 0 && !(c->flags & (LG_CF_SEND | LG_CF_SHUT)) && tx_collecting(c)->len > 0)
            conn_send(w, c);
    }
}

static void arm_recv(struct lg_worker *w, struct lg_conn *c)
{
    if (!w->bufring && !c->rxbuf) {
        c->rxbuf = malloc(COMPAT_RX_SIZE);
        if (!c->rxbuf) {
            conn_io_error(w, c, ENOMEM);
            return;
        }
    }
    struct io_uring_sqe *sqe = get_sqe(w);
    if (!sqe) {
        conn_io_error(w, c, EBUSY);
        return;
    }
    if (w->bufring) {
        if (w->multishot)
            io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
        else
            io_uring_prep_recv(sqe, c->fd, NULL, BUF_SIZE, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = 0;
    } else {
        io_uring_prep_recv(sqe, c->fd, c->rxbuf, COMPAT_RX_SIZE, 0);
    }
    io_uring_sqe_set_data64(sqe, ud_make(c, OP_RECV));
    c->flags |= LG_CF_RECV;
}

static bool wants_recv(const struct lg_conn *c)
{
    return !(c->flags & (LG_CF_RECV | LG_CF_SHUT)) &&
           (c->state == LG_CS_HANDSHAKE || c->state == LG_CS_OPEN || c->state == LG_CS_CLOSING);
}

static void conn_start(struct lg_worker *w, struct lg_conn *c)
{
    const struct lg_config *cfg = w->cfg;
    w->stats.c[LG_C_ATTEMPTED]++;
    c->t_start = w->now;
    /* Blocking sockets: io_uring polls for readiness itself and never returns EAGAIN. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        w->stats.c[reason_for_errno(w, errno)]++;
        c->state = LG_CS_DONE;
        return;
    }
    c->fd = fd;
    c->state = LG_CS_CONNECTING;
    w->active++;
    w->pending++;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (w->scn->lazy_ack) {
        /* TCP_QUICKACK 0 puts the socket in delayed-ACK ("pingpong") mode before connect, so the
         * kernel holds the ACK of the SYN-ACK for the data that follows: the upgrade request
         * carries it, and each connection costs both ends one segment less on loopback. */
        int zero = 0;
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof(zero));
    }
    if (cfg->sources > 0) {
        /* Without NO_PORT, bind() picks the port for the source address alone, and 28k ports
         * would cap every source address; with it, the port is chosen at connect() time per
         * destination, so each (source, target) pair gets the whole range. */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(ntohl(cfg->source_from.s_addr) + c->id % cfg->sources);
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
            lg_conn_fail(w, c, reason_for_errno(w, errno));
            return;
        }
    }
    const struct lg_target *t = &cfg->targets[c->id % cfg->ntargets];
    struct io_uring_sqe *sqe = get_sqe(w);
    if (!sqe) {
        lg_conn_fail(w, c, reason_for_errno(w, EBUSY));
        return;
    }
    io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&t->addr, sizeof(t->addr));
    io_uring_sqe_set_data64(sqe, ud_make(c, OP_CONNECT));
    c->flags |= LG_CF_CONNECT;
}

static void on_connect(struct lg_worker *w, struct lg_conn *c, int res)
{
    c->flags &= (uint16_t)~LG_CF_CONNECT;
    if (c->state != LG_CS_CONNECTING) {
        maybe_finish(w, c);
        return;
    }
    if (res < 0) {
        lg_conn_fail(w, c, reason_for_errno(w, -res));
        return;
    }
    lg_hist_record(&w->stats.h[LG_H_CONNECT], w->now - c->t_start);
    c->state = LG_CS_HANDSHAKE;
    arm_recv(w, c);
    if (c->state == LG_CS_HANDSHAKE)
        w->proto->connected(w, c);
}

static void give_back_buffer(struct lg_worker *w, unsigned bid)
{
    io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(BUF_COUNT), (int)w->buf_returned);
    w->buf_returned++;
}

/* The peer closed its side. */
static void conn_eof(struct lg_worker *w, struct lg_conn *c)
{
    if (c->state == LG_CS_HANDSHAKE)
        lg_conn_fail(w, c, LG_C_FAIL_RESET);
    else if (c->state == LG_CS_OPEN)
        lg_conn_drop(w, c, LG_C_DROPPED, false);
    c->flags |= LG_CF_SHUT; /* nothing more to read: never re-arm */
}

static void on_recv(struct lg_worker *w, struct lg_conn *c, const struct io_uring_cqe *cqe)
{
    int res = cqe->res;
    if (!(cqe->flags & IORING_CQE_F_MORE))
        c->flags &= (uint16_t)~LG_CF_RECV;
    if (res > 0) {
        const uint8_t *data = c->rxbuf;
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (cqe->flags & IORING_CQE_F_BUFFER)
            data = w->bufs + (size_t)bid * BUF_SIZE;
        if (w->scn->precise_clock)
            w->now = lg_now_ns();
        if (!(c->flags & LG_CF_SHUT))
            w->proto->data(w, c, data, (size_t)res);
        if (cqe->flags & IORING_CQE_F_BUFFER)
            give_back_buffer(w, bid);
    } else if (res == 0) {
        conn_eof(w, c);
    } else if (res == -EINVAL && w->multishot && !(c->flags & LG_CF_RECV)) {
        /* A kernel with the buffer ring but without multishot recv (5.19): single shots. */
        w->multishot = false;
    } else if (res != -ENOBUFS) {
        /* ENOBUFS only means the ring ran dry; re-arming below waits for returned buffers. */
        conn_io_error(w, c, -res);
        c->flags |= LG_CF_SHUT;
    }
    if (wants_recv(c))
        arm_recv(w, c);
    maybe_finish(w, c);
}

static void on_send(struct lg_worker *w, struct lg_conn *c, int res)
{
    c->flags &= (uint16_t)~LG_CF_SEND;
    if (res <= 0) {
        conn_io_error(w, c, res < 0 ? -res : EPIPE);
        maybe_finish(w, c);
        return;
    }
    struct lg_buf *b = tx_inflight(c);
    c->tx_off += (uint32_t)res;
    if (c->tx_off < b->len) {
        if (!(c->flags & LG_CF_SHUT))
            send_inflight(w, c); /* a short send: the rest first, to keep the byte order */
        maybe_finish(w, c);
        return;
    }
    b->len = 0;
    c->tx_off = 0;
    if (!(c->flags & LG_CF_SHUT) && tx_collecting(c)->len > 0) {
        conn_send(w, c);
    } else if ((c->flags & (LG_CF_HALF_CLOSE | LG_CF_SHUT)) == LG_CF_HALF_CLOSE) {
        c->flags &= (uint16_t)~LG_CF_HALF_CLOSE;
        shutdown(c->fd, SHUT_WR);
    } else if (w->scn->sparse_tx) {
        /* An idle held connection then costs only its struct; a pong reallocates. */
        free(c->tx[0].data);
        free(c->tx[1].data);
        memset(c->tx, 0, sizeof(c->tx));
    }
    maybe_finish(w, c);
}

static void handle_cqe(struct lg_worker *w, const struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    struct lg_conn *c = (struct lg_conn *)(uintptr_t)(ud & ~(uint64_t)OP_MASK);
    switch (ud & OP_MASK) {
    case OP_CONNECT:
        on_connect(w, c, cqe->res);
        break;
    case OP_RECV:
        on_recv(w, c, cqe);
        break;
    case OP_SEND:
        on_send(w, c, cqe->res);
        break;
    default:
        break;
    }
}

static void reap(struct lg_worker *w)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&w->ring, head, cqe)
    {
        handle_cqe(w, cqe);
        n++;
    }
    io_uring_cq_advance(&w->ring, n);
    if (w->buf_returned) {
        io_uring_buf_ring_advance(w->br, (int)w->buf_returned);
        w->buf_returned = 0;
    }
}

/* Fails every attempt older than --timeout. Attempts start in index order with one timeout,
 * so the oldest pending one is always at the cursor and the check is O(1) per iteration. */
static uint64_t expire_pending(struct lg_worker *w)
{
    uint64_t timeout = (uint64_t)(w->cfg->timeout_s * 1e9);
    while (w->timeout_cursor < w->next_start) {
        struct lg_conn *c = &w->conns[w->timeout_cursor];
        if (c->state == LG_CS_CONNECTING || c->state == LG_CS_HANDSHAKE) {
            if (w->now - c->t_start < timeout)
                return c->t_start + timeout;
            lg_conn_fail(w, c, LG_C_FAIL_TIMEOUT);
        }
        w->timeout_cursor++;
    }
    return UINT64_MAX;
}

static void enter_close(struct lg_worker *w)
{
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct lg_conn *c = &w->conns[i];
        if (c->state == LG_CS_OPEN) {
            w->proto->close(w, c, SB_WS_CLOSE_NORMAL);
            conn_leave(w, c);
        } else if (c->state == LG_CS_CONNECTING || c->state == LG_CS_HANDSHAKE) {
            /* Only after an early stop: these were neither established nor failed. */
            conn_leave(w, c);
            c->flags |= LG_CF_ABORT;
            conn_shut(w, c);
            maybe_finish(w, c);
        }
    }
    w->phase = LG_PHASE_CLOSE;
    w->phase_end = w->now + LG_CLOSE_NS;
}

static void enter_drain(struct lg_worker *w)
{
    w->phase = LG_PHASE_DRAIN;
    w->phase_end = w->now + LG_DRAIN_NS;
}

static void end_run(struct lg_worker *w)
{
    uint64_t window = w->now - w->run_start;
    struct lg_stats *s = &w->stats;
    s->run_ns = window;
    s->c[LG_C_OPEN_AT_END] = w->open;
    if (window > 0) {
        double secs = (double)window / 1e9;
        s->send_rate = (double)s->c[LG_C_MSGS_SENT] / secs;
        s->msg_rate = (double)s->c[LG_C_MSGS_RECV] / secs;
        s->byte_rate = (double)s->c[LG_C_BYTES_RECV] / secs;
    }
    enter_drain(w);
}

static void enter_run(struct lg_worker *w)
{
    w->phase = LG_PHASE_RUN;
    w->run_start = w->now;
    w->phase_end = w->now + (uint64_t)(w->cfg->duration_s * 1e9);
    if (w->open == 0) {
        end_run(w); /* nothing to hold or measure */
        return;
    }
    if (w->scn->run_start)
        w->scn->run_start(w);
}

static uint64_t step_ramp(struct lg_worker *w)
{
    if (lg_loop_stop_requested()) {
        /* Stopped while ramping: report what is open now, then close without a RUN. */
        if (w->stats.c[LG_C_ESTABLISHED] > 0)
            w->stats.ramp_ns = w->last_established - w->t0;
        w->stats.c[LG_C_OPEN_AT_END] = w->open;
        enter_close(w);
        return w->now;
    }
    uint64_t next = UINT64_MAX;
    for (unsigned started = 0; w->next_start < w->nconns; started++) {
        uint64_t due = w->t0 + (uint64_t)((double)w->next_start * w->connect_interval_ns);
        if (due > w->now || started == START_BATCH) {
            next = due > w->now ? due : w->now;
            break;
        }
        struct lg_conn *c = &w->conns[w->next_start++];
        conn_start(w, c);
    }
    uint64_t expiry = expire_pending(w);
    if (w->next_start == w->nconns && w->pending == 0) {
        if (w->stats.c[LG_C_ESTABLISHED] > 0)
            w->stats.ramp_ns = w->last_established - w->t0;
        if (w->scn->setup) {
            w->phase = LG_PHASE_SETUP;
            w->phase_end = w->now + LG_SETUP_NS;
        } else {
            enter_run(w);
        }
        return w->now;
    }
    return next < expiry ? next : expiry;
}

static uint64_t step_setup(struct lg_worker *w)
{
    uint64_t next = w->phase_end;
    if (lg_loop_stop_requested()) {
        w->stats.c[LG_C_OPEN_AT_END] = w->open;
        enter_close(w);
        return w->now;
    }
    if (w->now >= w->phase_end) {
        fprintf(stderr,
                "switchboard-loadgen: worker %u: setup did not finish within %llu s; "
                "measuring anyway\n",
                w->index, (unsigned long long)(LG_SETUP_NS / 1000000000ULL));
        enter_run(w);
        return w->now;
    }
    if (w->scn->setup(w, &next)) {
        enter_run(w);
        return w->now;
    }
    return next < w->phase_end ? next : w->phase_end;
}

static uint64_t step_run(struct lg_worker *w)
{
    if (lg_loop_stop_requested() || w->now >= w->phase_end || w->open == 0) {
        end_run(w);
        return w->now;
    }
    uint64_t next = w->phase_end;
    if (w->scn->tick) {
        uint64_t t = w->scn->tick(w);
        next = t < next ? t : next;
    }
    return next;
}

static void force_close(struct lg_worker *w)
{
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct lg_conn *c = &w->conns[i];
        if (c->fd >= 0) {
            /* Operations still in flight die with the ring, after this. */
            c->flags |= LG_CF_ABORT;
            conn_finish(w, c);
        }
    }
    w->phase = LG_PHASE_DONE;
}

/* Runs the timers of the current phase; returns when the loop must wake up next. */
static uint64_t step(struct lg_worker *w)
{
    switch (w->phase) {
    case LG_PHASE_RAMP:
        return step_ramp(w);
    case LG_PHASE_SETUP:
        return step_setup(w);
    case LG_PHASE_RUN:
        return step_run(w);
    case LG_PHASE_DRAIN:
        if (!w->scn->drained || w->scn->drained(w) || w->now >= w->phase_end) {
            if (w->scn->finish)
                w->scn->finish(w);
            enter_close(w);
            return w->now;
        }
        return w->phase_end;
    case LG_PHASE_CLOSE:
        if (w->active == 0 || w->now >= w->phase_end) {
            force_close(w);
            return w->now;
        }
        return w->phase_end;
    case LG_PHASE_DONE:
        break;
    }
    return w->now;
}

static void publish(struct lg_worker *w)
{
    const struct lg_stats *s = &w->stats;
    uint64_t v[LG_L_COUNT] = {
        [LG_L_PHASE] = (uint64_t)w->phase,
        [LG_L_OPEN] = w->open,
        [LG_L_ESTABLISHED] = s->c[LG_C_ESTABLISHED],
        [LG_L_FAILED] = lg_stats_failed(s),
        [LG_L_SENT] = s->c[LG_C_MSGS_SENT],
        [LG_L_RECV] = s->c[LG_C_MSGS_RECV],
        [LG_L_BYTES] = s->c[LG_C_BYTES_RECV],
        [LG_L_ERRORS] = s->c[LG_C_MISMATCHED] + s->c[LG_C_PROTO_ERRORS] + s->c[LG_C_DROPPED] +
                        s->c[LG_C_CLOSED_BY_SERVER],
    };
    for (int i = 0; i < LG_L_COUNT; i++)
        atomic_store_explicit(&w->live.v[i], v[i], memory_order_relaxed);
}

static void wait_events(struct lg_worker *w, uint64_t deadline)
{
    uint64_t now = lg_now_ns();
    uint64_t wait = deadline > now ? deadline - now : 0;
    if (wait > MAX_WAIT_NS)
        wait = MAX_WAIT_NS;
    struct __kernel_timespec ts = {.tv_sec = (long long)(wait / 1000000000ULL),
                                   .tv_nsec = (long long)(wait % 1000000000ULL)};
    struct io_uring_cqe *cqe;
    /* The one submission of this iteration; ETIME and EINTR just mean "nothing yet". */
    io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
}

static void worker_loop(struct lg_worker *w)
{
    uint64_t last_publish = 0;
    w->now = lg_now_ns();
    w->t0 = w->now;
    while (w->phase != LG_PHASE_DONE) {
        w->now = lg_now_ns();
        uint64_t deadline = step(w);
        if (w->phase == LG_PHASE_DONE)
            break;
        flush_sends(w);
        wait_events(w, deadline);
        w->now = lg_now_ns();
        reap(w);
        if (w->now - last_publish >= PUBLISH_NS) {
            publish(w);
            last_publish = w->now;
        }
    }
    publish(w);
}

static int setup_ring(struct lg_worker *w)
{
    /* From the newest feature set down to what Linux 5.15 has (which --io-mode compat forces). */
    static const unsigned flag_sets[] = {
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
            IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int ret = -EINVAL;
    for (size_t i = w->cfg->compat_io ? 2 : 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = RING_CQ_ENTRIES;
        ret = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
        if (ret != -EINVAL)
            break;
    }
    if (ret < 0)
        return ret;
    w->has_ring = true;
    return 0;
}

static int setup_bufring(struct lg_worker *w)
{
    size_t ring_bytes = BUF_COUNT * sizeof(struct io_uring_buf);
    void *br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (br == MAP_FAILED)
        return -errno;
    void *bufs = mmap(NULL, (size_t)BUF_COUNT * BUF_SIZE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (bufs == MAP_FAILED) {
        munmap(br, ring_bytes);
        return -errno;
    }
    struct io_uring_buf_reg reg = {
        .ring_addr = (uintptr_t)br, .ring_entries = BUF_COUNT, .bgid = 0};
    int ret = io_uring_register_buf_ring(&w->ring, &reg, 0);
    if (ret < 0) {
        munmap(bufs, (size_t)BUF_COUNT * BUF_SIZE);
        munmap(br, ring_bytes);
        return ret;
    }
    w->br = br;
    w->bufs = bufs;
    io_uring_buf_ring_init(w->br);
    for (unsigned i = 0; i < BUF_COUNT; i++)
        io_uring_buf_ring_add(w->br, w->bufs + (size_t)i * BUF_SIZE, BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(BUF_COUNT), (int)i);
    io_uring_buf_ring_advance(w->br, BUF_COUNT);
    return 0;
}

static void teardown(struct lg_worker *w)
{
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct lg_conn *c = &w->conns[i];
        if (c->fd >= 0) {
            close(c->fd);
            c->fd = -1;
        }
    }
    /* The ring goes first: the kernel may still reference buffers and connections until then. */
    if (w->has_ring)
        io_uring_queue_exit(&w->ring);
    if (w->br) {
        munmap(w->br, BUF_COUNT * sizeof(struct io_uring_buf));
        munmap(w->bufs, (size_t)BUF_COUNT * BUF_SIZE);
    }
    for (uint32_t i = 0; i < w->nconns; i++)
        conn_release(&w->conns[i]);
}

static void *worker_main(void *arg)
{
    struct lg_worker *w = arg;
    if (w->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(w->cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    if (w->scn->precise_clock)
        prctl(PR_SET_TIMERSLACK, 1UL); /* wake for a scheduled send within a microsecond */
    lg_rand_seed(&w->rng);
    /* The ring is created here: SINGLE_ISSUER ties it to the thread that creates it. */
    w->error = setup_ring(w);
    if (w->error < 0) {
        w->error_what = "io_uring_queue_init";
    } else {
        w->bufring = !w->cfg->compat_io && setup_bufring(w) == 0;
        w->multishot = w->bufring;
        worker_loop(w);
    }
    teardown(w);
    atomic_store(&w->done, 1);
    return NULL;
}

/* The CPUs this process may run on (taskset, cgroups), in order. */
static unsigned allowed_cpus(int *cpus, unsigned max)
{
    cpu_set_t set;
    unsigned n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        for (int i = 0; i < CPU_SETSIZE && n < max; i++)
            if (CPU_ISSET(i, &set))
                cpus[n++] = i;
    }
    return n;
}

static int init_worker(struct lg_worker *w, const struct lg_config *cfg, uint64_t first, uint32_t n)
{
    w->cfg = cfg;
    w->scn = lg_scenario_for(cfg->mode);
    w->proto = lg_tls_proto(cfg);
    w->nconns = n;
    w->share = (double)n / (double)cfg->connections;
    if (cfg->connect_rate > 0 && n > 0)
        w->connect_interval_ns = 1e9 / (cfg->connect_rate * w->share);
    w->conns = calloc(n ? n : 1, sizeof(*w->conns));
    uint8_t *payload = calloc(1, LG_PAYLOAD_HEADROOM + cfg->size + 1);
    if (!w->conns || !payload)
        return -ENOMEM;
    w->payload = payload + LG_PAYLOAD_HEADROOM;
    if (LG_MODE_IS_MSGR(cfg->mode)) {
        /* A conv_create names every member: ~10 bytes each. */
        w->scratch_cap = 4096 + 2 * cfg->size + 16 * cfg->connections;
        w->scratch = malloc(w->scratch_cap);
        if (!w->scratch)
            return -ENOMEM;
    }
    /* A fixed, recognizable filler; the scenarios stamp their sequence numbers over the front. */
    for (uint64_t i = 0; i < cfg->size; i++)
        w->payload[i] = (uint8_t)('a' + i % 26);
    for (uint32_t i = 0; i < n; i++) {
        w->conns[i].fd = -1;
        w->conns[i].id = (uint32_t)(first + i);
    }
    return 0;
}

static void sum_live(struct lg_worker *ws, unsigned n, struct lg_live_snapshot *sum)
{
    for (unsigned i = 0; i < n; i++) {
        struct lg_live_snapshot one;
        lg_live_read(&ws[i].live, &one);
        lg_live_add(sum, &one, i == 0);
    }
}

static bool all_done(struct lg_worker *ws, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (!atomic_load(&ws[i].done))
            return false;
    return true;
}

/* Starts the workers with SIGINT and SIGTERM blocked, so that the runner's thread takes them. */
static int start_workers(struct lg_worker *ws, unsigned n)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int err = 0;
    unsigned i = 0;
    for (; i < n; i++) {
        err = -pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
        if (err)
            break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        /* Stop the ones already running; the caller joins exactly those. */
        lg_loop_request_stop();
        for (unsigned j = i; j < n; j++)
            atomic_store(&ws[j].done, 1);
        fprintf(stderr, "switchboard-loadgen: pthread_create: %s\n", strerror(-err));
    }
    return err ? (int)i : (int)n;
}

static void watch_workers(struct lg_worker *ws, unsigned n, lg_progress_cb progress, void *ctx,
                          unsigned period_ms)
{
    uint64_t period = (uint64_t)period_ms * 1000000ULL;
    uint64_t start = lg_now_ns(), next = start + period;
    while (!all_done(ws, n)) {
        struct timespec nap = {0, 20000000};
        nanosleep(&nap, NULL);
        uint64_t now = lg_now_ns();
        if (now >= next && progress) {
            struct lg_live_snapshot snap;
            sum_live(ws, n, &snap);
            progress(ctx, (double)(now - start) / 1e9, &snap);
            next += period;
        }
    }
}

int lg_loop_run(const struct lg_config *cfg, const struct lg_share *share, lg_progress_cb progress,
                void *ctx, unsigned period_ms, struct lg_stats *out)
{
    memset(out, 0, sizeof(*out));
    unsigned n = share->threads ? share->threads : 1;
    if (n > share->count && share->count > 0)
        n = (unsigned)share->count;
    struct lg_worker *ws = calloc(n, sizeof(*ws));
    int cpus[CPU_SETSIZE];
    unsigned ncpus = allowed_cpus(cpus, CPU_SETSIZE);
    if (!ws)
        return -ENOMEM;
    const struct lg_scenario *scn = lg_scenario_for(cfg->mode);
    int err = scn->prepare ? scn->prepare(cfg, share) : 0;
    bool prepared = err == 0;
    for (unsigned i = 0; i < n && !err; i++) {
        uint64_t lo = share->first + share->count * i / n;
        uint64_t hi = share->first + share->count * (i + 1) / n;
        ws[i].index = share->worker_base + i;
        ws[i].cpu = ncpus ? cpus[ws[i].index % ncpus] : -1;
        err = init_worker(&ws[i], cfg, lo, (uint32_t)(hi - lo));
    }
    unsigned started = 0;
    if (!err) {
        int s = start_workers(ws, n);
        started = (unsigned)s;
        if (started < n)
            err = -EAGAIN;
        watch_workers(ws, n, progress, ctx, period_ms);
    }
    for (unsigned i = 0; i < started; i++) {
        pthread_join(ws[i].thread, NULL);
        if (ws[i].error < 0) {
            fprintf(stderr, "switchboard-loadgen: worker %u: %s: %s%s\n", ws[i].index,
                    ws[i].error_what, strerror(-ws[i].error),
                    ws[i].error == -EPERM ? " (is io_uring disabled? see kernel.io_uring_disabled)"
                                          : "");
            err = ws[i].error;
        }
        lg_stats_merge(out, &ws[i].stats);
    }
    for (unsigned i = 0; i < n; i++) {
        free(ws[i].conns);
        free(ws[i].payload ? ws[i].payload - LG_PAYLOAD_HEADROOM : NULL);
        free(ws[i].scratch);
    }
    free(ws);
    if (prepared && scn->release)
        scn->release();
    return err;
}
