"""A binary-protocol client for the integration tests (docs/protocol-binary.md), written from the
spec and independent of proto/binproto.c, so each checks the other.

- encode(name, rid=0, **fields) -> bytes of one frame; decode(buf) -> (name, rid, fields, size)
  or None when buf does not hold a whole frame yet.
- TcpClient: the binary port (HELLO first); WsClient: /ws with subprotocol switchboard.v1. Both
  have send(name, rid, **fields), recv(timeout) -> (name, rid, fields), recv_type(name) and
  hello(token, device="", resume=()).
"""

import asyncio
import socket
import ssl
import struct
import time

# Field layouts, in order: (name, encoding). Encodings: u8 u16 u32 u64 bool str8 str16 body
# (u32 length + bytes) and list:<item>.
ITEMS = {
    "user": None,  # a bare str8
    "resume": [("last_seq", "u64"), ("conv", "str8")],
    "message": [("msg_id", "u64"), ("seq", "u64"), ("ts_ms", "u64"), ("system", "u8"),
                ("conv", "str8"), ("from", "str8"), ("device", "str8"), ("subject", "str8"),
                ("body", "body")],
    "conv_summary": [("last_seq", "u64"), ("read_seq", "u64"), ("member_count", "u32"),
                     ("conv", "str8"), ("name", "str8"), ("owner", "str8")],
    "device": [("session", "u64"), ("connected_s", "u64"), ("queued_bytes", "u64"),
               ("behind", "u32"), ("device", "str8"), ("node", "str8")],
}

TYPES = {
    "hello": (0x01, [("token", "str16"), ("device", "str8"), ("resume", "list:resume")]),
    "send": (0x02, [("client_id", "str8"), ("conv", "str8"), ("to", "str8"), ("body", "body")]),
    "receipt": (0x03, [("seq", "u64"), ("kind", "u8"), ("conv", "str8"), ("to", "str8"),
                       ("user", "str8")]),
    "typing": (0x04, [("conv", "str8"), ("to", "str8"), ("user", "str8")]),
    "presence_sub": (0x05, [("users", "list:user")]),
    "presence_unsub": (0x06, [("users", "list:user")]),
    "sync": (0x07, [("limit", "u16"), ("cursor", "str8"), ("convs", "list:resume")]),
    "conv_create": (0x08, [("name", "str8"), ("members", "list:user")]),
    "conv_add": (0x09, [("conv", "str8"), ("users", "list:user")]),
    "conv_remove": (0x0A, [("conv", "str8"), ("users", "list:user")]),
    "conv_leave": (0x0B, [("conv", "str8")]),
    "conv_rename": (0x0C, [("conv", "str8"), ("name", "str8")]),
    "conv_list": (0x0D, []),
    "ping": (0x0E, [("data", "str16")]),
    "pong": (0x0F, [("data", "str16")]),
    "conv_promote": (0x10, [("conv", "str8"), ("users", "list:user")]),
    "conv_demote": (0x11, [("conv", "str8"), ("users", "list:user")]),
    "conv_get": (0x12, [("conv", "str8")]),
    "devices": (0x13, []),
    "welcome": (0x81, [("session", "u64"), ("server_time_ms", "u64"), ("max_frame", "u32"),
                       ("max_body", "u32"), ("ping_interval_ms", "u32"),
                       ("messages_per_s", "u32"), ("bytes_per_s", "u32"),
                       ("max_group_members", "u32"), ("user", "str8"), ("device", "str8")]),
    "ack": (0x82, [("msg_id", "u64"), ("seq", "u64"), ("ts_ms", "u64"), ("duplicate", "bool"),
                   ("client_id", "str8"), ("conv", "str8")]),
    "message": (0x83, ITEMS["message"]),
    "presence": (0x84, [("last_seen_ms", "u64"), ("status", "u8"), ("user", "str8")]),
    "sync_page": (0x85, [("last_seq", "u64"), ("more", "bool"), ("truncated", "bool"),
                         ("conv", "str8"), ("messages", "list:message")]),
    "conv": (0x86, [("last_seq", "u64"), ("read_seq", "u64"), ("conv", "str8"), ("name", "str8"),
                    ("owner", "str8"), ("admins", "list:user"), ("members", "list:user")]),
    "convs": (0x87, [("convs", "list:conv_summary")]),
    "error": (0x88, [("code", "u16"), ("retry_after_ms", "u32"), ("message", "str8"),
                     ("conv", "str8")]),
    "behind": (0x89, [("seq", "u64"), ("conv", "str8")]),
    "goaway": (0x8A, [("reconnect_after_ms", "u32"), ("reason", "str8")]),
    "sync_done": (0x8B, [("cursor", "str8")]),
    "device_list": (0x8C, [("user", "str8"), ("devices", "list:device")]),
}
NAMES = {code: name for name, (code, _) in TYPES.items()}
ERRORS = {1: "bad_request", 2: "unauthorized", 3: "forbidden", 4: "not_found", 5: "too_large",
          6: "rate_limited", 7: "conflict", 8: "unavailable", 9: "internal", 10: "unsupported"}
INTS = {"u8": ">B", "u16": ">H", "u32": ">I", "u64": ">Q", "bool": ">?"}


def _as_bytes(v):
    return v.encode() if isinstance(v, str) else bytes(v)


def _put(enc, v):
    if enc in INTS:
        return struct.pack(INTS[enc], v or 0)
    if enc == "str8":
        b = _as_bytes(v or b"")
        return struct.pack(">B", len(b)) + b
    if enc == "str16":
        b = _as_bytes(v or b"")
        return struct.pack(">H", len(b)) + b
    if enc == "body":
        b = _as_bytes(v or b"")
        return struct.pack(">I", len(b)) + b
    item = enc.split(":")[1]
    out = struct.pack(">H", len(v or ()))
    for x in v or ():
        out += _put("str8", x) if ITEMS[item] is None else _fields(ITEMS[item], x)
    return out


def _fields(layout, values):
    return b"".join(_put(enc, values.get(name)) for name, enc in layout)


def encode(name, rid=0, /, **fields):
    code, layout = TYPES[name]
    body = _fields(layout, fields)
    return struct.pack(">IBBHI", 8 + len(body), 1, code, 0, rid) + body


def _get(enc, buf, off):
    if enc in INTS:
        n = struct.calcsize(INTS[enc])
        return struct.unpack_from(INTS[enc], buf, off)[0], off + n
    if enc in ("str8", "str16", "body"):
        fmt = {"str8": ">B", "str16": ">H", "body": ">I"}[enc]
        n = struct.unpack_from(fmt, buf, off)[0]
        off += struct.calcsize(fmt)
        return bytes(buf[off:off + n]), off + n
    item = enc.split(":")[1]
    count = struct.unpack_from(">H", buf, off)[0]
    off += 2
    items = []
    for _ in range(count):
        if ITEMS[item] is None:
            v, off = _get("str8", buf, off)
        else:
            v, off = _get_fields(ITEMS[item], buf, off)
        items.append(v)
    return items, off


def _get_fields(layout, buf, off):
    out = {}
    for name, enc in layout:
        out[name], off = _get(enc, buf, off)
    return out, off


def decode(buf):
    """(name, rid, fields, size) of the frame at the start of buf, or None when incomplete."""
    if len(buf) < 4:
        return None
    size = 4 + struct.unpack_from(">I", buf, 0)[0]
    if len(buf) < size:
        return None
    _, version, code, flags, rid = struct.unpack_from(">IBBHI", buf, 0)
    assert version == 1 and flags == 0, (version, flags)
    name = NAMES[code]
    fields, off = _get_fields(TYPES[name][1], buf[:size], 12)
    assert off == size, f"{name}: {size - off} bytes after the body"
    return name, rid, fields, size


class _Client:
    def __init__(self):
        self.pending = []

    def hello(self, token=b"", device="", resume=(), rid=1):
        self.send("hello", rid, token=token, device=device,
                  resume=[{"conv": c, "last_seq": s} for c, s in resume])
        return self.recv_type("welcome")

    def recv_type(self, name, timeout=10.0):
        """The next frame of this type; frames of other types are kept for later."""
        for i, f in enumerate(self.pending):
            if f[0] == name:
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} within {timeout} s; got {self.pending}")
            f = self._recv(left)
            if f[0] == name:
                return f
            self.pending.append(f)

    def recv(self, timeout=10.0):
        if self.pending:
            return self.pending.pop(0)
        return self._recv(timeout)

    def no_frame(self, timeout=0.5):
        """True when nothing (kept or new) arrives within timeout."""
        if self.pending:
            return False
        try:
            self.pending.append(self._recv(timeout))
            return False
        except (TimeoutError, socket.timeout):
            return True


class TcpClient(_Client):
    """The binary port (over TLS with ssl_ctx). recv raises ConnectionError when the server
    closed the connection."""

    def __init__(self, port, host="127.0.0.1", ssl_ctx=None, server_hostname="localhost"):
        super().__init__()
        self.sock = socket.create_connection((host, port), timeout=10)
        if ssl_ctx:
            try:
                self.sock = ssl_ctx.wrap_socket(self.sock, server_hostname=server_hostname)
            except BaseException:
                self.sock.close()
                raise
        self.buf = b""

    def send(self, name, rid=0, /, **fields):
        self.sock.sendall(encode(name, rid, **fields))

    def send_raw(self, data):
        self.sock.sendall(data)

    def _recv(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            got = decode(self.buf)
            if got:
                name, rid, fields, size = got
                self.buf = self.buf[size:]
                return name, rid, fields
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError) as e:
                raise TimeoutError("no frame") from e
            except (ConnectionResetError, ssl.SSLError) as e:
                raise ConnectionError("reset by the server") from e
            if not data:
                raise ConnectionError("closed by the server")
            self.buf += data

    def is_closed(self, timeout=5.0):
        """True once the server closes the connection (frames before it are kept)."""
        try:
            while True:
                self.pending.append(self._recv(timeout))
        except ConnectionError:
            return True
        except TimeoutError:
            return False

    def close(self):
        self.sock.close()


class WsClient(_Client):
    """/ws with subprotocol switchboard.v1, over sbtest.RawWS (which can also send bad frames)."""

    def __init__(self, port, token, device=None):
        super().__init__()
        from sbtest import RawWS
        path = f"/ws?token={token}" + (f"&device={device}" if device else "")
        self.ws = RawWS(port, path, handshake=False)
        resp = self.ws.handshake(b"Sec-WebSocket-Protocol: switchboard.v1\r\n")
        proto = resp.headers.get("sec-websocket-protocol")
        assert proto == "switchboard.v1", proto

    def send(self, name, rid=0, /, **fields):
        self.send_raw(encode(name, rid, **fields))

    def send_raw(self, data, opcode=0x2):
        self.ws.send_frame(opcode, data)

    def _recv(self, timeout):
        opcode, msg = self.ws.read_message(timeout)
        assert opcode == 0x2, f"a text message on switchboard.v1: {msg!r}"
        got = decode(msg)
        assert got and got[3] == len(msg), "a message is not exactly one frame"
        return got[:3]

    def close(self):
        self.ws.close()
