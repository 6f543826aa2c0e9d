/*
 * A libswitchboard client that tests drive through stdin and read through stdout, one line
 * each way (tests/integration/test_sdk.py starts it against a real server).
 *
 *   sdk_driver --url URL --token T [--device D] [--thread] [--sync-new]
 *              [--ca FILE] [--server-name NAME] [--insecure]
 *   sdk_driver --url URL --token T --stress N --peer-token T2 --users U:U2
 *       (two clients with their own loop threads, and two threads sending N each to the other)
 *
 * Commands (stdin): send CONV|- TO|- CLIENT_ID|- BODY... | sendn TO COUNT PREFIX | mark CONV SEQ
 * read|delivered | typing CONV | sub USER... | unsub USER... | create NAME USER... | add|remove|
 * promote|demote CONV USER... | leave CONV | rename CONV NAME | get CONV | list | sync CONV |
 * pos CONV | setpos CONV SEQ | quit.
 * Events (stdout): state NAME ERR | msg CONV SEQ FROM SYSTEM BODY | ack CID CONV SEQ DUP |
 * senderr CID STATUS | receipt CONV USER KIND SEQ | presence USER STATUS | typing CONV USER |
 * behind CONV SEQ | goaway MS | error CODE CONV MESSAGE | conv STATUS CONV NAME OWNER MEMBERS |
 * convs STATUS CONV... | pos CONV SEQ|none | rc CMD RC (for a command that failed to start).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <switchboard.h>

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&out_lock);
    vprintf(fmt, ap);
    putchar('\n');
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    va_end(ap);
}

static const char *state_name(int s)
{
    switch (s) {
    case SB_CLIENT_STATE_CONNECTING:
        return "connecting";
    case SB_CLIENT_STATE_CONNECTED:
        return "connected";
    case SB_CLIENT_STATE_DISCONNECTED:
        return "disconnected";
    default:
        return "failed";
    }
}

static void on_state(struct sb_client *c, int state, int err, const struct sb_client_session *s,
                     void *arg)
{
    if (state == SB_CLIENT_STATE_CONNECTED) {
        out("state connected %s %s %u", s->user, s->device, s->max_body);
    } else {
        out("state %s %d", state_name(state), err);
    }
}

static void on_message(struct sb_client *c, const struct sb_client_message *m, void *arg)
{
    out("msg %s %" PRIu64 " %s %d %.*s", m->conv, m->seq, m->from, m->system, (int)m->body_len,
        (const char *)m->body);
}

static void on_receipt(struct sb_client *c, const struct sb_client_receipt *r, void *arg)
{
    out("receipt %s %s %s %" PRIu64, r->conv, r->user,
        r->kind == SB_CLIENT_RECEIPT_READ ? "read" : "delivered", r->seq);
}

static void on_presence(struct sb_client *c, const struct sb_client_presence *p, void *arg)
{
    out("presence %s %s", p->user, p->status == SB_CLIENT_PRESENCE_ONLINE ? "online" : "offline");
}

static void on_typing(struct sb_client *c, const struct sb_client_typing *t, void *arg)
{
    out("typing %s %s", t->conv, t->user);
}

static void on_behind(struct sb_client *c, const char *conv, uint64_t seq, void *arg)
{
    out("behind %s %" PRIu64, conv, seq);
}

static void on_goaway(struct sb_client *c, uint32_t ms, const char *reason, void *arg)
{
    out("goaway %u", ms);
}

static void on_error(struct sb_client *c, const struct sb_client_error *e, void *arg)
{
    out("error %s %s %s", sb_client_err_name(e->code), e->conv[0] ? e->conv : "-", e->message);
}

static void on_ack(struct sb_client *c, int status, const struct sb_client_ack *a,
                   const struct sb_client_error *e, void *arg)
{
    if (status == 0) {
        out("ack %s %s %" PRIu64 " %d", a->client_id, a->conv, a->seq, a->is_duplicate);
    } else {
        out("senderr %s %d", (const char *)arg, status);
    }
    free(arg);
}

static void on_conv(struct sb_client *c, int status, const struct sb_client_conv *cv,
                    const struct sb_client_error *e, void *arg)
{
    if (status != 0) {
        out("conv %d", status);
        return;
    }
    char members[4096] = "";
    size_t n = 0;
    for (size_t i = 0; i < cv->n_members && n < sizeof(members) - 70; i++) {
        n += (size_t)snprintf(members + n, sizeof(members) - n, "%s%s", i ? "," : "",
                              cv->members[i]);
    }
    out("conv 0 %s %s %s %s", cv->conv, cv->name[0] ? cv->name : "-",
        cv->owner[0] ? cv->owner : "-", members);
}

static void on_convs(struct sb_client *c, int status, const struct sb_client_conv *v, size_t n,
                     const struct sb_client_error *e, void *arg)
{
    char line[8192];
    size_t len = (size_t)snprintf(line, sizeof(line), "convs %d", status);
    for (size_t i = 0; i < n && len < sizeof(line) - 200; i++) {
        len += (size_t)snprintf(line + len, sizeof(line) - len, " %s:%" PRIu64, v[i].conv,
                                v[i].last_seq);
    }
    out("%s", line);
}

static const char *dash(const char *s)
{
    return s == NULL || strcmp(s, "-") == 0 ? NULL : s;
}

/* Runs one command line; returns false for quit. */
static bool command(struct sb_client *c, char *line)
{
    char *save = NULL;
    char *cmd = strtok_r(line, " ", &save);
    const char *w[1100];
    size_t n = 0;
    char *rest = save; /* the text after the command, for bodies */
    if (cmd == NULL) {
        return true;
    }
    if (strcmp(cmd, "quit") == 0) {
        return false;
    }
    int rc = 0;
    if (strcmp(cmd, "send") == 0) {
        char *conv = strtok_r(NULL, " ", &save), *to = strtok_r(NULL, " ", &save);
        char *cid = strtok_r(NULL, " ", &save);
        const char *body = save != NULL ? save : "";
        if (conv == NULL || to == NULL || cid == NULL) {
            rc = -EINVAL;
        } else {
            char *arg = strdup(cid);
            rc =
                sb_client_send(c, dash(conv), dash(to), body, strlen(body), dash(cid), on_ack, arg);
            if (rc != 0) {
                free(arg); /* no completion follows a refused call */
            }
        }
    } else if (strcmp(cmd, "sendn") == 0) {
        char *to = strtok_r(NULL, " ", &save), *count = strtok_r(NULL, " ", &save);
        char *prefix = strtok_r(NULL, " ", &save);
        for (long i = 0; to && count && prefix && i < atol(count) && rc == 0; i++) {
            char body[128];
            snprintf(body, sizeof(body), "%s-%ld", prefix, i);
            char *arg = strdup(body);
            rc = sb_client_send(c, NULL, to, body, strlen(body), NULL, on_ack, arg);
            if (rc != 0) {
                free(arg);
            }
        }
    } else {
        for (char *t; n < 1100 && (t = strtok_r(NULL, " ", &save)) != NULL;) {
            w[n++] = t;
        }
        (void)rest;
        if (strcmp(cmd, "mark") == 0 && n == 3) {
            rc = sb_client_mark(c, w[0], strtoull(w[1], NULL, 10),
                                strcmp(w[2], "read") == 0 ? SB_CLIENT_RECEIPT_READ
                                                          : SB_CLIENT_RECEIPT_DELIVERED);
        } else if (strcmp(cmd, "typing") == 0 && n == 1) {
            rc = sb_client_typing(c, w[0]);
        } else if (strcmp(cmd, "sub") == 0) {
            rc = sb_client_presence_subscribe(c, w, n);
        } else if (strcmp(cmd, "unsub") == 0) {
            rc = sb_client_presence_unsubscribe(c, w, n);
        } else if (strcmp(cmd, "create") == 0 && n >= 1) {
            rc = sb_client_conv_create(c, w[0], w + 1, n - 1, on_conv, NULL);
        } else if (strcmp(cmd, "add") == 0 && n >= 1) {
            rc = sb_client_conv_add(c, w[0], w + 1, n - 1, on_conv, NULL);
        } else if (strcmp(cmd, "remove") == 0 && n >= 1) {
            rc = sb_client_conv_remove(c, w[0], w + 1, n - 1, on_conv, NULL);
        } else if (strcmp(cmd, "promote") == 0 && n >= 1) {
            rc = sb_client_conv_promote(c, w[0], w + 1, n - 1, on_conv, NULL);
        } else if (strcmp(cmd, "demote") == 0 && n >= 1) {
            rc = sb_client_conv_demote(c, w[0], w + 1, n - 1, on_conv, NULL);
        } else if (strcmp(cmd, "leave") == 0 && n == 1) {
            rc = sb_client_conv_leave(c, w[0], on_conv, NULL);
        } else if (strcmp(cmd, "rename") == 0 && n == 2) {
            rc = sb_client_conv_rename(c, w[0], w[1], on_conv, NULL);
        } else if (strcmp(cmd, "get") == 0 && n == 1) {
            rc = sb_client_conv_get(c, w[0], on_conv, NULL);
        } else if (strcmp(cmd, "list") == 0) {
            rc = sb_client_conv_list(c, on_convs, NULL);
        } else if (strcmp(cmd, "sync") == 0 && n == 1) {
            rc = sb_client_sync(c, w[0]);
        } else if (strcmp(cmd, "pos") == 0 && n == 1) {
            uint64_t seq;
            if (sb_client_position_get(c, w[0], &seq) == 0) {
                out("pos %s %" PRIu64, w[0], seq);
            } else {
                out("pos %s none", w[0]);
            }
        } else if (strcmp(cmd, "setpos") == 0 && n == 2) {
            rc = sb_client_position_set(c, w[0], strtoull(w[1], NULL, 10));
        } else {
            rc = -EINVAL;
        }
    }
    if (rc != 0) {
        out("rc %s %d", cmd, rc);
    }
    return true;
}

/* Reads stdin lines; returns false at quit or end of input. */
static bool read_commands(struct sb_client *c, char *buf, size_t cap, size_t *len)
{
    ssize_t n = read(STDIN_FILENO, buf + *len, cap - 1 - *len);
    if (n <= 0) {
        return n < 0 && errno == EINTR;
    }
    *len += (size_t)n;
    char *start = buf, *nl;
    bool go = true;
    while (go && (nl = memchr(start, '\n', *len - (size_t)(start - buf))) != NULL) {
        *nl = '\0';
        go = command(c, start);
        start = nl + 1;
    }
    *len -= (size_t)(start - buf);
    memmove(buf, start, *len);
    return go && *len < cap - 1;
}

/* ---- stress: two clients, each with its loop thread, and two threads sending ---- */

struct stress_side {
    struct sb_client *client;
    const char *peer;
    long n;
    pthread_mutex_t lock;
    long acks, got, errors;
    long server_errors, behinds, drops; /* what else happened, for a failure's report */
    bool is_connected;
    uint64_t last_seq; /* the last seq delivered: each next one must be above it */
};

static void stress_ack(struct sb_client *c, int status, const struct sb_client_ack *a,
                       const struct sb_client_error *e, void *arg)
{
    struct stress_side *s = arg;
    pthread_mutex_lock(&s->lock);
    if (status == 0) {
        s->acks++;
    } else {
        s->errors++;
    }
    pthread_mutex_unlock(&s->lock);
}

static void stress_msg(struct sb_client *c, const struct sb_client_message *m, void *arg)
{
    struct stress_side *s = arg;
    pthread_mutex_lock(&s->lock);
    /* Both send in the same conversation: a side sees the other's seqs, in order, once. */
    if (m->seq <= s->last_seq || strncmp((const char *)m->body, "stress-", 7) != 0) {
        s->errors++;
        if (s->errors < 10) {
            out("stress order: %s seq %" PRIu64 " after %" PRIu64, m->conv, m->seq, s->last_seq);
        }
    }
    s->last_seq = m->seq;
    s->got++;
    pthread_mutex_unlock(&s->lock);
}

static void stress_error(struct sb_client *c, const struct sb_client_error *e, void *arg)
{
    struct stress_side *s = arg;
    pthread_mutex_lock(&s->lock);
    s->server_errors++;
    pthread_mutex_unlock(&s->lock);
    out("stress error %s %s %s", sb_client_err_name(e->code), e->conv, e->message);
}

static void stress_behind(struct sb_client *c, const char *conv, uint64_t seq, void *arg)
{
    struct stress_side *s = arg;
    pthread_mutex_lock(&s->lock);
    s->behinds++;
    pthread_mutex_unlock(&s->lock);
}

static void stress_state(struct sb_client *c, int state, int err,
                         const struct sb_client_session *session, void *arg)
{
    struct stress_side *s = arg;
    pthread_mutex_lock(&s->lock);
    s->drops += state == SB_CLIENT_STATE_DISCONNECTED;
    s->is_connected = s->is_connected || state == SB_CLIENT_STATE_CONNECTED;
    pthread_mutex_unlock(&s->lock);
}

static void *stress_sender(void *arg)
{
    struct stress_side *s = arg;
    for (long i = 0; i < s->n;) {
        char body[64];
        snprintf(body, sizeof(body), "stress-%ld", i);
        int rc = sb_client_send(s->client, NULL, s->peer, body, strlen(body), NULL, stress_ack, s);
        if (rc == -ENOBUFS) {
            usleep(1000);
            continue;
        }
        if (rc != 0) {
            pthread_mutex_lock(&s->lock);
            s->errors++;
            pthread_mutex_unlock(&s->lock);
        }
        i++;
    }
    return NULL;
}

static int stress(struct sb_client_config *cfg, const char *peer_token, char *users, long n)
{
    struct stress_side sides[2];
    const char *tokens[2] = {cfg->token, peer_token};
    memset(sides, 0, sizeof(sides));
    for (int i = 0; i < 2; i++) {
        pthread_mutex_init(&sides[i].lock, NULL);
        sides[i].n = n;
        cfg->token = tokens[i];
        cfg->on_message = stress_msg;
        cfg->on_state = stress_state;
        cfg->on_error = stress_error;
        cfg->on_behind = stress_behind;
        cfg->arg = &sides[i];
        if (sb_client_create(cfg, &sides[i].client) != 0 || sb_client_start(sides[i].client) != 0) {
            return 2;
        }
    }
    /* Each sends to the other user: users is "USER0:USER1", the users of the two tokens. */
    char *colon = users != NULL ? strchr(users, ':') : NULL;
    if (colon == NULL) {
        return 64;
    }
    *colon = '\0';
    sides[0].peer = colon + 1;
    sides[1].peer = users;
    /* Both online first: a client that connects later starts after what was sent before. */
    for (int tries = 0; tries < 1000; tries++) {
        bool up = true;
        for (int i = 0; i < 2; i++) {
            pthread_mutex_lock(&sides[i].lock);
            up = up && sides[i].is_connected;
            pthread_mutex_unlock(&sides[i].lock);
        }
        if (up) {
            break;
        }
        usleep(10000);
    }
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&th[i], NULL, stress_sender, &sides[i]);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }
    time_t deadline = time(NULL) + 150; /* TSan is slow, and sends are rate limited */
    bool done = false;
    while (!done && time(NULL) < deadline) {
        usleep(20000);
        done = true;
        for (int i = 0; i < 2; i++) {
            pthread_mutex_lock(&sides[i].lock);
            done = done && sides[i].acks + sides[i].errors >= n && sides[i].got >= n;
            pthread_mutex_unlock(&sides[i].lock);
        }
    }
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        sb_client_stop(sides[i].client);
        out("stress %d acks %ld got %ld errors %ld", i, sides[i].acks, sides[i].got,
            sides[i].errors);
        out("stress %d last_seq %" PRIu64 " server_errors %ld behind %ld disconnects %ld", i,
            sides[i].last_seq, sides[i].server_errors, sides[i].behinds, sides[i].drops);
        if (sides[i].acks != n || sides[i].got != n || sides[i].errors != 0) {
            rc = 1;
        }
        sb_client_free(sides[i].client);
    }
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},        {"token", required_argument, NULL, 't'},
        {"device", required_argument, NULL, 'd'},     {"thread", no_argument, NULL, 'T'},
        {"sync-new", no_argument, NULL, 'S'},         {"stress", required_argument, NULL, 's'},
        {"peer-token", required_argument, NULL, 'p'}, {"users", required_argument, NULL, 'U'},
        {"ca", required_argument, NULL, 'c'},         {"server-name", required_argument, NULL, 'n'},
        {"insecure", no_argument, NULL, 'k'},         {NULL, 0, NULL, 0},
    };
    struct sb_client_config cfg;
    sb_client_config_init(&cfg);
    cfg.reconnect_base_ms = 50;
    cfg.reconnect_max_ms = 500;
    bool use_thread = false;
    long stress_n = 0;
    const char *peer_token = NULL;
    char *users = NULL;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'u':
            cfg.url = optarg;
            break;
        case 't':
            cfg.token = optarg;
            break;
        case 'd':
            cfg.device = optarg;
            break;
        case 'T':
            use_thread = true;
            break;
        case 'S':
            cfg.sync_new_convs = true;
            break;
        case 's':
            stress_n = atol(optarg);
            break;
        case 'p':
            peer_token = optarg;
            break;
        case 'U':
            users = optarg;
            break;
        case 'c':
            cfg.ca_file = optarg;
            break;
        case 'n':
            cfg.server_name = optarg;
            break;
        case 'k':
            cfg.insecure = true;
            break;
        default:
            return 64;
        }
    }
    if (stress_n > 0) {
        return stress(&cfg, peer_token, users, stress_n);
    }
    cfg.on_state = on_state;
    cfg.on_message = on_message;
    cfg.on_receipt = on_receipt;
    cfg.on_presence = on_presence;
    cfg.on_typing = on_typing;
    cfg.on_behind = on_behind;
    cfg.on_goaway = on_goaway;
    cfg.on_error = on_error;
    struct sb_client *c;
    int rc = sb_client_create(&cfg, &c);
    if (rc != 0) {
        out("rc create %d", rc);
        return 64;
    }
    static char buf[1 << 20];
    size_t len = 0;
    if (use_thread) {
        sb_client_start(c);
        while (read_commands(c, buf, sizeof(buf), &len)) {
        }
    } else {
        bool go = true;
        while (go) {
            struct pollfd pfd[2] = {{.fd = sb_client_fd(c), .events = POLLIN},
                                    {.fd = STDIN_FILENO, .events = POLLIN}};
            poll(pfd, 2, sb_client_timeout_ms(c));
            if (pfd[1].revents & (POLLIN | POLLHUP)) {
                go = read_commands(c, buf, sizeof(buf), &len);
            }
            sb_client_process(c);
        }
    }
    sb_client_free(c);
    out("bye");
    return 0;
}
