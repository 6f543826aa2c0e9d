// wss:// with the Node `ws` client, certificates verified against the CA of tools/dev-cert:
// echo of several sizes, 20 concurrent clients, a client that does not trust the CA and one that
// asks for the wrong name. Runs as `node --test` with SB_BIN pointing at the server binary.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const SB_BIN = process.env.SB_BIN ?? '';
const HAVE_BIN = SB_BIN !== '' && fs.existsSync(SB_BIN);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
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
  async start(certDir) {
    this.logPath = path.join(os.tmpdir(), `sb-node-tls-${process.pid}-${Date.now()}.log`);
    const fd = fs.openSync(this.logPath, 'w');
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-node-data-'));
    const args = ['serve', '--listen', '127.0.0.1:0', '--workers', '2', '--data-dir', this.dataDir,
      '--tls-listen', '127.0.0.1:0', '--tls-cert', path.join(certDir, 'server.pem'),
      '--tls-key', path.join(certDir, 'server.key')];
    this.proc = spawn(SB_BIN, args, { stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, sig) => resolve({ code, sig }));
    });
    this.killOnExit = () => this.proc.kill('SIGKILL');
    process.on('exit', this.killOnExit);
    const deadline = Date.now() + 10000;
    while (Date.now() < deadline) {
      const m = /TLS on 127\.0\.0\.1:(\d+)/.exec(this.log());
      if (m) {
        this.port = Number(m[1]);
        return this;
      }
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) break;
      await sleep(20);
    }
    this.proc.kill('SIGKILL');
    throw new Error(`server did not report its TLS port within 10 s:\n${this.log().slice(-4000)}`);
  }

  log() {
    try {
      return fs.readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }

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
}

function open(url, opts) {
  const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: STEP_MS, ...opts });
  const q = [];
  const waiters = [];
  ws.on('message', (data) => {
    if (waiters.length) waiters.shift()(data);
    else q.push(data);
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

describe('wss with Node ws', { skip: !HAVE_BIN && 'SB_BIN not set' }, () => {
  let srv;
  let certDir;
  let ca;

  before(async () => {
    certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-node-cert-'));
    execFileSync(path.join(ROOT, 'tools', 'dev-cert'), [certDir], { stdio: 'ignore' });
    ca = fs.readFileSync(path.join(certDir, 'ca.pem'));
    srv = await new Server().start(certDir);
  });

  after(async () => {
    const { code } = await srv.stop();
    const bad = srv.badLines();
    if (code === 0 && bad.length === 0) fs.rmSync(srv.logPath, { force: true });
    fs.rmSync(certDir, { recursive: true, force: true });
    assert.deepEqual(bad, [], `server log has error lines (${srv.logPath})`);
    assert.equal(code, 0, 'server exit status after SIGTERM');
  });

  it('echoes binary messages of several sizes', async () => {
    const ws = await open(`wss://localhost:${srv.port}/echo`, { ca });
    for (const n of [0, 1, 16384, 65536, 1048576]) {
      const msg = randomBytes(n);
      ws.send(msg);
      assert.ok(msg.equals(await ws.next()), `size ${n}`);
    }
    ws.close();
  });

  it('serves 20 concurrent clients', async () => {
    const clients = await Promise.all(
      Array.from({ length: 20 }, () => open(`wss://127.0.0.1:${srv.port}/echo`, { ca })),
    );
    await Promise.all(
      clients.map(async (ws, i) => {
        for (let k = 0; k < 20; k++) ws.send(`c${i}-${k}`);
        for (let k = 0; k < 20; k++) assert.equal((await ws.next()).toString(), `c${i}-${k}`);
        ws.close();
      }),
    );
  });

  it('is refused by a client that does not trust the CA or wants another name', async () => {
    await assert.rejects(open(`wss://localhost:${srv.port}/echo`), (e) =>
      /SELF_SIGNED_CERT_IN_CHAIN|self.signed|unable to verify/i.test(`${e.code} ${e.message}`),
    );
    await assert.rejects(
      open(`wss://localhost:${srv.port}/echo`, { ca, servername: 'example.com' }),
      (e) => /ERR_TLS_CERT_ALTNAME_INVALID|altnames/i.test(`${e.code} ${e.message}`),
    );
  });
});
