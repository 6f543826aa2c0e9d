"""HTTP side of the server: health, routing, keep-alive, pipelining and every rejected request."""

import json
import time
import unittest

from sbtest import HttpConn, RawWS, ServerTestCase, http_request, new_key, ws_accept

HEALTH = b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n"


def upgrade_request(path="/echo", key=None, version=b"13", upgrade=b"websocket",
                    connection=b"Upgrade", method=b"GET", extra=b""):
    """A WebSocket upgrade request; a None field leaves its header out."""
    lines = [method + b" " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1"]
    if upgrade is not None:
        lines.append(b"Upgrade: " + upgrade)
    if connection is not None:
        lines.append(b"Connection: " + connection)
    if key is not None:
        lines.append(b"Sec-WebSocket-Key: " + key.encode())
    if version is not None:
        lines.append(b"Sec-WebSocket-Version: " + version)
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"


class HealthTest(ServerTestCase):
    server_settings = {}

    def test_health_json(self):
        r, _ = http_request(self.port, HEALTH)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r)
        body = json.loads(r.body)
        self.assertEqual(body.get("status"), "healthy", body)
        self.assertIn("version", body)
        self.assertEqual(body.get("workers"), 2, body)
        self.assertIsInstance(body.get("connections"), int, body)
        self.assertGreaterEqual(body["connections"], 0, body)

    def test_health_counts_websocket_connections(self):
        before = self.srv.health()[2]["connections"]
        clients = [RawWS(self.port) for _ in range(5)]
        try:
            # Workers may report their counts with a small delay.
            deadline = time.monotonic() + 5
            while True:
                now = self.srv.health()[2]["connections"]
                if now >= before + 5 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.assertGreaterEqual(now, before + 5)
        finally:
            for c in clients:
                c.close()

    def test_health_with_query_string(self):
        r, _ = http_request(self.port, b"GET /api/health?x=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(r.status, 200, r)

    def test_http_1_0(self):
        r, closed = http_request(self.port, b"GET /api/health HTTP/1.0\r\n\r\n", wait_close=2.0)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(closed, "HTTP/1.0 without keep-alive must be closed after the response")

    def test_unknown_path_404(self):
        for path in (b"/", b"/nope", b"/api", b"/api/healthz", b"/echo/x"):
            with self.subTest(path=path):
                r, _ = http_request(self.port, b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
                self.assertEqual(r.status, 404, r)

    def test_keep_alive(self):
        with HttpConn(self.port) as c:
            for i in range(5):
                self.assertTrue(c.send(HEALTH), f"request {i}: connection closed")
                r = c.read_response()
                self.assertEqual(r.status, 200, f"request {i}: {r}")
                self.assertIn("content-length", r.headers, "keep-alive needs a Content-Length")
                self.assertNotEqual(r.headers.get("connection", "").lower(), "close")

    def test_error_response_keeps_or_closes_as_announced(self):
        # After a 404 the server may close, but only if it says "Connection: close".
        with HttpConn(self.port) as c:
            c.send(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n" + HEALTH)
            r = c.read_response()
            self.assertEqual(r.status, 404)
            if r.headers.get("connection", "").lower() == "close":
                self.assertTrue(c.closed_within(2.0), "announced close but kept the connection")
            else:
                self.assertEqual(c.read_response().status, 200)

    def test_pipelining(self):
        with HttpConn(self.port) as c:
            c.send(HEALTH * 10)
            statuses = [c.read_response().status for _ in range(10)]
            self.assertEqual(statuses, [200] * 10)
            # Responses arrive even when requests straddle writes.
            c.send(HEALTH * 3 + HEALTH[:7])
            c.send(HEALTH[7:] + HEALTH)
            self.assertEqual([c.read_response().status for _ in range(5)], [200] * 5)

    def test_connection_close(self):
        r, closed = http_request(self.port, b"GET /api/health HTTP/1.1\r\nHost: t\r\n"
                                 b"Connection: close\r\n\r\n", wait_close=2.0)
        self.assertEqual(r.status, 200)
        self.assertTrue(closed, "server must close after a 'Connection: close' request")

    def test_request_in_tiny_pieces(self):
        with HttpConn(self.port) as c:
            for i in range(len(HEALTH)):
                c.send(HEALTH[i:i + 1])
                time.sleep(0.002)
            self.assertEqual(c.read_response().status, 200)

    def test_large_header_section_within_limit(self):
        # About 12 KiB of headers: under the 16 KiB limit.
        extra = b"".join(b"X-Fill-%d: %s\r\n" % (i, b"a" * 1000) for i in range(12))
        r, _ = http_request(self.port, b"GET /api/health HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n")
        self.assertEqual(r.status, 200, r)

    def test_upgrade_ok(self):
        key = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3
        with HttpConn(self.port) as c:
            c.send(upgrade_request(key=key))
            r = c.read_response(head_only=True)
            self.assertEqual(r.status, 101, r)
            self.assertEqual(r.headers.get("sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            self.assertEqual(r.headers.get("upgrade", "").lower(), "websocket")
            self.assertIn("upgrade", r.headers.get("connection", "").lower())
            self.assertNotIn("sec-websocket-extensions", r.headers)

    def test_upgrade_header_tokens_case_insensitive(self):
        # Firefox sends "Connection: keep-alive, Upgrade"; header names and tokens ignore case.
        key = new_key()
        req = (b"GET /echo HTTP/1.1\r\nhost: x\r\nupgrade: WebSocket\r\n"
               b"connection: keep-alive, Upgrade\r\nsec-websocket-key: " + key.encode() +
               b"\r\nSEC-WEBSOCKET-VERSION: 13\r\n"
               b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
        with HttpConn(self.port) as c:
            c.send(req)
            r = c.read_response(head_only=True)
            self.assertEqual(r.status, 101, r)
            self.assertEqual(r.headers.get("sec-websocket-accept"), ws_accept(key))


class BadRequestTest(ServerTestCase):
    server_settings = {}

    def assert_rejected(self, data, status, closed=None):
        r, was_closed = http_request(self.port, data, wait_close=2.0 if closed else 0)
        self.assertEqual(r.status, status, r)
        if closed is not None:
            self.assertEqual(was_closed, closed, f"connection closed after {status}")
        return r

    def test_malformed_request_line_400(self):
        cases = [
            b"GARBAGE\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /api/health\r\n\r\n",
            b"GET /api/health HTTP/1.1 extra\r\n\r\n",
            b"GET  /api/health HTTP/1.1\r\n\r\n",
            b"GET /api/health HTTX/1.1\r\n\r\n",
            b"G\x01T /api/health HTTP/1.1\r\n\r\n",
            b"GET /api/\x7fhealth HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # TLS
        ]
        for data in cases:
            with self.subTest(data=data[:40]):
                self.assert_rejected(data, 400, closed=True)

    def test_malformed_headers_400(self):
        cases = [
            b"GET /api/health HTTP/1.1\r\nNoColonHere\r\n\r\n",
            b"GET /api/health HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET /api/health HTTP/1.1\r\nName : x\r\n\r\n",
            b"GET /api/health HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n",
            b"GET /api/health HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET /api/health HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            b"GET /api/health HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ]
        for data in cases:
            with self.subTest(data=data):
                self.assert_rejected(data, 400, closed=True)

    def test_bare_lf_400(self):
        self.assert_rejected(b"GET /api/health HTTP/1.1\nHost: t\n\n", 400, closed=True)

    def test_garbage_after_good_request(self):
        # The good request is answered, then the garbage gets a 400 and the connection closes.
        with HttpConn(self.port) as c:
            c.send(HEALTH + b"\x00\x01\x02 garbage\r\n\r\n")
            self.assertEqual(c.read_response().status, 200)
            self.assertEqual(c.read_response().status, 400)
            self.assertTrue(c.closed_within(2.0))

    def test_header_section_too_large_431(self):
        extra = b"".join(b"X-Fill-%d: %s\r\n" % (i, b"a" * 1000) for i in range(17))
        self.assert_rejected(b"GET /api/health HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n", 431)

    def test_header_section_too_large_unterminated_431(self):
        # Headers that never end: the server must not buffer forever.
        with HttpConn(self.port) as c:
            c.send(b"GET /api/health HTTP/1.1\r\nHost: t\r\n")
            for i in range(40):
                if not c.send(b"X-Fill-%d: %s\r\n" % (i, b"b" * 1000)):
                    break
            r = c.read_response()
            self.assertEqual(r.status, 431, r)
            self.assertTrue(c.closed_within(2.0))

    def test_post_echo_405(self):
        self.assert_rejected(upgrade_request(key=new_key(), method=b"POST",
                                             extra=b"Content-Length: 0\r\n"), 405)
        self.assert_rejected(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 405)
        self.assert_rejected(b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 405)

    def test_post_with_body_405_then_keep_alive(self):
        # The body is consumed, so the next request on the connection parses cleanly.
        with HttpConn(self.port) as c:
            c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
            self.assertEqual(c.read_response().status, 405)
            if c.send(HEALTH):
                try:
                    r = c.read_response()
                except Exception:  # noqa: BLE001 - closing after a 405 is allowed too
                    r = None
                if r is not None:
                    self.assertEqual(r.status, 200, "body was not consumed")

    def test_no_upgrade_header_426(self):
        self.assert_rejected(upgrade_request(key=new_key(), upgrade=None, connection=None), 426)
        self.assert_rejected(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n", 426)

    def test_upgrade_not_websocket_426(self):
        self.assert_rejected(upgrade_request(key=new_key(), upgrade=b"h2c"), 426)

    def test_bad_version_426(self):
        for version in (b"8", b"12", b"14", b"abc"):
            with self.subTest(version=version):
                r = self.assert_rejected(upgrade_request(key=new_key(), version=version), 426)
                self.assertEqual(r.headers.get("sec-websocket-version"), "13", r)

    def test_missing_key_400(self):
        self.assert_rejected(upgrade_request(key=None), 400)

    def test_invalid_key_400(self):
        bad = ["", "abc", "dGhlIHNhbXBsZSBub25jZQ",  # no padding
               "dGhlIHNhbXBsZSBub25j",  # 15 bytes
               "dGhlIHNhbXBsZSBub25jZQ==dGhl",  # too long
               "!!!!!!!!!!!!!!!!!!!!!!==",  # not base64
               "AAAAAAAAAAAAAAAAAAAAAAAAAAAA"]  # 21 bytes
        for key in bad:
            with self.subTest(key=key):
                self.assert_rejected(upgrade_request(key=key), 400)

    def test_server_still_serves_after_bad_requests(self):
        for _ in range(20):
            http_request(self.port, b"\xff\xfe\xfd\r\n\r\n")
        self.assertEqual(self.srv.health()[0], 200)


class EchoOffTest(ServerTestCase):
    server_settings = {"echo": "off"}

    def test_echo_route_404(self):
        r, _ = http_request(self.port, upgrade_request(key=new_key()))
        self.assertEqual(r.status, 404, r)

    def test_health_still_served(self):
        self.assertEqual(self.srv.health()[0], 200)


if __name__ == "__main__":
    unittest.main()
