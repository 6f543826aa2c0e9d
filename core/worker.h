/*
 * Engine internals shared by engine.c, conn.c, chunk.c and the I/O backend. Not for the server.
 */
#ifndef SB_CORE_WORKER_H
#define SB_CORE_WORKER_H

#include <ck_ring.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/uio.h>
#include <time.h>

#include "core/chunk.h"
#include "core/engine.h"
#include "core/timer.h"

#define SB_MAX_LISTENERS 8
#define SB_SEND_IOV_MAX 64 /* frames gathered into one sendmsg */
#define SB_CONN_BLOCK 1024 /* connections per slab block */
#define SB_IP_SLOTS 65536  /* per-address connection counters (addresses hash into them) */
#define SB_NO_IP_SLOT UINT32_MAX

/* What a completion belongs to: the low 4 bits of user_data; the rest is a pointer. */
enum sb_op {
    SB_OP_ACCEPT = 1, /* struct sb_wlistener */
    SB_OP_RECV,       /* struct sb_conn */
    SB_OP_SEND,       /* struct sb_conn */
    SB_OP_EVENTFD,    /* struct sb_worker: stop request or compat wake-up */
    SB_OP_MSG_WAKE,   /* a MSG_RING wake-up from another worker (no pointer) */
    SB_OP_IGNORE,     /* cancels, buffer provisioning, MSG_RING sender side */
    SB_OP_FILE,       /* struct sb_file_op */
    SB_OP_CONNECT,    /* struct sb_conn: an outbound connect */
};
#define SB_OP_MASK 0xfull

static inline uint64_t sb__ud(const void *ptr, enum sb_op op)
{
    return (uint64_t)(uintptr_t)ptr | (uint64_t)op;
}

enum sb_conn_flag {
    SB_CF_LIVE = 1 << 0,        /* slot in use */
    SB_CF_RECV = 1 << 1,        /* a receive is armed */
    SB_CF_SEND = 1 << 2,        /* a send is in flight */
    SB_CF_CLOSING = 1 << 3,     /* closed: waiting for in-flight operations */
    SB_CF_DRAINING = 1 << 4,    /* close after the output queue is sent */
    SB_CF_PAUSED = 1 << 5,      /* output over the limit: not reading */
    SB_CF_HANDOFF = 1 << 6,     /* moving to another worker */
    SB_CF_ON_FLUSH = 1 << 7,    /* on the worker's flush list */
    SB_CF_HELD = 1 << 8,        /* the app holds its input (sb_conn_hold_input) */
    SB_CF_ON_REAP = 1 << 9,     /* on the worker's reap list */
    SB_CF_CANCELLED = 1 << 10,  /* a cancel for the receive was submitted */
    SB_CF_SHUTDOWN = 1 << 11,   /* on_shutdown was called */
    SB_CF_SEALING = 1 << 12,    /* inside the transport's seal hook: writes are wire bytes */
    SB_CF_CONNECTING = 1 << 13, /* outbound, not connected yet: in holds the peer address */
};

struct sb_qnode {
    struct sb_qnode *next;
    struct sb_chunk *ch;
    uint32_t off, len; /* the bytes of ch still to send */
};

/* The msghdr and iovecs of one in-flight sendmsg; kept until its completion. */
struct sb_sendctx {
    struct msghdr mh;
    struct iovec iov[SB_SEND_IOV_MAX];
    struct sb_sendctx *next_free;
};

struct sb_listener {
    const struct sb_conn_ops *ops;
    const struct sb_transport *tp; /* NULL: plain TCP */
    unsigned port;
};

/* A listener's socket on one worker. */
struct sb_wlistener {
    struct sb_worker *w;
    const struct sb_listener *ls;
    int fd;
    bool armed;
    bool closing;
} __attribute__((aligned(16)));

struct sb_conn {
    struct sb_worker *w;
    const struct sb_listener *ls;
    uint64_t id;
    int fd;
    uint16_t flags;
    int16_t handoff_to;
    int close_err;
    uint32_t in_len, in_cap;
    uint32_t ip_slot; /* counter in sb_engine.ip_counts, or SB_NO_IP_SLOT */
    uint8_t *in;      /* unconsumed input, NULL while there is none */
    struct sb_qnode *out_head, *out_tail;
    struct sb_qnode *unsealed; /* with a transport: the first node of application bytes */
    void *tp;                  /* the transport's per-connection state */
    size_t out_bytes;
    struct sb_sendctx *send;
    uint64_t last_rx_ms;
    struct sb_timer timer;
    struct sb_conn *next_flush; /* the worker's flush list */
    struct sb_conn *next_reap;  /* the worker's reap list, or its free list */
    uint8_t app[] __attribute__((aligned(16)));
};

struct sb_mail {
    sb_mail_cb fn;
    void *arg;
};
CK_RING_PROTOTYPE(sb_mail, sb_mail)

/* Mail that did not fit in a full ring, kept by the sender in order. */
struct sb_overflow {
    struct sb_mail *items;
    size_t head, count, cap;
};

struct sb_worker {
    struct sb_engine *e;
    unsigned id;
    int cpu;
    pthread_t thread;
    struct io_uring ring;
    bool ring_ok;
    int efd; /* eventfd: stop requests, and wake-ups without MSG_RING */
    uint64_t efd_val;
    atomic_int sleeping; /* set while blocked in the kernel; see mailbox wake protocol */
    bool stopping;
    bool quiet; /* counted in e->quiet */
    uint64_t stop_deadline_ms;
    uint64_t now_ms;

    /* Provided receive buffers (group 0): one region, recv_buffers x recv_buffer_size. */
    uint8_t *bufs;
    struct io_uring_buf_ring *br; /* NULL when classic provided buffers are used */

    struct sb_wlistener listeners[SB_MAX_LISTENERS];
    unsigned nlisteners;
    uint64_t accept_retry_ms; /* nonzero: re-arm accepts at this time (after EMFILE) */

    /* Connection slab. */
    size_t conn_size;
    struct sb_conn **blocks;
    size_t nblocks;
    struct sb_conn *free_conns;
    uint64_t conn_seq;
    atomic_uint_fast64_t nconns;
    /* Counters (sb_worker_stats), written only by this worker. */
    atomic_uint_fast64_t st_accepted, st_refused, st_bytes_in, st_bytes_out, st_recvs, st_sends,
        st_handoffs_in;

    struct sb_conn *flush_head, *reap_head;
    struct sb_wheel wheel;   /* connection timers */
    struct sb_wheel wtimers; /* sb_worker_timer */

    /* Mail: rings[i] is the ring from worker i into this worker; overflow[j] holds mail for
     * worker j that did not fit. */
    struct ck_ring *rings;
    struct sb_mail **ring_bufs;
    struct sb_overflow *overflow;
    uint64_t wake_mask[4]; /* workers to wake at the end of this iteration */

    /* Free lists. */
    struct sb_chunk *free_chunks;
    struct sb_qnode *free_qnodes;
    struct sb_sendctx *free_sendctx;
};

struct sb_engine {
    struct sb_engine_config cfg;
    struct sb_features feat;
    struct sb_worker *workers;
    unsigned nworkers;
    struct sb_listener listeners[SB_MAX_LISTENERS];
    unsigned nlisteners;
    atomic_int stopping;
    atomic_uint_fast64_t nconns;
    atomic_uint_fast64_t mail_inflight; /* posted, not yet run: workers leave only at 0 */
    atomic_uint quiet;                  /* workers stopped with nothing left of their own */
    atomic_uint *ip_counts;             /* SB_IP_SLOTS counters, with max_connections_per_ip */
    pthread_barrier_t started;
    bool has_barrier; /* started is initialised (sb_engine_start ran) */
    atomic_int start_err;
    bool running;
    struct {
        void (*fn)(struct sb_worker *w, void *arg);
        void *arg;
    } on_start[SB_MAX_START_HOOKS];
    unsigned non_start;
};

/* engine.c */
void sb__engine_uncount_address(struct sb_engine *e, uint32_t slot);

/* conn.c */
struct sb_conn *sb__conn_alloc(struct sb_worker *w, int fd, const struct sb_listener *ls);
/* Returns a connection that never started (no callbacks ran) to the slab. */
void sb__conn_abandon(struct sb_conn *c);
/* A receive completed: res bytes (or -errno, 0 at EOF) in provided buffer bid (-1: none);
 * more = the receive stays armed. */
void sb__conn_on_recv(struct sb_conn *c, int res, bool more, int bid);
void sb__conn_on_send(struct sb_conn *c, int res);
void sb__conn_on_connect(struct sb_conn *c, int res);
void sb__conn_flush(struct sb_worker *w);
void sb__conn_reap(struct sb_worker *w);
void sb__conn_timer_fired(struct sb_timer *t, void *ctx);
void sb__conn_handoff_arrive(struct sb_worker *w, void *arg);
void sb__conn_shutdown_all(struct sb_worker *w, bool force);
void sb__conn_free_pools(struct sb_worker *w);

/* Adds to a counter that only this thread writes: no read-modify-write instruction needed. */
static inline void sb__stat_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* Monotonic milliseconds. */
static inline uint64_t sb__clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* engine.c: the backend reports each completion here (user_data as given when armed). */
void sb__worker_complete(struct sb_worker *w, uint64_t user_data, int res, bool more, int bid);

/*
 * uring.c: the io_uring backend, the only file that talks to io_uring. The engine arms
 * operations and gets completions back through sb__worker_complete; a backend for hosts without
 * io_uring implements these same functions. Variants are chosen here by the feature probe.
 */
int sb__io_init(struct sb_worker *w);
void sb__io_exit(struct sb_worker *w);
struct io_uring_sqe *sb__io_sqe(struct sb_worker *w);
void sb__io_arm_accept(struct sb_worker *w, struct sb_wlistener *l);
void sb__io_arm_recv(struct sb_worker *w, struct sb_conn *c);
void sb__io_send(struct sb_worker *w, struct sb_conn *c, struct sb_sendctx *ctx);
void sb__io_cancel(struct sb_worker *w, uint64_t user_data);
void sb__io_arm_eventfd(struct sb_worker *w);
void sb__io_wake(struct sb_worker *from, struct sb_worker *to);
void sb__io_write(struct sb_worker *w, struct sb_file_op *op, int fd, const struct iovec *iov,
                  unsigned n, int64_t offset);
void sb__io_fsync(struct sb_worker *w, struct sb_file_op *op, int fd, bool data_only);
void sb__io_connect(struct sb_worker *w, struct sb_conn *c, const struct sockaddr *addr,
                    socklen_t len);
/* Returns buffer bid's memory; sb__io_recycle gives it back to the kernel. */
uint8_t *sb__io_buffer(struct sb_worker *w, unsigned bid);
void sb__io_recycle(struct sb_worker *w, unsigned bid);
/* Submits what was armed, waits for a completion or timeout_ms (-1: forever), and reports
 * every completion available. Returns 0 or -errno. */
int sb__io_wait(struct sb_worker *w, int timeout_ms);

#endif
