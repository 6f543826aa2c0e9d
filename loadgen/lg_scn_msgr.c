#include "loadgen/lg_scn_msgr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define TOKEN_TTL_S 86400
#define SETUP_POLL_NS 1000000ULL /* a worker waiting for another's groups looks every 1 ms */

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
    rt->key.secret = (const uint8_t *)cfg->jwt_secret;
    rt->key.secret_len = strlen(cfg->jwt_secret);
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

ssize_t lg_msgr_request_path(struct lg_worker *w, struct lg_conn *c, char *out, size_t cap)
{
    char user[LG_MSGR_USER_MAX];
    char token[1024];
    int64_t now = (int64_t)time(NULL);
    if (lg_msgr_user(user, sizeof(user), c->id) < 0 ||
        sb_jwt_sign(&lg_msgr_rt.key, user, now, now + TOKEN_TTL_S, NULL, token, sizeof(token)) < 0)
        return -ENOSPC;
    return lg_msgr_path(out, cap, w->cfg->path, token);
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
    ssize_t len = lg_msgr_conv_create(w->scratch, w->scratch_cap, id, cv->added ? cv->id : NULL,
                                      from, n, cv->owner);
    if (len < 0)
        return (int)len;
    int err = lg_conn_send_op(w, c, SB_WS_TEXT, w->scratch, (size_t)len);
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
    ssize_t len =
        lg_msgr_send(w->scratch, w->scratch_cap, rt->run, n, t, !cv->is_group, dest, body, size);
    if (len < 0)
        return (int)len;
    uint64_t due = due_for(cv);
    /* Counted before the send is even queued: a delivery must never arrive before its due. */
    atomic_fetch_add_explicit(&rt->expected, due, memory_order_relaxed);
    int err = lg_conn_send_op(w, c, SB_WS_TEXT, w->scratch, (size_t)len);
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

static void on_ack(struct lg_worker *w, struct lg_conn *c, const char *p, size_t len)
{
    uint64_t t;
    if (lg_msgr_ack(p, len, lg_msgr_rt.run, &t) < 0)
        return; /* not ours */
    w->stats.c[LG_C_ACKS]++;
    lg_hist_record(&w->stats.h[LG_H_ACK], w->now > t ? w->now - t : 0);
    answered(w, c);
    if (lg_msgr_rt.on_ack)
        lg_msgr_rt.on_ack(w, c);
}

static void on_error(struct lg_worker *w, struct lg_conn *c, const char *p, size_t len)
{
    struct lg_msgr_rt *rt = &lg_msgr_rt;
    w->stats.c[LG_C_SERVER_ERRORS]++;
    char text[160];
    lg_msgr_error_text(p, len, text, sizeof(text));
    if (atomic_exchange(&rt->error_shown, 1) == 0)
        fprintf(stderr, "switchboard-loadgen: the server answered lg%u with an error (%s)\n", c->id,
                text);
    uint64_t t;
    if (lg_msgr_ack(p, len, rt->run, &t) == 0) {
        /* A send of ours was refused: nothing will be delivered for it. */
        struct lg_msgr_conv *cv = conv_of_user(c->id);
        if (cv) {
            uint64_t due = due_for(cv);
            atomic_fetch_sub_explicit(&rt->expected, due, memory_order_relaxed);
            w->stats.c[LG_C_EXPECTED] -= due < w->stats.c[LG_C_EXPECTED] ? due : 0;
        }
        answered(w, c);
        if (rt->on_ack)
            rt->on_ack(w, c);
        return;
    }
    /* The answer to a conv_create ("id":"g<index>"): that group will not exist. */
    static const char pat[] = "\"id\":\"g";
    const char *idp = memmem(p, len, pat, sizeof(pat) - 1);
    uint32_t g = 0;
    size_t i = idp ? (size_t)(idp - p) + sizeof(pat) - 1 : len;
    size_t digits = 0;
    for (; i < len && p[i] >= '0' && p[i] <= '9' && digits < 9; i++, digits++)
        g = g * 10 + (uint32_t)(p[i] - '0');
    if (digits == 0 || i >= len || p[i] != '"' || g >= rt->nconvs)
        return;
    int want = LG_CONV_REQUESTED;
    if (atomic_compare_exchange_strong(&rt->convs[g].state, &want, LG_CONV_FAILED))
        atomic_fetch_sub(&rt->groups_pending, 1);
}

static void on_conv(struct lg_worker *w, struct lg_conn *c, const char *p, size_t len)
{
    struct lg_msgr_rt *rt = &lg_msgr_rt;
    char id[32], conv[LG_MSGR_CONV_MAX];
    unsigned g;
    char extra;
    if (lg_msgr_conv(p, len, id, sizeof(id), conv, sizeof(conv)) < 0 ||
        sscanf(id, "g%u%c", &g, &extra) != 1 || g >= rt->nconvs)
        return;
    struct lg_msgr_conv *cv = &rt->convs[g];
    if (atomic_load(&cv->state) != LG_CONV_REQUESTED)
        return;
    memcpy(cv->id, conv, sizeof(cv->id));
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

static void on_delivery(struct lg_worker *w, struct lg_conn *c, const struct lg_ws_msg *m)
{
    struct lg_msgr_rt *rt = &lg_msgr_rt;
    struct lg_msgr_stamp st;
    int k = m->head_len == m->len
                ? lg_msgr_delivery((const char *)m->head, m->head_len, (size_t)w->cfg->size, &st)
                : -EBADMSG;
    if (k < 0) {
        w->stats.c[LG_C_MISMATCHED]++;
        return;
    }
    if (k == 0)
        return; /* a system message, or a body that is not ours */
    w->stats.c[LG_C_MSGS_RECV]++;
    w->stats.c[LG_C_BYTES_RECV] += w->cfg->size;
    atomic_fetch_add_explicit(&rt->received, 1, memory_order_relaxed);
    lg_hist_record(&w->stats.h[LG_H_LATENCY], w->now > st.t ? w->now - st.t : 0);
    if (rt->on_delivery)
        rt->on_delivery(w, c, &st);
}

void lg_msgr_message(struct lg_worker *w, struct lg_conn *c, const struct lg_ws_msg *m)
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
