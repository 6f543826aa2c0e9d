"""The server closes TCP promptly once a close handshake is done, even with output in flight.

Regression: a connection draining its output after answering a close frame was left waiting for
its close timer when the completion of its cancelled receive arrived after the completion of its
last send (the order DEFER_TASKRUN usually produces). Each client here pipelines messages and a
close frame in one write, so the close reply is queued behind the echoes.
"""

import time
import unittest

import sbtest
from sbtest import CLOSE, TEXT, RawWS, encode_frame

CLOSE_TIMEOUT_MS = 4000


class PromptClose(sbtest.ServerTestCase):
    server_settings = {"close_timeout_ms": CLOSE_TIMEOUT_MS}

    def test_close_after_pipelined_messages(self):
        for round_ in range(5):
            clients = [RawWS(self.server.port) for _ in range(100)]
            try:
                burst = b"".join(encode_frame(TEXT, b"m%03d" % k) for k in range(16))
                for ws in clients:
                    ws.send(burst)
                # Every close leaves at once, while echoes are still being written.
                for ws in clients:
                    ws.send(encode_frame(CLOSE, sbtest.close_payload(1000)))
                start = time.monotonic()
                slow = []
                for i, ws in enumerate(clients):
                    for k in range(16):
                        self.assertEqual(ws.read_message(), (TEXT, b"m%03d" % k))
                    self.assertEqual(ws.read_close().close_code, 1000)
                    closed = ws.closed_within(CLOSE_TIMEOUT_MS / 1000 + 1)
                    self.assertTrue(closed, "server never closed TCP")
                    if time.monotonic() - start > 1.0:
                        slow.append(i)
            finally:
                for ws in clients:
                    ws.close()
            self.assertEqual(slow, [], f"round {round_}: TCP closes that waited for the timer")
        self.assertNotIn("close handshake timed out", self.server.read_log())


if __name__ == "__main__":
    unittest.main()
