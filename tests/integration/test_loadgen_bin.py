"""switchboard-loadgen's --proto bin (raw TCP, the server's binary port) and ws-bin (binary
frames in WebSocket messages on /ws, subprotocol switchboard.v1) against a real server: every
scenario runs short and every figure it reports adds up exactly as under the JSON/WebSocket
protocol (test_loadgen.py): each PING answered by its PONG, each message delivered once and
timed from its body, each group built, and a wrong secret refused as unauthorized."""

import json
import os
import subprocess
import tempfile

import sbtest

SECRET = "loadgen-bin-test-secret"
PROTOS = ("bin", "ws-bin")


def loadgen_bin():
    return os.path.join(os.path.dirname(sbtest.SB_BIN), "switchboard-loadgen")


class LoadgenBinary(sbtest.ServerTestCase):
    # A closed loop and a single fanout sender go far past the per-device default of 100/s.
    server_settings = {"jwt_secret": SECRET, "rate_messages": 1000000, "rate_bytes": "1G"}

    def setUp(self):
        super().setUp()
        if not getattr(self.server, "bin_port", None):
            self.skipTest("this server has no binary listener (binary_listen)")

    def run_loadgen(self, mode, proto, *args, secret=SECRET):
        exe = loadgen_bin()
        if not os.access(exe, os.X_OK):
            self.skipTest(f"{exe} is not built")
        fd, path = tempfile.mkstemp(prefix="lg-", suffix=".json")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        port = self.server.bin_port if proto == "bin" else self.port
        cmd = [exe, mode, "--proto", proto, "--target", f"127.0.0.1:{port}", "--jwt-secret",
               secret, "--quiet", "--json", path, *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        with open(path) as f:
            text = f.read()
        res = json.loads(text) if text else None
        self.longMessage = True
        self.ctx = f"\n{' '.join(cmd)}\n{p.stdout}\n{p.stderr}\n{res and res['counters']}"
        return p, res

    def assert_clean(self, p, res, connections):
        self.assertEqual(p.returncode, 0, self.ctx)
        c = res["counters"]
        self.assertEqual(c["established"], connections, self.ctx)
        self.assertEqual(res["failed"], 0, self.ctx)
        self.assertEqual(c["protocol_errors"], 0, self.ctx)
        self.assertEqual(c["dropped"], 0, self.ctx)
        self.assertEqual(c["mismatched"], 0, self.ctx)
        return c

    def test_echo(self):
        for proto in PROTOS:
            for size in ("0", "64", "5000"):
                with self.subTest(proto=proto, size=size):
                    p, res = self.run_loadgen("echo", proto, "--connections", "20", "--pipeline",
                                              "4", "--size", size, "--duration", "0.4")
                    c = self.assert_clean(p, res, 20)
                    self.assertEqual(res["parameters"]["proto"], proto)
                    self.assertGreater(c["messages_sent"], 100, self.ctx)
                    # Every PING answered by its PONG: same request id, same data.
                    self.assertEqual(c["messages_received"], c["messages_sent"], self.ctx)
                    self.assertEqual(c["lost"], 0, self.ctx)
                    self.assertEqual(c["bytes_received"], c["messages_sent"] * int(size))
                    if int(size) >= 16:
                        self.assertEqual(res["latency_us"]["latency"]["count"],
                                         c["messages_received"])

    def test_echo_largest_ping(self):
        # 16,384 bytes of data: the most a PING may carry, split over several reads.
        p, res = self.run_loadgen("echo", "bin", "--connections", "4", "--size", "16384",
                                  "--duration", "0.3")
        c = self.assert_clean(p, res, 4)
        self.assertGreater(c["messages_sent"], 10)
        self.assertEqual(c["messages_received"], c["messages_sent"], self.ctx)
        p, res = self.run_loadgen("echo", "bin", "--size", "16385", "--duration", "0.1")
        self.assertEqual(p.returncode, 2)
        self.assertIn("at most 16384", p.stderr)

    def test_latency(self):
        for proto in PROTOS:
            with self.subTest(proto=proto):
                p, res = self.run_loadgen("latency", proto, "--connections", "10", "--rate",
                                          "2000", "--size", "32", "--duration", "0.5")
                c = self.assert_clean(p, res, 10)
                self.assertGreater(c["messages_sent"], 500)
                self.assertEqual(c["messages_received"], c["messages_sent"], self.ctx)
                self.assertEqual(res["latency_us"]["latency"]["count"], c["messages_sent"])

    def test_hold(self):
        for proto in PROTOS:
            with self.subTest(proto=proto):
                p, res = self.run_loadgen("hold", proto, "--connections", "200", "--rate", "0",
                                          "--duration", "0.3")
                c = self.assert_clean(p, res, 200)
                self.assertEqual(c["open_at_end"], 200, self.ctx)
                self.assertEqual(c["closed_by_server"], 0, self.ctx)
                self.assertEqual(res["latency_us"]["handshake"]["count"], 200)

    def test_chat_direct(self):
        for proto in PROTOS:
            with self.subTest(proto=proto):
                p, res = self.run_loadgen("chat", proto, "--connections", "40", "--group-share",
                                          "0", "--rate", "400", "--duration", "1", "--threads",
                                          "2")
                c = self.assert_clean(p, res, 40)
                self.assertGreater(c["messages_sent"], 300)
                self.assertEqual(c["acks"], c["messages_sent"], self.ctx)
                self.assertEqual(c["deliveries_expected"], c["messages_sent"])
                self.assertEqual(c["messages_received"], c["messages_sent"], self.ctx)
                self.assertEqual(res["deliveries_missing"], 0)
                self.assertEqual(c["server_errors"], 0)
                self.assertEqual(res["latency_us"]["latency"]["count"], c["messages_received"])
                self.assertEqual(res["latency_us"]["ack"]["count"], c["acks"])

    def test_chat_groups(self):
        for proto in PROTOS:
            with self.subTest(proto=proto):
                p, res = self.run_loadgen("chat", proto, "--connections", "300", "--group-share",
                                          "0.8", "--rate", "600", "--duration", "1")
                c = self.assert_clean(p, res, 300)
                self.assertGreaterEqual(c["groups"], 2, self.ctx)
                self.assertEqual(c["server_errors"], 0, self.ctx)
                self.assertEqual(c["acks"], c["messages_sent"])
                self.assertGreater(c["deliveries_expected"], 2 * c["messages_sent"])
                self.assertEqual(c["messages_received"], c["deliveries_expected"], self.ctx)

    def test_chat_closed_loop(self):
        p, res = self.run_loadgen("chat", "bin", "--connections", "20", "--group-share", "0",
                                  "--rate", "0", "--duration", "0.5")
        c = self.assert_clean(p, res, 20)
        self.assertGreater(c["messages_sent"], 20)
        self.assertEqual(c["acks"], c["messages_sent"], self.ctx)

    def test_fanout(self):
        for proto in PROTOS:
            with self.subTest(proto=proto):
                p, res = self.run_loadgen("fanout", proto, "--connections", "30", "--duration",
                                          "0.5", "--pipeline", "4")
                c = self.assert_clean(p, res, 30)
                self.assertEqual(c["groups"], 1, self.ctx)
                self.assertGreater(c["messages_sent"], 0)
                self.assertEqual(c["deliveries_expected"], 29 * c["messages_sent"], self.ctx)
                self.assertEqual(c["messages_received"], c["deliveries_expected"], self.ctx)
                self.assertEqual(res["latency_us"]["last_member"]["count"], c["messages_sent"])

    def test_fanout_large_group(self):
        # More members than one CONV_CREATE may name: the rest join through CONV_ADD, and the
        # CONV answers (every member listed) span several reads.
        p, res = self.run_loadgen("fanout", "bin", "--connections", "1205", "--duration", "0.3",
                                  "--pipeline", "2", "--threads", "2")
        c = self.assert_clean(p, res, 1205)
        self.assertEqual(c["groups"], 1, self.ctx)
        self.assertEqual(c["deliveries_expected"], 1204 * c["messages_sent"], self.ctx)
        self.assertGreaterEqual(c["messages_received"], 1204, self.ctx)

    def test_wrong_secret(self):
        # bin: the HELLO is refused with ERROR unauthorized, reported like HTTP 401.
        p, res = self.run_loadgen("echo", "bin", "--connections", "4", "--duration", "0.2",
                                  secret="not-the-secret")
        self.assertEqual(p.returncode, 1, self.ctx)
        self.assertEqual(res["counters"]["handshake_status"], 4, self.ctx)
        self.assertEqual(res["status_sample"], 401)
        self.assertIn("unauthorized", p.stderr)
        # ws-bin: the upgrade itself is refused.
        p, res = self.run_loadgen("chat", "ws-bin", "--connections", "4", "--duration", "0.2",
                                  secret="not-the-secret")
        self.assertEqual(p.returncode, 1, self.ctx)
        self.assertEqual(res["counters"]["handshake_status"], 4, self.ctx)
        self.assertEqual(res["status_sample"], 401)

    def test_ws_bin_needs_the_subprotocol(self):
        # /echo does not speak switchboard.v1: the 101 lacks it, so no connection is made.
        p, res = self.run_loadgen("echo", "ws-bin", "--path", "/echo", "--connections", "3",
                                  "--duration", "0.2")
        self.assertEqual(p.returncode, 1, self.ctx)
        self.assertEqual(res["counters"]["established"], 0, self.ctx)
        self.assertEqual(res["counters"]["handshake_invalid"], 3, self.ctx)

    def test_bin_is_not_websocket(self):
        # --proto ws against the binary port: the upgrade gets no 101 (the port speaks frames).
        exe = loadgen_bin()
        p = subprocess.run([exe, "echo", "--target", f"127.0.0.1:{self.server.bin_port}",
                            "--connections", "2", "--duration", "0.2", "--timeout", "2",
                            "--quiet"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)


if __name__ == "__main__":
    import unittest
    unittest.main()
