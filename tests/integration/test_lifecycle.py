"""Process lifecycle and resource hygiene: SIGTERM/SIGINT shutdown, 10,000 connect/disconnect
cycles without fd or memory growth, and misbehaving clients that must not stall good ones."""

import asyncio
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import unittest

import websockets

from sbtest import (BINARY, CLOSE, HOST, SB_BIN, TEXT, HttpConn, PeerClosed, RawWS, Server,
                    ServerTestCase, _die_with_parent, _result_failed, binary_is_sanitized,
                    client_socket, close_payload, encode_frame, new_key, wait_until)

GOING_AWAY = 1001


def connect(uri, **kw):
    opts = dict(max_size=None, ping_interval=None, open_timeout=10, close_timeout=5,
                compression=None)
    opts.update(kw)
    return websockets.connect(uri, **opts)


class FreshServerTest(unittest.TestCase):
    """Each test starts its own server(s); cleanup stops them and checks their logs."""

    def start_server(self, env=None, **settings):
        srv = Server(env=env, **settings)
        srv.start()
        self.addCleanup(self._finish_server, srv)
        return srv

    def _finish_server(self, srv):
        srv.stop(timeout=15)
        bad = srv.bad_log_lines(since_start=True)
        if bad or _result_failed(self):
            sys.stderr.write(f"\n--- server log tail ({srv.log_path}) ---\n{srv.log_tail()}\n")
        else:
            srv.remove_log()
        if bad:
            self.fail("server log has error/sanitizer lines:\n" + "\n".join(bad[:20]))


class ShutdownTest(FreshServerTest):
    SHUTDOWN_MS = 3000

    def shutdown_with_clients(self, signum):
        srv = self.start_server(shutdown_timeout_ms=self.SHUTDOWN_MS)

        async def ws_client(ready, results):
            async with connect(srv.uri()) as ws:
                await ws.send("hello")
                assert await asyncio.wait_for(ws.recv(), 10) == "hello"
                ready.set()
                await asyncio.wait_for(ws.wait_closed(), 15)
                results.append((ws.close_code, ws.close_reason))

        async def run():
            results = []
            readies = [asyncio.Event() for _ in range(20)]
            tasks = [asyncio.create_task(ws_client(e, results)) for e in readies]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in readies)), 20)
            raws = [RawWS(srv.port) for _ in range(5)]
            try:
                start = time.monotonic()
                srv.signal(signum)
                for i, ws in enumerate(raws):
                    f = await asyncio.to_thread(ws.read_close, 10)
                    self.assertEqual(f.close_code, GOING_AWAY, f"raw client {i}: {f!r}")
                    ws.send_close(GOING_AWAY)
                    self.assertTrue(await asyncio.to_thread(ws.closed_within, 10))
                await asyncio.wait_for(asyncio.gather(*tasks), 20)
                code = await asyncio.to_thread(srv.wait, self.SHUTDOWN_MS / 1000 + 7)
                elapsed = time.monotonic() - start
            finally:
                for ws in raws:
                    ws.close()
            self.assertEqual(sorted(r[0] for r in results), [GOING_AWAY] * 20, results)
            self.assertIsNotNone(code, "server did not exit after the signal")
            self.assertEqual(code, 0, "exit status")
            print(f"\nshutdown with 25 clients took {elapsed:.2f} s")
            # Everyone answered the close, so shutdown needs no timeout to expire.
            self.assertLess(elapsed, self.SHUTDOWN_MS / 1000 + 5)

        asyncio.run(asyncio.wait_for(run(), 60))

    def test_sigterm_closes_clients_with_1001(self):
        self.shutdown_with_clients(signal.SIGTERM)

    def test_sigint_closes_clients_with_1001(self):
        self.shutdown_with_clients(signal.SIGINT)

    def test_idle_server_exits_quickly(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=signum.name):
                srv = self.start_server()
                srv.health()
                start = time.monotonic()
                srv.signal(signum)
                self.assertEqual(srv.wait(10), 0)
                self.assertLess(time.monotonic() - start, 5)

    def test_client_that_never_answers_close(self):
        # The server may wait for the close reply, but never longer than shutdown_timeout_ms.
        srv = self.start_server(shutdown_timeout_ms=2000, close_timeout_ms=5000)
        with RawWS(srv.port) as ws:
            self.assertEqual(ws.echo(TEXT, b"x"), (TEXT, b"x"))
            start = time.monotonic()
            srv.signal(signal.SIGTERM)
            f = ws.read_close(timeout=10)
            self.assertEqual(f.close_code, GOING_AWAY)
            self.assertTrue(ws.closed_within(10), "TCP never closed")
            code = srv.wait(10)
            elapsed = time.monotonic() - start
        self.assertEqual(code, 0)
        self.assertLess(elapsed, 2.0 + 5)

    def test_stops_accepting_during_shutdown(self):
        # A stubborn client keeps the server in its shutdown phase for a while.
        srv = self.start_server(shutdown_timeout_ms=4000, close_timeout_ms=4000)
        port = srv.port
        with RawWS(port) as stubborn:
            srv.signal(signal.SIGTERM)
            self.assertEqual(stubborn.read_close(timeout=10).close_code, GOING_AWAY)
            for attempt in range(3):
                served = None
                try:
                    with HttpConn(port, timeout=2) as c:
                        c.send(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
                        try:
                            served = c.read_response(timeout=1.5).status
                        except (PeerClosed, TimeoutError):
                            served = None
                except (ConnectionRefusedError, ConnectionResetError, TimeoutError):
                    served = None
                self.assertIsNone(served, f"attempt {attempt}: new request served with {served} "
                                          "during shutdown")
        self.assertEqual(srv.wait(15), 0)

    def test_http_keepalive_client_does_not_block_shutdown(self):
        srv = self.start_server(shutdown_timeout_ms=2000)
        with HttpConn(srv.port) as c:
            c.send(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
            self.assertEqual(c.read_response().status, 200)
            start = time.monotonic()
            srv.signal(signal.SIGTERM)
            self.assertEqual(srv.wait(10), 0)
            self.assertLess(time.monotonic() - start, 2.0 + 5)


class StartupFailureTest(unittest.TestCase):
    def test_busy_port_fails_cleanly(self):
        # A port already taken: the server must report it and exit with a failure status,
        # not crash on the way out (signal, sanitizer report).
        if not SB_BIN or not os.access(SB_BIN, os.X_OK):
            self.skipTest("SB_BIN is not set")
        with socket.socket() as busy:
            busy.bind((HOST, 0))
            busy.listen()
            port = busy.getsockname()[1]
            r = subprocess.run([SB_BIN, "serve", "--listen", f"{HOST}:{port}", "--workers", "2"],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=30, preexec_fn=_die_with_parent)
        bad = [line for line in r.stderr.splitlines()
               if "Sanitizer" in line or "runtime error:" in line]
        self.assertEqual(bad, [], r.stderr[-3000:])
        self.assertGreater(r.returncode, 0, f"exit status {r.returncode}\n{r.stderr[-3000:]}")
        self.assertIn("in use", r.stderr)


# --------------------------------------------------------------------------------------------
# Connect/disconnect cycles
# --------------------------------------------------------------------------------------------

KINDS = ("clean", "mid_handshake", "after_upgrade", "rst_after_upgrade", "rst_mid_handshake",
         "connect_only", "http")


def upgrade_bytes():
    return (f"GET /echo HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {new_key()}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


async def recv_until(loop, s, pred, limit=1 << 20):
    buf = b""
    while not pred(buf):
        chunk = await loop.sock_recv(s, 65536)
        if not chunk:
            raise PeerClosed()
        buf += chunk
        if len(buf) > limit:
            raise AssertionError("too much data")
    return buf


async def recv_to_eof(loop, s):
    buf = b""
    while True:
        try:
            chunk = await loop.sock_recv(s, 65536)
        except ConnectionResetError:
            return buf
        if not chunk:
            return buf
        buf += chunk


def set_rst(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def one_cycle(loop, port, kind, rng):
    s = client_socket()
    s.setblocking(False)
    try:
        await loop.sock_connect(s, (HOST, port))
        if kind == "connect_only":
            return
        req = upgrade_bytes()
        if kind in ("mid_handshake", "rst_mid_handshake"):
            await loop.sock_sendall(s, req[:rng.randrange(1, len(req) - 4)])
            await asyncio.sleep(0)
            if kind == "rst_mid_handshake":
                set_rst(s)
            return
        if kind == "http":
            await loop.sock_sendall(s, b"GET /api/health HTTP/1.1\r\nHost: t\r\n"
                                       b"Connection: close\r\n\r\n")
            data = await recv_to_eof(loop, s)
            assert data.startswith(b"HTTP/1.1 200"), data[:100]
            return
        await loop.sock_sendall(s, req)
        head = await recv_until(loop, s, lambda b: b"\r\n\r\n" in b)
        assert head.startswith(b"HTTP/1.1 101"), head[:100]
        if kind == "clean":
            await loop.sock_sendall(s, encode_frame(TEXT, b"hello") +
                                    encode_frame(CLOSE, close_payload(1000)))
            data = head[head.index(b"\r\n\r\n") + 4:] + await recv_to_eof(loop, s)
            # The echo, then a close frame with code 1000 (a reason is allowed).
            ok = (data[:8] == b"\x81\x05hello\x88" and len(data) == 9 + data[8]
                  and data[9:11] == b"\x03\xe8")
            assert ok, f"clean close got {data!r}"
        elif kind == "after_upgrade":
            await loop.sock_sendall(s, encode_frame(BINARY, b"x" * rng.randrange(0, 3000)))
        elif kind == "rst_after_upgrade":
            await loop.sock_sendall(s, encode_frame(BINARY, b"y" * rng.randrange(0, 3000)))
            if rng.random() < 0.5:
                await asyncio.sleep(0.001)  # sometimes with the echo unread, sometimes not
            set_rst(s)
    finally:
        s.close()


async def run_cycles(port, count, concurrency=64, seed=0):
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    counter = iter(range(count))
    errors = []

    async def worker():
        for i in counter:
            kind = KINDS[i % len(KINDS)]
            try:
                await asyncio.wait_for(one_cycle(loop, port, kind, rng), 15)
            except Exception as e:  # noqa: BLE001 - collected and reported below
                errors.append(f"cycle {i} ({kind}): {type(e).__name__}: {e}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


class HygieneTest(FreshServerTest):
    WARMUP = 1000
    CYCLES = 10000
    MAX_RSS_GROWTH_KIB = 8 * 1024

    def test_connect_disconnect_cycles(self):
        env = None
        if binary_is_sanitized():
            # ASan's quarantine holds freed memory back on purpose; keep it small here so RSS
            # reflects what the server really keeps.
            opts = os.environ.get("ASAN_OPTIONS", "")
            env = {"ASAN_OPTIONS": (opts + ":" if opts else "") +
                   "quarantine_size_mb=1:thread_local_quarantine_size_kb=64"}
        srv = self.start_server(env=env)
        baseline = srv.fd_count()
        baseline_listing = srv.fd_listing()

        def settle(what):
            wait_until(lambda: srv.fd_count() <= baseline, 15)
            now = srv.fd_count()
            self.assertLessEqual(now, baseline,
                                 f"fd count after {what}: {now}, baseline {baseline}\n"
                                 f"baseline: {baseline_listing}\nnow: {srv.fd_listing()}")
            conns = wait_until(lambda: srv.health()[2]["connections"] <= 1, 10)
            self.assertTrue(conns, f"health connections after {what}: "
                                   f"{srv.health()[2]['connections']}")

        start = time.monotonic()
        errors = asyncio.run(run_cycles(srv.port, self.WARMUP, seed=1))
        self.assertEqual(errors[:10], [], f"{len(errors)} warm-up cycles failed")
        settle("warm-up")
        rss_warm = srv.rss_kib()
        t_cycles = time.monotonic()
        errors = asyncio.run(run_cycles(srv.port, self.CYCLES, seed=2))
        t_cycles = time.monotonic() - t_cycles
        self.assertEqual(errors[:10], [], f"{len(errors)} of {self.CYCLES} cycles failed")
        settle(f"{self.CYCLES} cycles")
        rss_end = srv.rss_kib()
        print(f"\nfds: baseline {baseline}, end {srv.fd_count()}; VmRSS after warm-up "
              f"{rss_warm} KiB, after {self.CYCLES} cycles {rss_end} KiB "
              f"(growth {rss_end - rss_warm} KiB); cycles took {t_cycles:.1f} s, "
              f"whole test {time.monotonic() - start:.1f} s")
        self.assertLess(rss_end - rss_warm, self.MAX_RSS_GROWTH_KIB, "VmRSS growth")
        self.assertEqual(srv.health()[0], 200)


class ConnectionLimitTest(ServerTestCase):
    LIMIT = 10
    server_settings = {"max_connections": LIMIT}

    def test_connections_over_the_limit_are_closed(self):
        clients = [RawWS(self.port) for _ in range(self.LIMIT)]
        try:
            with HttpConn(self.port) as extra:
                extra.send(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
                self.assertTrue(extra.closed_within(5), "connection over max_connections served")
            for ws in clients:  # the ones inside the limit are untouched
                self.assertEqual(ws.echo(TEXT, b"in"), (TEXT, b"in"))
            # A slot freed by a close can be used again (the count is not leaked).
            clients.pop().close()
            deadline = time.monotonic() + 5
            while True:
                try:
                    clients.append(RawWS(self.port))
                    break
                except (PeerClosed, ConnectionError, AssertionError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            self.assertEqual(clients[-1].echo(BINARY, b"again"), (BINARY, b"again"))
        finally:
            for ws in clients:
                ws.close()
        # Everything closed: plain requests are served again.
        self.assertTrue(wait_until(lambda: self._health_ok(), 5), "health after the limit test")

    def _health_ok(self):
        try:
            return self.srv.health(timeout=2)[0] == 200
        except (PeerClosed, ConnectionError, TimeoutError):
            return False


# --------------------------------------------------------------------------------------------
# Misbehaving clients
# --------------------------------------------------------------------------------------------


class Misbehaver(threading.Thread):
    """Runs fn(stop_event) in a thread, remembering any exception."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn = fn
        self.stop = threading.Event()
        self.error = None
        self.rounds = 0

    def run(self):
        try:
            self.fn(self)
        except Exception as e:  # noqa: BLE001
            self.error = e


def garbage_http(m):
    """Connects, blasts random bytes, repeats."""
    while not m.stop.is_set():
        try:
            with HttpConn(m.port, timeout=2) as c:
                for _ in range(16):
                    if m.stop.is_set() or not c.send(os.urandom(16384)):
                        break
            m.rounds += 1
        except (ConnectionError, TimeoutError):
            pass


def garbage_frames(m):
    """Upgrades, then sends random bytes as frames, repeats."""
    while not m.stop.is_set():
        try:
            with RawWS(m.port, timeout=2) as ws:
                for _ in range(16):
                    if m.stop.is_set() or not ws.send(os.urandom(4096)):
                        break
            m.rounds += 1
        except (ConnectionError, TimeoutError, AssertionError, PeerClosed):
            pass


def never_reads(m):
    """Upgrades and sends 1 MiB messages without ever reading the echoes, then just holds on."""
    ws = RawWS(m.port, timeout=1)
    try:
        frame = encode_frame(BINARY, os.urandom(1 << 20))
        sent = 0
        while not m.stop.is_set() and sent < 256:
            if not ws.send(frame):  # blocked (backpressure) or closed by the server
                break
            sent += 1
        m.rounds = sent
        m.stop.wait(60)
    finally:
        ws.close()


def slow_sender(m):
    """Announces a 1 MB frame and trickles it a few bytes at a time."""
    ws = RawWS(m.port, timeout=2)
    try:
        frame = encode_frame(BINARY, b"s" * 1000000)
        i = 0
        while not m.stop.is_set() and i < len(frame):
            if not ws.send(frame[i:i + 7]):
                break
            i += 7
            m.stop.wait(0.01)
        m.rounds = i
    finally:
        ws.close()


class MisbehavingClientTest(ServerTestCase):
    server_settings = {}

    def test_misbehaving_clients_do_not_stall_others(self):
        fns = [garbage_http] * 3 + [garbage_frames] * 2 + [never_reads] * 4 + [slow_sender] * 2
        bad = [Misbehaver(fn) for fn in fns]
        for m in bad:
            m.port = self.port
            m.start()
        rtts = []

        async def good_client(i):
            async with connect(self.srv.uri()) as ws:
                end = time.monotonic() + 4.0
                while time.monotonic() < end:
                    msg = os.urandom(random.randint(1, 4096))
                    t0 = time.monotonic()
                    await ws.send(msg)
                    got = await asyncio.wait_for(ws.recv(), 10)
                    rtts.append(time.monotonic() - t0)
                    assert got == msg, f"good client {i}: wrong echo"
                    await asyncio.sleep(0.01)

        try:
            time.sleep(0.5)  # let the misbehavers get going
            async def all_good():
                await asyncio.gather(*(good_client(i) for i in range(8)))
            self.run_async(all_good(), timeout=60)
        finally:
            for m in bad:
                m.stop.set()
            for m in bad:
                m.join(10)
        rtts.sort()
        med, p99, worst = statistics.median(rtts), rtts[int(len(rtts) * 0.99)], rtts[-1]
        print(f"\ngood clients: {len(rtts)} round trips, median {med * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms, max {worst * 1000:.1f} ms; misbehaver rounds "
              f"{[m.rounds for m in bad]}")
        for m in bad:
            self.assertIsNone(m.error, f"{m.fn.__name__} raised {m.error!r}")
        self.assertGreater(len(rtts), 100)
        self.assertLess(med, 0.25, "median round trip")
        self.assertLess(worst, 2.0, "worst round trip")
        self.assertEqual(self.srv.health()[0], 200)

    def test_never_reading_client_does_not_grow_memory_without_bound(self):
        # Echoes to a client that never reads must be bounded (backpressure or disconnect).
        rss_before = self.srv.rss_kib()
        m = Misbehaver(never_reads)
        m.port = self.port
        m.start()
        time.sleep(3)
        rss_during = self.srv.rss_kib()
        m.stop.set()
        m.join(10)
        print(f"\nnever-reading client sent {m.rounds} MiB; server VmRSS {rss_before} -> "
              f"{rss_during} KiB")
        self.assertIsNone(m.error)
        if not binary_is_sanitized():  # ASan's quarantine keeps freed buffers in RSS
            self.assertLess(rss_during - rss_before, 128 * 1024, "server buffered too much")


if __name__ == "__main__":
    unittest.main()
