"""Shared kit for switchboard's integration tests.

- Server: starts `$SB_BIN serve --listen 127.0.0.1:0 --workers 2 [--name value ...]` with stderr
  going to a temporary log file, reads the port back from the "listening on" line, and stops it by
  PID (SIGTERM, then SIGKILL after a deadline).
- ServerTestCase: a unittest base class with one server per class. After every test the server must
  still run and its log must hold no ERROR line or sanitizer report; after the class the server must
  also exit cleanly with status 0.
- RawWS / HttpConn: plain-socket clients for the cases a real client library refuses to produce.

Everything here bounds its waits; nothing listens on anything but loopback.
"""

import asyncio
import base64
import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SB_BIN = os.environ.get("SB_BIN", "")
HOST = "127.0.0.1"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Opcodes (RFC 6455 section 5.2).
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# Lines that mean a server bug. Bad client input is logged at INFO/WARN at most.
LOG_FAILURE_PATTERNS = (
    re.compile(r" ERROR "),
    re.compile(r"ERROR: AddressSanitizer"),
    re.compile(r"runtime error:"),
    re.compile(r"LeakSanitizer"),
    re.compile(r"ERROR: \w+Sanitizer"),
)
LISTEN_RE = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
BINARY_RE = re.compile(r"listening on .*binary on [^ ]+:(\d+)")

STARTUP_TIMEOUT_S = 10.0
START_ATTEMPTS = 5

# Test clients connect from another loopback address. Sockets a client closes first sit in
# TIME_WAIT for a minute; on 127.0.0.2 they don't hold ports that bind(127.0.0.1:0) (every test
# server's listener) could otherwise pick. Thousands of connect/close cycles would else starve it.
CLIENT_HOST = "127.0.0.2"
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def client_socket():
    """A TCP socket bound to CLIENT_HOST (port chosen at connect), or unbound if that fails."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((CLIENT_HOST, 0))
    except OSError:
        s.close()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    return s


def binary_is_sanitized(path=None):
    """True when the server binary carries AddressSanitizer (RSS figures then mean little)."""
    try:
        with open(path or SB_BIN, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def _die_with_parent():
    """Runs in the child before exec: the server gets SIGKILL if the test process dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # noqa: BLE001 - best effort only
        pass


def settings_to_args(settings):
    """{"handshake_timeout_ms": 500} -> ["--handshake-timeout-ms", "500"]."""
    args = []
    for name, value in settings.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    return args


class Server:
    """One switchboard process. Use start()/stop() or `with Server(...) as srv:`."""

    def __init__(self, workers=2, env=None, **settings):
        # The binary port too listens on a free port of its own (its default, 7000, is shared).
        self.settings = {"workers": workers, "binary_listen": f"{HOST}:0"}
        self.settings.update(settings)
        # Each server keeps its history in a temporary directory of its own (removed with its
        # log) unless the test names one: servers of parallel suites never share logs.
        self.own_data_dir = None
        if "data_dir" not in self.settings:
            self.own_data_dir = tempfile.mkdtemp(prefix="sb-data-")
            self.settings["data_dir"] = self.own_data_dir
        self.env = env
        self.proc = None
        self.port = None
        self.bin_port = None  # the binary protocol's port (raw TCP), when it listens
        self.log_path = None
        self._log_checked = 0  # bytes of the log already checked by check_log()
        self.exit_code = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self):
        if not SB_BIN or not os.access(SB_BIN, os.X_OK):
            raise unittest.SkipTest("SB_BIN is not set to an executable switchboard binary")
        # bind(127.0.0.1:0) fails with EADDRINUSE while TIME_WAIT sockets of busy neighbours
        # (load generators, other suites) fill the ephemeral range; that is not a server bug.
        for attempt in range(START_ATTEMPTS):
            try:
                return self._start_once()
            except AssertionError as e:
                if "Address already in use" not in str(e) or attempt + 1 == START_ATTEMPTS:
                    raise
                self.remove_log()
                time.sleep(2.0)

    def _start_once(self):
        fd, self.log_path = tempfile.mkstemp(prefix="sb-test-", suffix=".log")
        args = [SB_BIN, "serve", "--listen", f"{HOST}:0"] + settings_to_args(self.settings)
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                         env=env, preexec_fn=_die_with_parent)
        finally:
            os.close(fd)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.read_log())
            if m:
                self.port = int(m.group(1))
                b = BINARY_RE.search(self.read_log())
                self.bin_port = int(b.group(1)) if b else None
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        log = self.read_log()
        self.kill()
        raise AssertionError(f"server did not log 'listening on {HOST}:<port>' within "
                             f"{STARTUP_TIMEOUT_S} s (exit code {self.proc.returncode}); "
                             f"args {args}\n--- log ---\n{log[-4000:]}")

    def signal(self, signum):
        self.proc.send_signal(signum)

    def wait(self, timeout):
        """Waits for the exit and returns the status, or None after timeout seconds."""
        try:
            self.exit_code = self.proc.wait(timeout)
            return self.exit_code
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=15.0):
        """SIGTERM, then SIGKILL after timeout. Returns the exit status (negative = signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.kill()
        self.exit_code = self.proc.returncode
        return self.exit_code

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None:
            self.exit_code = self.proc.returncode

    def remove_log(self):
        if self.log_path and os.path.exists(self.log_path):
            os.unlink(self.log_path)
        if self.own_data_dir and not self.is_running():
            shutil.rmtree(self.own_data_dir, ignore_errors=True)

    def is_running(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.remove_log()
        return False

    # -- log -----------------------------------------------------------------------------------

    def read_log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def log_tail(self, nbytes=6000):
        return self.read_log()[-nbytes:]

    def bad_log_lines(self, since_start=False):
        """Lines added since the last call (or all, with since_start) that mean a server bug."""
        text = self.read_log()
        start = 0 if since_start else self._log_checked
        # Only whole lines; a line still being written is checked next time.
        end = text.rfind("\n") + 1 if self.is_running() else len(text)
        end = max(end, start)
        self._log_checked = end
        return [line for line in text[start:end].splitlines()
                if any(p.search(line) for p in LOG_FAILURE_PATTERNS)]

    # -- /proc ---------------------------------------------------------------------------------

    @property
    def pid(self):
        return self.proc.pid

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def fd_listing(self):
        out = []
        for name in sorted(os.listdir(f"/proc/{self.pid}/fd"), key=int):
            try:
                out.append(f"{name} -> {os.readlink(f'/proc/{self.pid}/fd/{name}')}")
            except OSError:
                pass
        return out

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc/PID/status")

    # -- helpers -------------------------------------------------------------------------------

    def uri(self, path="/echo"):
        return f"ws://{HOST}:{self.port}{path}"

    def health(self, timeout=5.0):
        """GET /api/health on a fresh connection; returns (status, headers, parsed JSON body)."""
        with HttpConn(self.port, timeout=timeout) as c:
            c.send(b"GET /api/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            r = c.read_response(timeout)
        body = json.loads(r.body.decode()) if r.body else None
        return r.status, r.headers, body


def _result_failed(test):
    """True when unittest already recorded a failure or error for test (or one of its subtests)."""
    result = getattr(getattr(test, "_outcome", None), "result", None)
    if result is None:
        return False
    for t, _ in list(result.failures) + list(result.errors):
        if t is test or getattr(t, "test_case", None) is test:
            return True
    return False


class ServerTestCase(unittest.TestCase):
    """One server per test class, configured by server_settings; checked after every test."""

    server_settings = {}
    server_env = None
    server = None
    _class_failed = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._class_failed = False
        cls.server = Server(env=cls.server_env, **cls.server_settings)
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        srv = cls.server
        cls.server = None
        if srv is None:
            return
        code = srv.stop(timeout=20.0)
        bad = srv.bad_log_lines(since_start=True)
        if cls._class_failed or bad or code != 0:
            sys.stderr.write(f"\n--- server log tail ({srv.log_path}) ---\n{srv.log_tail()}\n")
        else:
            srv.remove_log()
        super().tearDownClass()
        if bad:
            raise AssertionError("server log has error/sanitizer lines:\n" + "\n".join(bad[:20]))
        if code != 0:
            raise AssertionError(f"server exited with status {code} on SIGTERM (expected 0)")

    def setUp(self):
        super().setUp()
        self.addCleanup(self._check_server)

    def _check_server(self):
        srv = type(self).server
        if srv is None:
            return
        if _result_failed(self):
            type(self)._class_failed = True
        # Give the server a moment to log what the test just provoked.
        time.sleep(0.05)
        bad = srv.bad_log_lines()
        if not srv.is_running():
            type(self)._class_failed = True
            log = srv.log_tail()
            # Restart so the remaining tests of the class still run against a server.
            code = srv.proc.returncode
            type(self).server = Server(env=type(self).server_env, **type(self).server_settings)
            type(self).server.start()
            self.fail(f"server died during the test (status {code})\n--- log tail ---\n{log}")
        if bad:
            type(self)._class_failed = True
            self.fail("server log has error/sanitizer lines:\n" + "\n".join(bad[:20]))

    @property
    def port(self):
        return type(self).server.port

    @property
    def srv(self):
        return type(self).server

    def run_async(self, coro, timeout=60.0):
        """Runs coro on a fresh event loop with an overall deadline."""
        return asyncio.run(asyncio.wait_for(coro, timeout))


# --------------------------------------------------------------------------------------------
# Plain HTTP over a socket
# --------------------------------------------------------------------------------------------


class HttpResponse:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case name -> value (last one wins)
        self.body = body
        self.raw_head = raw_head

    def __repr__(self):
        return f"<HttpResponse {self.status} {self.reason!r} {self.headers!r} {self.body[:200]!r}>"


class PeerClosed(Exception):
    """The server closed the TCP connection (EOF or reset)."""


class HttpConn:
    """A raw HTTP/1.1 client connection that can send anything and parse responses."""

    def __init__(self, port, timeout=5.0):
        self.sock = client_socket()
        self.sock.settimeout(timeout)
        try:
            self.sock.connect((HOST, port))
        except BaseException:
            self.sock.close()
            raise
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        """Sends data; returns False if the server already closed or reset the connection."""
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return False

    def _fill(self, deadline):
        if self.eof:
            raise PeerClosed()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for the server")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("timed out waiting for the server") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise PeerClosed()
        self.buf += chunk

    def _read_until(self, sep, deadline):
        while sep not in self.buf:
            self._fill(deadline)
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self, timeout=5.0):
        """Reads a status line and headers; returns (status, reason, headers, raw_head)."""
        deadline = time.monotonic() + timeout
        head = self._read_until(b"\r\n\r\n", deadline)
        lines = head[:-4].split(b"\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise AssertionError(f"bad status line {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise AssertionError(f"bad response header line {line!r}")
            headers[name.decode().strip().lower()] = value.decode().strip()
        return int(m.group(1)), (m.group(2) or b"").decode(), headers, head

    def read_response(self, timeout=5.0, head_only=False):
        """Reads one whole response (Content-Length, chunked, or until close)."""
        deadline = time.monotonic() + timeout
        status, reason, headers, head = self.read_head(timeout)
        if head_only or status == 101 or status == 204 or status == 304:
            return HttpResponse(status, reason, headers, b"", head)
        if "content-length" in headers:
            body = self._read_exact(int(headers["content-length"]), deadline)
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(self._read_until(b"\r\n", deadline).split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n", deadline)  # no trailers expected
                    break
                body += self._read_exact(size, deadline)
                self._read_exact(2, deadline)
        else:
            while True:
                try:
                    self._fill(deadline)
                except PeerClosed:
                    break
            body, self.buf = self.buf, b""
        return HttpResponse(status, reason, headers, body, head)

    def closed_within(self, timeout):
        """True if the server closes (EOF or RST) within timeout; buffered bytes are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._fill(deadline)
            except PeerClosed:
                return True
            except TimeoutError:
                return False


def http_request(port, data, timeout=5.0, wait_close=0.0):
    """Sends raw bytes on a new connection and reads one response. Returns (response, closed):
    with wait_close > 0, closed tells whether the server closed the connection within that many
    seconds after the response; otherwise closed is None."""
    with HttpConn(port, timeout) as c:
        c.send(data)
        r = c.read_response(timeout)
        return r, (c.closed_within(wait_close) if wait_close > 0 else None)


# --------------------------------------------------------------------------------------------
# Raw WebSocket client
# --------------------------------------------------------------------------------------------


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def mask_payload(data, key):
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def encode_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, mask_key=None, length=None):
    """One frame. rsv is the 3-bit RSV field (4 = RSV1, 2 = RSV2, 1 = RSV3); length overrides
    the encoded payload length (to lie about it)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        key = mask_key if mask_key is not None else os.urandom(4)
        return head + key + mask_payload(payload, key)
    return head + payload


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


class Frame:
    def __init__(self, fin, rsv, opcode, payload):
        self.fin, self.rsv, self.opcode, self.payload = fin, rsv, opcode, payload

    @property
    def close_code(self):
        """The status code of a close frame; 1005 when it has none."""
        if len(self.payload) >= 2:
            return struct.unpack("!H", self.payload[:2])[0]
        return 1005

    def __repr__(self):
        return (f"<Frame op={self.opcode:#x} fin={self.fin} rsv={self.rsv} "
                f"len={len(self.payload)} {self.payload[:40]!r}>")


class RawWS(HttpConn):
    """A WebSocket client over a plain socket that can send any frame, valid or not."""

    def __init__(self, port, path="/echo", timeout=5.0, handshake=True):
        super().__init__(port, timeout)
        self.port = port
        self.path = path
        self.response = None
        if handshake:
            self.handshake()

    def handshake(self, extra_headers=b"", timeout=5.0):
        key = new_key()
        req = (f"GET {self.path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n").encode() + extra_headers + b"\r\n"
        self.sock.settimeout(timeout)
        self.sock.sendall(req)
        status, reason, headers, head = self.read_head(timeout)
        self.response = HttpResponse(status, reason, headers, b"", head)
        if status != 101:
            raise AssertionError(f"handshake got {status} {reason}, expected 101")
        if headers.get("sec-websocket-accept") != ws_accept(key):
            got = headers.get("sec-websocket-accept")
            raise AssertionError(f"bad Sec-WebSocket-Accept {got!r}")
        return self.response

    def send_frame(self, opcode, payload=b"", **kw):
        """Sends one frame (see encode_frame); returns False if the server already went away."""
        return self.send(encode_frame(opcode, payload, **kw))

    def send_close(self, code=None, reason=b""):
        return self.send_frame(CLOSE, b"" if code is None else close_payload(code, reason))

    def read_frame(self, timeout=5.0):
        """Reads one server frame; raises PeerClosed on EOF/RST and TimeoutError on timeout."""
        deadline = time.monotonic() + timeout
        b0, b1 = self._read_exact(2, deadline)
        if b1 & 0x80:
            raise AssertionError("server sent a masked frame")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read_exact(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read_exact(8, deadline))[0]
        payload = self._read_exact(n, deadline)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, payload)

    def read_message(self, timeout=5.0, answer_pings=True):
        """Reads a whole data message; returns (opcode, payload). Control frames in between are
        answered (pings) or skipped (pongs); a close frame raises AssertionError."""
        deadline = time.monotonic() + timeout
        opcode, parts = None, []
        while True:
            f = self.read_frame(max(0.0, deadline - time.monotonic()))
            if f.rsv:
                raise AssertionError(f"server frame with RSV bits: {f!r}")
            if f.opcode == PING:
                if answer_pings:
                    self.send_frame(PONG, f.payload)
                continue
            if f.opcode == PONG:
                continue
            if f.opcode == CLOSE:
                raise AssertionError(f"unexpected close {f.close_code} {f.payload[2:]!r}")
            if opcode is None:
                if f.opcode not in (TEXT, BINARY):
                    raise AssertionError(f"server message starts with opcode {f.opcode:#x}")
                opcode = f.opcode
            elif f.opcode != CONT:
                raise AssertionError(f"server interleaved opcode {f.opcode:#x} in a message")
            parts.append(f.payload)
            if f.fin:
                return opcode, b"".join(parts)

    def read_close(self, timeout=5.0):
        """Reads frames until a close frame (skipping pings/pongs); returns the Frame. Raises
        AssertionError if a data frame or EOF comes first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                f = self.read_frame(max(0.0, deadline - time.monotonic()))
            except PeerClosed:
                raise AssertionError("server closed TCP without sending a close frame") from None
            except TimeoutError:
                raise AssertionError(f"no close frame within {timeout} s") from None
            if f.opcode in (PING, PONG):
                continue
            if f.opcode != CLOSE:
                raise AssertionError(f"expected a close frame, got {f!r}")
            return f

    def expect_close(self, test, code, timeout=5.0, eof_timeout=5.0, reply=False):
        """Asserts the server sends close `code` and then closes TCP. The client does not answer
        the close unless reply is set (the server must close TCP either way)."""
        f = self.read_close(timeout)
        test.assertEqual(f.close_code, code, f"close frame {f.payload!r}")
        if len(f.payload) > 2:
            try:
                f.payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                test.fail(f"close reason is not UTF-8: {f.payload!r}")
        if reply:
            self.send_close(code)
        test.assertTrue(self.closed_within(eof_timeout),
                        f"server did not close TCP within {eof_timeout} s after close {code}")
        return f

    def echo(self, opcode, payload, timeout=5.0):
        """Sends one message and returns the echoed (opcode, payload)."""
        self.send_frame(opcode, payload)
        return self.read_message(timeout)

    def set_linger_rst(self):
        """Makes close() send a RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def random_text(n, rng):
    """A str whose UTF-8 encoding is exactly n bytes, mixing 1- to 4-byte characters."""
    out, size = [], 0
    pools = ("abcdefghijklmnopqrstuvwxyz0123456789 ", "éßøΩж", "€中ह", "😀🚀𝄞")
    while size < n:
        width = rng.randint(1, min(4, n - size))
        out.append(rng.choice(pools[width - 1]))
        size += width
    s = "".join(out)
    assert len(s.encode()) == n
    return s


def wait_until(pred, timeout, interval=0.05):
    """Polls pred() until it is truthy or timeout seconds pass; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def shutdown_and_join(sock, thread, timeout=5.0):
    """Closes a socket that `thread` may be blocked on (accept() or recv()): shutdown() wakes the
    thread, which must have returned before close() frees the descriptor number. A thread still
    inside the call would otherwise go on with whatever socket reuses that number next."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected: recv() already returned
    if thread is not threading.current_thread():
        thread.join(timeout)
    sock.close()
