"""A real browser talks to the server: headless Chromium opens `new WebSocket(...)` to /echo.

Chromium is driven over its DevTools protocol (with Python `websockets`): the test evaluates a
script in a blank page and reads back what the page's WebSocket received. Skipped (exit 77 in
ctest terms) only when Chromium is not installed; tools/setup installs it.
"""

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.request

import websockets

import sbtest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Flags for a headless root session on a machine without a network: no sandbox (root), and no
# background traffic that would be refused anyway.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]

PAGE_SCRIPT = """
new Promise((resolve, reject) => {
  const ws = new WebSocket('ws://127.0.0.1:%(port)d/echo');
  ws.binaryType = 'arraybuffer';
  const got = [];
  const big = 'x'.repeat(200000);
  ws.onopen = () => {
    ws.send('hello from chromium \u00e9\u4e16');
    ws.send(new Uint8Array([0, 1, 2, 255]).buffer);
    ws.send(big);
  };
  ws.onmessage = (e) => {
    got.push(typeof e.data === 'string'
      ? (e.data.length > 1000 ? 'text:' + e.data.length + ':' + (e.data === big)
                              : 'text:' + e.data)
      : 'binary:' + Array.from(new Uint8Array(e.data)).join(','));
    if (got.length === 3) ws.close(1000, 'done');
  };
  ws.onclose = (e) => resolve(JSON.stringify({got, code: e.code, clean: e.wasClean}));
  ws.onerror = () => reject('websocket error');
  setTimeout(() => reject('timeout'), 10000);
})
"""


class Chromium:
    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="sb-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM] + CHROMIUM_FLAGS + ["--user-data-dir=" + self.profile, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=sbtest._die_with_parent)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not os.path.exists(port_file):
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode}")
            time.sleep(0.1)
        time.sleep(0.2)  # the file is written before its content is complete
        with open(port_file) as f:
            self.port = int(f.readline().strip())

    def page_ws_url(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
            targets = json.load(r)
        return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


async def evaluate(ws_url, expression):
    async with websockets.connect(ws_url, max_size=None) as cdp:
        await cdp.send(json.dumps({"id": 1, "method": "Runtime.evaluate", "params": {
            "expression": expression, "awaitPromise": True, "returnByValue": True}}))
        while True:
            msg = json.loads(await asyncio.wait_for(cdp.recv(), 20))
            if msg.get("id") == 1:
                return msg["result"]


@unittest.skipUnless(CHROMIUM, "chromium is not installed (tools/setup installs it)")
class BrowserEcho(sbtest.ServerTestCase):
    def test_browser_websocket_echo(self):
        browser = Chromium()
        try:
            result = asyncio.run(evaluate(browser.page_ws_url(),
                                          PAGE_SCRIPT % {"port": self.server.port}))
        finally:
            browser.close()
        self.assertNotIn("exceptionDetails", result, result)
        outcome = json.loads(result["result"]["value"])
        self.assertEqual(outcome["got"], [
            "text:hello from chromium \u00e9\u4e16",
            "binary:0,1,2,255",
            "text:200000:true",
        ])
        self.assertEqual(outcome["code"], 1000)
        self.assertTrue(outcome["clean"])


if __name__ == "__main__":
    unittest.main()
