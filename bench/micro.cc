/*
 * Microbenchmarks of the proto/ codecs on the data path: WebSocket frame headers, unmasking,
 * UTF-8 validation and HTTP request-head parsing.
 *
 * Inputs are fixed and realistic (what a browser or loadgen actually sends) and are built once,
 * outside the timed loops. Every case reports bytes or items per second, so a result reads as
 * throughput; bench/run micro records the JSON. Run it directly with the usual google-benchmark
 * flags, e.g. `switchboard-micro --benchmark_filter=utf8`.
 */
#include <benchmark/benchmark.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "proto/http.h"
#include "proto/utf8.h"
#include "proto/ws.h"
}

namespace
{

const uint8_t kMask[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Fails the run loudly: a benchmark of a codec that rejects its input measures nothing. */
void require(benchmark::State &state, bool ok, const char *what)
{
    if (!ok) {
        state.SkipWithError(what);
    }
}

/* A masked client frame header as loadgen or a browser sends it, for each length form. */
std::vector<uint8_t> client_header(uint64_t payload_len)
{
    uint8_t out[SB_WS_MAX_HEADER];
    size_t n = sb_ws_encode_header(out, true, SB_WS_BINARY, payload_len, kMask);
    return std::vector<uint8_t>(out, out + n);
}

void BM_ws_decode_header(benchmark::State &state)
{
    const uint64_t payload_len = static_cast<uint64_t>(state.range(0));
    const std::vector<uint8_t> hdr = client_header(payload_len);
    const struct sb_ws_decode_opts opts = {true, false, 0, 16u << 20};
    struct sb_ws_frame frame;
    for (auto _ : state) {
        ssize_t n = sb_ws_decode_header(hdr.data(), hdr.size(), &opts, &frame);
        benchmark::DoNotOptimize(n);
        benchmark::DoNotOptimize(frame);
    }
    require(state,
            sb_ws_decode_header(hdr.data(), hdr.size(), &opts, &frame) ==
                static_cast<ssize_t>(hdr.size()),
            "decode failed");
    state.SetItemsProcessed(state.iterations());
    state.SetLabel(std::to_string(hdr.size()) + " B header");
}
/* 16 B: 7-bit length; 1 KiB: 16-bit length; 64 KiB: 64-bit length. */
BENCHMARK(BM_ws_decode_header)->Arg(16)->Arg(1024)->Arg(65536);

void BM_ws_encode_header(benchmark::State &state)
{
    const uint64_t payload_len = static_cast<uint64_t>(state.range(0));
    uint8_t out[SB_WS_MAX_HEADER];
    for (auto _ : state) {
        /* Server frames are unmasked: that is the encode on the echo path. */
        size_t n = sb_ws_encode_header(out, true, SB_WS_BINARY, payload_len, nullptr);
        benchmark::DoNotOptimize(n);
        benchmark::DoNotOptimize(out);
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ws_encode_header)->Arg(16)->Arg(1024)->Arg(65536);

std::vector<uint8_t> pseudo_random_bytes(size_t len)
{
    std::vector<uint8_t> v(len);
    uint32_t x = 2463534242u;
    for (auto &b : v) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b = static_cast<uint8_t>(x);
    }
    return v;
}

void BM_ws_unmask(benchmark::State &state)
{
    std::vector<uint8_t> data = pseudo_random_bytes(static_cast<size_t>(state.range(0)));
    for (auto _ : state) {
        /* In place, as the server unmasks a payload inside its receive buffer. Unmasking twice
         * restores the input, so the data stays the same across iterations. */
        uint64_t off = sb_ws_unmask(data.data(), data.size(), kMask, 0);
        benchmark::DoNotOptimize(off);
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_ws_unmask)->Arg(16)->Arg(1024)->Arg(65536);

void BM_ws_unmask_copy(benchmark::State &state)
{
    const std::vector<uint8_t> src = pseudo_random_bytes(static_cast<size_t>(state.range(0)));
    std::vector<uint8_t> dst(src.size());
    for (auto _ : state) {
        /* Masking a client frame into a send buffer, as loadgen does. */
        uint64_t off = sb_ws_unmask_copy(dst.data(), src.data(), src.size(), kMask, 0);
        benchmark::DoNotOptimize(off);
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_ws_unmask_copy)->Arg(16)->Arg(1024)->Arg(65536);

/* Chat-like ASCII text: words, punctuation and JSON-ish structure. */
std::string ascii_text(size_t len)
{
    static const char *const words[] = {
        "{\"type\":\"send\",", "\"conv\":\"c_81f2\",", "\"body\":\"see you at the station ",
        "around eight, ",      "bring the tickets",    " and the umbrella.\"}\n"};
    std::string s;
    for (size_t i = 0; s.size() < len; i++) {
        s += words[i % (sizeof words / sizeof words[0])];
    }
    s.resize(len);
    return s;
}

/*
 * Mixed text: mostly ASCII with 2-, 3- and 4-byte sequences, as in a multilingual chat
 * (accented Latin, Cyrillic, CJK, emoji). Cut at a character boundary.
 */
std::string mixed_text(size_t len)
{
    static const char *const parts[] = {
        "Grüße aus Köln, ",  "привет, как дела? ",        "今日は雨です。", "see you 🙂 ",
        "ça va très bien; ", "the meeting is at 10:30. ", "👍🏽 ok! "};
    std::string s;
    for (size_t i = 0;; i++) {
        const char *p = parts[i % (sizeof parts / sizeof parts[0])];
        if (s.size() + strlen(p) > len) {
            break;
        }
        s += p;
    }
    s.append(len - s.size(), '.');
    return s;
}

void run_utf8(benchmark::State &state, const std::string &text)
{
    const uint8_t *p = reinterpret_cast<const uint8_t *>(text.data());
    for (auto _ : state) {
        int rc = sb_utf8_validate(p, text.size());
        benchmark::DoNotOptimize(rc);
    }
    require(state, sb_utf8_validate(p, text.size()) == 0, "input is not valid UTF-8");
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(text.size()));
}

void BM_utf8_ascii(benchmark::State &state)
{
    run_utf8(state, ascii_text(static_cast<size_t>(state.range(0))));
}
BENCHMARK(BM_utf8_ascii)->Arg(1024)->Arg(65536);

void BM_utf8_mixed(benchmark::State &state)
{
    run_utf8(state, mixed_text(static_cast<size_t>(state.range(0))));
}
BENCHMARK(BM_utf8_mixed)->Arg(1024)->Arg(65536);

/* What Chromium sends to open a WebSocket (cookies and user agent included). */
const char kUpgradeRequest[] =
    "GET /echo?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1XzQyIn0.c2lnbmF0dXJl HTTP/1.1\r\n"
    "Host: chat.example.com\r\n"
    "Connection: Upgrade\r\n"
    "Pragma: no-cache\r\n"
    "Cache-Control: no-cache\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36\r\n"
    "Upgrade: websocket\r\n"
    "Origin: https://chat.example.com\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Accept-Language: en-GB,en-US;q=0.9,en;q=0.8\r\n"
    "Cookie: sid=6f1c2a9e0b7d4e55; theme=dark\r\n"
    "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    "\r\n";

/* What wrk (and curl, nearly) sends for the health check. */
const char kRestGet[] = "GET /api/health HTTP/1.1\r\n"
                        "Host: 127.0.0.1:8080\r\n"
                        "\r\n";

void run_http(benchmark::State &state, const char *req_text, size_t len)
{
    struct sb_http_request req;
    for (auto _ : state) {
        memset(&req, 0, sizeof req);
        ssize_t n = sb_http_parse_request(req_text, len, nullptr, &req);
        benchmark::DoNotOptimize(n);
        benchmark::DoNotOptimize(req);
    }
    memset(&req, 0, sizeof req);
    require(state, sb_http_parse_request(req_text, len, nullptr, &req) == static_cast<ssize_t>(len),
            "request did not parse");
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(len));
}

void BM_http_parse_upgrade(benchmark::State &state)
{
    run_http(state, kUpgradeRequest, sizeof kUpgradeRequest - 1);
}
BENCHMARK(BM_http_parse_upgrade);

void BM_http_parse_rest_get(benchmark::State &state)
{
    run_http(state, kRestGet, sizeof kRestGet - 1);
}
BENCHMARK(BM_http_parse_rest_get);

/* The upgrade as the server handles it: parse, look up the headers it checks, compute the key. */
void BM_http_upgrade_handshake(benchmark::State &state)
{
    struct sb_http_request req;
    char accept[SB_WS_ACCEPT_LEN + 1];
    for (auto _ : state) {
        memset(&req, 0, sizeof req);
        sb_http_parse_request(kUpgradeRequest, sizeof kUpgradeRequest - 1, nullptr, &req);
        const struct sb_http_header *up = sb_http_find_header(&req, "Upgrade");
        const struct sb_http_header *conn = sb_http_find_header(&req, "Connection");
        const struct sb_http_header *key = sb_http_find_header(&req, "Sec-WebSocket-Key");
        bool ok = up && conn && key && sb_http_has_token(conn->value, "upgrade") &&
                  sb_ws_accept_key(key->value.base, key->value.len, accept) == 0;
        benchmark::DoNotOptimize(ok);
        benchmark::DoNotOptimize(accept);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_http_upgrade_handshake);

} // namespace

BENCHMARK_MAIN();
