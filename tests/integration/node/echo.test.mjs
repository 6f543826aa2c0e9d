// Echo over /echo with the Node `ws` client: sizes, fragments, ping/pong, close codes and
// 50 concurrent clients. Runs as `node --test` with SB_BIN pointing at the server binary.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';

const SB_BIN = process.env.SB_BIN ?? '';
const HAVE_BIN = SB_BIN !== '' && fs.existsSync(SB_BIN);
const SIZES = [0, 125, 126, 65535, 65536, 1048576];
const STEP_MS = 10000; // bound on every single await
const BAD_LOG = [/ ERROR /, /ERROR: AddressSanitizer/, /runtime error:/, /LeakSanitizer/];

function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Server {
  async start(settings = {}) {
    this.logPath = path.join(os.tmpdir(), `sb-node-${process.pid}-${Date.now()}.log`);
    const fd = fs.openSync(this.logPath, 'w');
    // History goes to a directory of this server's own (removed at stop), never a shared one.
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-node-data-'));
    const args = ['serve', '--listen', '127.0.0.1:0', '--workers', '2', '--data-dir', this.dataDir];
    for (const [k, v] of Object.entries(settings)) {
      args.push(`--${k.replaceAll('_', '-')}`, String(v));
    }
    this.proc = spawn(SB_BIN, args, { stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, sig) => resolve({ code, sig }));
    });
    this.killOnExit = () => this.proc.kill('SIGKILL');
    process.on('exit', this.killOnExit);
    const deadline = Date.now() + 10000;
    while (Date.now() < deadline) {
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(this.log());
      if (m) {
        this.port = Number(m[1]);
        return this;
      }
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) break;
      await sleep(20);
    }
    this.proc.kill('SIGKILL');
    throw new Error(`server did not report its port within 10 s:\n${this.log().slice(-4000)}`);
  }

  log() {
    try {
      return fs.readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  // SIGTERM, SIGKILL after 15 s; returns { code, sig }.
  async stop() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGTERM');
    let result;
    try {
      result = await withTimeout(this.exited, 15000, 'server exit after SIGTERM');
    } catch {
      this.proc.kill('SIGKILL');
      result = await this.exited;
    }
    process.removeListener('exit', this.killOnExit);
    fs.rmSync(this.dataDir, { recursive: true, force: true });
    return result;
  }

  badLines() {
    return this.log().split('\n').filter((l) => BAD_LOG.some((re) => re.test(l)));
  }

  url(p = '/echo') {
    return `ws://127.0.0.1:${this.port}${p}`;
  }
}

function open(url) {
  const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: STEP_MS });
  const q = []; // received messages not yet taken
  const waiters = [];
  ws.on('message', (data, isBinary) => {
    const m = { data, isBinary };
    if (waiters.length) waiters.shift()(m);
    else q.push(m);
  });
  ws.next = () =>
    withTimeout(
      new Promise((resolve) => (q.length ? resolve(q.shift()) : waiters.push(resolve))),
      STEP_MS,
      'echo',
    );
  return withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    }),
    STEP_MS,
    'connect',
  );
}

function closed(ws) {
  return withTimeout(
    new Promise((resolve) => {
      ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() }));
    }),
    STEP_MS,
    'close',
  );
}

function sendP(ws, data, opts = {}) {
  return withTimeout(
    new Promise((resolve, reject) => ws.send(data, opts, (err) => (err ? reject(err) : resolve()))),
    STEP_MS,
    'send',
  );
}

function randomText(n) {
  // Exactly n bytes of UTF-8 mixing 1- to 4-byte characters.
  const pools = ['abcdefghijklmnopqrstuvwxyz0123456789 ', 'éßøΩж', '€中ह', '😀🚀𝄞'];
  let s = '';
  let size = 0;
  while (size < n) {
    const w = 1 + Math.floor(Math.random() * Math.min(4, n - size));
    const pool = [...pools[w - 1]];
    s += pool[Math.floor(Math.random() * pool.length)];
    size += w;
  }
  return s;
}

function getJson(port, p) {
  return withTimeout(
    new Promise((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
        })
        .on('error', reject);
    }),
    STEP_MS,
    `GET ${p}`,
  );
}

describe('switchboard echo with ws', { skip: HAVE_BIN ? false : 'SB_BIN not set' }, () => {
  const srv = new Server();

  before(async () => {
    await srv.start();
  });

  after(async () => {
    const { code, sig } = await srv.stop();
    const bad = srv.badLines();
    const ok = code === 0 && bad.length === 0;
    if (ok) fs.rmSync(srv.logPath, { force: true });
    else process.stderr.write(`--- server log (${srv.logPath}) ---\n${srv.log().slice(-6000)}\n`);
    assert.deepEqual(bad, [], 'server log has error/sanitizer lines');
    assert.equal(code, 0, `server exit status on SIGTERM (signal ${sig})`);
  });

  it('serves /api/health', { timeout: 20000 }, async () => {
    const r = await getJson(srv.port, '/api/health');
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'], /^application\/json/);
    const body = JSON.parse(r.body);
    assert.equal(body.status, 'healthy');
    assert.equal(body.workers, 2);
    assert.equal(typeof body.connections, 'number');
  });

  it('echoes text of every size', { timeout: 30000 }, async () => {
    const ws = await open(srv.url());
    for (const n of SIZES) {
      const msg = randomText(n);
      await sendP(ws, msg);
      const { data, isBinary } = await ws.next();
      assert.equal(isBinary, false, `text of ${n} bytes came back binary`);
      assert.equal(data.length, n);
      assert.ok(data.toString('utf8') === msg, `text of ${n} bytes differs`);
    }
    ws.close(1000);
    assert.equal((await closed(ws)).code, 1000);
  });

  it('echoes binary of every size', { timeout: 30000 }, async () => {
    const ws = await open(srv.url());
    for (const n of SIZES) {
      const msg = randomBytes(n);
      await sendP(ws, msg);
      const { data, isBinary } = await ws.next();
      assert.equal(isBinary, true, `binary of ${n} bytes came back as text`);
      assert.ok(Buffer.compare(data, msg) === 0, `binary of ${n} bytes differs`);
    }
    ws.close();
    await closed(ws);
  });

  it('echoes a fragmented text message whole', { timeout: 20000 }, async () => {
    const ws = await open(srv.url());
    const euro = Buffer.from('€');
    // The euro sign is split across fragments on purpose.
    const more = { binary: false, fin: false };
    await sendP(ws, Buffer.concat([Buffer.from('price: '), euro.subarray(0, 1)]), more);
    await sendP(ws, euro.subarray(1, 2), more);
    const last = { binary: false, fin: true };
    await sendP(ws, Buffer.concat([euro.subarray(2), Buffer.from(' 42')]), last);
    const { data, isBinary } = await ws.next();
    assert.equal(isBinary, false);
    assert.equal(data.toString('utf8'), 'price: € 42');
    ws.close();
    await closed(ws);
  });

  it('echoes a fragmented binary message whole', { timeout: 20000 }, async () => {
    const ws = await open(srv.url());
    const parts = [randomBytes(1), randomBytes(0), randomBytes(70000), randomBytes(125)];
    for (let i = 0; i < parts.length; i++) {
      await sendP(ws, parts[i], { binary: true, fin: i === parts.length - 1 });
    }
    const { data, isBinary } = await ws.next();
    assert.equal(isBinary, true);
    assert.ok(Buffer.compare(data, Buffer.concat(parts)) === 0, 'fragmented binary differs');
    ws.close();
    await closed(ws);
  });

  it('answers ping with the same payload', { timeout: 20000 }, async () => {
    const ws = await open(srv.url());
    for (const payload of [Buffer.alloc(0), Buffer.from('hello'), randomBytes(125)]) {
      const pong = withTimeout(new Promise((resolve) => ws.once('pong', resolve)), STEP_MS, 'pong');
      ws.ping(payload);
      assert.ok(Buffer.compare(await pong, payload) === 0, 'pong payload differs');
    }
    await sendP(ws, 'after ping');
    assert.equal((await ws.next()).data.toString(), 'after ping');
    ws.close();
    await closed(ws);
  });

  it('echoes close codes', { timeout: 30000 }, async () => {
    for (const code of [1000, 1001, 3000, 4000, 4999]) {
      const ws = await open(srv.url());
      ws.close(code, 'bye');
      const c = await closed(ws);
      assert.equal(c.code, code, `sent close ${code}`);
    }
  });

  it('gets close 1002 for a protocol error', { timeout: 20000 }, async () => {
    const ws = await open(srv.url());
    const done = closed(ws);
    // An unmasked frame from a client is a protocol error; write it under ws's feet.
    ws._socket.write(Buffer.from([0x81, 0x02, 0x68, 0x69]));
    assert.equal((await done).code, 1002);
  });

  it('serves 50 concurrent clients', { timeout: 60000 }, async () => {
    const clients = await Promise.all(Array.from({ length: 50 }, () => open(srv.url())));
    const r = JSON.parse((await getJson(srv.port, '/api/health')).body);
    assert.ok(r.connections >= 50, `health connections ${r.connections} with 50 open`);
    await Promise.all(
      clients.map(async (ws, i) => {
        for (let round = 0; round < 20; round++) {
          const n = [0, 1, 125, 126, 4096, 20000][Math.floor(Math.random() * 6)];
          const binary = Math.random() < 0.5;
          const msg = binary ? randomBytes(n) : randomText(n);
          await sendP(ws, msg);
          const { data, isBinary } = await ws.next();
          assert.equal(isBinary, binary, `client ${i} round ${round}: type`);
          const same = binary ? Buffer.compare(data, msg) === 0 : data.toString('utf8') === msg;
          assert.ok(same, `client ${i} round ${round}: wrong echo of ${n} bytes`);
        }
        ws.close(1000);
        assert.equal((await closed(ws)).code, 1000);
      }),
    );
  });
});
