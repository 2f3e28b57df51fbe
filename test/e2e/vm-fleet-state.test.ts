/**
 * Issue 15's outside check on a REAL VM (../shared/vm: QEMU + virtio-serial + qemu-ga 7.2): the VM
 * is stopped and started again under a running gateway. Its agent state goes down when the socket
 * goes, calls fail fast (503 within 100 ms) while it is down, and the VM is up again once the
 * agent answers (GET /wait?for=agent returns then). Skipped, saying why, when the rig is absent.
 */
import { performance } from 'node:perf_hooks';
import type { FastifyInstance } from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import type { JsonObject } from '../../src/qga/types.js';
import { announceVmSkip, startVm, vmAvailable, type RunningVm } from '../helpers/vm.js';
import { body, expectProblem, makeRoutesApp } from '../integration/routes-support.js';

announceVmSkip('vm-fleet-state');

let vm: RunningVm | undefined;
let app: FastifyInstance | undefined;

async function agentOf(a: FastifyInstance): Promise<JsonObject> {
  const r = await a.inject({ method: 'GET', url: '/v1/vms/guest' });
  expect(r.statusCode).toBe(200);
  return body(r).agent as JsonObject;
}

describe.skipIf(!vmAvailable())('agent state of a real VM stopped and started under a running gateway', () => {
  afterAll(async () => {
    await app?.close();
    await vm?.stop();
  });

  it('up → (VM stopped) down, fail fast → (VM started) up again', async () => {
    vm = await startVm('fleetst');
    const socketPath = vm.socketPath;
    app = await makeRoutesApp({ vms: [{ name: 'guest', endpoint: { type: 'unix', path: socketPath } }], config: { agent: { idleReleaseMs: 2000 } } });
    const a = app;

    expect((await a.inject({ method: 'GET', url: '/v1/vms/guest/ping' })).statusCode).toBe(200);
    let agent = await agentOf(a);
    expect(agent.state).toBe('up');
    expect(String(agent.version)).toMatch(/^7\.2/);
    expect(body(await a.inject({ method: 'GET', url: '/v1/vms/guest' })).capabilities).toEqual(expect.arrayContaining(['guest-ping', 'guest-get-osinfo']));

    await vm.stop();
    vm = undefined;
    const [first, firstMs] = await (async () => {
      const t0 = performance.now();
      const p = await expectProblem(a, { method: 'GET', url: '/v1/vms/guest/ping' }, 503, 'AGENT_UNAVAILABLE');
      return [p, performance.now() - t0] as const;
    })();
    expect(first.vm).toBe('guest');
    expect(firstMs).toBeLessThan(2000);
    agent = await agentOf(a);
    expect(agent.state).toBe('down');
    expect(agent.lastError).toMatch(/ENOENT|ECONNREFUSED|cannot be connected/);

    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      const p = await expectProblem(a, { method: 'GET', url: '/v1/vms/guest/os' }, 503, 'AGENT_UNAVAILABLE');
      const ms = performance.now() - t0;
      expect(ms).toBeGreaterThanOrEqual(0);
      expect(ms).toBeLessThan(100);
      expect(p.detail).toMatch(/is down since/);
    }

    // the VM comes back (same name: same socket path) while a client waits for its agent
    const waiting = a.inject({ method: 'GET', url: '/v1/vms/guest/wait?for=agent&timeout=120' });
    vm = await startVm('fleetst');
    expect(vm.socketPath).toBe(socketPath);
    const booted = performance.now();
    const w = await waiting;
    expect(w.statusCode).toBe(200);
    expect(((body(w).agent as JsonObject).state)).toBe('up');
    // start.sh returns once the agent answers; the wait sees it within its retry period
    expect(performance.now() - booted).toBeLessThan(5000);
    expect((await agentOf(a)).state).toBe('up');
    expect((await a.inject({ method: 'GET', url: '/v1/vms/guest/ping' })).statusCode).toBe(200);
  }, 300_000);
});
