"""The binary protocol against a real server: the binary port (raw TCP, HELLO first) and /ws
with subprotocol switchboard.v1, talking with JSON clients in the same conversations; refused
frames; resume after a restart under fsync = always. The frames are written by binclient.py, a
codec of its own written from docs/protocol-binary.md."""

import base64
import json
import shutil
import struct
import tempfile
import unittest

import binclient
import sbtest
from binclient import TcpClient, WsClient, encode
from test_chat import connect, mint, recv_json


class BinaryTest(sbtest.ServerTestCase):
    server_settings = {"workers": 3, "handshake_timeout_ms": 1000}

    def tcp(self, user, device="", resume=()):
        c = TcpClient(self.server.bin_port)
        self.addCleanup(c.close)
        name, rid, w = c.hello(mint(user), device, resume)
        self.assertEqual((name, rid, w["user"]), ("welcome", 1, user.encode()))
        return c, w

    def test_tcp_hello_and_direct_messages_with_a_json_client(self):
        alice, w = self.tcp("alice", "laptop")
        self.assertEqual(w["device"], b"laptop")
        self.assertGreater(w["max_body"], 0)
        self.assertGreater(w["max_frame"], w["max_body"])

        async def go():
            bob = await connect(self.server.port, "bob")
            alice.send("send", 7, client_id="c1", to="bob", body="hi bob")
            _, rid, ack = alice.recv_type("ack")
            self.assertEqual((rid, ack["client_id"], ack["conv"], ack["seq"]),
                             (7, b"c1", b"dm:alice:bob", 1))
            msg = await recv_json(bob)
            self.assertEqual((msg["type"], msg["from"], msg["device"], msg["body"]),
                             ("message", "alice", "laptop", "hi bob"))
            self.assertEqual(msg["msg_id"], str(ack["msg_id"]))
            # A body that is not UTF-8 reaches a JSON client as body_b64, and back.
            raw = b"\x00\xff\x10\x80"
            alice.send("send", 8, client_id="c2", to="bob", body=raw)
            alice.recv_type("ack")
            msg = await recv_json(bob)
            self.assertNotIn("body", msg)
            self.assertEqual(base64.b64decode(msg["body_b64"]), raw)
            # JSON text (escapes included) reaches the binary client as its UTF-8 bytes.
            await bob.send(json.dumps({"type": "send", "id": "b1", "to": "alice",
                                       "body": "h\u00e9 \"you\"\n"}))
            self.assertEqual((await recv_json(bob))["type"], "ack")
            _, rid, m = alice.recv_type("message")
            self.assertEqual((rid, m["from"], m["body"], m["seq"], m["system"]),
                             (0, b"bob", "h\u00e9 \"you\"\n".encode(), 3, 0))
            await bob.send(json.dumps({"type": "send", "id": "b2", "to": "alice",
                                       "body_b64": base64.b64encode(raw).decode()}))
            self.assertEqual((await recv_json(bob))["type"], "ack")
            self.assertEqual(alice.recv_type("message")[2]["body"], raw)
            # Receipts and typing cross the encodings too.
            alice.send("receipt", 0, seq=4, kind=2, conv="dm:alice:bob")
            rc = await recv_json(bob)
            self.assertEqual((rc["type"], rc["user"], rc["seq"], rc["kind"]),
                             ("receipt", "alice", 4, "read"))
            await bob.send(json.dumps({"type": "typing", "to": "alice"}))
            _, _, t = alice.recv_type("typing")
            self.assertEqual((t["conv"], t["user"]), (b"dm:alice:bob", b"bob"))
            await bob.close()

        self.run_async(go())

    def test_a_retried_send_is_acked_as_a_duplicate(self):
        c, _ = self.tcp("dora")
        c.send("send", 1, client_id="same", to="erin", body=b"x")
        first = c.recv_type("ack")[2]
        c.send("send", 2, client_id="same", to="erin", body=b"x")
        _, rid, again = c.recv_type("ack")
        self.assertEqual((rid, again["duplicate"], again["msg_id"]),
                         (2, True, first["msg_id"]))

    def test_groups_lists_and_devices(self):
        c, _ = self.tcp("gina", "g1")
        c.send("conv_create", 3, name="trip", members=["hank", "ivan"])
        _, rid, conv = c.recv_type("conv")
        self.assertEqual(rid, 3)
        self.assertEqual(sorted(conv["members"]), [b"gina", b"hank", b"ivan"])
        self.assertEqual((conv["owner"], conv["admins"], conv["name"]),
                         (b"gina", [b"gina"], b"trip"))
        gid = conv["conv"].decode()
        # The creating device got its answer instead of the system message: it is in history.
        c.send("sync", 9, convs=[{"conv": gid, "last_seq": 0}])
        created = c.recv_type("sync_page")[2]["messages"][0]
        self.assertEqual((created["system"], created["subject"], created["body"]),
                         (4, b"trip", b""))
        c.send("conv_promote", 4, conv=gid, users=["hank"])
        self.assertEqual(sorted(c.recv_type("conv")[2]["admins"]), [b"gina", b"hank"])
        c.send("conv_rename", 5, conv=gid, name="voyage")
        self.assertEqual(c.recv_type("conv")[2]["name"], b"voyage")
        c.send("conv_list", 6)
        _, rid, convs = c.recv_type("convs")
        self.assertEqual(rid, 6)
        item = [x for x in convs["convs"] if x["conv"] == gid.encode()][0]
        self.assertEqual((item["member_count"], item["name"]), (3, b"voyage"))
        c.send("devices", 7)
        _, rid, devs = c.recv_type("device_list")
        self.assertEqual((rid, devs["user"], [d["device"] for d in devs["devices"]]),
                         (7, b"gina", [b"g1"]))
        c.send("conv_get", 8, conv="g:0000000000000001")
        _, rid, err = c.recv_type("error")
        self.assertEqual((rid, binclient.ERRORS[err["code"]]), (8, "not_found"))

    def test_sync_pages_and_cursor(self):
        c, _ = self.tcp("jack")
        for i in range(3):
            c.send("send", 10 + i, client_id=f"m{i}", to="kate", body=f"n{i}")
            c.recv_type("ack")
        c.send("sync", 20, limit=2, convs=[{"conv": "dm:jack:kate", "last_seq": 0}])
        _, rid, page = c.recv_type("sync_page")
        self.assertEqual((rid, page["conv"], page["more"], page["last_seq"]),
                         (20, b"dm:jack:kate", True, 2))
        self.assertEqual([m["body"] for m in page["messages"]], [b"n0", b"n1"])
        c.send("sync", 21, cursor="0")
        _, rid, page = c.recv_type("sync_page")
        self.assertEqual((rid, len(page["messages"])), (21, 3))
        _, rid, done = c.recv_type("sync_done")
        self.assertEqual(rid, 21)
        self.assertTrue(done["cursor"].isdigit())
        c.send("sync", 22, convs=[{"conv": "dm:kate:zed", "last_seq": 0}])
        _, rid, err = c.recv_type("error")
        self.assertEqual((rid, binclient.ERRORS[err["code"]], err["conv"]),
                         (22, "forbidden", b"dm:kate:zed"))

    def test_ping_is_answered_with_its_data(self):
        c, _ = self.tcp("lena")
        c.send("ping", 99, data=b"\x01\x02echo")
        self.assertEqual(c.recv_type("pong"), ("pong", 99, {"data": b"\x01\x02echo"}))

    def test_refused_frames_after_hello(self):
        c, _ = self.tcp("mona")
        # An unknown type and a malformed body are answered; the connection stays.
        c.send_raw(struct.pack(">IBBHI", 8, 1, 0x7E, 0, 5))
        _, rid, err = c.recv_type("error")
        self.assertEqual((rid, binclient.ERRORS[err["code"]]), (5, "unsupported"))
        c.send_raw(struct.pack(">IBBHI", 9, 1, 0x0B, 0, 6) + b"\x05")
        _, rid, err = c.recv_type("error")
        self.assertEqual((rid, binclient.ERRORS[err["code"]]), (6, "bad_request"))
        c.send("welcome", 7, user="x", device="y")  # a server's type
        self.assertEqual(binclient.ERRORS[c.recv_type("error")[2]["code"]], "unsupported")
        c.send("hello", 8, token=mint("mona"))
        _, rid, err = c.recv_type("error")
        self.assertEqual((rid, err["message"]), (8, b"a second HELLO"))
        c.send("ping", 9)
        self.assertEqual(c.recv_type("pong")[1], 9)
        # A frame over max_frame cannot be skipped: too_large, then the server closes.
        c.send_raw(struct.pack(">I", 1 << 30))
        self.assertEqual(binclient.ERRORS[c.recv_type("error")[2]["code"]], "too_large")
        self.assertTrue(c.is_closed())

    def test_hello_is_required_and_checked(self):
        port = self.server.bin_port
        cases = [
            (encode("ping", 1), "the first frame must be HELLO"),
            (encode("hello", 2), "missing token"),
            (encode("hello", 3, token="not.a.jwt"), None),
            (encode("hello", 4, token=mint("nina", "--jwt-secret", "other")), "signature"),
            (encode("hello", 5, token=mint("nina"), device="bad device"), "device"),
            (struct.pack(">IBBHI", 8, 2, 1, 0, 6), "version"),
        ]
        for frame, why in cases:
            c = TcpClient(port)
            c.send_raw(frame)
            name, _, err = c.recv()
            self.assertEqual(name, "error", frame)
            if why:
                self.assertIn(why, err["message"].decode())
            self.assertTrue(c.is_closed(), frame)
            c.close()
        # Silence: closed after handshake_timeout_ms without an answer.
        c = TcpClient(port)
        self.assertTrue(c.is_closed(timeout=5))
        self.assertEqual(c.pending, [])
        c.close()

    def test_websocket_subprotocol(self):
        ws = WsClient(self.server.port, mint("olga"), device="tab")
        self.addCleanup(ws.close)
        # The upgrade authenticated: HELLO needs no token, and names the device.
        _, rid, w = ws.hello(b"", device="")
        self.assertEqual((rid, w["user"], w["device"]), (1, b"olga", b"tab"))
        tcp, _ = self.tcp("pete")
        ws.send("send", 2, client_id="w1", to="pete", body=b"\xff\xfe")
        self.assertEqual(ws.recv_type("ack")[1], 2)
        self.assertEqual(tcp.recv_type("message")[2]["body"], b"\xff\xfe")
        tcp.send("send", 3, client_id="t1", to="olga", body=b"back")
        self.assertEqual(ws.recv_type("message")[2]["body"], b"back")
        # A text message on a binary session is refused with close 1003.
        ws.send_raw(b'{"type":"ping"}', opcode=0x1)
        f = ws.ws.read_frame()
        self.assertEqual((f.opcode, f.close_code), (sbtest.CLOSE, 1003))

    def test_websocket_hello_token_must_name_the_same_user(self):
        ws = WsClient(self.server.port, mint("quin"))
        self.addCleanup(ws.close)
        ws.send("hello", 1, token=mint("rosa"))
        _, rid, err = ws.recv_type("error")
        self.assertEqual((rid, binclient.ERRORS[err["code"]]), (1, "unauthorized"))


class BinaryResumeTest(unittest.TestCase):
    """kill -9 under fsync = always, then a HELLO that resumes gets every acked message."""

    def test_resume_after_a_restart(self):
        data = tempfile.mkdtemp(prefix="sb-bin-")
        self.addCleanup(shutil.rmtree, data, True)
        settings = {"workers": 2, "data_dir": data, "fsync": "always"}
        srv = sbtest.Server(**settings).start()
        c = TcpClient(srv.bin_port)
        c.hello(mint("sam"))
        for i in range(5):
            c.send("send", i + 1, client_id=f"k{i}", to="tess", body=bytes([i, 0xff]))
            c.recv_type("ack")
        c.close()
        srv.kill()
        srv.remove_log()
        with sbtest.Server(**settings) as srv:
            c = TcpClient(srv.bin_port)
            _, _, w = c.hello(mint("tess"), resume=[("dm:sam:tess", 2)], rid=9)
            _, rid, page = c.recv_type("sync_page")
            self.assertEqual(rid, 9)
            self.assertEqual([m["seq"] for m in page["messages"]], [3, 4, 5])
            self.assertEqual([m["body"] for m in page["messages"]],
                             [bytes([i, 0xff]) for i in (2, 3, 4)])
            c.close()
