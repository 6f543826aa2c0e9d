"""TLS on tls_listen with real clients and verification on: Python ssl + websockets over wss://,
TLS 1.2 and 1.3, ALPN, SNI, session resumption, certificate reload on SIGHUP, certificates the
clients must refuse, and the bad-input cases (plaintext to the TLS port, TLS to the plain port,
garbage and stalled handshakes). Certificates come from tools/dev-cert."""

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

import websockets

import binclient
import sbtest
from test_chat import mint

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TLS_RE = re.compile(r"TLS on 127\.0\.0\.1:(\d+)")
TIMEOUT = 10.0
CERTS = {}  # name -> directory made by tools/dev-cert


def dev_cert(name, *names, ca_from=None):
    d = os.path.join(CERTS["root"], name)
    os.makedirs(d)
    if ca_from:  # same CA as another directory
        for f in ("ca.pem", "ca.key"):
            shutil.copy(os.path.join(CERTS[ca_from], f), d)
    subprocess.run([os.path.join(ROOT, "tools", "dev-cert"), d, *names], check=True,
                   capture_output=True, timeout=60)
    CERTS[name] = d
    return d


def setUpModule():
    if shutil.which("openssl") is None:
        raise unittest.SkipTest("needs the openssl command for tools/dev-cert")
    CERTS["root"] = tempfile.mkdtemp(prefix="sb-tls-")
    dev_cert("a")                               # CA a: localhost
    dev_cert("b")                               # CA b, another authority
    dev_cert("sni", "alt.test", ca_from="a")    # CA a: alt.test only
    dev_cert("other", "example.com", ca_from="a")


def tearDownModule():
    if "root" in CERTS:
        shutil.rmtree(CERTS["root"], ignore_errors=True)


def client_ctx(ca="a", version=None, alpn=None):
    ctx = ssl.create_default_context(cafile=os.path.join(CERTS[ca], "ca.pem"))
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_connect(port, ctx, host="localhost", session=None):
    raw = socket.create_connection((sbtest.HOST, port), timeout=TIMEOUT)
    try:
        return ctx.wrap_socket(raw, server_hostname=host, session=session)
    except BaseException:
        raw.close()
        raise


def http_get(sock, path="/api/health"):
    """One keep-alive GET over an open TLS socket; returns (status, body)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(4096)
    return int(head.split()[1]), body


def closed_within(sock, timeout):
    """True when the peer closes (EOF or reset) within timeout, reading whatever comes first."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return True
    except socket.timeout:
        return False
    return False


class TlsServerCase(sbtest.ServerTestCase):
    """A server whose certificate files are copies the tests may replace."""

    extra_settings = {}

    @classmethod
    def setUpClass(cls):
        cls.live = tempfile.mkdtemp(prefix="sb-tls-live-", dir=CERTS["root"])
        for f in ("server.pem", "server.key"):
            shutil.copy(os.path.join(CERTS["a"], f), cls.live)
        cls.server_settings = {"tls_listen": "127.0.0.1:0",
                               "tls_cert": os.path.join(cls.live, "server.pem"),
                               "tls_key": os.path.join(cls.live, "server.key"),
                               "handshake_timeout_ms": 3000, **cls.extra_settings}
        super().setUpClass()

    @property
    def tls_port(self):
        return int(TLS_RE.search(self.srv.read_log()).group(1))

    def wss(self, path="/echo", ca="a", **kw):
        return websockets.connect(f"wss://localhost:{self.tls_port}{path}", ssl=client_ctx(ca),
                                  max_size=None, ping_interval=None, open_timeout=TIMEOUT,
                                  close_timeout=5, compression=None, **kw)

    def wait_log(self, pattern, timeout=5.0):
        rx = re.compile(pattern)
        ok = sbtest.wait_until(lambda: rx.search(self.srv.read_log()), timeout)
        self.assertTrue(ok, f"no log line /{pattern}/ in:\n{self.srv.log_tail()}")


class WssTest(TlsServerCase):
    extra_settings = {"tls_sni_file": "", "workers": 3}

    @classmethod
    def setUpClass(cls):
        sni = os.path.join(CERTS["root"], "sni.txt")
        with open(sni, "w") as f:
            f.write("# SNI sites\n\n  alt.test {0}/server.pem {0}/server.key\n"
                    "*.wild.test {0}/server.pem {0}/server.key\n".format(CERTS["sni"]))
        cls.extra_settings = {"tls_sni_file": sni, "workers": 3}
        super().setUpClass()

    def test_echo_sizes_and_many_clients(self):
        sizes = [0, 1, 125, 126, 16383, 16384, 16385, 65536, 1048576, 4 * 1048576 - 100]

        async def one(i):
            async with self.wss() as ws:
                for n in sizes if i == 0 else sizes[:5]:
                    msg = os.urandom(n)
                    await ws.send(msg)
                    self.assertEqual(await asyncio.wait_for(ws.recv(), TIMEOUT), msg)
                # Many small messages at once: the server gathers them into few records.
                msgs = [f"m{i}-{k}" for k in range(200)]
                for m in msgs:
                    await ws.send(m)
                got = [await asyncio.wait_for(ws.recv(), TIMEOUT) for _ in msgs]
                self.assertEqual(got, msgs)

        async def run():
            await asyncio.gather(*(one(i) for i in range(40)))
        self.run_async(run())

    def test_chat_over_wss_across_workers(self):
        # /ws moves each user to its home worker: the TLS state moves with the connection.
        def mint(sub):
            return subprocess.run([sbtest.SB_BIN, "token", "--sub", sub], check=True,
                                  capture_output=True, text=True, timeout=10).stdout.strip()

        async def run():
            users = [f"tls{i}" for i in range(9)]
            conns = {}
            for u in users:
                ws = await self.wss("/ws?token=" + mint(u)).__aenter__()
                self.assertEqual(json.loads(await ws.recv())["type"], "welcome")
                conns[u] = ws
            for i, u in enumerate(users):
                await conns[u].send(json.dumps({"type": "send", "id": f"m{i}",
                                                "to": users[(i + 1) % 9], "body": "x" * 20000}))
            for i, u in enumerate(users):
                got = [json.loads(await asyncio.wait_for(conns[u].recv(), TIMEOUT))
                       for _ in range(2)]
                self.assertEqual(sorted(m["type"] for m in got), ["ack", "message"])
            for ws in conns.values():
                await ws.close()
        self.run_async(run())

    def test_https_versions_and_alpn(self):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with tls_connect(self.tls_port, client_ctx(version=version,
                                                       alpn=["h2", "http/1.1"])) as s:
                self.assertEqual(s.version(), {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                                               ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version])
                self.assertEqual(s.selected_alpn_protocol(), "http/1.1")
                status, body = http_get(s)
                self.assertEqual(status, 200)
                self.assertIn(b"healthy", body)
                self.assertEqual(http_get(s)[0], 200)  # keep-alive
        # A client that speaks only h2 is refused (no_application_protocol).
        with self.assertRaises(ssl.SSLError):
            tls_connect(self.tls_port, client_ctx(alpn=["h2"])).close()
        self.wait_log(r"TLS handshake failed: (NO_APPLICATION_PROTOCOL|no application protocol)")

    def test_sni_picks_the_certificate(self):
        for host, names in (("localhost", {"localhost"}), ("alt.test", {"alt.test"}),
                            ("x.wild.test", {"alt.test"}), ("unknown.test", {"localhost"})):
            ctx = client_ctx()
            if host.endswith("wild.test") or host == "unknown.test":
                ctx.check_hostname = False  # the certificate is the point, not the name
            with tls_connect(self.tls_port, ctx, host=host) as s:
                cert = s.getpeercert()
                got = {v for k, v in cert["subjectAltName"] if k == "DNS"}
                self.assertEqual(got, names, host)
                self.assertEqual(http_get(s)[0], 200)

    def test_resumption_resumes(self):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = client_ctx(version=version)
            with tls_connect(self.tls_port, ctx) as s:
                self.assertEqual(http_get(s)[0], 200)  # TLS 1.3 tickets come after the handshake
                session = s.session
                self.assertFalse(s.session_reused)
            self.assertIsNotNone(session)
            with tls_connect(self.tls_port, ctx, session=session) as s:
                self.assertEqual(http_get(s)[0], 200)
                self.assertTrue(s.session_reused, version)

    def test_clients_refuse_bad_certificates(self):
        # Not trusted: signed by a CA the client does not know (system store, or CA b).
        for ctx in (ssl.create_default_context(), client_ctx("b")):
            with self.assertRaises(ssl.SSLCertVerificationError):
                tls_connect(self.tls_port, ctx).close()
        # Trusted CA, wrong name.
        with self.assertRaises(ssl.SSLCertVerificationError):
            tls_connect(self.tls_port, client_ctx(), host="example.com").close()

        async def ws_refuses():
            with self.assertRaises(ssl.SSLCertVerificationError):
                async with self.wss(ca="b"):
                    pass
        self.run_async(ws_refuses())
        # The log names the client's alert, the one an operator can act on.
        self.wait_log(r"TLS handshake failed: the client sent alert 48 \(unknown_ca\); closed")
        self.wait_log(r"TLS handshake failed: the client sent alert 42 \(bad_certificate\)")
        # The server is fine afterwards.
        with tls_connect(self.tls_port, client_ctx()) as s:
            self.assertEqual(http_get(s)[0], 200)

    def test_request_then_close_notify_still_gets_its_answer(self):
        # One write holds the request and the client's close_notify (a half-close in TLS).
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = client_ctx().wrap_bio(inc, out, server_hostname="localhost")
        with socket.create_connection((sbtest.HOST, self.tls_port), timeout=TIMEOUT) as s:
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    s.sendall(out.read())
                    data = s.recv(65536)
                    self.assertTrue(data, "closed during the handshake")
                    inc.write(data)
            obj.write(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            try:
                obj.unwrap()
            except ssl.SSLWantReadError:
                pass
            s.sendall(out.read())
            while chunk := s.recv(65536):
                inc.write(chunk)
        answer = b""
        try:
            while chunk := obj.read(65536):
                answer += chunk
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ssl.SSLWantReadError):
            pass
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)

    def test_plaintext_to_the_tls_port(self):
        with socket.create_connection((sbtest.HOST, self.tls_port), timeout=TIMEOUT) as s:
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data)
        self.assertIn(b"speaks HTTPS", data)
        self.wait_log(r"c[0-9a-f]+: plaintext HTTP on the TLS port; answered 400 and closed")

    def test_tls_to_the_plain_port(self):
        t0 = time.monotonic()
        with self.assertRaises((ssl.SSLError, ConnectionResetError, OSError)):
            tls_connect(self.port, client_ctx()).close()
        self.assertLess(time.monotonic() - t0, 5)
        self.wait_log(r"c[0-9a-f]+: TLS handshake on a plaintext port; answered 400")

    def test_garbage_and_stalled_handshakes_close_cleanly(self):
        # A record header of a handshake, then junk: an alert and a close, one log line.
        with socket.create_connection((sbtest.HOST, self.tls_port), timeout=TIMEOUT) as s:
            s.sendall(b"\x16\x03\x01\x00\x30" + os.urandom(0x30))
            self.assertTrue(closed_within(s, 5))
        # Binary junk that is no TLS at all.
        with socket.create_connection((sbtest.HOST, self.tls_port), timeout=TIMEOUT) as s:
            s.sendall(b"\x00\x01\x02\x03" * 64)
            self.assertTrue(closed_within(s, 5))
        # Half a ClientHello, then silence: closed at handshake_timeout_ms (3 s here: 40 Python
        # TLS clients at once need their time on a loaded machine), while
        # other clients are served meanwhile (the worker never waits on it).
        hello = bytearray()
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = client_ctx().wrap_bio(incoming, outgoing, server_hostname="localhost")
        with self.assertRaises(ssl.SSLWantReadError):
            obj.do_handshake()
        hello += outgoing.read()
        stalled = []
        for _ in range(20):
            s = socket.create_connection((sbtest.HOST, self.tls_port), timeout=TIMEOUT)
            s.sendall(bytes(hello[: len(hello) // 2]))
            stalled.append(s)
        t0 = time.monotonic()
        for _ in range(5):
            with tls_connect(self.tls_port, client_ctx()) as s:
                self.assertEqual(http_get(s)[0], 200)
        self.assertLess(time.monotonic() - t0, 3)
        for s in stalled:
            self.assertTrue(closed_within(s, 8))
            s.close()
        self.assertLess(time.monotonic() - t0, 10)
        self.wait_log(r"no complete request within 3000 ms")


class LoadgenTlsTest(TlsServerCase):
    """switchboard-loadgen --tls against the TLS port: verified, refused, and --insecure; and
    the binary protocol inside wss:// (--proto ws-bin) and inside TLS on binary_tls_listen
    (--proto bin)."""

    # PINGs count against the per-device request rate (100/s by default): lifted for the echo.
    extra_settings = {"jwt_secret": "loadgen-tls-secret", "rate_messages": 1000000,
                      "rate_bytes": "1G", "binary_tls_listen": "127.0.0.1:0"}

    def loadgen(self, *args):
        lg = os.path.join(os.path.dirname(sbtest.SB_BIN), "switchboard-loadgen")
        if not os.access(lg, os.X_OK):
            self.skipTest("no switchboard-loadgen next to SB_BIN")
        out_json = os.path.join(CERTS["root"], f"lg-{os.getpid()}.json")
        cmd = [lg, *args, "--threads", "1", "--quiet", "--json", out_json]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        with open(out_json) as f:
            return r, json.load(f)

    def test_echo_verified(self):
        r, rep = self.loadgen("echo", "--target", f"127.0.0.1:{self.tls_port}", "--tls", "--ca",
                              os.path.join(CERTS["a"], "ca.pem"), "--connections", "20",
                              "--pipeline", "4", "--size", "300", "--duration", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        text = json.dumps(rep)
        self.assertIn('"established": 20', text)
        self.assertIn('"mismatched": 0', text)

    def test_ws_bin_verified(self):
        r, rep = self.loadgen("echo", "--proto", "ws-bin", "--jwt-secret", "loadgen-tls-secret",
                              "--target", f"127.0.0.1:{self.tls_port}", "--tls", "--ca",
                              os.path.join(CERTS["a"], "ca.pem"), "--connections", "10",
                              "--pipeline", "4", "--size", "3000", "--duration", "0.5")
        self.assertEqual(r.returncode, 0, r.stderr)
        c = rep["counters"]
        self.assertEqual(c["established"], 10)
        self.assertEqual(c["mismatched"], 0)
        self.assertGreater(c["messages_sent"], 10)
        self.assertEqual(c["messages_received"], c["messages_sent"])

    def test_bin_over_tls(self):
        port = int(re.search(r"binary TLS on 127\.0\.0\.1:(\d+)", self.srv.read_log()).group(1))
        for mode in ("echo", "chat"):
            with self.subTest(mode=mode):
                r, rep = self.loadgen(mode, "--proto", "bin", "--jwt-secret",
                                      "loadgen-tls-secret", "--target", f"127.0.0.1:{port}",
                                      "--tls", "--ca", os.path.join(CERTS["a"], "ca.pem"),
                                      "--connections", "10", "--duration", "0.5",
                                      *(("--size", "3000", "--pipeline", "4") if mode == "echo"
                                        else ("--group-share", "0", "--rate", "200")))
                self.assertEqual(r.returncode, 0, r.stderr)
                c = rep["counters"]
                self.assertEqual(c["established"], 10)
                self.assertEqual(c["mismatched"], 0)
                self.assertGreater(c["messages_sent"], 10)
                self.assertEqual(c["messages_received"], c["messages_sent"])
        # The same frames without TLS do not get through the TLS port.
        r, rep = self.loadgen("hold", "--proto", "bin", "--jwt-secret", "loadgen-tls-secret",
                              "--target", f"127.0.0.1:{port}", "--connections", "2",
                              "--duration", "0.2", "--timeout", "3")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(rep["counters"]["established"], 0)

    def test_refused_without_the_ca_unless_insecure(self):
        target = ["--target", f"localhost:{self.tls_port}", "--connections", "3",
                  "--duration", "0.2"]
        r, _ = self.loadgen("hold", *target, "--tls", "--ca", os.path.join(CERTS["b"], "ca.pem"))
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr, "CERTIFICATE_VERIFY_FAILED|certificate verify failed")
        r, rep = self.loadgen("hold", *target, "--tls", "--insecure")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"established": 3', json.dumps(rep))


class ReloadTest(TlsServerCase):
    def test_sighup_serves_new_certificate_and_keeps_old_connections(self):
        async def run():
            old = await self.wss(ca="a").__aenter__()
            await old.send("before")
            self.assertEqual(await old.recv(), "before")
            for f in ("server.pem", "server.key"):
                shutil.copy(os.path.join(CERTS["b"], f), self.live)
            self.srv.signal(signal.SIGHUP)
            self.wait_log(r"SIGHUP: TLS certificates reloaded")
            # New connections get the certificate of CA b; CA a no longer verifies them.
            async with self.wss(ca="b") as new:
                await new.send("new")
                self.assertEqual(await new.recv(), "new")
            with self.assertRaises(ssl.SSLCertVerificationError):
                tls_connect(self.tls_port, client_ctx("a")).close()
            # The old connection goes on with its session.
            await old.send("after" * 10000)
            self.assertEqual(await old.recv(), "after" * 10000)
            # A broken file is refused; the server keeps serving what it had.
            with open(os.path.join(self.live, "server.pem"), "w") as f:
                f.write("not a certificate\n")
            self.srv.signal(signal.SIGHUP)
            self.wait_log(r"WARN .*SIGHUP: TLS certificates not reloaded, the old ones stay")
            with tls_connect(self.tls_port, client_ctx("b")) as s:
                self.assertEqual(http_get(s)[0], 200)
            await old.close()
        self.run_async(run())


class Tls13OnlyTest(TlsServerCase):
    extra_settings = {"tls_min_version": "1.3", "tls_ticket_rotate_s": 0}

    def test_tls12_refused_and_no_tickets(self):
        with self.assertRaises(ssl.SSLError):
            tls_connect(self.tls_port, client_ctx(version=ssl.TLSVersion.TLSv1_2)).close()
        self.wait_log(r"TLS handshake failed: ")
        ctx = client_ctx()
        with tls_connect(self.tls_port, ctx) as s:
            self.assertEqual(s.version(), "TLSv1.3")
            self.assertEqual(http_get(s)[0], 200)
            session = s.session
        with tls_connect(self.tls_port, ctx, session=session) as s:
            self.assertEqual(http_get(s)[0], 200)
            self.assertFalse(s.session_reused)


class TicketRotationTest(TlsServerCase):
    extra_settings = {"tls_ticket_rotate_s": 2}

    def test_tickets_survive_one_rotation_not_two(self):
        # Lifetimes count in whole seconds in the libraries: 2 s periods leave a margin.
        ctx = client_ctx(version=ssl.TLSVersion.TLSv1_2)  # one ticket per handshake

        def ticket():
            with tls_connect(self.tls_port, ctx) as s:
                self.assertEqual(http_get(s)[0], 200)
                return s.session

        def resumes(session):
            with tls_connect(self.tls_port, ctx, session=session) as s:
                self.assertEqual(http_get(s)[0], 200)
                return s.session_reused

        self.assertTrue(resumes(ticket()))
        time.sleep(2.2)
        old = ticket()  # rotates first: sealed with a key at most a moment old
        time.sleep(2.2)
        # Its key is the previous one now: still accepted (and the ticket renewed).
        self.assertTrue(resumes(old))
        fresh = ticket()
        time.sleep(2.2)
        ticket()  # rotates: fresh's key is the previous one
        time.sleep(2.2)
        ticket()  # rotates again: fresh's key is gone
        self.assertFalse(resumes(fresh))


class BinaryTlsTest(TlsServerCase):
    """The binary protocol on binary_tls_listen: the same frames inside TLS."""

    extra_settings = {"binary_tls_listen": "127.0.0.1:0"}

    @property
    def bin_tls_port(self):
        return int(re.search(r"binary TLS on 127\.0\.0\.1:(\d+)", self.srv.read_log()).group(1))

    def test_hello_send_and_ping_over_tls(self):
        a = binclient.TcpClient(self.bin_tls_port, ssl_ctx=client_ctx("a"))
        self.addCleanup(a.close)
        self.assertEqual(a.hello(mint("tina"))[2]["user"], b"tina")
        b = binclient.TcpClient(self.srv.bin_port)  # the plain binary port, same server
        self.addCleanup(b.close)
        b.hello(mint("uma"))
        a.send("send", 2, client_id="t1", to="uma", body=b"\x00secret")
        self.assertEqual(a.recv_type("ack")[1], 2)
        self.assertEqual(b.recv_type("message")[2]["body"], b"\x00secret")
        a.send("ping", 3, data=b"x" * 5000)
        self.assertEqual(a.recv_type("pong"), ("pong", 3, {"data": b"x" * 5000}))

    def test_wrong_ca_and_plaintext_are_refused(self):
        with self.assertRaises(ssl.SSLCertVerificationError):
            binclient.TcpClient(self.bin_tls_port, ssl_ctx=client_ctx("b"))
        # A plaintext HELLO on the TLS port is no TLS record: the handshake fails and closes.
        raw = socket.create_connection((sbtest.HOST, self.bin_tls_port), timeout=TIMEOUT)
        self.addCleanup(raw.close)
        raw.sendall(binclient.encode("hello", 1, token=mint("vera")))
        self.assertTrue(closed_within(raw, 5))
        self.wait_log(r"TLS handshake failed")


class StartupTest(unittest.TestCase):
    def test_bad_files_stop_the_start(self):
        if not sbtest.SB_BIN:
            raise unittest.SkipTest("SB_BIN not set")
        data = tempfile.mkdtemp(prefix="sb-data-")
        self.addCleanup(shutil.rmtree, data, True)
        a, b = CERTS["a"], CERTS["b"]
        cases = [
            ({}, "TLS needs a certificate"),
            ({"tls_cert": "/nonexistent.pem", "tls_key": f"{a}/server.key"},
             "certificate /nonexistent.pem: No such file"),
            ({"tls_cert": f"{a}/server.pem", "tls_key": f"{b}/server.key"}, "does not match"),
            ({"tls_cert": f"{a}/server.pem", "tls_key": f"{a}/server.key",
              "tls_sni_file": f"{a}/ca.pem"}, "expected \"<hostname> <cert> <key>\""),
        ]
        for settings, message in cases:
            args = [sbtest.SB_BIN, "serve", "--listen", "127.0.0.1:0", "--tls-listen",
                    "127.0.0.1:0", "--data-dir", data] + sbtest.settings_to_args(settings)
            out = subprocess.run(args, capture_output=True, text=True, timeout=20)
            self.assertEqual(out.returncode, 1, out.stderr)
            self.assertIn(message, out.stderr)



class SdkTlsTest(TlsServerCase):
    """libswitchboard over TLS (tests/sdk/sdk_driver): tls:// on binary_tls_listen and wss:// on
    tls_listen, the certificate verified against the CA file; a certificate from another CA or
    for another name refused (-EKEYREJECTED, never connected); --insecure connects anyway."""

    extra_settings = {"binary_tls_listen": "127.0.0.1:0"}

    def driver(self, url, user, *extra):
        drv = os.path.join(os.path.dirname(sbtest.SB_BIN), "tests", "sdk_driver")
        if not os.access(drv, os.X_OK):
            self.skipTest("no tests/sdk_driver next to SB_BIN")
        token = subprocess.run([sbtest.SB_BIN, "token", "--sub", user], check=True,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        p = subprocess.Popen([drv, "--url", url, "--token", token, *extra], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        p.lines, p.cond = [], threading.Condition()

        def pump():
            for line in p.stdout:
                with p.cond:
                    p.lines.append(line.rstrip("\n"))
                    p.cond.notify_all()
        t = threading.Thread(target=pump, daemon=True)
        t.start()

        def stop():
            p.kill()
            p.wait(5)
            t.join(5)
            p.stdin.close()
            p.stdout.close()
        self.addCleanup(stop)
        return p

    def expect(self, p, pattern, timeout=TIMEOUT):
        """Waits for a line of p matching pattern (fullmatch) after the last one matched."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with p.cond:
            while True:
                start = getattr(p, "seen", 0)
                for i in range(start, len(p.lines)):
                    m = rx.fullmatch(p.lines[i])
                    if m:
                        p.seen = i + 1
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    self.fail(f"no line /{pattern}/ in {p.lines[start:][-20:]}")
                p.cond.wait(min(left, 0.2))

    def test_tls_and_wss_verified(self):
        bport = int(re.search(r"binary TLS on 127\.0\.0\.1:(\d+)",
                              self.srv.read_log()).group(1))
        ca = os.path.join(CERTS["a"], "ca.pem")
        alice = self.driver(f"tls://localhost:{bport}", "alice", "--ca", ca)
        bob = self.driver(f"wss://localhost:{self.tls_port}/ws", "bob", "--ca", ca)
        self.expect(alice, r"state connected alice .*")
        self.expect(bob, r"state connected bob .*")
        big = "x" * 60000  # several TLS records (16 KiB each), under max_body
        for who, to, body in ((alice, "bob", "over tls"), (bob, "alice", "over wss"),
                              (alice, "bob", big)):
            who.stdin.write(f"send - {to} - {body}\n")
            who.stdin.flush()
        self.expect(bob, r"msg dm:alice:bob \d alice 0 over tls")
        self.expect(alice, r"msg dm:alice:bob \d bob 0 over wss")
        self.expect(bob, r"msg dm:alice:bob \d alice 0 x{60000}")

    def test_refused_certificates(self):
        bport = int(re.search(r"binary TLS on 127\.0\.0\.1:(\d+)",
                              self.srv.read_log()).group(1))
        ekeyrejected = -129
        cases = (  # (url, options): each attempt fails verification
            (f"tls://localhost:{bport}", ("--ca", os.path.join(CERTS["b"], "ca.pem"))),
            (f"wss://localhost:{self.tls_port}/ws", ("--ca", os.path.join(CERTS["b"], "ca.pem"))),
            # The certificate names localhost (and 127.0.0.1, ::1), not another name.
            (f"tls://localhost:{bport}", ("--ca", os.path.join(CERTS["a"], "ca.pem"),
                                           "--server-name", "example.com")),
            (f"tls://127.0.0.1:{bport}", ("--ca", os.path.join(CERTS["other"], "ca.pem"),
                                           "--server-name", "127.0.0.2")),
        )
        for url, opts in cases:
            with self.subTest(url=url, opts=opts):
                p = self.driver(url, "carol", *opts)
                self.expect(p, rf"state disconnected {ekeyrejected}")
                self.expect(p, rf"state disconnected {ekeyrejected}")  # and again: retried
        # An address is checked as one; the name to check may differ from the host connected
        # to; --insecure checks nothing.
        for url, opts in ((f"tls://127.0.0.1:{bport}", ("--ca", os.path.join(CERTS["a"], "ca.pem"))),
                          (f"tls://127.0.0.1:{bport}",
                           ("--ca", os.path.join(CERTS["a"], "ca.pem"), "--server-name",
                            "localhost")),
                          (f"tls://127.0.0.1:{bport}", ("--insecure",)),
                          (f"wss://localhost:{self.tls_port}/ws",
                           ("--ca", os.path.join(CERTS["b"], "ca.pem"), "--insecure"))):
            with self.subTest(url=url, opts=opts):
                p = self.driver(url, "dave", *opts)
                self.expect(p, r"state connected dave .*")

    def test_plain_client_on_the_tls_port_and_a_bad_ca_file(self):
        bport = int(re.search(r"binary TLS on 127\.0\.0\.1:(\d+)",
                              self.srv.read_log()).group(1))
        p = self.driver(f"tcp://localhost:{bport}", "erin")
        self.expect(p, r"state disconnected -\d+")
        p = self.driver(f"tls://localhost:{bport}", "erin", "--ca", "/nonexistent/ca.pem")
        self.expect(p, r"rc create -22")


if __name__ == "__main__":
    unittest.main()
