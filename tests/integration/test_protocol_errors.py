"""RFC 6455 violations sent with a raw client: each must get the exact close code, then TCP close.
Also the valid-but-unusual frame sequences a real client library never produces."""

import os
import time
import unittest

from sbtest import (BINARY, CLOSE, CONT, PING, PONG, TEXT, RawWS, ServerTestCase, close_payload,
                    encode_frame, new_key)

PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1002, 1007, 1009
DEFAULT_MAX = 4194304
F = encode_frame


class ViolationMixin:
    def violation(self, data, code, reply=True):
        """Sends data after the upgrade and expects close `code` then TCP close. By default the
        client answers the close like a polite peer; reply=False checks the server closes anyway."""
        with RawWS(self.port) as ws:
            ws.send(data)
            return ws.expect_close(self, code, timeout=10, eof_timeout=5, reply=reply)

    def violations(self, cases, code):
        for name, data in cases:
            with self.subTest(case=name):
                self.violation(data, code)


class ProtocolErrorTest(ViolationMixin, ServerTestCase):
    # A short close timeout keeps a server that waits for the client's close reply quick.
    server_settings = {"close_timeout_ms": 1000}

    def test_unmasked_frame(self):
        self.violations([
            ("text", F(TEXT, b"hello", mask=False)),
            ("binary", F(BINARY, b"\x00\x01", mask=False)),
            ("empty text", F(TEXT, b"", mask=False)),
            ("ping", F(PING, b"p", mask=False)),
            ("close", F(CLOSE, close_payload(1000), mask=False)),
        ], PROTOCOL_ERROR)

    def test_rsv_bits(self):
        cases = []
        for rsv in (4, 2, 1, 7):
            cases.append((f"text rsv={rsv}", F(TEXT, b"hi", rsv=rsv)))
            cases.append((f"binary rsv={rsv}", F(BINARY, b"hi", rsv=rsv)))
            cases.append((f"ping rsv={rsv}", F(PING, b"hi", rsv=rsv)))
        cases.append(("continuation rsv", F(TEXT, b"a", fin=False) + F(CONT, b"b", rsv=4)))
        self.violations(cases, PROTOCOL_ERROR)

    def test_reserved_opcodes(self):
        reserved = (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)
        cases = [(f"opcode {op:#x}", F(op, b"x")) for op in reserved]
        cases += [(f"opcode {op:#x} empty", F(op, b"")) for op in (3, 0xB)]
        self.violations(cases, PROTOCOL_ERROR)

    def test_control_frame_too_long(self):
        self.violations([
            ("ping 126", F(PING, b"p" * 126)),
            ("pong 126", F(PONG, b"p" * 126)),
            ("close 126", F(CLOSE, close_payload(1000, b"r" * 124))),
            ("ping 200", F(PING, b"p" * 200)),
            ("ping 70000", F(PING, b"p" * 70000)),
        ], PROTOCOL_ERROR)

    def test_fragmented_control_frame(self):
        self.violations([
            ("ping", F(PING, b"a", fin=False) + F(CONT, b"b")),
            ("pong", F(PONG, b"a", fin=False)),
            ("close", F(CLOSE, close_payload(1000), fin=False)),
            ("ping inside message", F(TEXT, b"a", fin=False) + F(PING, b"x", fin=False)),
        ], PROTOCOL_ERROR)

    def test_continuation_without_message(self):
        self.violations([
            ("final", F(CONT, b"x")),
            ("non-final", F(CONT, b"x", fin=False)),
            ("empty", F(CONT, b"")),
        ], PROTOCOL_ERROR)

    def test_continuation_after_complete_message(self):
        with RawWS(self.port) as ws:
            ws.send(F(TEXT, b"a", fin=False) + F(CONT, b"b") + F(CONT, b"c"))
            self.assertEqual(ws.read_message(), (TEXT, b"ab"))
            ws.expect_close(self, PROTOCOL_ERROR, timeout=10, eof_timeout=5, reply=True)

    def test_data_frame_inside_fragmented_message(self):
        self.violations([
            ("text then text", F(TEXT, b"ab", fin=False) + F(TEXT, b"cd")),
            ("text then binary", F(TEXT, b"ab", fin=False) + F(BINARY, b"cd")),
            ("binary then text non-final", F(BINARY, b"ab", fin=False) + F(TEXT, b"cd", fin=False)),
            ("after a continuation", F(BINARY, b"a", fin=False) + F(CONT, b"b", fin=False) +
             F(BINARY, b"c")),
        ], PROTOCOL_ERROR)

    def test_close_payload_one_byte(self):
        self.violation(F(CLOSE, b"\x03"), PROTOCOL_ERROR)

    def test_invalid_close_codes(self):
        codes = (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)
        self.violations([(f"code {c}", F(CLOSE, close_payload(c))) for c in codes],
                        PROTOCOL_ERROR)

    def test_invalid_utf8_text(self):
        bad = [b"\xff", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xed\xa0\x80",
               b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"abc\x80", b"\xe2\x82",
               b"caf\xc3", "κόσμε".encode() + b"\xed\xbf\xbf"]
        self.violations([(repr(b), F(TEXT, b)) for b in bad], INVALID_DATA)

    def test_invalid_utf8_across_fragments(self):
        self.violations([
            ("bad continuation byte", F(TEXT, b"\xe2\x82", fin=False) + F(CONT, b"\x28")),
            ("bad second fragment", F(TEXT, b"ok", fin=False) + F(CONT, b"\xff")),
            ("truncated at the end", F(TEXT, b"\xe2", fin=False) + F(CONT, b"\x82")),
            ("truncated, empty last", F(TEXT, b"\xe2\x82", fin=False) + F(CONT, b"")),
            ("surrogate split", F(TEXT, b"\xed", fin=False) + F(CONT, b"\xa0\x80")),
            ("bad in middle", F(TEXT, b"a", fin=False) + F(CONT, b"\xc0", fin=False) +
             F(CONT, b"\xaf")),
        ], INVALID_DATA)

    def test_invalid_utf8_in_close_reason(self):
        self.violations([
            ("0xff", F(CLOSE, close_payload(1000, b"\xff"))),
            ("truncated", F(CLOSE, close_payload(1000, b"bye \xe2\x82"))),
        ], INVALID_DATA)

    def test_binary_is_not_utf8_checked(self):
        with RawWS(self.port) as ws:
            self.assertEqual(ws.echo(BINARY, b"\xff\xc0\xaf"), (BINARY, b"\xff\xc0\xaf"))

    def test_message_too_big_single_frame(self):
        with RawWS(self.port) as ws:
            sent = ws.send(F(BINARY, os.urandom(DEFAULT_MAX + 1)))  # may be cut off by the server
            ws.expect_close(self, TOO_BIG, timeout=10, eof_timeout=5, reply=sent)

    def test_message_too_big_fragments(self):
        with RawWS(self.port) as ws:
            half = DEFAULT_MAX // 2
            sent = ws.send(F(BINARY, os.urandom(half), fin=False) +
                           F(CONT, os.urandom(half), fin=False) + F(CONT, b"x"))
            ws.expect_close(self, TOO_BIG, timeout=10, eof_timeout=5, reply=sent)

    def test_length_with_top_bit_set(self):
        # RFC 6455 5.2: the most significant bit of a 64-bit length must be 0. Either a
        # protocol error or "too big" is a fair answer; serving it is not.
        for length in (1 << 63, (1 << 64) - 1):
            with self.subTest(length=length), RawWS(self.port) as ws:
                ws.send(F(BINARY, b"", length=length))
                f = ws.read_close(timeout=10)
                self.assertIn(f.close_code, (PROTOCOL_ERROR, TOO_BIG), f)
                self.assertTrue(ws.closed_within(5))

    def test_message_at_limit_is_echoed(self):
        data = os.urandom(DEFAULT_MAX)
        with RawWS(self.port) as ws:
            op, got = ws.echo(BINARY, data, timeout=20)
            self.assertEqual(op, BINARY)
            self.assertTrue(got == data, "4 MiB echo differs")

    def test_server_closes_tcp_without_close_reply(self):
        # The client never answers the server's close: TCP must still be closed, at the latest
        # after close_timeout_ms (1 s here).
        for name, data, code in (("rsv", F(TEXT, b"x", rsv=4), PROTOCOL_ERROR),
                                 ("utf-8", F(TEXT, b"\xff"), INVALID_DATA)):
            with self.subTest(case=name):
                start = time.monotonic()
                self.violation(data, code, reply=False)
                self.assertLess(time.monotonic() - start, 5)

    def test_frames_after_violation_ignored(self):
        # Garbage after the bad frame must not produce anything but the one close.
        self.violation(F(TEXT, b"x", rsv=2) + os.urandom(4096), PROTOCOL_ERROR)

    def test_server_still_healthy(self):
        self.violation(F(7, b""), PROTOCOL_ERROR)
        self.assertEqual(self.srv.health()[0], 200)


class ValidEdgeCasesTest(ServerTestCase):
    """Legal sequences that libraries rarely send."""

    server_settings = {}

    def test_ping_inside_fragmented_message(self):
        with RawWS(self.port) as ws:
            ws.send(F(TEXT, b"ab", fin=False) + F(PING, b"p1") + F(CONT, b"cd", fin=False) +
                    F(PONG, b"unsolicited") + F(CONT, b"ef"))
            f = ws.read_frame()
            self.assertEqual((f.opcode, f.payload, f.fin), (PONG, b"p1", True))
            self.assertEqual(ws.read_message(), (TEXT, b"abcdef"))

    def test_pong_payload_exact(self):
        with RawWS(self.port) as ws:
            for payload in (b"", b"\x00", os.urandom(125)):
                ws.send_frame(PING, payload)
                f = ws.read_frame()
                self.assertEqual((f.opcode, f.fin, f.rsv), (PONG, True, 0))
                self.assertEqual(f.payload, payload)

    def test_utf8_split_across_fragments(self):
        euro, emoji = "€".encode(), "😀".encode()
        with RawWS(self.port) as ws:
            ws.send(F(TEXT, euro[:1], fin=False) + F(CONT, euro[1:2], fin=False) +
                    F(CONT, euro[2:] + emoji[:3], fin=False) + F(CONT, emoji[3:]))
            self.assertEqual(ws.read_message(), (TEXT, euro + emoji))

    def test_empty_fragments(self):
        with RawWS(self.port) as ws:
            ws.send(F(BINARY, b"", fin=False) + F(CONT, b"", fin=False) + F(CONT, b""))
            self.assertEqual(ws.read_message(), (BINARY, b""))

    def test_close_echo_raw(self):
        for code, reason in ((1000, b""), (1000, "adiós".encode()), (4321, b"x" * 123)):
            with self.subTest(code=code, reason=reason), RawWS(self.port) as ws:
                ws.send_close(code, reason)
                ws.expect_close(self, code, eof_timeout=5)

    def test_empty_close(self):
        with RawWS(self.port) as ws:
            ws.send_close()
            f = ws.read_close()
            # An empty close may be answered empty (1005 here) or with 1000.
            self.assertIn(f.close_code, (1005, 1000), f)
            self.assertTrue(ws.closed_within(5))

    def test_handshake_and_frame_in_one_write(self):
        with RawWS(self.port, handshake=False) as ws:
            req = (f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {new_key()}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
            ws.send(req + F(TEXT, b"early") + F(BINARY, b"bird"))
            self.assertEqual(ws.read_head()[0], 101)
            self.assertEqual(ws.read_message(), (TEXT, b"early"))
            self.assertEqual(ws.read_message(), (BINARY, b"bird"))

    def test_many_frames_in_one_write(self):
        with RawWS(self.port) as ws:
            msgs = [os.urandom(i) for i in range(200)]
            ws.send(b"".join(F(BINARY, m) for m in msgs))
            for i, m in enumerate(msgs):
                self.assertEqual(ws.read_message(), (BINARY, m), f"message {i}")

    def test_frame_in_pieces(self):
        with RawWS(self.port) as ws:
            head = F(TEXT, b"byte by byte")
            for i in range(len(head)):
                ws.send(head[i:i + 1])
                time.sleep(0.002)
            self.assertEqual(ws.read_message(), (TEXT, b"byte by byte"))
            # A 70000-byte frame (64-bit length) in uneven writes.
            data = os.urandom(70000)
            frame = F(BINARY, data)
            for a, b in ((0, 1), (1, 3), (3, 9), (9, 14), (14, 1000), (1000, 50001),
                         (50001, len(frame))):
                ws.send(frame[a:b])
                time.sleep(0.01)
            op, got = ws.read_message(timeout=10)
            self.assertEqual(op, BINARY)
            self.assertTrue(got == data, "70000-byte echo differs")

    def test_zero_mask_key(self):
        with RawWS(self.port) as ws:
            ws.send_frame(TEXT, b"zero mask", mask_key=b"\x00\x00\x00\x00")
            self.assertEqual(ws.read_message(), (TEXT, b"zero mask"))

    def test_valid_close_codes(self):
        for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999):
            with self.subTest(code=code), RawWS(self.port) as ws:
                ws.send_close(code)
                ws.expect_close(self, code, eof_timeout=5)


class SmallMessageLimitTest(ViolationMixin, ServerTestCase):
    server_settings = {"max_message_size": 1000}

    def test_at_limit_echoed(self):
        with RawWS(self.port) as ws:
            self.assertEqual(ws.echo(BINARY, b"b" * 1000), (BINARY, b"b" * 1000))
            self.assertEqual(ws.echo(TEXT, b"t" * 1000), (TEXT, b"t" * 1000))
            ws.send(F(TEXT, b"a" * 500, fin=False) + F(CONT, b"b" * 500))
            self.assertEqual(ws.read_message(), (TEXT, b"a" * 500 + b"b" * 500))

    def test_over_limit_single_frame(self):
        self.violations([("binary", F(BINARY, b"b" * 1001)), ("text", F(TEXT, b"t" * 1001)),
                         ("64 KiB", F(BINARY, b"b" * 65536))], TOO_BIG)

    def test_over_limit_fragments(self):
        self.violations([
            ("two", F(BINARY, b"a" * 600, fin=False) + F(CONT, b"b" * 401)),
            ("many", b"".join(F(CONT if i else TEXT, b"c" * 100, fin=False) for i in range(10)) +
             F(CONT, b"d")),
        ], TOO_BIG)

    def test_control_frames_not_limited_by_message_size(self):
        # Control frames are limited to 125 bytes, never by max_message_size.
        with RawWS(self.port) as ws:
            ws.send(F(BINARY, b"z" * 990, fin=False) + F(PING, b"p" * 125) + F(CONT, b"z" * 10))
            f = ws.read_frame()
            self.assertEqual((f.opcode, len(f.payload)), (PONG, 125))
            self.assertEqual(ws.read_message(), (BINARY, b"z" * 1000))


if __name__ == "__main__":
    unittest.main()
