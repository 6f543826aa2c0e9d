/*
 * sbchat: a terminal chat client on libswitchboard, the quickest way to see two clients talk.
 *
 *   sbchat --url tcp://127.0.0.1:7000 --token T [--conv C | --to USER] [--device D]
 *          [--ca FILE] [--insecure]
 *
 * tls:// and wss:// URLs verify the server's certificate against the system's CAs, or those of
 * --ca (PEM); --insecure skips the check (a throwaway test certificate only).
 *
 * Each line read from stdin is sent to the current conversation; lines starting with '/' are
 * commands (/help lists them). Messages, receipts, presence and typing are printed as they
 * arrive, one line each. The client is driven from this program's own poll() loop, next to
 * stdin, through sb_client_fd() and sb_client_process().
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <switchboard.h>

#define LINE_MAX_BYTES 65536
#define WORDS_MAX 64

struct chat {
    struct sb_client *client;
    char conv[SB_CLIENT_CONV_MAX + 1]; /* the current conversation, or "" */
    char to[SB_CLIENT_USER_MAX + 1];   /* or the user of a direct conversation, or "" */
    char user[SB_CLIENT_USER_MAX + 1];
    uint64_t last_seq; /* the last message seen in the current conversation */
    int pending;       /* sends not acknowledged yet */
    bool is_quitting;
};

static void on_state(struct sb_client *c, int state, int err,
                     const struct sb_client_session *session, void *arg)
{
    struct chat *ch = arg;
    switch (state) {
    case SB_CLIENT_STATE_CONNECTED:
        snprintf(ch->user, sizeof(ch->user), "%s", session->user);
        printf("* connected as %s (device %s)\n", session->user, session->device);
        break;
    case SB_CLIENT_STATE_DISCONNECTED:
        printf("* disconnected (%s); reconnecting\n",
               err == -EKEYREJECTED ? "the server's certificate was refused: see --ca"
               : err == -EPROTO     ? "TLS handshake failed"
                                    : strerror(-err));
        break;
    case SB_CLIENT_STATE_FAILED:
        printf("* giving up: %s\n", strerror(-err));
        ch->is_quitting = true;
        break;
    default:
        break;
    }
}

static void print_body(const uint8_t *body, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        putchar(body[i] >= 0x20 || body[i] == '\t' || body[i] >= 0x80 ? body[i] : '?');
    }
}

static void on_message(struct sb_client *c, const struct sb_client_message *m, void *arg)
{
    struct chat *ch = arg;
    static const char *const what[] = {"", "added", "removed", "renamed the group to", "created"};
    printf("[%s #%llu] ", m->conv, (unsigned long long)m->seq);
    if (m->system != SB_CLIENT_SYSTEM_NONE) {
        printf("* %s %s %s\n", m->from, m->system <= 4 ? what[m->system] : "changed", m->subject);
    } else {
        printf("%s: ", m->from);
        print_body(m->body, m->body_len);
        putchar('\n');
    }
    if (strcmp(m->conv, ch->conv) == 0 || ch->conv[0] == '\0') {
        if (ch->conv[0] == '\0' && ch->to[0] == '\0') {
            snprintf(ch->conv, sizeof(ch->conv), "%s", m->conv); /* reply where it came from */
        }
        ch->last_seq = m->seq;
    }
    if (strcmp(m->from, ch->user) != 0) {
        sb_client_mark(c, m->conv, m->seq, SB_CLIENT_RECEIPT_DELIVERED);
    }
}

static void on_receipt(struct sb_client *c, const struct sb_client_receipt *r, void *arg)
{
    printf("[%s] %s %s up to #%llu\n", r->conv, r->user,
           r->kind == SB_CLIENT_RECEIPT_READ ? "read" : "received", (unsigned long long)r->seq);
}

static void on_presence(struct sb_client *c, const struct sb_client_presence *p, void *arg)
{
    printf("* %s is %s\n", p->user, p->status == SB_CLIENT_PRESENCE_ONLINE ? "online" : "offline");
}

static void on_typing(struct sb_client *c, const struct sb_client_typing *t, void *arg)
{
    printf("[%s] %s is typing\n", t->conv, t->user);
}

static void on_error(struct sb_client *c, const struct sb_client_error *e, void *arg)
{
    printf("! %s: %s%s%s\n", sb_client_err_name(e->code), e->message, e->conv[0] ? " " : "",
           e->conv);
}

static void on_ack(struct sb_client *c, int status, const struct sb_client_ack *ack,
                   const struct sb_client_error *err, void *arg)
{
    struct chat *ch = arg;
    ch->pending--;
    if (status == 0) {
        printf("[%s #%llu] (sent)\n", ack->conv, (unsigned long long)ack->seq);
        if (ch->conv[0] == '\0' || strcmp(ch->conv, ack->conv) == 0) {
            snprintf(ch->conv, sizeof(ch->conv), "%s", ack->conv);
            ch->to[0] = '\0';
            ch->last_seq = ack->seq;
        }
    } else if (status > 0) {
        printf("! not sent: %s: %s\n", sb_client_err_name(err->code), err->message);
    } else {
        printf("! not sent: %s\n", strerror(-status));
    }
}

static void on_conv(struct sb_client *c, int status, const struct sb_client_conv *cv,
                    const struct sb_client_error *err, void *arg)
{
    struct chat *ch = arg;
    if (status != 0) {
        printf("! %s: %s\n", status > 0 ? sb_client_err_name(status) : strerror(-status),
               err != NULL ? err->message : "");
        return;
    }
    printf("* %s \"%s\" owner %s, members:", cv->conv, cv->name, cv->owner);
    for (size_t i = 0; i < cv->n_members; i++) {
        printf(" %s", cv->members[i]);
    }
    putchar('\n');
    snprintf(ch->conv, sizeof(ch->conv), "%s", cv->conv);
    ch->to[0] = '\0';
}

static void on_convs(struct sb_client *c, int status, const struct sb_client_conv *convs, size_t n,
                     const struct sb_client_error *err, void *arg)
{
    for (size_t i = 0; status == 0 && i < n; i++) {
        printf("* %s \"%s\" %u members, last #%llu, read #%llu\n", convs[i].conv, convs[i].name,
               convs[i].member_count, (unsigned long long)convs[i].last_seq,
               (unsigned long long)convs[i].read_seq);
    }
}

static size_t split(char *line, char **words)
{
    size_t n = 0;
    for (char *save = NULL, *w = strtok_r(line, " \t", &save); w != NULL && n < WORDS_MAX;
         w = strtok_r(NULL, " \t", &save)) {
        words[n++] = w;
    }
    return n;
}

static void help(void)
{
    printf("* /join CONV | /to USER | /create NAME USER... | /add USER... | /read | /typing |\n"
           "* /who USER... | /list | /quit; any other line is sent to the current conversation\n");
}

static void command(struct chat *ch, char *line)
{
    char *w[WORDS_MAX];
    size_t n = split(line, w);
    const char *const *rest = (const char *const *)w + 1;
    int rc = 0;
    if (n == 0) {
        return;
    }
    if (strcmp(w[0], "/quit") == 0) {
        ch->is_quitting = true;
    } else if (strcmp(w[0], "/join") == 0 && n == 2) {
        snprintf(ch->conv, sizeof(ch->conv), "%s", w[1]);
        ch->to[0] = '\0';
        rc = sb_client_sync(ch->client, ch->conv);
    } else if (strcmp(w[0], "/to") == 0 && n == 2) {
        snprintf(ch->to, sizeof(ch->to), "%s", w[1]);
        ch->conv[0] = '\0';
    } else if (strcmp(w[0], "/create") == 0 && n >= 2) {
        rc = sb_client_conv_create(ch->client, w[1], rest + 1, n - 2, on_conv, ch);
    } else if (strcmp(w[0], "/add") == 0 && n >= 2 && ch->conv[0]) {
        rc = sb_client_conv_add(ch->client, ch->conv, rest, n - 1, on_conv, ch);
    } else if (strcmp(w[0], "/read") == 0 && ch->conv[0]) {
        rc = sb_client_mark(ch->client, ch->conv, ch->last_seq, SB_CLIENT_RECEIPT_READ);
    } else if (strcmp(w[0], "/typing") == 0 && ch->conv[0]) {
        rc = sb_client_typing(ch->client, ch->conv);
    } else if (strcmp(w[0], "/who") == 0 && n >= 2) {
        rc = sb_client_presence_subscribe(ch->client, rest, n - 1);
    } else if (strcmp(w[0], "/list") == 0) {
        rc = sb_client_conv_list(ch->client, on_convs, ch);
    } else {
        help();
    }
    if (rc < 0) {
        printf("! %s\n", strerror(-rc));
    }
}

static void input_line(struct chat *ch, char *line)
{
    if (line[0] == '/') {
        command(ch, line);
        return;
    }
    if (line[0] == '\0') {
        return;
    }
    if (ch->conv[0] == '\0' && ch->to[0] == '\0') {
        printf("! no conversation: /join CONV or /to USER first\n");
        return;
    }
    int rc = sb_client_send(ch->client, ch->conv[0] ? ch->conv : NULL, ch->conv[0] ? NULL : ch->to,
                            line, strlen(line), NULL, on_ack, ch);
    if (rc < 0) {
        printf("! not sent: %s\n", strerror(-rc));
    } else {
        ch->pending++;
    }
}

/* Reads what stdin has; returns false at its end. */
static bool read_input(struct chat *ch, char *buf, size_t *len)
{
    ssize_t n = read(STDIN_FILENO, buf + *len, LINE_MAX_BYTES - 1 - *len);
    if (n <= 0) {
        if (n < 0 && errno == EINTR) {
            return true;
        }
        if (*len > 0) {
            buf[*len] = '\0';
            input_line(ch, buf);
            *len = 0;
        }
        return false;
    }
    *len += (size_t)n;
    char *start = buf, *nl;
    while ((nl = memchr(start, '\n', *len - (size_t)(start - buf))) != NULL) {
        *nl = '\0';
        if (nl > start && nl[-1] == '\r') {
            nl[-1] = '\0';
        }
        input_line(ch, start);
        start = nl + 1;
    }
    *len -= (size_t)(start - buf);
    memmove(buf, start, *len);
    if (*len == LINE_MAX_BYTES - 1) { /* an overlong line goes as it is */
        buf[*len] = '\0';
        input_line(ch, buf);
        *len = 0;
    }
    return true;
}

static void usage(const char *argv0)
{
    fprintf(
        stderr,
        "usage: %s --url URL --token TOKEN [--conv CONV | --to USER] [--device D]\n"
        "       [--ca FILE] [--insecure]\n"
        "URL: tcp://host[:7000], tls://host[:7443], ws://host[:80][/ws], wss://host[:443][/ws]\n",
        argv0);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},
        {"token", required_argument, NULL, 't'},
        {"conv", required_argument, NULL, 'c'},
        {"to", required_argument, NULL, 'o'},
        {"device", required_argument, NULL, 'd'},
        {"ca", required_argument, NULL, 'C'},
        {"insecure", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static struct chat ch;
    static char buf[LINE_MAX_BYTES];
    struct sb_client_config cfg;
    sb_client_config_init(&cfg);
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'u':
            cfg.url = optarg;
            break;
        case 't':
            cfg.token = optarg;
            break;
        case 'c':
            snprintf(ch.conv, sizeof(ch.conv), "%s", optarg);
            break;
        case 'o':
            snprintf(ch.to, sizeof(ch.to), "%s", optarg);
            break;
        case 'd':
            cfg.device = optarg;
            break;
        case 'C':
            cfg.ca_file = optarg;
            break;
        case 'k':
            cfg.insecure = true;
            break;
        default:
            usage(argv[0]);
            return o == 'h' ? 0 : 64;
        }
    }
    if (cfg.url == NULL || cfg.token == NULL || (ch.conv[0] && ch.to[0])) {
        usage(argv[0]);
        return 64;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    cfg.on_state = on_state;
    cfg.on_message = on_message;
    cfg.on_receipt = on_receipt;
    cfg.on_presence = on_presence;
    cfg.on_typing = on_typing;
    cfg.on_error = on_error;
    cfg.arg = &ch;
    int rc = sb_client_create(&cfg, &ch.client);
    if (rc < 0) {
        fprintf(stderr, "sbchat: %s\n", strerror(-rc));
        return 64;
    }
    size_t len = 0;
    bool has_input = true;
    time_t quit_by = 0;
    /* At the end of input, wait (a little) for the ACKs of what was sent. */
    while (!ch.is_quitting || (ch.pending > 0 && time(NULL) < quit_by)) {
        struct pollfd pfd[2] = {{.fd = sb_client_fd(ch.client), .events = POLLIN},
                                {.fd = STDIN_FILENO, .events = POLLIN}};
        int timeout = sb_client_timeout_ms(ch.client);
        poll(pfd, has_input && !ch.is_quitting ? 2 : 1,
             timeout < 0 || timeout > 1000 ? 1000 : timeout);
        if (has_input && !ch.is_quitting && (pfd[1].revents & (POLLIN | POLLHUP))) {
            has_input = read_input(&ch, buf, &len);
            if (!has_input) {
                ch.is_quitting = true;
            }
        }
        if (ch.is_quitting && quit_by == 0) {
            quit_by = time(NULL) + 5;
        }
        sb_client_process(ch.client);
    }
    sb_client_free(ch.client);
    return 0;
}
