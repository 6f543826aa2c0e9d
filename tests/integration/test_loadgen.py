"""switchboard-loadgen's messaging scenarios against a real server: chat over direct
conversations delivers every message once and times it, fanout reaches every member of one
group, and a wrong --jwt-secret shows up as failed handshakes (401), not as a silent run."""

import json
import os
import subprocess
import tempfile

import sbtest

SECRET = "loadgen-test-secret"


def loadgen_bin():
    return os.path.join(os.path.dirname(sbtest.SB_BIN), "switchboard-loadgen")


class LoadgenMessaging(sbtest.ServerTestCase):
    # A closed loop and a single fanout sender go far past the per-device default of 100/s.
    server_settings = {"jwt_secret": SECRET, "rate_messages": 1000000, "rate_bytes": "1G"}

    def run_loadgen(self, mode, *args, secret=SECRET):
        exe = loadgen_bin()
        if not os.access(exe, os.X_OK):
            self.skipTest(f"{exe} is not built")
        fd, path = tempfile.mkstemp(prefix="lg-", suffix=".json")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        cmd = [exe, mode, "--target", f"127.0.0.1:{self.port}", "--jwt-secret", secret,
               "--quiet", "--json", path, *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        with open(path) as f:
            text = f.read()
        res = json.loads(text) if text else None
        # Every assertion's message: what loadgen counted and said.
        self.longMessage = True
        self.ctx = f"\n{p.stdout}\n{p.stderr}\n{res and res['counters']}"
        return p, res

    def test_chat_direct(self):
        p, res = self.run_loadgen("chat", "--connections", "40", "--group-share", "0",
                                  "--rate", "400", "--duration", "1", "--threads", "2")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        c = res["counters"]
        self.assertEqual(c["established"], 40)
        self.assertGreater(c["messages_sent"], 300)
        self.assertEqual(c["acks"], c["messages_sent"])
        # One delivery per direct message: the partner's one device.
        self.assertEqual(c["deliveries_expected"], c["messages_sent"])
        self.assertEqual(c["messages_received"], c["messages_sent"], self.ctx)
        self.assertEqual(res["deliveries_missing"], 0)
        self.assertEqual(c["server_errors"], 0)
        self.assertEqual(c["mismatched"], 0)
        self.assertEqual(res["latency_us"]["latency"]["count"], c["messages_received"])
        self.assertGreater(res["latency_us"]["latency"]["p50"], 0)

    def test_chat_closed_loop(self):
        p, res = self.run_loadgen("chat", "--connections", "20", "--group-share", "0",
                                  "--rate", "0", "--duration", "0.5")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        c = res["counters"]
        self.assertGreater(c["messages_sent"], 20)
        self.assertEqual(c["acks"], c["messages_sent"], self.ctx)
        # At ~60k sends/s on a shared machine, one delivery in ~100,000 has been seen to miss
        # the 2 s drain (not diagnosed yet; the open-loop test above counts exactly). A device
        # the server found too slow is told `behind` and gets no more pushes: counted apart.
        if c.get("behind_notices", 0) == 0:
            self.assertLessEqual(res["deliveries_missing"], max(1, c["messages_sent"] // 1000),
                                 self.ctx)

    def test_fanout(self):
        p, res = self.run_loadgen("fanout", "--connections", "30", "--duration", "0.5",
                                  "--pipeline", "4")
        if "unknown operation type" in p.stderr:
            self.skipTest("this server has no groups yet (conv_create)")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        c = res["counters"]
        self.assertEqual(c["groups"], 1)
        self.assertGreater(c["messages_sent"], 0)
        # Every member but the sender gets every message.
        self.assertEqual(c["deliveries_expected"], 29 * c["messages_sent"], self.ctx)
        self.assertEqual(c["messages_received"], c["deliveries_expected"], self.ctx)
        self.assertEqual(res["latency_us"]["last_member"]["count"], c["messages_sent"])

    def test_fanout_large_group(self):
        # More members than one conv_create may name: the rest join through conv_add.
        p, res = self.run_loadgen("fanout", "--connections", "1205", "--duration", "0.3",
                                  "--pipeline", "2", "--threads", "2")
        if "unknown operation type" in p.stderr:
            self.skipTest("this server has no groups yet (conv_create)")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        c = res["counters"]
        self.assertEqual(c["groups"], 1)
        self.assertGreater(c["messages_sent"], 0)
        self.assertEqual(c["deliveries_expected"], 1204 * c["messages_sent"], self.ctx)
        # The first message reached every member, the 204 added by conv_add too. (Later ones
        # may still be on their way when a slow machine's 2 s drain ends.)
        self.assertGreaterEqual(c["messages_received"], 1204, self.ctx)

    def test_chat_groups(self):
        p, res = self.run_loadgen("chat", "--connections", "300", "--group-share", "0.8",
                                  "--rate", "600", "--duration", "1")
        if "unknown operation type" in p.stderr:
            self.skipTest("this server has no groups yet (conv_create)")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        c = res["counters"]
        self.assertGreaterEqual(c["groups"], 2)
        self.assertEqual(c["server_errors"], 0)
        self.assertEqual(c["acks"], c["messages_sent"])
        # Group members get each message of their group: more deliveries than sends.
        self.assertGreater(c["deliveries_expected"], 2 * c["messages_sent"])
        self.assertEqual(c["messages_received"], c["deliveries_expected"], self.ctx)

    def test_wrong_secret(self):
        p, res = self.run_loadgen("chat", "--connections", "4", "--duration", "0.2",
                                  secret="not-the-secret")
        self.assertEqual(p.returncode, 1)
        self.assertEqual(res["counters"]["handshake_status"], 4)
        self.assertEqual(res["status_sample"], 401)


if __name__ == "__main__":
    import unittest
    unittest.main()
