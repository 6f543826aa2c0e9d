/*
 * libFuzzer target for proto/binproto. The input is a byte stream from a peer, decoded frame by
 * frame the way the raw TCP transport reads it (max_frame 65,536, as the test vectors use).
 * Every decoded operation is checked against other ways of getting it: the frame decoder, the
 * exact size, the encoder (whose output must be the input bytes: the encoding is canonical), a
 * second decode of that output, the encoder's item-by-item path for lists, and for SEND and
 * MESSAGE the same body handed to the encoder as base64 (which must give the same frame). Any
 * disagreement aborts.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/binproto.h"
#include "proto/opsbody.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FRAME 65536

static void require(bool ok)
{
    if (!ok) {
        abort();
    }
}

static bool slice_eq(struct sb_slice a, struct sb_slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0);
}

static bool op_list_eq(const struct sb_ops_list *a, const struct sb_ops_list *b, int kind);

enum { L_USER, L_RESUME, L_MESSAGE, L_CONV_SUMMARY, L_DEVICE };

/* Decoded bodies are always bytes. */
static bool body_eq(const struct sb_op_body *a, const struct sb_op_body *b)
{
    return a->form == SB_OP_BODY_BYTES && b->form == SB_OP_BODY_BYTES && slice_eq(a->data, b->data);
}

static bool message_eq(const struct sb_op_message *a, const struct sb_op_message *b)
{
    return a->msg_id == b->msg_id && a->seq == b->seq && a->ts_ms == b->ts_ms &&
           a->system == b->system && slice_eq(a->conv, b->conv) && slice_eq(a->from, b->from) &&
           slice_eq(a->device, b->device) && slice_eq(a->subject, b->subject) &&
           body_eq(&a->body, &b->body);
}

static bool conv_eq(const struct sb_op_conv *a, const struct sb_op_conv *b)
{
    return a->last_seq == b->last_seq && a->read_seq == b->read_seq && slice_eq(a->conv, b->conv) &&
           slice_eq(a->name, b->name) && slice_eq(a->owner, b->owner) &&
           op_list_eq(&a->admins, &b->admins, L_USER) &&
           op_list_eq(&a->members, &b->members, L_USER);
}

static bool conv_summary_eq(const struct sb_op_conv_summary *a, const struct sb_op_conv_summary *b)
{
    return a->last_seq == b->last_seq && a->read_seq == b->read_seq &&
           a->member_count == b->member_count && slice_eq(a->conv, b->conv) &&
           slice_eq(a->name, b->name) && slice_eq(a->owner, b->owner);
}

static bool device_eq(const struct sb_op_device *a, const struct sb_op_device *b)
{
    return a->session == b->session && a->connected_s == b->connected_s &&
           a->queued_bytes == b->queued_bytes && a->behind == b->behind &&
           slice_eq(a->device, b->device);
}

static bool item_eq(const void *a, const void *b, int kind)
{
    const struct sb_op_resume *ra = a, *rb = b;

    switch (kind) {
    case L_USER:
        return slice_eq(*(const struct sb_slice *)a, *(const struct sb_slice *)b);
    case L_RESUME:
        return ra->last_seq == rb->last_seq && slice_eq(ra->conv, rb->conv);
    case L_MESSAGE:
        return message_eq(a, b);
    case L_CONV_SUMMARY:
        return conv_summary_eq(a, b);
    default:
        return device_eq(a, b);
    }
}

/* Walks both lists in step: the same count, each yields exactly count equal items. */
static bool op_list_eq(const struct sb_ops_list *a, const struct sb_ops_list *b, int kind)
{
    union {
        struct sb_slice user;
        struct sb_op_resume resume;
        struct sb_op_message message;
        struct sb_op_conv_summary conv_summary;
        struct sb_op_device device;
    } x, y;
    struct sb_ops_list_iter ia, ib;
    int ra, rb;

    if (a->count != b->count) {
        return false;
    }
    sb_ops_list_begin(&ia, a);
    sb_ops_list_begin(&ib, b);
    for (uint32_t i = 0; i < a->count; i++) {
        ra = sb_ops_list_next(&ia, &x);
        rb = sb_ops_list_next(&ib, &y);
        if (ra != 1 || rb != 1 || !item_eq(&x, &y, kind)) {
            return false;
        }
    }
    return sb_ops_list_next(&ia, &x) == 0 && sb_ops_list_next(&ib, &y) == 0;
}

static bool client_op_eq(const struct sb_op *a, const struct sb_op *b)
{
    switch (a->type) {
    case SB_OP_HELLO:
        return slice_eq(a->u.hello.token, b->u.hello.token) &&
               slice_eq(a->u.hello.device, b->u.hello.device) &&
               op_list_eq(&a->u.hello.resume, &b->u.hello.resume, L_RESUME);
    case SB_OP_SEND:
        return slice_eq(a->u.send.client_id, b->u.send.client_id) &&
               slice_eq(a->u.send.conv, b->u.send.conv) && slice_eq(a->u.send.to, b->u.send.to) &&
               body_eq(&a->u.send.body, &b->u.send.body);
    case SB_OP_RECEIPT:
        return a->u.receipt.seq == b->u.receipt.seq && a->u.receipt.kind == b->u.receipt.kind &&
               slice_eq(a->u.receipt.conv, b->u.receipt.conv) &&
               slice_eq(a->u.receipt.to, b->u.receipt.to) &&
               slice_eq(a->u.receipt.user, b->u.receipt.user);
    case SB_OP_TYPING:
        return slice_eq(a->u.typing.conv, b->u.typing.conv) &&
               slice_eq(a->u.typing.to, b->u.typing.to) &&
               slice_eq(a->u.typing.user, b->u.typing.user);
    case SB_OP_PING:
    case SB_OP_PONG:
        return slice_eq(a->u.ping.data, b->u.ping.data);
    case SB_OP_PRESENCE_SUB:
    case SB_OP_PRESENCE_UNSUB:
        return op_list_eq(&a->u.presence_sub.users, &b->u.presence_sub.users, L_USER);
    case SB_OP_SYNC:
        return a->u.sync.limit == b->u.sync.limit && slice_eq(a->u.sync.cursor, b->u.sync.cursor) &&
               op_list_eq(&a->u.sync.convs, &b->u.sync.convs, L_RESUME);
    case SB_OP_CONV_CREATE:
        return slice_eq(a->u.conv_create.name, b->u.conv_create.name) &&
               op_list_eq(&a->u.conv_create.members, &b->u.conv_create.members, L_USER);
    case SB_OP_CONV_ADD:
    case SB_OP_CONV_REMOVE:
    case SB_OP_CONV_PROMOTE:
    case SB_OP_CONV_DEMOTE:
        return slice_eq(a->u.conv_members.conv, b->u.conv_members.conv) &&
               op_list_eq(&a->u.conv_members.users, &b->u.conv_members.users, L_USER);
    case SB_OP_CONV_LEAVE:
    case SB_OP_CONV_GET:
    case SB_OP_CONV_RENAME:
        return slice_eq(a->u.conv_ref.conv, b->u.conv_ref.conv) &&
               slice_eq(a->u.conv_ref.name, b->u.conv_ref.name);
    default:
        return true;
    }
}

static bool server_op_eq(const struct sb_op *a, const struct sb_op *b)
{
    const struct sb_op_welcome *wa = &a->u.welcome, *wb = &b->u.welcome;

    switch (a->type) {
    case SB_OP_WELCOME:
        return wa->session == wb->session && wa->server_time_ms == wb->server_time_ms &&
               wa->max_frame == wb->max_frame && wa->max_body == wb->max_body &&
               wa->ping_interval_ms == wb->ping_interval_ms &&
               wa->messages_per_s == wb->messages_per_s && wa->bytes_per_s == wb->bytes_per_s &&
               wa->max_group_members == wb->max_group_members && slice_eq(wa->user, wb->user) &&
               slice_eq(wa->device, wb->device);
    case SB_OP_ACK:
        return a->u.ack.msg_id == b->u.ack.msg_id && a->u.ack.seq == b->u.ack.seq &&
               a->u.ack.ts_ms == b->u.ack.ts_ms && a->u.ack.is_duplicate == b->u.ack.is_duplicate &&
               slice_eq(a->u.ack.client_id, b->u.ack.client_id) &&
               slice_eq(a->u.ack.conv, b->u.ack.conv);
    case SB_OP_MESSAGE:
        return message_eq(&a->u.message, &b->u.message);
    case SB_OP_PRESENCE:
        return a->u.presence.last_seen_ms == b->u.presence.last_seen_ms &&
               a->u.presence.status == b->u.presence.status &&
               slice_eq(a->u.presence.user, b->u.presence.user);
    case SB_OP_SYNC_PAGE:
        return a->u.sync_page.last_seq == b->u.sync_page.last_seq &&
               a->u.sync_page.has_more == b->u.sync_page.has_more &&
               a->u.sync_page.truncated == b->u.sync_page.truncated &&
               slice_eq(a->u.sync_page.conv, b->u.sync_page.conv) &&
               op_list_eq(&a->u.sync_page.messages, &b->u.sync_page.messages, L_MESSAGE);
    case SB_OP_SYNC_DONE:
        return slice_eq(a->u.sync_done.cursor, b->u.sync_done.cursor);
    case SB_OP_CONV:
        return conv_eq(&a->u.conv, &b->u.conv);
    case SB_OP_CONVS:
        return op_list_eq(&a->u.convs.convs, &b->u.convs.convs, L_CONV_SUMMARY);
    case SB_OP_DEVICE_LIST:
        return slice_eq(a->u.device_list.user, b->u.device_list.user) &&
               op_list_eq(&a->u.device_list.devices, &b->u.device_list.devices, L_DEVICE);
    case SB_OP_ERROR:
        return a->u.error.code == b->u.error.code &&
               a->u.error.retry_after_ms == b->u.error.retry_after_ms &&
               slice_eq(a->u.error.message, b->u.error.message) &&
               slice_eq(a->u.error.conv, b->u.error.conv);
    case SB_OP_BEHIND:
        return a->u.behind.seq == b->u.behind.seq && slice_eq(a->u.behind.conv, b->u.behind.conv);
    case SB_OP_GOAWAY:
        return a->u.goaway.reconnect_after_ms == b->u.goaway.reconnect_after_ms &&
               slice_eq(a->u.goaway.reason, b->u.goaway.reason);
    default:
        return true;
    }
}

static bool op_eq(const struct sb_op *a, const struct sb_op *b)
{
    return a->type == b->type && a->request_id == b->request_id && client_op_eq(a, b) &&
           server_op_eq(a, b);
}

/* Iterators that are not the codec's own, so the encoder reads lists item by item. */
static int foreign_user(struct sb_ops_list_iter *it, void *item)
{
    return sb_binproto_next_user(it, item);
}

static int foreign_resume(struct sb_ops_list_iter *it, void *item)
{
    return sb_binproto_next_resume(it, item);
}

static int foreign_message(struct sb_ops_list_iter *it, void *item)
{
    return sb_binproto_next_message(it, item);
}

static int foreign_conv_summary(struct sb_ops_list_iter *it, void *item)
{
    return sb_binproto_next_conv_summary(it, item);
}

static int foreign_device(struct sb_ops_list_iter *it, void *item)
{
    return sb_binproto_next_device(it, item);
}

static void set_foreign(struct sb_ops_list *l, sb_ops_list_next_cb next)
{
    if (l->next != NULL) {
        l->next = next;
    }
}

static void make_foreign(struct sb_op *op)
{
    switch (op->type) {
    case SB_OP_HELLO:
        set_foreign(&op->u.hello.resume, foreign_resume);
        break;
    case SB_OP_PRESENCE_SUB:
    case SB_OP_PRESENCE_UNSUB:
        set_foreign(&op->u.presence_sub.users, foreign_user);
        break;
    case SB_OP_SYNC:
        set_foreign(&op->u.sync.convs, foreign_resume);
        break;
    case SB_OP_SYNC_PAGE:
        set_foreign(&op->u.sync_page.messages, foreign_message);
        break;
    case SB_OP_CONV_CREATE:
        set_foreign(&op->u.conv_create.members, foreign_user);
        break;
    case SB_OP_CONV_ADD:
    case SB_OP_CONV_REMOVE:
    case SB_OP_CONV_PROMOTE:
    case SB_OP_CONV_DEMOTE:
        set_foreign(&op->u.conv_members.users, foreign_user);
        break;
    case SB_OP_CONV:
        set_foreign(&op->u.conv.admins, foreign_user);
        set_foreign(&op->u.conv.members, foreign_user);
        break;
    case SB_OP_CONVS:
        set_foreign(&op->u.convs.convs, foreign_conv_summary);
        break;
    case SB_OP_DEVICE_LIST:
        set_foreign(&op->u.device_list.devices, foreign_device);
        break;
    default:
        break;
    }
}

/* Every proper prefix of something decided by the whole frame must ask for the whole frame. */
static void check_prefixes(const uint8_t *buf, size_t frame_size)
{
    for (size_t k = 0; k < frame_size; k++) {
        struct sb_binproto_header h;
        struct sb_op op;
        require(sb_binproto_decode(buf, k, MAX_FRAME, &h, &op) == -EAGAIN);
        require(h.frame_size == (k < 4 ? SB_BINPROTO_HEADER_SIZE : frame_size));
    }
}

static bool header_eq(const struct sb_binproto_header *a, const struct sb_binproto_header *b)
{
    return a->frame_size == b->frame_size && a->version == b->version && a->type == b->type &&
           a->flags == b->flags && a->request_id == b->request_id;
}

/* The body as the JSON codec may hold it (base64 text) encodes to the same frame. */
static void check_base64_body(const uint8_t *frame, size_t n, const struct sb_op *op)
{
    struct sb_op b64 = *op;
    struct sb_op_body *body;
    uint8_t *out;
    char *text;

    if (op->type == SB_OP_SEND) {
        body = &b64.u.send.body;
    } else if (op->type == SB_OP_MESSAGE) {
        body = &b64.u.message.body;
    } else {
        return;
    }
    text = malloc(sb_base64_len(body->data.len) + 1);
    out = malloc(n);
    require(text != NULL && out != NULL);
    sb_base64_encode((const uint8_t *)body->data.base, body->data.len, text);
    body->form = SB_OP_BODY_BASE64;
    body->data = sb_slice_from(text, sb_base64_len(body->data.len));
    require(sb_binproto_size(&b64) == (ssize_t)n);
    require(sb_binproto_encode(&b64, out, n - 1) == -ENOSPC);
    require(sb_binproto_encode(&b64, out, n) == (ssize_t)n);
    require(memcmp(out, frame, n) == 0);
    free(out);
    free(text);
}

static void check_encode(const uint8_t *frame, size_t n, const struct sb_op *op)
{
    uint8_t *out = malloc(n);
    struct sb_binproto_header h;
    struct sb_op again, foreign = *op;

    require(out != NULL);
    require(sb_binproto_size(op) == (ssize_t)n);
    require(sb_binproto_encode(op, out, n - 1) == -ENOSPC);
    require(sb_binproto_encode(op, out, n) == (ssize_t)n);
    require(memcmp(out, frame, n) == 0);
    require(sb_binproto_decode(out, n, MAX_FRAME, &h, &again) == (ssize_t)n);
    require(op_eq(op, &again));

    make_foreign(&foreign);
    memset(out, 0, n);
    require(sb_binproto_size(&foreign) == (ssize_t)n);
    require(sb_binproto_encode(&foreign, out, n) == (ssize_t)n);
    require(memcmp(out, frame, n) == 0);
    free(out);
    check_base64_body(frame, n, op);
}

/* Decodes the frame at the start of data; returns its size, or 0 to stop the stream. */
static size_t one_frame(const uint8_t *data, size_t size)
{
    struct sb_binproto_header h, fh;
    struct sb_op op, fop;
    ssize_t rc = sb_binproto_decode(data, size, MAX_FRAME, &h, &op);

    if (rc == -EAGAIN) {
        require(size < 4 ? h.frame_size == SB_BINPROTO_HEADER_SIZE : h.frame_size > size);
        return 0;
    }
    require(size >= 4 && h.frame_size == 4 + ((size_t)data[0] << 24 | (size_t)data[1] << 16 |
                                              (size_t)data[2] << 8 | data[3]));
    if (rc == -EPROTO || rc == -EMSGSIZE) {
        require(rc == -EPROTO ? h.frame_size < SB_BINPROTO_HEADER_SIZE : h.frame_size > MAX_FRAME);
        return 0;
    }
    check_prefixes(data, h.frame_size);
    /* The frame decoder agrees on exactly the frame's bytes, and refuses one byte more. */
    int frc = sb_binproto_decode_frame(data, h.frame_size, MAX_FRAME, &fh, &fop);
    require(header_eq(&h, &fh));
    if (h.frame_size < size) {
        require(sb_binproto_decode_frame(data, h.frame_size + 1, MAX_FRAME, &fh, &fop) ==
                (h.frame_size + 1 > MAX_FRAME ? -EMSGSIZE : -EBADMSG));
    }
    if (rc < 0) {
        require(rc == -EPROTONOSUPPORT || rc == -EBADMSG || rc == -EOPNOTSUPP);
        require(frc == rc);
        /* Refused frames of version 1 are skipped; another version ends the connection. */
        return rc == -EPROTONOSUPPORT ? 0 : h.frame_size;
    }
    require(rc == (ssize_t)h.frame_size && frc == 0);
    require(op.type == h.type && op.request_id == h.request_id && h.version == 1 && h.flags == 0);
    require(op_eq(&op, &fop));
    require(sb_binproto_decode(data, h.frame_size, h.frame_size - 1, &h, &fop) == -EMSGSIZE);
    check_encode(data, (size_t)rc, &op);
    return (size_t)rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    while (size > 0) {
        size_t used = one_frame(data, size);
        if (used == 0) {
            break;
        }
        data += used;
        size -= used;
    }
    return 0;
}
