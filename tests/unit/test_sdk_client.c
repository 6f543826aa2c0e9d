/*
 * The client's per-frame rules, driven without a socket (sdk_hooks.h): in-order delivery with
 * gaps held and SYNCed, duplicates dropped, own messages known from their ACK, rate-limited
 * sends retried once, BEHIND, PING, and a malformed frame skipped.
 */
#include <errno.h>

#include "check.h"
#include "proto/binproto.h"
#include "sdk_hooks.h"

static uint64_t delivered[64];
static int n_delivered;
static int n_acks, last_ack_status, n_errors;
static uint64_t last_ack_seq;

static void on_message(struct sb_client *c, const struct sb_client_message *m, void *arg)
{
    if (n_delivered < 64) {
        delivered[n_delivered++] = m->seq;
    }
}

static void on_ack(struct sb_client *c, int status, const struct sb_client_ack *a,
                   const struct sb_client_error *e, void *arg)
{
    n_acks++;
    last_ack_status = status;
    last_ack_seq = a != NULL ? a->seq : 0;
}

static void on_error(struct sb_client *c, const struct sb_client_error *e, void *arg)
{
    n_errors++;
}

static void feed(struct sb_client *c, struct sb_op *op)
{
    uint8_t buf[4096];
    ssize_t n = sb_binproto_encode(op, buf, sizeof(buf));
    CHECK(n > 0);
    if (n > 0) {
        sb__client_hook_feed(c, buf, (size_t)n);
    }
}

static struct sb_op_message message(const char *conv, uint64_t seq)
{
    struct sb_op_message m = {.msg_id = 1000 + seq, .seq = seq, .ts_ms = 1};
    m.conv = sb_slice_from(conv, strlen(conv));
    m.from = sb_slice_from("bob", 3);
    m.device = sb_slice_from("d1", 2);
    m.body.data = sb_slice_from("hi", 2);
    return m;
}

static void feed_message(struct sb_client *c, const char *conv, uint64_t seq)
{
    struct sb_op op = {.type = SB_OP_MESSAGE};
    op.u.message = message(conv, seq);
    feed(c, &op);
}

/* The frames c wrote since the last call; returns how many, the first in *first. */
static uint8_t out_buf[1 << 16];
static int output(struct sb_client *c, struct sb_op *first)
{
    size_t len = sb__client_hook_output(c, out_buf, sizeof(out_buf));
    size_t off = 0;
    int n = 0;
    while (off < len) {
        struct sb_binproto_header hdr;
        struct sb_op op;
        ssize_t r = sb_binproto_decode(out_buf + off, len - off, 0, &hdr, &op);
        CHECK(r > 0);
        if (r <= 0) {
            break;
        }
        if (n == 0 && first != NULL) {
            *first = op;
        }
        n++;
        off += (size_t)r;
    }
    return n;
}

static struct sb_client *make_client(void)
{
    struct sb_client_config cfg;
    sb_client_config_init(&cfg);
    cfg.url = "tcp://127.0.0.1:1";
    cfg.token = "t";
    cfg.on_message = on_message;
    cfg.on_error = on_error;
    struct sb_client *c = NULL;
    CHECK_INT(sb_client_create(&cfg, &c), 0);
    sb__client_hook_ready(c);
    return c;
}

static void test_gap_is_held_and_synced(void)
{
    struct sb_client *c = make_client();
    n_delivered = 0;
    feed_message(c, "dm:a:bob", 7); /* a fresh client starts at the first message it sees */
    feed_message(c, "dm:a:bob", 9);
    feed_message(c, "dm:a:bob", 10);
    CHECK_INT(n_delivered, 1);
    CHECK_INT(output(c, NULL), 0); /* the gap gets a grace period first */
    sb__client_hook_tick(c, 1000);
    struct sb_op sync;
    CHECK_INT(output(c, &sync), 1);
    CHECK_INT(sync.type, SB_OP_SYNC);
    struct sb_ops_list_iter it;
    struct sb_op_resume r;
    sb_ops_list_begin(&it, &sync.u.sync.convs);
    CHECK_INT(sb_ops_list_next(&it, &r), 1);
    CHECK_INT(r.last_seq, 7);
    CHECK(sb_slice_eq(r.conv, "dm:a:bob"));
    /* The page fills the gap and repeats what is held: each is delivered once, in order. */
    uint8_t lbuf[2048];
    struct sb_binproto_list_writer w;
    sb_binproto_list_init(&w, lbuf, sizeof(lbuf));
    for (uint64_t s = 8; s <= 10; s++) {
        struct sb_op_message m = message("dm:a:bob", s);
        sb_binproto_list_add_message(&w, &m);
    }
    struct sb_op page = {.type = SB_OP_SYNC_PAGE, .request_id = sync.request_id};
    page.u.sync_page.conv = sb_slice_from("dm:a:bob", 8);
    page.u.sync_page.last_seq = 10;
    CHECK_INT(sb_binproto_list_finish(&w, &page.u.sync_page.messages), 0);
    feed(c, &page);
    CHECK_INT(n_delivered, 4);
    CHECK_INT(delivered[1], 8);
    CHECK_INT(delivered[2], 9);
    CHECK_INT(delivered[3], 10);
    feed_message(c, "dm:a:bob", 9); /* late duplicate */
    feed_message(c, "dm:a:bob", 11);
    CHECK_INT(n_delivered, 5);
    CHECK_INT(delivered[4], 11);
    uint64_t pos = 0;
    CHECK_INT(sb_client_position_get(c, "dm:a:bob", &pos), 0);
    CHECK_INT(pos, 11);
    sb__client_hook_tick(c, 1000);
    CHECK_INT(output(c, NULL), 0); /* no gap left: no SYNC */
    sb_client_free(c);
}

/* The SYNC page of a gap, with messages from..to (none when from > to). */
static void feed_page(struct sb_client *c, uint32_t request_id, uint64_t from, uint64_t to,
                      uint64_t last_seq)
{
    uint8_t lbuf[2048];
    struct sb_binproto_list_writer w;
    sb_binproto_list_init(&w, lbuf, sizeof(lbuf));
    for (uint64_t s = from; s <= to; s++) {
        struct sb_op_message m = message("g:2", s);
        sb_binproto_list_add_message(&w, &m);
    }
    struct sb_op page = {.type = SB_OP_SYNC_PAGE, .request_id = request_id};
    page.u.sync_page.conv = sb_slice_from("g:2", 3);
    page.u.sync_page.last_seq = last_seq;
    CHECK_INT(sb_binproto_list_finish(&w, &page.u.sync_page.messages), 0);
    feed(c, &page);
}

static void test_gap_not_stored_yet_is_not_skipped(void)
{
    struct sb_client *c = make_client();
    n_delivered = 0;
    feed_message(c, "g:2", 1);
    feed_message(c, "g:2", 4); /* 2 and 3 are still being stored when the SYNC is served */
    sb__client_hook_tick(c, 1000);
    struct sb_op sync;
    CHECK_INT(output(c, &sync), 1);
    feed_page(c, sync.request_id, 1, 0, 1); /* empty: the history ends at 1 */
    CHECK_INT(n_delivered, 1);              /* 4 still held, not given up */
    CHECK_INT(output(c, NULL), 0);
    sb__client_hook_tick(c, 1000);
    CHECK_INT(output(c, &sync), 1); /* asked again after the grace */
    CHECK_INT(sync.type, SB_OP_SYNC);
    feed_page(c, sync.request_id, 2, 4, 4);
    CHECK_INT(n_delivered, 4);
    CHECK_INT(delivered[1], 2);
    CHECK_INT(delivered[3], 4);
    /* A gap the history has passed without it (retention dropped it) is skipped. */
    feed_message(c, "g:2", 7);
    sb__client_hook_tick(c, 1000);
    CHECK_INT(output(c, &sync), 1);
    feed_page(c, sync.request_id, 7, 7, 7);
    CHECK_INT(n_delivered, 5);
    CHECK_INT(delivered[4], 7);
    sb_client_free(c);
}

static void test_own_messages_and_rate_limit(void)
{
    struct sb_client *c = make_client();
    n_delivered = 0;
    n_acks = 0;
    CHECK_INT(sb_client_position_set(c, "dm:a:bob", 3), 0);
    output(c, NULL); /* the SYNC position_set starts */
    CHECK_INT(sb_client_send(c, NULL, "bob", "x", 1, "cid-1", on_ack, NULL), 0);
    struct sb_op send;
    CHECK_INT(output(c, &send), 1);
    CHECK_INT(send.type, SB_OP_SEND);
    CHECK(sb_slice_eq(send.u.send.client_id, "cid-1"));
    /* Refused for now: nothing completes; the same frame goes again after retry_after_ms. */
    struct sb_op err = {.type = SB_OP_ERROR, .request_id = send.request_id};
    err.u.error.code = SB_OP_ERR_RATE_LIMITED;
    err.u.error.retry_after_ms = 50;
    err.u.error.message = sb_slice_from("slow down", 9);
    feed(c, &err);
    CHECK_INT(n_acks, 0);
    CHECK_INT(output(c, NULL), 0);
    sb__client_hook_tick(c, 100);
    struct sb_op again;
    CHECK_INT(output(c, &again), 1);
    CHECK_INT(again.type, SB_OP_SEND);
    CHECK_INT(again.request_id, send.request_id);
    CHECK(sb_slice_eq(again.u.send.client_id, "cid-1"));
    struct sb_op ack = {.type = SB_OP_ACK, .request_id = send.request_id};
    ack.u.ack.msg_id = 5;
    ack.u.ack.seq = 4;
    ack.u.ack.client_id = sb_slice_from("cid-1", 5);
    ack.u.ack.conv = sb_slice_from("dm:a:bob", 8);
    feed(c, &ack);
    feed(c, &ack); /* a stray second answer completes nothing */
    CHECK_INT(n_acks, 1);
    CHECK_INT(last_ack_status, 0);
    CHECK_INT(last_ack_seq, 4);
    /* Our seq 4 is not sent to us: bob's 5 follows without a gap. */
    feed_message(c, "dm:a:bob", 5);
    CHECK_INT(n_delivered, 1);
    CHECK_INT(delivered[0], 5);
    sb_client_free(c);
}

static void test_behind_ping_and_bad_frames(void)
{
    struct sb_client *c = make_client();
    n_delivered = 0;
    n_errors = 0;
    CHECK_INT(sb_client_position_set(c, "g:1", 2), 0);
    output(c, NULL);
    struct sb_op page = {.type = SB_OP_SYNC_PAGE};
    page.u.sync_page.conv = sb_slice_from("g:1", 3);
    page.u.sync_page.last_seq = 2;
    feed(c, &page);
    struct sb_op behind = {.type = SB_OP_BEHIND};
    behind.u.behind.conv = sb_slice_from("g:1", 3);
    behind.u.behind.seq = 40;
    feed(c, &behind);
    struct sb_op sync;
    CHECK_INT(output(c, &sync), 1); /* at once: the server stopped pushing */
    CHECK_INT(sync.type, SB_OP_SYNC);
    /* A SYNC refused as rate_limited is not a lost gap: it goes again after retry_after_ms. */
    struct sb_op err = {.type = SB_OP_ERROR, .request_id = sync.request_id};
    err.u.error.code = SB_OP_ERR_RATE_LIMITED;
    err.u.error.retry_after_ms = 30;
    feed(c, &err);
    CHECK_INT(n_errors, 0);
    CHECK_INT(output(c, NULL), 0);
    sb__client_hook_tick(c, 1000);
    struct sb_op again;
    CHECK_INT(output(c, &again), 1);
    CHECK_INT(again.type, SB_OP_SYNC);
    CHECK(again.request_id != sync.request_id);
    struct sb_op ping = {.type = SB_OP_PING, .request_id = 77};
    ping.u.ping.data = sb_slice_from("abc", 3);
    feed(c, &ping);
    struct sb_op pong;
    CHECK_INT(output(c, &pong), 1);
    CHECK_INT(pong.type, SB_OP_PONG);
    CHECK_INT(pong.request_id, 77);
    CHECK(sb_slice_eq(pong.u.ping.data, "abc"));
    /* A frame with a broken body is skipped (the length is known); the next one still counts. */
    uint8_t bad[12 + 3] = {0, 0, 0, 11, 1, SB_OP_MESSAGE, 0, 0, 0, 0, 0, 0, 1, 2, 3};
    sb__client_hook_feed(c, bad, sizeof(bad));
    CHECK_INT(n_errors, 1);
    uint8_t unknown[12] = {0, 0, 0, 8, 1, 0xF0, 0, 0, 0, 0, 0, 0};
    sb__client_hook_feed(c, unknown, sizeof(unknown));
    CHECK_INT(n_errors, 1); /* unknown types are skipped silently */
    feed_message(c, "g:1", 3);
    CHECK_INT(n_delivered, 1);
    sb_client_free(c);
}

static void test_arguments(void)
{
    struct sb_client_config cfg;
    sb_client_config_init(&cfg);
    struct sb_client *c = NULL;
    cfg.token = "t";
    const char *bad_urls[] = {NULL,        "http://x",       "tcp://",
                              "tcp://h:",  "tcp://h:123456", "tcp://h/path",
                              "ws://[::1", "tcp://h:12a"};
    for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
        cfg.url = bad_urls[i];
        CHECK_INT(sb_client_create(&cfg, &c), -EINVAL);
    }
    cfg.url = "ws://[::1]:8080/ws?x=1";
    CHECK_INT(sb_client_create(&cfg, &c), 0);
    CHECK_INT(sb_client_send(c, "a", "b", "x", 1, NULL, NULL, NULL), -EINVAL);
    CHECK_INT(sb_client_send(c, NULL, NULL, "x", 1, NULL, NULL, NULL), -EINVAL);
    char id[80];
    memset(id, 'i', sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';
    CHECK_INT(sb_client_send(c, "a", NULL, "x", 1, id, NULL, NULL), -EINVAL);
    CHECK_INT(sb_client_mark(c, "a", 1, 7), -EINVAL);
    CHECK_INT(sb_client_conv_add(c, "g:1", NULL, 0, NULL, NULL), -EINVAL);
    CHECK_INT(sb_client_presence_subscribe(c, NULL, 0), -EINVAL);
    /* Queued while disconnected; freeing completes them with -ECANCELED. */
    n_acks = 0;
    CHECK_INT(sb_client_send(c, "a", NULL, "x", 1, NULL, on_ack, NULL), 0);
    CHECK_INT(sb_client_typing(c, "a"), -ENOTCONN);
    CHECK_INT(sb_client_mark(c, "a", 1, SB_CLIENT_RECEIPT_READ), 0);
    sb_client_free(c);
    CHECK_INT(n_acks, 1);
    CHECK_INT(last_ack_status, -ECANCELED);
    CHECK_STR(sb_client_err_name(SB_CLIENT_ERR_FORBIDDEN), "forbidden");
    CHECK_STR(sb_client_err_name(999), "internal");
}

int main(void)
{
    test_gap_is_held_and_synced();
    test_gap_not_stored_yet_is_not_skipped();
    test_own_messages_and_rate_limit();
    test_behind_ping_and_bad_frames();
    test_arguments();
    return check_done();
}
