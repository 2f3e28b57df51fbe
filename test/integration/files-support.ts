/**
 * Shared by the exec and files tests and bench/files.ts: the app, hashes, temp dirs,
 * reproducible pseudo-random data, polling.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import type { FastifyInstance } from 'fastify';
import { Simulator, type SimAgent } from '../../sim/index.js';
import { makeApp, type TestAppOptions } from '../helpers/app.js';

/** The real app (app.ts registers the exec and files routes), ready, not listening. */
export function makeExecFilesApp(opts: TestAppOptions = {}): Promise<FastifyInstance> {
  return makeApp(opts);
}

/**
 * A simulated VM `name` with a gateway of its own whose agent socket is released when idle (the
 * shipped 2 s), for the tests of sharing that socket with another tool; `config` merged over it.
 */
export async function sharingSimApp(name: string, config: Record<string, unknown> = {}): Promise<{ vm: SimAgent; app: FastifyInstance; close(): Promise<void> }> {
  const t = await tempDir(`${name}-`);
  const sim = new Simulator({ dir: t.dir });
  const vm = await sim.addVm({ name });
  const app = await makeExecFilesApp({ vms: [{ name, endpoint: vm.endpoint }], config: { ...config, agent: { idleReleaseMs: 2_000, ...(config.agent as object | undefined) } } });
  return {
    vm,
    app,
    close: async () => {
      await app.close();
      await sim.close();
      await t.cleanup();
    },
  };
}

/** Another client of an agent's socket (as Proxmox's qm agent): connect, sync; resolves with the ms until it is answered. */
export function otherAgentClient(socketPath: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const id = 400_000 + Math.floor(Math.random() * 100_000);
    const s = net.connect(socketPath, () => s.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"execute":"guest-sync-delimited","arguments":{"id":${id}}}\n`)])));
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes(String(id))) {
        s.destroy();
        resolve(performance.now() - t0);
      }
    });
    s.on('error', reject);
  });
}

export function sha256(buf: Buffer | Uint8Array): string {
  return createHash('sha256').update(buf).digest('hex');
}

export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Deterministic pseudo-random bytes (xorshift), so a failure can be reproduced. */
export function pseudoRandom(size: number, seed = 1): Buffer {
  const buf = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  let i = 0;
  for (; i + 4 <= size; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf.writeUInt32LE(x, i);
  }
  for (; i < size; i++) buf[i] = i & 0xff;
  return buf;
}

export async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
