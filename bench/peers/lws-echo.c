/*
 * A WebSocket echo server on libwebsockets, the C peer of the echo benchmark.
 *
 *     lws-echo PORT
 *
 * Listens on 127.0.0.1:PORT, answers every data message on any path with the same bytes and
 * opcode, and runs until SIGINT or SIGTERM. One thread, one lws service loop: that is how
 * libwebsockets serves. It prints "listening on 127.0.0.1:PORT" once it accepts connections.
 *
 * Each connection keeps a small ring of pending replies. A reply is written when lws says the
 * socket is writable; several go out in one writable callback until lws reports that a write was
 * only partly sent (lws_partial_buffered), which is the documented way to batch writes. Slot
 * buffers are kept and reused, so a connection allocates only while its messages grow.
 */
#include <libwebsockets.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RING_SLOTS 64 /* pending replies per connection before reading pauses */

struct slot {
    unsigned char *buf; /* LWS_PRE bytes of headroom, then the payload */
    size_t cap;         /* payload capacity */
    size_t len;
    int is_binary;
};

struct session {
    struct slot ring[RING_SLOTS];
    unsigned head;  /* next reply to write */
    unsigned count; /* complete replies queued */
    int rx_paused;
};

static volatile sig_atomic_t interrupted;
static struct lws_context *context;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
    lws_cancel_service(context);
}

/* The slot a message being received goes into: the one after the queued replies. */
static struct slot *tail_slot(struct session *s)
{
    return &s->ring[(s->head + s->count) % RING_SLOTS];
}

/* Appends a received fragment to the tail slot, growing its buffer when needed. */
static int append(struct slot *sl, const void *data, size_t len, int first)
{
    if (first) {
        sl->len = 0;
    }
    if (sl->len + len > sl->cap) {
        size_t cap = sl->cap ? sl->cap : 256;
        while (cap < sl->len + len) {
            cap *= 2;
        }
        unsigned char *nb = realloc(sl->buf, LWS_PRE + cap);
        if (!nb) {
            return -ENOMEM;
        }
        sl->buf = nb;
        sl->cap = cap;
    }
    memcpy(sl->buf + LWS_PRE + sl->len, data, len);
    sl->len += len;
    return 0;
}

static int on_receive(struct lws *wsi, struct session *s, const void *in, size_t len)
{
    if (s->count == RING_SLOTS) {
        /* Cannot happen while we pause reading at RING_SLOTS - 1; a guard, not a path. */
        return -1;
    }
    struct slot *sl = tail_slot(s);
    if (append(sl, in, len, lws_is_first_fragment(wsi)) < 0) {
        return -1;
    }
    if (!lws_is_final_fragment(wsi)) {
        return 0;
    }
    sl->is_binary = lws_frame_is_binary(wsi);
    s->count++;
    if (s->count == RING_SLOTS - 1) {
        /* Keep one slot free for a message already half received. */
        lws_rx_flow_control(wsi, 0);
        s->rx_paused = 1;
    }
    lws_callback_on_writable(wsi);
    return 0;
}

static int on_writable(struct lws *wsi, struct session *s)
{
    while (s->count > 0) {
        struct slot *sl = &s->ring[s->head];
        enum lws_write_protocol wp = sl->is_binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT;
        if (lws_write(wsi, sl->buf + LWS_PRE, sl->len, wp) < (int)sl->len) {
            return -1;
        }
        s->head = (s->head + 1) % RING_SLOTS;
        s->count--;
        if (lws_partial_buffered(wsi)) {
            break;
        }
    }
    if (s->rx_paused && s->count < RING_SLOTS / 2) {
        lws_rx_flow_control(wsi, 1);
        s->rx_paused = 0;
    }
    if (s->count > 0) {
        lws_callback_on_writable(wsi);
    }
    return 0;
}

static void on_closed(struct session *s)
{
    for (unsigned i = 0; i < RING_SLOTS; i++) {
        free(s->ring[i].buf);
        s->ring[i].buf = NULL;
    }
}

static int echo_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    struct session *s = user;
    switch (reason) {
    case LWS_CALLBACK_RECEIVE:
        return on_receive(wsi, s, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return on_writable(wsi, s);
    case LWS_CALLBACK_CLOSED:
        if (s) {
            on_closed(s);
        }
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols protocols[] = {
    /* The first protocol serves clients that ask for none, which is what loadgen does. */
    {"echo", echo_callback, sizeof(struct session), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

int main(int argc, char **argv)
{
    if (argc != 2 || atoi(argv[1]) <= 0 || atoi(argv[1]) > 65535) {
        fprintf(stderr, "usage: lws-echo PORT\n");
        return 2;
    }
    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = atoi(argv[1]);
    info.iface = "127.0.0.1";
    info.protocols = protocols;
    info.gid = -1;
    info.uid = -1;
    info.count_threads = 1;
    info.pt_serv_buf_size = 65536;
    /* The server must not time a benchmark client out for being busy. */
    info.timeout_secs = 60;

    context = lws_create_context(&info);
    if (!context) {
        fprintf(stderr, "lws-echo: lws_create_context failed\n");
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    printf("listening on 127.0.0.1:%d\n", info.port);
    fflush(stdout);

    while (!interrupted && lws_service(context, 0) >= 0) {
    }
    lws_context_destroy(context);
    return 0;
}
