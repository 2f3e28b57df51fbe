/**
 * Fault matrix group A through HTTP (index: test/FAULTS.md): the channel-level tests of
 * test/integration/channel-sim.test.ts assert the error codes; these assert what a caller of the
 * gateway sees for the same injections (simulator fault knobs, the app over inject):
 *  - A2 a command never answered: 504 AGENT_TIMEOUT within [T_cmd, T_cmd + 1 s], then the next
 *    call succeeds after a resync, with the resync reasons exactly {connect: 1, timeout: 1}; and
 *    an agent blocked by a hung command: 504, 503 while it is down, back up by itself;
 *  - A4 a garbage reply: 502 AGENT_PROTOCOL_ERROR, resync reasons exactly [connect, protocol-error];
 *  - A10 past agent.maxQueue waiting commands: 429 QUEUE_FULL with Retry-After: 1, nothing sent,
 *    and the queued callers all get their own answers.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Simulator, type SimAgent } from '../../sim/index.js';
import { makeApp } from '../helpers/app.js';
import { body, expectProblem } from '../integration/routes-support.js';

const T_CMD = 1_000;
const TIMEOUTS = { fast: T_CMD, normal: T_CMD, slow: T_CMD, freeze: T_CMD, long: T_CMD };

let dir: string;
let sim: Simulator;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'faults-ah-'));
  sim = new Simulator({ dir });
});
afterAll(async () => {
  await sim?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const count = (vm: SimAgent, command: string): number => vm.stats.commandLog.filter((c) => c.command === command).length;

/** qga_channel_resyncs_total by reason, from this app's /metrics (one app, one VM per test) */
async function resyncs(app: FastifyInstance): Promise<Record<string, number>> {
  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^qga_channel_resyncs_total\{reason="([^"]+)"\} (\d+)$/gm)) if (Number(m[2]) > 0) out[m[1]] = Number(m[2]);
  return out;
}

async function withVm(name: string, config: Record<string, unknown>, run: (app: FastifyInstance, vm: SimAgent) => Promise<void>): Promise<void> {
  const vm = await sim.addVm({ name });
  const app = await makeApp({ vms: [{ name, endpoint: vm.endpoint }], config });
  try {
    await run(app, vm);
  } finally {
    await app.close();
    await sim.removeVm(name);
  }
}

describe('A2 agent never replies to a command (HTTP)', () => {
  it('504 AGENT_TIMEOUT within [T_cmd, T_cmd + 1 s]; the next call resyncs (reasons exactly connect, timeout) and succeeds', async () => {
    await withVm('a2h', { agent: { idleReleaseMs: 0, timeouts: TIMEOUTS } }, async (app, vm) => {
      expect((await app.inject({ method: 'GET', url: '/v1/vms/a2h/ping' })).statusCode).toBe(200);
      expect(await resyncs(app)).toEqual({ connect: 1 });
      // the agent reads the command and goes on serving, but never answers it
      vm.setFault({ command: 'guest-get-osinfo', kind: 'no-reply', times: 1 });
      const t0 = performance.now();
      const p = await expectProblem(app, { method: 'GET', url: '/v1/vms/a2h/os' }, 504, 'AGENT_TIMEOUT');
      const elapsed = performance.now() - t0;
      expect(p).toMatchObject({ vm: 'a2h', command: 'guest-get-osinfo' });
      expect(elapsed).toBeGreaterThanOrEqual(T_CMD - 5);
      expect(elapsed).toBeLessThanOrEqual(T_CMD + 1_000);
      expect(count(vm, 'guest-get-osinfo')).toBe(1);
      const syncsBefore = count(vm, 'guest-sync-delimited');
      const next = await app.inject({ method: 'GET', url: '/v1/vms/a2h/hostname' });
      expect(next.statusCode).toBe(200);
      expect(body(next)).toEqual({ 'host-name': 'a2h' });
      // the next call went out behind one fresh sync on the same connection: one resync, for the timeout
      expect(count(vm, 'guest-sync-delimited')).toBe(syncsBefore + 1);
      expect(vm.stats.connections).toBe(1);
      expect(await resyncs(app)).toEqual({ connect: 1, timeout: 1 });
      expect(count(vm, 'guest-get-osinfo')).toBe(1); // not resent
      expect((body(await app.inject({ method: 'GET', url: '/v1/vms/a2h' })).agent as { state: string }).state).toBe('up');
    });
  });

  it('an agent blocked by the hung command (answers nothing until the client leaves): 504 at T_cmd, then 503 AGENT_UNAVAILABLE while down, and the background probe brings it back', { timeout: 30_000 }, async () => {
    await withVm('a2b', { agent: { idleReleaseMs: 0, timeouts: TIMEOUTS } }, async (app, vm) => {
      expect((await app.inject({ method: 'GET', url: '/v1/vms/a2b/ping' })).statusCode).toBe(200);
      vm.setFault({ command: 'guest-get-osinfo', kind: 'hang', times: 1 });
      const t0 = performance.now();
      await expectProblem(app, { method: 'GET', url: '/v1/vms/a2b/os' }, 504, 'AGENT_TIMEOUT');
      const elapsed = performance.now() - t0;
      expect(elapsed).toBeGreaterThanOrEqual(T_CMD - 5);
      expect(elapsed).toBeLessThanOrEqual(T_CMD + 1_000);
      // the resync before the next call gets no answer either (the agent is still blocked)
      await expectProblem(app, { method: 'GET', url: '/v1/vms/a2b/hostname' }, 503, 'AGENT_UNAVAILABLE');
      const state = async () => (body(await app.inject({ method: 'GET', url: '/v1/vms/a2b' })).agent as { state: string }).state;
      // down when that handshake fails on its own (agent.syncTimeoutMs, 5 s): the call's shorter
      // deadline is no verdict on the agent (a slow one would be marked down by any impatient caller)
      const tSync = performance.now();
      while ((await state()) !== 'down') {
        if (performance.now() - tSync > 6_000) throw new Error('not down within the handshake timeout');
        await new Promise((r) => setTimeout(r, 50));
      }
      // recovered by the gateway on its own (reconnect: the agent is released when its client leaves)
      const tDown = performance.now();
      for (;;) {
        if ((await state()) === 'up') break;
        if (performance.now() - tDown > 20_000) throw new Error('agent not up again within 20 s');
        await new Promise((r) => setTimeout(r, 50));
      }
      const next = await app.inject({ method: 'GET', url: '/v1/vms/a2b/hostname' });
      expect(next.statusCode).toBe(200);
      expect(body(next)).toEqual({ 'host-name': 'a2b' });
      // reconnected (the background retry may take a second socket while the sim still winds the
      // first one down): one handshake per connection, one resync for the timeout
      expect(vm.stats.connections).toBeGreaterThanOrEqual(2);
      expect(vm.stats.connections).toBeLessThanOrEqual(3);
      expect(await resyncs(app)).toEqual({ connect: vm.stats.connections, timeout: 1 });
      expect(count(vm, 'guest-get-osinfo')).toBe(1);
    });
  });
});

describe('A4 garbage reply (HTTP)', () => {
  it('502 AGENT_PROTOCOL_ERROR; resync reasons exactly connect, protocol-error; the next call succeeds', async () => {
    await withVm('a4h', { agent: { idleReleaseMs: 0, timeouts: TIMEOUTS } }, async (app, vm) => {
      expect((await app.inject({ method: 'GET', url: '/v1/vms/a4h/ping' })).statusCode).toBe(200);
      vm.setFault({ command: 'guest-get-osinfo', kind: 'garbage', times: 1 });
      const p = await expectProblem(app, { method: 'GET', url: '/v1/vms/a4h/os' }, 502, 'AGENT_PROTOCOL_ERROR');
      expect(p.vm).toBe('a4h');
      const next = await app.inject({ method: 'GET', url: '/v1/vms/a4h/hostname' });
      expect(next.statusCode).toBe(200);
      expect(Object.keys(body(next))).toEqual(['host-name']);
      expect(await resyncs(app)).toEqual({ connect: 1, 'protocol-error': 1 });
      expect(count(vm, 'guest-get-osinfo')).toBe(1);
    });
  });
});

describe('A10 queue limit (HTTP)', () => {
  it('past agent.maxQueue waiting commands: 429 QUEUE_FULL with Retry-After 1, not sent; every queued caller gets its own answer, in order', async () => {
    const MAX_QUEUE = 4;
    const LONG = { fast: 10_000, normal: 10_000, slow: 10_000, freeze: 10_000, long: 10_000 };
    await withVm('a10h', { agent: { idleReleaseMs: 0, maxQueue: MAX_QUEUE, timeouts: LONG } }, async (app, vm) => {
      expect((await app.inject({ method: 'GET', url: '/v1/vms/a10h/ping' })).statusCode).toBe(200);
      vm.resetStats();
      vm.setFault({ command: 'guest-get-host-name', kind: 'delay', ms: 2_000, times: 1 });
      const channel = async () => body(await app.inject({ method: 'GET', url: '/v1/vms/a10h' })).channel as { inFlight: number; queued: number };
      const until = async (cond: (c: { inFlight: number; queued: number }) => boolean, what: string) => {
        for (const end = Date.now() + 5_000; !cond(await channel()); await new Promise((r) => setTimeout(r, 5))) if (Date.now() > end) throw new Error(what);
      };
      // one command in flight (answered after 2 s), then MAX_QUEUE different ones waiting behind it
      const first = app.inject({ method: 'GET', url: '/v1/vms/a10h/hostname' });
      await until((c) => c.inFlight === 1, 'first command not in flight');
      const routes = ['os', 'time', 'timezone', 'users'];
      const waiting = routes.map((r) => app.inject({ method: 'GET', url: `/v1/vms/a10h/${r}` }));
      await until((c) => c.queued === MAX_QUEUE, 'queue not filled');
      const full = await app.inject({ method: 'GET', url: '/v1/vms/a10h/vcpus' });
      expect(full.statusCode).toBe(429);
      expect(body(full)).toMatchObject({ code: 'QUEUE_FULL', vm: 'a10h' });
      expect(full.headers['retry-after']).toBe('1');
      const answers = await Promise.all([first, ...waiting]);
      expect(answers.map((r) => r.statusCode)).toEqual([200, 200, 200, 200, 200]);
      // each caller its own answer
      expect(body(answers[0])).toEqual({ 'host-name': 'a10h' });
      expect(body(answers[1])).toHaveProperty('kernel-release');
      expect(body(answers[2])).toHaveProperty('time');
      expect(body(answers[3])).toHaveProperty('offset');
      expect(body(answers[4])).toHaveProperty('users');
      // strictly in arrival order, one at a time; the refused one never sent
      const sent = vm.stats.commandLog.map((c) => c.command).filter((c) => !/^guest-(sync-delimited|info)$/.test(c));
      expect(sent).toEqual(['guest-get-host-name', 'guest-get-osinfo', 'guest-get-time', 'guest-get-timezone', 'guest-get-users']);
      expect(vm.stats.maxConcurrentCommands).toBe(1);
    });
  });
});
