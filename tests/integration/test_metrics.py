"""GET /metrics: Prometheus text that counts what happened, and its access setting."""

import asyncio
import re
import subprocess
import urllib.error
import urllib.request

import websockets

import sbtest


def fetch(port, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, None, e.read().decode()


def value(text, name, labels=""):
    """The sum of every sample of name whose labels contain `labels`."""
    total, found = 0, False
    for line in text.splitlines():
        m = re.match(r"^(\w+)(\{[^}]*\})? (\d+)$", line)
        if m and m.group(1) == name and labels in (m.group(2) or ""):
            total += int(m.group(3))
            found = True
    assert found, f"{name}{labels} missing"
    return total


def mint(sub, *args):
    return subprocess.run([sbtest.SB_BIN, "token", "--sub", sub, *args], check=True,
                          capture_output=True, text=True, timeout=10).stdout.strip()


class PublicMetrics(sbtest.ServerTestCase):
    def test_counts_traffic(self):
        port = self.server.port
        status, ctype, before = fetch(port)
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"))
        for line in before.splitlines():  # every line is a comment or a well-formed sample
            self.assertTrue(line.startswith("# ") or re.match(r"^\w+(\{[^}]*\})? \d+$", line),
                            line)

        async def traffic():
            async with websockets.connect(f"ws://127.0.0.1:{port}/echo") as ws:
                for i in range(5):
                    await ws.send(f"m{i}")
                    await ws.recv()
        asyncio.run(asyncio.wait_for(traffic(), 10))
        _, _, after = fetch(port)
        self.assertEqual(value(after, "switchboard_websocket_messages_received_total") -
                         value(before, "switchboard_websocket_messages_received_total"), 5)
        self.assertEqual(value(after, "switchboard_websocket_upgrades_total", '"/echo"') -
                         value(before, "switchboard_websocket_upgrades_total", '"/echo"'), 1)
        self.assertGreater(value(after, "switchboard_connections_accepted_total"),
                           value(before, "switchboard_connections_accepted_total"))
        self.assertGreaterEqual(value(after, "switchboard_http_requests_total"), 3)


class AdminMetrics(sbtest.ServerTestCase):
    server_settings = {"metrics": "admin"}

    def test_needs_admin_scope(self):
        port = self.server.port
        self.assertEqual(fetch(port)[0], 401)
        self.assertEqual(fetch(port, mint("alice"))[0], 403)
        status, _, text = fetch(port, mint("root", "--scope", "admin"))
        self.assertEqual(status, 200)
        self.assertIn("switchboard_connections", text)


class NoMetrics(sbtest.ServerTestCase):
    server_settings = {"metrics": "off"}

    def test_off_is_not_found(self):
        self.assertEqual(fetch(self.server.port)[0], 404)


if __name__ == "__main__":
    import unittest
    unittest.main()
