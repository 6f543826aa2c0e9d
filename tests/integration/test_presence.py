"""Presence over /ws: presence_sub answers the current status, then first-online and
last-offline events; offline only after the grace period, a reconnect inside it shows nothing;
subscriptions end with their device; a backed-up device gets only the latest value per user."""

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import websockets

import sbtest

GRACE_MS = 500
MAX_SUBS = 40


def mint(sub):
    out = subprocess.run([sbtest.SB_BIN, "token", "--sub", sub], check=True,
                         capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


_tokens = {}


def token(user):
    """Tokens are minted once per user: a reconnect must not wait for a subprocess."""
    if user not in _tokens:
        _tokens[user] = mint(user)
    return _tokens[user]


async def connect(port, user, device=None):
    url = f"ws://127.0.0.1:{port}/ws" + (f"?device={device}" if device else "")
    ws = await websockets.connect(url, extra_headers={"Authorization": "Bearer " + token(user)})
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome", welcome
    return ws


async def recv_json(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def no_message(ws, timeout):
    try:
        msg = await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected message {msg}")


async def subscribe(ws, users, rid="s1"):
    """presence_sub; returns {user: presence} of the answer (one per distinct user)."""
    await ws.send(json.dumps({"type": "presence_sub", "id": rid, "users": users}))
    got = {}
    while len(got) < len(set(users)):
        p = await recv_json(ws)
        assert p["type"] == "presence", p
        assert p["user"] not in got, p
        got[p["user"]] = p
    return got


def raw_login(port, user, device):
    """A plain-socket /ws client (sbtest.RawWS) past its welcome: it reads only when told."""
    ws = sbtest.RawWS(port, f"/ws?device={device}", handshake=False)
    try:
        ws.handshake(b"Authorization: Bearer " + token(user).encode() + b"\r\n")
        assert json.loads(ws.read_message()[1])["type"] == "welcome"
    except BaseException:
        ws.close()
        raise
    return ws


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return int(m.group(1))


def now_ms():
    return int(time.time() * 1000)


class PresenceTest(sbtest.ServerTestCase):
    server_settings = {"workers": 3, "presence_grace_ms": GRACE_MS, "max_body_size": "2M",
                       "rate_bytes": "64M", "slow_queue_bytes": "64M",
                       "presence_max_subscriptions": MAX_SUBS}

    def run_async(self, coro, timeout=60.0):
        return asyncio.run(asyncio.wait_for(coro, timeout))

    def test_subscribe_answers_status_then_online_and_offline_after_grace(self):
        async def go():
            port = self.port
            alice = await connect(port, "alice1")
            got = await subscribe(alice, ["bob1", "carol1", "bob1"])
            self.assertEqual(set(got), {"bob1", "carol1"})
            for p in got.values():
                self.assertEqual((p["status"], p["last_seen"]), ("offline", 0))
            before = now_ms()
            bob = await connect(port, "bob1")
            p = await recv_json(alice)
            self.assertEqual((p["type"], p["user"], p["status"]), ("presence", "bob1", "online"))
            self.assertGreaterEqual(p["last_seen"], before - 5)
            # A second subscriber now gets "online" at once.
            dave = await connect(port, "dave1")
            self.assertEqual((await subscribe(dave, ["bob1"]))["bob1"]["status"], "online")
            # The server sees bob leave after this, never before.
            closing = time.monotonic()
            await bob.close()
            left = now_ms()
            # Nothing before the grace period ends, then offline with the time bob left.
            await no_message(alice, max(0.0, closing + GRACE_MS / 1000 * 0.6 - time.monotonic()))
            for ws in (alice, dave):
                p = await recv_json(ws, 3)
                self.assertEqual((p["user"], p["status"]), ("bob1", "offline"))
                self.assertGreaterEqual(time.monotonic() - closing, GRACE_MS / 1000 * 0.9)
                self.assertTrue(before <= p["last_seen"] <= left + 5, (p, before, left))
            # Subscribing again after the fact reports offline with that last-seen time.
            again = (await subscribe(dave, ["bob1"], "s2"))["bob1"]
            self.assertEqual((again["status"], again["last_seen"]), ("offline", p["last_seen"]))
            await no_message(alice, 0.2)
            for ws in (alice, dave):
                await ws.close()
        self.run_async(go())

    def test_reconnect_inside_grace_shows_nothing(self):
        async def go():
            port = self.port
            alice = await connect(port, "alice2")
            bob = await connect(port, "bob2")
            self.assertEqual((await subscribe(alice, ["bob2"]))["bob2"]["status"], "online")
            for _ in range(3):
                await bob.close()
                bob = await connect(port, "bob2")
            await no_message(alice, GRACE_MS / 1000 * 3)
            # Still online for a new subscriber; then a real departure is seen once.
            self.assertEqual((await subscribe(alice, ["bob2"], "s2"))["bob2"]["status"], "online")
            await bob.close()
            p = await recv_json(alice, 3)
            self.assertEqual((p["user"], p["status"]), ("bob2", "offline"))
            await no_message(alice, GRACE_MS / 1000 * 2)
            await alice.close()
        self.run_async(go())

    def test_two_devices_offline_only_after_both(self):
        async def go():
            port = self.port
            alice = await connect(port, "alice3")
            await subscribe(alice, ["bob3"])
            phone = await connect(port, "bob3", "phone")
            self.assertEqual((await recv_json(alice))["status"], "online")
            laptop = await connect(port, "bob3", "laptop")
            await phone.close()
            await no_message(alice, GRACE_MS / 1000 * 2.5)
            await laptop.close()
            p = await recv_json(alice, 3)
            self.assertEqual((p["user"], p["status"]), ("bob3", "offline"))
            self.assertGreater(p["last_seen"], 0)
            await alice.close()
        self.run_async(go())

    def test_unsubscribe_stops_events(self):
        async def go():
            port = self.port
            alice = await connect(port, "alice4")
            await subscribe(alice, ["bob4", "carol4"])
            await alice.send(json.dumps({"type": "presence_unsub", "id": "u1",
                                         "users": ["bob4", "nobody4"]}))
            # Requests of one device are handled in order: once this is answered, so was that.
            await subscribe(alice, ["zed4"], "s2")
            bob = await connect(port, "bob4")
            carol = await connect(port, "carol4")
            p = await recv_json(alice)
            self.assertEqual((p["user"], p["status"]), ("carol4", "online"))
            await bob.close()
            await no_message(alice, GRACE_MS / 1000 * 2)
            await carol.close()
            await alice.close()
        self.run_async(go())

    def test_subscriber_disconnect_drops_its_subscriptions(self):
        async def go():
            port = self.port
            watchers = [await connect(port, f"watcher5_{i}") for i in range(4)]
            for w in watchers:
                await subscribe(w, ["bob5"] + [f"other5_{i}" for i in range(20)])
            for w in watchers:
                await w.close()
            await asyncio.sleep(0.2)
            sent = metric(port, "switchboard_presence_events_sent_total")
            bob = await connect(port, "bob5")
            await asyncio.sleep(0.1)
            await bob.close()
            await asyncio.sleep(GRACE_MS / 1000 * 2)
            # Nobody watches bob5 any more: nothing was queued to any connection.
            self.assertEqual(metric(port, "switchboard_presence_events_sent_total"), sent)
        self.run_async(go())

    def test_users_on_every_worker(self):
        async def go():
            port = self.port
            users = [f"spread6_{i}" for i in range(15)]  # 15 users land on all 3 workers
            # Users of earlier tests finish their grace periods first: the gauge is global.
            await asyncio.sleep(GRACE_MS / 1000 * 2)
            watchers = [await connect(port, f"watch6_{i}") for i in range(3)]
            for w in watchers:
                got = await subscribe(w, users)
                self.assertEqual({p["status"] for p in got.values()}, {"offline"})
            online = metric(port, "switchboard_presence_online_users")
            conns = [await connect(port, u) for u in users]
            for w in watchers:
                seen = {}
                while len(seen) < len(users):
                    p = await recv_json(w)
                    self.assertNotIn(p["user"], seen)
                    seen[p["user"]] = p["status"]
                self.assertEqual(set(seen.values()), {"online"})
            self.assertEqual(metric(port, "switchboard_presence_online_users"),
                             online + len(users))
            for c in conns:
                await c.close()
            for w in watchers:
                seen = {}
                while len(seen) < len(users):
                    p = await recv_json(w, 3)
                    seen[p["user"]] = p["status"]
                self.assertEqual(set(seen.values()), {"offline"})
                await w.close()
            self.assertEqual(metric(port, "switchboard_presence_online_users"), online)
        self.run_async(go())

    def test_bad_requests_get_typed_errors(self):
        async def go():
            port = self.port
            alice = await connect(port, "alice7")
            cases = [
                ({"type": "presence_sub", "id": "b1"}, "b1", "bad_request"),
                ({"type": "presence_sub", "id": "b2", "users": []}, "b2", "bad_request"),
                ({"type": "presence_sub", "id": "b3", "users": "bob"}, "b3", "bad_request"),
                ({"type": "presence_sub", "id": "b4", "users": ["ok", "no:colon"]}, "b4",
                 "bad_request"),
                ({"type": "presence_sub", "id": "b5", "users": ["x" * 65]}, "b5", "bad_request"),
                ({"type": "presence_sub", "id": "b6", "users": [7]}, "b6", "bad_request"),
                ({"type": "presence_unsub", "id": "b7", "users": [""]}, "b7", "bad_request"),
                ({"type": "presence_sub", "id": "b8", "users": [f"u{i}" for i in range(1001)]},
                 "b8", "bad_request"),
                ({"type": "presence_sub", "users": ["bob"]}, None, "bad_request"),
                ({"type": "presence_sub", "id": "b9",
                  "users": [f"u{i}" for i in range(MAX_SUBS + 1)]}, "b9", "too_large"),
            ]
            for req, rid, code in cases:
                await alice.send(json.dumps(req))
                e = await recv_json(alice)
                self.assertEqual((e["type"], e.get("id"), e["code"]), ("error", rid, code), req)
            # A failed request subscribes nothing: the cap still has room for MAX_SUBS users,
            # and the device total counts across requests.
            half = MAX_SUBS // 2
            await subscribe(alice, [f"cap7_{i}" for i in range(half)])
            await subscribe(alice, [f"cap7_{i}" for i in range(half)], "again")  # no new ones
            await subscribe(alice, [f"more7_{i}" for i in range(MAX_SUBS - half)], "s3")
            await alice.send(json.dumps({"type": "presence_sub", "id": "over",
                                         "users": ["one7_more"]}))
            e = await recv_json(alice)
            self.assertEqual((e["id"], e["code"]), ("over", "too_large"))
            await alice.send(json.dumps({"type": "presence_unsub", "id": "u",
                                         "users": ["cap7_0"]}))
            self.assertIn("one7_more", await subscribe(alice, ["one7_more"], "s4"))
            await no_message(alice, 0.2)
            await alice.close()
        self.run_async(go())

    def test_backed_up_device_gets_only_the_latest_value(self):
        port = self.port
        slow = raw_login(port, "slow8", "slow")
        flips = []
        try:
            slow.send_frame(sbtest.TEXT, json.dumps({"type": "presence_sub", "id": "s",
                                                     "users": ["flip8"]}).encode())
            self.assertEqual(json.loads(slow.read_message()[1])["status"], "offline")
            # Stop reading: once the kernel buffers are full (a few MiB on loopback), what the
            # server sends piles up in its send queue.
            coalesced = metric(port, "switchboard_presence_coalesced_total")
            body = "x" * (1 << 20)
            nmsgs = 16

            async def fill():
                sender = await connect(port, "sender8")
                for i in range(nmsgs):
                    await sender.send(json.dumps({"type": "send", "id": f"m{i}", "to": "slow8",
                                                  "body": body}))
                    self.assertEqual((await recv_json(sender))["type"], "ack")
                await sender.close()

            self.run_async(fill())
            time.sleep(0.3)
            # online, offline (after the grace), online: three values, the last one is kept.
            flips.append(raw_login(port, "flip8", "a"))
            flips.pop().close()
            time.sleep(GRACE_MS / 1000 * 3)
            flips.append(raw_login(port, "flip8", "b"))
            # The last event is mailed to the device's worker after flip8's welcome: wait for it.
            sbtest.wait_until(
                lambda: metric(port, "switchboard_presence_coalesced_total") >= coalesced + 2, 5)
            self.assertEqual(metric(port, "switchboard_presence_coalesced_total"), coalesced + 2)
            messages, presence = 0, []
            deadline = time.monotonic() + 20
            while messages < nmsgs or not presence:
                self.assertLess(time.monotonic(), deadline, (messages, presence))
                doc = json.loads(slow.read_message(timeout=10)[1])
                if doc["type"] == "message":
                    messages += 1
                else:
                    presence.append(doc)
            try:
                extra = slow.read_message(timeout=0.5)[1][:200]
                self.fail(f"more than the latest presence value arrived: {extra!r} {presence}")
            except TimeoutError:
                pass
            self.assertEqual([(p["user"], p["status"]) for p in presence], [("flip8", "online")])
        finally:
            for ws in [slow] + flips:
                ws.close()


class PresenceShutdownTest(sbtest.ServerTestCase):
    """Stopping with watchers and watched users still connected: their workers close at
    different moments, and nothing may be mailed to a worker that has already exited."""

    server_settings = {"workers": 4, "presence_grace_ms": 0}

    def test_stop_with_live_subscriptions(self):
        users = [f"stop9_{i}" for i in range(24)]

        async def go():
            port = self.port
            conns = [await connect(port, u) for u in users[:12]]
            watchers = [await connect(port, f"watch9_{i}") for i in range(8)]
            for w in watchers:
                await subscribe(w, users)
            # The clients keep running (and answer the close handshakes) while it stops.
            srv = type(self).server
            type(self).server = None
            code = await asyncio.to_thread(srv.stop, 20.0)
            for ws in conns + watchers:
                await ws.close()
            return srv, code

        srv, code = self.run_async(go())
        bad = srv.bad_log_lines(since_start=True)
        if bad or code != 0:
            sys.stderr.write(f"\n--- server log ---\n{srv.log_tail()}\n")
        srv.remove_log()
        self.assertEqual(bad, [])
        self.assertEqual(code, 0)

if __name__ == "__main__":
    import unittest
    unittest.main()
