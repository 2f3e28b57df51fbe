/**
 * The raw passthrough leaves nothing behind in the agent: file handles it opens join the idle
 * reaper, exec pids it starts are tracked and their final status kept — and a raw
 * guest-exec-status still answers after the reaper collected it (the agent has forgotten it).
 */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { body, expectProblem, makeRoutesApp, startSim, type SimFleet } from './routes-support.js';

let fleet: SimFleet;
let vm: SimAgent;
let app: FastifyInstance;

beforeAll(async () => {
  fleet = await startSim();
  vm = await fleet.add({ name: 'raw1' });
  app = await makeRoutesApp({
    vms: [{ name: 'raw1', endpoint: vm.endpoint }],
    config: { files: { handleIdleSeconds: 1, handleReaperIntervalMs: 100 }, exec: { reaperIntervalMs: 100 } },
  });
});

afterAll(async () => {
  await app?.close();
  await fleet?.close();
});

const raw = (command: string, payload: object = {}) =>
  app.inject({ method: 'POST', url: `/v1/vms/raw1/qga/${command}`, payload });

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('raw passthrough bookkeeping', () => {
  it('a handle opened raw is tracked, used, and forgotten on a raw close', async () => {
    const registry = app.services.files.guest.registry;
    const open = await raw('guest-file-open', { path: '/data/hello.txt' });
    expect(open.statusCode, open.body).toBe(200);
    const handle = body(open).return as number;
    expect(registry.get('raw1', handle)).toMatchObject({ owner: 'api', path: '/data/hello.txt', mode: 'r' });
    const read = await raw('guest-file-read', { handle, count: 5 });
    expect(body(read).return).toMatchObject({ count: 5, 'buf-b64': Buffer.from('hello').toString('base64') });
    expect((await raw('guest-file-close', { handle })).statusCode).toBe(200);
    expect(registry.get('raw1', handle)).toBeUndefined();
    expect(vm.stats.openHandles).toBe(0);
  });

  it('a handle opened raw and abandoned is closed by the reaper', async () => {
    const open = await raw('guest-file-open', { path: '/data/hello.txt', mode: 'r' });
    const handle = body(open).return as number;
    expect(vm.stats.openHandles).toBe(1);
    await until(() => vm.stats.openHandles === 0, 'the reaper to close the abandoned handle');
    // the agent's state changes before its close reply reaches the gateway: wait for the books too
    await until(() => app.services.files.guest.registry.get('raw1', handle) === undefined, "the gateway's handle books to forget it", 5_000);
    await expectProblem(app, { method: 'POST', url: '/v1/vms/raw1/qga/guest-file-read', payload: { handle } }, 422, 'AGENT_ERROR');
  });

  it('a process started raw is reaped, and its status still answers a raw guest-exec-status', async () => {
    const start = await raw('guest-exec', { path: '/bin/echo', arg: ['raw', 'exec'], 'capture-output': true });
    expect(start.statusCode, start.body).toBe(200);
    const pid = (body(start).return as { pid: number }).pid;
    const exec = app.services.exec;
    expect(exec.tracker.get('raw1', pid)).toBeDefined();
    // the reaper collects the final status; the agent then deletes its record
    await until(() => exec.results.get('raw1', pid) !== undefined, 'the exec reaper to collect the status');
    expect(vm.stats.execRecords).toBe(0);
    const status = await raw('guest-exec-status', { pid });
    expect(status.statusCode, status.body).toBe(200);
    const s = body(status).return as Record<string, unknown>;
    expect(s).toMatchObject({ exited: true, exitcode: 0 });
    expect(Buffer.from(String(s['out-data']), 'base64').toString()).toBe('raw exec\n');
  });

  it('a pid the gateway never saw goes to the agent verbatim', async () => {
    const p = await expectProblem(app, { method: 'POST', url: '/v1/vms/raw1/qga/guest-exec-status', payload: { pid: 999_999 } }, 422, 'AGENT_ERROR');
    expect(p.qga).toMatchObject({ class: 'GenericError' });
  });
});
