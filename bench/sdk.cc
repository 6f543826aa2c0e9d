/*
 * What libswitchboard costs per message, next to the bare codec doing the same encode and
 * decode (the peer): the ratio is the SDK's own overhead (request bookkeeping, the ordering
 * table, the public structs and callbacks).
 *
 * One iteration = one message each way: SEND encoded, its ACK decoded and completed, and a
 * MESSAGE from someone else decoded, ordered and delivered. The SDK case drives a real client
 * through its socket-less hooks (sdk/src/sdk_hooks.h); frames are built once and only their
 * request id and seq are patched per iteration. `bench/run sdk` is not needed: run
 * `switchboard-sdk-bench` with the usual google-benchmark flags.
 */
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "proto/binproto.h"
#include "sdk_hooks.h"
#include "switchboard.h"
}

namespace
{

const char kConv[] = "dm:alice:bob";

std::vector<uint8_t> encode(const struct sb_op &op)
{
    std::vector<uint8_t> out(static_cast<size_t>(sb_binproto_size(&op)));
    sb_binproto_encode(&op, out.data(), out.size());
    return out;
}

void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = static_cast<uint8_t>(v >> 24);
    p[1] = static_cast<uint8_t>(v >> 16);
    p[2] = static_cast<uint8_t>(v >> 8);
    p[3] = static_cast<uint8_t>(v);
}

void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, static_cast<uint32_t>(v >> 32));
    put_be32(p + 4, static_cast<uint32_t>(v));
}

/* Request id at frame offset 8; ACK and MESSAGE both start with msg_id then seq (offset 20). */
void patch(std::vector<uint8_t> &frame, uint32_t request_id, uint64_t seq)
{
    put_be32(frame.data() + 8, request_id);
    put_be64(frame.data() + 20, seq);
}

std::vector<uint8_t> ack_frame()
{
    struct sb_op op = {};
    op.type = SB_OP_ACK;
    op.u.ack.msg_id = 541735948517376000ULL;
    op.u.ack.seq = 1;
    op.u.ack.ts_ms = 1795318161234ULL;
    op.u.ack.client_id = sb_slice_from("sdk-0123456789abcdef-1", 22);
    op.u.ack.conv = sb_slice_from(kConv, sizeof(kConv) - 1);
    return encode(op);
}

std::vector<uint8_t> message_frame(const std::string &body)
{
    struct sb_op op = {};
    op.type = SB_OP_MESSAGE;
    op.u.message.msg_id = 541735948517376001ULL;
    op.u.message.seq = 2;
    op.u.message.ts_ms = 1795318161235ULL;
    op.u.message.conv = sb_slice_from(kConv, sizeof(kConv) - 1);
    op.u.message.from = sb_slice_from("bob", 3);
    op.u.message.device = sb_slice_from("phone", 5);
    op.u.message.body.data = sb_slice_from(body.data(), body.size());
    return encode(op);
}

void BM_codec_message_roundtrip(benchmark::State &state)
{
    const std::string body(static_cast<size_t>(state.range(0)), 'x');
    std::vector<uint8_t> ack = ack_frame();
    std::vector<uint8_t> msg = message_frame(body);
    std::vector<uint8_t> out(body.size() + 256);
    uint64_t seq = 1;
    for (auto _ : state) {
        struct sb_op send = {};
        send.type = SB_OP_SEND;
        send.request_id = static_cast<uint32_t>(seq);
        send.u.send.client_id = sb_slice_from("sdk-0123456789abcdef-1", 22);
        send.u.send.to = sb_slice_from("bob", 3);
        send.u.send.body.data = sb_slice_from(body.data(), body.size());
        ssize_t n = sb_binproto_encode(&send, out.data(), out.size());
        benchmark::DoNotOptimize(n);
        patch(ack, static_cast<uint32_t>(seq), seq * 2 - 1);
        patch(msg, 0, seq * 2);
        struct sb_binproto_header hdr;
        struct sb_op a, m;
        benchmark::DoNotOptimize(sb_binproto_decode(ack.data(), ack.size(), 0, &hdr, &a));
        benchmark::DoNotOptimize(sb_binproto_decode(msg.data(), msg.size(), 0, &hdr, &m));
        benchmark::DoNotOptimize(m);
        seq++;
    }
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(2 * body.size()));
}
BENCHMARK(BM_codec_message_roundtrip)->Arg(16)->Arg(1024);

struct counts {
    int64_t acks = 0, messages = 0;
};

void on_message(struct sb_client *, const struct sb_client_message *m, void *arg)
{
    static_cast<counts *>(arg)->messages++;
    benchmark::DoNotOptimize(m->body);
}

void on_ack(struct sb_client *, int status, const struct sb_client_ack *,
            const struct sb_client_error *, void *arg)
{
    static_cast<counts *>(arg)->acks += status == 0;
}

void BM_sdk_message_roundtrip(benchmark::State &state)
{
    const std::string body(static_cast<size_t>(state.range(0)), 'x');
    std::vector<uint8_t> ack = ack_frame();
    std::vector<uint8_t> msg = message_frame(body);
    counts n;
    struct sb_client_config cfg;
    sb_client_config_init(&cfg);
    cfg.url = "tcp://127.0.0.1:7000";
    cfg.token = "t";
    cfg.on_message = on_message;
    cfg.arg = &n;
    struct sb_client *c = nullptr;
    if (sb_client_create(&cfg, &c) != 0) {
        state.SkipWithError("sb_client_create failed");
        return;
    }
    sb__client_hook_ready(c);
    /* Request ids count from 1 in a client that has sent nothing else. */
    uint64_t seq = 1;
    for (auto _ : state) {
        sb_client_send(c, nullptr, "bob", body.data(), body.size(), nullptr, on_ack, &n);
        sb__client_hook_output(c, nullptr, 0);
        patch(ack, static_cast<uint32_t>(seq), seq * 2 - 1);
        sb__client_hook_feed(c, ack.data(), ack.size());
        patch(msg, 0, seq * 2);
        sb__client_hook_feed(c, msg.data(), msg.size());
        seq++;
    }
    if (n.acks != state.iterations() || n.messages != state.iterations()) {
        state.SkipWithError("the client did not complete every send and deliver every message");
    }
    sb_client_free(c);
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(2 * body.size()));
}
BENCHMARK(BM_sdk_message_roundtrip)->Arg(16)->Arg(1024);

} // namespace

BENCHMARK_MAIN();
