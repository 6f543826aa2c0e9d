/*
 * The engine: one pinned worker thread per core, each with its own io_uring, connection slab,
 * provided-buffer ring, timer wheel and mailboxes. It moves bytes; it knows nothing about
 * messages. Applications plug in per-listener callbacks (struct sb_conn_ops).
 *
 * Threads: sb_engine_* functions are for the thread that created the engine ("main").
 * sb_worker_* and sb_conn_* functions may be called only on the worker thread that owns the
 * worker or connection, normally from inside a callback.
 *
 * Connection lifecycle: on_open, then any number of on_data / on_timer calls, then exactly one
 * on_close. After sb_conn_close() no further callbacks but on_close arrive; the connection's
 * memory stays valid until on_close returns, and is reused after that. A connection handed to
 * another worker gets no on_close on its old worker; it gets on_handoff on its new one.
 */
#ifndef SB_CORE_ENGINE_H
#define SB_CORE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "core/features.h"
#include "core/timer.h"

struct sb_engine;
struct sb_worker;
struct sb_conn;

enum sb_io_mode {
    SB_IO_AUTO,   /* every feature the kernel has */
    SB_IO_COMPAT, /* the Linux 5.15 feature set, to exercise the fallbacks */
};

struct sb_engine_config {
    unsigned workers; /* threads; 0 = online CPUs */
    bool pin_workers; /* pin worker i to CPU i mod online CPUs */
    enum sb_io_mode io_mode;
    unsigned ring_entries;           /* submission queue entries per worker */
    unsigned recv_buffers;           /* provided receive buffers per worker, a power of two */
    unsigned recv_buffer_size;       /* bytes each */
    unsigned max_connections;        /* per process; further accepts are closed at once */
    unsigned max_connections_per_ip; /* per client address (IPv6: per /64); 0 = no limit */
    size_t conn_app_size;            /* bytes of application state in each connection */
    size_t send_queue_limit;         /* queued output bytes at which a connection stops reading */
    unsigned shutdown_timeout_ms;    /* drain deadline after sb_engine_stop() */
    unsigned mailbox_entries;        /* slots per worker-pair ring, a power of two */
};

/* Defaults that work out of the box. */
void sb_engine_config_default(struct sb_engine_config *cfg);

struct sb_conn_ops {
    /* A connection was accepted. The app state (sb_conn_app) is zero-filled. */
    void (*on_open)(struct sb_conn *c);
    /*
     * Bytes arrived: data[0..len) is every byte received and not yet consumed, writable (so the
     * app may unmask in place) and valid only during the call. Returns the number of bytes
     * consumed (the engine keeps the rest and presents it again with what follows), or a
     * negative errno to close the connection with that error.
     */
    ssize_t (*on_data)(struct sb_conn *c, uint8_t *data, size_t len);
    /* The deadline set with sb_conn_set_timer passed. */
    void (*on_timer)(struct sb_conn *c);
    /* The connection is gone (err = 0 for a clean end or a negative errno). Free app state. */
    void (*on_close)(struct sb_conn *c, int err);
    /* The engine is stopping: begin a graceful close (sb_conn_close_after_flush). */
    void (*on_shutdown)(struct sb_conn *c);
    /* The connection arrived from another worker with its app state and unconsumed bytes;
     * on_data follows at once when there are bytes. */
    void (*on_handoff)(struct sb_conn *c);
};

/*
 * A transport sits between a listener's sockets and its application, which then sees only
 * application bytes (TLS is the transport this seam exists for). NULL means plain TCP.
 * All hooks run on the connection's worker.
 */
struct sb_transport {
    /* A connection was accepted. Returns 0 or -errno to refuse it. *state is the transport's
     * per-connection pointer; it moves with the connection in a handoff. */
    int (*open)(struct sb_conn *c, void **state);
    /* Bytes from the socket: pass the application bytes they yield to sb_conn_deliver().
     * Returns 0, or -errno to close the connection. */
    int (*recv)(struct sb_conn *c, void *state, uint8_t *data, size_t len);
    /* Turns application bytes queued for sending (n iovecs) into wire bytes: write them with
     * sb_conn_write_wire(). Called once per batch, just before a send. Returns 0 or -errno. */
    int (*seal)(struct sb_conn *c, void *state, const struct iovec *iov, size_t n);
    /* The connection is gone: free state. */
    void (*close)(struct sb_conn *c, void *state);
};

/* For transports: hands application bytes to on_data (from the recv hook only). */
void sb_conn_deliver(struct sb_conn *c, uint8_t *data, size_t len);

/* For transports: queues wire bytes, from the seal hook (after what was sealed before) or from
 * the recv hook (ahead of application bytes not sealed yet). Returns 0 or -ENOMEM. */
int sb_conn_write_wire(struct sb_conn *c, const void *data, size_t len);

/* The transport of the connection's listener (NULL: plain TCP), so hooks can find their own
 * state: embed struct sb_transport in it. */
const struct sb_transport *sb_conn_transport(const struct sb_conn *c);

/*
 * Creates an engine (probes io_uring features; logs the result). Returns 0 or -errno:
 * -ENOSYS/-EPERM when io_uring is unavailable, -EINVAL for a bad config.
 */
int sb_engine_create(const struct sb_engine_config *cfg, struct sb_engine **out);

/*
 * Adds a TCP listener on host:port (port 0 = any; the chosen port is stored in *bound_port),
 * one SO_REUSEPORT socket per worker. Call before sb_engine_start. ops must outlive the engine.
 * Returns 0 or -errno from socket/bind/listen (-EADDRINUSE, -EADDRNOTAVAIL, ...).
 */
int sb_engine_listen(struct sb_engine *e, const char *host, unsigned port,
                     const struct sb_conn_ops *ops, unsigned *bound_port);

/* Sets the transport of the listener on *bound_port (as returned by sb_engine_listen), before
 * sb_engine_start. tp must outlive the engine. Returns 0 or -ENOENT. */
int sb_engine_set_transport(struct sb_engine *e, unsigned port, const struct sb_transport *tp);

/*
 * Registers callbacks for outbound connections (sb_worker_connect) and returns a handle for
 * them in *client. Call before sb_engine_start. ops must outlive the engine. Returns 0 or
 * -EINVAL when all listener and client slots are taken.
 */
int sb_engine_add_client(struct sb_engine *e, const struct sb_conn_ops *ops, unsigned *client);

/*
 * Runs fn(w, arg) on every worker as it starts, before its loop (timers of modules that work on
 * their own, say). Call before sb_engine_start; at most SB_MAX_START_HOOKS. Returns 0 or -EINVAL.
 */
#define SB_MAX_START_HOOKS 4
typedef void (*sb_mail_cb)(struct sb_worker *w, void *arg);
int sb_engine_on_start(struct sb_engine *e, sb_mail_cb fn, void *arg);

/* Starts the workers; returns when all have set up their rings, or -errno if one failed. */
int sb_engine_start(struct sb_engine *e);

/* Asks the workers to stop: close listeners, on_shutdown every connection, drain until the
 * deadline, then close what is left. Any thread, async-signal-safe. */
void sb_engine_stop(struct sb_engine *e);

/* Waits for every worker to finish after sb_engine_stop. */
void sb_engine_wait(struct sb_engine *e);

/* Frees a stopped (or never started) engine. */
void sb_engine_free(struct sb_engine *e);

unsigned sb_engine_workers(const struct sb_engine *e);
/* Open connections across all workers (a relaxed snapshot; any thread). */
uint64_t sb_engine_connections(const struct sb_engine *e);

/* Counters of one worker since start. Single writer; readers get a relaxed snapshot. */
struct sb_worker_stats {
    uint64_t connections; /* open now */
    uint64_t accepted;    /* connections accepted (handoffs not counted) */
    uint64_t refused;     /* closed at accept: max_connections or out of memory */
    uint64_t bytes_in, bytes_out;
    uint64_t recvs, sends; /* completions */
    uint64_t handoffs_in;
};

/* Fills *out with worker's counters. Any thread. */
void sb_engine_worker_stats(const struct sb_engine *e, unsigned worker,
                            struct sb_worker_stats *out);

/* The worker running on this thread, or NULL off worker threads. */
struct sb_worker *sb_worker_self(void);
unsigned sb_worker_id(const struct sb_worker *w);
struct sb_engine *sb_worker_engine(const struct sb_worker *w);
/* Monotonic milliseconds, refreshed once per loop iteration. */
uint64_t sb_worker_now_ms(const struct sb_worker *w);

/*
 * Runs fn(target, arg) on worker `to` soon (on `from` itself if to == from, in its next loop
 * iteration). Messages from one worker to another run in the order posted. Never fails for lack
 * of ring space (overflow is queued on the sender); returns 0 or -ENOMEM.
 */
int sb_worker_post(struct sb_worker *from, unsigned to, sb_mail_cb fn, void *arg);

/*
 * File I/O on the worker's ring, for logs that must not block the loop. The caller owns op (and
 * iov and the bytes they point to) until op->cb runs, once, on this worker with the result
 * (bytes written, 0 for fsync, or -errno). Returns 0, or -errno and cb never runs.
 */
struct sb_file_op {
    void (*cb)(struct sb_worker *w, struct sb_file_op *op, int res);
} __attribute__((aligned(16))); /* completions carry its address with 4 tag bits */

/* Writes iov[0..n) at offset (-1: at the file position, e.g. O_APPEND). */
int sb_worker_write(struct sb_worker *w, struct sb_file_op *op, int fd, const struct iovec *iov,
                    unsigned n, int64_t offset);

/* fdatasync(2) when data_only, else fsync(2). */
int sb_worker_fsync(struct sb_worker *w, struct sb_file_op *op, int fd, bool data_only);

/*
 * Opens a TCP connection from worker w to addr, with the callbacks registered as `client`.
 * Returns the connection at once, so the caller can fill its app state (zero-filled); then
 * on_open runs when it is connected, or on_close(c, -errno) if connecting fails (-ECONNREFUSED,
 * -ETIMEDOUT, ...). Output queued before the connection is up is sent once it is. Returns NULL
 * and sets errno on failure to start (no callbacks run then).
 */
struct sb_conn *sb_worker_connect(struct sb_worker *w, unsigned client, const struct sockaddr *addr,
                                  socklen_t addrlen);

/*
 * A timer of the worker itself, not of a connection (periodic fsync, batching deadlines).
 * Embed it in your state and set cb; it must stay valid while armed. Worker thread only.
 */
struct sb_worker_timer {
    struct sb_timer t; /* private */
    void (*cb)(struct sb_worker *w, struct sb_worker_timer *timer);
};

/* Calls timer->cb after ms milliseconds (10 ms granularity); re-arms if armed; 0 cancels. */
void sb_worker_timer_set(struct sb_worker *w, struct sb_worker_timer *timer, uint64_t ms);

/* Application state of a connection: conn_app_size bytes, zero-filled at open. */
void *sb_conn_app(struct sb_conn *c);
struct sb_worker *sb_conn_worker(const struct sb_conn *c);
/* A process-unique id for logs: worker in the top byte, a per-worker counter below. */
uint64_t sb_conn_id(const struct sb_conn *c);
/* Milliseconds (sb_worker_now_ms clock) at which bytes last arrived. */
uint64_t sb_conn_last_rx_ms(const struct sb_conn *c);

/*
 * Appends len bytes to the connection's output queue and returns where the caller must write
 * them (before returning to the loop). Small writes share a chunk; they go out together at the
 * end of the loop iteration. Returns NULL when memory runs out.
 */
uint8_t *sb_conn_out_reserve(struct sb_conn *c, size_t len);

/* Copies data into the output queue. Returns 0 or -ENOMEM. */
int sb_conn_write(struct sb_conn *c, const void *data, size_t len);

/* Bytes queued and not yet acknowledged by the kernel. */
size_t sb_conn_out_bytes(const struct sb_conn *c);

/* Ensures the input buffer can hold total bytes without growing again (a hint). */
int sb_conn_reserve_input(struct sb_conn *c, size_t total);

/*
 * Stops handing input to on_data (and reading the socket) until sb_conn_release_input, which
 * offers what was buffered again: a request waits for its answer, pipelined ones behind it
 * wait their turn. Call from on_data and return the bytes consumed so far.
 */
void sb_conn_hold_input(struct sb_conn *c);
void sb_conn_release_input(struct sb_conn *c);

/* Calls on_timer after ms milliseconds (10 ms granularity); 0 cancels. One timer per conn. */
void sb_conn_set_timer(struct sb_conn *c, uint64_t ms);

/* Closes now: queued output is dropped. on_close(c, err) follows after the loop iteration. */
void sb_conn_close(struct sb_conn *c, int err);

/* Stops reading, sends what is queued, then closes (on_close(c, 0)). */
void sb_conn_close_after_flush(struct sb_conn *c);

bool sb_conn_is_closing(const struct sb_conn *c);

/*
 * Moves the connection to worker `to`: once its queued output is sent and no receive is armed,
 * the socket, the app state and the bytes not consumed yet go to `to`, which calls on_handoff.
 * Call from on_data (return the bytes consumed so far) or on_open. Returns 0, -EINVAL for a bad
 * worker, -EALREADY if the connection is closing or already moving.
 */
int sb_conn_handoff(struct sb_conn *c, unsigned to);

#endif
