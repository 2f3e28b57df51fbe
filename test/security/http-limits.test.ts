/**
 * Issue 12 item 7: HTTP server limits. The gateway app listens on loopback in this process (so the
 * server's side of each connection can be measured), the VM is simulated.
 *  - 50 slow-header clients (one header byte per second) are cut, with test-sized timeouts and with
 *    the shipped defaults (within 30 s), while a healthy client keeps getting 200s;
 *  - a 50 MB body sent with a bad token gets 401 and the connection closes before the body is
 *    read (bytes the server read, bytes the client got to send); the same for a 413;
 *  - a slow but progressing download or upload outlives server.requestTimeoutMs;
 *  - a stalled upload (or download) is cut after files.noProgressTimeoutMs and its guest handle closed.
 */
import { execFile } from 'node:child_process';
import net from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { listen, makeApp, type TestAppOptions } from '../helpers/app.js';
import { simFleet, sleep, waitFor, type SimFleet } from '../integration/freeze-fixture.js';

let fleet: SimFleet | undefined;
let app: FastifyInstance | undefined;

afterEach(async () => {
  await app?.close();
  app = undefined;
  await fleet?.close();
  fleet = undefined;
});

const TOKEN = 'limits-token-0123456789';

interface Served {
  url: string;
  port: number;
  /** bytes the server read from each connection, recorded when it closed */
  closed: number[];
}

async function serve(opts: TestAppOptions): Promise<Served> {
  fleet = await simFleet(['vm1']);
  app = await makeApp({ vms: [{ name: 'vm1', endpoint: fleet.vm.vm1.endpoint }], ...opts });
  const closed: number[] = [];
  app.server.on('connection', (s: net.Socket) => s.once('close', () => closed.push(s.bytesRead)));
  const url = await listen(app);
  return { url, port: Number(new URL(url).port), closed };
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

/** A client that sends its request headers one byte per second; resolves when the server cuts it. */
async function slowHeaders(port: number): Promise<{ closedAfterMs: number; sent: number }> {
  const s = await connect(port);
  const t0 = Date.now();
  const text = 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ' + 'a'.repeat(200) + '\r\n\r\n';
  let sent = 0;
  return new Promise((resolve) => {
    const tick = setInterval(() => {
      if (s.destroyed || sent >= text.length) return;
      s.write(text[sent++]);
    }, 1_000);
    s.write(text[sent++]);
    s.on('error', () => undefined);
    s.once('close', () => {
      clearInterval(tick);
      resolve({ closedAfterMs: Date.now() - t0, sent });
    });
  });
}

/** GET /healthz every 100 ms until `stop` is set; counts the answers. */
async function healthyClient(url: string, stop: { done: boolean }): Promise<{ ok: number; failed: number }> {
  let ok = 0;
  let failed = 0;
  while (!stop.done) {
    try {
      const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) });
      await r.text();
      if (r.status === 200) ok++;
      else failed++;
    } catch {
      failed++;
    }
    await sleep(100);
  }
  return { ok, failed };
}

async function slowHeaderStorm(served: Served, boundMs: number): Promise<void> {
  const stop = { done: false };
  const healthy = healthyClient(served.url, stop);
  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: 50 }, () => slowHeaders(served.port)));
  const all = Date.now() - t0;
  await sleep(300);
  stop.done = true;
  const h = await healthy;
  const worst = Math.max(...results.map((r) => r.closedAfterMs));
  process.stdout.write(`[http-limits] 50 slow-header clients cut within ${all} ms (worst ${worst} ms, at most ${Math.max(...results.map((r) => r.sent))} header bytes sent); healthy client: ${h.ok} × 200, ${h.failed} failed\n`);
  // the client's end: every socket was closed by the server, well before its headers were complete
  expect(results.every((r) => r.sent < 60)).toBe(true);
  expect(worst).toBeLessThanOrEqual(boundMs);
  // the server's end: no connection left open but the healthy client's keep-alive one
  expect(await new Promise<number>((r) => app!.server.getConnections((_e, n) => r(n)))).toBeLessThanOrEqual(1);
  expect(served.closed.length).toBeGreaterThanOrEqual(50);
  expect(h.failed).toBe(0);
  expect(h.ok).toBeGreaterThan(all / 100 / 2);
}

/**
 * Send headers, then as much of a `total`-byte body as the connection takes; the answer's status
 * line and how many body bytes the client got to write before the server closed the connection.
 */
async function bigBody(port: number, headers: string, total: number): Promise<{ status: string; written: number; closedAfterMs: number; response: string }> {
  const s = await connect(port);
  const t0 = Date.now();
  let response = '';
  let written = 0;
  let closed = false;
  s.on('data', (d: Buffer) => (response += d.toString('latin1')));
  s.on('error', () => undefined);
  const done = new Promise<void>((r) => s.once('close', () => ((closed = true), r())));
  s.write(headers);
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  while (!closed && written < total) {
    const ok = s.write(chunk);
    written += chunk.length;
    if (!ok) await Promise.race([new Promise((r) => s.once('drain', r)), done, sleep(5_000)]);
  }
  await Promise.race([done, sleep(10_000)]);
  if (!closed) s.destroy();
  return { status: response.split('\r\n')[0] ?? '', written, closedAfterMs: Date.now() - t0, response };
}

describe('HTTP server limits', { timeout: 30_000 }, () => {
  it('50 slow-header clients are cut after server.headersTimeoutMs while a healthy client keeps getting 200s', async () => {
    const served = await serve({ config: { server: { headersTimeoutMs: 1_000, requestTimeoutMs: 2_000 } } });
    // the header timeout, plus Node's check interval (a quarter of it), plus slack for a loaded machine
    await slowHeaderStorm(served, 1_000 + 250 + 1_500);
  });

  it('with the shipped defaults, 50 slow-header clients are cut within 30 s', async () => {
    const served = await serve({});
    expect(app!.server.headersTimeout).toBe(10_000);
    expect(app!.server.keepAliveTimeout).toBe(5_000);
    expect(app!.server.maxConnections).toBe(10_000);
    await slowHeaderStorm(served, 12_500);
  });

  it('a 50 MB body with a bad token: 401, and the connection closes before the body is read', async () => {
    const served = await serve({ config: { auth: { tokens: [{ name: 'ops', token: TOKEN, scopes: ['read', 'write', 'admin'] }] } } });
    const total = 50 * 1024 * 1024;
    const r = await bigBody(
      served.port,
      `POST /v1/vms/vm1/qga/guest-ping HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer not-the-token-0123456789\r\nContent-Type: application/json\r\nContent-Length: ${total}\r\n\r\n`,
      total,
    );
    await waitFor(() => served.closed.length >= 1, 5_000, 'the server side to close');
    const serverRead = served.closed[0];
    process.stdout.write(`[http-limits] 401 on a 50 MB body: server read ${serverRead} bytes, client wrote ${r.written} bytes before the close (${r.closedAfterMs} ms)\n`);
    expect(r.status).toBe('HTTP/1.1 401 Unauthorized');
    expect(r.response.toLowerCase()).toContain('connection: close');
    // the server read little more than the headers and its socket buffer; the client was stopped by
    // the close, not by having sent everything
    expect(serverRead).toBeLessThan(2 * 1024 * 1024);
    expect(r.written).toBeLessThan(total / 2);
  });

  it('an HTTP client that writes a large body while it reads the answer gets the 401/413, not a reset (the refused connection lingers half closed)', async () => {
    const served = await serve({ config: { auth: { tokens: [{ name: 'ops', token: TOKEN, scopes: ['read', 'write', 'admin'] }] } } });
    // the client in a process of its own, as a user's (in this process the reset never overtakes the
    // answer): node:http writing a 20 MB body with end(), 6 times with a bad token, 6 with a good one
    const client = `
      const http = require('node:http');
      const body = Buffer.alloc(20 * 1024 * 1024, 0x20);
      const one = (token) => new Promise((resolve) => {
        const req = http.request(process.argv[1] + '/v1/vms/vm1/qga/guest-ping', { method: 'POST', headers: { authorization: 'Bearer ' + token, 'content-type': 'application/json', 'content-length': body.length } }, (res) => { res.resume(); resolve(String(res.statusCode)); });
        req.on('error', (e) => resolve(e.code || e.message));
        req.end(body);
      });
      (async () => { const out = []; for (let i = 0; i < 12; i++) out.push(await one(i % 2 ? process.argv[2] : 'not-the-token-0123456789')); console.log(out.join(' ')); })();`;
    const outcomes = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, ['-e', client, served.url, TOKEN], { timeout: 60_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout.trim())));
    });
    process.stdout.write(`[http-limits] node:http with a 20 MB body, bad and good token in turn: ${outcomes}\n`);
    expect(outcomes.split(' ')).toEqual(Array.from({ length: 12 }, (_, i) => (i % 2 ? '413' : '401')));
    // and the server still read next to nothing of those bodies
    await waitFor(() => served.closed.length >= 12, 10_000, 'the refused connections to close');
    expect(Math.max(...served.closed)).toBeLessThan(2 * 1024 * 1024);
  });

  it('a body over the limit with a good token: 413, and the connection closes before the body is read', async () => {
    const served = await serve({ config: { auth: { tokens: [{ name: 'ops', token: TOKEN, scopes: ['read', 'write', 'admin'] }] } } });
    const total = 50 * 1024 * 1024;
    const r = await bigBody(
      served.port,
      `POST /v1/vms/vm1/qga/guest-ping HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: ${total}\r\n\r\n`,
      total,
    );
    await waitFor(() => served.closed.length >= 1, 5_000, 'the server side to close');
    process.stdout.write(`[http-limits] 413 on a 50 MB body: server read ${served.closed[0]} bytes, client wrote ${r.written} bytes\n`);
    expect(r.status).toBe('HTTP/1.1 413 Payload Too Large');
    expect(served.closed[0]).toBeLessThan(2 * 1024 * 1024);
    expect(r.written).toBeLessThan(total / 2);
  });

  it('a slow but progressing download and upload outlive server.requestTimeoutMs', async () => {
    const served = await serve({ config: { server: { headersTimeoutMs: 500, requestTimeoutMs: 1_000 }, files: { readChunkBytes: 4096, writeChunkBytes: 4096, noProgressTimeoutMs: 1_000 } } });
    const vm = fleet!.vm.vm1;
    const data = Buffer.alloc(12 * 4096, 0x62);
    vm.addFile('/tmp/slow.bin', data);
    // every read of the agent takes 200 ms: 12 chunks ≈ 2.4 s, each well within the stall bound
    vm.setFault({ command: 'guest-file-read', kind: 'delay', ms: 200 });
    const t0 = Date.now();
    const r = await fetch(`${served.url}/v1/vms/vm1/files/content?path=/tmp/slow.bin`, { signal: AbortSignal.timeout(15_000) });
    const body = Buffer.from(await r.arrayBuffer());
    const downloadMs = Date.now() - t0;
    expect(r.status).toBe(200);
    expect(body.equals(data)).toBe(true);
    expect(downloadMs).toBeGreaterThan(1_000);
    vm.clearFaults();

    // an upload whose body trickles in for ≈ 2 s: 10 pieces, one every 200 ms
    const s = await connect(served.port);
    let response = '';
    s.on('data', (d: Buffer) => (response += d.toString()));
    const piece = Buffer.alloc(1024, 0x63);
    const t1 = Date.now();
    s.write(`PUT /v1/vms/vm1/files/content?path=/tmp/up.bin HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: ${10 * piece.length}\r\n\r\n`);
    for (let i = 0; i < 10; i++) {
      s.write(piece);
      await sleep(200);
    }
    await waitFor(() => response.includes('\r\n\r\n') && response.includes('}'), 5_000, 'the upload answer');
    const uploadMs = Date.now() - t1;
    s.destroy();
    process.stdout.write(`[http-limits] requestTimeoutMs 1000: slow download took ${downloadMs} ms, slow upload ${uploadMs} ms, both complete\n`);
    expect(response.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    expect(response).toContain('"bytesWritten":10240');
    expect(uploadMs).toBeGreaterThan(1_500);
  });

  it('a JSON body that does not arrive within server.requestTimeoutMs: the connection is closed', async () => {
    const served = await serve({ config: { server: { headersTimeoutMs: 500, requestTimeoutMs: 1_000 } } });
    const s = await connect(served.port);
    s.on('error', () => undefined);
    const t0 = Date.now();
    const closed = new Promise<number>((r) => s.once('close', () => r(Date.now() - t0)));
    s.write('POST /v1/vms/vm1/qga/guest-ping HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{');
    const ms = await Promise.race([closed, sleep(5_000).then(() => -1)]);
    expect(ms).toBeGreaterThanOrEqual(900);
    expect(ms).toBeLessThan(3_000);
  });

  it('a stalled upload is aborted after files.noProgressTimeoutMs and its guest handle closed', async () => {
    const served = await serve({ config: { files: { writeChunkBytes: 4096, noProgressTimeoutMs: 1_000 } } });
    const vm = fleet!.vm.vm1;
    const s = await connect(served.port);
    s.on('error', () => undefined);
    const t0 = Date.now();
    const closed = new Promise<number>((r) => s.once('close', () => r(Date.now() - t0)));
    s.write(`PUT /v1/vms/vm1/files/content?path=/tmp/stalled.bin HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n`);
    s.write(Buffer.alloc(10_000, 0x64));
    await waitFor(() => vm.stats.openHandles === 1, 5_000, 'the upload to open its handle');
    const ms = await Promise.race([closed, sleep(8_000).then(() => -1)]);
    await waitFor(() => vm.stats.openHandles === 0, 5_000, 'the handle to be closed');
    process.stdout.write(`[http-limits] stalled upload cut ${ms} ms after it started (noProgressTimeoutMs 1000), handle closed\n`);
    expect(ms).toBeGreaterThanOrEqual(900);
    expect(ms).toBeLessThan(4_000);
    expect(vm.stats.commandLog.map((c) => c.command)).toContain('guest-file-close');
  });

  it('a stalled download (the client stops reading) is cut after files.noProgressTimeoutMs and its handle closed', async () => {
    const served = await serve({ config: { files: { readChunkBytes: 65_536, noProgressTimeoutMs: 1_000 } } });
    const vm = fleet!.vm.vm1;
    vm.addFile('/tmp/big.bin', Buffer.alloc(32 * 1024 * 1024, 0x65));
    const s = await connect(served.port);
    s.on('error', () => undefined);
    s.pause(); // never read: the server's writes back up and no byte moves
    const t0 = Date.now();
    s.write('GET /v1/vms/vm1/files/content?path=/tmp/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n');
    await waitFor(() => vm.stats.openHandles === 1, 5_000, 'the download to open its handle');
    // the server's end: it closes the connection (a client that does not read cannot see it)
    const ms = await waitFor(() => served.closed.length >= 1, 12_000, 'the server to cut the stalled download');
    await waitFor(() => vm.stats.openHandles === 0, 5_000, 'the handle to be closed');
    process.stdout.write(`[http-limits] stalled download cut ${Date.now() - t0} ms after it started, handle closed\n`);
    expect(ms).toBeLessThan(10_000);
    expect(vm.stats.commandLog.map((c) => c.command)).toContain('guest-file-close');
    s.destroy();
  });
});
