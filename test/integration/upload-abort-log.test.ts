/**
 * A client that goes away in the middle of a streamed upload is no error of the gateway's: its one
 * request line, at info, status 499 `aborted`, never "unhandled error" at level error with a
 * stack (it was, for the request stream's 'aborted' ECONNRESET: alert noise per flaky client;
 * outside probe). The guest handle is closed as before (files-sim.test.ts).
 */
import http from 'node:http';
import pino from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { Simulator, type SimAgent } from '../../sim/index.js';
import { buildApp } from '../../src/app.js';
import { listen, testConfig } from '../helpers/app.js';
import { tempDir, until } from './files-support.js';

let sim: Simulator;
let vm: SimAgent;
let app: FastifyInstance;
let base: string;
let cleanup: () => Promise<void>;
const lines: Array<{ level: number; msg: string }> = [];

beforeAll(async () => {
  const t = await tempDir('upload-abort-');
  cleanup = t.cleanup;
  sim = new Simulator({ dir: t.dir });
  vm = await sim.addVm({ name: 'ul1' });
  const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as { level: number; msg: string }) });
  app = await buildApp({ config: testConfig({ vms: [{ name: 'ul1', endpoint: vm.endpoint }] }), logger, env: {} });
  await app.ready();
  base = await listen(app);
});

afterAll(async () => {
  await app?.close();
  await sim?.close();
  await cleanup?.();
});

it('an upload the client abandons mid-way: one info line, no error-level "unhandled error"', async () => {
  const writes = () => vm.stats.commandLog.filter((c) => c.command === 'guest-file-write').length;
  await new Promise<void>((resolve) => {
    const req = http.request(`${base}/v1/vms/ul1/files/content?path=/data/abandoned.bin`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-length': String(10 * 1024 * 1024) } });
    req.on('error', () => resolve());
    const piece = Buffer.alloc(256 * 1024, 7);
    const pump = async () => {
      while (writes() < 2) if (!req.write(piece)) await new Promise((r) => req.once('drain', r));
      req.destroy();
      resolve();
    };
    void pump();
  });
  await until(() => vm.stats.openHandles === 0, 5000, 'the upload handle to be closed');
  await until(() => lines.some((l) => l.msg === 'PUT /v1/vms/:vm/files/content 499 client went away before the answer'), 5000, 'the request line');
  // its one line, at info: no error, no second line
  const mine = lines.filter((l) => (l as { route?: string }).route === '/v1/vms/:vm/files/content');
  expect(mine).toEqual([expect.objectContaining({ level: 30, status: 499, aborted: true, method: 'PUT', vm: 'ul1' })]);
  expect(lines.filter((l) => l.level >= 50).map((l) => l.msg)).toEqual([]);
});
