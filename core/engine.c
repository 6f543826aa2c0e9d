/*
 * Engine and workers: thread start-up, SO_REUSEPORT listeners, accept, the mailboxes between
 * workers, and the event loop that ties them together.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/worker.h"

static _Thread_local struct sb_worker *self;

void sb_engine_config_default(struct sb_engine_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->pin_workers = true;
    cfg->ring_entries = 4096;
    cfg->recv_buffers = 1024;
    cfg->recv_buffer_size = 16384;
    cfg->max_connections = 1000000;
    cfg->send_queue_limit = 4u << 20;
    cfg->shutdown_timeout_ms = 10000;
    cfg->mailbox_entries = 4096;
}

static bool is_pow2(unsigned n)
{
    return n && !(n & (n - 1));
}

/* ---- engine (main thread) ------------------------------------------------------------------ */

int sb_engine_create(const struct sb_engine_config *cfg, struct sb_engine **out)
{
    if (!is_pow2(cfg->recv_buffers) || cfg->recv_buffers > 32768 ||
        !is_pow2(cfg->mailbox_entries) || cfg->recv_buffer_size < 512 || cfg->ring_entries < 64 ||
        cfg->workers > 256)
        return -EINVAL;
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
        return -errno;
    struct sb_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->cfg = *cfg;
    /* Default to the CPUs this process may run on, so `taskset` sizes the engine too. */
    unsigned ncpu = (unsigned)CPU_COUNT(&allowed);
    e->nworkers = cfg->workers ? cfg->workers : ncpu;
    int r = sb_features_probe(cfg->io_mode == SB_IO_COMPAT, &e->feat);
    if (r < 0) {
        free(e);
        return r;
    }
    e->workers = calloc(e->nworkers, sizeof(*e->workers));
    if (cfg->max_connections_per_ip)
        e->ip_counts = calloc(SB_IP_SLOTS, sizeof(*e->ip_counts));
    if (!e->workers || (cfg->max_connections_per_ip && !e->ip_counts)) {
        free(e->workers);
        free(e);
        return -ENOMEM;
    }
    int cpus[CPU_SETSIZE], n = 0;
    for (int i = 0; i < CPU_SETSIZE; i++) {
        if (CPU_ISSET(i, &allowed))
            cpus[n++] = i;
    }
    size_t conn_size = sizeof(struct sb_conn) + cfg->conn_app_size;
    conn_size = (conn_size + 15) & ~(size_t)15;
    for (unsigned i = 0; i < e->nworkers; i++) {
        struct sb_worker *w = &e->workers[i];
        w->e = e;
        w->id = i;
        w->cpu = cfg->pin_workers ? cpus[i % (unsigned)n] : -1;
        w->efd = -1;
        w->conn_size = conn_size;
    }
    char desc[256];
    sb_features_describe(&e->feat, desc, sizeof(desc));
    sb_log(SB_LOG_INFO, 0, "io_uring %s: %s",
           cfg->io_mode == SB_IO_COMPAT ? "compat (5.15)" : "auto", desc);
    *out = e;
    return 0;
}

static int resolve(const char *host, unsigned port, struct sockaddr_storage *ss, socklen_t *len)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%u", port);
    int r = getaddrinfo(*host ? host : NULL, portstr, &hints, &res);
    if (r != 0)
        return -EADDRNOTAVAIL;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int open_listener(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    /* TCP_NODELAY on the listener is inherited by every accepted socket: one syscall fewer per
     * connection. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, SOMAXCONN) < 0) {
        int r = -errno;
        close(fd);
        return r;
    }
    return fd;
}

int sb_engine_listen(struct sb_engine *e, const char *host, unsigned port,
                     const struct sb_conn_ops *ops, unsigned *bound_port)
{
    if (e->nlisteners == SB_MAX_LISTENERS || e->running)
        return -EINVAL;
    struct sockaddr_storage ss;
    socklen_t len;
    int r = resolve(host, port, &ss, &len);
    if (r < 0)
        return r;
    unsigned idx = e->nlisteners;
    struct sb_listener *ls = &e->listeners[idx];
    ls->ops = ops;
    for (unsigned i = 0; i < e->nworkers; i++) {
        int fd = open_listener(&ss, len);
        if (fd < 0) {
            for (unsigned j = 0; j < i; j++)
                close(e->workers[j].listeners[idx].fd);
            return fd;
        }
        if (i == 0) {
            /* With port 0 the first bind picks the port; the others share it. */
            struct sockaddr_storage got;
            socklen_t glen = sizeof(got);
            getsockname(fd, (struct sockaddr *)&got, &glen);
            unsigned p = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                                         : ((struct sockaddr_in *)&got)->sin_port);
            if (ss.ss_family == AF_INET6)
                ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)p);
            else
                ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)p);
            ls->port = p;
        }
        struct sb_wlistener *wl = &e->workers[i].listeners[idx];
        wl->w = &e->workers[i];
        wl->ls = ls;
        wl->fd = fd;
        e->workers[i].nlisteners = idx + 1;
    }
    e->nlisteners++;
    if (bound_port)
        *bound_port = ls->port;
    return 0;
}

int sb_engine_set_transport(struct sb_engine *e, unsigned port, const struct sb_transport *tp)
{
    for (unsigned i = 0; i < e->nlisteners; i++) {
        if (e->listeners[i].port == port) {
            e->listeners[i].tp = tp;
            return 0;
        }
    }
    return -ENOENT;
}

int sb_engine_add_client(struct sb_engine *e, const struct sb_conn_ops *ops, unsigned *client)
{
    if (e->nlisteners == SB_MAX_LISTENERS || e->running)
        return -EINVAL;
    /* A client is a listener without sockets: the slot only carries its callbacks. */
    e->listeners[e->nlisteners].ops = ops;
    *client = e->nlisteners++;
    return 0;
}

struct sb_conn *sb_worker_connect(struct sb_worker *w, unsigned client, const struct sockaddr *addr,
                                  socklen_t addrlen)
{
    struct sb_engine *e = w->e;
    if (client >= e->nlisteners || addrlen > sizeof(struct sockaddr_storage)) {
        errno = EINVAL;
        return NULL;
    }
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sb_conn *c = sb__conn_alloc(w, fd, &e->listeners[client]);
    uint8_t *peer = c ? malloc(addrlen) : NULL;
    if (!peer) {
        if (c)
            sb__conn_abandon(c);
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    atomic_fetch_add_explicit(&e->nconns, 1, memory_order_relaxed);
    /* The address must outlive the connect operation: it waits in the (still empty) input
     * buffer, which the connect completion frees. */
    memcpy(peer, addr, addrlen);
    c->in = peer;
    c->flags |= SB_CF_CONNECTING;
    sb__io_connect(w, c, (const struct sockaddr *)peer, addrlen);
    return c;
}

static void *worker_main(void *arg);
static void mailbox_free(struct sb_worker *w);

int sb_engine_on_start(struct sb_engine *e, sb_mail_cb fn, void *arg)
{
    if (e->non_start == SB_MAX_START_HOOKS)
        return -EINVAL;
    e->on_start[e->non_start].fn = fn;
    e->on_start[e->non_start].arg = arg;
    e->non_start++;
    return 0;
}

int sb_engine_start(struct sb_engine *e)
{
    pthread_barrier_init(&e->started, NULL, e->nworkers + 1);
    e->has_barrier = true;
    /* Workers inherit this mask: signals go to the main thread, which waits for them. */
    for (unsigned i = 0; i < e->nworkers; i++) {
        int r = pthread_create(&e->workers[i].thread, NULL, worker_main, &e->workers[i]);
        if (r != 0) {
            /* Cannot unwind started threads cleanly before the barrier; treat as fatal. */
            sb_log(SB_LOG_ERROR, -r, "cannot start worker %u", i);
            return -r;
        }
    }
    e->running = true;
    /* After this every worker has set up its ring and eventfd, or recorded why it could not. */
    pthread_barrier_wait(&e->started);
    int err = atomic_load(&e->start_err);
    if (err < 0) {
        sb_engine_stop(e);
        sb_engine_wait(e);
    }
    return err;
}

void sb_engine_stop(struct sb_engine *e)
{
    atomic_store(&e->stopping, 1);
    for (unsigned i = 0; i < e->nworkers; i++) {
        uint64_t one = 1;
        if (e->workers[i].efd >= 0) {
            ssize_t r = write(e->workers[i].efd, &one, sizeof(one));
            (void)r;
        }
    }
}

void sb_engine_wait(struct sb_engine *e)
{
    if (!e->running)
        return;
    for (unsigned i = 0; i < e->nworkers; i++)
        pthread_join(e->workers[i].thread, NULL);
    e->running = false;
    uint64_t lost = 0;
    for (unsigned i = 0; i < e->nworkers; i++) {
        struct sb_worker *w = &e->workers[i];
        for (unsigned k = 0; w->rings && k < e->nworkers; k++)
            lost += ck_ring_size(&w->rings[k]);
        mailbox_free(w);
    }
    if (lost)
        sb_log(SB_LOG_WARN, 0, "%llu messages between workers were not run at shutdown",
               (unsigned long long)lost);
}

void sb_engine_free(struct sb_engine *e)
{
    if (!e)
        return;
    for (unsigned i = 0; i < e->nworkers; i++) {
        struct sb_worker *w = &e->workers[i];
        for (unsigned l = 0; l < w->nlisteners; l++) {
            if (w->listeners[l].ls && w->listeners[l].fd >= 0 && !w->listeners[l].closing)
                close(w->listeners[l].fd);
        }
    }
    free(e->workers);
    free(e->ip_counts);
    if (e->has_barrier)
        pthread_barrier_destroy(&e->started);
    free(e);
}

unsigned sb_engine_workers(const struct sb_engine *e)
{
    return e->nworkers;
}

uint64_t sb_engine_connections(const struct sb_engine *e)
{
    return atomic_load_explicit(&e->nconns, memory_order_relaxed);
}

void sb_engine_worker_stats(const struct sb_engine *e, unsigned worker, struct sb_worker_stats *out)
{
    const struct sb_worker *w = &e->workers[worker];
    out->connections = atomic_load_explicit(&w->nconns, memory_order_relaxed);
    out->accepted = atomic_load_explicit(&w->st_accepted, memory_order_relaxed);
    out->refused = atomic_load_explicit(&w->st_refused, memory_order_relaxed);
    out->bytes_in = atomic_load_explicit(&w->st_bytes_in, memory_order_relaxed);
    out->bytes_out = atomic_load_explicit(&w->st_bytes_out, memory_order_relaxed);
    out->recvs = atomic_load_explicit(&w->st_recvs, memory_order_relaxed);
    out->sends = atomic_load_explicit(&w->st_sends, memory_order_relaxed);
    out->handoffs_in = atomic_load_explicit(&w->st_handoffs_in, memory_order_relaxed);
}

/* ---- worker accessors ---------------------------------------------------------------------- */

struct sb_worker *sb_worker_self(void)
{
    return self;
}

unsigned sb_worker_id(const struct sb_worker *w)
{
    return w->id;
}

struct sb_engine *sb_worker_engine(const struct sb_worker *w)
{
    return w->e;
}

uint64_t sb_worker_now_ms(const struct sb_worker *w)
{
    return w->now_ms;
}

int sb_worker_write(struct sb_worker *w, struct sb_file_op *op, int fd, const struct iovec *iov,
                    unsigned n, int64_t offset)
{
    if (!op->cb || n == 0 || ((uintptr_t)op & SB_OP_MASK))
        return -EINVAL;
    sb__io_write(w, op, fd, iov, n, offset);
    return 0;
}

int sb_worker_fsync(struct sb_worker *w, struct sb_file_op *op, int fd, bool data_only)
{
    if (!op->cb || ((uintptr_t)op & SB_OP_MASK))
        return -EINVAL;
    sb__io_fsync(w, op, fd, data_only);
    return 0;
}

void sb_worker_timer_set(struct sb_worker *w, struct sb_worker_timer *timer, uint64_t ms)
{
    if (ms == 0)
        sb__wheel_del(&w->wtimers, &timer->t);
    else
        sb__wheel_add(&w->wtimers, &timer->t, w->now_ms + ms);
}

static void worker_timer_fired(struct sb_timer *t, void *ctx)
{
    struct sb_worker_timer *timer = (struct sb_worker_timer *)t; /* t is the first member */
    timer->cb(ctx, timer);
}

/* ---- mailboxes ----------------------------------------------------------------------------- */

/*
 * Wake protocol: a worker about to block sets `sleeping`, then checks its rings once more; a
 * sender enqueues, then reads `sleeping` and wakes the target only if it is set. Both sides
 * use sequentially consistent operations, so at least one sees the other.
 */

static int mailbox_init(struct sb_worker *w)
{
    struct sb_engine *e = w->e;
    unsigned n = e->nworkers, size = e->cfg.mailbox_entries;
    w->rings = calloc(n, sizeof(*w->rings));
    w->ring_bufs = calloc(n, sizeof(*w->ring_bufs));
    w->overflow = calloc(n, sizeof(*w->overflow));
    if (!w->rings || !w->ring_bufs || !w->overflow)
        return -ENOMEM;
    for (unsigned i = 0; i < n; i++) {
        w->ring_bufs[i] = calloc(size, sizeof(struct sb_mail));
        if (!w->ring_bufs[i])
            return -ENOMEM;
        ck_ring_init(&w->rings[i], size);
    }
    return 0;
}

static void mailbox_free(struct sb_worker *w)
{
    for (unsigned i = 0; w->ring_bufs && i < w->e->nworkers; i++)
        free(w->ring_bufs[i]);
    for (unsigned i = 0; w->overflow && i < w->e->nworkers; i++)
        free(w->overflow[i].items);
    free(w->rings);
    free(w->ring_bufs);
    free(w->overflow);
}

static bool ring_push(struct sb_worker *from, struct sb_worker *to, struct sb_mail *m)
{
    return ck_ring_enqueue_spsc_sb_mail(&to->rings[from->id], to->ring_bufs[from->id], m);
}

static int overflow_push(struct sb_overflow *o, const struct sb_mail *m)
{
    if (o->count == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        struct sb_mail *items = malloc(cap * sizeof(*items));
        if (!items)
            return -ENOMEM;
        for (size_t i = 0; i < o->count; i++)
            items[i] = o->items[(o->head + i) % o->cap];
        free(o->items);
        o->items = items;
        o->head = 0;
        o->cap = cap;
    }
    o->items[(o->head + o->count) % o->cap] = *m;
    o->count++;
    return 0;
}

int sb_worker_post(struct sb_worker *from, unsigned to, sb_mail_cb fn, void *arg)
{
    struct sb_worker *target = &from->e->workers[to];
    struct sb_mail m = {fn, arg};
    struct sb_overflow *o = &from->overflow[to];
    /* Counted before it can run, so the count never dips below what is really in flight. */
    atomic_fetch_add(&from->e->mail_inflight, 1);
    /* Order is kept: once anything overflowed, later mail queues behind it. */
    if (o->count || !ring_push(from, target, &m)) {
        int r = overflow_push(o, &m);
        if (r < 0) {
            atomic_fetch_sub(&from->e->mail_inflight, 1);
            return r;
        }
    }
    from->wake_mask[to / 64] |= 1ull << (to % 64);
    return 0;
}

static void mailbox_retry_overflow(struct sb_worker *w)
{
    for (unsigned t = 0; t < w->e->nworkers; t++) {
        struct sb_overflow *o = &w->overflow[t];
        while (o->count && ring_push(w, &w->e->workers[t], &o->items[o->head])) {
            o->head = (o->head + 1) % o->cap;
            o->count--;
            w->wake_mask[t / 64] |= 1ull << (t % 64);
        }
    }
}

static void mailbox_send_wakes(struct sb_worker *w)
{
    atomic_thread_fence(memory_order_seq_cst);
    for (unsigned i = 0; i < 4; i++) {
        while (w->wake_mask[i]) {
            unsigned t = i * 64 + (unsigned)__builtin_ctzll(w->wake_mask[i]);
            w->wake_mask[i] &= w->wake_mask[i] - 1;
            struct sb_worker *to = &w->e->workers[t];
            if (to != w && atomic_load(&to->sleeping))
                sb__io_wake(w, to);
        }
    }
}

static bool mailbox_drain(struct sb_worker *w)
{
    bool any = false;
    struct sb_mail m;
    for (unsigned i = 0; i < w->e->nworkers; i++) {
        /* Only what is there now: mail posted meanwhile (a handler re-posting itself, say)
         * waits for the next iteration, so the loop always gets back to the kernel. */
        unsigned n = ck_ring_size(&w->rings[i]);
        if (n && w->quiet) {
            /* Mail may bring work (a connection moving in): not quiet while it runs. */
            w->quiet = false;
            atomic_fetch_sub(&w->e->quiet, 1);
        }
        while (n-- && ck_ring_dequeue_spsc_sb_mail(&w->rings[i], w->ring_bufs[i], &m)) {
            m.fn(w, m.arg);
            atomic_fetch_sub(&w->e->mail_inflight, 1);
            any = true;
        }
    }
    return any;
}

static bool mailbox_pending(struct sb_worker *w)
{
    for (unsigned i = 0; i < w->e->nworkers; i++) {
        if (ck_ring_size(&w->rings[i]))
            return true;
    }
    return false;
}

/* ---- accept -------------------------------------------------------------------------------- */

static void refused_close(struct sb_conn *c, int err)
{
}

/* The callbacks of a connection its transport refused: the app never saw it. */
static const struct sb_conn_ops refused_ops = {.on_close = refused_close};
static const struct sb_listener refused = {.ops = &refused_ops};

/*
 * Counts the connection against its client address. Addresses hash into a fixed set of
 * counters shared by all workers (SO_REUSEPORT spreads one client's connections over them);
 * two addresses sharing a counter share a limit, which errs on the strict side. IPv6 clients
 * are counted per /64, what one subscriber usually holds. Returns the slot, or SB_NO_IP_SLOT
 * when the address is over its limit.
 */
static uint32_t count_address(struct sb_engine *e, int fd, char *addr, size_t addrlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    uint64_t key = 0;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0; /* no address to count by (already gone): let it fail on its own */
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        key = a->sin_addr.s_addr;
        inet_ntop(AF_INET, &a->sin_addr, addr, (socklen_t)addrlen);
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr))
            memcpy(&key, a->sin6_addr.s6_addr + 12, 4);
        else
            memcpy(&key, a->sin6_addr.s6_addr, 8);
        inet_ntop(AF_INET6, &a->sin6_addr, addr, (socklen_t)addrlen);
    }
    uint32_t slot = (uint32_t)(((key + 1) * 0x9E3779B97F4A7C15ull) >> 48) % SB_IP_SLOTS;
    unsigned n = atomic_fetch_add_explicit(&e->ip_counts[slot], 1, memory_order_relaxed);
    if (n < e->cfg.max_connections_per_ip)
        return slot;
    atomic_fetch_sub_explicit(&e->ip_counts[slot], 1, memory_order_relaxed);
    return SB_NO_IP_SLOT;
}

void sb__engine_uncount_address(struct sb_engine *e, uint32_t slot)
{
    if (slot != SB_NO_IP_SLOT)
        atomic_fetch_sub_explicit(&e->ip_counts[slot], 1, memory_order_relaxed);
}

static void on_accept(struct sb_wlistener *l, int res, bool more)
{
    struct sb_worker *w = l->w;
    struct sb_engine *e = w->e;
    if (!more)
        l->armed = false;
    if (l->closing) {
        if (res >= 0)
            close(res);
        if (!l->armed) {
            close(l->fd);
            l->fd = -1;
        }
        return;
    }
    if (res < 0) {
        if (res == -EMFILE || res == -ENFILE || res == -ENOMEM || res == -ENOBUFS) {
            sb_log(SB_LOG_WARN, res,
                   "accept failed; pausing accepts for 100 ms (raise ulimit -n?)");
            w->accept_retry_ms = w->now_ms + 100;
        }
        return;
    }
    uint64_t n = atomic_fetch_add_explicit(&e->nconns, 1, memory_order_relaxed);
    if (n >= e->cfg.max_connections) {
        atomic_fetch_sub_explicit(&e->nconns, 1, memory_order_relaxed);
        sb__stat_add(&w->st_refused, 1);
        close(res);
        static _Thread_local uint64_t last_warn;
        if (w->now_ms - last_warn > 1000) {
            last_warn = w->now_ms;
            sb_log(SB_LOG_WARN, 0, "max_connections (%u) reached: refusing connections",
                   e->cfg.max_connections);
        }
        return;
    }
    uint32_t slot = SB_NO_IP_SLOT;
    if (e->cfg.max_connections_per_ip) {
        char addr[INET6_ADDRSTRLEN] = "?";
        slot = count_address(e, res, addr, sizeof(addr));
        if (slot == SB_NO_IP_SLOT) {
            atomic_fetch_sub_explicit(&e->nconns, 1, memory_order_relaxed);
            sb__stat_add(&w->st_refused, 1);
            close(res);
            static _Thread_local uint64_t last_warn;
            if (w->now_ms - last_warn > 1000) {
                last_warn = w->now_ms;
                sb_log(SB_LOG_WARN, 0, "max_connections_per_ip (%u) reached for %s: refusing",
                       e->cfg.max_connections_per_ip, addr);
            }
            return;
        }
    }
    struct sb_conn *c = sb__conn_alloc(w, res, l->ls);
    if (!c) {
        atomic_fetch_sub_explicit(&e->nconns, 1, memory_order_relaxed);
        sb__engine_uncount_address(e, slot);
        sb__stat_add(&w->st_refused, 1);
        close(res);
        sb_log(SB_LOG_WARN, -ENOMEM, "connection refused");
        return;
    }
    sb__stat_add(&w->st_accepted, 1);
    c->ip_slot = slot;
    const struct sb_transport *tp = l->ls->tp;
    int r = tp ? tp->open(c, &c->tp) : 0;
    if (r < 0) {
        sb_log(SB_LOG_INFO, r, "c%llx: refused by its transport", (unsigned long long)c->id);
        c->ls = &refused; /* no app callbacks for a connection the app never saw */
        sb_conn_close(c, r);
        return;
    }
    l->ls->ops->on_open(c);
    if (!sb_conn_is_closing(c) && !(c->flags & SB_CF_HANDOFF))
        sb__io_arm_recv(w, c);
}

static void rearm_accepts(struct sb_worker *w)
{
    if (w->stopping || (w->accept_retry_ms && w->now_ms < w->accept_retry_ms))
        return;
    w->accept_retry_ms = 0;
    for (unsigned i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].ls && !w->listeners[i].armed && !w->listeners[i].closing)
            sb__io_arm_accept(w, &w->listeners[i]);
    }
}

/* ---- the loop ------------------------------------------------------------------------------ */

static void begin_stop(struct sb_worker *w)
{
    w->stopping = true;
    w->stop_deadline_ms = w->now_ms + w->e->cfg.shutdown_timeout_ms;
    for (unsigned i = 0; i < w->nlisteners; i++) {
        struct sb_wlistener *l = &w->listeners[i];
        if (!l->ls)
            continue; /* a client slot: no socket */
        l->closing = true;
        if (l->armed) {
            sb__io_cancel(w, sb__ud(l, SB_OP_ACCEPT));
        } else {
            close(l->fd);
            l->fd = -1;
        }
    }
    sb__conn_shutdown_all(w, false);
}

static bool listeners_closed(const struct sb_worker *w)
{
    for (unsigned i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].ls && w->listeners[i].fd >= 0)
            return false;
    }
    return true;
}

void sb__worker_complete(struct sb_worker *w, uint64_t ud, int res, bool more, int bid)
{
    void *ptr = (void *)(uintptr_t)(ud & ~SB_OP_MASK);
    switch ((enum sb_op)(ud & SB_OP_MASK)) {
    case SB_OP_ACCEPT:
        on_accept(ptr, res, more);
        break;
    case SB_OP_RECV:
        sb__conn_on_recv(ptr, res, more, bid);
        break;
    case SB_OP_SEND:
        sb__conn_on_send(ptr, res);
        break;
    case SB_OP_EVENTFD:
        if (atomic_load(&w->e->stopping) && !w->stopping)
            begin_stop(w);
        sb__io_arm_eventfd(w);
        break;
    case SB_OP_CONNECT:
        sb__conn_on_connect(ptr, res);
        break;
    case SB_OP_FILE: {
        struct sb_file_op *op = ptr;
        op->cb(w, op, res);
        break;
    }
    case SB_OP_MSG_WAKE:
        break; /* the loop drains the mailboxes on every iteration */
    case SB_OP_IGNORE:
        if (res < 0 && res != -ENOENT && res != -EALREADY)
            sb_log(SB_LOG_DEBUG, res, "auxiliary operation failed");
        break;
    }
}

/* Runs everything the last completions queued up: sends to start, connections to free. */
static void run_pending(struct sb_worker *w)
{
    do {
        sb__conn_flush(w);
        sb__conn_reap(w);
    } while (w->flush_head || w->reap_head);
}

static int next_timeout(struct sb_worker *w)
{
    /* Both wheels tick on the same 10 ms boundaries: either one armed means the next tick. */
    int t = sb__wheel_timeout_ms(&w->wheel, w->now_ms);
    if (t < 0)
        t = sb__wheel_timeout_ms(&w->wtimers, w->now_ms);
    if (w->stopping || w->accept_retry_ms)
        t = (t < 0 || t > SB_TIMER_TICK_MS) ? SB_TIMER_TICK_MS : t;
    return t;
}

/*
 * A stopping worker with no connections left stays until every worker is in that state and no
 * mail is on its way anywhere: until then a peer closing its last connections may still post
 * to it (and its mailboxes must exist; they are freed after every worker has left). In flight
 * is read first: mail that ran (and un-quieted its worker) is no longer counted.
 */
static bool worker_may_leave(struct sb_worker *w)
{
    struct sb_engine *e = w->e;
    bool done = w->stopping && atomic_load(&w->nconns) == 0 && listeners_closed(w);
    if (done != w->quiet) {
        w->quiet = done;
        if (done)
            atomic_fetch_add(&e->quiet, 1);
        else
            atomic_fetch_sub(&e->quiet, 1);
    }
    return done && atomic_load(&e->mail_inflight) == 0 && atomic_load(&e->quiet) == e->nworkers;
}

static void worker_loop(struct sb_worker *w)
{
    rearm_accepts(w);
    for (;;) {
        w->now_ms = sb__clock_ms();
        mailbox_retry_overflow(w);
        mailbox_drain(w);
        sb__wheel_expire(&w->wheel, w->now_ms, sb__conn_timer_fired, NULL);
        sb__wheel_expire(&w->wtimers, w->now_ms, worker_timer_fired, w);
        rearm_accepts(w);
        if (w->stopping && w->now_ms >= w->stop_deadline_ms && atomic_load(&w->nconns)) {
            sb_log(SB_LOG_WARN, 0, "shutdown deadline passed: closing %llu connections",
                   (unsigned long long)atomic_load(&w->nconns));
            sb__conn_shutdown_all(w, true);
            w->stop_deadline_ms = UINT64_MAX;
        }
        run_pending(w);
        mailbox_send_wakes(w);
        if (worker_may_leave(w))
            break;
        int timeout = next_timeout(w);
        atomic_store(&w->sleeping, 1);
        if (mailbox_pending(w))
            timeout = 0;
        int r = sb__io_wait(w, timeout);
        atomic_store(&w->sleeping, 0);
        if (r < 0 && r != -EBUSY && r != -EAGAIN) {
            /* Nothing the loop can do about it but try again; say so once a second. */
            static _Thread_local uint64_t last_warn;
            if (w->now_ms - last_warn >= 1000) {
                last_warn = w->now_ms;
                sb_log(SB_LOG_ERROR, r, "waiting for completions failed");
            }
        }
    }
}

static void *worker_main(void *arg)
{
    struct sb_worker *w = arg;
    struct sb_engine *e = w->e;
    char name[16];
    snprintf(name, sizeof(name), "w%u", w->id);
    sb_log_set_thread(name);
    pthread_setname_np(pthread_self(), name);
    self = w;
    if (w->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(w->cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    w->now_ms = sb__clock_ms();
    sb__wheel_init(&w->wheel, w->now_ms);
    sb__wheel_init(&w->wtimers, w->now_ms);
    int r = mailbox_init(w);
    if (r == 0)
        r = sb__io_init(w);
    if (r < 0) {
        sb_log(SB_LOG_ERROR, r, "worker setup failed (recv_buffers x recv_buffer_size too large?)");
        atomic_store(&e->start_err, r);
    }
    pthread_barrier_wait(&e->started);
    if (atomic_load(&e->start_err) == 0) {
        for (unsigned i = 0; i < e->non_start; i++)
            e->on_start[i].fn(w, e->on_start[i].arg);
        worker_loop(w);
    }
    sb__io_exit(w);
    sb__conn_free_pools(w);
    return NULL;
}
