"""Cluster mode against a real Redis Cluster (3 masters, 3 replicas, started here): node
liveness, the user registry, and the degraded mode.

- two nodes see each other in /api/connections/stats; a user's devices are registered under the
  node and worker that hold them, and unregistered when the last one leaves;
- a node killed with SIGKILL leaves the live set within its TTL;
- every Redis node stopped: /api/health says degraded (with the reason), a send gets a
  retryable error, local delivery of what needs no Redis (typing) goes on;
  Redis restarted (empty: the test cluster keeps nothing on disk): healthy again by itself, and
  the users still connected are registered again."""

import asyncio
import json
import os
import signal
import subprocess
import time
import unittest
import urllib.request

import websockets

import rediscluster
import sbtest
from test_groups import recv_type, request

HEARTBEAT_MS = 200
TTL_MS = 1000


def mint(sub, scope=None):
    args = [sbtest.SB_BIN, "token", "--sub", sub] + (["--scope", scope] if scope else [])
    return subprocess.run(args, check=True, capture_output=True, text=True,
                          timeout=10).stdout.strip()


def get_json(port, path, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


async def connect(port, user, device=None):
    query = f"?device={device}" if device else ""
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws{query}",
                                  extra_headers={"Authorization": "Bearer " + mint(user)})
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert welcome["type"] == "welcome", welcome
    return ws


@unittest.skipUnless(rediscluster.available(),
                     "redis-server is not installed (tools/setup installs it)")
class ClusterRegistryTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not sbtest.SB_BIN:
            raise unittest.SkipTest("SB_BIN is not set")
        cls.admin = mint("ops", scope="admin")  # first: a failure here leaves nothing running
        cls.rc = rediscluster.RedisClusterFixture().start()

    @classmethod
    def tearDownClass(cls):
        cls.rc.close()

    def node(self, name, **extra):
        srv = sbtest.Server(redis_nodes=self.rc.nodes, node_name=name,
                            cluster_heartbeat_ms=HEARTBEAT_MS, cluster_node_ttl_ms=TTL_MS,
                            **extra).start()
        self.addCleanup(srv.remove_log)
        self.addCleanup(srv.stop)
        return srv

    def entries(self, user):
        """The registry's hash of user: field -> value."""
        out, lines = {}, subprocess.run(
            ["redis-cli", "-c", "-p", str(self.rc.ports[0]), "--no-raw", "HGETALL",
             "sb:u:{%s}" % user], capture_output=True, text=True, timeout=10).stdout.splitlines()
        vals = [json.loads(line.split(") ", 1)[1]) for line in lines if ") " in line]
        return dict(zip(vals[0::2], vals[1::2]))

    def node_id(self, srv):
        return get_json(srv.port, "/api/health")["node"]

    def live_names(self, srv):
        return sorted(n["name"] for n in get_json(srv.port, "/api/connections/stats",
                                                  self.admin)["nodes"])

    def test_nodes_see_each_other_and_users_are_registered(self):
        a, b = self.node("alpha"), self.node("beta")
        ida, idb = self.node_id(a), self.node_id(b)
        self.assertTrue(ida.startswith("alpha~") and idb.startswith("beta~"), (ida, idb))
        self.assertTrue(sbtest.wait_until(lambda: self.live_names(a) == ["alpha", "beta"] and
                                          self.live_names(b) == ["alpha", "beta"], 10))
        stats = get_json(a.port, "/api/connections/stats", self.admin)
        self.assertEqual(stats["node"], ida)
        for n in stats["nodes"]:
            self.assertEqual(n["workers"], 2)
            self.assertGreater(n["started_ms"], 1.7e12)
        self.assertEqual(stats["cluster_connections"],
                         sum(n["connections"] for n in stats["nodes"]))

        async def go():
            alice = await connect(a.port, "alice")
            bob1 = await connect(b.port, "bob", "phone")
            bob2 = await connect(b.port, "bob", "laptop")
            self.assertTrue(sbtest.wait_until(
                lambda: len(self.entries("alice")) == 1 and
                [v.split()[0] for v in self.entries("bob").values()] == ["2"], 10),
                (self.entries("alice"), self.entries("bob")))
            (field, value), = self.entries("alice").items()
            node, worker = field.rsplit("/", 1)
            self.assertEqual(node, ida)
            self.assertRegex(value, r"^1 d[0-9a-f]+$")  # one device, its id made up
            self.assertIn(int(worker), (0, 1))
            self.assertEqual(list(self.entries("bob"))[0].rsplit("/", 1)[0], idb)
            # `devices` on either node lists them all, with the node each is on.
            tab = await connect(a.port, "bob", "tab")
            self.assertTrue(sbtest.wait_until(lambda: len(self.entries("bob")) == 2, 10))
            info = get_json(a.port, "/api/connections/info", mint("bob"))
            devs = sorted((d["node"], d["device"], d["session"] != "0000000000000000")
                          for d in info["devices"])
            self.assertEqual(devs, sorted([(ida, "tab", True), (idb, "laptop", False),
                                           (idb, "phone", False)]))
            await tab.send(json.dumps({"type": "devices", "id": "q1"}))
            got = json.loads(await asyncio.wait_for(tab.recv(), 10))
            self.assertEqual((got["type"], got["id"], len(got["devices"])), ("devices", "q1", 3))
            await tab.close()
            await bob1.close()
            self.assertTrue(sbtest.wait_until(
                lambda: list(self.entries("bob").values()) == ["1 laptop"], 10),
                self.entries("bob"))
            await bob2.close()
            await alice.close()
            self.assertTrue(sbtest.wait_until(
                lambda: self.entries("bob") == {} and self.entries("alice") == {}, 10))
        asyncio.run(asyncio.wait_for(go(), 60))
        for srv in (a, b):
            self.assertEqual(srv.bad_log_lines(since_start=True), [])

    def test_a_killed_node_leaves_within_its_ttl(self):
        a, c = self.node("gamma"), self.node("delta")
        self.assertTrue(sbtest.wait_until(lambda: "delta" in self.live_names(a), 10))

        ws = sbtest.RawWS(c.port, path="/ws?device=phone", handshake=False)
        self.addCleanup(ws.close)
        ws.handshake(b"Authorization: Bearer " + mint("carol").encode() + b"\r\n")
        self.assertTrue(sbtest.wait_until(lambda: self.entries("carol"), 10))
        info = get_json(a.port, "/api/connections/info", mint("carol"))
        self.assertEqual([d["device"] for d in info["devices"]], ["phone"])
        os.kill(c.pid, signal.SIGKILL)
        c.wait(10)
        t0 = time.monotonic()
        self.assertTrue(sbtest.wait_until(lambda: "delta" not in self.live_names(a), 10))
        # Gone within the TTL, plus a heartbeat of the observer's and the poll's slack.
        self.assertLess(time.monotonic() - t0, (TTL_MS + 2 * HEARTBEAT_MS) / 1000 + 0.5)
        self.assertIn("gamma", self.live_names(a))
        # Carol's entry names a dead node: a lookup ignores it, and deletes it.
        self.assertEqual(get_json(a.port, "/api/connections/info", mint("carol"))["devices"], [])
        self.assertTrue(sbtest.wait_until(lambda: self.entries("carol") == {}, 10))

    def test_degraded_while_redis_is_down_then_recovers(self):
        a = self.node("epsilon")
        self.assertEqual(get_json(a.port, "/api/health")["status"], "healthy")

        async def go():
            carol = await connect(a.port, "carol")
            dave = await connect(a.port, "dave")
            self.assertTrue(sbtest.wait_until(lambda: self.entries("carol"), 10))
            self.rc.stop_all()
            self.assertTrue(sbtest.wait_until(
                lambda: get_json(a.port, "/api/health")["status"] == "degraded", 10))
            health = get_json(a.port, "/api/health")
            self.assertTrue(health["reason"].startswith("redis: "), health)
            # A send needs Redis (it sequences and stores): a retryable error, not a false
            # ack. Local delivery of what needs no Redis goes on.
            await carol.send(json.dumps({"type": "send", "id": "d1", "to": "dave",
                                         "body": "not now"}))
            got = json.loads(await asyncio.wait_for(carol.recv(), 10))
            self.assertEqual((got["type"], got["code"], got["id"]),
                             ("error", "unavailable", "d1"), got)
            self.assertGreater(got["retry_after_ms"], 0)
            await carol.send(json.dumps({"type": "typing", "to": "dave"}))
            got = json.loads(await asyncio.wait_for(dave.recv(), 10))
            self.assertEqual((got["type"], got["user"]), ("typing", "carol"))
            erin = await connect(a.port, "erin")  # connects while Redis is away
            self.rc.start()
            self.assertTrue(sbtest.wait_until(
                lambda: get_json(a.port, "/api/health")["status"] == "healthy", 20),
                a.log_tail())
            # The restarted cluster is empty: the users were registered again, then their
            # devices asked to reconnect (the channels lapsed: pushes may have been lost).
            self.assertTrue(sbtest.wait_until(
                lambda: "users registered again" in a.read_log() and
                "devices asked to reconnect and sync" in a.read_log(), 10), a.log_tail())
            for ws in (carol, dave, erin):
                await ws.close()
            carol = await connect(a.port, "carol")
            dave = await connect(a.port, "dave")
            for user in ("carol", "dave"):
                self.assertTrue(sbtest.wait_until(lambda: self.entries(user), 10), user)
            # Messaging is back: sends ack and arrive again.
            for k in range(50):
                got = await request(carol, {"type": "send", "id": "d1", "to": "dave",
                                            "body": "now"}, "ack", timeout=10)
                if got["type"] == "ack":
                    break
                self.assertEqual(got["code"], "unavailable", got)
                await asyncio.sleep(0.2)
            self.assertEqual((got["type"], got["seq"]), ("ack", 1), got)
            self.assertEqual((await recv_type(dave, "message"))["body"], "now")
            for ws in (carol, dave):
                await ws.close()
        asyncio.run(asyncio.wait_for(go(), 90))
        log = a.read_log()
        self.assertEqual(log.count("this worker is degraded"), 2, log)  # one line per worker
        self.assertIn("Redis answers again", log)
        self.assertEqual(a.bad_log_lines(since_start=True), [])


class ClusterSettingsTest(unittest.TestCase):
    def test_bad_settings_stop_the_start(self):
        if not sbtest.SB_BIN:
            self.skipTest("SB_BIN is not set")
        for args, why in ((["--node_name", "a b"], "node_name"),
                          (["--cluster_heartbeat_ms", "1000", "--cluster_node_ttl_ms", "1500"],
                           "at least twice")):
            r = subprocess.run([sbtest.SB_BIN, "serve", "--listen", "127.0.0.1:0",
                                "--redis_nodes", "127.0.0.1:1", "--data_dir", "/nonexistent/x"]
                               + args, capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(why, r.stderr)


if __name__ == "__main__":
    unittest.main()
