/*
 * The smallest libswitchboard program: connect, send one message to a user, print the ACK.
 *
 *   cc hello.c $(pkg-config --cflags --libs switchboard) -o hello
 *   ./hello tcp://127.0.0.1:7000 "$(switchboard token --sub alice)" bob "hi bob"
 *
 * It drives the client from its own poll() loop (sb_client_fd / sb_client_process) and exits
 * 0 once the message is acknowledged, 1 on an error, 2 after 10 seconds without an answer.
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <switchboard.h>

static int done = -1;

static void on_ack(struct sb_client *c, int status, const struct sb_client_ack *ack,
                   const struct sb_client_error *err, void *arg)
{
    if (status == 0) {
        printf("sent: conv %s seq %llu msg_id %llu\n", ack->conv, (unsigned long long)ack->seq,
               (unsigned long long)ack->msg_id);
        done = 0;
    } else {
        fprintf(stderr, "send failed: %s (%d)\n", err != NULL ? err->message : "local", status);
        done = 1;
    }
}

static void on_state(struct sb_client *c, int state, int err,
                     const struct sb_client_session *session, void *arg)
{
    if (state == SB_CLIENT_STATE_CONNECTED) {
        printf("connected as %s (device %s)\n", session->user, session->device);
    } else if (state == SB_CLIENT_STATE_FAILED) {
        fprintf(stderr, "cannot connect (error %d)\n", err);
        done = 1;
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s URL TOKEN USER TEXT\n", argv[0]);
        return 64;
    }
    struct sb_client_config cfg;
    sb_client_config_init(&cfg);
    cfg.url = argv[1];
    cfg.token = argv[2];
    cfg.reconnect_max_attempts = 3;
    cfg.on_state = on_state;
    struct sb_client *c;
    if (sb_client_create(&cfg, &c) != 0) {
        fprintf(stderr, "bad url or token\n");
        return 64;
    }
    if (sb_client_send(c, NULL, argv[3], argv[4], strlen(argv[4]), NULL, on_ack, NULL) != 0) {
        fprintf(stderr, "cannot queue the message\n");
        sb_client_free(c);
        return 1;
    }
    time_t deadline = time(NULL) + 10;
    while (done < 0 && time(NULL) < deadline) {
        struct pollfd pfd = {.fd = sb_client_fd(c), .events = POLLIN};
        int timeout = sb_client_timeout_ms(c);
        poll(&pfd, 1, timeout < 0 || timeout > 1000 ? 1000 : timeout);
        sb_client_process(c);
    }
    sb_client_free(c);
    return done < 0 ? 2 : done;
}
