"""Cluster mode when things fail, against a real Redis Cluster (3 masters, 3 replicas, started
here for each test): nothing acknowledged is lost and routing resumes by itself.

- the master serving a conversation is killed mid-traffic: its replica takes over; every
  acked message is in history once, in order, gap-free; pushes across nodes resume;
- the conversation's slot and the receiving node's channels move to another master
  (slot migration) mid-traffic: the same;
- a switchboard node is killed with SIGKILL: its users are offline within the TTL, their peers'
  sends still ack, and a user back on another node syncs everything."""

import asyncio
import json
import subprocess
import threading
import time
import unittest
import urllib.request

import rediscluster
import sbtest
import websockets
from test_chat import connect, no_message, recv_json
from test_groups import recv_type, request

TTL_MS = 1000


def keyslot(port, key):
    out = subprocess.run(["redis-cli", "-p", str(port), "cluster", "keyslot", key],
                         capture_output=True, text=True, timeout=10, check=True)
    return int(out.stdout.strip())


@unittest.skipUnless(rediscluster.available(),
                     "redis-server is not installed (tools/setup installs it)")
class ClusterFailoverTest(unittest.TestCase):
    def setUp(self):
        if not sbtest.SB_BIN:
            self.skipTest("SB_BIN is not set")
        self.rc = rediscluster.RedisClusterFixture().start()
        self.addCleanup(self.rc.close)

    def node(self, name):
        srv = sbtest.Server(redis_nodes=self.rc.nodes, node_name=name,
                            cluster_heartbeat_ms=200, cluster_node_ttl_ms=TTL_MS).start()
        self.addCleanup(srv.remove_log)
        self.addCleanup(srv.stop)
        return srv

    def master_of(self, slot):
        for _, port, is_master, ranges in self.rc.cluster._nodes():
            if is_master and any(a <= slot <= b for a, b in ranges):
                return port
        raise AssertionError(f"no master serves slot {slot}")

    async def send_all(self, port, user, ws, to, n, during=None, at=0):
        """Sends n messages one by one from `user` on ws, each retried with its client id until
        acked (on a new connection when the server asks for one); calls `during` (in a thread)
        once message `at` is acked. Returns the acks' seqs and the connection."""
        seqs, thread = [], None
        for k in range(n):
            deadline = time.monotonic() + 30
            while True:
                try:
                    m = await request(ws, {"type": "send", "id": f"k{k}", "to": to,
                                           "body": f"b{k}"}, "ack", timeout=15)
                except websockets.ConnectionClosed as e:
                    self.assertEqual(e.rcvd.code, 1013, e)  # "reconnect and sync"
                    ws = await connect(port, user)
                    continue
                if m["type"] == "ack":
                    seqs.append(m["seq"])
                    break
                self.assertEqual(m["code"], "unavailable", m)  # retryable, never a false ack
                self.assertLess(time.monotonic(), deadline, "no ack for 30 s")
                await asyncio.sleep(0.1)
            if during and k == at:
                thread = threading.Thread(target=during)
                thread.start()
        if thread:
            thread.join(60)
        return seqs, ws

    async def check_history(self, ws, conv, n):
        deadline = time.monotonic() + 30
        while True:
            page = await request(ws, {"type": "sync", "id": "h", "convs": {conv: 0},
                                      "limit": 1000}, "sync_page", timeout=15)
            if page["type"] == "sync_page":
                break
            self.assertEqual(page["code"], "unavailable", page)  # a node not caught up yet
            self.assertLess(time.monotonic(), deadline, "no sync for 30 s")
            await asyncio.sleep(0.1)
        self.assertEqual([(m["seq"], m["body"]) for m in page["messages"][:n]],
                         [(k + 1, f"b{k}") for k in range(n)])

    async def live_or_told(self, ws, body, timeout=20):
        """Waits for message `body` on ws; True when it came, False when the server asked the
        device to reconnect instead (its channel lapsed: pushes may have been lost) or after
        `timeout` seconds of silence."""
        while True:
            try:
                m = await recv_json(ws, timeout)
            except websockets.ConnectionClosed as e:
                self.assertEqual(e.rcvd.code, 1013, e)
                return False
            except asyncio.TimeoutError:
                return False
            if m["type"] == "goaway":
                self.assertIn("reconnect and sync", m["reason"])
                self.assertLess(m["reconnect_after_ms"], 2000)
            elif m["type"] == "message" and m["body"] == body:
                return True

    async def routed(self, s, to, port, ws):
        """Pushes reach `to` live again within seconds: a send from s arrives on ws, or on a new
        connection if ws was asked to reconnect. Returns the connection."""
        deadline = time.monotonic() + 10
        for k in range(100):
            await request(s, {"type": "send", "id": f"after{k}", "to": to, "body": f"after{k}"},
                          "ack")
            if await self.live_or_told(ws, f"after{k}", timeout=2):
                return ws
            if ws.closed or ws.close_code is not None:
                ws = await connect(port, to)
            self.assertLess(time.monotonic(), deadline, "pushes did not resume")
        return ws

    def test_master_killed_mid_traffic_loses_nothing_acked(self):
        a, b = self.node("a"), self.node("b")
        conv = "dm:fo-r:fo-s"
        victim = self.master_of(keyslot(self.rc.ports[0], "sb:c:{%s}" % conv))

        async def go():
            s = await connect(a.port, "fo-s")
            r = await connect(b.port, "fo-r")
            await asyncio.sleep(0.3)
            n = 120
            seqs, s = await self.send_all(a.port, "fo-s", s, "fo-r", n,
                                          lambda: self.rc.kill(victim), at=30)
            self.assertEqual(seqs, list(range(1, n + 1)))
            # The last message reached r live, or r was told to reconnect (node b's channel
            # was on the dead master); either way pushes to node b resume.
            await self.live_or_told(r, f"b{n - 1}", timeout=5)
            r = await self.routed(s, "fo-r", b.port, r)
            await self.check_history(r, conv, n)
            await s.close()
            await r.close()
        asyncio.run(asyncio.wait_for(go(), 120))
        self.assertNotIn(victim, self.rc.masters())

    def test_slot_migration_mid_traffic_loses_nothing(self):
        a, b = self.node("a"), self.node("b")
        conv = "dm:mg-r:mg-s"
        port0 = self.rc.ports[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{b.port}/api/health", timeout=10) as h:
            nb = json.loads(h.read())["node"]
        # Node b's channels move too: its subscriptions must follow them.
        slots = [keyslot(port0, "sb:c:{%s}" % conv)] + \
            [keyslot(port0, f"sb:ch:{nb}/{w}") for w in (0, 1)]

        async def go():
            s = await connect(a.port, "mg-s")
            r = await connect(b.port, "mg-r")
            await asyncio.sleep(0.3)

            def migrate():
                for slot in dict.fromkeys(slots):
                    self.rc.cluster.migrate(slot)
            n = 120
            seqs, s = await self.send_all(a.port, "mg-s", s, "mg-r", n, migrate, at=20)
            self.assertEqual(seqs, list(range(1, n + 1)))
            # Node b's channels moved: r is told to reconnect and sync; pushes resume.
            r = await self.routed(s, "mg-r", b.port, r)
            await self.check_history(r, conv, n)
            await s.close()
            await r.close()
        asyncio.run(asyncio.wait_for(go(), 120))

    def test_killed_node_users_go_offline_and_sync_elsewhere(self):
        a, b = self.node("a"), self.node("b")
        conv = "dm:kn-u1:kn-u2"

        async def go():
            u1 = await connect(a.port, "kn-u1")
            u2 = await connect(b.port, "kn-u2", "phone")
            await asyncio.sleep(0.3)
            await request(u1, {"type": "send", "id": "1", "to": "kn-u2", "body": "b0"}, "ack")
            self.assertEqual((await recv_type(u2, "message"))["body"], "b0")
            b.kill()
            t0 = time.monotonic()
            # Peers' sends still ack while u2 is away.
            for k in range(1, 5):
                ack = await request(u1, {"type": "send", "id": str(k + 1), "to": "kn-u2",
                                         "body": f"b{k}"}, "ack")
                self.assertEqual(ack["seq"], k + 1)
            # u2 is back on node a: its device on dead b is gone within the TTL.
            u2b = await connect(a.port, "kn-u2", "laptop")
            while True:
                d = await request(u2b, {"type": "devices", "id": "d"}, "devices")
                if [x["device"] for x in d["devices"]] == ["laptop"]:
                    break
                self.assertLess(time.monotonic() - t0, TTL_MS / 1000 + 2, d)
                await asyncio.sleep(0.1)
            await self.check_history(u2b, conv, 5)
            await request(u1, {"type": "send", "id": "6", "to": "kn-u2", "body": "b5"}, "ack")
            self.assertEqual((await recv_type(u2b, "message"))["body"], "b5")
            await no_message(u1)
            await u1.close()
            await u2b.close()
        asyncio.run(asyncio.wait_for(go(), 120))
        self.assertEqual(a.bad_log_lines(since_start=True), [])


if __name__ == "__main__":
    unittest.main()
