"""Messaging in cluster mode: three switchboard nodes on a real Redis Cluster (3 masters,
3 replicas, started here). Redis sequences and stores every conversation; pushes reach other
nodes through each (node, worker)'s sharded channel.

- a direct message between users on different nodes, to every device of both (multi-device
  across nodes), with the duplicate of a retried send answered by the first ack;
- a group's whole lifecycle with its members on three nodes (system messages, rights);
- a group of 300 spread over three nodes: one post reaches all 299 others;
- concurrent sends to one conversation from three nodes: acks and history totally ordered and
  gap-free;
- a user who reconnects on another node syncs everything it missed, and live pushes follow it;
- receipts and typing across nodes;
- conv_list from any node (the users' index in Redis), leaving a group takes it out;
- what cluster mode does not do yet (sync since a cursor) is refused with `unsupported`."""

import asyncio
import json
import unittest

import rediscluster
import sbtest
from test_chat import connect, mint, no_message, recv_json
from test_groups import recv_system, recv_type, request


@unittest.skipUnless(rediscluster.available(),
                     "redis-server is not installed (tools/setup installs it)")
class ClusterChatTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not sbtest.SB_BIN:
            raise unittest.SkipTest("SB_BIN is not set")
        mint("probe")  # first: a failure here leaves nothing running
        cls.rc = rediscluster.RedisClusterFixture().start()
        cls.nodes = []
        try:
            for name in ("a", "b", "c"):
                cls.nodes.append(sbtest.Server(
                    redis_nodes=cls.rc.nodes, node_name=name, cluster_heartbeat_ms=200,
                    cluster_node_ttl_ms=1000, jwt_leeway_s=0).start())
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for srv in cls.nodes:
            srv.stop()
            srv.remove_log()
        cls.rc.close()

    def tearDown(self):
        for srv in self.nodes:
            self.assertEqual(srv.bad_log_lines(), [])

    def port(self, i):
        return self.nodes[i % 3].port

    def run_async(self, coro):
        return asyncio.run(asyncio.wait_for(coro, 120))

    async def settle(self):
        """Registry writes are asynchronous: a user just connected is findable shortly."""
        await asyncio.sleep(0.3)

    def test_direct_message_across_nodes_and_devices(self):
        async def go():
            alice = await connect(self.port(0), "dm-alice", "phone")
            alice2 = await connect(self.port(2), "dm-alice", "laptop")
            bob = await connect(self.port(1), "dm-bob")
            await self.settle()
            ack = await request(alice, {"type": "send", "id": "m1", "to": "dm-bob",
                                        "body": "hello"}, "ack")
            self.assertEqual((ack["type"], ack["seq"], ack["conv"]),
                             ("ack", 1, "dm:dm-alice:dm-bob"), ack)
            for ws in (bob, alice2):
                m = await recv_type(ws, "message")
                self.assertEqual((m["body"], m["from"], m["device"], m["seq"], m["msg_id"]),
                                 ("hello", "dm-alice", "phone", 1, ack["msg_id"]))
            await no_message(alice)  # the sending device has its ack
            # A retry with the same client id is the first ack again, not a second message:
            # the first is pushed again (its seq tells devices it is a repeat).
            dup = await request(alice, {"type": "send", "id": "m1", "to": "dm-bob",
                                        "body": "hello2"}, "ack")
            self.assertEqual((dup["seq"], dup["msg_id"], dup.get("duplicate")),
                             (1, ack["msg_id"], True))
            for ws in (bob, alice2):
                m = await recv_type(ws, "message")
                self.assertEqual((m["body"], m["seq"], m["msg_id"]), ("hello", 1, ack["msg_id"]))
            await no_message(alice)
            ack = await request(bob, {"type": "send", "id": "r1", "to": "dm-alice",
                                      "body": "back"}, "ack")
            self.assertEqual(ack.get("seq"), 2, ack)
            for ws in (alice, alice2):
                m = await recv_type(ws, "message")
                self.assertEqual((m["body"], m["seq"]), ("back", 2))
            # Only the pair may read or post; a stranger gets forbidden on any node.
            eve = await connect(self.port(1), "dm-eve")
            err = await request(eve, {"type": "sync", "id": "e1",
                                      "convs": {"dm:dm-alice:dm-bob": 0}})
            self.assertEqual((err["type"], err["code"]), ("error", "forbidden"))
            err = await request(eve, {"type": "send", "id": "e2", "conv": "dm:dm-alice:dm-bob",
                                      "body": "x"})
            self.assertEqual(err["code"], "forbidden")
            err = await request(eve, {"type": "send", "id": "e3", "conv": "g:00000000000000ff",
                                      "body": "x"})
            self.assertEqual(err["code"], "not_found")
            for ws in (alice, alice2, bob, eve):
                await ws.close()
        self.run_async(go())

    def test_group_lifecycle_across_nodes(self):
        async def go():
            alice, bob, carol, dave = [await connect(self.port(i), "gl-" + u)
                                       for i, u in enumerate(("alice", "bob", "carol", "dave"))]
            await self.settle()
            conv = await request(alice, {"type": "conv_create", "id": "c1", "name": "team",
                                         "members": ["gl-bob", "gl-carol"]}, "conv")
            self.assertEqual(conv["type"], "conv", conv)
            gid = conv["conv"]
            self.assertRegex(gid, r"^g:[0-9a-f]{16}$")
            self.assertEqual((conv["name"], conv["owner"], conv["admins"], conv["last_seq"]),
                             ("team", "gl-alice", ["gl-alice"], 1))
            self.assertEqual(sorted(conv["members"]), ["gl-alice", "gl-bob", "gl-carol"])
            for ws in (bob, carol):
                m = await recv_type(ws, "message")
                self.assertEqual((m["conv"], m["seq"], m["system"], m["subject"], m["from"]),
                                 (gid, 1, "created", "team", "gl-alice"))
            await no_message(dave)
            ack = await request(bob, {"type": "send", "id": "b1", "conv": gid, "body": "hi"},
                                "ack")
            self.assertEqual(ack["seq"], 2)
            for ws in (alice, carol):
                m = await recv_type(ws, "message")
                self.assertEqual((m["body"], m["from"], m["seq"]), ("hi", "gl-bob", 2))
            err = await request(dave, {"type": "send", "id": "d1", "conv": gid, "body": "x"})
            self.assertEqual((err["type"], err["code"]), ("error", "forbidden"))
            err = await request(bob, {"type": "conv_add", "id": "b2", "conv": gid,
                                      "users": ["gl-dave"]})
            self.assertEqual(err["code"], "forbidden")
            conv = await request(alice, {"type": "conv_add", "id": "c2", "conv": gid,
                                         "users": ["gl-dave", "gl-bob"]}, "conv")
            self.assertEqual(sorted(conv["members"]), ["gl-alice", "gl-bob", "gl-carol",
                                                       "gl-dave"])
            m = await recv_type(dave, "message")
            self.assertEqual((m["system"], m["subject"], m["from"], m["seq"]),
                             ("member_added", "gl-dave", "gl-alice", 3))
            # Bob's node knew the members as of "hi": they changed, so this send brings the
            # new ones (dave gets it); the next, with nothing changed, goes by what it keeps.
            for seq, body in ((4, "again"), (5, "hit")):
                await request(bob, {"type": "send", "id": body, "conv": gid, "body": body}, "ack")
                for ws in (alice, carol, dave):
                    m = await recv_type(ws, "message")
                    while m.get("system"):  # member_added, for those who were there
                        m = await recv_type(ws, "message")
                    self.assertEqual((m["body"], m["seq"]), (body, seq))
            conv = await request(alice, {"type": "conv_rename", "id": "c3", "conv": gid,
                                         "name": "crew"}, "conv")
            self.assertEqual(conv["name"], "crew")
            m = await recv_system(carol, "renamed")
            self.assertEqual((m["subject"], m["from"]), ("crew", "gl-alice"))
            err = await request(bob, {"type": "conv_promote", "id": "b3", "conv": gid,
                                      "users": ["gl-bob"]})
            self.assertEqual(err["code"], "forbidden")
            conv = await request(alice, {"type": "conv_promote", "id": "c4", "conv": gid,
                                         "users": ["gl-bob"]}, "conv")
            self.assertEqual(sorted(conv["admins"]), ["gl-alice", "gl-bob"])
            err = await request(bob, {"type": "conv_remove", "id": "b4", "conv": gid,
                                      "users": ["gl-alice"]})
            self.assertEqual(err["code"], "forbidden")
            conv = await request(bob, {"type": "conv_remove", "id": "b5", "conv": gid,
                                       "users": ["gl-dave"]}, "conv")
            self.assertNotIn("gl-dave", conv["members"])
            m = await recv_system(dave, "member_removed")
            self.assertEqual((m["subject"], m["from"]), ("gl-dave", "gl-bob"))
            await request(bob, {"type": "send", "id": "after", "conv": gid, "body": "after"},
                          "ack")
            for ws in (alice, carol):
                m = await recv_type(ws, "message")
                while m.get("system"):  # renamed, member_removed
                    m = await recv_type(ws, "message")
                self.assertEqual(m["body"], "after")
            await no_message(dave)  # no longer a member
            conv = await request(alice, {"type": "conv_leave", "id": "c5", "conv": gid}, "conv")
            self.assertEqual(conv["owner"], "gl-bob")  # the admin takes over
            conv = await request(carol, {"type": "conv_get", "id": "g1", "conv": gid}, "conv")
            self.assertEqual((conv["owner"], sorted(conv["members"])),
                             ("gl-bob", ["gl-bob", "gl-carol"]))
            page = await request(bob, {"type": "sync", "id": "s1", "convs": {gid: 0}},
                                 "sync_page")
            self.assertEqual([m.get("system", "") for m in page["messages"]],
                             ["created", "", "member_added", "", "", "renamed",
                              "member_removed", "", "member_removed"])
            self.assertEqual([m["seq"] for m in page["messages"]], list(range(1, 10)))
            for ws in (alice, bob, carol, dave):
                await ws.close()
        self.run_async(go())

    def test_group_of_300_over_three_nodes(self):
        async def go():
            users = [f"big{i:03d}" for i in range(300)]
            conns = await asyncio.gather(*(connect(self.port(i), u)
                                           for i, u in enumerate(users)))
            await self.settle()
            conv = await request(conns[0], {"type": "conv_create", "id": "c", "name": "big",
                                            "members": users[1:]}, "conv", timeout=20)
            self.assertEqual(len(conv["members"]), 300, conv)
            gid = conv["conv"]
            ack = await request(conns[1], {"type": "send", "id": "p", "conv": gid,
                                           "body": "to all"}, "ack", timeout=20)
            self.assertEqual(ack["seq"], 2)

            async def got(ws):
                m = await recv_type(ws, "message", timeout=20)
                while m.get("system"):
                    m = await recv_type(ws, "message", timeout=20)
                return (m["body"], m["seq"])
            results = await asyncio.gather(*(got(ws) for i, ws in enumerate(conns) if i != 1))
            self.assertEqual(results, [("to all", 2)] * 299)
            await asyncio.gather(*(ws.close() for ws in conns))
        self.run_async(go())

    def test_concurrent_sends_from_three_nodes_are_totally_ordered(self):
        async def go():
            senders = [await connect(self.port(i), f"co-{i}") for i in range(3)]
            reader = await connect(self.port(1), "co-reader")
            await self.settle()
            conv = await request(senders[0], {"type": "conv_create", "id": "c", "name": "race",
                                              "members": ["co-1", "co-2", "co-reader"]}, "conv")
            gid = conv["conv"]
            per = 40

            async def burst(i, ws):
                for k in range(per):
                    await ws.send(json.dumps({"type": "send", "id": f"{i}-{k}", "conv": gid,
                                              "body": f"{i}-{k}"}))
                acks = {}
                while len(acks) < per:
                    m = await recv_json(ws, 20)
                    if m["type"] == "ack":
                        acks[m["id"]] = m["seq"]
                    self.assertNotEqual(m["type"], "error", m)
                return acks
            acks = await asyncio.gather(*(burst(i, ws) for i, ws in enumerate(senders)))
            seqs = sorted(s for a in acks for s in a.values())
            self.assertEqual(seqs, list(range(2, 2 + 3 * per)))  # seq 1: the creation
            for a in acks:  # each sender's own messages keep their order
                order = [a[f"{i}-{k}"] for i in range(3) for k in range(per) if f"{i}-{k}" in a]
                self.assertEqual(order, sorted(order))
            # History agrees with the acks, read from any node.
            by_seq = {s: cid for a in acks for cid, s in a.items()}
            for i in range(3):
                ws = senders[i]
                page = await request(ws, {"type": "sync", "id": f"s{i}",
                                          "convs": {gid: 1}, "limit": 1000}, "sync_page")
                self.assertEqual([(m["seq"], m["body"]) for m in page["messages"]],
                                 [(s, by_seq[s]) for s in seqs])
                self.assertFalse(page["more"])
            # The reader got every one of them live.
            live = set()
            while len(live) < 3 * per:
                m = await recv_type(reader, "message", timeout=20)
                if not m.get("system"):
                    live.add(m["seq"])
            self.assertEqual(sorted(live), seqs)
            for ws in senders + [reader]:
                await ws.close()
        self.run_async(go())

    def test_sync_after_reconnecting_on_another_node(self):
        async def go():
            ann = await connect(self.port(0), "mv-ann")
            ben = await connect(self.port(1), "mv-ben")
            await self.settle()
            conv = "dm:mv-ann:mv-ben"
            await request(ann, {"type": "send", "id": "1", "to": "mv-ben", "body": "one"}, "ack")
            self.assertEqual((await recv_type(ben, "message"))["body"], "one")
            await ben.close()
            for k in range(2, 5):
                await request(ann, {"type": "send", "id": str(k), "to": "mv-ben",
                                    "body": f"m{k}"}, "ack")
            # Ben comes back on node c: a sync from his last seq has what he missed, in order.
            ben = await connect(self.port(2), "mv-ben")
            page = await request(ben, {"type": "sync", "id": "s", "convs": {conv: 1},
                                       "limit": 2}, "sync_page")
            self.assertEqual(([m["body"] for m in page["messages"]], page["more"],
                              page["last_seq"]), (["m2", "m3"], True, 3))
            page = await request(ben, {"type": "sync", "id": "s2", "convs": {conv: 3}},
                                 "sync_page")
            self.assertEqual(([m["body"] for m in page["messages"]], page["more"]),
                             (["m4"], False))
            await self.settle()
            # Live pushes follow him to node c.
            await request(ann, {"type": "send", "id": "5", "to": "mv-ben", "body": "m5"}, "ack")
            m = await recv_type(ben, "message")
            self.assertEqual((m["body"], m["seq"]), ("m5", 5))
            await ann.close()
            await ben.close()
        self.run_async(go())

    def test_receipts_and_typing_across_nodes(self):
        async def go():
            amy = await connect(self.port(0), "rt-amy")
            bo = await connect(self.port(1), "rt-bo")
            bo2 = await connect(self.port(2), "rt-bo", "tablet")
            cy = await connect(self.port(2), "rt-cy")
            await self.settle()
            conv = "dm:rt-amy:rt-bo"
            for k in (1, 2):
                await request(amy, {"type": "send", "id": str(k), "to": "rt-bo",
                                    "body": f"m{k}"}, "ack")
            for ws in (bo, bo2):
                await recv_type(ws, "message")
                await recv_type(ws, "message")
            # A read receipt reaches the sender and the reader's other device, on their nodes.
            await bo.send(json.dumps({"type": "receipt", "conv": conv, "seq": 2,
                                      "kind": "read"}))
            for ws in (amy, bo2):
                r = await recv_type(ws, "receipt")
                self.assertEqual((r["conv"], r["seq"], r["kind"], r["user"]),
                                 (conv, 2, "read", "rt-bo"))
            # A receipt that moves nothing is dropped; the cursor shows in conv_get of a group.
            await bo.send(json.dumps({"type": "receipt", "conv": conv, "seq": 1,
                                      "kind": "read"}))
            await no_message(amy)
            # Typing reaches the other member once a second at most.
            await amy.send(json.dumps({"type": "typing", "to": "rt-bo"}))
            await amy.send(json.dumps({"type": "typing", "to": "rt-bo"}))
            for ws in (bo, bo2):
                t = await recv_type(ws, "typing")
                self.assertEqual((t["conv"], t["user"]), (conv, "rt-amy"))
                await no_message(ws)
            gid = (await request(cy, {"type": "conv_create", "id": "c", "name": "t",
                                      "members": ["rt-amy", "rt-bo"]}, "conv"))["conv"]
            await request(amy, {"type": "send", "id": "g", "conv": gid, "body": "x"}, "ack")
            await cy.send(json.dumps({"type": "receipt", "conv": gid, "seq": 2,
                                      "kind": "read"}))
            r = await recv_type(amy, "receipt")
            self.assertEqual((r["conv"], r["seq"], r["user"]), (gid, 2, "rt-cy"))
            conv_ = await request(cy, {"type": "conv_get", "id": "g1", "conv": gid}, "conv")
            self.assertEqual((conv_["read_seq"], conv_["last_seq"]), (2, 2))
            await cy.send(json.dumps({"type": "typing", "conv": gid}))
            for ws in (amy, bo):
                t = await recv_type(ws, "typing")
                self.assertEqual((t["conv"], t["user"]), (gid, "rt-cy"))
            for ws in (amy, bo, bo2, cy):
                await ws.close()
        self.run_async(go())

    def test_conv_list_on_any_node(self):
        async def go():
            li = await connect(self.port(0), "cl-li")
            mo = await connect(self.port(1), "cl-mo")
            nu = await connect(self.port(2), "cl-nu")
            await self.settle()
            empty = await request(li, {"type": "conv_list", "id": "l0"}, "convs")
            self.assertEqual(empty["convs"], [])
            await request(li, {"type": "send", "id": "d1", "to": "cl-mo", "body": "a"}, "ack")
            await request(mo, {"type": "send", "id": "d2", "to": "cl-li", "body": "b"}, "ack")
            gid = (await request(nu, {"type": "conv_create", "id": "g", "name": "trio",
                                      "members": ["cl-li", "cl-mo"]}, "conv"))["conv"]
            await li.send(json.dumps({"type": "receipt", "conv": "dm:cl-li:cl-mo", "seq": 2,
                                      "kind": "read"}))
            await asyncio.sleep(0.3)  # receipts are not answered

            def by_conv(answer):
                return {c["conv"]: c for c in answer["convs"]}
            got = by_conv(await request(li, {"type": "conv_list", "id": "l1"}, "convs"))
            self.assertEqual(set(got), {"dm:cl-li:cl-mo", gid})
            dm = got["dm:cl-li:cl-mo"]
            self.assertEqual((dm["kind"], dm["member_count"], dm["last_seq"], dm["read_seq"]),
                             ("direct", 2, 2, 2))
            g = got[gid]
            self.assertEqual((g["kind"], g["name"], g["owner"], g["member_count"],
                              g["last_seq"]), ("group", "trio", "cl-nu", 3, 1))
            # Leaving takes the group out of the list; the other members keep it.
            await request(li, {"type": "conv_leave", "id": "x", "conv": gid}, "conv")
            got = by_conv(await request(li, {"type": "conv_list", "id": "l2"}, "convs"))
            self.assertEqual(set(got), {"dm:cl-li:cl-mo"})
            got = by_conv(await request(nu, {"type": "conv_list", "id": "l3"}, "convs"))
            self.assertEqual((set(got), got[gid]["member_count"]), ({gid}, 2))
            for ws in (li, mo, nu):
                await ws.close()
        self.run_async(go())

    def test_what_cluster_mode_does_not_do_yet(self):
        async def go():
            ws = await connect(self.port(0), "un-user")
            err = await request(ws, {"type": "sync", "id": "s", "since": "0"})
            self.assertEqual((err["type"], err["code"]), ("error", "unsupported"), err)
            await ws.close()
        self.run_async(go())


if __name__ == "__main__":
    unittest.main()
