"""Timers: the handshake deadline (slowloris) and the WebSocket ping interval / idle close."""

import asyncio
import time
import unittest

import websockets

from sbtest import (CLOSE, PING, PONG, TEXT, HttpConn, PeerClosed, RawWS, ServerTestCase,
                    new_key)

HANDSHAKE_MS = 500
PING_MS = 300


def dropped_after(conn, trickle=b"", interval=0.1, limit=6.0):
    """Trickles bytes (one every interval) until the server closes the connection; returns the
    seconds from the call to the close, or None if still open after limit seconds. A response the
    server sends before closing (e.g. 408) is read and ignored."""
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < limit:
        if i < len(trickle):
            if not conn.send(trickle[i:i + 1]):
                return time.monotonic() - start
            i += 1
        try:
            conn._fill(time.monotonic() + interval)
            conn.buf = b""  # whatever the server says before closing
        except PeerClosed:
            return time.monotonic() - start
        except TimeoutError:
            pass
    return None


class HandshakeTimeoutTest(ServerTestCase):
    server_settings = {"handshake_timeout_ms": HANDSHAKE_MS}

    def assert_dropped_near_deadline(self, elapsed):
        self.assertIsNotNone(elapsed, "connection still open after 6 s")
        # The deadline counts from accept, not from the last byte. Lower bound: not before most
        # of the deadline; upper: generous for slow (sanitizer) builds.
        self.assertGreaterEqual(elapsed, HANDSHAKE_MS / 1000 * 0.6)
        self.assertLess(elapsed, 3.0)

    def test_idle_connection_dropped(self):
        with HttpConn(self.port) as c:
            self.assert_dropped_near_deadline(dropped_after(c))

    def test_slowloris_http(self):
        with HttpConn(self.port) as c:
            req = b"GET /api/health HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 200
            self.assert_dropped_near_deadline(dropped_after(c, req))

    def test_slowloris_upgrade(self):
        with HttpConn(self.port) as c:
            req = (f"GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {new_key()}\r\nSec-WebSocket-Version: 13\r\n").encode()
            self.assert_dropped_near_deadline(dropped_after(c, req * 3, interval=0.05))

    def test_many_slow_clients_do_not_block_others(self):
        conns = [HttpConn(self.port) for _ in range(50)]
        try:
            for c in conns:
                c.send(b"GET /api/he")
            for _ in range(5):
                start = time.monotonic()
                self.assertEqual(self.srv.health()[0], 200)
                self.assertLess(time.monotonic() - start, 1.0)
            time.sleep(HANDSHAKE_MS / 1000)
            deadline = time.monotonic() + 3.0
            for i, c in enumerate(conns):
                self.assertTrue(c.closed_within(max(0.01, deadline - time.monotonic())),
                                f"slow client {i} still open")
        finally:
            for c in conns:
                c.close()

    def test_request_finished_in_time_is_served(self):
        with HttpConn(self.port) as c:
            req = b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n"
            for i in range(len(req)):
                c.send(req[i:i + 1])
                time.sleep(0.15 / len(req))
            self.assertEqual(c.read_response().status, 200)

    def test_websocket_outlives_handshake_deadline(self):
        async def run():
            async with websockets.connect(self.srv.uri(), ping_interval=None, open_timeout=10,
                                          close_timeout=5, compression=None) as ws:
                await asyncio.sleep(3 * HANDSHAKE_MS / 1000)
                await ws.send("still open")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 10), "still open")
        self.run_async(run())

    def test_raw_websocket_outlives_handshake_deadline(self):
        with RawWS(self.port) as ws:
            time.sleep(3 * HANDSHAKE_MS / 1000)
            self.assertEqual(ws.echo(TEXT, b"hi"), (TEXT, b"hi"))


class PingTest(ServerTestCase):
    server_settings = {"ping_interval_ms": PING_MS}

    def test_idle_client_gets_ping(self):
        with RawWS(self.port) as ws:
            start = time.monotonic()
            f = ws.read_frame(timeout=5)
            elapsed = time.monotonic() - start
            self.assertEqual(f.opcode, PING, f)
            self.assertTrue(f.fin)
            self.assertLessEqual(len(f.payload), 125)
            self.assertGreaterEqual(elapsed, PING_MS / 1000 * 0.5)
            self.assertLess(elapsed, 2.5)

    def test_silent_client_dropped(self):
        # Never answers anything: after about two intervals without a pong, TCP is closed.
        with RawWS(self.port) as ws:
            start = time.monotonic()
            pings, close_code = 0, None
            while True:
                try:
                    f = ws.read_frame(timeout=max(0.01, start + 6 - time.monotonic()))
                except PeerClosed:
                    break
                except TimeoutError:
                    self.fail(f"silent client still connected after 6 s ({pings} pings)")
                if f.opcode == PING:
                    pings += 1
                elif f.opcode == CLOSE:
                    close_code = f.close_code
                else:
                    self.fail(f"unexpected frame {f!r}")
            elapsed = time.monotonic() - start
            print(f"\nsilent client dropped after {elapsed:.2f} s, {pings} pings, "
                  f"close frame {close_code}")
            self.assertGreaterEqual(pings, 1)
            self.assertGreaterEqual(elapsed, 1.5 * PING_MS / 1000)
            self.assertLess(elapsed, 5.0)

    def test_answering_client_stays(self):
        with RawWS(self.port) as ws:
            start = time.monotonic()
            pings = 0
            while time.monotonic() - start < 2.0:
                try:
                    f = ws.read_frame(timeout=0.1)
                except TimeoutError:
                    continue
                self.assertEqual(f.opcode, PING, f)
                pings += 1
                self.assertTrue(ws.send_frame(PONG, f.payload), "server closed an answering client")
            self.assertGreaterEqual(pings, 3, "expected a ping about every 300 ms")
            self.assertEqual(ws.echo(TEXT, b"alive"), (TEXT, b"alive"))

    def test_websockets_client_stays(self):
        # The websockets library answers pings by itself.
        async def run():
            async with websockets.connect(self.srv.uri(), ping_interval=None, open_timeout=10,
                                          close_timeout=5, compression=None) as ws:
                await asyncio.sleep(2.0)
                await ws.send(b"alive")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 10), b"alive")
                await ws.close()
                self.assertEqual(ws.close_code, 1000)
        self.run_async(run())

    def test_many_idle_clients_pinged(self):
        clients = [RawWS(self.port) for _ in range(40)]
        try:
            for i, ws in enumerate(clients):
                f = ws.read_frame(timeout=5)
                self.assertEqual(f.opcode, PING, f"client {i}: {f!r}")
                ws.send_frame(PONG, f.payload)
        finally:
            for ws in clients:
                ws.close()


if __name__ == "__main__":
    unittest.main()
