/*
 * The binary frame codec. Every body is described once, as a table of fields (kind, offset in
 * the op's struct, limits); the decoder and the encoder both walk the same table, so the two
 * cannot disagree about a layout or a limit, and a new operation is a table, not code.
 */
#include "proto/binproto.h"

#include <errno.h>
#include <string.h>

#include "proto/opsbody.h"

#define PREFIX_SIZE 4
#define MIN_LENGTH (SB_BINPROTO_HEADER_SIZE - PREFIX_SIZE) /* a header and an empty body */
#define LENGTH_MAX 0xFFFFFFFFu

enum kind {
    K_BOOL,  /* u8, 0 or 1, into a bool */
    K_U8,    /* u8 within [min, max], into a uint8_t */
    K_U16,   /* u16 within [min, max] */
    K_U32,   /* u32 */
    K_U64,   /* u64 */
    K_STR8,  /* u8 length within [min, max], then the bytes, into a struct sb_slice */
    K_STR16, /* u16 length within [min, max], then the bytes */
    K_BODY,  /* u32 length, then the bytes, into a struct sb_op_body */
    K_LIST,  /* u16 count within [min, max], then the items, into a struct sb_ops_list */
};

/* The kinds of list items; each has a layout in item_layouts and an iterator in item_next. */
enum item {
    I_USER,
    I_RESUME,
    I_MESSAGE,
    I_CONV_SUMMARY,
    I_DEVICE,
    I_COUNT,
};

struct field {
    uint8_t kind; /* enum kind */
    uint8_t item; /* K_LIST: enum item */
    uint16_t off; /* offset in the struct the layout describes */
    uint32_t min; /* value, length or count bounds, as the kind says */
    uint32_t max;
};

struct layout {
    const struct field *fields;
    unsigned n;
    bool (*is_valid)(const void *base); /* rules across fields, or NULL */
};

/* A union big enough for any list item, to decode items into while checking a list. */
union item_buf {
    struct sb_slice user;
    struct sb_op_resume resume;
    struct sb_op_message message;
    struct sb_op_conv_summary conv_summary;
    struct sb_op_device device;
};

struct reader {
    const uint8_t *p;
    size_t len, off;
};

/* Counts every byte but stores only while they fit, so one pass both measures and writes. */
struct writer {
    uint8_t *p;
    size_t len, cap;
};

#define F(k, T, m, lo, hi)                                                                         \
    {                                                                                              \
        k, 0, (uint16_t)offsetof(T, m), lo, hi                                                     \
    }
#define F_LIST(it, T, m, lo, hi)                                                                   \
    {                                                                                              \
        K_LIST, it, (uint16_t)offsetof(T, m), lo, hi                                               \
    }
#define LAYOUT(fields, check)                                                                      \
    {                                                                                              \
        fields, sizeof(fields) / sizeof(fields[0]), check                                          \
    }

/* Exactly one of a conversation id and a user (the direct conversation with them) names it. */
static bool one_target(struct sb_slice conv, struct sb_slice to)
{
    return (conv.len == 0) != (to.len == 0);
}

static bool send_is_valid(const void *base)
{
    const struct sb_op_send *s = base;

    return one_target(s->conv, s->to);
}

/* The server forwards receipts and typing with conv set and to empty, so the rule holds both ways.
 */
static bool receipt_is_valid(const void *base)
{
    const struct sb_op_receipt *r = base;

    return one_target(r->conv, r->to);
}

static bool typing_is_valid(const void *base)
{
    const struct sb_op_typing *t = base;

    return one_target(t->conv, t->to);
}

static bool message_is_valid(const void *base)
{
    const struct sb_op_message *m = base;

    if (m->system == SB_OP_SYSTEM_NONE) {
        return m->subject.len == 0;
    }
    /* A group may be created without a name; every other change has something to name. */
    if (m->subject.len == 0 && m->system != SB_OP_SYSTEM_CREATED) {
        return false;
    }
    /* System messages carry no body (so a body's frame never holds a subject too). */
    return sb_ops_body_len(&m->body) == 0;
}

static bool sync_is_valid(const void *base)
{
    const struct sb_op_sync *s = base;

    /* A cursor continues an earlier sync whose conversations it already encodes. */
    return s->cursor.len == 0 || s->convs.count == 0;
}

static const struct field user_fields[] = {
    {K_STR8, 0, 0, 1, SB_OPS_USER_MAX},
};

static const struct field resume_fields[] = {
    F(K_U64, struct sb_op_resume, last_seq, 0, 0),
    F(K_STR8, struct sb_op_resume, conv, 1, SB_OPS_CONV_MAX),
};

static const struct field message_fields[] = {
    F(K_U64, struct sb_op_message, msg_id, 0, 0),
    F(K_U64, struct sb_op_message, seq, 0, 0),
    F(K_U64, struct sb_op_message, ts_ms, 0, 0),
    F(K_U8, struct sb_op_message, system, SB_OP_SYSTEM_NONE, SB_OP_SYSTEM_CREATED),
    F(K_STR8, struct sb_op_message, conv, 1, SB_OPS_CONV_MAX),
    F(K_STR8, struct sb_op_message, from, 1, SB_OPS_USER_MAX),
    F(K_STR8, struct sb_op_message, device, 0, SB_OPS_DEVICE_MAX),
    F(K_STR8, struct sb_op_message, subject, 0, SB_OPS_SUBJECT_MAX),
    F(K_BODY, struct sb_op_message, body, 0, 0),
};

static const struct field conv_summary_fields[] = {
    F(K_U64, struct sb_op_conv_summary, last_seq, 0, 0),
    F(K_U64, struct sb_op_conv_summary, read_seq, 0, 0),
    F(K_U32, struct sb_op_conv_summary, member_count, 0, 0),
    F(K_STR8, struct sb_op_conv_summary, conv, 1, SB_OPS_CONV_MAX),
    F(K_STR8, struct sb_op_conv_summary, name, 0, SB_OPS_NAME_MAX),
    F(K_STR8, struct sb_op_conv_summary, owner, 0, SB_OPS_USER_MAX),
};

static const struct field device_fields[] = {
    F(K_U64, struct sb_op_device, session, 0, 0),
    F(K_U64, struct sb_op_device, connected_s, 0, 0),
    F(K_U64, struct sb_op_device, queued_bytes, 0, 0),
    F(K_U32, struct sb_op_device, behind, 0, 0),
    F(K_STR8, struct sb_op_device, device, 1, SB_OPS_DEVICE_MAX),
    F(K_STR8, struct sb_op_device, node, 0, SB_OPS_NODE_MAX),
};

static const struct layout item_layouts[I_COUNT] = {
    [I_USER] = LAYOUT(user_fields, NULL),
    [I_RESUME] = LAYOUT(resume_fields, NULL),
    [I_MESSAGE] = LAYOUT(message_fields, message_is_valid),
    [I_CONV_SUMMARY] = LAYOUT(conv_summary_fields, NULL),
    [I_DEVICE] = LAYOUT(device_fields, NULL),
};

static const sb_ops_list_next_cb item_next[I_COUNT] = {
    [I_USER] = sb_binproto_next_user,       [I_RESUME] = sb_binproto_next_resume,
    [I_MESSAGE] = sb_binproto_next_message, [I_CONV_SUMMARY] = sb_binproto_next_conv_summary,
    [I_DEVICE] = sb_binproto_next_device,
};

static const struct field hello_fields[] = {
    F(K_STR16, struct sb_op_hello, token, 0, SB_OPS_TOKEN_MAX),
    F(K_STR8, struct sb_op_hello, device, 0, SB_OPS_DEVICE_MAX),
    F_LIST(I_RESUME, struct sb_op_hello, resume, 0, SB_OPS_REQUEST_LIST_MAX),
};

static const struct field welcome_fields[] = {
    F(K_U64, struct sb_op_welcome, session, 0, 0),
    F(K_U64, struct sb_op_welcome, server_time_ms, 0, 0),
    F(K_U32, struct sb_op_welcome, max_frame, 0, 0),
    F(K_U32, struct sb_op_welcome, max_body, 0, 0),
    F(K_U32, struct sb_op_welcome, ping_interval_ms, 0, 0),
    F(K_U32, struct sb_op_welcome, messages_per_s, 0, 0),
    F(K_U32, struct sb_op_welcome, bytes_per_s, 0, 0),
    F(K_U32, struct sb_op_welcome, max_group_members, 0, 0),
    F(K_STR8, struct sb_op_welcome, user, 1, SB_OPS_USER_MAX),
    F(K_STR8, struct sb_op_welcome, device, 1, SB_OPS_DEVICE_MAX),
};

static const struct field send_fields[] = {
    F(K_STR8, struct sb_op_send, client_id, 1, SB_OPS_CLIENT_ID_MAX),
    F(K_STR8, struct sb_op_send, conv, 0, SB_OPS_CONV_MAX),
    F(K_STR8, struct sb_op_send, to, 0, SB_OPS_USER_MAX),
    F(K_BODY, struct sb_op_send, body, 0, 0),
};

static const struct field ack_fields[] = {
    F(K_U64, struct sb_op_ack, msg_id, 0, 0),
    F(K_U64, struct sb_op_ack, seq, 0, 0),
    F(K_U64, struct sb_op_ack, ts_ms, 0, 0),
    F(K_BOOL, struct sb_op_ack, is_duplicate, 0, 1),
    F(K_STR8, struct sb_op_ack, client_id, 1, SB_OPS_CLIENT_ID_MAX),
    F(K_STR8, struct sb_op_ack, conv, 1, SB_OPS_CONV_MAX),
};

static const struct field receipt_fields[] = {
    F(K_U64, struct sb_op_receipt, seq, 0, 0),
    F(K_U8, struct sb_op_receipt, kind, SB_OP_RECEIPT_DELIVERED, SB_OP_RECEIPT_READ),
    F(K_STR8, struct sb_op_receipt, conv, 0, SB_OPS_CONV_MAX),
    F(K_STR8, struct sb_op_receipt, to, 0, SB_OPS_USER_MAX),
    F(K_STR8, struct sb_op_receipt, user, 0, SB_OPS_USER_MAX),
};

static const struct field typing_fields[] = {
    F(K_STR8, struct sb_op_typing, conv, 0, SB_OPS_CONV_MAX),
    F(K_STR8, struct sb_op_typing, to, 0, SB_OPS_USER_MAX),
    F(K_STR8, struct sb_op_typing, user, 0, SB_OPS_USER_MAX),
};

static const struct field users_fields[] = {
    F_LIST(I_USER, struct sb_op_users, users, 1, SB_OPS_REQUEST_LIST_MAX),
};

static const struct field presence_fields[] = {
    F(K_U64, struct sb_op_presence, last_seen_ms, 0, 0),
    F(K_U8, struct sb_op_presence, status, SB_OP_PRESENCE_ONLINE, SB_OP_PRESENCE_OFFLINE),
    F(K_STR8, struct sb_op_presence, user, 1, SB_OPS_USER_MAX),
};

static const struct field sync_fields[] = {
    F(K_U16, struct sb_op_sync, limit, 0, 0xFFFF),
    F(K_STR8, struct sb_op_sync, cursor, 0, SB_OPS_CURSOR_MAX),
    F_LIST(I_RESUME, struct sb_op_sync, convs, 0, SB_OPS_REQUEST_LIST_MAX),
};

static const struct field sync_page_fields[] = {
    F(K_U64, struct sb_op_sync_page, last_seq, 0, 0),
    F(K_BOOL, struct sb_op_sync_page, has_more, 0, 1),
    F(K_BOOL, struct sb_op_sync_page, truncated, 0, 1),
    F(K_STR8, struct sb_op_sync_page, conv, 1, SB_OPS_CONV_MAX),
    F_LIST(I_MESSAGE, struct sb_op_sync_page, messages, 0, SB_OPS_LIST_MAX),
};

static const struct field sync_done_fields[] = {
    F(K_STR8, struct sb_op_sync_done, cursor, 0, SB_OPS_CURSOR_MAX),
};

static const struct field conv_create_fields[] = {
    F(K_STR8, struct sb_op_conv_create, name, 0, SB_OPS_NAME_MAX),
    F_LIST(I_USER, struct sb_op_conv_create, members, 0, SB_OPS_REQUEST_LIST_MAX),
};

static const struct field conv_members_fields[] = {
    F(K_STR8, struct sb_op_conv_members, conv, 1, SB_OPS_CONV_MAX),
    F_LIST(I_USER, struct sb_op_conv_members, users, 1, SB_OPS_REQUEST_LIST_MAX),
};

static const struct field conv_leave_fields[] = {
    F(K_STR8, struct sb_op_conv_ref, conv, 1, SB_OPS_CONV_MAX),
};

static const struct field conv_rename_fields[] = {
    F(K_STR8, struct sb_op_conv_ref, conv, 1, SB_OPS_CONV_MAX),
    F(K_STR8, struct sb_op_conv_ref, name, 0, SB_OPS_NAME_MAX),
};

static const struct field conv_fields[] = {
    F(K_U64, struct sb_op_conv, last_seq, 0, 0),
    F(K_U64, struct sb_op_conv, read_seq, 0, 0),
    F(K_STR8, struct sb_op_conv, conv, 1, SB_OPS_CONV_MAX),
    F(K_STR8, struct sb_op_conv, name, 0, SB_OPS_NAME_MAX),
    F(K_STR8, struct sb_op_conv, owner, 0, SB_OPS_USER_MAX),
    F_LIST(I_USER, struct sb_op_conv, admins, 0, SB_OPS_LIST_MAX),
    F_LIST(I_USER, struct sb_op_conv, members, 0, SB_OPS_LIST_MAX),
};

static const struct field convs_fields[] = {
    F_LIST(I_CONV_SUMMARY, struct sb_op_convs, convs, 0, SB_OPS_LIST_MAX),
};

static const struct field device_list_fields[] = {
    F(K_STR8, struct sb_op_device_list, user, 1, SB_OPS_USER_MAX),
    F_LIST(I_DEVICE, struct sb_op_device_list, devices, 0, SB_OPS_LIST_MAX),
};

static const struct field error_fields[] = {
    F(K_U16, struct sb_op_error, code, 1, 0xFFFF),
    F(K_U32, struct sb_op_error, retry_after_ms, 0, 0),
    F(K_STR8, struct sb_op_error, message, 0, SB_OPS_TEXT_MAX),
    F(K_STR8, struct sb_op_error, conv, 0, SB_OPS_CONV_MAX),
};

static const struct field ping_fields[] = {
    F(K_STR16, struct sb_op_ping, data, 0, SB_OPS_PING_MAX),
};

static const struct field behind_fields[] = {
    F(K_U64, struct sb_op_behind, seq, 0, 0),
    F(K_STR8, struct sb_op_behind, conv, 1, SB_OPS_CONV_MAX),
};

static const struct field goaway_fields[] = {
    F(K_U32, struct sb_op_goaway, reconnect_after_ms, 0, 0),
    F(K_STR8, struct sb_op_goaway, reason, 0, SB_OPS_TEXT_MAX),
};

static const struct layout empty_layout = {NULL, 0, NULL};
static const struct layout hello_layout = LAYOUT(hello_fields, NULL);
static const struct layout welcome_layout = LAYOUT(welcome_fields, NULL);
static const struct layout send_layout = LAYOUT(send_fields, send_is_valid);
static const struct layout ack_layout = LAYOUT(ack_fields, NULL);
static const struct layout receipt_layout = LAYOUT(receipt_fields, receipt_is_valid);
static const struct layout typing_layout = LAYOUT(typing_fields, typing_is_valid);
static const struct layout users_layout = LAYOUT(users_fields, NULL);
static const struct layout presence_layout = LAYOUT(presence_fields, NULL);
static const struct layout sync_layout = LAYOUT(sync_fields, sync_is_valid);
static const struct layout sync_page_layout = LAYOUT(sync_page_fields, NULL);
static const struct layout sync_done_layout = LAYOUT(sync_done_fields, NULL);
static const struct layout conv_create_layout = LAYOUT(conv_create_fields, NULL);
static const struct layout conv_members_layout = LAYOUT(conv_members_fields, NULL);
static const struct layout conv_leave_layout = LAYOUT(conv_leave_fields, NULL);
static const struct layout conv_rename_layout = LAYOUT(conv_rename_fields, NULL);
static const struct layout conv_layout = LAYOUT(conv_fields, NULL);
static const struct layout convs_layout = LAYOUT(convs_fields, NULL);
static const struct layout device_list_layout = LAYOUT(device_list_fields, NULL);
static const struct layout error_layout = LAYOUT(error_fields, NULL);
static const struct layout ping_layout = LAYOUT(ping_fields, NULL);
static const struct layout behind_layout = LAYOUT(behind_fields, NULL);
static const struct layout goaway_layout = LAYOUT(goaway_fields, NULL);

/* Each type's body, by type byte; NULL for a type version 1 does not define. */
static const struct layout *const op_layouts[256] = {
    [SB_OP_HELLO] = &hello_layout,
    [SB_OP_SEND] = &send_layout,
    [SB_OP_RECEIPT] = &receipt_layout,
    [SB_OP_TYPING] = &typing_layout,
    [SB_OP_PRESENCE_SUB] = &users_layout,
    [SB_OP_PRESENCE_UNSUB] = &users_layout,
    [SB_OP_SYNC] = &sync_layout,
    [SB_OP_CONV_CREATE] = &conv_create_layout,
    [SB_OP_CONV_ADD] = &conv_members_layout,
    [SB_OP_CONV_REMOVE] = &conv_members_layout,
    [SB_OP_CONV_LEAVE] = &conv_leave_layout,
    [SB_OP_CONV_RENAME] = &conv_rename_layout,
    [SB_OP_CONV_LIST] = &empty_layout,
    [SB_OP_PING] = &ping_layout,
    [SB_OP_PONG] = &ping_layout,
    [SB_OP_CONV_PROMOTE] = &conv_members_layout,
    [SB_OP_CONV_DEMOTE] = &conv_members_layout,
    [SB_OP_CONV_GET] = &conv_leave_layout,
    [SB_OP_DEVICES] = &empty_layout,
    [SB_OP_WELCOME] = &welcome_layout,
    [SB_OP_ACK] = &ack_layout,
    [SB_OP_MESSAGE] = &item_layouts[I_MESSAGE],
    [SB_OP_PRESENCE] = &presence_layout,
    [SB_OP_SYNC_PAGE] = &sync_page_layout,
    [SB_OP_CONV] = &conv_layout,
    [SB_OP_CONVS] = &convs_layout,
    [SB_OP_ERROR] = &error_layout,
    [SB_OP_BEHIND] = &behind_layout,
    [SB_OP_GOAWAY] = &goaway_layout,
    [SB_OP_SYNC_DONE] = &sync_done_layout,
    [SB_OP_DEVICE_LIST] = &device_list_layout,
};

static uint16_t load16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t load64(const uint8_t *p)
{
    return (uint64_t)load32(p) << 32 | load32(p + 4);
}

/* Takes n bytes from r, or NULL when fewer are left. */
static const uint8_t *take(struct reader *r, size_t n)
{
    const uint8_t *p = r->p + r->off;

    if (n > r->len - r->off) {
        return NULL;
    }
    r->off += n;
    return p;
}

/* Takes a length-prefixed run of bytes (the prefix was read as len) into *s. */
static int take_slice(struct reader *r, size_t len, struct sb_slice *s)
{
    const uint8_t *p = take(r, len);

    if (p == NULL) {
        return -EBADMSG;
    }
    *s = sb_slice_from((const char *)p, len);
    return 0;
}

static int decode_layout(const struct layout *l, void *base, struct reader *r);

static int decode_list(const struct field *f, struct sb_ops_list *list, struct reader *r)
{
    const uint8_t *p = take(r, 2);
    size_t start = r->off;
    union item_buf item;

    if (p == NULL) {
        return -EBADMSG;
    }
    list->count = load16(p);
    if (list->count < f->min || list->count > f->max) {
        return -EBADMSG;
    }
    /* Items vary in size, so finding the list's end means reading (and checking) each one. */
    for (uint32_t i = 0; i < list->count; i++) {
        if (decode_layout(&item_layouts[f->item], &item, r) < 0) {
            return -EBADMSG;
        }
    }
    list->raw = sb_slice_from((const char *)r->p + start, r->off - start);
    list->next = item_next[f->item];
    return 0;
}

static int decode_field(const struct field *f, uint8_t *dst, struct reader *r)
{
    const uint8_t *p;
    uint32_t v;

    switch (f->kind) {
    case K_BOOL:
    case K_U8:
        if ((p = take(r, 1)) == NULL || p[0] < f->min || p[0] > f->max) {
            return -EBADMSG;
        }
        if (f->kind == K_BOOL) {
            *(bool *)dst = p[0] != 0;
        } else {
            *dst = p[0];
        }
        return 0;
    case K_U16:
        if ((p = take(r, 2)) == NULL || (v = load16(p)) < f->min || v > f->max) {
            return -EBADMSG;
        }
        *(uint16_t *)(void *)dst = (uint16_t)v;
        return 0;
    case K_U32:
        if ((p = take(r, 4)) == NULL) {
            return -EBADMSG;
        }
        *(uint32_t *)(void *)dst = load32(p);
        return 0;
    case K_U64:
        if ((p = take(r, 8)) == NULL) {
            return -EBADMSG;
        }
        *(uint64_t *)(void *)dst = load64(p);
        return 0;
    case K_STR8:
        if ((p = take(r, 1)) == NULL || p[0] < f->min || p[0] > f->max) {
            return -EBADMSG;
        }
        return take_slice(r, p[0], (struct sb_slice *)(void *)dst);
    case K_STR16:
        if ((p = take(r, 2)) == NULL || (v = load16(p)) < f->min || v > f->max) {
            return -EBADMSG;
        }
        return take_slice(r, v, (struct sb_slice *)(void *)dst);
    case K_BODY:
        if ((p = take(r, 4)) == NULL) {
            return -EBADMSG;
        }
        ((struct sb_op_body *)(void *)dst)->form = SB_OP_BODY_BYTES;
        return take_slice(r, load32(p), &((struct sb_op_body *)(void *)dst)->data);
    case K_LIST:
        return decode_list(f, (struct sb_ops_list *)(void *)dst, r);
    }
    return -EBADMSG;
}

static int decode_layout(const struct layout *l, void *base, struct reader *r)
{
    for (unsigned i = 0; i < l->n; i++) {
        const struct field *f = &l->fields[i];
        if (decode_field(f, (uint8_t *)base + f->off, r) < 0) {
            return -EBADMSG;
        }
    }
    if (l->is_valid && !l->is_valid(base)) {
        return -EBADMSG;
    }
    return 0;
}

/* Decodes a whole frame of frame_size bytes whose length prefix was already checked. */
static int decode_whole(const uint8_t *buf, size_t frame_size, struct sb_binproto_header *hdr,
                        struct sb_op *op)
{
    struct reader r = {buf + SB_BINPROTO_HEADER_SIZE, frame_size - SB_BINPROTO_HEADER_SIZE, 0};
    const struct layout *l;

    hdr->version = buf[4];
    hdr->type = buf[5];
    hdr->flags = load16(buf + 6);
    hdr->request_id = load32(buf + 8);
    if (hdr->version != SB_BINPROTO_VERSION) {
        return -EPROTONOSUPPORT;
    }
    /* Version 1 defines no flags: a set bit could change what the body means. */
    if (hdr->flags != 0) {
        return -EBADMSG;
    }
    if ((l = op_layouts[hdr->type]) == NULL) {
        return -EOPNOTSUPP;
    }
    if (hdr->type == SB_OP_PING || hdr->type == SB_OP_PONG) {
        /* The keep-alive, and what every echo benchmark sends: its one field (str16 data, as in
         * ping_fields) without the table walk or zeroing the whole union. */
        uint32_t n = r.len >= 2 ? load16(r.p) : 0;
        if (r.len < 2 || n != r.len - 2 || n > SB_OPS_PING_MAX) {
            return -EBADMSG;
        }
        op->type = (enum sb_op_type)hdr->type;
        op->request_id = hdr->request_id;
        op->json_id = (struct sb_slice){0};
        op->u.ping.data = sb_slice_from((const char *)r.p + 2, n);
        return 0;
    }
    /* Zeroed so that fields the type does not have (CONV_LEAVE's name) read as empty. */
    memset(op, 0, sizeof(*op));
    op->type = (enum sb_op_type)hdr->type;
    op->request_id = hdr->request_id;
    if (decode_layout(l, &op->u, &r) < 0 || r.off != r.len) {
        return -EBADMSG;
    }
    return 0;
}

ssize_t sb_binproto_decode(const uint8_t *buf, size_t len, size_t max_frame,
                           struct sb_binproto_header *hdr, struct sb_op *op)
{
    uint32_t length;
    int rc;

    memset(hdr, 0, sizeof(*hdr));
    if (len < PREFIX_SIZE) {
        hdr->frame_size = SB_BINPROTO_HEADER_SIZE;
        return -EAGAIN;
    }
    length = load32(buf);
    hdr->frame_size = PREFIX_SIZE + (size_t)length;
    if (length < MIN_LENGTH) {
        return -EPROTO;
    }
    if (max_frame != 0 && hdr->frame_size > max_frame) {
        return -EMSGSIZE;
    }
    if (len < hdr->frame_size) {
        return -EAGAIN;
    }
    rc = decode_whole(buf, hdr->frame_size, hdr, op);
    return rc < 0 ? rc : (ssize_t)hdr->frame_size;
}

int sb_binproto_decode_frame(const uint8_t *buf, size_t len, size_t max_frame,
                             struct sb_binproto_header *hdr, struct sb_op *op)
{
    memset(hdr, 0, sizeof(*hdr));
    if (max_frame != 0 && len > max_frame) {
        return -EMSGSIZE;
    }
    if (len < SB_BINPROTO_HEADER_SIZE) {
        return -EBADMSG;
    }
    hdr->frame_size = PREFIX_SIZE + (size_t)load32(buf);
    if (hdr->frame_size != len) {
        return -EBADMSG;
    }
    return decode_whole(buf, len, hdr, op);
}

static void put(struct writer *w, const void *src, size_t n)
{
    if (n > 0 && w->len <= w->cap && n <= w->cap - w->len) {
        memcpy(w->p + w->len, src, n);
    }
    w->len += n;
}

static void put_u8(struct writer *w, uint8_t v)
{
    put(w, &v, 1);
}

static void put_u16(struct writer *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};

    put(w, b, sizeof(b));
}

static void put_u32(struct writer *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};

    put(w, b, sizeof(b));
}

static void put_u64(struct writer *w, uint64_t v)
{
    put_u32(w, (uint32_t)(v >> 32));
    put_u32(w, (uint32_t)v);
}

static int encode_layout(const struct layout *l, const void *base, struct writer *w);

/* True when raw holds exactly count valid items of the kind. */
static bool raw_items_valid(const struct sb_ops_list *list, enum item kind)
{
    struct reader r = {(const uint8_t *)list->raw.base, list->raw.len, 0};
    union item_buf item;

    for (uint32_t i = 0; i < list->count; i++) {
        if (decode_layout(&item_layouts[kind], &item, &r) < 0) {
            return false;
        }
    }
    return r.off == r.len;
}

/* Encodes a list kept in some other form (the JSON codec's, or a caller's own storage). */
static int encode_foreign_items(const struct sb_ops_list *list, enum item kind, struct writer *w)
{
    struct sb_ops_list_iter it;
    union item_buf item;
    uint32_t n = 0;
    int rc;

    sb_ops_list_begin(&it, list);
    while ((rc = sb_ops_list_next(&it, &item)) > 0) {
        if (++n > list->count) {
            return -EINVAL;
        }
        if ((rc = encode_layout(&item_layouts[kind], &item, w)) < 0) {
            return rc;
        }
    }
    return rc < 0 || n != list->count ? -EINVAL : 0;
}

static int encode_list(const struct field *f, const struct sb_ops_list *list, struct writer *w)
{
    enum item kind = (enum item)f->item;

    if (list->count < f->min || list->count > f->max) {
        return -EINVAL;
    }
    put_u16(w, (uint16_t)list->count);
    if (list->next == item_next[kind]) {
        /* Already in this encoding: checked, then copied whole (the fan-out's fast path). */
        if (!raw_items_valid(list, kind)) {
            return -EINVAL;
        }
        put(w, list->raw.base, list->raw.len);
        return 0;
    }
    if (list->next == NULL) {
        return list->count == 0 ? 0 : -EINVAL;
    }
    return encode_foreign_items(list, kind, w);
}

static int put_slice(struct writer *w, const struct field *f, struct sb_slice s)
{
    if (s.len < f->min || s.len > f->max) {
        return -EINVAL;
    }
    if (f->kind == K_STR8) {
        put_u8(w, (uint8_t)s.len);
    } else {
        put_u16(w, (uint16_t)s.len);
    }
    put(w, s.base, s.len);
    return 0;
}

/*
 * Writes a body as bytes whatever its form: a JSON or BASE64 body (from the JSON codec) is
 * converted into the frame, so that binary receivers always get exactly the bytes.
 */
static int put_body(struct writer *w, const struct sb_op_body *b)
{
    size_t n;

    switch (b->form) {
    case SB_OP_BODY_BYTES:
        n = b->data.len;
        break;
    case SB_OP_BODY_JSON:
        /* A string literal has its quotes; without them there is nothing to unescape. */
        if (b->data.len < 2 || b->data.base[0] != '"' || b->data.base[b->data.len - 1] != '"') {
            return -EINVAL;
        }
        n = sb_ops_body_len(b);
        break;
    case SB_OP_BODY_BASE64:
        /* Checked here, not trusted: decoding text that is not base64 could write past n. */
        if (!sb_base64_valid(b->data.base, b->data.len, &n)) {
            return -EINVAL;
        }
        break;
    default:
        return -EINVAL;
    }
    if (n > LENGTH_MAX) {
        return -EMSGSIZE;
    }
    put_u32(w, (uint32_t)n);
    if (n > 0 && w->len <= w->cap && n <= w->cap - w->len) {
        sb_ops_body_copy(b, w->p + w->len);
    }
    w->len += n;
    return 0;
}

static int encode_field(const struct field *f, const uint8_t *src, struct writer *w)
{
    uint32_t v;

    switch (f->kind) {
    case K_BOOL:
        put_u8(w, *(const bool *)src ? 1 : 0);
        return 0;
    case K_U8:
        if (*src < f->min || *src > f->max) {
            return -EINVAL;
        }
        put_u8(w, *src);
        return 0;
    case K_U16:
        if ((v = *(const uint16_t *)(const void *)src) < f->min || v > f->max) {
            return -EINVAL;
        }
        put_u16(w, (uint16_t)v);
        return 0;
    case K_U32:
        put_u32(w, *(const uint32_t *)(const void *)src);
        return 0;
    case K_U64:
        put_u64(w, *(const uint64_t *)(const void *)src);
        return 0;
    case K_STR8:
    case K_STR16:
        return put_slice(w, f, *(const struct sb_slice *)(const void *)src);
    case K_BODY:
        return put_body(w, (const struct sb_op_body *)(const void *)src);
    case K_LIST:
        return encode_list(f, (const struct sb_ops_list *)(const void *)src, w);
    }
    return -EINVAL;
}

static int encode_layout(const struct layout *l, const void *base, struct writer *w)
{
    int rc;

    if (l->is_valid && !l->is_valid(base)) {
        return -EINVAL;
    }
    for (unsigned i = 0; i < l->n; i++) {
        const struct field *f = &l->fields[i];
        if ((rc = encode_field(f, (const uint8_t *)base + f->off, w)) < 0) {
            return rc;
        }
    }
    return 0;
}

static ssize_t encode_frame(const struct sb_op *op, struct writer *w)
{
    const struct layout *l = (unsigned)op->type < 256 ? op_layouts[op->type] : NULL;
    int rc;

    /* The length is filled in below, once known; flags are 0 in version 1. */
    uint8_t header[SB_BINPROTO_HEADER_SIZE] = {
        [4] = SB_BINPROTO_VERSION,
        [5] = (uint8_t)op->type,
        [8] = (uint8_t)(op->request_id >> 24),
        [9] = (uint8_t)(op->request_id >> 16),
        [10] = (uint8_t)(op->request_id >> 8),
        [11] = (uint8_t)op->request_id,
    };

    if (l == NULL) {
        return -EINVAL;
    }
    put(w, header, sizeof(header));
    if ((rc = encode_layout(l, &op->u, w)) < 0) {
        return rc;
    }
    if (w->len - PREFIX_SIZE > LENGTH_MAX) {
        return -EMSGSIZE;
    }
    if (w->len <= w->cap) {
        struct writer prefix = {w->p, 0, PREFIX_SIZE};
        put_u32(&prefix, (uint32_t)(w->len - PREFIX_SIZE));
    }
    return (ssize_t)w->len;
}

ssize_t sb_binproto_size(const struct sb_op *op)
{
    struct writer w = {NULL, 0, 0};

    return encode_frame(op, &w);
}

ssize_t sb_binproto_encode(const struct sb_op *op, uint8_t *out, size_t cap)
{
    struct writer w = {out, 0, cap};
    ssize_t n = encode_frame(op, &w);

    if (n >= 0 && (size_t)n > cap) {
        return -ENOSPC;
    }
    return n;
}

static int next_item(struct sb_ops_list_iter *it, void *item, enum item kind)
{
    const struct sb_ops_list *list = it->list;
    struct reader r = {(const uint8_t *)list->raw.base, list->raw.len, it->off};

    if (it->index >= list->count) {
        return 0;
    }
    if (it->off > list->raw.len || decode_layout(&item_layouts[kind], item, &r) < 0) {
        return -EBADMSG;
    }
    it->off = r.off;
    it->index++;
    return 1;
}

int sb_binproto_next_user(struct sb_ops_list_iter *it, void *item)
{
    return next_item(it, item, I_USER);
}

int sb_binproto_next_resume(struct sb_ops_list_iter *it, void *item)
{
    return next_item(it, item, I_RESUME);
}

int sb_binproto_next_message(struct sb_ops_list_iter *it, void *item)
{
    return next_item(it, item, I_MESSAGE);
}

int sb_binproto_next_conv_summary(struct sb_ops_list_iter *it, void *item)
{
    return next_item(it, item, I_CONV_SUMMARY);
}

int sb_binproto_next_device(struct sb_ops_list_iter *it, void *item)
{
    return next_item(it, item, I_DEVICE);
}

void sb_binproto_list_init(struct sb_binproto_list_writer *w, uint8_t *buf, size_t cap)
{
    memset(w, 0, sizeof(*w));
    w->buf = buf;
    w->cap = cap;
}

static void list_add(struct sb_binproto_list_writer *w, enum item kind, const void *item)
{
    struct writer out = {w->buf, w->len, w->cap};
    int rc;

    if (w->error != 0) {
        return;
    }
    if (w->next != NULL && w->next != item_next[kind]) {
        w->error = -EINVAL;
        return;
    }
    if (w->count == SB_OPS_LIST_MAX) {
        w->error = -E2BIG;
        return;
    }
    if ((rc = encode_layout(&item_layouts[kind], item, &out)) < 0) {
        w->error = rc == -EMSGSIZE ? -EINVAL : rc;
        return;
    }
    if (out.len > w->cap) {
        w->error = -ENOSPC;
        return;
    }
    w->next = item_next[kind];
    w->len = out.len;
    w->count++;
}

void sb_binproto_list_add_user(struct sb_binproto_list_writer *w, struct sb_slice user)
{
    list_add(w, I_USER, &user);
}

void sb_binproto_list_add_resume(struct sb_binproto_list_writer *w, const struct sb_op_resume *r)
{
    list_add(w, I_RESUME, r);
}

void sb_binproto_list_add_message(struct sb_binproto_list_writer *w, const struct sb_op_message *m)
{
    list_add(w, I_MESSAGE, m);
}

void sb_binproto_list_add_conv_summary(struct sb_binproto_list_writer *w,
                                       const struct sb_op_conv_summary *c)
{
    list_add(w, I_CONV_SUMMARY, c);
}

void sb_binproto_list_add_device(struct sb_binproto_list_writer *w, const struct sb_op_device *d)
{
    list_add(w, I_DEVICE, d);
}

int sb_binproto_list_finish(const struct sb_binproto_list_writer *w, struct sb_ops_list *out)
{
    if (w->error != 0) {
        return w->error;
    }
    out->count = w->count;
    out->raw = sb_slice_from((const char *)w->buf, w->len);
    out->next = w->next;
    return 0;
}
