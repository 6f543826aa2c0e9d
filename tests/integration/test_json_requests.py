"""The JSON requests of /ws as clients have always been answered: every malformed request gets
bad_request with the same message (and the request's id when it could be read), and requests at
the edge of a limit pass. The server's JSON reading moved onto proto/jsonops (the operation
set); this holds it to what it answered before. Only the decoding is checked here: what the
server does with a valid request is the other tests' business."""

import asyncio
import json
import subprocess

import websockets

import sbtest


def mint(sub):
    out = subprocess.run([sbtest.SB_BIN, "token", "--sub", sub], check=True, capture_output=True,
                         text=True, timeout=10)
    return out.stdout.strip()


def big(n):
    return "x" * n


def users(n):
    return ",".join('"u%d"' % i for i in range(n))


# (request, the bad_request message or None when it is not refused as malformed, the answer's id)
CASES = [
    ('[]',
     'expected a JSON object', None),
    ('{"type":"send"',
     'expected a JSON object', None),
    ('"send"',
     'expected a JSON object', None),
    ('{}',
     'missing "type"', None),
    ('{"type":7,"id":"a"}',
     'missing "type"', None),
    ('{"type":"","id":"a"}',
     'missing "type"', None),
    ('{"type":"a_type_name_of_24_bytes_","id":"a"}',
     'missing "type"', None),
    ('{"type":"a_type_name_of_23_bytes","id":"a"}',
     'unknown operation type', 'a'),
    ('{"type":"nope"}',
     'missing "id" (1-64 bytes)', None),
    ('{"type":"nope","id":"a"}',
     'unknown operation type', 'a'),
    ('{"type":"ack","id":"a"}',
     'unknown operation type', 'a'),
    ('{"type":"hello","id":"a"}',
     'unknown operation type', 'a'),
    ('{"type":"conv_list"}',
     'missing "id" (1-64 bytes)', None),
    ('{"type":"conv_list","id":""}',
     'missing "id" (1-64 bytes)', None),
    ('{"type":"conv_list","id":5}',
     'missing "id" (1-64 bytes)', None),
    ('{"type":"conv_list","id":"%s"}' % big(65),
     'missing "id" (1-64 bytes)', None),
    ('{"type":"conv_list","id":"%s"}' % big(64), None, None),
    ('{"type":"presence_sub"}',
     'missing "id" (1-64 bytes)', None),
    ('{"type":"send","id":"a","body":"x"}',
     'needs "conv" (or "to" for a direct conversation)', 'a'),
    ('{"type":"send","id":"a","conv":7,"body":"x"}',
     'needs "conv" (or "to" for a direct conversation)', 'a'),
    ('{"type":"send","id":"a","to":"b"}',
     'send needs a string "body"', 'a'),
    ('{"type":"send","id":"a","to":"b","body":{}}',
     'send needs a string "body"', 'a'),
    ('{"type":"send","id":"a","to":"%s","body":"x"}' % big(65),
     'needs "conv" (or "to" for a direct conversation)', 'a'),
    ('{"type":"send","id":"a","to":"%s","conv":"dm:alice:bob","body":"x"}' % big(65), None, None),
    ('{"type":"send","id":"a","to":"","conv":"dm:alice:bob","body":"x"}', None, None),
    ('{"type":"send","id":"a","conv":"%s","body":"x"}' % big(133),
     'needs "conv" (or "to" for a direct conversation)', 'a'),
    ('{"type":"receipt","conv":"g:1","kind":"read"}',
     'receipt needs "seq" (an integer >= 1)', None),
    ('{"type":"receipt","id":"r","conv":"g:1","seq":0,"kind":"read"}',
     'receipt needs "seq" (an integer >= 1)', 'r'),
    ('{"type":"receipt","conv":"g:1","seq":1.5,"kind":"read"}',
     'receipt needs "seq" (an integer >= 1)', None),
    ('{"type":"receipt","conv":"g:1","seq":"1","kind":"read"}',
     'receipt needs "seq" (an integer >= 1)', None),
    ('{"type":"receipt","conv":"g:1","seq":1}',
     'receipt needs "kind": "delivered" or "read"', None),
    ('{"type":"receipt","id":"r","conv":"g:1","seq":1,"kind":"seen"}',
     'receipt needs "kind": "delivered" or "read"', 'r'),
    ('{"type":"receipt","id":"r","conv":"g:1","seq":1,"kind":"re\\u0061d"}', None, None),
    ('{"type":"typing"}',
     'needs "conv" (or "to" for a direct conversation)', None),
    ('{"type":"typing","id":"t"}',
     'needs "conv" (or "to" for a direct conversation)', 't'),
    ('{"type":"typing","id":5}',
     'needs "conv" (or "to" for a direct conversation)', None),
    ('{"type":"presence_sub","id":"p"}',
     '"users" must be a non-empty array of user ids', 'p'),
    ('{"type":"presence_sub","id":"p","users":[]}',
     '"users" must be a non-empty array of user ids', 'p'),
    ('{"type":"presence_unsub","id":"p","users":"bob"}',
     '"users" must be a non-empty array of user ids', 'p'),
    ('{"type":"presence_sub","id":"p","users":["a",""]}',
     '"users" holds an invalid user id', 'p'),
    ('{"type":"presence_sub","id":"p","users":["a",1]}',
     '"users" holds an invalid user id', 'p'),
    ('{"type":"presence_sub","id":"p","users":["%s"]}' % big(65),
     '"users" holds an invalid user id', 'p'),
    ('{"type":"presence_sub","id":"p","users":["bob","bob"]}', None, None),
    ('{"type":"presence_sub","id":"p","users":[%s]}' % users(1001),
     'at most 1000 users per request', 'p'),
    ('{"type":"sync","id":"s"}',
     'sync needs "convs": {conversation: last_seq, ...} or "since": cursor', 's'),
    ('{"type":"sync","id":"s","convs":{}}',
     'sync needs "convs": {conversation: last_seq, ...} or "since": cursor', 's'),
    ('{"type":"sync","id":"s","convs":["a"]}',
     'sync needs "convs": {conversation: last_seq, ...} or "since": cursor', 's'),
    ('{"type":"sync","id":"s","convs":{"a":-1}}',
     '"convs" maps conversation ids to last_seq (an integer >= 0)', 's'),
    ('{"type":"sync","id":"s","convs":{"a":"1"}}',
     '"convs" maps conversation ids to last_seq (an integer >= 0)', 's'),
    ('{"type":"sync","id":"s","convs":{"":1}}',
     '"convs" maps conversation ids to last_seq (an integer >= 0)', 's'),
    ('{"type":"sync","id":"s","convs":{"a":9223372036854775808}}',
     '"convs" maps conversation ids to last_seq (an integer >= 0)', 's'),
    ('{"type":"sync","id":"s","convs":{"%s":1}}' % big(133),
     '"convs" maps conversation ids to last_seq (an integer >= 0)', 's'),
    ('{"type":"sync","id":"s","convs":{"a":1},"limit":0}',
     '"limit" must be a positive integer', 's'),
    ('{"type":"sync","id":"s","convs":{"a":1},"limit":"5"}',
     '"limit" must be a positive integer', 's'),
    ('{"type":"sync","id":"s","convs":{"a":-1},"limit":0}',
     '"limit" must be a positive integer', 's'),
    ('{"type":"sync","id":"s","since":"0","convs":{"a":1}}',
     'sync takes "convs" or "since", not both', 's'),
    ('{"type":"sync","id":"s","since":0}',
     '"since" must be a cursor from sync_done (or "0")', 's'),
    ('{"type":"sync","id":"s","since":""}',
     '"since" must be a cursor from sync_done (or "0")', 's'),
    ('{"type":"sync","id":"s","since":"12a"}',
     '"since" must be a cursor from sync_done (or "0")', 's'),
    ('{"type":"sync","id":"s","since":"-0"}',
     '"since" must be a cursor from sync_done (or "0")', 's'),
    ('{"type":"sync","id":"s","since":"18446744073709551616"}',
     '"since" must be a cursor from sync_done (or "0")', 's'),
    ('{"type":"sync","id":"s","since":"18446744073709551615"}', None, None),
    ('{"type":"sync","id":"s","since":"000000000000000000000001"}',
     '"since" must be a cursor from sync_done (or "0")', 's'),
    ('{"type":"sync","id":"s","since":"00000000000000000000001"}', None, None),
    ('{"type":"sync","id":"s","since":"1","limit":-3}',
     '"limit" must be a positive integer', 's'),
    ('{"type":"sync","id":"s","since":"1","limit":1.0}',
     '"limit" must be a positive integer', 's'),
    ('{"type":"sync","id":"s","convs":{"a":1},"limit":1e2}',
     '"limit" must be a positive integer', 's'),
    ('{"type":"conv_create","id":"c","name":5}',
     '"name" must be a string of at most 128 bytes', 'c'),
    ('{"type":"conv_create","id":"c","name":"%s"}' % big(129),
     '"name" must be a string of at most 128 bytes', 'c'),
    ('{"type":"conv_create","id":"c","members":{}}',
     '"members" must be an array of 1-1000 user ids', 'c'),
    ('{"type":"conv_create","id":"c","members":[null]}',
     '"members" holds an invalid user id', 'c'),
    ('{"type":"conv_create","id":"c","members":[%s]}' % users(1001),
     '"members" must be an array of 1-1000 user ids', 'c'),
    ('{"type":"conv_add","id":"c","users":["a"]}',
     'needs "conv"', 'c'),
    ('{"type":"conv_add","id":"c","conv":"","users":["a"]}',
     'needs "conv"', 'c'),
    ('{"type":"conv_add","id":"c","conv":"g:1"}',
     '"users" must be an array of 1-1000 user ids', 'c'),
    ('{"type":"conv_remove","id":"c","conv":"g:1","users":[]}',
     '"users" must be an array of 1-1000 user ids', 'c'),
    ('{"type":"conv_promote","id":"c","conv":"g:1","users":[true]}',
     '"users" holds an invalid user id', 'c'),
    ('{"type":"conv_leave","id":"c"}',
     'needs "conv"', 'c'),
    ('{"type":"conv_rename","id":"c","conv":"g:1","name":[]}',
     '"name" must be a string of at most 128 bytes', 'c'),
    ('{"type":"conv_rename","id":"c","conv":"g:1"}', None, None),
    ('{"type":"conv_get","id":"c","conv":"%s"}' % big(133),
     'needs "conv"', 'c'),
    ('{"type":"conv_get","id":"c","conv":"g:1"}', None, None),
    ('{"type":"devices","id":"d"}', None, None),
    ('{"type":"conv_list","id":"l"}', None, None),
    ('{"type":"conv_add","id":"c","conv":"g:1","users":[%s]}' % users(1001),
     '"users" must be an array of 1-1000 user ids', 'c'),
    ('{"type":"conv_add","id":"c","conv":"g:1","x":[%s]}' % ",".join('1' for i in range(2100)),
     'too many fields (lists hold at most 1,000 items)', None),
    ('{"type":"conv_list","id":"c","x":[[[[[[[[1]]]]]]]]}',
     'expected a JSON object', None),
    ('{"type":"conv_list","id":"c","x":[[[[[[[1]]]]]]]}', None, None),
    ('{"type":"sync","id":"s","convs":{%s}}' % ",".join('"g:%d":1' % i for i in range(101)),
     'a sync names at most 100 conversations', 's'),
]


class JsonRequestsTest(sbtest.ServerTestCase):
    server_settings = {"workers": 2, "rate_messages": 100000, "rate_bytes": "1G"}

    def test_malformed_requests_get_the_messages_they_always_got(self):
        asyncio.run(asyncio.wait_for(self.check_cases(), 120))

    async def check_cases(self):
        url = f"ws://127.0.0.1:{self.server.port}/ws"
        ws = await websockets.connect(url, extra_headers={"Authorization": "Bearer " + mint("alice")},
                                      max_size=None)
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
        self.assertEqual(welcome["type"], "welcome")
        for n, (request, message, rid) in enumerate(CASES):
            # Refusals are answered as the request is read; a request behind it marks the end
            # (answers to valid requests may come later, and are told apart by id).
            sentinel = f"end-{n}"
            await ws.send(request)
            await ws.send(json.dumps({"type": "conv_list", "id": sentinel}))
            refusals = []
            while True:
                doc = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if doc.get("id") == sentinel:
                    break
                if doc.get("type") == "error" and doc.get("code") == "bad_request":
                    refusals.append(doc)
            with self.subTest(request=request[:100]):
                if message is None:
                    self.assertEqual(refusals, [])
                else:
                    self.assertEqual(len(refusals), 1, refusals)
                    self.assertEqual(refusals[0]["message"], message)
                    self.assertEqual(refusals[0].get("id"), rid)
        await ws.close()
