"""Messaging over the JSON protocol on /ws: authentication, direct messages across workers,
multi-device delivery, duplicate suppression and membership checks."""

import asyncio
import json
import subprocess
import socket
import time

import websockets

import sbtest


def mint(sub, *args):
    out = subprocess.run([sbtest.SB_BIN, "token", "--sub", sub, *args], check=True,
                         capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


async def connect(port, user, device=None, token=None, **kw):
    url = f"ws://127.0.0.1:{port}/ws" + (f"?device={device}" if device else "")
    ws = await websockets.connect(
        url, extra_headers={"Authorization": "Bearer " + (token or mint(user))}, **kw)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome", welcome
    assert welcome["user"] == user, welcome
    return ws


async def recv_json(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def no_message(ws, timeout=0.3):
    try:
        msg = await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        return True
    raise AssertionError(f"unexpected message {msg}")


class ChatTest(sbtest.ServerTestCase):
    server_settings = {"workers": 3, "jwt_leeway_s": 0}

    def run_async(self, coro):
        return asyncio.run(asyncio.wait_for(coro, 60))

    def http_status(self, headers):
        """Sends an upgrade request to /ws; returns (status, body)."""
        lines = ["GET /ws HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=5) as s:
            s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    def test_refused_tokens_get_401_with_reason(self):
        cases = [
            ({}, "missing token"),
            ({"Authorization": "Bearer not.a.jwt"}, None),
            ({"Authorization": "Bearer " + mint("alice", "--jwt-secret", "other-secret")},
             "signature"),
            ({"Authorization": "Bearer " + mint("alice", "--ttl", "1s")}, "expired"),
        ]
        time.sleep(1.2)  # the 1 s token above expires (leeway is 0)
        for headers, reason in cases:
            status, body = self.http_status(headers)
            self.assertEqual(status, 401, headers)
            doc = json.loads(body)
            self.assertEqual(doc["error"], "unauthorized")
            if reason:
                self.assertIn(reason, doc["reason"])

    def test_direct_message_multi_device_and_duplicates(self):
        async def go():
            port = self.server.port
            a1 = await connect(port, "alice", "phone")
            a2 = await connect(port, "alice", "laptop")
            b = await connect(port, "bob")
            await a1.send(json.dumps({"type": "send", "id": "c1", "to": "bob",
                                      "body": "hi bob \u00e9"}))
            ack = await recv_json(a1)
            self.assertEqual(ack["type"], "ack")
            self.assertEqual(ack["id"], "c1")
            self.assertEqual(ack["conv"], "dm:alice:bob")
            self.assertEqual(ack["seq"], 1)
            for ws in (b, a2):  # the recipient and the sender's other device
                msg = await recv_json(ws)
                self.assertEqual(msg["type"], "message")
                self.assertEqual((msg["conv"], msg["seq"], msg["from"], msg["device"],
                                  msg["body"], msg["msg_id"]),
                                 ("dm:alice:bob", 1, "alice", "phone", "hi bob \u00e9",
                                  ack["msg_id"]))
            # A retry with the same client id: the same ack again, and no second delivery.
            await a1.send(json.dumps({"type": "send", "id": "c1", "to": "bob", "body": "x"}))
            dup = await recv_json(a1)
            self.assertEqual((dup["seq"], dup["msg_id"], dup.get("duplicate")),
                             (1, ack["msg_id"], True))
            await no_message(b)
            # Bob answers in the same conversation by its id.
            await b.send(json.dumps({"type": "send", "id": "r1", "conv": "dm:alice:bob",
                                     "body": "hello"}))
            self.assertEqual((await recv_json(b))["seq"], 2)
            for ws in (a1, a2):
                msg = await recv_json(ws)
                self.assertEqual((msg["seq"], msg["from"], msg["body"]), (2, "bob", "hello"))
            for ws in (a1, a2, b):
                await ws.close()
        self.run_async(go())

    def test_many_pairs_across_workers(self):
        async def go():
            port = self.server.port
            users = [f"user{i}" for i in range(24)]
            conns = {u: await connect(port, u) for u in users}
            for i, u in enumerate(users):
                to = users[(i + 1) % len(users)]
                await conns[u].send(json.dumps({"type": "send", "id": f"m{i}", "to": to,
                                                "body": f"from {u}"}))
            for i, u in enumerate(users):
                sender = users[i - 1]
                got = [await recv_json(conns[u]) for _ in range(2)]
                kinds = sorted(m["type"] for m in got)
                self.assertEqual(kinds, ["ack", "message"], got)
                msg = next(m for m in got if m["type"] == "message")
                self.assertEqual((msg["from"], msg["body"]), (sender, f"from {sender}"))
            for ws in conns.values():
                await ws.close()
        self.run_async(go())

    def test_errors_and_membership(self):
        async def go():
            port = self.server.port
            a = await connect(port, "alice")
            await a.send("not json")
            self.assertEqual((await recv_json(a))["code"], "bad_request")
            await a.send(json.dumps({"type": "send", "id": "x1", "to": "alice", "body": "me"}))
            self.assertEqual((await recv_json(a))["code"], "bad_request")
            await a.send(json.dumps({"type": "send", "id": "x2", "conv": "dm:bob:carol",
                                     "body": "sneaky"}))
            err = await recv_json(a)
            self.assertEqual((err["type"], err["id"], err["code"]), ("error", "x2", "forbidden"))
            await a.send(json.dumps({"type": "send", "id": "x3", "conv": "g:nope",
                                     "body": "?"}))
            self.assertEqual((await recv_json(a))["code"], "not_found")
            await a.send(json.dumps({"type": "fly", "id": "x4"}))
            self.assertEqual((await recv_json(a))["code"], "bad_request")
            await a.close()
        self.run_async(go())

    def test_frames_in_the_same_packet_as_the_upgrade(self):
        """Frames sent right behind the upgrade request must be read on the user's home worker,
        after the device is registered, for any user (so for every worker)."""
        for i in range(12):
            user = f"eager{i}"
            req = (f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   f"Authorization: Bearer {mint(user)}\r\n\r\n").encode()
            op = json.dumps({"type": "send", "id": "e1", "to": "nobody", "body": "x"}).encode()
            ws = sbtest.RawWS(self.server.port, path="/ws", handshake=False)
            try:
                ws.send(req + sbtest.encode_frame(sbtest.TEXT, op))
                status, _, _, _ = ws.read_head(5)
                self.assertEqual(status, 101)
                _, welcome = ws.read_message()
                self.assertEqual(json.loads(welcome)["user"], user)
                _, ack = ws.read_message()
                self.assertEqual(json.loads(ack)["type"], "ack")
            finally:
                ws.close()

    def test_token_in_subprotocol_for_browsers(self):
        async def go():
            url = f"ws://127.0.0.1:{self.server.port}/ws"
            ws = await websockets.connect(
                url, subprotocols=["switchboard.json", "bearer." + mint("carol")])
            self.assertEqual(ws.subprotocol, "switchboard.json")
            self.assertEqual((await recv_json(ws))["user"], "carol")
            await ws.close()
            ws = await websockets.connect(f"{url}?token={mint('dave')}")
            self.assertEqual((await recv_json(ws))["user"], "dave")
            await ws.close()
        self.run_async(go())


if __name__ == "__main__":
    import unittest
    unittest.main()
