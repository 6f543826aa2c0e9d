/*
 * loadgen's --proto: what each value sets by default (the binary port, /ws), what it requires
 * (--jwt-secret, PING-sized payloads), and that ws stays as it was.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "check.h"
#include "loadgen/lg_config.h"

static int parse(struct lg_config *cfg, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"switchboard-loadgen";
    for (; args[argc - 1] && argc < 31; argc++)
        argv[argc] = (char *)args[argc - 1];
    return lg_config_parse(cfg, argc, argv);
}

static void test_defaults(void)
{
    static struct lg_config cfg;
    const char *ws[] = {"echo", NULL};
    CHECK_INT(parse(&cfg, ws), 0);
    CHECK_INT(cfg.wire, LG_WIRE_WS);
    CHECK_STR(cfg.path, "/echo");
    CHECK_INT(ntohs(cfg.targets[0].addr.sin_port), 8080);

    const char *bin[] = {"echo", "--proto", "bin", "--jwt-secret", "s", NULL};
    CHECK_INT(parse(&cfg, bin), 0);
    CHECK_INT(cfg.wire, LG_WIRE_BIN);
    CHECK_INT(ntohs(cfg.targets[0].addr.sin_port), 7000);
    CHECK_STR(cfg.targets[0].text, "127.0.0.1:7000");
    CHECK_STR(lg_wire_name(cfg.wire), "bin");

    const char *bin_target[] = {"hold", "--target", "127.0.0.1:9000", "--proto=bin", "--jwt-secret",
                                "s",    NULL};
    CHECK_INT(parse(&cfg, bin_target), 0);
    CHECK_INT(ntohs(cfg.targets[0].addr.sin_port), 9000);

    const char *wsbin[] = {"latency", "--proto", "ws-bin", "--jwt-secret", "s", NULL};
    CHECK_INT(parse(&cfg, wsbin), 0);
    CHECK_INT(cfg.wire, LG_WIRE_WS_BIN);
    CHECK_STR(cfg.path, "/ws");
    CHECK_INT(ntohs(cfg.targets[0].addr.sin_port), 8080);

    const char *wsbin_path[] = {"echo",   "--path",       "/other", "--proto",
                                "ws-bin", "--jwt-secret", "s",      NULL};
    CHECK_INT(parse(&cfg, wsbin_path), 0);
    CHECK_STR(cfg.path, "/other");

    const char *wsbin_tls[] = {"echo", "--proto", "ws-bin", "--tls", "--jwt-secret", "s", NULL};
    CHECK_INT(parse(&cfg, wsbin_tls), 0);
    CHECK(cfg.tls);
    /* The binary port's TLS twin (binary_tls_listen). */
    const char *bin_tls[] = {"echo",           "--proto",      "bin", "--tls", "--target",
                             "127.0.0.1:7443", "--jwt-secret", "s",   NULL};
    CHECK_INT(parse(&cfg, bin_tls), 0);
    CHECK(cfg.tls && cfg.wire == LG_WIRE_BIN);
}

static void test_refused(void)
{
    static struct lg_config cfg;
    const char *unknown[] = {"echo", "--proto", "json", NULL};
    CHECK_INT(parse(&cfg, unknown), -EINVAL);
    const char *no_secret[] = {"hold", "--proto", "bin", NULL};
    CHECK_INT(parse(&cfg, no_secret), -EINVAL);
    const char *no_secret_ws[] = {"echo", "--proto", "ws-bin", NULL};
    CHECK_INT(parse(&cfg, no_secret_ws), -EINVAL);
    const char *big[] = {"echo", "--proto", "bin", "--jwt-secret", "s", "--size", "16385", NULL};
    CHECK_INT(parse(&cfg, big), -EINVAL);
    const char *largest[] = {"echo", "--proto", "bin",   "--jwt-secret",
                             "s",    "--size",  "16384", NULL};
    CHECK_INT(parse(&cfg, largest), 0);
    const char *big_ws[] = {"echo", "--size", "100000", NULL};
    CHECK_INT(parse(&cfg, big_ws), 0);
}

int main(void)
{
    test_defaults();
    test_refused();
    return check_done();
}
