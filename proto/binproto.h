/*
 * The binary encoding of the operation set (docs/protocol-binary.md): length-prefixed frames,
 * big-endian, each one operation. Pure functions on caller-owned bytes: no I/O, no allocation,
 * any thread. Decoded operations point into the decoded bytes (see proto/ops.h).
 *
 * A frame: u32 length of what follows, u8 version (1), u8 type, u16 flags (0), u32 request id,
 * then the type's body. The encoding is canonical: a frame that decodes re-encodes to the same
 * bytes.
 */
#ifndef SB_PROTO_BINPROTO_H
#define SB_PROTO_BINPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/ops.h"

#define SB_BINPROTO_VERSION 1
#define SB_BINPROTO_HEADER_SIZE 12 /* length prefix + version, type, flags, request id */
#define SB_BINPROTO_PORT 7000      /* the raw TCP transport's default port */
#define SB_BINPROTO_SUBPROTOCOL "switchboard.v1"
/*
 * The most a frame carrying one message adds to its body: a server advertises max_body <=
 * max_frame - this. The largest such frame is a SYNC_PAGE holding only that message (a MESSAGE
 * frame adds at most 273: a message with a body has no subject).
 */
#define SB_BINPROTO_MESSAGE_OVERHEAD 418

/* What the decoder read of a frame's header, for answering a frame it refused. */
struct sb_binproto_header {
    size_t frame_size; /* the whole frame, prefix included; on -EAGAIN the bytes needed */
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    uint32_t request_id;
};

/*
 * Decodes the frame at the start of a stream (raw TCP): buf holds len bytes received so far.
 * max_frame bounds the frame size, prefix included (0: no bound). Fills *hdr as far as it got
 * (zero-filled fields were not reached) and, on success, *op, which points into buf.
 * Returns the frame size (> 0), or:
 *   -EAGAIN          the frame is not all there; hdr->frame_size is how many bytes it needs (12
 *                    while the length prefix is incomplete);
 *   -EMSGSIZE        the length prefix says more than max_frame (known from the first 4 bytes);
 *   -EPROTO          the length prefix is below 8, too short for a header (first 4 bytes);
 *   -EPROTONOSUPPORT the version is not 1;
 *   -EBADMSG         a flag bit is set, or the body does not match the type's layout and limits;
 *   -EOPNOTSUPP      the type is unknown.
 * The last three are reported once the whole frame is there, so the frame can be skipped
 * (hdr->frame_size bytes) and answered with hdr->request_id.
 */
ssize_t sb_binproto_decode(const uint8_t *buf, size_t len, size_t max_frame,
                           struct sb_binproto_header *hdr, struct sb_op *op);

/*
 * Decodes buf as exactly one frame (a WebSocket binary message). Returns 0, or the errors of
 * sb_binproto_decode except -EAGAIN and -EPROTO: a buffer that is not exactly one frame (shorter
 * than a header, or a length prefix that disagrees with len) is -EBADMSG.
 * Both decoders give every body (SEND, MESSAGE) in the form SB_OP_BODY_BYTES.
 */
int sb_binproto_decode_frame(const uint8_t *buf, size_t len, size_t max_frame,
                             struct sb_binproto_header *hdr, struct sb_op *op);

/*
 * The exact size of op's frame, prefix included. Returns it, -EINVAL when op breaks a limit or
 * rule of its type (or has an unknown type), or -EMSGSIZE when it cannot fit a u32 length.
 */
ssize_t sb_binproto_size(const struct sb_op *op);

/*
 * Encodes op as one frame into out (cap bytes). Returns the frame size, or the errors of
 * sb_binproto_size, or -ENOSPC when cap is too small (out then holds unspecified bytes).
 * op->json_id is ignored. Lists are read with their iterators; lists made by this codec are
 * checked and copied as they are. A body in any form is written as its bytes (JSON and BASE64
 * are converted with proto/opsbody.h), so the three forms of one body give the same frame; a
 * JSON body without its quotes, or BASE64 that is not canonical, is -EINVAL.
 */
ssize_t sb_binproto_encode(const struct sb_op *op, uint8_t *out, size_t cap);

/* The iterators of lists in binary frames; item types as named in proto/ops.h. */
int sb_binproto_next_user(struct sb_ops_list_iter *it, void *item);         /* struct sb_slice */
int sb_binproto_next_resume(struct sb_ops_list_iter *it, void *item);       /* sb_op_resume */
int sb_binproto_next_message(struct sb_ops_list_iter *it, void *item);      /* sb_op_message */
int sb_binproto_next_conv_summary(struct sb_ops_list_iter *it, void *item); /* conv_summary */
int sb_binproto_next_device(struct sb_ops_list_iter *it, void *item);       /* sb_op_device */

/*
 * Builds a list in binary form in a caller buffer, for ops the server makes: add items of one
 * kind, then finish. Failures (no room, an item breaking a limit, mixed kinds) are sticky and
 * reported by finish, so a run of adds needs one check.
 */
struct sb_binproto_list_writer {
    uint8_t *buf;
    size_t len, cap;
    uint32_t count;
    sb_ops_list_next_cb next; /* the kind of the items so far */
    int error;
};

void sb_binproto_list_init(struct sb_binproto_list_writer *w, uint8_t *buf, size_t cap);
void sb_binproto_list_add_user(struct sb_binproto_list_writer *w, struct sb_slice user);
void sb_binproto_list_add_resume(struct sb_binproto_list_writer *w, const struct sb_op_resume *r);
void sb_binproto_list_add_message(struct sb_binproto_list_writer *w, const struct sb_op_message *m);
void sb_binproto_list_add_conv_summary(struct sb_binproto_list_writer *w,
                                       const struct sb_op_conv_summary *c);
void sb_binproto_list_add_device(struct sb_binproto_list_writer *w, const struct sb_op_device *d);

/*
 * Makes *out a list of the items added (pointing into the writer's buffer). Returns 0, -ENOSPC,
 * -EINVAL (an item broke a limit, or kinds were mixed) or -E2BIG (more than 65,535 items).
 */
int sb_binproto_list_finish(const struct sb_binproto_list_writer *w, struct sb_ops_list *out);

#endif
