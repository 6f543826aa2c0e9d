#!/usr/bin/python3
"""Writes the binary protocol's test vectors, and puts them in the specification.

    tests/vectors/mkbinary.py          rewrite tests/vectors/binary.txt, the code blocks of
                                       "Worked examples" in docs/protocol-binary.md and the
                                       fuzz seeds in tests/fuzz/corpus/fuzz_binproto/
    tests/vectors/mkbinary.py --check  exit 1 when any of them differs from what it would write

Each vector is written field by field below: the bytes, the note beside them and the decoded
text come from one call, so they cannot disagree. This is a second, independent writer of the
layouts: tests/unit/test_binproto.c decodes every vector with the C codec and compares.
"""
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VECTORS = os.path.join(ROOT, "tests/vectors/binary.txt")
DOC = os.path.join(ROOT, "docs/protocol-binary.md")
CORPUS = os.path.join(ROOT, "tests/fuzz/corpus/fuzz_binproto")

TYPES = {
    "HELLO": 0x01, "SEND": 0x02, "RECEIPT": 0x03, "TYPING": 0x04, "PRESENCE_SUB": 0x05,
    "PRESENCE_UNSUB": 0x06, "SYNC": 0x07, "CONV_CREATE": 0x08, "CONV_ADD": 0x09,
    "CONV_REMOVE": 0x0A, "CONV_LEAVE": 0x0B, "CONV_RENAME": 0x0C, "CONV_LIST": 0x0D,
    "PING": 0x0E, "PONG": 0x0F, "CONV_PROMOTE": 0x10, "CONV_DEMOTE": 0x11, "CONV_GET": 0x12,
    "DEVICES": 0x13, "WELCOME": 0x81, "ACK": 0x82, "MESSAGE": 0x83, "PRESENCE": 0x84,
    "SYNC_PAGE": 0x85, "CONV": 0x86, "CONVS": 0x87, "ERROR": 0x88, "BEHIND": 0x89,
    "GOAWAY": 0x8A, "SYNC_DONE": 0x8B, "DEVICE_LIST": 0x8C,
}
# What the unit test prints as a frame's type (the JSON names, but DEVICE_LIST has its own).
LABELS = {t: n.lower() for n, t in TYPES.items()}
SYSTEM = ["none", "member_added", "member_removed", "renamed", "created"]
RECEIPT_KIND = {1: "delivered", 2: "read"}
STATUS = {1: "online", 2: "offline"}
ERRORS = ["", "bad_request", "unauthorized", "forbidden", "not_found", "too_large",
          "rate_limited", "conflict", "unavailable", "internal", "unsupported"]

GROUP = "g:5f3a9c0e12b4d678"
DM = "dm:alice:bob"
MSG_ID = 541735948517376000
TS = 1795318161234
SPLIT = 24  # strings longer than this are shown 16 bytes a line


def quote(b):
    """A byte string as the unit test prints it."""
    out = '"'
    for c in b:
        if c in (0x22, 0x5C):
            out += "\\" + chr(c)
        elif 0x20 <= c < 0x7F:
            out += chr(c)
        else:
            out += "\\x%02x" % c
    return out + '"'


def raw(s):
    return s.encode() if isinstance(s, str) else bytes(s)


class Vector:
    def __init__(self, name, comment, type_name=None, request_id=0):
        self.name = name
        self.comment = comment
        self.rows = []  # (bytes, note or None)
        self.expect = []
        self.length = None  # a length prefix other than the frame's own (refused vectors)
        self.type_name = type_name
        if type_name is not None:
            self.header(TYPES[type_name], request_id)
            self.expect += ["result: ok", "type: " + LABELS[TYPES[type_name]],
                            "request_id: %d" % request_id]

    def header(self, type_byte, request_id, version=1, flags=0, type_note=None):
        name = {t: n for n, t in TYPES.items()}.get(type_byte, "0x%02x" % type_byte)
        self.rows.append((b"", "length"))  # filled in by frame()
        self.rows.append((bytes([version]), "version %d" % version))
        self.rows.append((bytes([type_byte]), type_note or "type " + name))
        self.rows.append((struct.pack(">H", flags), "flags 0x%04x" % flags))
        self.rows.append((struct.pack(">I", request_id), "request id %d" % request_id))

    def row(self, data, note=None):
        self.rows.append((bytes(data), note))
        return self

    def _int(self, fmt, kind, name, v, label=None, show=True):
        suffix = " (%s)" % label if label is not None else ""
        self.row(struct.pack(fmt, v), "%s: %s %d%s" % (name, kind, v, suffix))
        if show:
            self.expect.append("%s: %d%s" % (name, v, suffix))
        return self

    def u8(self, name, v, label=None):
        return self._int(">B", "u8", name, v, label)

    def u16(self, name, v, label=None):
        return self._int(">H", "u16", name, v, label)

    def u32(self, name, v):
        return self._int(">I", "u32", name, v)

    def u64(self, name, v):
        return self._int(">Q", "u64", name, v)

    def boolean(self, name, v):
        text = "true" if v else "false"
        self.row([1 if v else 0], "%s: %s" % (name, text))
        self.expect.append("%s: %s" % (name, text))
        return self

    def _string(self, prefix, kind, name, s):
        b = raw(s)
        self.expect.append("%s: %s" % (name, quote(b)))
        if len(b) <= SPLIT:
            return self.row(prefix + b, "%s: %s %s" % (name, kind, quote(b)))
        self.row(prefix, "%s: %s, %d bytes:" % (name, kind, len(b)))
        for i in range(0, len(b), 16):
            self.row(b[i:i + 16], quote(b[i:i + 16]))
        return self

    def str8(self, name, s):
        return self._string(struct.pack(">B", len(raw(s))), "str8", name, s)

    def str16(self, name, s):
        return self._string(struct.pack(">H", len(raw(s))), "str16", name, s)

    def body(self, name, s):
        return self._string(struct.pack(">I", len(raw(s))), "bytes32", name, s)

    def count(self, name, n):
        self.row(struct.pack(">H", n), "%s: u16 count %d" % (name, n))
        self.expect.append("%s: count %d" % (name, n))
        return self

    def users(self, name, users):
        self.count(name, len(users))
        for i, u in enumerate(users):
            self.str8("%s[%d]" % (name, i), u)
        return self

    def resumes(self, name, items):
        self.count(name, len(items))
        for i, (seq, conv) in enumerate(items):
            self.u64("%s[%d].last_seq" % (name, i), seq)
            self.str8("%s[%d].conv" % (name, i), conv)
        return self

    def message(self, p, m):
        self.u64(p + "msg_id", m["msg_id"])
        self.u64(p + "seq", m["seq"])
        self.u64(p + "ts_ms", m["ts_ms"])
        self.u8(p + "system", m.get("system", 0), SYSTEM[m.get("system", 0)])
        self.str8(p + "conv", m["conv"])
        self.str8(p + "from", m["from"])
        self.str8(p + "device", m.get("device", ""))
        self.str8(p + "subject", m.get("subject", ""))
        return self.body(p + "body", m.get("body", ""))

    def refused(self, result, frame_result, read_header=True):
        """What the decoders say; the header shows zeros where the stream decoder stopped."""
        data = b"".join(d for d, _ in self.rows)
        length = self.length if self.length is not None else len(data)
        self.expect = ["result: " + result, "frame_result: " + frame_result,
                       "frame_size: %d" % (4 + length)]
        if read_header:
            t = data[1]
            self.expect += ["version: %d" % data[0],
                            "type: " + LABELS.get(t, "0x%02x" % t),
                            "flags: 0x%04x" % struct.unpack(">H", data[2:4]),
                            "request_id: %d" % struct.unpack(">I", data[4:8])]
        else:
            self.expect += ["version: 0", "type: 0x00", "flags: 0x0000", "request_id: 0"]
        return self

    def frame(self):
        """The frame's bytes, and the vector as text."""
        body = b"".join(d for d, _ in self.rows)
        length = self.length if self.length is not None else len(body)
        rows = [(struct.pack(">I", length), "length %d" % length)] + self.rows[1:]
        if self.rows[0][1] != "length":  # a refused vector that writes its own prefix
            rows = self.rows
        frame = b"".join(d for d, _ in rows)
        hexes = [" ".join("%02x" % c for c in d) for d, _ in rows]
        width = max(len(h) for h, (_, note) in zip(hexes, rows))
        lines = ["== " + self.name] + ["# " + c for c in self.comment.split("\n")]
        for h, (_, note) in zip(hexes, rows):
            lines.append(h if note is None else "%-*s | %s" % (width, h, note))
        lines.append("--")
        lines += self.expect
        return frame, "\n".join(lines) + "\n"


def V(name, comment, type_name=None, request_id=0):
    return Vector(name, comment, type_name, request_id)


TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.sig"
PING_DATA = bytes([0x00, 0x00, 0x01, 0xA2, 0x01, 0x4D, 0x1E, 0x68])


def handshake():
    yield (V("hello", "HELLO on raw TCP: a token (a JWT, shortened here), the device, and two "
             "conversations\nto resume after the sequence numbers the client already has.",
             "HELLO", 1)
           .str16("token", TOKEN).str8("device", "phone")
           .resumes("resume", [(41, DM), (7, GROUP)]))
    yield (V("hello_minimal", "HELLO on WebSocket, where the upgrade already authenticated: no "
             "token, the\nserver names the device, nothing to resume. The smallest HELLO.",
             "HELLO", 0)
           .str16("token", "").str8("device", "").resumes("resume", []))
    yield (V("welcome", "WELCOME answers HELLO (request id 1): session 0x010000000000002a, "
             "server time,\nmax frame 4 MiB, max body 4 MiB - 512, ping every 30 s, 100 "
             "requests and 1 MiB a second,\ngroups of up to 10,000 members.", "WELCOME", 1)
           .u64("session", 0x010000000000002A).u64("server_time_ms", 1795318161000)
           .u32("max_frame", 4194304).u32("max_body", 4194304 - 512)
           .u32("ping_interval_ms", 30000).u32("messages_per_s", 100)
           .u32("bytes_per_s", 1048576).u32("max_group_members", 10000)
           .str8("user", "alice").str8("device", "phone"))


def sending():
    yield (V("send_to_user", 'SEND to a user (the direct conversation with bob), client id "c1".',
             "SEND", 2)
           .str8("client_id", "c1").str8("conv", "").str8("to", "bob").body("body", "hi bob"))
    yield (V("send_to_conv", "SEND to a group by id, with a body that is not UTF-8 (say, "
             'ciphertext): a JSON\nclient would see it as "body_b64":"AP8QgA==".', "SEND", 3)
           .str8("client_id", "c2").str8("conv", GROUP).str8("to", "")
           .body("body", b"\x00\xff\x10\x80"))
    for name, rid, dup, comment in (
            ("ack", 2, False, "ACK of the SEND with request id 2: message id, sequence 1, "
             "server time."),
            ("ack_duplicate", 9, True, "ACK of a retried SEND: the original ack, marked "
             "duplicate.")):
        yield (V(name, comment, "ACK", rid).u64("msg_id", MSG_ID).u64("seq", 1).u64("ts_ms", TS)
               .boolean("duplicate", dup).str8("client_id", "c1").str8("conv", DM))
    yield (V("message", "MESSAGE delivered to bob's devices: an ordinary message, not an answer.",
             "MESSAGE", 0)
           .message("", dict(msg_id=MSG_ID, seq=1, ts_ms=TS, conv=DM, **{"from": "alice"},
                             device="phone", body="hi bob")))
    yield (V("message_system", "A system MESSAGE: alice added carol to the group. No device, "
             "no body.", "MESSAGE", 0)
           .message("", dict(msg_id=MSG_ID + 1, seq=4, ts_ms=TS + 1, system=1, conv=GROUP,
                             **{"from": "alice"}, subject="carol")))
    yield (V("message_created", "The system MESSAGE that opens a group created without a "
             "name: the only system\nmessage whose subject may be empty.", "MESSAGE", 0)
           .message("", dict(msg_id=MSG_ID - 5, seq=1, ts_ms=TS - 5, system=4, conv=GROUP,
                             **{"from": "alice"})))


def receipts():
    yield (V("receipt", "RECEIPT from a client: read up to and including sequence 1.",
             "RECEIPT", 4)
           .u64("seq", 1).u8("kind", 2, "read").str8("conv", DM).str8("to", "")
           .str8("user", ""))
    yield (V("receipt_to", "RECEIPT from a client naming the direct conversation by the other "
             "user.", "RECEIPT", 0)
           .u64("seq", 2).u8("kind", 1, "delivered").str8("conv", "").str8("to", "alice")
           .str8("user", ""))
    yield (V("receipt_event", "RECEIPT as the server forwards it: the conversation, and the "
             "reader named.", "RECEIPT", 0)
           .u64("seq", 1).u8("kind", 2, "read").str8("conv", DM).str8("to", "")
           .str8("user", "bob"))
    yield (V("typing", "TYPING from a client in a group.", "TYPING", 0)
           .str8("conv", GROUP).str8("to", "").str8("user", ""))
    yield (V("typing_to", "TYPING from a client to a user (their direct conversation).",
             "TYPING", 0)
           .str8("conv", "").str8("to", "bob").str8("user", ""))
    yield (V("typing_event", "TYPING as the server forwards it: the conversation and who is "
             "typing.", "TYPING", 0)
           .str8("conv", DM).str8("to", "").str8("user", "alice"))
    yield (V("presence_sub", "PRESENCE_SUB to two users.", "PRESENCE_SUB", 5)
           .users("users", ["bob", "carol"]))
    yield (V("presence_unsub", "PRESENCE_UNSUB from one user.", "PRESENCE_UNSUB", 6)
           .users("users", ["carol"]))
    yield (V("presence", "PRESENCE event: bob is online; last seen at the given time.",
             "PRESENCE", 0)
           .u64("last_seen_ms", 1795318100000).u8("status", 1, "online").str8("user", "bob"))


def history():
    yield (V("sync", "SYNC one conversation after sequence 41, 100 messages per page.", "SYNC", 7)
           .u16("limit", 100).str8("cursor", "").resumes("convs", [(41, DM)]))
    yield (V("sync_cursor", "SYNC by cursor: everything since the cursor of an earlier "
             "SYNC_DONE, default page\nsize.", "SYNC", 8)
           .u16("limit", 0).str8("cursor", "1795318161000").resumes("convs", []))
    v = (V("sync_page", "SYNC_PAGE answering request 7: two messages of dm:alice:bob, more "
           "to come (SYNC\nagain from 43).", "SYNC_PAGE", 7)
         .u64("last_seq", 43).boolean("more", True).boolean("truncated", False)
         .str8("conv", DM).count("messages", 2))
    v.message("messages[0].", dict(msg_id=MSG_ID + 2, seq=42, ts_ms=TS + 2, conv=DM,
                                   **{"from": "bob"}, device="laptop", body="yes"))
    v.message("messages[1].", dict(msg_id=MSG_ID + 3, seq=43, ts_ms=TS + 3, conv=DM,
                                   **{"from": "alice"}, device="phone", body="ok"))
    yield v
    v = (V("sync_page_truncated", "SYNC_PAGE of a group whose messages after the requested "
           "sequence are gone:\nthe page starts at the oldest one kept, and it is the last "
           "page.", "SYNC_PAGE", 8)
         .u64("last_seq", 90).boolean("more", False).boolean("truncated", True)
         .str8("conv", GROUP).count("messages", 1))
    v.message("messages[0].", dict(msg_id=MSG_ID + 4, seq=90, ts_ms=TS + 4, conv=GROUP,
                                   **{"from": "carol"}, device="tab", body="hi all"))
    yield v
    yield (V("sync_page_empty", "SYNC_PAGE with nothing new: last_seq is the conversation's "
             "last sequence number.", "SYNC_PAGE", 7)
           .u64("last_seq", 41).boolean("more", False).boolean("truncated", False)
           .str8("conv", DM).count("messages", 0))
    yield (V("sync_done", "SYNC_DONE ends the SYNC by cursor (request id 8) after its pages; "
             "the cursor is\nfor the next one.", "SYNC_DONE", 8)
           .str8("cursor", "1795318170000"))


def conversations():
    yield (V("conv_create", 'CONV_CREATE a group named "trip" with bob and carol.',
             "CONV_CREATE", 10)
           .str8("name", "trip").users("members", ["bob", "carol"]))
    for name, t, rid, comment in (
            ("conv_add", "CONV_ADD", 11, "CONV_ADD dave to the group."),
            ("conv_remove", "CONV_REMOVE", 12, "CONV_REMOVE dave from the group."),
            ("conv_promote", "CONV_PROMOTE", 16, "CONV_PROMOTE dave to admin (the owner "
             "asks)."),
            ("conv_demote", "CONV_DEMOTE", 17, "CONV_DEMOTE dave back to member.")):
        yield V(name, comment, t, rid).str8("conv", GROUP).users("users", ["dave"])
    yield V("conv_leave", "CONV_LEAVE the group.", "CONV_LEAVE", 13).str8("conv", GROUP)
    yield (V("conv_get", "CONV_GET: the group as the asking user sees it.", "CONV_GET", 18)
           .str8("conv", GROUP))
    yield (V("conv_rename", "CONV_RENAME the group.", "CONV_RENAME", 14)
           .str8("conv", GROUP).str8("name", "trip 2026"))
    yield V("conv_list", "CONV_LIST: no body.", "CONV_LIST", 15)
    yield (V("conv", "CONV answering the CONV_CREATE (request id 10): the creation is "
             "sequence 1, which\nalice has read.", "CONV", 10)
           .u64("last_seq", 1).u64("read_seq", 1).str8("conv", GROUP).str8("name", "trip")
           .str8("owner", "alice").users("admins", ["alice"])
           .users("members", ["alice", "bob", "carol"]))
    v = (V("convs", "CONVS answering CONV_LIST (request id 15): the group, and a direct "
           "conversation\n(no name, no owner) with one message alice has not read.", "CONVS", 15)
         .count("convs", 2))
    for i, (last, read, n, conv, cname, owner) in enumerate(
            ((4, 4, 3, GROUP, "trip", "alice"), (1, 0, 2, DM, "", ""))):
        p = "convs[%d]." % i
        (v.u64(p + "last_seq", last).u64(p + "read_seq", read).u32(p + "member_count", n)
         .str8(p + "conv", conv).str8(p + "name", cname).str8(p + "owner", owner))
    yield v
    yield V("devices", "DEVICES: the user's devices online; no body.", "DEVICES", 19)
    v = (V("device_list", "DEVICE_LIST answering DEVICES (request id 19): alice's phone and "
           "laptop; the\nlaptop is behind in one conversation with 2 MiB queued.",
           "DEVICE_LIST", 19)
         .str8("user", "alice").count("devices", 2))
    for i, (session, age, queued, behind, dev) in enumerate(
            ((0x010000000000002A, 42, 0, 0, "phone"),
             (0x010000000000002B, 3600, 2097152, 1, "laptop"))):
        p = "devices[%d]." % i
        (v.u64(p + "session", session).u64(p + "connected_s", age)
         .u64(p + "queued_bytes", queued).u32(p + "behind", behind).str8(p + "device", dev)
         .str8(p + "node", ""))
    yield v
    v = (V("device_list_cluster", "DEVICE_LIST in cluster mode: alice's phone on this node "
           "(a~1f), her\nlaptop on node b~2e (known only by its id there).", "DEVICE_LIST", 20)
         .str8("user", "alice").count("devices", 2))
    for i, (session, age, dev, node) in enumerate(
            ((0x010000000000002A, 42, "phone", "a~1f"), (0, 0, "laptop", "b~2e"))):
        p = "devices[%d]." % i
        (v.u64(p + "session", session).u64(p + "connected_s", age).u64(p + "queued_bytes", 0)
         .u32(p + "behind", 0).str8(p + "device", dev).str8(p + "node", node))
    yield v


def control():
    yield (V("error", "ERROR answering request 3: rate_limited, retry in 1.5 s.", "ERROR", 3)
           .u16("code", 6, "rate_limited").u32("retry_after_ms", 1500)
           .str8("message", "too many sends").str8("conv", ""))
    yield (V("error_conv", "ERROR about one conversation of a SYNC (request id 7): not a "
             "member of it. The\nother conversations of the request are answered as usual.",
             "ERROR", 7)
           .u16("code", 3, "forbidden").u32("retry_after_ms", 0)
           .str8("message", "not a member").str8("conv", "dm:bob:carol"))
    yield (V("behind", "BEHIND: deliveries for this conversation stopped after sequence 120.",
             "BEHIND", 0)
           .u64("seq", 120).str8("conv", GROUP))
    yield (V("goaway", "GOAWAY: the server is shutting down; reconnect after 5 s.", "GOAWAY", 0)
           .u32("reconnect_after_ms", 5000).str8("reason", "server shutting down"))
    yield (V("ping", "PING (either side) with 8 bytes of data, here the sender's clock; the "
             "answer is\nPONG with the same request id and data.", "PING", 99)
           .str16("data", PING_DATA))
    yield (V("pong", "PONG answering the PING above.", "PONG", 99).str16("data", PING_DATA))
    yield V("ping_empty", "PING without data: the smallest PING.", "PING", 100).str16("data", "")


def bad(name, comment, type_name, request_id):
    v = Vector(name, comment)
    v.header(TYPES[type_name], request_id)
    return v


def refused():
    v = Vector("err_length_short", "A length prefix below 8 cannot hold a header: -EPROTO as "
               "soon as the\nprefix is read (the server closes). As a WebSocket message it is "
               "too short: -EBADMSG.")
    v.row([0, 0, 0, 7], "length 7: less than the 8 bytes of a header")
    v.row([1, 0x0E, 0, 0, 0, 0, 0], "what follows (never read)")
    v.length = 7
    yield v.refused("EPROTO", "EBADMSG", read_header=False)
    v = Vector("err_too_large", "A frame of 65,537 bytes against max_frame 65,536 (all vectors "
               "use it): -EMSGSIZE\nas soon as the prefix is read, before the body arrives (the "
               "server answers too_large and\ncloses). As one WebSocket message (12 bytes) it "
               "disagrees with its prefix: -EBADMSG.")
    v.row([0, 0, 0xFF, 0xFD], "length 65533")
    v.row([1], "version 1").row([2], "type SEND").row([0, 0], "flags 0x0000")
    v.row([0, 0, 0, 1], "request id 1")
    v.length = 65533
    yield v.refused("EMSGSIZE", "EBADMSG", read_header=False)
    v = Vector("err_version", "Version 2: -EPROTONOSUPPORT (the server answers unsupported and "
               "closes).")
    v.header(TYPES["PING"], 1, version=2)
    v.str16("data", "")
    yield v.refused("EPROTONOSUPPORT", "EPROTONOSUPPORT")
    v = Vector("err_flags", "A flag bit set: version 1 defines none, -EBADMSG (bad_request; "
               "the frame is\nskipped, the connection stays).")
    v.header(TYPES["PING"], 2, flags=1)
    v.str16("data", "")
    yield v.refused("EBADMSG", "EBADMSG")
    v = Vector("err_unknown_type", "An unknown type: -EOPNOTSUPP (unsupported; skipped, the "
               "connection\nstays).")
    v.header(0x40, 3, type_note="type 0x40 (not defined)")
    v.row([0, 0], "a body the receiver cannot read")
    yield v.refused("EOPNOTSUPP", "EOPNOTSUPP")
    v = bad("err_trailing", "Bytes after the body: -EBADMSG (every body has one exact length).",
            "CONV_LIST", 4)
    v.row([0], "a byte after the (empty) body")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_string_overrun", "A string length that runs past the end of the frame: "
            "-EBADMSG.", "SEND", 5)
    v.row([9, 0x63, 0x31], "client_id: str8 claims 9 bytes, 2 follow")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_body_overrun", "A body length that runs past the end of the frame: -EBADMSG.",
            "SEND", 6)
    v.str8("client_id", "c1").str8("conv", "").str8("to", "bob")
    v.row([0, 0, 1, 0, 0x68, 0x69], "body: bytes32 claims 256 bytes, 2 follow")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_count_overrun", "A count that promises more items than the frame holds: "
            "-EBADMSG.", "PRESENCE_SUB", 7)
    v.row([0, 3], "users: u16 count 3").str8("users[0]", "bob")
    v.row(b"\x05carol", 'users[1]: str8 "carol", and no third')
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_list_too_long", "More than 1,000 users in a request: -EBADMSG at the count, "
            "before any item.", "PRESENCE_SUB", 8)
    v.row([3, 0xE9], "users: u16 count 1001")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_list_empty", "PRESENCE_SUB needs at least one user: -EBADMSG.",
            "PRESENCE_SUB", 9)
    v.row([0, 0], "users: u16 count 0")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_send_two_targets", "A SEND naming both a conversation and a user: -EBADMSG.",
            "SEND", 10)
    v.str8("client_id", "c1").str8("conv", DM).str8("to", "bob").body("body", "x")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_send_no_target", "A SEND naming neither: -EBADMSG.", "SEND", 11)
    v.str8("client_id", "c1").str8("conv", "").str8("to", "").body("body", "x")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_client_id_long", "A client id over 64 bytes: -EBADMSG.", "SEND", 12)
    v.row([65], "client_id: str8, 65 bytes (the limit is 64):")
    for i in range(0, 65, 16):
        v.row(b"c" * min(16, 65 - i))
    v.str8("conv", "").str8("to", "bob").body("body", "")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_client_id_empty", "An empty client id: -EBADMSG.", "SEND", 13)
    v.row([0], 'client_id: str8 "" (needs 1 to 64 bytes)')
    v.str8("conv", "").str8("to", "b").body("body", "")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_bool", "A boolean other than 0 or 1: -EBADMSG (one encoding per value).",
            "ACK", 14)
    v.u64("msg_id", 1).u64("seq", 1).u64("ts_ms", 1).row([2], "duplicate: 2 (must be 0 or 1)")
    v.str8("client_id", "c1").str8("conv", DM)
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_enum", "An enumeration value outside its table: -EBADMSG.", "RECEIPT", 15)
    v.u64("seq", 1).row([3], "kind: u8 3 (only 1 delivered, 2 read)")
    v.str8("conv", DM).str8("to", "").str8("user", "")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_error_code_zero", "ERROR code 0: -EBADMSG.", "ERROR", 16)
    v.row([0, 0], "code: u16 0 (codes start at 1)").u32("retry_after_ms", 0)
    v.str8("message", "").str8("conv", "")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_system_subject", "A system message other than created without a subject: "
            "-EBADMSG.", "MESSAGE", 0)
    v.u64("msg_id", 1).u64("seq", 4).u64("ts_ms", 1).u8("system", 1, "member_added")
    v.str8("conv", GROUP).str8("from", "alice").str8("device", "")
    v.row([0], 'subject: str8 "" (member_added needs one)').body("body", "")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_system_kind", "A system kind past created (4): -EBADMSG.", "MESSAGE", 0)
    v.u64("msg_id", 1).u64("seq", 5).u64("ts_ms", 1)
    v.row([5], "system: u8 5 (only 0 to 4)")
    v.str8("conv", GROUP).str8("from", "alice").str8("device", "").str8("subject", "x")
    v.body("body", "")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_system_body", "A system message with a body: -EBADMSG (system messages carry "
            "none).", "MESSAGE", 0)
    v.u64("msg_id", 1).u64("seq", 6).u64("ts_ms", 1).u8("system", 3, "renamed")
    v.str8("conv", GROUP).str8("from", "alice").str8("device", "").str8("subject", "trip")
    v.row(b"\x00\x00\x00\x01x", 'body: bytes32 "x" (must be empty)')
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_sync_both", "SYNC with both a cursor and conversations: -EBADMSG.", "SYNC", 17)
    v.u16("limit", 0).str8("cursor", "1795318161000").resumes("convs", [(41, DM)])
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_receipt_two_targets", "A RECEIPT naming both a conversation and a user: "
            "-EBADMSG.", "RECEIPT", 18)
    v.u64("seq", 1).u8("kind", 2, "read").str8("conv", DM).str8("to", "bob").str8("user", "")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_receipt_no_target", "A RECEIPT naming neither (only a reader): -EBADMSG.",
            "RECEIPT", 19)
    v.u64("seq", 1).u8("kind", 1, "delivered").str8("conv", "").str8("to", "")
    v.str8("user", "bob")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_typing_no_target", "A TYPING naming neither a conversation nor a user: "
            "-EBADMSG.", "TYPING", 20)
    v.str8("conv", "").str8("to", "").str8("user", "")
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_device_empty", "A DEVICE_LIST item without a device id: -EBADMSG.",
            "DEVICE_LIST", 21)
    v.str8("user", "alice").count("devices", 1)
    v.u64("devices[0].session", 1).u64("devices[0].connected_s", 0)
    v.u64("devices[0].queued_bytes", 0).u32("devices[0].behind", 0)
    v.row([0], 'devices[0].device: str8 "" (needs 1 to 32 bytes)')
    yield v.refused("EBADMSG", "EBADMSG")
    v = bad("err_truncated", "The first 20 bytes of send_to_user: a stream decoder waits "
            "(-EAGAIN) and asks\nfor the whole frame, 30 bytes; as a WebSocket message it is "
            "malformed (-EBADMSG).", "SEND", 2)
    v.str8("client_id", "c1").str8("conv", "")
    v.row(b"\x03bob", 'to: str8 "bob"; the stream stops here')
    v.length = 26
    yield v.refused("EAGAIN", "EBADMSG", read_header=False)


# The groups of "Worked examples", each a "### heading" followed by one code block.
GROUPS = [
    ("Handshake", handshake),
    ("Sending and delivering", sending),
    ("Receipts, typing and presence", receipts),
    ("History", history),
    ("Conversations and devices", conversations),
    ("Errors and connection control", control),
    ("Refused frames", refused),
]

HEADER = """\
# Test vectors of the binary protocol (docs/protocol-binary.md, whose worked examples are these).
# Written by tests/vectors/mkbinary.py: change that, not this file.
#
# A vector is a line "== name", comment lines, the frame in hex ("bytes | what they are"), a line
# "--", then what decoding it gives, as tests/unit/test_binproto.c prints it; a blank line ends
# it. A valid frame prints "result: ok" and its fields (strings with \\xNN for bytes outside
# printable ASCII), and re-encodes to the same bytes. A refused one prints what the stream
# decoder (sb_binproto_decode) and the frame decoder (sb_binproto_decode_frame) return, and the
# header the stream decoder read (zero where it did not get that far). Every vector is decoded
# with max_frame = 65536.
"""


def build():
    groups = []
    for title, make in GROUPS:
        groups.append((title, [v.frame() for v in make()]))
    return groups


def vectors_text(groups):
    return HEADER + "".join("\n" + text for _, vs in groups for _, text in vs)


def doc_text(doc, groups):
    """The doc with each group's code block (after its heading in Worked examples) rewritten."""
    start = doc.index("\n## Worked examples\n")
    head, rest = doc[:start], doc[start:]
    for title, vs in groups:
        at = rest.index("\n### %s\n" % title)
        open_ = rest.index("\n```\n", at) + 5
        close = rest.index("\n```\n", open_) + 1
        block = "\n".join(text for _, text in vs)
        rest = rest[:open_] + block + rest[close:]
    return head + rest


def main():
    check = sys.argv[1:] == ["--check"]
    groups = build()
    names = [v.split("\n", 1)[0][3:] for _, vs in groups for _, v in vs]
    assert len(names) == len(set(names)), "vector names repeat"
    with open(DOC) as f:
        doc = f.read()
    outputs = {VECTORS: vectors_text(groups), DOC: doc_text(doc, groups)}
    seeds = {os.path.join(CORPUS, n): frame
             for n, (frame, _) in zip(names, (x for _, vs in groups for x in vs))}
    stale = [p for p in (os.path.join(CORPUS, n) for n in os.listdir(CORPUS)) if p not in seeds]
    differ = []
    for path, text in outputs.items():
        old = open(path).read() if os.path.exists(path) else None
        if old != text:
            differ.append(path)
            if not check:
                with open(path, "w") as f:
                    f.write(text)
    for path, frame in seeds.items():
        old = open(path, "rb").read() if os.path.exists(path) else None
        if old != frame:
            differ.append(path)
            if not check:
                with open(path, "wb") as f:
                    f.write(frame)
    for path in stale:
        differ.append(path)
        if not check:
            os.remove(path)
    for path in differ:
        print(("differs: " if check else "wrote: ") + os.path.relpath(path, ROOT))
    sys.exit(1 if check and differ else 0)


if __name__ == "__main__":
    main()
