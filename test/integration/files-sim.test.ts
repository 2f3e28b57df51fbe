/**
 * Handle hygiene and memory, against the simulator (which counts the agent's open handles):
 * HTTP clients that vanish mid-download and mid-upload over a real socket, agent errors and
 * timeouts mid-stream, and a 1 GB download with the gateway's memory growth bounded.
 */
import http from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { Simulator, virtualFileBytes, type SimAgent } from '../../sim/index.js';
import { listen } from '../helpers/app.js';
import { makeExecFilesApp, otherAgentClient, sharingSimApp, tempDir, until } from './files-support.js';

const MiB = 1024 * 1024;
const SEED = 42;
let sim: Simulator;
let vm: SimAgent;
let app: FastifyInstance;
let base: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  const t = await tempDir('files-sim-');
  cleanup = t.cleanup;
  sim = new Simulator({ dir: t.dir });
  vm = await sim.addVm({ name: 'sim1' });
  app = await makeExecFilesApp({
    vms: [{ name: 'sim1', endpoint: vm.endpoint }],
    // `slow` is the timeout class of guest-file-read/-write: short, for the hang test
    config: { agent: { timeouts: { slow: 1500 } }, files: { readChunkBytes: MiB, writeChunkBytes: MiB } },
  });
  base = await listen(app);
});

afterEach(async () => {
  vm.clearFaults();
  // The point of every test here: nothing stays open, in the agent or in the gateway's books.
  await until(() => vm.stats.openHandles === 0, 10_000, 'the agent to have no open handle');
  // the agent closes the handle before its reply reaches the gateway, which then forgets it
  await until(() => app.services.files.guest.registry.total === 0, 5_000, "the gateway's handle books to be empty");
});

afterAll(async () => {
  await app?.close();
  await sim?.close();
  await cleanup?.();
});

const contentUrl = (p: string, extra = '') => `${base}/v1/vms/sim1/files/content?path=${encodeURIComponent(p)}${extra}`;
const count = (command: string) => vm.stats.commandLog.filter((c) => c.command === command).length;

/** GET, read until `afterBytes` arrived, then drop the connection. */
function abortDownloadAfter(url: string, afterBytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      let got = 0;
      res.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= afterBytes) {
          req.destroy();
          resolve(got);
        }
      });
      res.on('end', () => reject(new Error('the download finished before it could be aborted')));
    });
    req.on('error', () => undefined);
  });
}

/** GET the whole body; resolves with what arrived and whether the response ended cleanly. */
function download(url: string, onData?: (d: Buffer, offset: number) => void): Promise<{ status: number; bytes: number; complete: boolean; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let bytes = 0;
        res.on('data', (d: Buffer) => {
          onData?.(d, bytes);
          bytes += d.length;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, complete: res.complete, headers: res.headers }));
        res.on('aborted', () => resolve({ status: res.statusCode ?? 0, bytes, complete: false, headers: res.headers }));
        res.on('error', () => resolve({ status: res.statusCode ?? 0, bytes, complete: false, headers: res.headers }));
      })
      .on('error', reject);
  });
}

describe('client abort over a real socket', () => {
  test('mid-download: the handle is closed in the agent and reads stop', async () => {
    vm.addVirtualFile('/data/abort-dl.bin', 256 * MiB, SEED);
    const got = await abortDownloadAfter(contentUrl('/data/abort-dl.bin'), 3 * MiB);
    expect(got).toBeGreaterThanOrEqual(3 * MiB);
    await until(() => vm.stats.openHandles === 0, 5000, 'the download handle to be closed');
    const reads = count('guest-file-read');
    await new Promise((r) => setTimeout(r, 300));
    expect(count('guest-file-read')).toBe(reads);
    expect(reads).toBeLessThan(64); // far from the 256 a complete download takes
  });

  test('mid-upload: the handle is closed in the agent; what arrived was written', async () => {
    const writesBefore = count('guest-file-write');
    await new Promise<void>((resolve) => {
      const req = http.request(contentUrl('/data/abort-ul.bin'), { method: 'PUT', headers: { 'content-type': 'application/octet-stream' } });
      req.on('error', () => resolve());
      req.on('response', () => resolve());
      const piece = Buffer.alloc(256 * 1024, 7);
      const pump = async () => {
        while (count('guest-file-write') - writesBefore < 3) {
          if (!req.write(piece)) await new Promise((r) => req.once('drain', r));
        }
        req.destroy();
        resolve();
      };
      void pump();
    });
    await until(() => vm.stats.openHandles === 0, 5000, 'the upload handle to be closed');
    expect(vm.readFile('/data/abort-ul.bin')?.length).toBeGreaterThanOrEqual(3 * MiB);
  });
});

describe('fairness', () => {
  test('other requests to the VM are served while a long download runs (each chunk is its own queued command)', async () => {
    vm.addVirtualFile('/data/long.bin', 128 * MiB, SEED);
    let received = 0;
    let pingDoneAt = -1;
    let pinged = false;
    const r = await download(contentUrl('/data/long.bin'), (d) => {
      received += d.length;
      if (!pinged && received >= 2 * MiB) {
        pinged = true;
        void app.inject({ method: 'GET', url: '/v1/vms/sim1/ping' }).then((p) => {
          expect(p.statusCode).toBe(200);
          pingDoneAt = received;
        });
      }
    });
    expect(r.complete).toBe(true);
    expect(pingDoneAt).toBeGreaterThan(0);
    expect(pingDoneAt).toBeLessThan(64 * MiB); // answered early in the transfer, not after it
  }, 120_000);
});

describe('agent failures mid-stream', () => {
  test('an agent error on a read after the response started: response cut short, handle closed', async () => {
    vm.addVirtualFile('/data/err.bin', 16 * MiB, SEED);
    let armed = false;
    const r = await download(contentUrl('/data/err.bin'), () => {
      if (!armed) {
        armed = true;
        vm.setFault({ command: 'guest-file-read', kind: 'error', class: 'GenericError', desc: 'failed to read file: Input/output error' });
      }
    });
    expect(r.status).toBe(200);
    expect(r.headers['content-length']).toBe(String(16 * MiB));
    expect(r.complete).toBe(false);
    expect(r.bytes).toBeLessThan(16 * MiB);
  });

  test('an agent error before the first byte: a clean 422 problem, handle closed', async () => {
    vm.addVirtualFile('/data/err0.bin', 4 * MiB, SEED);
    vm.setFault({ command: 'guest-file-read', kind: 'error', class: 'GenericError', desc: 'failed to read file: Input/output error', times: 1 });
    const r = await app.inject({ method: 'GET', url: `/v1/vms/sim1/files/content?path=/data/err0.bin` });
    expect(r.statusCode).toBe(422);
    expect(r.json()).toMatchObject({ code: 'AGENT_ERROR', qga: { desc: 'failed to read file: Input/output error' } });
  });

  test('a read that times out (the agent hangs): response cut short, handle closed after the resync', async () => {
    vm.addVirtualFile('/data/hang.bin', 16 * MiB, SEED);
    let armed = false;
    const r = await download(contentUrl('/data/hang.bin'), () => {
      if (!armed) {
        armed = true;
        vm.setFault({ command: 'guest-file-read', kind: 'hang', times: 1 });
      }
    });
    expect(r.complete).toBe(false);
  });

  test('an agent error on a write: 422 with bytesWritten for a resume, handle closed', async () => {
    vm.addFile('/data/werr.bin', Buffer.alloc(0));
    vm.setFault({ command: 'guest-file-write', kind: 'error', class: 'GenericError', desc: 'failed to write to file: No space left on device' });
    const r = await app.inject({ method: 'PUT', url: '/v1/vms/sim1/files/content?path=/data/werr.bin', payload: Buffer.alloc(3 * MiB, 1) });
    expect(r.statusCode).toBe(422);
    expect(r.json()).toMatchObject({ code: 'AGENT_ERROR', bytesWritten: 0 });
  });
});

describe('memory', () => {
  test('a 1 GB file downloads byte-exact with RSS growth under 256 MB (a quarter of the file: memory is flat, not proportional)', { timeout: 300_000 }, async () => {
    const SIZE = 1024 * MiB;
    vm.addVirtualFile('/data/1g.bin', SIZE, SEED);
    // The simulator, the gateway and this client share one process: everything they hold counts.
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 25);
    let mismatchAt = -1;
    let nextCheck = 0;
    let checks = 0;
    try {
      const r = await download(contentUrl('/data/1g.bin'), (d, offset) => {
        // Spot-check one arriving piece every 16 MiB, and the last one (a full compare doubles the run time).
        if (offset + d.length > nextCheck || offset + d.length === SIZE) {
          checks++;
          nextCheck += 16 * MiB;
          if (mismatchAt < 0 && !virtualFileBytes(SEED, offset, d.length).equals(d)) mismatchAt = offset;
        }
      });
      expect(r).toMatchObject({ status: 200, bytes: SIZE, complete: true });
      expect(r.headers['content-length']).toBe(String(SIZE));
    } finally {
      clearInterval(sampler);
    }
    expect(mismatchAt).toBe(-1);
    expect(checks).toBeGreaterThanOrEqual(64);
    const growthMB = (peak - baseline) / 1e6;
    process.stdout.write(`[files-sim] 1 GB download: RSS baseline ${(baseline / 1e6).toFixed(0)} MB, peak growth ${growthMB.toFixed(1)} MB\n`);
    expect(growthMB).toBeLessThan(256);
  });
});

describe('a guest-file-open whose caller gave up', () => {
  test('is closed in the agent when its late reply arrives', async () => {
    const before = vm.stats.openHandles;
    vm.setFault({ command: 'guest-file-open', kind: 'delay', ms: 400, times: 1 });
    vm.addFile('/tmp/orphan.txt', Buffer.from('x'));
    const err = await app.services.agent
      .call('sim1', 'guest-file-open', { path: '/tmp/orphan.txt', mode: 'r' }, { timeoutMs: 100 })
      .then(() => undefined, (e: unknown) => e as { code?: string });
    expect(err?.code).toBe('AGENT_TIMEOUT');
    // the agent opened it anyway, after 400 ms; the late reply names the handle and the gateway closes it
    await until(() => vm.stats.openHandles > before || vm.stats.commandLog.some((c) => c.command === 'guest-file-close'), 5_000, 'the late open');
    await until(() => vm.stats.openHandles === before, 5_000, 'the orphaned handle to be closed');
    expect(vm.stats.commandLog.filter((c) => c.command === 'guest-file-close').length).toBeGreaterThan(0);
  });
});

describe('sharing the socket during a long transfer', () => {
  // the shipped idle release (2 s); small chunks, each read or write made slow: a transfer of ~6 s
  let share: Awaited<ReturnType<typeof sharingSimApp>>;
  let shareBase: string;
  beforeAll(async () => {
    share = await sharingSimApp('share1', { files: { readChunkBytes: 65_536, writeChunkBytes: 65_536 } });
    shareBase = await listen(share.app);
  });
  afterEach(() => share.vm.clearFaults());
  afterAll(async () => {
    await share?.close();
  });
  const otherClient = () => otherAgentClient((share.vm.endpoint as { path: string }).path);

  test('a download lets the socket go every idleReleaseMs: another client waits about that long, not for the whole transfer; the file arrives whole', async () => {
    share.vm.addVirtualFile('/data/share.bin', 60 * 65_536, SEED);
    share.vm.setFault({ command: 'guest-file-read', kind: 'delay', ms: 100 });
    const t0 = performance.now();
    const dl = download(`${shareBase}/v1/vms/share1/files/content?path=${encodeURIComponent('/data/share.bin')}`);
    await new Promise((r) => setTimeout(r, 500));
    const waited = await otherClient();
    const r = await dl;
    const total = performance.now() - t0;
    expect([r.status, r.complete, r.bytes]).toEqual([200, true, 60 * 65_536]);
    // the transfer took ~6 s; the other client came 0.5 s in and was answered within ~2 s
    expect(total).toBeGreaterThan(4_000);
    expect(waited).toBeLessThan(3_000);
  }, 30_000);

  test('an upload likewise', async () => {
    share.vm.setFault({ command: 'guest-file-write', kind: 'delay', ms: 100 });
    const body = Buffer.alloc(60 * 65_536, 7);
    const t0 = performance.now();
    const up = fetch(`${shareBase}/v1/vms/share1/files/content?path=${encodeURIComponent('/data/up.bin')}`, { method: 'PUT', body });
    await new Promise((r) => setTimeout(r, 500));
    const waited = await otherClient();
    const r = await up;
    const total = performance.now() - t0;
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ bytesWritten: body.length });
    expect(total).toBeGreaterThan(4_000);
    expect(waited).toBeLessThan(3_000);
  }, 30_000);
});
