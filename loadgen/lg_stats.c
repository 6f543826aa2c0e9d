#include "loadgen/lg_stats.h"

#include <errno.h>
#include <string.h>

#include "loadgen/lg_wire.h"

#define STATS_MAGIC 0x3153474cu /* "LGS1" */

const struct lg_counter_info lg_counter_info[LG_C_COUNT] = {
    [LG_C_ATTEMPTED] = {"attempted", "connection attempts started"},
    [LG_C_ESTABLISHED] = {"established",
                          "handshakes completed (HTTP 101, accept key checked; bin, ws-bin: "
                          "WELCOME)"},
    [LG_C_FAIL_REFUSED] = {"refused", "connect failed: connection refused (nothing listening)"},
    [LG_C_FAIL_TIMEOUT] = {"timeout", "connect or handshake did not finish within --timeout"},
    [LG_C_FAIL_STATUS] = {"handshake_status",
                          "the server answered the upgrade with non-101 (bin: HELLO refused "
                          "as unauthorized, shown as 401)"},
    [LG_C_FAIL_HANDSHAKE] = {"handshake_invalid",
                             "malformed 101 response or wrong accept key (ws-bin: no "
                             "switchboard.v1; bin, ws-bin: no WELCOME)"},
    [LG_C_FAIL_RESET] = {"reset", "reset or closed by the server before the handshake ended"},
    [LG_C_FAIL_FDLIMIT] = {"fd_limit", "socket() failed with EMFILE/ENFILE"},
    [LG_C_FAIL_PORTS] = {"no_ports", "EADDRNOTAVAIL: ephemeral ports exhausted"},
    [LG_C_FAIL_UNREACHABLE] = {"unreachable", "network or host unreachable"},
    [LG_C_FAIL_OTHER] = {"other", "any other error (see errno_sample)"},
    [LG_C_CLOSED_BY_SERVER] = {"closed_by_server", "established, then a close frame came"},
    [LG_C_DROPPED] = {"dropped", "established, then reset or EOF without a close frame"},
    [LG_C_PROTO_ERRORS] =
        {"protocol_errors",
         "server frames that broke RFC 6455 (bin, ws-bin: or the binary protocol)"},
    [LG_C_OPEN_AT_END] = {"open_at_end", "connections still open when the run ended"},
    [LG_C_PEAK_OPEN] = {"peak_open", "most connections open at once (sum of worker peaks)"},
    [LG_C_PINGS] = {"pings_answered", "server pings answered with a pong (or PONG frame)"},
    [LG_C_MSGS_SENT] = {"messages_sent", "data messages sent"},
    [LG_C_MSGS_RECV] = {"messages_received", "data messages received"},
    [LG_C_BYTES_SENT] = {"bytes_sent", "payload bytes sent"},
    [LG_C_BYTES_RECV] = {"bytes_received", "payload bytes received"},
    [LG_C_MISMATCHED] =
        {"mismatched",
         "echoes with a wrong opcode, length or sequence (bin: PONG request id, data)"},
    [LG_C_LOST] = {"lost", "messages sent but never answered"},
    [LG_C_LATE] = {"late_sends", "latency, chat: sends more than 1 ms behind their schedule"},
    [LG_C_ACKS] = {"acks", "chat, fanout: sends acked by the server"},
    [LG_C_EXPECTED] = {"deliveries_expected",
                       "chat, fanout: deliveries due (online members but the sender, per send)"},
    [LG_C_SERVER_ERRORS] = {"server_errors", "chat, fanout: error answers from the server"},
    [LG_C_GROUPS] = {"groups", "chat, fanout: groups created before the run"},
    [LG_C_BEHIND] = {"behind_notices",
                     "chat, fanout: `behind` from the server (a device's queue was full)"},
};

const char *const lg_hist_names[LG_H_COUNT] = {
    [LG_H_CONNECT] = "connect", [LG_H_HANDSHAKE] = "handshake",
    [LG_H_LATENCY] = "latency", [LG_H_LAST] = "last_member",
    [LG_H_ACK] = "ack",
};

uint64_t lg_stats_failed(const struct lg_stats *s)
{
    uint64_t n = 0;
    for (int i = LG_C_FAIL_FIRST; i <= LG_C_FAIL_LAST; i++)
        n += s->c[i];
    return n;
}

void lg_stats_merge(struct lg_stats *dst, const struct lg_stats *src)
{
    for (int i = 0; i < LG_C_COUNT; i++)
        dst->c[i] += src->c[i];
    if (src->ramp_ns > dst->ramp_ns)
        dst->ramp_ns = src->ramp_ns;
    if (src->run_ns > dst->run_ns)
        dst->run_ns = src->run_ns;
    dst->send_rate += src->send_rate;
    dst->msg_rate += src->msg_rate;
    dst->byte_rate += src->byte_rate;
    if (dst->status_sample == 0)
        dst->status_sample = src->status_sample;
    if (dst->errno_sample == 0)
        dst->errno_sample = src->errno_sample;
    for (int i = 0; i < LG_H_COUNT; i++)
        lg_hist_merge(&dst->h[i], &src->h[i]);
}

/* Rates travel as their bit patterns: exact, and no text formatting on the way. */
static uint64_t double_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double bits_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

#define STATS_FIXED (4 + 4 + LG_C_COUNT * 8 + 5 * 8 + 2 * 4)

size_t lg_stats_serialized_max(void)
{
    return STATS_FIXED + LG_H_COUNT * LG_HIST_SERIALIZED_MAX;
}

ssize_t lg_stats_serialize(const struct lg_stats *s, uint8_t *out, size_t cap)
{
    if (cap < STATS_FIXED)
        return -ENOSPC;
    uint8_t *p = lg_wire_put32(out, STATS_MAGIC);
    p = lg_wire_put32(p, LG_C_COUNT);
    for (int i = 0; i < LG_C_COUNT; i++)
        p = lg_wire_put64(p, s->c[i]);
    p = lg_wire_put64(p, s->ramp_ns);
    p = lg_wire_put64(p, s->run_ns);
    p = lg_wire_put64(p, double_bits(s->send_rate));
    p = lg_wire_put64(p, double_bits(s->msg_rate));
    p = lg_wire_put64(p, double_bits(s->byte_rate));
    p = lg_wire_put32(p, (uint32_t)s->status_sample);
    p = lg_wire_put32(p, (uint32_t)s->errno_sample);
    for (int i = 0; i < LG_H_COUNT; i++) {
        ssize_t n = lg_hist_serialize(&s->h[i], p, cap - (size_t)(p - out));
        if (n < 0)
            return n;
        p += n;
    }
    return (ssize_t)(p - out);
}

ssize_t lg_stats_deserialize(struct lg_stats *s, const uint8_t *in, size_t len)
{
    if (len < STATS_FIXED || lg_wire_get32(in) != STATS_MAGIC ||
        lg_wire_get32(in + 4) != LG_C_COUNT)
        return -EBADMSG;
    const uint8_t *p = in + 8;
    for (int i = 0; i < LG_C_COUNT; i++, p += 8)
        s->c[i] = lg_wire_get64(p);
    s->ramp_ns = lg_wire_get64(p);
    s->run_ns = lg_wire_get64(p + 8);
    s->send_rate = bits_double(lg_wire_get64(p + 16));
    s->msg_rate = bits_double(lg_wire_get64(p + 24));
    s->byte_rate = bits_double(lg_wire_get64(p + 32));
    s->status_sample = (int32_t)lg_wire_get32(p + 40);
    s->errno_sample = (int32_t)lg_wire_get32(p + 44);
    p += 48;
    for (int i = 0; i < LG_H_COUNT; i++) {
        ssize_t n = lg_hist_deserialize(&s->h[i], p, len - (size_t)(p - in));
        if (n < 0)
            return n;
        p += n;
    }
    return (ssize_t)(p - in);
}

void lg_live_add(struct lg_live_snapshot *sum, const struct lg_live_snapshot *one, bool first)
{
    if (first) {
        *sum = *one;
        return;
    }
    for (int i = 0; i < LG_L_COUNT; i++) {
        if (i == LG_L_PHASE)
            sum->v[i] = one->v[i] < sum->v[i] ? one->v[i] : sum->v[i];
        else
            sum->v[i] += one->v[i];
    }
}

void lg_live_read(struct lg_live *live, struct lg_live_snapshot *out)
{
    for (int i = 0; i < LG_L_COUNT; i++)
        out->v[i] = atomic_load_explicit(&live->v[i], memory_order_relaxed);
}
