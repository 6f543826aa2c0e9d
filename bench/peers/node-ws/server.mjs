// A WebSocket echo server on Node's `ws`, the peer of switchboard's echo benchmark.
//
//     node server.mjs PORT
//
// Listens on 127.0.0.1:PORT, answers every message on any path with the same bytes and type,
// and exits on SIGINT or SIGTERM. It prints "listening on 127.0.0.1:PORT" once it accepts.
// Compression is off (as on the other servers) and the optional native add-ons are not
// installed, so this is `ws` as `npm install ws` gives it.
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node server.mjs PORT');
  process.exit(2);
}

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: false,
  clientTracking: false, // nothing here needs the set of clients
  maxPayload: 4 * 1024 * 1024,
});

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => ws.terminate());
});

wss.on('listening', () => {
  console.log(`listening on 127.0.0.1:${port}`);
});

wss.on('error', (err) => {
  console.error(`node-ws: ${err.message}`);
  process.exit(1);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
