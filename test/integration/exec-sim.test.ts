/**
 * Exec against the simulator, for what the real agent cannot be made to do on demand: status
 * replies lost on the wire, and HTTP clients that go away while a status is on its way.
 */
import http from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { Simulator, type SimAgent } from '../../sim/index.js';
import { listen } from '../helpers/app.js';
import { makeExecFilesApp, otherAgentClient, sharingSimApp, tempDir, until } from './files-support.js';

let sim: Simulator;
let vm: SimAgent;
let app: FastifyInstance;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  const t = await tempDir('exec-sim-');
  cleanup = t.cleanup;
  sim = new Simulator({ dir: t.dir });
  vm = await sim.addVm({ name: 'sim1' });
  app = await makeExecFilesApp({
    vms: [{ name: 'sim1', endpoint: vm.endpoint }],
    config: { exec: { pollInitialMs: 50, pollMaxMs: 100 } },
  });
});

afterEach(() => vm.clearFaults());

afterAll(async () => {
  await app?.close();
  await sim?.close();
  await cleanup?.();
});

const statusCalls = () => vm.stats.commandLog.filter((c) => c.command === 'guest-exec-status').length;

describe('exec replies that come after their timeout (review finding F15)', () => {
  test("a late guest-exec-status reply carrying the final status is kept (the agent deleted its record with it): the next GET answers it", async () => {
    const started = await app.inject({ method: 'POST', url: '/v1/vms/sim1/exec', payload: { path: '/bin/echo', arg: ['late'] } });
    const { pid } = started.json() as { pid: number };
    await until(() => vm.stats.commandLog.some((c) => c.command === 'guest-exec'), 2_000, 'the process to start');
    await new Promise((r) => setTimeout(r, 100));
    vm.setFault({ command: 'guest-exec-status', kind: 'delay', ms: 400, times: 1 });
    const err = await app.services.agent
      .call('sim1', 'guest-exec-status', { pid }, { timeoutMs: 100 })
      .then(() => undefined, (e: unknown) => e as { code?: string });
    expect(err?.code).toBe('AGENT_TIMEOUT');
    // the agent answered after 400 ms, exited: true, and forgot the process
    await until(() => app.services.exec.results.get('sim1', pid) !== undefined, 5_000, 'the late status to be kept');
    const before = statusCalls();
    const r = await app.inject({ method: 'GET', url: `/v1/vms/sim1/exec/${pid}` });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ pid, exited: true, exitcode: 0, outText: 'late\n' });
    expect(statusCalls()).toBe(before);
  });

});

describe('exec status replies that get lost', () => {
  test('wait mode survives a status reply dropped mid-line and still returns the result', async () => {
    vm.setFault({ command: 'guest-exec-status', kind: 'drop-mid-reply', times: 1 });
    const before = statusCalls();
    const r = await app.inject({ method: 'POST', url: '/v1/vms/sim1/exec', payload: { path: '/bin/sleep', arg: ['0.6'], wait: 10 } });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ exited: true, exitcode: 0 });
    // the dropped poll plus at least one that got through
    expect(statusCalls() - before).toBeGreaterThanOrEqual(2);
    expect(vm.stats.execRecords).toBe(0);
  });

  test('a status on its way when the HTTP client leaves is still kept; the next GET gets it', async () => {
    const started = await app.inject({ method: 'POST', url: '/v1/vms/sim1/exec', payload: { path: '/bin/echo', arg: ['kept'] } });
    const { pid } = started.json();
    // The exited reply is delayed; the client gives up before it arrives.
    vm.setFault({ command: 'guest-exec-status', kind: 'delay', ms: 400, times: 1 });
    const base = await listen(app);
    const aborted = await new Promise<string>((resolve) => {
      const req = http.get(`${base}/v1/vms/sim1/exec/${pid}`, () => resolve('answered'));
      req.on('error', () => resolve('aborted'));
      setTimeout(() => req.destroy(), 100);
    });
    expect(aborted).toBe('aborted');
    await until(() => vm.stats.execRecords === 0, 5000, 'the delayed status to be read');
    const r = await app.inject({ method: 'GET', url: `/v1/vms/sim1/exec/${pid}` });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ pid, exited: true, outText: 'kept\n' });
  });

  test('when the one reply carrying the exit status is lost, the gateway says so clearly (404, not a hang or 500)', async () => {
    const started = await app.inject({ method: 'POST', url: '/v1/vms/sim1/exec', payload: { path: '/bin/echo', arg: ['gone'] } });
    const { pid } = started.json();
    await new Promise((r) => setTimeout(r, 100));
    vm.setFault({ command: 'guest-exec-status', kind: 'drop-mid-reply', times: 1 });
    const lost = await app.inject({ method: 'GET', url: `/v1/vms/sim1/exec/${pid}` });
    expect(lost.statusCode).toBe(503);
    expect(lost.json().code).toBe('AGENT_UNAVAILABLE');
    const after = await app.inject({ method: 'GET', url: `/v1/vms/sim1/exec/${pid}` });
    expect(after.statusCode).toBe(404);
    expect(after.json().code).toBe('NOT_FOUND');
    expect(after.json().detail).toMatch(/lost/);
    expect(after.json().pid).toBe(pid);
  });

  test('the agent restarted while its process ran: 404 naming the pid and the restart, not a guess at another client', async () => {
    const started = await app.inject({ method: 'POST', url: '/v1/vms/sim1/exec', payload: { path: '/bin/sh', arg: ['-c', 'sleep 30'] } });
    const { pid } = started.json();
    // the caller waits; the agent restarts meanwhile
    const polled = statusCalls();
    const waiting = app.inject({ method: 'GET', url: `/v1/vms/sim1/exec/${pid}?wait=10` });
    await until(() => statusCalls() > polled, 5000, 'the wait to poll');
    await vm.restartProcess();
    const r = await waiting;
    expect(r.statusCode).toBe(404);
    expect(r.json()).toMatchObject({ code: 'NOT_FOUND', pid });
    expect(r.json().detail).toMatch(/the agent's connection was lost after the process started .* the agent restarted/);
  });
});

// last: the process it starts is left to the reaper (the tests above count the agent's exec records)
describe('a late guest-exec reply', () => {
  test('a late guest-exec reply (its caller gave up) names a process nobody knew of: it is tracked, so the reaper collects it', async () => {
    const tracked = app.services.exec.tracker.size;
    vm.setFault({ command: 'guest-exec', kind: 'delay', ms: 400, times: 1 });
    const err = await app.services.agent
      .call('sim1', 'guest-exec', { path: '/bin/echo', arg: ['orphan'], 'capture-output': true }, { timeoutMs: 100 })
      .then(() => undefined, (e: unknown) => e as { code?: string });
    expect(err?.code).toBe('AGENT_TIMEOUT');
    await until(() => app.services.exec.tracker.size > tracked, 5_000, 'the late pid to be tracked');
  });
});

describe('sharing the socket during an exec wait', () => {
  // the shipped poll cadence (50 ms growing to 1 s) and idle release (2 s)
  let share: Awaited<ReturnType<typeof sharingSimApp>>;
  beforeAll(async () => {
    share = await sharingSimApp('share1');
  });
  afterAll(async () => {
    await share?.close();
  });

  test('a long wait lets the socket go between its polls: another client is answered within a poll interval, not after the whole wait', async () => {
    const waiting = share.app.inject({ method: 'POST', url: '/v1/vms/share1/exec', payload: { path: '/bin/sh', arg: ['-c', 'sleep 6'], wait: 20 } });
    // past the quick first polls (50 ms growing ×1.5 to 1 s)
    await new Promise((r) => setTimeout(r, 2_000));
    const ms = await otherAgentClient((share.vm.endpoint as { path: string }).path);
    const r = await waiting;
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ exited: true, exitcode: 0 });
    // the process had 4 s left when the other client came
    expect(ms).toBeLessThan(2_000);
  });
});
