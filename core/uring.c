/*
 * The io_uring backend. Each operation has the fast form the kernel offers and the Linux 5.15
 * form; which one runs is decided here from the feature probe, never by callers.
 *   accept: multishot (5.19)              | one accept re-armed after each completion
 *   recv:   multishot into a buffer group | one recv with buffer selection per completion
 *   buffers: ring-mapped (5.19)           | IORING_OP_PROVIDE_BUFFERS
 *   wake-up: IORING_OP_MSG_RING (5.18)    | eventfd write
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/log.h"
#include "core/worker.h"

#define SB_BGID 0

struct io_uring_sqe *sb__io_sqe(struct sb_worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    if (sqe)
        return sqe;
    /* The submission queue is full: hand it to the kernel and take a fresh slot. */
    io_uring_submit(&w->ring);
    sqe = io_uring_get_sqe(&w->ring);
    assert(sqe != NULL);
    return sqe;
}

static int setup_ring(struct sb_worker *w)
{
    const struct sb_features *f = &w->e->feat;
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    /* DEFER_TASKRUN runs completions only when this thread enters the kernel, which it does
     * once per loop iteration anyway: fewer interruptions and better batching. */
    if (f->defer_taskrun)
        p.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    else if (f->coop_taskrun)
        p.flags |= IORING_SETUP_COOP_TASKRUN | (f->single_issuer ? IORING_SETUP_SINGLE_ISSUER : 0);
    p.flags |= IORING_SETUP_CQSIZE;
    p.cq_entries = w->e->cfg.ring_entries * 4;
    return io_uring_queue_init_params(w->e->cfg.ring_entries, &w->ring, &p);
}

static int setup_buffers(struct sb_worker *w)
{
    unsigned n = w->e->cfg.recv_buffers, size = w->e->cfg.recv_buffer_size;
    size_t bytes = (size_t)n * size;
    w->bufs = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (w->bufs == MAP_FAILED) {
        w->bufs = NULL;
        return -errno;
    }
    if (w->e->feat.buf_ring) {
        size_t ring_bytes = n * sizeof(struct io_uring_buf);
        void *mem =
            mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
            return -errno;
        struct io_uring_buf_reg reg = {
            .ring_addr = (uint64_t)(uintptr_t)mem, .ring_entries = n, .bgid = SB_BGID};
        int r = io_uring_register_buf_ring(&w->ring, &reg, 0);
        if (r < 0) {
            munmap(mem, ring_bytes);
            return r;
        }
        w->br = mem;
        io_uring_buf_ring_init(w->br);
        for (unsigned i = 0; i < n; i++)
            io_uring_buf_ring_add(w->br, w->bufs + (size_t)i * size, size, (unsigned short)i,
                                  io_uring_buf_ring_mask(n), (int)i);
        io_uring_buf_ring_advance(w->br, (int)n);
        return 0;
    }
    struct io_uring_sqe *sqe = sb__io_sqe(w);
    io_uring_prep_provide_buffers(sqe, w->bufs, (int)size, (int)n, SB_BGID, 0);
    io_uring_sqe_set_data64(sqe, sb__ud(NULL, SB_OP_IGNORE));
    io_uring_submit(&w->ring);
    return 0;
}

int sb__io_init(struct sb_worker *w)
{
    int r = setup_ring(w);
    if (r < 0)
        return r;
    w->ring_ok = true;
    r = setup_buffers(w);
    if (r < 0)
        return r;
    w->efd = eventfd(0, EFD_CLOEXEC);
    if (w->efd < 0)
        return -errno;
    sb__io_arm_eventfd(w);
    return 0;
}

void sb__io_exit(struct sb_worker *w)
{
    size_t n = w->e->cfg.recv_buffers;
    if (w->ring_ok)
        io_uring_queue_exit(&w->ring);
    w->ring_ok = false;
    if (w->br)
        munmap(w->br, n * sizeof(struct io_uring_buf));
    if (w->bufs)
        munmap(w->bufs, n * w->e->cfg.recv_buffer_size);
    w->br = NULL;
    w->bufs = NULL;
    if (w->efd >= 0)
        close(w->efd);
    w->efd = -1;
}

void sb__io_arm_accept(struct sb_worker *w, struct sb_wlistener *l)
{
    struct io_uring_sqe *sqe = sb__io_sqe(w);
    /* Accepted sockets stay blocking: io_uring polls them itself, and a blocking socket never
     * turns a recv into -EAGAIN. */
    if (w->e->feat.multishot_accept)
        io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
    else
        io_uring_prep_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, sb__ud(l, SB_OP_ACCEPT));
    l->armed = true;
}

void sb__io_arm_recv(struct sb_worker *w, struct sb_conn *c)
{
    struct io_uring_sqe *sqe = sb__io_sqe(w);
    if (w->e->feat.multishot_recv)
        io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    else
        io_uring_prep_recv(sqe, c->fd, NULL, w->e->cfg.recv_buffer_size, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = SB_BGID;
    io_uring_sqe_set_data64(sqe, sb__ud(c, SB_OP_RECV));
    c->flags |= SB_CF_RECV;
    c->flags &= (uint16_t)~SB_CF_CANCELLED;
}

void sb__io_send(struct sb_worker *w, struct sb_conn *c, struct sb_sendctx *ctx)
{
    struct io_uring_sqe *sqe = sb__io_sqe(w);
    if (ctx->mh.msg_iovlen == 1)
        io_uring_prep_send(sqe, c->fd, ctx->iov[0].iov_base, ctx->iov[0].iov_len, MSG_NOSIGNAL);
    else
        io_uring_prep_sendmsg(sqe, c->fd, &ctx->mh, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, sb__ud(c, SB_OP_SEND));
    c->flags |= SB_CF_SEND;
}

void sb__io_cancel(struct sb_worker *w, uint64_t user_data)
{
    struct io_uring_sqe *sqe = sb__io_sqe(w);
    io_uring_prep_cancel64(sqe, user_data, 0);
    io_uring_sqe_set_data64(sqe, sb__ud(NULL, SB_OP_IGNORE));
}

void sb__io_arm_eventfd(struct sb_worker *w)
{
    struct io_uring_sqe *sqe = sb__io_sqe(w);
    io_uring_prep_read(sqe, w->efd, &w->efd_val, sizeof(w->efd_val), 0);
    io_uring_sqe_set_data64(sqe, sb__ud(w, SB_OP_EVENTFD));
}

void sb__io_wake(struct sb_worker *from, struct sb_worker *to)
{
    if (from->e->feat.msg_ring) {
        struct io_uring_sqe *sqe = sb__io_sqe(from);
        io_uring_prep_msg_ring(sqe, to->ring.ring_fd, 0, sb__ud(NULL, SB_OP_MSG_WAKE), 0);
        io_uring_sqe_set_data64(sqe, sb__ud(NULL, SB_OP_IGNORE));
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        return;
    }
    uint64_t one = 1;
    ssize_t r = write(to->efd, &one, sizeof(one));
    (void)r; /* an eventfd write fails only on counter overflow, and then it is awake anyway */
}

void sb__io_write(struct sb_worker *w, struct sb_file_op *op, int fd, const struct iovec *iov,
                  unsigned n, int64_t offset)
{
    struct io_uring_sqe *sqe = sb__io_sqe(w);
    /* An offset of -1 means "the current file position", which O_APPEND makes the end. */
    io_uring_prep_writev(sqe, fd, iov, n, offset < 0 ? (uint64_t)-1 : (uint64_t)offset);
    io_uring_sqe_set_data64(sqe, sb__ud(op, SB_OP_FILE));
}

void sb__io_fsync(struct sb_worker *w, struct sb_file_op *op, int fd, bool data_only)
{
    struct io_uring_sqe *sqe = sb__io_sqe(w);
    io_uring_prep_fsync(sqe, fd, data_only ? IORING_FSYNC_DATASYNC : 0);
    io_uring_sqe_set_data64(sqe, sb__ud(op, SB_OP_FILE));
}

void sb__io_connect(struct sb_worker *w, struct sb_conn *c, const struct sockaddr *addr,
                    socklen_t len)
{
    struct io_uring_sqe *sqe = sb__io_sqe(w);
    io_uring_prep_connect(sqe, c->fd, addr, len);
    io_uring_sqe_set_data64(sqe, sb__ud(c, SB_OP_CONNECT));
}

uint8_t *sb__io_buffer(struct sb_worker *w, unsigned bid)
{
    return w->bufs + (size_t)bid * w->e->cfg.recv_buffer_size;
}

void sb__io_recycle(struct sb_worker *w, unsigned bid)
{
    unsigned size = w->e->cfg.recv_buffer_size;
    if (w->br) {
        io_uring_buf_ring_add(w->br, sb__io_buffer(w, bid), size, (unsigned short)bid,
                              io_uring_buf_ring_mask(w->e->cfg.recv_buffers), 0);
        io_uring_buf_ring_advance(w->br, 1);
        return;
    }
    struct io_uring_sqe *sqe = sb__io_sqe(w);
    io_uring_prep_provide_buffers(sqe, sb__io_buffer(w, bid), (int)size, 1, SB_BGID, (int)bid);
    io_uring_sqe_set_data64(sqe, sb__ud(NULL, SB_OP_IGNORE));
}

int sb__io_wait(struct sb_worker *w, int timeout_ms)
{
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts;
    struct __kernel_timespec *tsp = NULL;
    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
        tsp = &ts;
    }
    int r = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, tsp, NULL);
    if (r < 0 && r != -ETIME && r != -EINTR)
        return r;
    w->now_ms = sb__clock_ms(); /* the wait may have been long */
    unsigned head, n = 0;
    io_uring_for_each_cqe(&w->ring, head, cqe)
    {
        int bid =
            (cqe->flags & IORING_CQE_F_BUFFER) ? (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT) : -1;
        sb__worker_complete(w, cqe->user_data, cqe->res, cqe->flags & IORING_CQE_F_MORE, bid);
        n++;
    }
    io_uring_cq_advance(&w->ring, n);
    return 0;
}
