/*
 * libFuzzer target for the SDK client's handling of server frames: the input is what a server
 * sends on raw TCP after WELCOME (any bytes), fed to a connected client through its
 * socket-less hooks, with the timers run after it. Checks that nothing crashes or leaks
 * whatever the frames say (sequence numbers, pages, answers to requests never made).
 */
#include <stddef.h>
#include <stdint.h>

#include "sdk_hooks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_message(struct sb_client *c, const struct sb_client_message *m, void *arg)
{
    /* Reacting like an application does: mark it read, which queues a frame. */
    sb_client_mark(c, m->conv, m->seq, SB_CLIENT_RECEIPT_READ);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sb_client_config cfg;
    sb_client_config_init(&cfg);
    cfg.url = "tcp://127.0.0.1:1";
    cfg.token = "t";
    cfg.max_frame = 1 << 16;
    cfg.on_message = on_message;
    struct sb_client *c = NULL;
    if (sb_client_create(&cfg, &c) != 0) {
        return 0;
    }
    sb__client_hook_ready(c);
    /* A send in flight, so that ACKs and errors of request 1 have something to complete. */
    sb_client_send(c, NULL, "bob", "x", 1, "fz", NULL, NULL);
    sb__client_hook_feed(c, data, size);
    sb__client_hook_tick(c, 100000);
    sb__client_hook_output(c, NULL, 0);
    sb_client_free(c);
    return 0;
}
