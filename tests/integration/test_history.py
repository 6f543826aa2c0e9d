"""History on disk and sync on /ws: offline delivery through sync, paging, durability of every
acked message across SIGKILL under fsync = always, duplicates recognised after a restart, a
corrupt log tail, the other fsync policies, the history bounds, run-time compaction and a change
of the worker count. Each test runs its own servers on a temporary data_dir."""

import asyncio
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.request

import websockets

import sbtest

_tokens = {}


def mint(sub):
    if sub not in _tokens:
        out = subprocess.run([sbtest.SB_BIN, "token", "--sub", sub], check=True,
                             capture_output=True, text=True, timeout=10)
        _tokens[sub] = out.stdout.strip()
    return _tokens[sub]


async def connect(port, user, device=None):
    url = f"ws://127.0.0.1:{port}/ws" + (f"?device={device}" if device else "")
    ws = await websockets.connect(url, extra_headers={"Authorization": "Bearer " + mint(user)},
                                  max_size=None)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert welcome["type"] == "welcome", welcome
    return ws


async def recv_json(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_type(ws, types, timeout=10):
    """The next message whose type is in types; live deliveries in between are skipped."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if msg["type"] in types:
            return msg


def dm(a, b):
    return "dm:" + ":".join(sorted((a, b)))


async def send_all(ws, to, bodies, prefix):
    """Sends every body (pipelined) and returns the acks by client id."""
    for i, body in enumerate(bodies):
        await ws.send(json.dumps({"type": "send", "id": f"{prefix}{i}", "to": to, "body": body}))
    acks = {}
    while len(acks) < len(bodies):
        msg = await recv_type(ws, ("ack", "error"))
        assert msg["type"] == "ack", msg
        acks[msg["id"]] = msg
    return acks


_sync_ids = iter(range(1, 1 << 30))


async def sync_pages(ws, convs, limit=None):
    """One sync request; returns {conv: page or error}."""
    rid = f"s{next(_sync_ids)}"
    req = {"type": "sync", "id": rid, "convs": convs}
    if limit is not None:
        req["limit"] = limit
    await ws.send(json.dumps(req))
    out = {}
    while len(out) < len(convs):
        msg = await recv_type(ws, ("sync_page", "error"))
        assert msg["id"] == rid, msg
        assert "conv" in msg, msg
        out[msg["conv"]] = msg
    return out


async def sync_all(ws, convs, limit=None):
    """Pages through each conversation from its last_seq; returns ({conv: messages}, pages)."""
    cursors = dict(convs)
    got = {c: [] for c in convs}
    pages = []
    while cursors:
        res = await sync_pages(ws, cursors, limit)
        for conv, page in res.items():
            assert page["type"] == "sync_page", page
            pages.append(page)
            got[conv] += page["messages"]
            if page["more"]:
                assert page["messages"], page
                cursors[conv] = page["last_seq"]
            else:
                del cursors[conv]
    return got, pages


class HistoryTest(unittest.TestCase):
    def setUp(self):
        self.data_dir = tempfile.mkdtemp(prefix="sb-history-")
        self.servers = []

    def tearDown(self):
        for srv in self.servers:
            if srv.is_running():
                srv.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def start(self, **settings):
        settings.setdefault("data_dir", self.data_dir)
        settings.setdefault("workers", 2)
        srv = sbtest.Server(**settings)
        self.servers.append(srv)
        return srv.start()

    def finish(self, srv, kill=False):
        """Stops srv (SIGKILL with kill) and checks its log; returns the log text."""
        if kill:
            srv.kill()
        else:
            self.assertEqual(srv.stop(), 0, srv.log_tail())
        log = srv.read_log()
        bad = srv.bad_log_lines(since_start=True)
        self.assertFalse(bad, "server log has error/sanitizer lines:\n" + "\n".join(bad[:20]))
        srv.remove_log()
        return log

    def run_async(self, coro, timeout=120):
        return asyncio.run(asyncio.wait_for(coro, timeout))

    def logs(self):
        return sorted(os.path.basename(p) for p in glob.glob(os.path.join(self.data_dir, "w*")))

    # -- sync ----------------------------------------------------------------------------------

    def test_offline_user_syncs_everything_in_order(self):
        srv = self.start()

        async def go():
            a = await connect(srv.port, "alice", "phone")
            bodies = [f"note {i} \u00e9\"quoted\"" for i in range(40)]
            acks = await send_all(a, "bob", bodies, "n")
            b = await connect(srv.port, "bob")  # offline until now
            got, _ = await sync_all(b, {dm("alice", "bob"): 0})
            msgs = got[dm("alice", "bob")]
            self.assertEqual([m["seq"] for m in msgs], list(range(1, 41)))
            for i, m in enumerate(msgs):
                ack = acks[f"n{i}"]
                self.assertEqual((m["type"], m["conv"], m["from"], m["device"], m["body"]),
                                 ("message", dm("alice", "bob"), "alice", "phone", bodies[i]))
                self.assertEqual((m["msg_id"], m["ts"], m["seq"]),
                                 (ack["msg_id"], ack["ts"], ack["seq"]))
            # A message as delivered live is the same object as in a sync page.
            await a.send(json.dumps({"type": "send", "id": "live", "to": "bob", "body": "hi"}))
            live = await recv_type(b, ("message",))
            got, _ = await sync_all(b, {dm("alice", "bob"): 40})
            self.assertEqual(got[dm("alice", "bob")], [live])
            # Up to date: an empty page that says where the conversation is.
            page = (await sync_pages(b, {dm("alice", "bob"): 41}))[dm("alice", "bob")]
            self.assertEqual((page["messages"], page["more"], page["last_seq"]), ([], False, 41))
            self.assertNotIn("truncated", page)
            await a.close()
            await b.close()
        self.run_async(go())
        self.finish(srv)

    def test_paging_and_errors(self):
        srv = self.start()

        async def go():
            a = await connect(srv.port, "alice")
            await send_all(a, "bob", [f"m{i}" for i in range(23)], "p")
            await send_all(a, "carol", ["c0", "c1"], "q")
            got, pages = await sync_all(a, {dm("alice", "bob"): 3, dm("alice", "carol"): 0},
                                        limit=7)
            self.assertEqual([m["seq"] for m in got[dm("alice", "bob")]], list(range(4, 24)))
            self.assertEqual([m["body"] for m in got[dm("alice", "carol")]], ["c0", "c1"])
            bob_pages = [p for p in pages if p["conv"] == dm("alice", "bob")]
            self.assertEqual([len(p["messages"]) for p in bob_pages], [7, 7, 6])
            self.assertEqual([p["last_seq"] for p in bob_pages], [10, 17, 23])
            self.assertEqual([p["more"] for p in bob_pages], [True, True, False])
            # A limit above the maximum is the maximum; the default is 100.
            page = (await sync_pages(a, {dm("alice", "bob"): 0}, 5000))[dm("alice", "bob")]
            self.assertEqual(len(page["messages"]), 23)
            # Not a member: forbidden, naming the conversation; the other conv is answered.
            res = await sync_pages(a, {dm("bob", "carol"): 0, dm("alice", "bob"): 22})
            err = res[dm("bob", "carol")]
            self.assertEqual((err["type"], err["code"]), ("error", "forbidden"))
            self.assertEqual([m["seq"] for m in res[dm("alice", "bob")]["messages"]], [23])
            # A direct conversation nobody wrote to is empty; an unknown group is not found.
            res = await sync_pages(a, {"g:00000000000000aa": 0, dm("alice", "zed"): 0})
            page = res[dm("alice", "zed")]
            self.assertEqual((page["type"], page["messages"], page["more"], page["last_seq"]),
                             ("sync_page", [], False, 0))
            err = res["g:00000000000000aa"]
            self.assertEqual((err["type"], err["code"]), ("error", "not_found"))
            # Bad requests get one error and no pages.
            bad = [{"convs": {}}, {"convs": []}, {"convs": {dm("alice", "bob"): -1}},
                   {"convs": {dm("alice", "bob"): 1.5}}, {"convs": {dm("alice", "bob"): "1"}},
                   {"convs": {dm("alice", "bob"): 0}, "limit": 0},
                   {"convs": {dm("alice", "bob"): 0}, "limit": "7"},
                   {"convs": {f"dm:alice:u{i}": 0 for i in range(101)}}]
            for i, req in enumerate(bad):
                await a.send(json.dumps({"type": "sync", "id": f"bad{i}", **req}))
                err = await recv_type(a, ("error", "sync_page"))
                self.assertEqual((err["type"], err["code"]), ("error", "bad_request"), req)
            await a.close()
        self.run_async(go())
        self.finish(srv)

    # -- durability ----------------------------------------------------------------------------

    def test_sigkill_keeps_every_acked_message_under_fsync_always(self):
        srv = self.start(fsync="always", workers=3)
        senders = [f"s{i}" for i in range(5)]
        peers = ["p0", "p1", "p2"]
        per_sender = 100
        acked = {}  # (conv, seq) -> (msg_id, body, sender, client id)

        async def sender(user, kill_at):
            ws = await connect(srv.port, user)
            sent = {}
            try:
                for i in range(per_sender):
                    to = peers[i % len(peers)]
                    body = f"{user} to {to} #{i}"
                    sent[f"k{i}"] = body
                    await ws.send(json.dumps({"type": "send", "id": f"k{i}", "to": to,
                                              "body": body}))
                while True:
                    msg = await recv_json(ws, 30)
                    if msg["type"] == "ack":
                        acked[(msg["conv"], msg["seq"])] = (msg["msg_id"], sent[msg["id"]],
                                                            user, msg["id"])
                        if len(acked) >= kill_at and srv.is_running():
                            srv.kill()  # SIGKILL while sends are still in flight
            except websockets.ConnectionClosed:
                pass
            return sent

        async def go():
            results = await asyncio.gather(*(sender(u, 250) for u in senders))
            return results
        self.run_async(go())
        self.assertGreaterEqual(len(acked), 250)
        self.finish(srv, kill=True)

        srv = self.start(fsync="always", workers=3)

        async def check():
            convs = {dm(s, p): 0 for s in senders for p in peers}
            ws = await connect(srv.port, "s0")
            found = {}
            for s in senders:
                ws_s = ws if s == "s0" else await connect(srv.port, s)
                got, _ = await sync_all(ws_s, {c: 0 for c in convs if s in c.split(":")})
                for conv, msgs in got.items():
                    seqs = [m["seq"] for m in msgs]
                    self.assertEqual(seqs, list(range(1, len(seqs) + 1)), conv)
                    for m in msgs:
                        found[(conv, m["seq"])] = (m["msg_id"], m["body"], m["from"])
                if ws_s is not ws:
                    await ws_s.close()
            missing = [k for k in acked if k not in found]
            self.assertEqual(missing, [])
            for key, (msg_id, body, user, _) in acked.items():
                self.assertEqual(found[key], (msg_id, body, user), key)
            # A retried send after the restart is recognised: the first ack again.
            (conv, seq), (msg_id, _, user, cid) = next(iter(acked.items()))
            ws_u = await connect(srv.port, user)
            to = [u for u in conv[3:].split(":") if u != user][0]
            await ws_u.send(json.dumps({"type": "send", "id": cid, "to": to, "body": "again"}))
            ack = await recv_type(ws_u, ("ack",))
            self.assertEqual((ack["seq"], ack["msg_id"], ack.get("duplicate")),
                             (seq, msg_id, True))
            await ws_u.close()
            await ws.close()
        self.run_async(check())
        log = self.finish(srv)
        self.assertIn("history: replayed", log)

    def test_corrupt_tail_is_truncated_and_the_rest_survives(self):
        srv = self.start(fsync="never")

        async def send():
            a = await connect(srv.port, "alice")
            acks = await send_all(a, "bob", [f"keep {i}" for i in range(10)], "t")
            await a.close()
            return acks
        acks = self.run_async(send())
        self.finish(srv)  # a clean stop writes everything, even under fsync = never
        sizes = {}
        for name in self.logs():
            path = os.path.join(self.data_dir, name)
            sizes[name] = os.path.getsize(path)
            with open(path, "ab") as f:
                f.write(b"\x2a\x00\x00\x00garbage after the last record")
        srv = self.start(fsync="never")

        async def check():
            a = await connect(srv.port, "alice")
            got, _ = await sync_all(a, {dm("alice", "bob"): 0})
            self.assertEqual([m["body"] for m in got[dm("alice", "bob")]],
                             [f"keep {i}" for i in range(10)])
            self.assertEqual([m["msg_id"] for m in got[dm("alice", "bob")]],
                             [acks[f"t{i}"]["msg_id"] for i in range(10)])
            # Sequencing goes on after the surviving records.
            ack = (await send_all(a, "bob", ["after"], "u"))["u0"]
            self.assertEqual(ack["seq"], 11)
            await a.close()
        self.run_async(check())
        log = self.finish(srv)
        for name, size in sizes.items():
            self.assertRegex(log, rf"WARN .*history: .*/{name}: \w+ record at offset {size};")

    def test_everysec_and_never_keep_a_consistent_prefix(self):
        for policy in ("everysec", "never"):
            with self.subTest(fsync=policy):
                shutil.rmtree(self.data_dir, ignore_errors=True)
                srv = self.start(fsync=policy)

                async def send():
                    a = await connect(srv.port, "alice")
                    acks = await send_all(a, "bob", [f"{policy} {i}" for i in range(60)], "e")
                    await a.close()
                    return acks
                acks = self.run_async(send())
                time.sleep(0.2)
                self.finish(srv, kill=True)
                srv = self.start(fsync=policy)

                async def check():
                    a = await connect(srv.port, "alice")
                    got, _ = await sync_all(a, {dm("alice", "bob"): 0})
                    msgs = got[dm("alice", "bob")]
                    # No loss is asserted; what survived is a correct prefix.
                    for i, m in enumerate(msgs):
                        self.assertEqual((m["seq"], m["body"], m["msg_id"]),
                                         (i + 1, f"{policy} {i}", acks[f"e{i}"]["msg_id"]))
                    ack = (await send_all(a, "bob", ["next"], "f"))["f0"]
                    self.assertEqual(ack["seq"], len(msgs) + 1)
                    await a.close()
                self.run_async(check())
                self.finish(srv)

    def test_everysec_syncs_the_tail_of_a_burst_within_a_second(self):
        srv = self.start(fsync="everysec", workers=1)

        def fsyncs():
            with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=5) as r:
                text = r.read().decode()
            return int(re.search(r"^switchboard_store_fsyncs_total (\d+)", text, re.M).group(1))

        async def burst(n, tag):
            a = await connect(srv.port, "alice")
            await send_all(a, "bob", [f"{tag}{i}" for i in range(n)], tag)
            await a.close()
        # The first batch is synced at once (the last sync is "long ago"); the second, right
        # behind it, is due only a second later, and nothing follows it: the timer syncs it.
        self.run_async(burst(1, "x"))
        time.sleep(0.1)
        before = fsyncs()
        self.run_async(burst(5, "y"))
        deadline = time.monotonic() + 2.0
        while fsyncs() == before and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreater(fsyncs(), before, "the tail of the burst was not synced within 2 s")
        self.finish(srv)

    # -- bounds, compaction, resharding --------------------------------------------------------

    def test_history_max_messages_bounds_memory_and_disk(self):
        srv = self.start(history_max_messages=5)

        async def send():
            a = await connect(srv.port, "alice")
            await send_all(a, "bob", [f"b{i}" for i in range(12)], "h")
            got, pages = await sync_all(a, {dm("alice", "bob"): 0})
            self.assertEqual([m["seq"] for m in got[dm("alice", "bob")]], [8, 9, 10, 11, 12])
            self.assertTrue(pages[0]["truncated"])
            # From inside the window nothing is missing.
            page = (await sync_pages(a, {dm("alice", "bob"): 7}))[dm("alice", "bob")]
            self.assertNotIn("truncated", page)
            # The de-duplication window is the history: h0 left it, h11 did not.
            await a.send(json.dumps({"type": "send", "id": "h11", "to": "bob", "body": "x"}))
            self.assertTrue((await recv_type(a, ("ack",))).get("duplicate"))
            await a.send(json.dumps({"type": "send", "id": "h0", "to": "bob", "body": "x"}))
            self.assertEqual((await recv_type(a, ("ack",)))["seq"], 13)
            await a.close()
        self.run_async(send())
        self.finish(srv)
        srv = self.start(history_max_messages=3)

        async def check():
            a = await connect(srv.port, "alice")
            got, pages = await sync_all(a, {dm("alice", "bob"): 0})
            self.assertEqual([m["seq"] for m in got[dm("alice", "bob")]], [11, 12, 13])
            self.assertTrue(pages[0]["truncated"])
            await a.close()
        self.run_async(check())
        self.finish(srv)
        total = sum(os.path.getsize(os.path.join(self.data_dir, n)) for n in self.logs())
        self.assertLess(total, 1000)  # three small records and a state record

    def test_history_max_age(self):
        srv = self.start(history_max_age_s=1)

        async def go():
            a = await connect(srv.port, "alice")
            await send_all(a, "bob", ["old0", "old1"], "o")
            await asyncio.sleep(2.1)
            await send_all(a, "bob", ["new"], "n")
            got, pages = await sync_all(a, {dm("alice", "bob"): 0})
            self.assertEqual([m["body"] for m in got[dm("alice", "bob")]], ["new"])
            self.assertTrue(pages[0]["truncated"])
            await a.close()
        self.run_async(go())
        self.finish(srv)
        time.sleep(1.1)
        srv = self.start(history_max_age_s=1)

        async def check():
            a = await connect(srv.port, "alice")
            page = (await sync_pages(a, {dm("alice", "bob"): 0}))[dm("alice", "bob")]
            self.assertEqual((page["messages"], page["last_seq"], page["truncated"]),
                             ([], 3, True))
            self.assertEqual((await send_all(a, "bob", ["later"], "l"))["l0"]["seq"], 4)
            await a.close()
        self.run_async(check())
        self.finish(srv)

    def test_compaction_at_run_time(self):
        srv = self.start(history_max_messages=4, compact_min_size="16K", fsync="always")
        body = "x" * 300

        async def go():
            clients = {u: await connect(srv.port, u) for u in ("alice", "bob", "carol")}
            for r in range(10):
                await asyncio.gather(
                    send_all(clients["alice"], "bob", [body] * 20, f"a{r}-"),
                    send_all(clients["bob"], "carol", [body] * 20, f"b{r}-"),
                    send_all(clients["carol"], "alice", [body] * 20, f"c{r}-"))
            for ws in clients.values():
                await ws.close()
        self.run_async(go())
        assert sbtest.wait_until(lambda: "history: compacted" in srv.read_log(), 5)
        sizes = [os.path.getsize(os.path.join(self.data_dir, n)) for n in self.logs()]
        self.assertLess(max(sizes), 64 << 10)
        log = self.finish(srv)
        self.assertIn("history: compacted", log)
        srv = self.start(history_max_messages=4)

        async def check():
            a = await connect(srv.port, "alice")
            got, _ = await sync_all(a, {dm("alice", "bob"): 0, dm("alice", "carol"): 0})
            for conv in got:
                self.assertEqual([m["seq"] for m in got[conv]], [197, 198, 199, 200])
            await a.close()
        self.run_async(check())
        self.finish(srv)

    def test_worker_count_change(self):
        srv = self.start(workers=3)
        users = [f"user{i}" for i in range(8)]

        async def send():
            acks = {}
            for i, u in enumerate(users):
                ws = await connect(srv.port, u)
                to = users[(i + 1) % len(users)]
                for k, ack in (await send_all(ws, to, [f"{u}->{to} {j}" for j in range(5)],
                                              "w")).items():
                    acks[(ack["conv"], ack["seq"])] = ack["msg_id"]
                await ws.close()
            return acks
        acks = self.run_async(send())
        self.finish(srv)
        self.assertEqual(self.logs(), ["w0.log", "w1.log", "w2.log"])
        for workers in (2, 5):
            srv = self.start(workers=workers)

            async def check():
                found = {}
                for i, u in enumerate(users):
                    ws = await connect(srv.port, u)
                    to = users[(i + 1) % len(users)]
                    got, _ = await sync_all(ws, {dm(u, to): 0})
                    for m in got[dm(u, to)]:
                        found[(m["conv"], m["seq"])] = m["msg_id"]
                    await ws.close()
                self.assertEqual(found, acks)
            self.run_async(check())
            self.finish(srv)
            self.assertEqual(self.logs(), [f"w{k}.log" for k in range(workers)])


if __name__ == "__main__":
    unittest.main()
