"""The offline webhook: a message for a user with no device online is POSTed, as a JSON notice, to
a local HTTP receiver started by the test. Covers the notice's fields, no notice for an online
user, retries after 5xx, a refused (4xx) batch, a receiver that is down and comes back, the queue
bound, and the HMAC signature."""

import asyncio
import hashlib
import hmac
import http.server
import json
import re
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

import websockets

import sbtest


def mint(sub):
    out = subprocess.run([sbtest.SB_BIN, "token", "--sub", sub], check=True,
                         capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


async def connect(port, user):
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws",
                                  extra_headers={"Authorization": "Bearer " + mint(user)})
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome", welcome
    return ws


async def recv_json(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def send(ws, cid, to, body):
    """Sends a direct message and returns its ack."""
    await ws.send(json.dumps({"type": "send", "id": cid, "to": to, "body": body}))
    while True:
        msg = await recv_json(ws)
        if msg["type"] == "ack" and msg["id"] == cid:
            return msg


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^switchboard_webhook_(\w+) (\d+)$", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def free_port():
    """A loopback port nothing listens on (the receiver starts on it later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A local HTTP/1.1 server that records every POST. It answers with the statuses queued in
    `script`, then 200; with chunked=True its answers have chunked bodies."""

    def __init__(self, port=0, chunked=False):
        self.port = port
        self.chunked = chunked
        self.lock = threading.Lock()
        self.posts = []  # (path, headers, body)
        self.script = []
        self.httpd = None
        self.conns = set()

    def start(self):
        rcv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with rcv.lock:
                    rcv.conns.add(self.connection)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with rcv.lock:
                    rcv.posts.append((self.path, dict(self.headers), body))
                    status = rcv.script.pop(0) if rcv.script else 200
                self.send_response(status)
                if rcv.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"2;ext=1\r\nok\r\n0\r\nX-Trailer: t\r\n\r\n")
                else:
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", self.port), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        with self.lock:
            for c in self.conns:  # kept-alive connections too: the receiver is gone
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()

    def notices(self):
        """Every notice of every POST received, in order (failed attempts included)."""
        with self.lock:
            return [n for _, _, body in self.posts for n in json.loads(body)["notices"]]

    def clear(self):
        with self.lock:
            self.posts.clear()
            self.script.clear()


class ReceiverCase(sbtest.ServerTestCase):
    """A server whose webhook_url points at a Receiver started before it."""

    receiver_port = None
    webhook_settings = {}
    chunked = False

    @classmethod
    def setUpClass(cls):
        cls.receiver = Receiver(port=cls.receiver_port or 0, chunked=cls.chunked)
        if cls.receiver_port is None:
            cls.receiver.start()
        port = cls.receiver.port
        cls.server_settings = dict(workers=2, webhook_url=f"http://127.0.0.1:{port}/hook?k=1",
                                   **cls.webhook_settings)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.receiver.stop()

    def wait_notices(self, pred, timeout=10):
        return sbtest.wait_until(lambda: pred(self.receiver.notices()), timeout)


class WebhookTest(ReceiverCase):
    webhook_settings = {"webhook_batch": 10}

    def setUp(self):
        super().setUp()
        self.receiver.clear()

    def test_offline_recipient_gets_a_notice(self):
        async def go():
            alice = await connect(self.port, "alice")
            acks = [await send(alice, f"n{i}", "bob", f"hello {i}") for i in range(3)]
            await alice.close()
            return acks
        acks = self.run_async(go())
        self.assertTrue(self.wait_notices(lambda ns: len(ns) >= 3), self.receiver.posts)
        path, headers, _ = self.receiver.posts[0]
        self.assertEqual(path, "/hook?k=1")
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertNotIn("X-Switchboard-Signature", headers)
        notices = self.receiver.notices()
        self.assertEqual(len(notices), 3)
        # Three messages inside the batching delay travel in one POST.
        self.assertEqual(len(self.receiver.posts), 1)
        for n, ack in zip(notices, acks):
            self.assertEqual(n, {"user": "bob", "conv": "dm:alice:bob", "seq": ack["seq"],
                                 "msg_id": ack["msg_id"], "from": "alice", "ts": ack["ts"]})
        m = sbtest.wait_until(lambda: (lambda v: v if v["notices_sent_total"] >= 3 else None)(
            metrics(self.port)), 5)
        self.assertTrue(m)

    def test_online_recipient_gets_no_notice(self):
        async def go():
            carol = await connect(self.port, "carol")
            dave = await connect(self.port, "dave")
            await send(carol, "x1", "dave", "are you there")
            msg = await recv_json(dave)
            self.assertEqual(msg["body"], "are you there")
            await asyncio.sleep(0.5)  # past the batching delay
            await carol.close()
            await dave.close()
        self.run_async(go())
        self.assertEqual(self.receiver.notices(), [])

    def test_5xx_is_retried_then_delivered(self):
        self.receiver.script[:] = [500, 503]
        before = metrics(self.port)

        async def go():
            alice = await connect(self.port, "alice")
            ack = await send(alice, "r1", "erin", "retry me")
            await alice.close()
            return ack
        ack = self.run_async(go())
        self.assertTrue(sbtest.wait_until(lambda: len(self.receiver.posts) >= 3, 10),
                        self.receiver.posts)
        time.sleep(0.3)
        # The same batch three times: two answered 5xx, the last accepted; nothing more.
        bodies = [body for _, _, body in self.receiver.posts]
        self.assertEqual(len(bodies), 3)
        self.assertEqual(bodies[0], bodies[1])
        self.assertEqual(bodies[1], bodies[2])
        n = json.loads(bodies[2])["notices"]
        self.assertEqual([(x["user"], x["msg_id"]) for x in n], [("erin", ack["msg_id"])])
        after = metrics(self.port)
        self.assertEqual(after["posts_failed_total"] - before["posts_failed_total"], 2)
        self.assertEqual(after["retries_total"] - before["retries_total"], 2)
        self.assertEqual(after["notices_sent_total"] - before["notices_sent_total"], 1)
        log = self.srv.read_log()
        self.assertEqual(len(re.findall(r"webhook: POST to \S+ failed: HTTP 500", log)), 1)
        self.assertEqual(len(re.findall(r"failed: HTTP 503", log)), 0)  # not one line per try
        self.assertIn("works again (HTTP 200) after 2 failed attempts", log)

    def test_4xx_drops_the_batch(self):
        self.receiver.script[:] = [400]
        before = metrics(self.port)

        async def go():
            alice = await connect(self.port, "alice")
            await send(alice, "f1", "frank", "refused")
            await asyncio.sleep(0.5)
            await send(alice, "f2", "frank", "accepted")
            await alice.close()
        self.run_async(go())
        self.assertTrue(self.wait_notices(lambda ns: len(ns) >= 2), self.receiver.posts)
        time.sleep(0.3)
        self.assertEqual([n["seq"] for n in self.receiver.notices()], [1, 2])  # no retry of 1
        after = metrics(self.port)
        self.assertEqual(after["notices_dropped_total"] - before["notices_dropped_total"], 1)
        self.assertEqual(after["notices_sent_total"] - before["notices_sent_total"], 1)
        self.assertIn("refused a POST with HTTP 400: 1 notices dropped", self.srv.read_log())


class WebhookReceiverDownTest(ReceiverCase):
    """The receiver is down when the server starts; it comes back later."""

    receiver_port = free_port()
    webhook_settings = {"webhook_batch": 1, "webhook_queue": 5, "webhook_timeout_ms": 1000}

    def test_down_then_recovers_with_the_queue_bounded(self):
        async def go():
            alice = await connect(self.port, "alice")
            carol = await connect(self.port, "carol")
            acks = [await send(alice, f"d{i}", "bob", f"m{i}") for i in range(12)]
            # Delivery to online users goes on while the receiver is unreachable.
            await send(alice, "c1", "carol", "still here")
            self.assertEqual((await recv_json(carol))["body"], "still here")
            await alice.close()
            await carol.close()
            return acks
        acks = self.run_async(go())
        # One notice is in the POST being retried, 5 wait in the queue, the 6 older ones of
        # those that waited were dropped.
        m = sbtest.wait_until(lambda: (lambda v: v if v["posts_failed_total"] >= 2 else None)(
            metrics(self.port)), 10)
        self.assertTrue(m, metrics(self.port))
        self.assertEqual(m["notices_queued_total"], 12)
        self.assertEqual(m["notices_dropped_total"], 6)
        self.assertEqual(m["notices_sent_total"], 0)
        self.assertGreaterEqual(m["retries_total"], 1)
        self.assertEqual(self.srv.read_log().count("queue full (5 notices on this worker)"), 1)

        self.receiver.start()
        self.assertTrue(self.wait_notices(lambda ns: len(ns) >= 6, timeout=40),
                        self.srv.log_tail())
        time.sleep(0.3)
        got = [n["seq"] for n in self.receiver.notices()]
        self.assertEqual(got, [1, 8, 9, 10, 11, 12])
        self.assertEqual([n["msg_id"] for n in self.receiver.notices()],
                         [acks[i]["msg_id"] for i in (0, 7, 8, 9, 10, 11)])
        m = metrics(self.port)
        self.assertEqual(m["notices_sent_total"], 6)
        log = self.srv.read_log()
        # One line when it starts failing and one when it works again, not one per attempt.
        self.assertEqual(len(re.findall(r"webhook: POST to \S+ failed", log)), 1, log)
        self.assertEqual(len(re.findall(r"webhook: POST to \S+ works again", log)), 1, log)


class WebhookSignedTest(ReceiverCase):
    chunked = True  # the receiver answers with chunked bodies and a trailer
    webhook_settings = {"webhook_secret": "s3cret-key", "webhook_body": "on",
                        "webhook_body_max": 64}

    def test_signature_and_bodies(self):
        long_body = "x" * 100

        async def go():
            alice = await connect(self.port, "alice")
            await send(alice, "s1", "gina", "caf\u00e9 \"quoted\" \\ \u2603")
            await send(alice, "s2", "gina", long_body)
            await alice.close()
        self.run_async(go())
        self.assertTrue(self.wait_notices(lambda ns: len(ns) >= 2), self.receiver.posts)
        for _, headers, body in self.receiver.posts:
            sig = headers["X-Switchboard-Signature"]
            self.assertTrue(sig.startswith("sha256="), sig)
            good = hmac.new(b"s3cret-key", body, hashlib.sha256).hexdigest()
            self.assertTrue(hmac.compare_digest(sig[7:], good), (sig, good))
            bad = hmac.new(b"s3cret-key", body + b" ", hashlib.sha256).hexdigest()
            self.assertNotEqual(sig[7:], bad)
        n1, n2 = self.receiver.notices()
        self.assertEqual(n1["body"], "caf\u00e9 \"quoted\" \\ \u2603")
        self.assertNotIn("body", n2)  # longer than webhook_body_max
        self.assertIs(n2["body_omitted"], True)
        # Kept alive: the chunked answers were read to their end, so one connection served both
        # POSTs or a second one was opened cleanly; either way nothing failed.
        self.assertEqual(metrics(self.port)["posts_failed_total"], 0)


class RawReceiver:
    """A TCP server for receivers that misbehave: for each request it reads it plays the next
    action of `script`: "silent" (never answers), "garbage" (answers something that is not
    HTTP), "ok" (200). Requests past the script get "ok"."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.open = []  # (connection, the thread serving it)
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            with self.lock:
                self.open.append((c, t))
            t.start()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                n = int(re.search(rb"Content-Length: (\d+)", head).group(1))
                while len(buf) < n:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:n], buf[n:]
                with self.lock:
                    self.requests.append(body)
                    action = self.script.pop(0) if self.script else "ok"
                if action == "garbage":
                    c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
                elif action == "ok":
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            return

    def close(self):
        # shutdown() wakes the threads blocked in accept() and recv(); they must be gone before
        # close() frees the descriptors: a thread that still held the number would accept or read
        # on whatever socket the next test opens with it (it stole later suites' webhook POSTs).
        sbtest.shutdown_and_join(self.sock, self.acceptor)
        with self.lock:
            conns, self.open = self.open, []
        for c, t in conns:
            sbtest.shutdown_and_join(c, t)


class WebhookMisbehavingReceiverTest(sbtest.ServerTestCase):
    """A receiver that does not answer in time, then answers garbage, then works."""

    @classmethod
    def setUpClass(cls):
        cls.receiver = RawReceiver(["silent", "garbage", "ok"])
        cls.server_settings = {"workers": 2, "webhook_timeout_ms": 300, "webhook_batch": 1,
                               "webhook_url": f"http://127.0.0.1:{cls.receiver.port}/"}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.receiver.close()

    def test_timeout_and_malformed_answers_are_retried(self):
        async def go():
            alice = await connect(self.port, "alice")
            ack = await send(alice, "t1", "hank", "x")
            await alice.close()
            return ack
        ack = self.run_async(go())
        self.assertTrue(sbtest.wait_until(lambda: len(self.receiver.requests) >= 3, 15),
                        self.srv.log_tail())
        ok = sbtest.wait_until(
            lambda: (lambda v: v if v["notices_sent_total"] == 1 else None)(metrics(self.port)), 5)
        self.assertTrue(ok, metrics(self.port))
        self.assertEqual(ok["posts_failed_total"], 2)
        self.assertEqual(ok["retries_total"], 2)
        bodies = self.receiver.requests
        self.assertEqual(len(set(bodies)), 1)  # the same batch each time
        self.assertEqual(json.loads(bodies[0])["notices"][0]["msg_id"], ack["msg_id"])
        log = self.srv.read_log()
        self.assertIn("failed (no complete response within webhook_timeout_ms)", log)
        self.assertNotIn("malformed HTTP response", log)  # the second failure is not logged
        self.assertIn("works again (HTTP 200) after 2 failed attempts", log)


class WebhookShutdownTest(unittest.TestCase):
    """SIGTERM while a POST waits for its answer: the server still stops on time and exits 0."""

    def test_stop_with_a_post_in_flight(self):
        receiver = RawReceiver(["silent"])
        srv = sbtest.Server(workers=2, webhook_timeout_ms=2000,
                            webhook_url=f"http://127.0.0.1:{receiver.port}/")
        try:
            srv.start()

            async def go():
                alice = await connect(srv.port, "alice")
                await send(alice, "q1", "ivan", "x")
                await alice.close()
            asyncio.run(asyncio.wait_for(go(), 30))
            self.assertTrue(sbtest.wait_until(lambda: receiver.requests, 10))
            t0 = time.monotonic()
            code = srv.stop(timeout=15)
            self.assertEqual(code, 0, srv.log_tail())
            # Bounded by webhook_timeout_ms, well inside shutdown_timeout_ms (10 s).
            self.assertLess(time.monotonic() - t0, 5, srv.log_tail())
            log = srv.read_log()
            self.assertIn("webhook: 1 notices were not sent before shutdown", log)
            self.assertNotIn("shutdown deadline passed", log)
            self.assertEqual(srv.bad_log_lines(since_start=True), [])
        finally:
            srv.kill()
            srv.remove_log()
            receiver.close()


class WebhookBadUrlTest(unittest.TestCase):
    """A webhook_url the server cannot use stops it at start with a sentence saying why."""

    def test_refused_urls(self):
        if not sbtest.SB_BIN:
            self.skipTest("SB_BIN is not set")
        cases = [("https://127.0.0.1:1/x", "https"), ("ftp://127.0.0.1/", "http://host:port"),
                 ("http://user:pw@127.0.0.1:1/", "user:password"),
                 ("http://127.0.0.1:99999/", "port"), ("http://127.0.0.1:1/a b", "visible ASCII"),
                 ("http://host.invalid:1/", "cannot resolve")]
        with tempfile.TemporaryDirectory() as d:
            for url, why in cases:
                r = subprocess.run([sbtest.SB_BIN, "serve", "--listen", "127.0.0.1:0",
                                    "--data-dir", d, "--webhook-url", url],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 2, (url, r.stderr))
                self.assertIn(why, r.stderr, url)
                self.assertNotIn("listening on", r.stderr)
