"""libswitchboard against a real server: install + pkg-config build of the example; send and
receive, receipts, typing, presence and groups over raw TCP and WebSocket; reconnect after the
server is killed (SIGKILL, fsync = always) and restarted, and after the connection is cut under
the client mid-stream, with every message reaching the application exactly once and in order and
every send completing once; a sending thread next to the receiving loop under ThreadSanitizer;
sbchat, two clients talking.

The SDK side is tests/sdk/sdk_driver.c (built next to the server binary), driven by lines on its
stdin; a small TCP proxy of this file stands between it and the server where a test needs to cut
connections or move the server to another port."""

import os
import queue
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import sbtest

BUILD_DIR = os.path.dirname(sbtest.SB_BIN) if sbtest.SB_BIN else ""
DRIVER = os.path.join(BUILD_DIR, "tests", "sdk_driver")
DRIVER_TSAN = os.path.join(BUILD_DIR, "tests", "sdk_driver_tsan")
SBCHAT = os.path.join(BUILD_DIR, "tools", "sbchat", "sbchat")
SRC_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

_tokens = {}


def mint(sub):
    if sub not in _tokens:
        out = subprocess.run([sbtest.SB_BIN, "token", "--sub", sub], check=True,
                             capture_output=True, text=True, timeout=10)
        _tokens[sub] = out.stdout.strip()
    return _tokens[sub]


def dm(a, b):
    return "dm:" + ":".join(sorted((a, b)))


class Lines:
    """A process whose stdout lines are collected by a thread; wait for the ones you need."""

    def __init__(self, args, env=None):
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, bufsize=1)
        self.lines = []
        self.cond = threading.Condition()
        self.stderr = []
        self.threads = [threading.Thread(target=self._pump, args=(f, into), daemon=True)
                        for f, into in ((self.proc.stdout, self.lines),
                                        (self.proc.stderr, self.stderr))]
        for t in self.threads:
            t.start()

    def _pump(self, f, into):
        for line in f:
            with self.cond:
                into.append(line.rstrip("\n"))
                self.cond.notify_all()

    def cmd(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, pred, timeout=15.0, what=""):
        """Waits until pred(lines) is truthy and returns its value."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = pred(self.lines)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; last lines:\n" +
                                         "\n".join(self.lines[-30:]) + "\nstderr:\n" +
                                         "\n".join(self.stderr[-30:]))
                self.cond.wait(min(left, 0.2))

    def wait_line(self, pattern, timeout=15.0, start=0):
        rx = re.compile(pattern)

        def find(lines):
            for line in lines[start:]:
                m = rx.fullmatch(line)
                if m:
                    return m
            return None
        return self.wait(find, timeout, what=f"/{pattern}/")

    def matching(self, pattern):
        rx = re.compile(pattern)
        with self.cond:
            return [m for m in (rx.fullmatch(x) for x in self.lines) if m]

    def close(self, timeout=10.0):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close_pipes()
        return self.proc.returncode

    def _close_pipes(self):
        for t in self.threads:
            t.join(5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass

    def dispose(self):
        """Kills the process if it still runs and closes its pipes (for tearDown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._close_pipes()


class Driver(Lines):
    def __init__(self, url, user, *extra):
        super().__init__([DRIVER, "--url", url, "--token", mint(user)] + list(extra))
        self.user = user

    def quit(self):
        self.cmd("quit")
        code = self.close()
        assert code == 0, (code, self.stderr[-20:])


class Proxy:
    """A loopback TCP proxy to target_port: cut() closes every connection through it."""

    def __init__(self, target_port):
        self.target = target_port
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.pairs = []
        self.lock = threading.Lock()
        self.closed = False
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(("127.0.0.1", self.target), timeout=2)
                s.settimeout(None)  # the timeout is for the connect only: idle is fine
            except OSError:
                c.close()  # the server is down: the client sees a closed connection
                continue
            pumps = [threading.Thread(target=self._pump, args=(a, b), daemon=True)
                     for a, b in ((c, s), (s, c))]
            with self.lock:
                self.pairs.append((c, s, pumps))
            for t in pumps:
                t.start()

    def _pump(self, a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for c, s, pumps in pairs:
            for x in (c, s):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            # The pumps must be out of recv() before the descriptors are freed for reuse.
            for t in pumps:
                t.join(5)
            c.close()
            s.close()
        return len(pairs)

    def close(self):
        self.closed = True
        sbtest.shutdown_and_join(self.lsock, self.acceptor)
        self.cut()


def start_server(**settings):
    srv = sbtest.Server(**settings).start()
    if getattr(srv, "bin_port", None) is None:
        srv.stop()
        srv.remove_log()
        raise unittest.SkipTest("this server has no binary protocol port")
    return srv


def check_log(test, srv):
    bad = srv.bad_log_lines(since_start=True)
    test.assertFalse(bad, "server log has error/sanitizer lines:\n" + "\n".join(bad[:20]))


def seqs_of(driver, conv):
    return [int(m.group(1)) for m in driver.matching(rf"msg {re.escape(conv)} (\d+) .*")]


class SdkInstallTest(unittest.TestCase):
    """cmake --install, then the example built against the installed copy via pkg-config."""

    def setUp(self):
        if not os.path.isdir(BUILD_DIR):
            raise unittest.SkipTest("SB_BIN is not set")
        self.tmp = tempfile.mkdtemp(prefix="sb-sdk-install-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_install_and_build_example(self):
        prefix = os.path.join(self.tmp, "prefix")
        subprocess.run(["cmake", "--install", BUILD_DIR, "--prefix", prefix], check=True,
                       capture_output=True, timeout=120)
        pcs = [os.path.join(d, f) for d, _, fs in os.walk(prefix) for f in fs
               if f == "switchboard.pc"]
        self.assertEqual(len(pcs), 1, pcs)
        libdir = os.path.dirname(os.path.dirname(pcs[0]))
        for name in ("libswitchboard.a", "libswitchboard.so"):
            self.assertTrue(os.path.exists(os.path.join(libdir, name)), name)
        self.assertTrue(os.path.exists(os.path.join(prefix, "include", "switchboard.h")))
        self.assertTrue(os.access(os.path.join(prefix, "bin", "sbchat"), os.X_OK))
        # Only the public API leaves the shared library.
        nm = subprocess.run(["nm", "-D", "--defined-only", os.path.join(libdir, "libswitchboard.so")],
                            check=True, capture_output=True, text=True).stdout
        exported = [line.split()[-1] for line in nm.splitlines() if line.strip()]
        self.assertTrue(exported)
        self.assertEqual([s for s in exported if not s.startswith("sb_client_")], [])

        env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]))
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "switchboard"], env=env,
                               check=True, capture_output=True, text=True).stdout.split()
        self.assertIn("-lswitchboard", flags)
        # An ASan build of the library needs the sanitizer runtime in the program too.
        san = ["-fsanitize=address,undefined"] if sbtest.binary_is_sanitized() else []
        src = os.path.join(SRC_DIR, "sdk", "examples", "hello.c")
        shared = os.path.join(self.tmp, "hello")
        subprocess.run(["cc", "-std=c17", "-Wall", "-Werror", src, "-o", shared] + flags + san +
                       ["-Wl,-rpath," + libdir], check=True, timeout=120)
        static_flags = subprocess.run(["pkg-config", "--static", "--cflags", "--libs",
                                       "switchboard"], env=env, check=True, capture_output=True,
                                      text=True).stdout.split()
        static = os.path.join(self.tmp, "hello-static")
        subprocess.run(["cc", "-std=c17", "-Wall", "-Werror", src, "-o", static,
                        "-Wl,-Bstatic"] + static_flags + ["-Wl,-Bdynamic"] + san,
                       check=True, timeout=120)
        ldd = subprocess.run(["ldd", static], capture_output=True, text=True).stdout
        self.assertNotIn("libswitchboard", ldd)
        for exe in (shared, static):
            usage = subprocess.run([exe], capture_output=True, text=True, timeout=10)
            self.assertEqual(usage.returncode, 64, usage.stderr)
        # And it talks to a server, when this one speaks the binary protocol.
        try:
            srv = start_server()
        except unittest.SkipTest:
            return
        try:
            for i, exe in enumerate((shared, static)):
                run = subprocess.run([exe, f"tcp://127.0.0.1:{srv.bin_port}", mint("alice"),
                                      "bob", "hi bob"], capture_output=True, text=True,
                                     timeout=30)
                self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
                self.assertIn(f"sent: conv dm:alice:bob seq {i + 1} ", run.stdout)
        finally:
            self.assertEqual(srv.stop(), 0)
            check_log(self, srv)
            srv.remove_log()


class SdkTest(unittest.TestCase):
    """One server for the class; each test uses its own users."""

    server = None

    @classmethod
    def setUpClass(cls):
        if not os.access(DRIVER, os.X_OK):
            raise unittest.SkipTest(f"no SDK driver at {DRIVER}")
        cls.server = start_server()

    @classmethod
    def tearDownClass(cls):
        srv, cls.server = cls.server, None
        if srv is not None:
            code = srv.stop(timeout=20)
            bad = srv.bad_log_lines(since_start=True)
            if bad or code != 0:
                raise AssertionError(f"server exit {code}; bad log lines:\n" + "\n".join(bad[:20]))
            srv.remove_log()

    def setUp(self):
        self.drivers = []

    def tearDown(self):
        for d in self.drivers:
            d.dispose()

    def tcp(self):
        return f"tcp://127.0.0.1:{self.server.bin_port}"

    def ws(self):
        return f"ws://127.0.0.1:{self.server.port}/ws"

    def driver(self, url, user, *extra, connected=True):
        d = Driver(url, user, *extra)
        self.drivers.append(d)
        if connected:
            d.wait_line(rf"state connected {user} \S+ \d+")
        return d

    def converse(self, url, a, b):
        alice = self.driver(url, a)
        bob = self.driver(url, b)
        conv = dm(a, b)
        alice.cmd(f"send - {b} c1 hello {b}")
        alice.wait_line(rf"ack c1 {conv} 1 0")
        bob.wait_line(rf"msg {conv} 1 {a} 0 hello {b}")
        bob.cmd(f"send {conv} - c2 back at you")
        bob.wait_line(rf"ack c2 {conv} 2 0")
        alice.wait_line(rf"msg {conv} 2 {b} 0 back at you")
        bob.cmd(f"mark {conv} 1 read")
        alice.wait_line(rf"receipt {conv} {b} read 1")
        bob.cmd(f"typing {conv}")
        alice.wait_line(rf"typing {conv} {b}")
        alice.cmd(f"sub {b}")
        alice.wait_line(rf"presence {b} online")
        bob.quit()
        alice.wait_line(rf"presence {b} offline")
        # A retry with the same client id is the original ACK, marked duplicate.
        alice.cmd(f"send - {b} c1 hello {b}")
        alice.wait_line(rf"ack c1 {conv} 1 1")
        alice.quit()

    def test_send_receive_receipts_typing_presence_tcp(self):
        self.converse(self.tcp(), "tcp_alice", "tcp_bob")

    def test_send_receive_receipts_typing_presence_websocket(self):
        self.converse(self.ws(), "ws_alice", "ws_bob")

    def test_errors_complete_requests(self):
        d = self.driver(self.tcp(), "err_alice")
        d.cmd("send g:00000000deadbeef - e1 nobody home")
        d.wait_line(r"senderr e1 [34]")  # forbidden or not_found
        d.cmd("get g:00000000deadbeef")
        d.wait_line(r"conv [34]")
        d.cmd("send - - x nothing")  # neither conv nor to
        d.wait_line(r"rc send -22")
        d.quit()
        # A refused token: the reason, then a disconnect with -EACCES (and retries), on both.
        for url in (self.tcp(), self.ws()):
            bad = Lines([DRIVER, "--url", url, "--token", "not.a.token"])
            self.drivers.append(bad)
            bad.wait_line(r"state disconnected -13")
            self.assertFalse(bad.matching(r"state connected .*"))
            bad.cmd("quit")
            self.assertEqual(bad.close(), 0)

    def test_groups(self):
        url = self.tcp()
        owner = self.driver(url, "grp_owner")
        bob = self.driver(url, "grp_bob")
        owner.cmd("create team grp_bob")
        m = owner.wait_line(r"conv 0 (g:[0-9a-f]+) team grp_owner (\S+)")
        conv = m.group(1)
        self.assertEqual(sorted(m.group(2).split(",")), ["grp_bob", "grp_owner"])
        owner.cmd(f"add {conv} grp_carol")
        owner.wait_line(rf"conv 0 {conv} team grp_owner \S*grp_carol\S*")
        owner.cmd(f"rename {conv} crew")
        owner.wait_line(rf"conv 0 {conv} crew grp_owner \S+")
        for op in ("promote", "demote"):
            start = len(owner.lines)  # before the command: the answer may come at once
            owner.cmd(f"{op} {conv} grp_bob")
            owner.wait_line(rf"conv 0 {conv} crew .*", start=start)
        owner.cmd(f"remove {conv} grp_carol")
        owner.wait_line(rf"conv 0 {conv} crew grp_owner (?!.*grp_carol)\S+")
        owner.cmd(f"send {conv} - g1 hi team")
        owner.wait_line(rf"ack g1 {conv} \d+ 0")
        # bob sees the changes as system messages and the message, in seq order, once each.
        bob.wait_line(rf"msg {conv} \d+ grp_owner 0 hi team")
        seqs = seqs_of(bob, conv)
        self.assertEqual(seqs, sorted(set(seqs)))
        self.assertTrue(bob.matching(rf"msg {conv} \d+ grp_owner 3 "), bob.lines)  # renamed
        owner.cmd("list")
        owner.wait_line(rf"convs 0 .*{conv}:\d+.*")
        bob.cmd(f"get {conv}")
        bob.wait_line(rf"conv 0 {conv} crew grp_owner \S+")
        bob.cmd(f"leave {conv}")
        bob.wait_line(rf"conv 0 {conv} crew grp_owner (?!.*grp_bob)\S+")
        owner.quit()
        bob.quit()

    def test_resume_table_across_processes(self):
        url = self.tcp()
        alice = self.driver(url, "pos_alice")
        conv = dm("pos_alice", "pos_bob")
        bob = self.driver(url, "pos_bob")
        alice.cmd("sendn pos_bob 5 first")
        bob.wait_line(rf"msg {conv} 5 pos_alice 0 first-4")
        bob.cmd(f"pos {conv}")
        bob.wait_line(rf"pos {conv} 5")
        bob.quit()
        alice.cmd("sendn pos_bob 3 second")
        alice.wait(lambda ls: len([x for x in ls if x.startswith("ack ")]) == 8, what="8 acks")
        # A new process starts from the position the last one exported: only the new messages.
        bob2 = self.driver(url, "pos_bob", connected=False)
        bob2.cmd(f"setpos {conv} 5")
        bob2.wait_line(rf"msg {conv} 8 pos_alice 0 second-2")
        self.assertEqual(seqs_of(bob2, conv), [6, 7, 8])
        # A fresh process without positions starts at what arrives, not at the history.
        bob3 = self.driver(url, "pos_bob")
        alice.cmd("send - pos_bob t1 third")
        bob3.wait_line(rf"msg {conv} 9 pos_alice 0 third")
        self.assertEqual(seqs_of(bob3, conv), [9])
        # Position 0 fetches the conversation's history, through the same ordered path.
        bob4 = self.driver(url, "pos_bob")
        bob4.cmd(f"setpos {conv} 0")
        bob4.wait_line(rf"msg {conv} 9 pos_alice 0 third")
        self.assertEqual(seqs_of(bob4, conv), list(range(1, 10)))
        for d in (alice, bob2, bob3, bob4):
            d.quit()

    def test_thread_safety_under_tsan(self):
        exe = DRIVER_TSAN if os.access(DRIVER_TSAN, os.X_OK) else DRIVER
        n = 1500
        run = subprocess.run([exe, "--url", self.tcp(), "--token", mint("ts_a"), "--stress",
                              str(n), "--peer-token", mint("ts_b"), "--users", "ts_a:ts_b"],
                             capture_output=True, text=True, timeout=280,
                             env=dict(os.environ, TSAN_OPTIONS="halt_on_error=1 exitcode=66"))
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr[-6000:])
        self.assertNotIn("ThreadSanitizer", run.stderr)
        self.assertIn(f"stress 0 acks {n} got {n} errors 0", run.stdout)
        self.assertIn(f"stress 1 acks {n} got {n} errors 0", run.stdout)

    def test_sbchat_two_clients_talk(self):
        if not os.access(SBCHAT, os.X_OK):
            self.skipTest("no sbchat")
        url = self.tcp()
        alice = Lines([SBCHAT, "--url", url, "--token", mint("chat_alice"), "--to", "chat_bob"])
        bob = Lines([SBCHAT, "--url", url, "--token", mint("chat_bob")])
        self.drivers += [alice, bob]
        conv = dm("chat_alice", "chat_bob")
        alice.wait_line(r"\* connected as chat_alice .*")
        bob.wait_line(r"\* connected as chat_bob .*")
        bob.cmd("/who chat_alice")
        bob.wait_line(r"\* chat_alice is online")
        alice.cmd("hello bob")
        alice.wait_line(rf"\[{conv} #1\] \(sent\)")
        bob.wait_line(rf"\[{conv} #1\] chat_alice: hello bob")
        alice.wait_line(rf"\[{conv}\] chat_bob received up to #1")
        bob.cmd("/typing")
        alice.wait_line(rf"\[{conv}\] chat_bob is typing")
        bob.cmd("hi alice")
        alice.wait_line(rf"\[{conv} #2\] chat_bob: hi alice")
        # /read marks what bob has seen, and his own #2 counts once its ACK is in: wait for it.
        bob.wait_line(rf"\[{conv} #2\] \(sent\)")
        bob.cmd("/read")
        alice.wait_line(rf"\[{conv}\] chat_bob read up to #2")
        alice.cmd("/quit")
        bob.wait_line(r"\* chat_alice is offline")
        bob.cmd("/quit")
        self.assertEqual(alice.close(), 0)
        self.assertEqual(bob.close(), 0)


class SdkReconnectTest(unittest.TestCase):
    """Servers killed and restarted, connections cut: each message once, in order."""

    def setUp(self):
        if not os.access(DRIVER, os.X_OK):
            raise unittest.SkipTest(f"no SDK driver at {DRIVER}")
        self.data_dir = tempfile.mkdtemp(prefix="sb-sdk-")
        self.servers = []
        self.drivers = []
        self.proxy = None

    def tearDown(self):
        for d in self.drivers:
            d.dispose()
        if self.proxy is not None:
            self.proxy.close()
        for srv in self.servers:
            if srv.is_running():
                srv.kill()
            srv.remove_log()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def start(self):
        srv = start_server(data_dir=self.data_dir, fsync="always")
        self.servers.append(srv)
        return srv

    def driver(self, user, *extra):
        d = Driver(f"tcp://127.0.0.1:{self.proxy.port}", user, *extra)
        self.drivers.append(d)
        d.wait_line(rf"state connected {user} \S+ \d+")
        return d

    def check_exactly_once(self, sender, receiver, conv, n):
        acks = sender.wait(lambda ls: (lambda a: a if len(a) >= n else None)(
            [x for x in ls if x.startswith("ack ") or x.startswith("senderr ")]),
            timeout=90, what=f"{n} completions")
        self.assertEqual(len(acks), n, acks[-5:])
        self.assertFalse([x for x in acks if x.startswith("senderr")])
        # Each client id completed once; the seqs are distinct.
        ids = [x.split()[1] for x in acks]
        self.assertEqual(len(set(ids)), n)
        seqs = sorted(int(x.split()[3]) for x in acks)
        self.assertEqual(seqs, list(range(1, n + 1)))
        try:
            receiver.wait(lambda ls: len(seqs_of(receiver, conv)) >= n, timeout=90,
                          what=f"{n} messages")
        except AssertionError as e:
            srv = self.servers[-1]
            odd = [x for x in receiver.lines if not x.startswith(("msg ", "state "))]
            raise AssertionError(f"{e}\n--- receiver, not msg/state ---\n" +
                                 "\n".join(odd[-20:]) +
                                 "\n--- sender ---\n" + "\n".join(sender.lines[-20:]) +
                                 f"\n--- server log ---\n{srv.log_tail(20000)}") from None
        time.sleep(0.3)  # a duplicate would arrive now
        self.assertEqual(seqs_of(receiver, conv), list(range(1, n + 1)))
        bodies = [m.group(1) for m in receiver.matching(rf"msg {re.escape(conv)} \d+ \S+ 0 (.*)")]
        self.assertEqual(sorted(bodies), sorted(f"m-{i}" for i in range(n)))

    def test_server_killed_and_restarted(self):
        srv = self.start()
        self.proxy = Proxy(srv.bin_port)
        alice = self.driver("rk_alice")
        bob = self.driver("rk_bob")
        conv = dm("rk_alice", "rk_bob")
        n = 400
        alice.cmd(f"sendn rk_bob {n} m")
        bob.wait(lambda ls: len(seqs_of(bob, conv)) >= 60, what="60 messages")
        srv.kill()  # SIGKILL with sends in flight
        check_log(self, srv)
        time.sleep(0.3)
        srv = self.start()
        self.proxy.target = srv.bin_port
        self.check_exactly_once(alice, bob, conv, n)
        self.assertTrue(bob.matching(r"state disconnected .*"))
        alice.quit()
        bob.quit()
        self.assertEqual(srv.stop(), 0)
        check_log(self, srv)

    def test_conversation_started_while_disconnected(self):
        srv = self.start()
        self.proxy = Proxy(srv.bin_port)
        bob = self.driver("nc_bob")
        alice = Driver(f"tcp://127.0.0.1:{srv.bin_port}", "nc_alice")  # not through the proxy
        self.drivers.append(alice)
        alice.wait_line(r"state connected nc_alice \S+ \d+")
        old = dm("nc_alice", "nc_bob")
        alice.cmd("send - nc_bob a1 before")
        bob.wait_line(rf"msg {old} 1 nc_alice 0 before")
        # bob drops off and cannot come back (port 1 refuses); carol opens a conversation with
        # him and alice writes more in theirs.
        self.proxy.target = 1
        self.proxy.cut()
        bob.wait_line(r"state disconnected .*")
        carol = Driver(f"tcp://127.0.0.1:{srv.bin_port}", "nc_carol")
        self.drivers.append(carol)
        carol.cmd("sendn nc_bob 3 new")
        carol.wait(lambda ls: len([x for x in ls if x.startswith("ack ")]) == 3, what="3 acks")
        alice.cmd("sendn nc_bob 2 more")
        alice.wait(lambda ls: len([x for x in ls if x.startswith("ack ")]) == 3, what="3 acks")
        self.proxy.target = srv.bin_port
        # Back: the known conversation resumes, the new one is caught up from its start.
        new = dm("nc_bob", "nc_carol")
        bob.wait_line(rf"msg {new} 3 nc_carol 0 new-2", timeout=30)
        bob.wait_line(rf"msg {old} 3 nc_alice 0 more-1", timeout=30)
        self.assertEqual(seqs_of(bob, new), [1, 2, 3])
        self.assertEqual(seqs_of(bob, old), [1, 2, 3])
        for d in (alice, bob, carol):
            d.quit()
        self.assertEqual(srv.stop(), 0)
        check_log(self, srv)

    def test_connection_cut_mid_stream(self):
        srv = self.start()
        self.proxy = Proxy(srv.bin_port)
        alice = self.driver("cut_alice")
        bob = self.driver("cut_bob", "--thread")
        conv = dm("cut_alice", "cut_bob")
        n = 600
        alice.cmd(f"sendn cut_bob {n} m")
        for i in range(3):
            at = len(seqs_of(bob, conv)) + 60
            bob.wait(lambda ls: len(seqs_of(bob, conv)) >= at, timeout=60, what=f"{at} messages")
            self.assertGreaterEqual(self.proxy.cut(), 1)
            # The next cut waits for both to be back (and a few messages through).
            for d in (alice, bob):
                d.wait(lambda ls: len([x for x in ls if x.startswith("state connected")]) >= i + 2,
                       timeout=30, what="reconnected")
        self.check_exactly_once(alice, bob, conv, n)
        self.assertGreaterEqual(len(bob.matching(r"state disconnected .*")), 3)
        alice.quit()
        bob.quit()
        self.assertEqual(srv.stop(), 0)
        check_log(self, srv)


if __name__ == "__main__":
    unittest.main()
