"""Groups, receipts, typing, limits and slow consumers over the JSON protocol on /ws, with real
websockets clients against a real server (several workers, so members live on different ones)."""

import asyncio
import json
import os
import shutil
import socket
import tempfile

import unittest
import urllib.request

import websockets

import sbtest
from test_chat import connect, mint, no_message, recv_json


async def request(ws, msg, want=None, timeout=5):
    """Sends msg and returns the first answer of type `want` (or any type) carrying its id;
    other traffic that arrives meanwhile is skipped."""
    await ws.send(json.dumps(msg))
    while True:
        got = await recv_json(ws, timeout)
        if got.get("id") == msg.get("id") and (want is None or got["type"] in (want, "error")):
            return got


async def recv_type(ws, kind, timeout=5):
    """The next message of this type; others are skipped."""
    while True:
        got = await recv_json(ws, timeout)
        if got["type"] == kind:
            return got


async def recv_system(ws, kind, timeout=5):
    """The next system message of this kind; others are skipped."""
    while True:
        got = await recv_type(ws, "message", timeout)
        if got.get("system") == kind:
            return got


class GroupTest(sbtest.ServerTestCase):
    server_settings = {"workers": 3, "jwt_leeway_s": 0}

    def run_async(self, coro):
        return asyncio.run(asyncio.wait_for(coro, 120))

    def test_group_lifecycle_and_system_messages(self):
        async def go():
            port = self.server.port
            alice, bob, carol, dave = [await connect(port, u)
                                       for u in ("alice", "bob", "carol", "dave")]
            conv = await request(alice, {"type": "conv_create", "id": "c1", "name": "team",
                                         "members": ["bob", "carol"]}, "conv")
            self.assertEqual(conv["type"], "conv", conv)
            gid = conv["conv"]
            self.assertRegex(gid, r"^g:[0-9a-f]{16}$")
            self.assertEqual((conv["name"], conv["owner"], conv["admins"], conv["kind"]),
                             ("team", "alice", ["alice"], "group"))
            self.assertEqual(sorted(conv["members"]), ["alice", "bob", "carol"])
            # Members see the creation as a system message; dave does not.
            for ws in (bob, carol):
                m = await recv_type(ws, "message")
                self.assertEqual((m["conv"], m["seq"], m["system"], m["subject"], m["from"]),
                                 (gid, 1, "created", "team", "alice"))
            await no_message(dave)
            # A post reaches every member but the sending device.
            ack = await request(bob, {"type": "send", "id": "b1", "conv": gid, "body": "hi"},
                                "ack")
            self.assertEqual((ack["type"], ack["seq"]), ("ack", 2))
            for ws in (alice, carol):
                m = await recv_type(ws, "message")
                self.assertEqual((m["body"], m["from"], m["seq"]), ("hi", "bob", 2))
            # Non-members may not post, sync or manage.
            err = await request(dave, {"type": "send", "id": "d1", "conv": gid, "body": "x"})
            self.assertEqual((err["type"], err["code"]), ("error", "forbidden"))
            err = await request(dave, {"type": "sync", "id": "d2", "convs": {gid: 0}})
            self.assertEqual((err["type"], err["code"]), ("error", "forbidden"))
            err = await request(dave, {"type": "conv_add", "id": "d3", "conv": gid,
                                       "users": ["dave"]})
            self.assertEqual(err["code"], "forbidden")
            # Only admins add; the new member sees its own addition and the next post.
            err = await request(bob, {"type": "conv_add", "id": "b2", "conv": gid,
                                      "users": ["dave"]})
            self.assertEqual(err["code"], "forbidden")
            conv = await request(alice, {"type": "conv_add", "id": "c2", "conv": gid,
                                         "users": ["dave", "bob"]}, "conv")
            self.assertEqual(sorted(conv["members"]), ["alice", "bob", "carol", "dave"])
            m = await recv_type(dave, "message")
            self.assertEqual((m["system"], m["subject"], m["from"], m["seq"]),
                             ("member_added", "dave", "alice", 3))
            # Rename, promote, remove, leave.
            conv = await request(alice, {"type": "conv_rename", "id": "c3", "conv": gid,
                                         "name": "crew"}, "conv")
            self.assertEqual(conv["name"], "crew")
            m = await recv_system(carol, "renamed")
            self.assertEqual((m["subject"], m["from"]), ("crew", "alice"))
            err = await request(bob, {"type": "conv_promote", "id": "b3", "conv": gid,
                                      "users": ["bob"]})
            self.assertEqual(err["code"], "forbidden")
            conv = await request(alice, {"type": "conv_promote", "id": "c4", "conv": gid,
                                         "users": ["bob"]}, "conv")
            self.assertEqual(sorted(conv["admins"]), ["alice", "bob"])
            err = await request(bob, {"type": "conv_remove", "id": "b4", "conv": gid,
                                      "users": ["alice"]})
            self.assertEqual(err["code"], "forbidden")
            conv = await request(bob, {"type": "conv_remove", "id": "b5", "conv": gid,
                                       "users": ["dave"]}, "conv")
            self.assertNotIn("dave", conv["members"])
            m = await recv_system(dave, "member_removed")
            self.assertEqual((m["subject"], m["from"]), ("dave", "bob"))
            err = await request(dave, {"type": "send", "id": "d4", "conv": gid, "body": "x"})
            self.assertEqual(err["code"], "forbidden")
            conv = await request(alice, {"type": "conv_leave", "id": "c5", "conv": gid}, "conv")
            self.assertEqual(conv["owner"], "bob")  # the admin takes over
            self.assertNotIn("alice", conv["members"])
            # conv_get and conv_list.
            conv = await request(carol, {"type": "conv_get", "id": "g1", "conv": gid}, "conv")
            self.assertEqual((conv["owner"], sorted(conv["members"])), ("bob", ["bob", "carol"]))
            await request(carol, {"type": "send", "id": "k1", "to": "alice", "body": "dm"},
                          "ack")
            lst = await request(carol, {"type": "conv_list", "id": "l1"}, "convs")
            got = {c["conv"]: c for c in lst["convs"]}
            self.assertEqual(set(got), {gid, "dm:alice:carol"})
            self.assertEqual((got[gid]["name"], got[gid]["member_count"], got[gid]["kind"]),
                             ("crew", 2, "group"))
            lst = await request(alice, {"type": "conv_list", "id": "l2"}, "convs")
            self.assertEqual([c["conv"] for c in lst["convs"]], ["dm:alice:carol"])
            lst = await request(dave, {"type": "conv_list", "id": "l3"}, "convs")
            self.assertEqual(lst["convs"], [])
            # History holds the system messages in order.
            page = await request(bob, {"type": "sync", "id": "s1", "convs": {gid: 0}},
                                 "sync_page")
            self.assertEqual([m.get("system", "") for m in page["messages"]],
                             ["created", "", "member_added", "renamed", "member_removed",
                              "member_removed"])
            # Bad requests.
            for req, code in [
                ({"type": "conv_create", "id": "x1", "members": "bob"}, "bad_request"),
                ({"type": "conv_create", "id": "x2", "members": ["b:b"]}, "bad_request"),
                ({"type": "conv_create", "id": "x3", "name": "n" * 129}, "bad_request"),
                ({"type": "conv_add", "id": "x4", "conv": gid}, "bad_request"),
                ({"type": "conv_add", "id": "x5", "conv": "g:0000000000000001",
                  "users": ["bob"]}, "not_found"),
                ({"type": "conv_rename", "id": "x6", "conv": "dm:alice:carol", "name": "n"},
                 "bad_request"),
                ({"type": "conv_create", "id": "x7",
                  "members": [f"u{i}" for i in range(1001)]}, "bad_request"),
            ]:
                err = await request(carol, req)
                self.assertEqual((err["type"], err["code"]), ("error", code), req)
            for ws in (alice, bob, carol, dave):
                await ws.close()
        self.run_async(go())

    def test_group_of_200_across_workers(self):
        async def go():
            port = self.server.port
            users = [f"m{i:03d}" for i in range(200)]
            conns = await asyncio.gather(*[connect(port, u) for u in users])
            conv = await request(conns[0], {"type": "conv_create", "id": "c", "name": "big",
                                            "members": users[1:]}, "conv")
            gid = conv["conv"]
            self.assertEqual(len(conv["members"]), 200)
            for ws in conns[1:]:
                self.assertEqual((await recv_type(ws, "message"))["system"], "created")
            for k in range(3):
                await conns[k * 50].send(json.dumps({"type": "send", "id": f"s{k}",
                                                     "conv": gid, "body": f"hello {k}"}))
            async def three(i, ws):
                return [await recv_type(ws, "message")
                        for _ in range(3 - (i % 50 == 0 and i < 150))]
            got = await asyncio.gather(*[three(i, ws) for i, ws in enumerate(conns)])
            for i, msgs in enumerate(got):
                # Senders race each other; every member sees the one order of the sequencer.
                want = {f"hello {k}" for k in range(3) if k * 50 != i}
                self.assertEqual({m["body"] for m in msgs}, want, users[i])
                self.assertEqual([m["seq"] for m in msgs], sorted(m["seq"] for m in msgs))
            await asyncio.gather(*[ws.close() for ws in conns])
        self.run_async(go())

    def test_receipts_reach_the_senders_devices(self):
        async def go():
            port = self.server.port
            a1, a2, a3 = [await connect(port, "alice", device=f"a{i}") for i in (1, 2, 3)]
            b1, b2 = [await connect(port, "bob", device=f"b{i}") for i in (1, 2)]
            for i in range(3):
                await request(a1, {"type": "send", "id": f"m{i}", "to": "bob",
                                   "body": f"x{i}"}, "ack")
            for ws in (a2, a3, b1, b2):  # every device of both but the sending one
                self.assertEqual([(await recv_type(ws, "message"))["seq"] for _ in range(3)],
                                 [1, 2, 3])
            await b1.send(json.dumps({"type": "receipt", "conv": "dm:alice:bob", "seq": 3,
                                      "kind": "delivered"}))
            for ws in (a1, a2, a3, b2):
                r = await recv_type(ws, "receipt")
                self.assertEqual((r["conv"], r["seq"], r["kind"], r["user"]),
                                 ("dm:alice:bob", 3, "delivered", "bob"))
            await b1.send(json.dumps({"type": "receipt", "to": "alice", "seq": 2,
                                      "kind": "read"}))
            for ws in (a1, a2, a3, b2):
                r = await recv_type(ws, "receipt")
                self.assertEqual((r["seq"], r["kind"]), (2, "read"))
            await no_message(b1)
            # A receipt that moves nothing is dropped; one past the end counts to the end.
            await b1.send(json.dumps({"type": "receipt", "to": "alice", "seq": 1,
                                      "kind": "read"}))
            await no_message(a1)
            await b1.send(json.dumps({"type": "receipt", "to": "alice", "seq": 99,
                                      "kind": "read"}))
            self.assertEqual((await recv_type(a2, "receipt"))["seq"], 3)
            # The read cursor shows in the list.
            lst = await request(b2, {"type": "conv_list", "id": "l"}, "convs")
            self.assertEqual({c["conv"]: c["read_seq"] for c in lst["convs"]}["dm:alice:bob"],
                             3)
            for req in [{"type": "receipt", "to": "alice", "seq": 1, "kind": "seen"},
                        {"type": "receipt", "to": "alice", "seq": 0, "kind": "read"},
                        {"type": "receipt", "conv": "dm:carol:dave", "seq": 1,
                         "kind": "read"}]:
                await b1.send(json.dumps(req))
                err = await recv_type(b1, "error")
                self.assertIn(err["code"], ("bad_request", "forbidden"))
            for ws in (a1, a2, a3, b1, b2):
                await ws.close()
        self.run_async(go())

    def test_typing_reaches_members_only_and_is_coalesced(self):
        async def go():
            port = self.server.port
            alice, bob, carol, eve = [await connect(port, u)
                                      for u in ("alice", "bob", "carol", "eve")]
            gid = (await request(alice, {"type": "conv_create", "id": "c",
                                         "members": ["bob", "carol"]}, "conv"))["conv"]
            for ws in (bob, carol):
                await recv_type(ws, "message")
            for _ in range(5):
                await alice.send(json.dumps({"type": "typing", "conv": gid}))
            for ws in (bob, carol):
                t = await recv_type(ws, "typing")
                self.assertEqual((t["conv"], t["user"]), (gid, "alice"))
                await no_message(ws, 0.5)  # the other four were coalesced
            await no_message(alice)
            await no_message(eve)
            await eve.send(json.dumps({"type": "typing", "conv": gid}))
            self.assertEqual((await recv_type(eve, "error"))["code"], "forbidden")
            await asyncio.sleep(1.0)
            await alice.send(json.dumps({"type": "typing", "conv": gid}))
            self.assertEqual((await recv_type(bob, "typing"))["user"], "alice")
            for ws in (alice, bob, carol, eve):
                await ws.close()
        self.run_async(go())


    def test_sync_since_a_cursor_covers_every_conversation(self):
        async def collect(ws, req):
            """Sends a sync since a cursor; returns ({conv: page}, sync_done)."""
            await ws.send(json.dumps(req))
            pages = {}
            while True:
                got = await recv_json(ws)
                if got.get("id") != req["id"]:
                    continue
                if got["type"] == "sync_done":
                    return pages, got
                self.assertEqual(got["type"], "sync_page", got)
                pages[got["conv"]] = got

        async def go():
            port = self.server.port
            kim, lee, max_ = [await connect(port, u) for u in ("kim", "lee", "max")]
            gid = (await request(kim, {"type": "conv_create", "id": "c", "name": "k",
                                       "members": ["lee", "max"]}, "conv"))["conv"]
            for i in range(3):
                await request(lee, {"type": "send", "id": f"a{i}", "to": "kim", "body": "x"},
                              "ack")
            await request(max_, {"type": "send", "id": "b0", "to": "kim", "body": "y"}, "ack")
            await request(max_, {"type": "send", "id": "g0", "conv": gid, "body": "z"}, "ack")
            # Everything: one page per conversation, then the cursor. (A message of the same
            # millisecond as the cursor comes again next time: the sleep keeps this exact.)
            await asyncio.sleep(0.01)
            pages, done = await collect(kim, {"type": "sync", "id": "s1", "since": "0"})
            self.assertEqual(sorted(pages), sorted([gid, "dm:kim:lee", "dm:kim:max"]))
            self.assertEqual([m["seq"] for m in pages["dm:kim:lee"]["messages"]], [1, 2, 3])
            self.assertEqual([m.get("system", "") for m in pages[gid]["messages"]],
                             ["created", ""])
            cursor = done["cursor"]
            # Since the cursor: only what came after it, only where something came.
            await request(lee, {"type": "send", "id": "a3", "to": "kim", "body": "new"}, "ack")
            pages, done2 = await collect(kim, {"type": "sync", "id": "s2", "since": cursor})
            self.assertEqual(list(pages), ["dm:kim:lee"])
            self.assertEqual([m["seq"] for m in pages["dm:kim:lee"]["messages"]], [4])
            self.assertGreaterEqual(int(done2["cursor"]), int(cursor))
            # A small limit: the page says more, and sync by conversation continues.
            pages, _ = await collect(kim, {"type": "sync", "id": "s3", "since": "0", "limit": 2})
            page = pages["dm:kim:lee"]
            self.assertEqual(([m["seq"] for m in page["messages"]], page["more"]), ([1, 2], True))
            # Errors.
            for req in [{"type": "sync", "id": "e1", "since": 5},
                        {"type": "sync", "id": "e2", "since": "x1"},
                        {"type": "sync", "id": "e3", "since": "0", "convs": {gid: 0}}]:
                err = await request(kim, req)
                self.assertEqual((err["type"], err["code"]), ("error", "bad_request"), req)
            for ws in (kim, lee, max_):
                await ws.close()
        self.run_async(go())


class LimitTest(sbtest.ServerTestCase):
    server_settings = {"workers": 2, "rate_messages": 5, "max_devices": 2,
                       "max_group_members": 3, "max_body_size": 100}

    def run_async(self, coro):
        return asyncio.run(asyncio.wait_for(coro, 60))

    def test_rate_limit_gets_retry_after(self):
        async def go():
            ws = await connect(self.server.port, "alice")
            errors = []
            for i in range(30):
                await ws.send(json.dumps({"type": "send", "id": f"m{i}", "to": "bob",
                                          "body": "x"}))
            for _ in range(30):
                got = await recv_json(ws)
                if got["type"] == "error":
                    errors.append(got)
            self.assertGreaterEqual(len(errors), 15)
            self.assertEqual(errors[0]["code"], "rate_limited")
            self.assertTrue(0 < errors[0]["retry_after_ms"] <= 1000, errors[0])
            await asyncio.sleep(errors[-1]["retry_after_ms"] / 1000 + 0.05)
            ack = await request(ws, {"type": "send", "id": "late", "to": "bob", "body": "x"})
            self.assertEqual(ack["type"], "ack")
            await ws.close()
        self.run_async(go())

    def test_max_devices_replaces_the_oldest(self):
        async def go():
            port = self.server.port
            d1 = await connect(port, "bob", device="d1")
            d2 = await connect(port, "bob", device="d2")
            d3 = await connect(port, "bob", device="d3")
            bye = await recv_type(d1, "goaway")
            self.assertEqual(bye["reason"], "replaced by a newer device")
            with self.assertRaises(websockets.ConnectionClosed) as cm:
                await recv_json(d1)
            self.assertEqual(cm.exception.rcvd.code, 1008)
            await no_message(d2)
            await d2.close()
            await d3.close()
        self.run_async(go())

    def test_group_size_and_body_limits(self):
        async def go():
            ws = await connect(self.server.port, "alice")
            err = await request(ws, {"type": "conv_create", "id": "c1",
                                     "members": ["b", "c", "d"]})
            self.assertEqual(err["code"], "conflict")
            gid = (await request(ws, {"type": "conv_create", "id": "c2", "members": ["b"]},
                                 "conv"))["conv"]
            err = await request(ws, {"type": "conv_add", "id": "c3", "conv": gid,
                                     "users": ["c", "d"]})
            self.assertEqual(err["code"], "conflict")
            err = await request(ws, {"type": "send", "id": "s", "conv": gid, "body": "x" * 101})
            self.assertEqual(err["code"], "too_large")
            await ws.close()
        self.run_async(go())


class RefuseTest(sbtest.ServerTestCase):
    server_settings = {"workers": 2, "max_devices": 1, "device_policy": "refuse"}

    def test_max_devices_refuses_the_new_one(self):
        async def go():
            port = self.server.port
            d1 = await connect(port, "bob", device="d1")
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws?device=d2",
                                          extra_headers={"Authorization": "Bearer " +
                                                         mint("bob")})
            err = await recv_json(ws)
            self.assertEqual((err["type"], err["code"]), ("error", "conflict"))
            with self.assertRaises(websockets.ConnectionClosed) as cm:
                await recv_json(ws)
            self.assertEqual(cm.exception.rcvd.code, 1008)
            await no_message(d1)
            await d1.close()
        asyncio.run(asyncio.wait_for(go(), 30))


class SlowConsumerTest(sbtest.ServerTestCase):
    server_settings = {"workers": 2, "slow_queue_bytes": "256K", "rate_messages": 100000,
                       "history_max_messages": 5000,
                       "rate_bytes": "1G"}

    def test_a_reader_that_stops_is_told_it_is_behind_and_catches_up_by_sync(self):
        async def go():
            port = self.server.port
            fast = await connect(port, "bob", device="fast")
            # The slow device is a raw socket that stops reading after the handshake.
            slow = socket.socket()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
            slow.connect(("127.0.0.1", port))
            slow.sendall((f"GET /ws?device=slow&token={mint('bob')} HTTP/1.1\r\n"
                          "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Version: 13\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
            alice = await connect(port, "alice")
            body = "y" * 4000
            n = 2000
            # Batches paced by the fast device, so that only the stopped one falls behind.
            seqs = []
            for b in range(0, n, 50):
                for i in range(b, b + 50):
                    await alice.send(json.dumps({"type": "send", "id": f"m{i}", "to": "bob",
                                                 "body": body}))
                seqs += [(await recv_type(fast, "message"))["seq"] for _ in range(50)]
            acks = 0
            while acks < n:
                if (await recv_json(alice))["type"] == "ack":
                    acks += 1
            # The fast device got all of them, in order: the slow one slowed nobody down.
            self.assertEqual(seqs, list(range(1, n + 1)))
            # The slow device resumes reading: it finds `behind`, then syncs the rest.
            slow.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=slow)
            head = await reader.readuntil(b"\r\n\r\n")
            self.assertIn(b" 101 ", head)
            got, behind = [], None
            while behind is None:
                msg = await read_frame(reader)
                if msg["type"] == "message":
                    got.append(msg["seq"])
                elif msg["type"] == "behind":
                    behind = msg
            self.assertEqual(behind["conv"], "dm:alice:bob")
            self.assertLess(len(got), n)
            last = behind["seq"]
            self.assertEqual(got, list(range(1, last + 1)))
            # Sync from there (a raw masked frame), page by page, and nothing is missing.
            while last < n:
                writer.write(mask_frame(json.dumps({"type": "sync", "id": f"s{last}",
                                                    "convs": {"dm:alice:bob": last},
                                                    "limit": 1000})))
                while True:
                    msg = await read_frame(reader)
                    if msg["type"] == "sync_page":
                        break
                got += [m["seq"] for m in msg["messages"]]
                last = msg["last_seq"]
            self.assertEqual(got, list(range(1, n + 1)))
            writer.close()
            await fast.close()
            await alice.close()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                self.assertRegex(r.read().decode(), r"switchboard_behind_total [1-9]")
        asyncio.run(asyncio.wait_for(go(), 90))


async def read_frame(reader):
    """One unmasked server text frame, parsed as JSON."""
    hdr = await reader.readexactly(2)
    n = hdr[1] & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return json.loads(await reader.readexactly(n))


def mask_frame(text):
    data = text.encode()
    key = os.urandom(4)
    n = len(data)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                            bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(data))


class GroupDurabilityTest(unittest.TestCase):
    def finish(self, srv):
        bad = srv.bad_log_lines(since_start=True)
        self.assertFalse(bad, "server log has error/sanitizer lines:\n" + "\n".join(bad[:20]))

    def test_groups_and_read_cursors_survive_kill_9(self):
        async def setup(port):
            alice = await connect(port, "alice")
            bob = await connect(port, "bob")
            gid = (await request(alice, {"type": "conv_create", "id": "c", "name": "keep",
                                         "members": ["bob", "carol"]}, "conv"))["conv"]
            await request(alice, {"type": "conv_promote", "id": "p", "conv": gid,
                                  "users": ["bob"]}, "conv")
            await request(alice, {"type": "conv_remove", "id": "r", "conv": gid,
                                  "users": ["carol"]}, "conv")
            await request(alice, {"type": "conv_add", "id": "a", "conv": gid,
                                  "users": ["dave"]}, "conv")
            await request(alice, {"type": "conv_rename", "id": "n", "conv": gid,
                                  "name": "kept"}, "conv")
            await request(alice, {"type": "send", "id": "m", "conv": gid, "body": "x"}, "ack")
            await bob.send(json.dumps({"type": "receipt", "conv": gid, "seq": 5,
                                       "kind": "read"}))
            await recv_type(alice, "receipt")
            return gid

        async def check(port, gid, last_seq):
            bob = await connect(port, "bob")
            conv = await request(bob, {"type": "conv_get", "id": "g", "conv": gid}, "conv")
            self.assertEqual((conv["name"], conv["owner"], sorted(conv["admins"]),
                              sorted(conv["members"]), conv["last_seq"], conv["read_seq"]),
                             ("kept", "alice", ["alice", "bob"], ["alice", "bob", "dave"],
                              last_seq, 5))
            lst = await request(bob, {"type": "conv_list", "id": "l"}, "convs")
            self.assertEqual([c["conv"] for c in lst["convs"]], [gid])
            carol = await connect(port, "carol")
            err = await request(carol, {"type": "send", "id": "s", "conv": gid, "body": "x"})
            self.assertEqual(err["code"], "forbidden")
            ack = await request(bob, {"type": "send", "id": "s", "conv": gid, "body": "y"})
            self.assertEqual(ack["seq"], 6)  # the second run: a duplicate of the first
            await bob.close()
            await carol.close()

        data_dir = tempfile.mkdtemp(prefix="sb-groups-")
        self.addCleanup(shutil.rmtree, data_dir, True)
        with sbtest.Server(workers=3, fsync="always", data_dir=data_dir) as srv:
            gid = asyncio.run(asyncio.wait_for(setup(srv.port), 30))
            srv.kill()
            self.finish(srv)
        # Replayed from the log as written (start-up then rewrites it: compaction), on another
        # worker count; then once more from the compacted log.
        for workers, last_seq in ((2, 5), (3, 6)):
            with sbtest.Server(workers=workers, data_dir=data_dir) as srv:
                asyncio.run(asyncio.wait_for(check(srv.port, gid, last_seq), 30))
                self.finish(srv)


if __name__ == "__main__":
    unittest.main()
