"""Echo over /echo with a real client (python websockets): sizes, fragments, ping/pong, close
codes, and 200 concurrent clients."""

import asyncio
import os
import random
import time
import unittest

import websockets

from sbtest import ServerTestCase, random_text

SIZES = [0, 125, 126, 65535, 65536, 1048576]
TIMEOUT = 10.0


def connect(uri, **kw):
    opts = dict(max_size=None, ping_interval=None, open_timeout=TIMEOUT, close_timeout=5,
                compression=None)
    opts.update(kw)
    return websockets.connect(uri, **opts)


async def recv(ws, timeout=TIMEOUT):
    return await asyncio.wait_for(ws.recv(), timeout)


class EchoTest(ServerTestCase):
    server_settings = {}

    def echo_roundtrip(self, messages, **kw):
        async def run():
            async with connect(self.srv.uri(), **kw) as ws:
                out = []
                for m in messages:
                    await asyncio.wait_for(ws.send(m), TIMEOUT)
                    out.append(await recv(ws))
                return out
        return self.run_async(run())

    def test_text_sizes(self):
        rng = random.Random(1)
        msgs = [random_text(n, rng) for n in SIZES]
        for sent, got in zip(msgs, self.echo_roundtrip(msgs)):
            self.assertIsInstance(got, str)
            self.assertEqual(len(got.encode()), len(sent.encode()))
            self.assertTrue(got == sent, f"text of {len(sent.encode())} bytes differs")

    def test_binary_sizes(self):
        msgs = [os.urandom(n) for n in SIZES]
        for sent, got in zip(msgs, self.echo_roundtrip(msgs)):
            self.assertIsInstance(got, bytes)
            self.assertEqual(len(got), len(sent))
            self.assertTrue(got == sent, f"binary of {len(sent)} bytes differs")

    def test_many_messages_in_flight(self):
        # Send 100 messages before reading any reply: order and content must hold.
        async def run():
            async with connect(self.srv.uri()) as ws:
                msgs = [os.urandom(i * 37) if i % 2 else f"m{i}" * i for i in range(100)]
                for m in msgs:
                    await asyncio.wait_for(ws.send(m), TIMEOUT)
                for i, m in enumerate(msgs):
                    self.assertEqual(await recv(ws), m, f"message {i}")
        self.run_async(run())

    def test_fragmented_text(self):
        async def run():
            async with connect(self.srv.uri()) as ws:
                await asyncio.wait_for(ws.send(["héllo ", "", "wörld ", "😀" * 1000]), TIMEOUT)
                self.assertEqual(await recv(ws), "héllo wörld " + "😀" * 1000)
        self.run_async(run())

    def test_fragmented_binary(self):
        parts = [os.urandom(n) for n in (1, 0, 125, 126, 65536, 3)]

        async def run():
            async with connect(self.srv.uri()) as ws:
                await asyncio.wait_for(ws.send(parts), TIMEOUT)
                self.assertEqual(await recv(ws), b"".join(parts))
        self.run_async(run())

    def test_fragmented_async_iterable(self):
        async def gen():
            for i in range(50):
                yield f"part{i};"
                await asyncio.sleep(0.001)

        async def run():
            async with connect(self.srv.uri()) as ws:
                await asyncio.wait_for(ws.send(gen()), TIMEOUT)
                self.assertEqual(await recv(ws), "".join(f"part{i};" for i in range(50)))
        self.run_async(run())

    def test_fragmented_one_mib(self):
        parts = [os.urandom(65536) for _ in range(16)]

        async def run():
            async with connect(self.srv.uri()) as ws:
                await asyncio.wait_for(ws.send(parts), TIMEOUT)
                self.assertTrue(await recv(ws) == b"".join(parts))
        self.run_async(run())

    def test_ping_pong(self):
        async def run():
            async with connect(self.srv.uri()) as ws:
                for payload in (b"", b"x", os.urandom(125), "texte"):
                    waiter = await ws.ping(payload)
                    # websockets resolves the waiter only on a pong with the same payload.
                    await asyncio.wait_for(waiter, TIMEOUT)
                # Pings between data messages don't disturb the echo.
                await ws.send("after")
                self.assertEqual(await recv(ws), "after")
        self.run_async(run())

    def test_unsolicited_pong_ignored(self):
        async def run():
            async with connect(self.srv.uri()) as ws:
                await ws.pong(b"nobody asked")
                await ws.send(b"still here")
                self.assertEqual(await recv(ws), b"still here")
        self.run_async(run())

    def test_close_codes_echoed(self):
        async def run():
            for code in (1000, 1001, 1003, 1008, 1011, 3000, 3999, 4000, 4999):
                async with connect(self.srv.uri()) as ws:
                    await ws.send("x")
                    self.assertEqual(await recv(ws), "x")
                    await asyncio.wait_for(ws.close(code=code, reason="bye"), TIMEOUT)
                    self.assertEqual(ws.close_code, code, f"sent close {code}")
        self.run_async(run())

    def test_compression_offer_ignored_or_honoured(self):
        # The client offers permessage-deflate; whatever the server answers, echo must work.
        async def run():
            async with connect(self.srv.uri(), compression="deflate") as ws:
                for m in ("a" * 10000, os.urandom(5000), ""):
                    await ws.send(m)
                    self.assertEqual(await recv(ws), m)
        self.run_async(run())


class ConcurrencyTest(ServerTestCase):
    server_settings = {}

    CLIENTS = 200
    ROUNDS = 50

    def test_200_clients_50_round_trips(self):
        async def client(i, ready, go):
            rng = random.Random(i)
            async with connect(self.srv.uri(), open_timeout=30) as ws:
                ready.set()
                await asyncio.wait_for(go.wait(), 60)
                for r in range(self.ROUNDS):
                    n = rng.choice((0, 1, 125, 126, 1000, 4096, 20000))
                    m = random_text(n, rng) if rng.random() < 0.5 else rng.randbytes(n)
                    await asyncio.wait_for(ws.send(m), TIMEOUT)
                    got = await recv(ws, 30)
                    if got != m:
                        raise AssertionError(f"client {i} round {r}: wrong echo "
                                             f"({type(got).__name__} {len(got)} vs {len(m)})")
                return self.ROUNDS

        async def health_connections():
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: self.srv.health()[2]["connections"])

        async def run():
            readies = [asyncio.Event() for _ in range(self.CLIENTS)]
            go = asyncio.Event()
            tasks = [asyncio.create_task(client(i, readies[i], go)) for i in range(self.CLIENTS)]
            waiter = asyncio.ensure_future(asyncio.gather(*(e.wait() for e in readies)))
            # Before `go`, a client task ends only by failing, so the first one done decides.
            await asyncio.wait([waiter, *tasks], timeout=60, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                if t.done() and t.exception():
                    raise t.exception()
            self.assertTrue(waiter.done(), "not all clients connected within 60 s")
            # All clients connected: the server sees them (counts may lag a little).
            deadline = time.monotonic() + 5
            while (count := await health_connections()) < self.CLIENTS:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            self.assertGreaterEqual(count, self.CLIENTS, "health 'connections' with all open")
            start = time.monotonic()
            go.set()
            results = await asyncio.gather(*tasks)
            elapsed = time.monotonic() - start
            print(f"\n{self.CLIENTS} clients x {self.ROUNDS} round trips in {elapsed:.2f} s")
            self.assertEqual(sum(results), self.CLIENTS * self.ROUNDS)

        self.run_async(run(), timeout=150)
        # Everyone closed cleanly: the count falls back (the health request itself may count).
        count = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            count = self.srv.health()[2]["connections"]
            if count <= 1:
                break
            time.sleep(0.1)
        self.assertLessEqual(count, 1, "connections after all clients closed")


if __name__ == "__main__":
    unittest.main()
