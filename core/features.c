#include "core/features.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <string.h>

/* Tries to create a tiny ring with the given setup flags: the only reliable test for them. */
static bool setup_flags_work(unsigned flags)
{
    struct io_uring ring;
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    if (io_uring_queue_init_params(4, &ring, &p) < 0)
        return false;
    io_uring_queue_exit(&ring);
    return true;
}

int sb_features_probe(bool compat, struct sb_features *out)
{
    memset(out, 0, sizeof(*out));
    struct io_uring ring;
    int r = io_uring_queue_init(4, &ring, 0);
    if (r < 0)
        return r;
    struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
    io_uring_queue_exit(&ring);
    if (!probe)
        return -ENOSYS;
    if (!compat) {
        /* Multishot accept and ring-mapped buffers arrived in 5.19 together with
         * IORING_OP_SOCKET; multishot recv in 6.0 with IORING_OP_SEND_ZC. The opcodes are
         * the probe-able witnesses of those releases. */
        bool k519 = io_uring_opcode_supported(probe, IORING_OP_SOCKET);
        bool k60 = io_uring_opcode_supported(probe, IORING_OP_SEND_ZC);
        out->multishot_accept = k519;
        out->buf_ring = k519;
        out->multishot_recv = k60;
        out->send_zc = k60;
        out->msg_ring = io_uring_opcode_supported(probe, IORING_OP_MSG_RING);
        out->coop_taskrun = setup_flags_work(IORING_SETUP_COOP_TASKRUN);
        out->single_issuer = setup_flags_work(IORING_SETUP_SINGLE_ISSUER);
        out->defer_taskrun =
            setup_flags_work(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    }
    io_uring_free_probe(probe);
    return 0;
}

void sb_features_describe(const struct sb_features *f, char *buf, size_t len)
{
    snprintf(buf, len,
             "multishot_accept=%s multishot_recv=%s buf_ring=%s msg_ring=%s coop_taskrun=%s "
             "single_issuer=%s defer_taskrun=%s send_zc=%s",
             f->multishot_accept ? "on" : "off", f->multishot_recv ? "on" : "off",
             f->buf_ring ? "on" : "off", f->msg_ring ? "on" : "off", f->coop_taskrun ? "on" : "off",
             f->single_issuer ? "on" : "off", f->defer_taskrun ? "on" : "off",
             f->send_zc ? "on" : "off");
}
