"""The JSON the server writes on /ws, key for key and in order, as clients have always read it
(docs/protocol.md): every server operation of a short session between two users, with the value
formats (msg_id a decimal string, session 16 hex digits, a body kept as its JSON text, escapes
included, and body_b64 for bytes that are not UTF-8)."""

import asyncio
import json
import re
import subprocess

import websockets

import sbtest


def mint(sub):
    out = subprocess.run([sbtest.SB_BIN, "token", "--sub", sub], check=True, capture_output=True,
                         text=True, timeout=10)
    return out.stdout.strip()


# The keys of each operation, in the order the server writes them.
KEYS = {
    "welcome": ["type", "user", "device", "session", "server_time", "limits"],
    "limits": ["max_body", "messages_per_s", "bytes_per_s", "max_group_members", "max_frame",
               "ping_interval_ms"],
    "presence": ["type", "user", "status", "last_seen"],
    "ack": ["type", "id", "msg_id", "conv", "seq", "ts"],
    "ack_duplicate": ["type", "id", "msg_id", "conv", "seq", "ts", "duplicate"],
    "message": ["type", "conv", "seq", "msg_id", "from", "device", "ts", "body"],
    "message_b64": ["type", "conv", "seq", "msg_id", "from", "device", "ts", "body_b64"],
    "message_system": ["type", "conv", "seq", "msg_id", "from", "device", "ts", "system",
                       "subject"],
    "receipt": ["type", "conv", "seq", "kind", "user"],
    "typing": ["type", "conv", "user"],
    "sync_page": ["type", "id", "conv", "messages", "more", "last_seq"],
    "sync_done": ["type", "id", "cursor"],
    "conv": ["type", "id", "conv", "kind", "name", "owner", "admins", "members", "last_seq",
             "read_seq"],
    "conv_item": ["conv", "kind", "name", "owner", "member_count", "last_seq", "read_seq"],
    "convs": ["type", "id", "convs"],
    "devices": ["type", "id", "user", "devices"],
    "device": ["device", "session", "connected_s", "queued_bytes", "behind"],
    "error": ["type", "id", "code", "message"],
    "error_conv": ["type", "id", "code", "message", "conv"],
}


def keys(text):
    """The top-level keys of a JSON object text, in order."""
    return [k for k, _ in json.loads(text, object_pairs_hook=lambda pairs: pairs)]


class JsonWireTest(sbtest.ServerTestCase):
    server_settings = {"workers": 2}

    def test_every_server_operation_as_written(self):
        asyncio.run(asyncio.wait_for(self.session(), 60))

    async def connect(self, user, device):
        ws = await websockets.connect(
            f"ws://127.0.0.1:{self.server.port}/ws?device={device}",
            extra_headers={"Authorization": "Bearer " + mint(user)})
        return ws, await self.recv(ws)

    async def recv(self, ws, want=None):
        """The next text (of type `want`, skipping others), as sent."""
        while True:
            text = await asyncio.wait_for(ws.recv(), 10)
            if want is None or json.loads(text)["type"] == want:
                return text

    def shape(self, text, name):
        self.assertEqual(keys(text), KEYS[name], text)
        return json.loads(text)

    async def session(self):
        alice, welcome = await self.connect("alice", "phone")
        doc = self.shape(welcome, "welcome")
        self.assertEqual(list(doc["limits"]), KEYS["limits"])
        self.assertRegex(doc["session"], r"^[0-9a-f]{16}$")
        self.assertIsInstance(doc["server_time"], int)
        bob, _ = await self.connect("bob", "d1")

        await bob.send('{"type":"presence_sub","id":"p1","users":["alice"]}')
        self.assertEqual(self.shape(await self.recv(bob), "presence")["status"], "online")

        # A body stays its JSON text, escapes and all; a retry is the first ack, marked.
        send = '{"type":"send","id":"c1","to":"bob","body":"hi \\u0062ob \\ud83d\\ude00"}'
        await alice.send(send)
        ack = self.shape(await self.recv(alice), "ack")
        self.assertTrue(re.fullmatch(r"[0-9]+", ack["msg_id"]), ack)
        text = await self.recv(bob, "message")
        self.shape(text, "message")
        self.assertIn('"body":"hi \\u0062ob \\ud83d\\ude00"}', text)
        await alice.send(send)
        self.assertIs(self.shape(await self.recv(alice), "ack_duplicate")["duplicate"], True)

        # Bytes that are not UTF-8 arrive as body_b64, exactly as sent.
        await alice.send('{"type":"send","id":"c2","to":"bob","body_b64":"AP8QgA=="}')
        await self.recv(alice, "ack")
        text = await self.recv(bob, "message")
        self.assertEqual(self.shape(text, "message_b64")["body_b64"], "AP8QgA==")

        await bob.send('{"type":"receipt","conv":"dm:alice:bob","seq":2,"kind":"read"}')
        self.shape(await self.recv(alice, "receipt"), "receipt")
        await bob.send('{"type":"typing","to":"alice"}')
        self.shape(await self.recv(alice, "typing"), "typing")

        await alice.send('{"type":"sync","id":"s1","convs":{"dm:alice:bob":0}}')
        page = self.shape(await self.recv(alice, "sync_page"), "sync_page")
        self.assertEqual([m["seq"] for m in page["messages"]], [1, 2])
        await alice.send('{"type":"sync","id":"s2","since":"0"}')
        self.shape(await self.recv(alice, "sync_page"), "sync_page")
        done = self.shape(await self.recv(alice, "sync_done"), "sync_done")
        self.assertTrue(re.fullmatch(r"[0-9]+", done["cursor"]), done)

        await alice.send('{"type":"conv_create","id":"r1","name":"team","members":["bob"]}')
        conv = self.shape(await self.recv(alice, "conv"), "conv")
        self.assertEqual(conv["kind"], "group")
        text = await self.recv(bob, "message")
        self.assertEqual(self.shape(text, "message_system")["system"], "created")
        # A name as Python's json.dumps or Go writes it (escapes) is the name it spells.
        await alice.send(json.dumps({"type": "conv_rename", "id": "r2", "conv": conv["conv"],
                                     "name": "Tom & Jerry \u00e9"}).replace("&", "\\u0026"))
        text = await self.recv(alice, "conv")
        self.assertIn('"name":"Tom & Jerry \u00e9"'.encode(), text.encode())
        text = await self.recv(bob, "message")
        self.assertEqual(self.shape(text, "message_system")["subject"], "Tom & Jerry \u00e9")

        await alice.send('{"type":"conv_list","id":"l1"}')
        convs = self.shape(await self.recv(alice, "convs"), "convs")
        self.assertEqual(sorted(c["kind"] for c in convs["convs"]), ["direct", "group"])
        for c in convs["convs"]:
            self.assertEqual(list(c), KEYS["conv_item"])

        await alice.send('{"type":"devices","id":"d1"}')
        devices = self.shape(await self.recv(alice, "devices"), "devices")
        self.assertEqual([list(d) for d in devices["devices"]], [KEYS["device"]])

        await alice.send('{"type":"conv_leave","id":"e1"}')
        self.shape(await self.recv(alice, "error"), "error")
        await alice.send('{"type":"sync","id":"s3","convs":{"dm:bob:carol":0}}')
        self.assertEqual(self.shape(await self.recv(alice, "error"), "error_conv")["code"],
                         "forbidden")
        await alice.close()
        await bob.close()
