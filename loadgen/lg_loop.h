/*
 * The io_uring client engine: one worker thread per core, each with its own ring, its own
 * connections and its own statistics; nothing on the data path is shared between threads.
 *
 * A worker walks its connections through phases:
 *   RAMP   open connections on a schedule (--rate), bound each attempt by --timeout;
 *   SETUP  only for scenarios with a setup hook: e.g. create the groups, before measuring;
 *   RUN    --duration seconds of the scenario's traffic (the measurement window);
 *   DRAIN  no new messages; wait up to LG_DRAIN_NS for replies still in flight;
 *   CLOSE  send close frames, wait up to LG_CLOSE_NS for the server to close; then force.
 * Each loop iteration runs the due timers, queues sends, then makes exactly one
 * io_uring_submit_and_wait_timeout call and handles the completions it returns.
 *
 * Two pluggable layers sit on top, both called on the worker's thread only:
 *   struct lg_proto    turns bytes into messages and back: WebSocket (lg_proto_ws.c, which
 *                      also carries binary frames for --proto ws-bin) or the binary protocol
 *                      on raw TCP (lg_proto_bin.c);
 *   struct lg_scenario decides what to send and what to measure (hold, echo, latency).
 * Lifecycle rule: a connection's socket is closed only when no operation on it is in flight;
 * handlers never close it themselves, they ask for it (lg_conn_fail / lg_conn_drop).
 */
#ifndef SB_LOADGEN_LG_LOOP_H
#define SB_LOADGEN_LG_LOOP_H

#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "loadgen/lg_bin.h"
#include "loadgen/lg_config.h"
#include "loadgen/lg_rand.h"
#include "loadgen/lg_stats.h"
#include "loadgen/lg_ws.h"

#define LG_DRAIN_NS 2000000000ULL
#define LG_CLOSE_NS 2000000000ULL
#define LG_SETUP_NS 30000000000ULL

enum lg_phase {
    LG_PHASE_RAMP,
    LG_PHASE_SETUP,
    LG_PHASE_RUN,
    LG_PHASE_DRAIN,
    LG_PHASE_CLOSE,
    LG_PHASE_DONE,
};

enum lg_conn_state {
    LG_CS_IDLE,       /* not started yet */
    LG_CS_CONNECTING, /* connect in flight */
    LG_CS_HANDSHAKE,  /* upgrade request sent, waiting for 101 */
    LG_CS_OPEN,
    LG_CS_CLOSING, /* no more traffic; waiting for in-flight operations */
    LG_CS_DONE,    /* socket closed */
};

/* Connection flags: operations in flight, and where the connection is in its shutdown. */
#define LG_CF_CONNECT 0x001
#define LG_CF_RECV 0x002
#define LG_CF_SEND 0x004
#define LG_CF_OPS (LG_CF_CONNECT | LG_CF_RECV | LG_CF_SEND)
#define LG_CF_FLUSH 0x008      /* on the worker's flush list */
#define LG_CF_TXB 0x010        /* tx[1] collects new bytes (else tx[0]) */
#define LG_CF_SHUT 0x020       /* shutdown(2) or cancel issued: reads are over */
#define LG_CF_ABORT 0x040      /* close with RST: the peer gets no say */
#define LG_CF_CLOSE_SENT 0x080 /* our close frame is queued */
#define LG_CF_UPGRADED 0x100   /* ws-bin: the 101 is in; WebSocket frames follow (HELLO sent) */
#define LG_CF_HALF_CLOSE 0x200 /* shutdown(SHUT_WR) once the send queue has drained */

/* A growable byte buffer owned by one connection. */
struct lg_buf {
    uint8_t *data;
    uint32_t len;
    uint32_t cap;
};

struct lg_conn {
    int fd;
    uint32_t id; /* global connection number: selects target and source address */
    uint8_t state;
    uint16_t flags;
    uint16_t hs_len;  /* bytes in hs */
    uint32_t tx_off;  /* bytes of the in-flight buffer already sent */
    uint64_t t_start; /* when socket() was called */
    uint64_t seq_out; /* messages the scenario sent on this connection */
    uint64_t seq_in;  /* replies it received */
    struct lg_conn *flush_next;
    char *hs;            /* a 101 response split across reads, until it is complete */
    uint8_t *rxbuf;      /* receive buffer when there is no buffer ring */
    struct lg_buf tx[2]; /* one collects frames while the other is being sent */
    char key[LG_WS_KEY_LEN + 1];
    uint8_t msg_frames; /* ws-bin: binary frames in the WebSocket message being received */
    struct lg_ws_rx rx;
    struct lg_bin_rx brx; /* bin, ws-bin: the binary frame stream */
};

struct lg_worker;
struct lg_share;

struct lg_proto {
    const char *name;
    /* TCP is up: queue the handshake. */
    void (*connected)(struct lg_worker *w, struct lg_conn *c);
    /* Bytes arrived (handshake response or frames); may fail or drop the connection. */
    void (*data)(struct lg_worker *w, struct lg_conn *c, const uint8_t *data, size_t len);
    /* Queues one message. Returns 0 or -ENOBUFS (the connection's queue is full). */
    int (*send)(struct lg_worker *w, struct lg_conn *c, uint8_t opcode, const void *payload,
                size_t len);
    /* Queues a polite close (sets LG_CF_CLOSE_SENT). */
    void (*close)(struct lg_worker *w, struct lg_conn *c, uint16_t code);
    /* Queues one binary-protocol frame (bin, ws-bin). Returns 0, -ENOBUFS (the queue is full)
     * or -EINVAL (op breaks a limit of its type). */
    int (*send_op)(struct lg_worker *w, struct lg_conn *c, const struct sb_op *op);
};

extern const struct lg_proto lg_proto_ws;
extern const struct lg_proto lg_proto_bin;

/*
 * The binary protocol's session, shared by lg_proto_bin (raw TCP) and lg_proto_ws (ws-bin);
 * via is the transport whose send_op carries answers.
 *
 * lg_bin_hello queues the HELLO that opens the session: with the connection's token on raw
 * TCP, with none on WebSocket (the upgrade authenticated). Returns 0 or a negative errno.
 *
 * lg_bin_frame handles one whole frame from the server: before WELCOME, the WELCOME (the
 * connection becomes LG_CS_OPEN) or the ERROR that refuses the HELLO (a failed attempt);
 * afterwards it answers PING with PONG, ends the connection on GOAWAY and hands every other
 * frame, decoded, to the scenario. A frame the codec refuses is a protocol error (the
 * connection is dropped), except an unknown type, which is skipped as the spec asks. Returns 0,
 * or -ECONNABORTED once the connection left LG_CS_HANDSHAKE/LG_CS_OPEN (stop reading).
 */
int lg_bin_hello(struct lg_worker *w, struct lg_conn *c, const struct lg_proto *via);
int lg_bin_frame(struct lg_worker *w, struct lg_conn *c, const struct lg_proto *via,
                 const uint8_t *frame, size_t len);

/* Hooks a scenario provides; any may be NULL. All but prepare and release run on the worker's
 * thread. */
struct lg_scenario {
    enum lg_mode mode;
    bool precise_clock; /* read the clock for every receive, not once per loop iteration */
    bool sparse_tx;     /* connections send rarely: free send buffers as soon as they drain */
    uint32_t gather;    /* keep this many bytes of each received message (0 = LG_WS_HEAD) */
    bool lazy_ack;      /* delay ACKs: the handshake's last ACK rides on the upgrade request */
    /* Before the workers start, on the runner's thread: state shared by this process's
     * workers. Returns 0 or -errno (after saying why on stderr). */
    int (*prepare)(const struct lg_config *cfg, const struct lg_share *share);
    /* After every worker has ended, on the runner's thread. */
    void (*release)(void);
    /* A connection completed its handshake. */
    void (*established)(struct lg_worker *w, struct lg_conn *c);
    /* SETUP, every iteration: returns true once this worker may start RUN, else sets *next
     * to when it wants to be called again. RUN starts at LG_SETUP_NS even if it never does. */
    bool (*setup)(struct lg_worker *w, uint64_t *next);
    /* RUN begins: every established connection is in LG_CS_OPEN. */
    void (*run_start)(struct lg_worker *w);
    /* Called every RUN iteration; returns the next time (ns) it wants to run, or UINT64_MAX. */
    uint64_t (*tick)(struct lg_worker *w);
    /* A data message arrived on an open connection. */
    void (*message)(struct lg_worker *w, struct lg_conn *c, const struct lg_ws_msg *m);
    /* An open connection went away; what it had in flight will never come back. */
    void (*conn_lost)(struct lg_worker *w, struct lg_conn *c);
    /* DRAIN may end early once this returns true. */
    bool (*drained)(struct lg_worker *w);
    /* DRAIN is over: count whatever is still missing. */
    void (*finish)(struct lg_worker *w);
};

extern const struct lg_scenario lg_scenario_hold;
extern const struct lg_scenario lg_scenario_echo;
extern const struct lg_scenario lg_scenario_latency;
extern const struct lg_scenario lg_scenario_chat;
extern const struct lg_scenario lg_scenario_fanout;

/* Returns the scenario that implements mode. */
const struct lg_scenario *lg_scenario_for(enum lg_mode mode);

#define LG_PAYLOAD_HEADROOM 16

struct lg_worker {
    /* Set before the thread starts; read-only afterwards. */
    const struct lg_config *cfg;
    const struct lg_scenario *scn;
    const struct lg_proto *proto;
    unsigned index; /* worker number over all processes */
    int cpu;        /* CPU to pin to, or -1 */
    uint32_t nconns;
    double share; /* nconns / cfg->connections: this worker's part of every global rate */
    struct lg_conn *conns;

    struct io_uring ring;
    bool has_ring;
    bool bufring;   /* receives use the ring-mapped buffer group */
    bool multishot; /* ... with multishot recv */
    struct io_uring_buf_ring *br;
    uint8_t *bufs;
    unsigned buf_returned; /* buffers given back since the last ring advance */

    enum lg_phase phase;
    uint64_t now; /* CLOCK_MONOTONIC ns, read once per loop iteration */
    uint64_t t0;  /* RAMP start */
    double connect_interval_ns;
    uint64_t phase_end;
    uint64_t run_start;
    uint64_t last_established;
    uint32_t next_start;     /* next connection to open */
    uint32_t timeout_cursor; /* oldest connection that may still be pending */
    uint32_t open;           /* LG_CS_OPEN */
    uint32_t pending;        /* LG_CS_CONNECTING or LG_CS_HANDSHAKE */
    uint32_t active;         /* connections with a socket */
    struct lg_conn *flush_head;

    struct lg_rand rng;
    /* cfg->size bytes the scenario stamps and sends, LG_PAYLOAD_HEADROOM bytes into their
     * allocation: a binary PING's header is written in front of them, and the frame sent whole. */
    uint8_t *payload;
    struct {
        uint64_t outstanding; /* messages sent and not yet answered */
        uint64_t sched_start; /* latency: time of message 0 */
        uint64_t sched_k;     /* latency: next message number */
        double interval_ns;   /* latency: time between messages of this worker */
        uint64_t batch_ns;    /* latency, chat: --batch-us */
        uint32_t rr;          /* latency: next connection, round robin */
        uint64_t setup_at;    /* chat, fanout: when this worker entered SETUP */
        bool setup_sent;      /* chat, fanout: this worker's group requests went out */
        bool run_over;        /* chat, fanout: counted in lg_msgr_rt.ran */
        uint64_t n;           /* chat, fanout: messages this worker has sent */
    } sc;
    char *scratch; /* chat, fanout: where requests are built before framing */
    size_t scratch_cap;

    struct lg_stats stats;
    struct lg_live live;
    int error; /* setup failure, -errno */
    const char *error_what;
    pthread_t thread;
    _Atomic int done;
};

/* This process's part of the run. */
struct lg_share {
    uint64_t first;       /* first global connection number */
    uint64_t count;       /* connections */
    unsigned threads;     /* worker threads */
    unsigned worker_base; /* global number of the first worker (spreads CPUs over processes) */
};

/* Called periodically on the runner's thread with the summed live figures. */
typedef void (*lg_progress_cb)(void *ctx, double elapsed_s, const struct lg_live_snapshot *snap);

/*
 * Runs share to the end on share->threads workers, calling progress every period_ms, and merges
 * their statistics into *out (zeroed first). Returns 0, or -errno when a worker could not set up
 * (after printing why to stderr); *out still holds what the other workers measured.
 */
int lg_loop_run(const struct lg_config *cfg, const struct lg_share *share, lg_progress_cb progress,
                void *ctx, unsigned period_ms, struct lg_stats *out);

/* Asks every worker of this process to stop early (async-signal-safe). */
void lg_loop_request_stop(void);
bool lg_loop_stop_requested(void);

/* Engine services for protocols and scenarios (worker thread only). */

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t lg_now_ns(void);

/*
 * Returns room for n more bytes at the end of c's queue, or NULL when the queue would pass its
 * limit (LG_TX_MAX) or memory ran out. The bytes count once lg_conn_tx_commit says so.
 */
uint8_t *lg_conn_tx_reserve(struct lg_worker *w, struct lg_conn *c, size_t n);

/* Appends the first n reserved bytes to c's queue; they go out at the end of this iteration. */
void lg_conn_tx_commit(struct lg_worker *w, struct lg_conn *c, size_t n);

/* Queues one message through the worker's protocol; drops the connection if its queue is full. */
int lg_conn_send(struct lg_worker *w, struct lg_conn *c, const void *payload, size_t len);

/* lg_conn_send with an opcode (SB_WS_TEXT for the JSON protocol). */
int lg_conn_send_op(struct lg_worker *w, struct lg_conn *c, uint8_t opcode, const void *payload,
                    size_t len);

/* Queues one binary-protocol frame through the worker's protocol; drops c if it cannot. */
int lg_conn_send_frame(struct lg_worker *w, struct lg_conn *c, const struct sb_op *op);

/* Ends c's sending side (shutdown SHUT_WR) as soon as what is queued has gone out: the raw
 * TCP protocol's polite close, which the server answers by closing. */
void lg_conn_half_close(struct lg_worker *w, struct lg_conn *c);

/* The handshake succeeded: c becomes LG_CS_OPEN. */
void lg_conn_established(struct lg_worker *w, struct lg_conn *c);

/* Before LG_CS_OPEN: the attempt failed for reason (a failure counter); c is aborted. */
void lg_conn_fail(struct lg_worker *w, struct lg_conn *c, enum lg_counter reason);

/*
 * An open connection ends, counted under why (or LG_C_COUNT for nothing). With graceful, the
 * socket stays up until the server closes it (a close handshake is under way); otherwise it is
 * shut down and reset.
 */
void lg_conn_drop(struct lg_worker *w, struct lg_conn *c, enum lg_counter why, bool graceful);

#endif
