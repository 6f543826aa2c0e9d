"""The REST API under /api/: bearer auth, server-side publish, conversation management, typing,
read receipts, connection info and the admin-only stats, against WebSocket clients of the same
server."""

import asyncio
import http.client
import json
import socket

import sbtest
from test_chat import connect, mint, no_message
from test_groups import recv_type


def call(port, method, path, body=None, token=None, raw_body=None):
    """One request on a fresh connection; returns (status, headers, parsed JSON or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {}
    if token:
        headers["Authorization"] = "Bearer " + token
    data = raw_body if raw_body is not None else (json.dumps(body) if body is not None else None)
    if data is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    r = conn.getresponse()
    text = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), json.loads(text) if text else None


class RestTest(sbtest.ServerTestCase):
    server_settings = {"workers": 3}

    def run_async(self, coro):
        return asyncio.run(asyncio.wait_for(coro, 60))

    def test_publish_and_auth(self):
        async def go():
            port = self.server.port
            bob = await connect(port, "bob")
            loop = asyncio.get_running_loop()
            alice = mint("alice")
            st, _, ack = await loop.run_in_executor(None, lambda: call(
                port, "POST", "/api/messages", {"to": "bob", "body": "from rest", "id": "r1"},
                alice))
            self.assertEqual((st, ack["type"], ack["id"], ack["conv"], ack["seq"]),
                             (200, "ack", "r1", "dm:alice:bob", 1))
            m = await recv_type(bob, "message")
            self.assertEqual((m["body"], m["from"], m["device"]), ("from rest", "alice", "rest"))
            # The same id again is a duplicate, not a second message.
            st, _, ack = await loop.run_in_executor(None, lambda: call(
                port, "POST", "/api/messages", {"to": "bob", "body": "from rest", "id": "r1"},
                alice))
            self.assertEqual((st, ack["seq"], ack.get("duplicate")), (200, 1, True))
            await no_message(bob)
            # No id: one is made up (each request is a new message).
            st, _, ack = await loop.run_in_executor(None, lambda: call(
                port, "POST", "/api/messages", {"to": "bob", "body": "x"}, alice))
            self.assertEqual((st, ack["seq"]), (200, 2))
            self.assertEqual((await recv_type(bob, "message"))["seq"], 2)
            # Publishing as someone else needs the admin scope.
            st, _, err = await loop.run_in_executor(None, lambda: call(
                port, "POST", "/api/messages", {"from": "carol", "to": "bob", "body": "x"},
                alice))
            self.assertEqual((st, err["code"]), (403, "forbidden"))
            admin = mint("backend", "--scope", "admin")
            st, _, ack = await loop.run_in_executor(None, lambda: call(
                port, "POST", "/api/messages", {"from": "carol", "to": "bob", "body": "sys"},
                admin))
            self.assertEqual((st, ack["conv"]), (200, "dm:bob:carol"))
            self.assertEqual((await recv_type(bob, "message"))["from"], "carol")
            # Refusals, each with its status and a JSON body.
            for args, status, code in [
                (("POST", "/api/messages", {"to": "bob", "body": "x"}, None), 401,
                 "unauthorized"),
                (("POST", "/api/messages", {"to": "bob", "body": "x"}, "not.a.jwt"), 401,
                 "unauthorized"),
                (("POST", "/api/messages", {"conv": "dm:bob:carol", "body": "x"}, alice), 403,
                 "forbidden"),
                (("POST", "/api/messages", {"to": "bob"}, alice), 400, "bad_request"),
                (("POST", "/api/messages", [1, 2], alice), 400, "bad_request"),
                (("GET", "/api/messages", None, alice), 405, "bad_request"),
                (("GET", "/api/nothing", None, alice), 404, "not_found"),
                (("GET", "/api/conversations/g:0000000000000001", None, alice), 404,
                 "not_found"),
                (("GET", "/api/connections/stats", None, alice), 403, "forbidden"),
            ]:
                st, hdrs, err = await loop.run_in_executor(None, lambda a=args: call(port, *a))
                self.assertEqual((st, err["type"], err["code"]), (status, "error", code), args)
            st, _, err = await loop.run_in_executor(None, lambda: call(
                port, "POST", "/api/messages", token=alice, raw_body="{not json"))
            self.assertEqual((st, err["code"]), (400, "bad_request"))
            await bob.close()
        self.run_async(go())

    def test_conversations_typing_read_and_info(self):
        async def go():
            port = self.server.port
            loop = asyncio.get_running_loop()
            alice, bob = mint("ann"), mint("ben")
            b1 = await connect(port, "ben", device="b1")
            b2 = await connect(port, "ben", device="b2")

            async def rest(*args):
                return await loop.run_in_executor(None, lambda: call(port, *args))
            st, _, conv = await rest("POST", "/api/conversations",
                                     {"name": "ops", "members": ["ben"]}, alice)
            self.assertEqual((st, conv["type"], conv["owner"]), (200, "conv", "ann"))
            gid = conv["conv"]
            self.assertEqual((await recv_type(b1, "message"))["system"], "created")
            st, _, conv = await rest("POST", f"/api/conversations/{gid}/add",
                                     {"users": ["cat"]}, alice)
            self.assertEqual((st, sorted(conv["members"])), (200, ["ann", "ben", "cat"]))
            st, _, conv = await rest("POST", f"/api/conversations/{gid}/rename",
                                     {"name": "ops2"}, alice)
            self.assertEqual(conv["name"], "ops2")
            st, _, err = await rest("POST", f"/api/conversations/{gid}/rename", {"name": "x"},
                                    bob)
            self.assertEqual((st, err["code"]), (403, "forbidden"))
            st, _, conv = await rest("GET", f"/api/conversations/{gid}", None, bob)
            self.assertEqual((st, conv["name"]), (200, "ops2"))
            st, _, lst = await rest("GET", "/api/conversations", None, bob)
            self.assertEqual((st, [c["conv"] for c in lst["convs"]]), (200, [gid]))
            # Typing through REST reaches the other members' devices.
            st, _, ok = await rest("POST", f"/api/conversations/{gid}/typing", None, alice)
            self.assertEqual((st, ok), (200, {"type": "ok"}))
            t = await recv_type(b2, "typing")
            self.assertEqual((t["conv"], t["user"]), (gid, "ann"))
            # A message, then ben reads it over REST: ann's sender devices... she has none
            # online, but ben's devices learn of the read.
            st, _, ack = await rest("POST", "/api/messages",
                                    {"conv": gid, "body": "read me"}, alice)
            st, _, ok = await rest("POST", "/api/messages/read",
                                   {"conv": gid, "seq": ack["seq"]}, bob)
            self.assertEqual((st, ok["type"]), (200, "ok"))
            r = await recv_type(b1, "receipt")
            self.assertEqual((r["kind"], r["seq"], r["user"]), ("read", ack["seq"], "ben"))
            st, _, conv = await rest("GET", f"/api/conversations/{gid}", None, bob)
            self.assertEqual(conv["read_seq"], ack["seq"])
            # Own devices; the admin stats.
            st, _, info = await rest("GET", "/api/connections/info", None, bob)
            self.assertEqual((st, info["user"], sorted(d["device"] for d in info["devices"])),
                             (200, "ben", ["b1", "b2"]))
            st, _, stats = await rest("GET", "/api/connections/stats", None,
                                      mint("ops", "--scope", "admin"))
            self.assertEqual((st, len(stats["workers"])), (200, 3))
            self.assertGreaterEqual(stats["connections"], 2)
            # Presence of several users (homed on different workers), online or not.
            st, _, status = await rest("POST", "/api/user/status",
                                       {"users": ["ben", "nobody", "ann", "ben"]}, alice)
            self.assertEqual(st, 200)
            got = {u["user"]: u for u in status["users"]}
            self.assertEqual((got["ben"]["status"], got["nobody"]["status"],
                              got["nobody"]["last_seen"], got["ann"]["status"]),
                             ("online", "offline", 0, "offline"))
            self.assertGreater(got["ben"]["last_seen"], 0)
            self.assertEqual(len(status["users"]), 3)
            for body in ({"users": []}, {"users": ["a:b"]}, {}):
                st, _, err = await rest("POST", "/api/user/status", body, alice)
                self.assertEqual((st, err["code"]), (400, "bad_request"), body)
            st, _, left = await rest("POST", f"/api/conversations/{gid}/leave", None, bob)
            self.assertNotIn("ben", left["members"])
            await b1.close()
            await b2.close()
        self.run_async(go())

    def test_pipelined_requests_are_answered_in_order(self):
        token = mint("pip")
        reqs = b""
        for i in range(5):
            body = json.dumps({"to": f"peer{i}", "body": f"m{i}", "id": f"p{i}"}).encode()
            reqs += (f"POST /api/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        reqs += b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as s:
            s.sendall(reqs)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        parts = data.split(b"HTTP/1.1 ")[1:]
        self.assertEqual(len(parts), 6, data)
        ids = [json.loads(p.split(b"\r\n\r\n", 1)[1])["id"] for p in parts[:5]]
        self.assertEqual(ids, [f"p{i}" for i in range(5)])
        self.assertIn(b"healthy", parts[5])

    def test_client_gone_before_the_answer(self):
        token = mint("gone")
        body = json.dumps({"to": "x", "body": "y"}).encode()
        for _ in range(50):
            with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as s:
                s.sendall((f"POST /api/messages HTTP/1.1\r\nHost: x\r\n"
                           f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
                           ).encode() + body)
        # The server is still well (the class checks its log after the test).
        self.assertEqual(self.server.health()[0], 200)


if __name__ == "__main__":
    import unittest
    unittest.main()
