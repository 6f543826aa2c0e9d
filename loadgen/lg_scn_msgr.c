#include "loadgen/lg_scn_msgr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "proto/binproto.h"

#define SETUP_POLL_NS 1000000ULL /* a worker waiting for another's groups looks every 1 ms */
/* Binary protocol request ids: a group's requests carry its index with the top bit set, a send
 * 1 + its number modulo 2^31 (never 0, which a server uses for frames that answer nothing). */
#define GROUP_REQ 0x80000000u
#define SEND_REQ(n) ((uint32_t)(1 + (n) % 0x7fffffffu))

struct lg_msgr_rt lg_msgr_rt;

int lg_msgr_prepare(const struct lg_config *cfg, const struct lg_share *share, uint32_t nconvs)
{
    struct lg_msgr_rt *rt = &lg_msgr_rt;
    if (share->first != 0 || share->count != cfg->connections) {
        /* Deliveries cross connections, and the bookkeeping that matches them is per process. */
        fprintf(stderr,
                "switchboard-loadgen: %s runs in one process: use fewer --connections "
                "or raise the descriptor limit\n",
                lg_mode_name(cfg->mode));
        return -EINVAL;
    }
    memset(rt, 0, sizeof(*rt));
    rt->cfg = cfg;
    rt->nusers = (uint32_t)cfg->connections;
    uint32_t nonce = 0;
    if (getrandom(&nonce, sizeof(nonce), 0) != sizeof(nonce))
        nonce = (uint32_t)time(NULL) ^ (uint32_t)(uintptr_t)rt;
    snprintf(rt->run, sizeof(rt->run), "%08x", nonce);
    /* As many workers as lg_loop_run starts for this share. */
    rt->workers = share->threads ? share->threads : 1;
    if (rt->workers > share->count && share->count > 0)
        rt->workers = (unsigned)share->count;
    rt->convs = calloc(nconvs ? nconvs : 1, sizeof(*rt->convs));
    rt->user_conv = malloc(rt->nusers * sizeof(*rt->user_conv));
    if (!rt->convs || !rt->user_conv) {
        lg_msgr_release();
        fprintf(stderr, "switchboard-loadgen: out of memory\n");
        return -ENOMEM;
    }
    rt->nconvs = nconvs;
    for (uint32_t u = 0; u < rt->nusers; u++)
        rt->user_conv[u] = LG_MSGR_NO_CONV;
    return 0;
}

void lg_msgr_release(void)
{
    free(lg_msgr_rt.convs);
    free(lg_msgr_rt.user_conv);
    lg_msgr_rt.convs = NULL;
    lg_msgr_rt.user_conv = NULL;
}

struct lg_conn *lg_msgr_conn_for(struct lg_worker *w, uint32_t u)
{
    if (w->nconns == 0 || u < w->conns[0].id || u - w->conns[0].id >= w->nconns)
        return NULL;
    return &w->conns[u - w->conns[0].id];
}

static struct lg_msgr_conv *conv_of_user(uint32_t u)
{
    uint32_t i = lg_msgr_rt.user_conv[u];
    return i == LG_MSGR_NO_CONV ? NULL : &lg_msgr_rt.convs[i];
}

struct lg_msgr_conv *lg_msgr_conv_of(const struct lg_conn *c)
{
    struct lg_msgr_conv *cv = conv_of_user(c->id);
    if (!cv || atomic_load_explicit(&cv->state, memory_order_acquire) != LG_CONV_READY)
        return NULL;
    return cv;
}

void lg_msgr_established(struct lg_worker *w, struct lg_conn *c)
{
    (void)w;
    struct lg_msgr_conv *cv = conv_of_user(c->id);
    if (cv)
        atomic_fetch_add_explicit(&cv->online, 1, memory_order_relaxed);
}

void lg_msgr_conn_lost(struct lg_worker *w, struct lg_conn *c)
{
    struct lg_msgr_conv *cv = conv_of_user(c->id);
    if (cv)
        atomic_fetch_sub_explicit(&cv->online, 1, memory_order_relaxed);
    uint64_t lost = c->seq_out - c->seq_in;
    w->stats.c[LG_C_LOST] += lost;
    w->sc.outstanding -= lost;
    c->seq_in = c->seq_out;
}

/* Deliveries one send to cv is due to make: every online member but the sender. */
static uint64_t due_for(struct lg_msgr_conv *cv)
{
    uint32_t online = atomic_load_explicit(&cv->online, memory_order_relaxed);
    return online > 0 ? online - 1 : 0;
}

/*
 * CONV_CREATE (named id) or, once the group exists, CONV_ADD with the users of connections
 * from .. from + n - 1, the list built in the worker's scratch buffer.
 */
static int conv_request_bin(struct lg_worker *w, struct lg_conn *c, uint32_t i, const char *id,
                            uint32_t from, uint32_t n)
{
    struct lg_msgr_conv *cv = &lg_msgr_rt.convs[i];
    struct sb_binproto_list_writer lw;
    sb_binproto_list_init(&lw, (uint8_t *)w->scratch, w->scratch_cap);
    for (uint32_t u = from; u < from + n; u++) {
        char user[LG_MSGR_USER_MAX];
        ssize_t k = lg_msgr_user(user, sizeof(user), u);
        if (k < 0)
            return (int)k;
        sb_binproto_list_add_user(&lw, sb_slice_from(user, (size_t)k));
    }
    struct sb_op op;
    memset(&op, 0, sizeof(op));
    op.request_id = GROUP_REQ | i;
    int err;
    if (cv->added == 0) {
        op.type = SB_OP_CONV_CREATE;
        op.u.conv_create.name = sb_slice_from(id, strlen(id));
        err = sb_binproto_list_finish(&lw, &op.u.conv_create.members);
    } else {
        op.type = SB_OP_CONV_ADD;
        op.u.conv_members.conv = sb_slice_from(cv->id, strlen(cv->id));
        err = sb_binproto_list_finish(&lw, &op.u.conv_members.users);
    }
    return err < 0 ? err : lg_conn_send_frame(w, c, &op);
}

/*
 * Sends the next request that builds group i on c: conv_create with the first members, then
 * conv_add for the rest. Returns 0, or -errno when the group cannot be built.
 */
static int request_members(struct lg_worker *w, struct lg_conn *c, uint32_t i)
{
    struct lg_msgr_conv *cv = &lg_msgr_rt.convs[i];
    uint32_t left = cv->count - 1 - cv->added;
    uint32_t n = left < LG_MSGR_PER_REQUEST ? left : LG_MSGR_PER_REQUEST;
    /* Members are a range with the owner at its start: the next n after those named so far. */
    uint32_t from = cv->first + 1 + cv->added;
    char id[16];
    snprintf(id, sizeof(id), "g%u", i);
    int err;
    if (w->cfg->wire != LG_WIRE_WS) {
        err = conv_request_bin(w, c, i, id, from, n);
    } else {
        ssize_t len = lg_msgr_conv_create(w->scratch, w->scratch_cap, id, cv->added ? cv->id : NULL,
                                          from, n, cv->owner);
        if (len < 0)
            return (int)len;
        err = lg_conn_send_op(w, c, SB_WS_TEXT, w->scratch, (size_t)len);
    }
    if (err < 0)
        return err;
    cv->added += n;
    return 0;
}

static void group_failed(struct lg_msgr_conv *cv)
{
    atomic_store(&cv->state, LG_CONV_FAILED);
    atomic_fetch_sub(&lg_msgr_rt.groups_pending, 1);
}

static void request_group(struct lg_worker *w, uint32_t i)
{
    struct lg_msgr_conv *cv = &lg_msgr_rt.convs[i];
    struct lg_conn *c = lg_msgr_conn_for(w, cv->owner);
    if (!c || c->state != LG_CS_OPEN || request_members(w, c, i) < 0) {
        group_failed(cv);
        return;
    }
    atomic_store(&cv->state, LG_CONV_REQUESTED);
}

bool lg_msgr_setup(struct lg_worker *w, uint64_t *next)
{
    struct lg_msgr_rt *rt = &lg_msgr_rt;
    if (w->sc.setup_at == 0) {
        w->sc.setup_at = w->now;
        atomic_fetch_add(&rt->ramped, 1);
    }
    /* A member still connecting on another worker would not be counted online by the sends
     * (and its deliveries would not be due): everyone is up before anything is sent. */
    if (!w->sc.setup_sent && atomic_load(&rt->ramped) >= rt->workers) {
        w->sc.setup_sent = true;
        for (uint32_t i = 0; i < rt->nconvs; i++)
            if (rt->convs[i].is_group && lg_msgr_conn_for(w, rt->convs[i].owner))
                request_group(w, i);
    }
    if (w->sc.setup_sent && atomic_load(&rt->groups_pending) == 0)
        return true;
    *next = w->now + SETUP_POLL_NS;
    return false;
}

int lg_msgr_send_msg(struct lg_worker *w, struct lg_conn *c, uint64_t n, uint64_t t,
                     uint64_t *due_out)
{
    struct lg_msgr_rt *rt = &lg_msgr_rt;
    struct lg_msgr_conv *cv = lg_msgr_conv_of(c);
    if (!cv)
        return -ENOENT;
    size_t size = (size_t)w->cfg->size;
    struct lg_msgr_stamp st = {.t = t, .n = n, .from = c->id};
    char body[LG_MSGR_BODY_MAX];
    lg_msgr_body(body, size, &st);
    char dest[LG_MSGR_CONV_MAX];
    if (cv->is_group) {
        memcpy(dest, cv->id, sizeof(dest));
    } else {
        uint32_t peer = c->id == cv->first ? cv->first + 1 : cv->first;
        lg_msgr_user(dest, sizeof(dest), peer);
    }
    struct sb_op op;
    char id[LG_MSGR_CLIENT_ID_MAX]; /* the SEND points at it and at body until it is queued */
    ssize_t len = 0;
    memset(&op, 0, sizeof(op));
    if (w->cfg->wire != LG_WIRE_WS) {
        ssize_t idlen = lg_msgr_client_id(id, sizeof(id), rt->run, n, t);
        if (idlen < 0)
            return (int)idlen;
        op.type = SB_OP_SEND;
        op.request_id = SEND_REQ(n);
        op.u.send.client_id = sb_slice_from(id, (size_t)idlen);
        *(cv->is_group ? &op.u.send.conv : &op.u.send.to) = sb_slice_from(dest, strlen(dest));
        op.u.send.body.form = SB_OP_BODY_BYTES;
        op.u.send.body.data = sb_slice_from(body, size);
    } else {
        len = lg_msgr_send(w->scratch, w->scratch_cap, rt->run, n, t, !cv->is_group, dest, body,
                           size);
        if (len < 0)
            return (int)len;
    }
    uint64_t due = due_for(cv);
    /* Counted before the send is even queued: a delivery must never arrive before its due. */
    atomic_fetch_add_explicit(&rt->expected, due, memory_order_relaxed);
    int err = w->cfg->wire != LG_WIRE_WS
                  ? lg_conn_send_frame(w, c, &op)
                  : lg_conn_send_op(w, c, SB_WS_TEXT, w->scratch, (size_t)len);
    if (err < 0) {
        atomic_fetch_sub_explicit(&rt->expected, due, memory_order_relaxed);
        return err;
    }
    c->seq_out++;
    w->sc.outstanding++;
    w->stats.c[LG_C_MSGS_SENT]++;
    w->stats.c[LG_C_BYTES_SENT] += size;
    w->stats.c[LG_C_EXPECTED] += due;
    *due_out = due;
    return 0;
}

/* c's oldest send has its answer (an ack or an error). */
static void answered(struct lg_worker *w, struct lg_conn *c)
{
    if (c->seq_in < c->seq_out) {
        c->seq_in++;
        w->sc.outstanding--;
    }
}

/* The ack of one of c's sends, sent at t. */
static void acked(struct lg_worker *w, struct lg_conn *c, uint64_t t)
{
    w->stats.c[LG_C_ACKS]++;
    lg_hist_record(&w->stats.h[LG_H_ACK], w->now > t ? w->now - t : 0);
    answered(w, c);
    if (lg_msgr_rt.on_ack)
        lg_msgr_rt.on_ack(w, c);
}

/* The server answered c with an error; text says what, for the one sample on stderr. */
static void server_error(struct lg_worker *w, struct lg_conn *c, const char *text)
{
    w->stats.c[LG_C_SERVER_ERRORS]++;
    if (atomic_exchange(&lg_msgr_rt.error_shown, 1) == 0)
        fprintf(stderr, "switchboard-loadgen: the server answered lg%u with an error (%s)\n", c->id,
                text);
}

/* A send of c's was refused: nothing will be delivered for it. */
static void send_refused(struct lg_worker *w, struct lg_conn *c)
{
    struct lg_msgr_rt *rt = &lg_msgr_rt;
    struct lg_msgr_conv *cv = conv_of_user(c->id);
    if (cv) {
        uint64_t due = due_for(cv);
        atomic_fetch_sub_explicit(&rt->expected, due, memory_order_relaxed);
        w->stats.c[LG_C_EXPECTED] -= due < w->stats.c[LG_C_EXPECTED] ? due : 0;
    }
    answered(w, c);
    if (rt->on_ack)
        rt->on_ack(w, c);
}

/* The server refused a request that builds group g: that group will not exist. */
static void group_refused(uint32_t g)
{
    struct lg_msgr_rt *rt = &lg_msgr_rt;
    if (g >= rt->nconvs)
        return;
    int want = LG_CONV_REQUESTED;
    if (atomic_compare_exchange_strong(&rt->convs[g].state, &want, LG_CONV_FAILED))
        atomic_fetch_sub(&rt->groups_pending, 1);
}

/* The server answered a request that builds group g with the group, conv. */
static void group_answered(struct lg_worker *w, struct lg_conn *c, uint32_t g, const char *conv,
                           size_t len)
{
    struct lg_msgr_rt *rt = &lg_msgr_rt;
    if (g >= rt->nconvs || len == 0 || len >= LG_MSGR_CONV_MAX || memchr(conv, '\0', len))
        return;
    struct lg_msgr_conv *cv = &rt->convs[g];
    if (atomic_load(&cv->state) != LG_CONV_REQUESTED)
        return;
    memcpy(cv->id, conv, len);
    cv->id[len] = '\0';
    if (cv->added + 1 < cv->count) {
        /* More members than one request may name: add them once the group exists. */
        if (request_members(w, c, g) < 0)
            group_failed(cv);
        return;
    }
    atomic_store_explicit(&cv->state, LG_CONV_READY, memory_order_release);
    atomic_fetch_sub(&rt->groups_pending, 1);
    w->stats.c[LG_C_GROUPS]++;
}

/* A delivery whose body carried stamp st. */
static void delivered(struct lg_worker *w, struct lg_conn *c, const struct lg_msgr_stamp *st)
{
    struct lg_msgr_rt *rt = &lg_msgr_rt;
    w->stats.c[LG_C_MSGS_RECV]++;
    w->stats.c[LG_C_BYTES_RECV] += w->cfg->size;
    atomic_fetch_add_explicit(&rt->received, 1, memory_order_relaxed);
    lg_hist_record(&w->stats.h[LG_H_LATENCY], w->now > st->t ? w->now - st->t : 0);
    if (rt->on_delivery)
        rt->on_delivery(w, c, st);
}

/* ---- the JSON protocol -------------------------------------------------------------------- */

static void on_ack(struct lg_worker *w, struct lg_conn *c, const char *p, size_t len)
{
    uint64_t t;
    if (lg_msgr_ack(p, len, lg_msgr_rt.run, &t) < 0)
        return; /* not ours */
    acked(w, c, t);
}

static void on_error(struct lg_worker *w, struct lg_conn *c, const char *p, size_t len)
{
    struct lg_msgr_rt *rt = &lg_msgr_rt;
    char text[160];
    lg_msgr_error_text(p, len, text, sizeof(text));
    server_error(w, c, text);
    uint64_t t;
    if (lg_msgr_ack(p, len, rt->run, &t) == 0) {
        send_refused(w, c);
        return;
    }
    /* The answer to a conv_create ("id":"g<index>"). */
    static const char pat[] = "\"id\":\"g";
    const char *idp = memmem(p, len, pat, sizeof(pat) - 1);
    uint32_t g = 0;
    size_t i = idp ? (size_t)(idp - p) + sizeof(pat) - 1 : len;
    size_t digits = 0;
    for (; i < len && p[i] >= '0' && p[i] <= '9' && digits < 9; i++, digits++)
        g = g * 10 + (uint32_t)(p[i] - '0');
    if (digits == 0 || i >= len || p[i] != '"')
        return;
    group_refused(g);
}

static void on_conv(struct lg_worker *w, struct lg_conn *c, const char *p, size_t len)
{
    char id[32], conv[LG_MSGR_CONV_MAX];
    unsigned g;
    char extra;
    if (lg_msgr_conv(p, len, id, sizeof(id), conv, sizeof(conv)) < 0 ||
        sscanf(id, "g%u%c", &g, &extra) != 1)
        return;
    group_answered(w, c, g, conv, strlen(conv));
}

static void on_delivery(struct lg_worker *w, struct lg_conn *c, const struct lg_ws_msg *m)
{
    struct lg_msgr_stamp st;
    int k = m->head_len == m->len
                ? lg_msgr_delivery((const char *)m->head, m->head_len, (size_t)w->cfg->size, &st)
                : -EBADMSG;
    if (k < 0) {
        w->stats.c[LG_C_MISMATCHED]++;
        return;
    }
    if (k == 1)
        delivered(w, c, &st);
    /* else a system message, or a body that is not ours */
}

static void json_message(struct lg_worker *w, struct lg_conn *c, const struct lg_ws_msg *m)
{
    const char *p = (const char *)m->head;
    size_t len = m->head_len;
    if (m->opcode != SB_WS_TEXT) {
        w->stats.c[LG_C_MISMATCHED]++;
        return;
    }
    switch (lg_msgr_kind(p, len)) {
    case LG_MK_MESSAGE:
        on_delivery(w, c, m);
        break;
    case LG_MK_ACK:
        on_ack(w, c, p, len);
        break;
    case LG_MK_ERROR:
        on_error(w, c, p, len);
        break;
    case LG_MK_CONV:
        on_conv(w, c, p, len);
        break;
    case LG_MK_BEHIND:
        /* The server stopped pushing a conversation to this device: what follows is missing
         * unless it syncs (loadgen does not). Counted, so missing deliveries are explained. */
        w->stats.c[LG_C_BEHIND]++;
        break;
    case LG_MK_WELCOME:
    case LG_MK_OTHER:
        break;
    }
}

/* ---- the binary protocol (frames decoded by lg_proto_bin.c) ------------------------------- */

static void bin_error(struct lg_worker *w, struct lg_conn *c, const struct sb_op *op)
{
    const struct sb_op_error *e = &op->u.error;
    const char *name = sb_ops_err_name(e->code);
    char text[320];
    snprintf(text, sizeof(text), "%s: %.*s", name ? name : "internal", (int)e->message.len,
             e->message.base);
    server_error(w, c, text);
    if (op->request_id & GROUP_REQ)
        group_refused(op->request_id & ~GROUP_REQ);
    else if (op->request_id != 0)
        send_refused(w, c);
}

static void bin_message(struct lg_worker *w, struct lg_conn *c, const struct sb_op *op)
{
    struct lg_msgr_stamp st;
    uint64_t t;
    switch (op->type) {
    case SB_OP_MESSAGE: {
        const struct sb_op_message *msg = &op->u.message;
        /* Bodies are opaque bytes here: ours are exactly --size bytes of stamp. */
        if (msg->system == SB_OP_SYSTEM_NONE && msg->body.data.len == w->cfg->size &&
            lg_msgr_body_parse(msg->body.data.base, msg->body.data.len, &st) == 0)
            delivered(w, c, &st);
        break;
    }
    case SB_OP_ACK:
        if (lg_msgr_client_id_time(op->u.ack.client_id.base, op->u.ack.client_id.len,
                                   lg_msgr_rt.run, &t) == 0)
            acked(w, c, t);
        break;
    case SB_OP_ERROR:
        bin_error(w, c, op);
        break;
    case SB_OP_CONV:
        if (op->request_id & GROUP_REQ)
            group_answered(w, c, op->request_id & ~GROUP_REQ, op->u.conv.conv.base,
                           op->u.conv.conv.len);
        break;
    case SB_OP_BEHIND:
        w->stats.c[LG_C_BEHIND]++; /* as in json_message */
        break;
    default:
        break;
    }
}

void lg_msgr_message(struct lg_worker *w, struct lg_conn *c, const struct lg_ws_msg *m)
{
    if (m->op)
        bin_message(w, c, m->op);
    else
        json_message(w, c, m);
}

bool lg_msgr_drained(struct lg_worker *w)
{
    struct lg_msgr_rt *rt = &lg_msgr_rt;
    if (!w->sc.run_over) {
        w->sc.run_over = true;
        atomic_fetch_add(&rt->ran, 1);
    }
    /* A worker that closed its members while another still sends would make those sends'
     * deliveries go missing: the drain ends for all at once, when nothing more can be due. */
    return atomic_load(&rt->ran) >= rt->workers && w->sc.outstanding == 0 &&
           atomic_load(&rt->received) >= atomic_load(&rt->expected);
}

void lg_msgr_finish(struct lg_worker *w)
{
    w->stats.c[LG_C_LOST] += w->sc.outstanding;
    w->sc.outstanding = 0;
}
