"""tools/redis-cluster, through the tests' helper: a real 3+3 cluster on free ports that comes up
ok, fails over when a master dies, stops only its own processes and restarts with its state.
And the server's redis_* settings: checked at start, the client's counters in /metrics."""

import json
import os
import subprocess
import time
import unittest
import urllib.request

import rediscluster
import sbtest

TOOL = rediscluster._TOOL


def alive(pid):
    """Whether pid runs (a zombie does not)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_for(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


@unittest.skipUnless(rediscluster.available(),
                     "redis-server is not installed (tools/setup installs it)")
class RedisClusterToolTest(unittest.TestCase):
    def test_lifecycle(self):
        with rediscluster.RedisClusterFixture() as rc:
            self.assertEqual(len(rc.ports), 6)
            self.assertEqual(len(rc.masters()), 3)
            out = subprocess.run([TOOL, "status", "--dir", rc.dir], capture_output=True,
                                 text=True, timeout=30).stdout
            self.assertIn("cluster_state ok", out)
            self.assertEqual(out.count(" master"), 3)
            self.assertEqual(out.count(" slave"), 3)

            victim = rc.masters()[0]
            pid = rc.kill(victim)
            self.assertIsNotNone(pid)
            # cluster-node-timeout is 1000 ms: its replica takes over within seconds.
            self.assertTrue(wait_for(lambda: len(rc.masters()) == 3 and rc.cluster_ok(), 20),
                            "no replica was promoted")
            self.assertNotIn(victim, rc.masters())

            pids = [rc.cluster.pid(p) for p in rc.ports if rc.cluster.pid(p)]
            self.assertEqual(len(pids), 5)
            r = subprocess.run([TOOL, "stop", "--dir", rc.dir], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            for p in pids:
                self.assertFalse(alive(p), p)

            # Started again, every node comes back (the old master as a replica).
            rc.start()
            self.assertEqual(sorted(rc.cluster.roles().values()).count("master"), 3)
            self.assertTrue(rc.cluster_ok())


class RedisSettingsTest(unittest.TestCase):
    """Seeds where no Redis listens: the node runs, degraded (no Redis needs to run here)."""

    def test_metrics_and_clean_stop(self):
        with sbtest.Server(redis_nodes="127.0.0.1:1,localhost:2", redis_timeout_ms=500,
                           redis_queue=100) as srv:
            log = srv.read_log()
            self.assertIn("redis: cluster mode, seeds 127.0.0.1:1,localhost:2", log)
            with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=10) as r:
                body = r.read().decode()
            for name in ("moved", "ask", "topology_refreshes"):
                self.assertIn(f"\nswitchboard_redis_{name}_total 0\n", body)
            # The registry's heartbeats are the only commands; none can be sent.
            for name in ("commands", "errors", "timeouts", "reconnects"):
                self.assertRegex(body, f"\nswitchboard_redis_{name}_total \\d+\n")
            with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/api/health",
                                        timeout=10) as r:
                health = json.loads(r.read())
            self.assertEqual(health["status"], "degraded")
            self.assertIn("unreachable", health["reason"])
            self.assertEqual(srv.stop(), 0)
            self.assertNotIn(" ERROR ", srv.read_log())

    def test_standalone_has_no_redis_metrics(self):
        with sbtest.Server() as srv:
            with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=10) as r:
                self.assertNotIn("switchboard_redis_", r.read().decode())

    def test_bad_seed_list(self):
        for nodes, why in (("nohost", "is not a list of up to 32 host:port"),
                           ("127.0.0.1:0", "is not a list of up to 32 host:port"),
                           ("a.invalid:6379", "cannot resolve")):
            r = subprocess.run([sbtest.SB_BIN, "serve", "--listen", "127.0.0.1:0",
                                "--redis_nodes", nodes, "--data_dir", "/nonexistent/x"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(why, r.stderr)


if __name__ == "__main__":
    unittest.main()
