/*
 * io_uring feature probe. Run once at start; every fast path of the engine is chosen from this
 * result, and each has a Linux 5.15 fallback that compat mode forces.
 */
#ifndef SB_CORE_FEATURES_H
#define SB_CORE_FEATURES_H

#include <stdbool.h>
#include <stddef.h>

struct sb_features {
    bool multishot_accept; /* 5.19 */
    bool multishot_recv;   /* 6.0 */
    bool buf_ring;         /* 5.19 ring-mapped provided buffers */
    bool msg_ring;         /* 5.18 IORING_OP_MSG_RING wake-ups */
    bool coop_taskrun;     /* 5.19 */
    bool single_issuer;    /* 6.0 */
    bool defer_taskrun;    /* 6.1 */
    bool send_zc;          /* 6.0 */
};

/*
 * Probes the running kernel. With compat, reports the Linux 5.15 feature set (every flag false)
 * after checking that io_uring itself works. Returns 0, or -errno when io_uring cannot be used
 * at all (-ENOSYS: not built in; -EPERM: blocked by seccomp or kernel.io_uring_disabled).
 */
int sb_features_probe(bool compat, struct sb_features *out);

/* Writes a one-line summary ("multishot_accept=on ...") into buf. */
void sb_features_describe(const struct sb_features *f, char *buf, size_t len);

#endif
