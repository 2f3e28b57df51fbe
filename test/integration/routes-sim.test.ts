/**
 * The routes that change a guest, against the simulator (the real agent here has them blocked):
 * each checks what reached the agent (arguments verbatim) and what it did to the simulated guest.
 * Also: integers above 2^53 travel exactly in both directions.
 */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { agentCommands, body, expectProblem, list, makeRoutesApp, startSim, type SimFleet } from './routes-support.js';

let fleet: SimFleet;
let vm: SimAgent;
let app: FastifyInstance;

const KEY_A = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHqrG3Xi1qv3dHh1yYVt0F1Rk8j2Hc0bLq0mJ3uN7adA a@host';
const KEY_B = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHqrG3Xi1qv3dHh1yYVt0F1Rk8j2Hc0bLq0mJ3uN7adB b@host';

beforeAll(async () => {
  fleet = await startSim();
  vm = await fleet.add({ name: 'sim1' });
  app = await makeRoutesApp({ vms: [{ name: 'sim1', endpoint: vm.endpoint }] });
});

afterAll(async () => {
  await app?.close();
  await fleet?.close();
});

function lastArgs(command: string): unknown {
  const e = [...vm.stats.commandLog].reverse().find((x) => x.command === command);
  return e?.args;
}

describe('time', () => {
  it('PUT /time sets an exact nanosecond time above 2^53', async () => {
    const target = 1_900_000_000_123_456_789n; // 2030, needs 61 bits
    const res = await app.inject({
      method: 'PUT',
      url: '/v1/vms/sim1/time',
      headers: { 'content-type': 'application/json' },
      payload: `{"time":${target}}`,
    });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.body).toBe(`{"source":"request","time":${target}}`);
    // the simulated guest clock now runs at target + elapsed: read it back
    const got = body(await app.inject({ method: 'GET', url: '/v1/vms/sim1/time' })).time as bigint;
    expect(typeof got).toBe('bigint');
    expect(got >= target - 1000n).toBe(true); // the sim keeps microseconds, like the real agent
    expect(got - target).toBeLessThan(60_000_000_000n);
  });

  it("PUT /time {useHostClock} sends the gateway host's clock", async () => {
    const before = BigInt(Date.now()) * 1_000_000n;
    const res = await app.inject({ method: 'PUT', url: '/v1/vms/sim1/time', payload: { useHostClock: true } });
    expect(res.statusCode, res.body).toBe(200);
    const b = body(res);
    expect(b.source).toBe('host');
    const sent = b.time as bigint;
    expect(sent >= before).toBe(true);
    expect(sent - before).toBeLessThan(60_000_000_000n);
    expect(vm.state.timeOffsetNs < 0n ? -vm.state.timeOffsetNs : vm.state.timeOffsetNs).toBeLessThan(60_000_000_000n);
  });

  it('PUT /time {} lets the guest read its RTC (no time argument sent)', async () => {
    vm.state.timeOffsetNs = 5_000_000_000n;
    const res = await app.inject({ method: 'PUT', url: '/v1/vms/sim1/time', payload: {} });
    expect(res.statusCode, res.body).toBe(200);
    expect(body(res)).toEqual({ source: 'rtc' });
    expect(vm.state.timeOffsetNs).toBe(0n);
    expect(lastArgs('guest-set-time') ?? {}).toEqual({});
  });

  it('PUT /time rejects bad bodies without an agent round trip', async () => {
    vm.resetStats();
    const bad: unknown[] = [{ time: 1.5 }, { time: '1900000000000000000' }, { time: 1, useHostClock: true }, { when: 1 }];
    for (const payload of bad) {
      const p = await expectProblem(app, { method: 'PUT', url: '/v1/vms/sim1/time', payload: payload as object }, 400, 'VALIDATION_FAILED');
      expect(String(p.detail)).toMatch(/time|when|useHostClock/);
    }
    expect(agentCommands(vm)).toEqual([]);
  });

  it('an agent refusal of the value (year 2096) is 422 with the QGA error', async () => {
    const p = await expectProblem(app, { method: 'PUT', url: '/v1/vms/sim1/time', payload: { time: 4e18 } }, 422, 'AGENT_ERROR');
    expect(p.qga).toEqual({ class: 'GenericError', desc: 'Invalid time' });
  });
});

describe('integers above 2^53 in replies are exact in the JSON we send', () => {
  it('network counters', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/vms/sim1/network/interfaces' });
    const eth0 = list(body(res).interfaces).find((i) => i.name === 'eth0')!;
    const rx = (eth0.statistics as Record<string, unknown>)['rx-bytes'];
    expect(typeof rx).toBe('bigint');
    expect((rx as bigint) > 2n ** 53n).toBe(true);
    expect(res.body).toContain(`"rx-bytes":${rx}`);
  });

  it('device driver dates and NVMe SMART counters', async () => {
    const dev = await app.inject({ method: 'GET', url: '/v1/vms/sim1/devices' });
    expect(dev.body).toContain('"driver-date":1700006400000000000');
    const disks = list(body(await app.inject({ method: 'GET', url: '/v1/vms/sim1/disks' })).disks);
    const nvme = disks.find((d) => d.smart !== undefined);
    expect(nvme).toBeDefined();
    expect((nvme!.smart as Record<string, unknown>).type).toBe('nvme');
  });
});

describe('vcpus and memory blocks', () => {
  it('PATCH /vcpus sends the list verbatim and reports how much was processed', async () => {
    const res = await app.inject({
      method: 'PATCH',
      url: '/v1/vms/sim1/vcpus',
      payload: { vcpus: [{ 'logical-id': 1, online: false, 'can-offline': true }] },
    });
    expect(res.statusCode, res.body).toBe(200);
    expect(body(res)).toEqual({ processed: 1, complete: true });
    // can-offline is output-only: not sent
    expect(lastArgs('guest-set-vcpus')).toEqual({ vcpus: [{ 'logical-id': 1, online: false }] });
    expect(vm.state.vcpus.find((c) => c.logicalId === 1)?.online).toBe(false);
    const again = list(body(await app.inject({ method: 'GET', url: '/v1/vms/sim1/vcpus' })).vcpus);
    expect(again.find((c) => c['logical-id'] === 1)?.online).toBe(false);
  });

  it('PATCH /vcpus: unknown members and wrong types are 400', async () => {
    await expectProblem(app, { method: 'PATCH', url: '/v1/vms/sim1/vcpus', payload: { vcpus: [{ 'logical-id': 1, online: true, extra: 1 }] } }, 400, 'VALIDATION_FAILED');
    await expectProblem(app, { method: 'PATCH', url: '/v1/vms/sim1/vcpus', payload: { vcpus: [{ 'logical-id': -1, online: true }] } }, 400, 'VALIDATION_FAILED');
    await expectProblem(app, { method: 'PATCH', url: '/v1/vms/sim1/vcpus', payload: { cpus: [] } }, 400, 'VALIDATION_FAILED');
  });

  it('PATCH /memory/blocks returns one result per block', async () => {
    const res = await app.inject({
      method: 'PATCH',
      url: '/v1/vms/sim1/memory/blocks',
      payload: { 'mem-blks': [{ 'phys-index': 2, online: false }, { 'phys-index': 999, online: false }] },
    });
    expect(res.statusCode, res.body).toBe(200);
    const results = list(body(res).results);
    expect(results).toHaveLength(2);
    expect(results[0]).toMatchObject({ 'phys-index': 2, response: 'success' });
    expect(results[1]).toMatchObject({ 'phys-index': 999, response: 'not-found' });
    expect(vm.state.memoryBlocks.find((b) => b.physIndex === 2)?.online).toBe(false);
  });

  it('PATCH /memory/blocks carries phys-index exactly to 2^64-1, through the gateway and the agent and back', async () => {
    const res = await app.inject({
      method: 'PATCH',
      url: '/v1/vms/sim1/memory/blocks',
      headers: { 'content-type': 'application/json' },
      payload: '{"mem-blks": [{"phys-index": 18446744073709551615, "online": true}, {"phys-index": 9007199254740993, "online": true}]}',
    });
    expect(res.statusCode, res.body).toBe(200);
    // the digits as sent, not a double's neighbour (…616, …992)
    expect(res.body).toContain('"phys-index":18446744073709551615}');
    expect(res.body).toContain('"phys-index":9007199254740993}');
    expect(lastArgs('guest-set-memory-blocks')).toEqual({ 'mem-blks': [{ 'phys-index': 18446744073709551615n, online: true }, { 'phys-index': 9007199254740993n, online: true }] });
  });
});

describe('fstrim', () => {
  it('POST /fstrim passes minimum and returns the per-path results', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/vms/sim1/fstrim', payload: { minimum: 65536 } });
    expect(res.statusCode, res.body).toBe(200);
    const paths = list(body(res).paths);
    expect(paths.map((p) => p.path)).toEqual(expect.arrayContaining(['/']));
    expect(vm.state.trims.at(-1)?.minimum).toBe(65536);
  });

  it('POST /fstrim with no body trims everything (no minimum sent)', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/vms/sim1/fstrim' });
    expect(res.statusCode, res.body).toBe(200);
    expect(lastArgs('guest-fstrim') ?? {}).toEqual({});
    await expectProblem(app, { method: 'POST', url: '/v1/vms/sim1/fstrim', payload: { minimum: -1 } }, 400, 'VALIDATION_FAILED');
  });
});

describe('users: password and ssh keys', () => {
  it('PUT /users/{u}/password base64-encodes the plain password', async () => {
    const res = await app.inject({ method: 'PUT', url: '/v1/vms/sim1/users/admin/password', payload: { password: 'pä55:wörd' } });
    expect(res.statusCode, res.body).toBe(204);
    expect(vm.state.passwordChanges.at(-1)).toMatchObject({ username: 'admin', crypted: false });
    const crypted = await app.inject({
      method: 'PUT',
      url: '/v1/vms/sim1/users/admin/password',
      payload: { password: '$6$salt$hash', crypted: true },
    });
    expect(crypted.statusCode).toBe(204);
    expect(vm.state.passwordChanges.at(-1)).toMatchObject({ username: 'admin', crypted: true });
  });

  it('password: the encoding reaches the agent (a wrong encoding would be refused by it)', async () => {
    // the simulator decodes base64 and refuses a raw newline: only a correctly encoded body gets past it
    const res = await app.inject({ method: 'PUT', url: '/v1/vms/sim1/users/admin/password', payload: { password: 'x'.repeat(100) } });
    expect(res.statusCode).toBe(204);
  });

  it('password: injection attempts and unknown users', async () => {
    vm.resetStats();
    await expectProblem(app, { method: 'PUT', url: '/v1/vms/sim1/users/admin/password', payload: { password: 'a\nroot:x' } }, 400, 'VALIDATION_FAILED');
    await expectProblem(app, { method: 'PUT', url: '/v1/vms/sim1/users/ad%3Amin/password', payload: { password: 'x' } }, 400, 'VALIDATION_FAILED');
    await expectProblem(app, { method: 'PUT', url: '/v1/vms/sim1/users/admin/password', payload: { password: '' } }, 400, 'VALIDATION_FAILED');
    await expectProblem(app, { method: 'PUT', url: '/v1/vms/sim1/users/admin/password', payload: { password: 'x', hashed: true } }, 400, 'VALIDATION_FAILED');
    expect(agentCommands(vm)).toEqual([]);
    await expectProblem(app, { method: 'PUT', url: '/v1/vms/sim1/users/nobody/password', payload: { password: 'x' } }, 422, 'AGENT_ERROR');
  });

  it('ssh keys: add, get, add with reset, remove (query), get', async () => {
    const add = await app.inject({ method: 'POST', url: '/v1/vms/sim1/users/admin/ssh-keys', payload: { keys: [KEY_A] } });
    expect(add.statusCode, add.body).toBe(204);
    let keys = body(await app.inject({ method: 'GET', url: '/v1/vms/sim1/users/admin/ssh-keys' })).keys;
    expect(keys).toEqual([KEY_A]);
    const reset = await app.inject({ method: 'POST', url: '/v1/vms/sim1/users/admin/ssh-keys', payload: { keys: [KEY_B, KEY_A], reset: true } });
    expect(reset.statusCode).toBe(204);
    expect(lastArgs('guest-ssh-add-authorized-keys')).toMatchObject({ username: 'admin', reset: true });
    const del = await app.inject({ method: 'DELETE', url: `/v1/vms/sim1/users/admin/ssh-keys?key=${encodeURIComponent(KEY_B)}` });
    expect(del.statusCode, del.body).toBe(204);
    expect(lastArgs('guest-ssh-remove-authorized-keys')).toEqual({ username: 'admin', keys: [KEY_B] });
    keys = body(await app.inject({ method: 'GET', url: '/v1/vms/sim1/users/admin/ssh-keys' })).keys;
    expect(keys).toEqual([KEY_A]);
    // several keys: the parameter repeated
    const two = await app.inject({
      method: 'DELETE',
      url: `/v1/vms/sim1/users/admin/ssh-keys?key=${encodeURIComponent(KEY_A)}&key=${encodeURIComponent(KEY_B)}`,
    });
    expect(two.statusCode).toBe(204);
    expect(lastArgs('guest-ssh-remove-authorized-keys')).toEqual({ username: 'admin', keys: [KEY_A, KEY_B] });
  });

  it('ssh keys: a key with a line break, no key to remove, unknown members → 400', async () => {
    await expectProblem(app, { method: 'POST', url: '/v1/vms/sim1/users/admin/ssh-keys', payload: { keys: [`${KEY_A}\n${KEY_B}`] } }, 400, 'VALIDATION_FAILED');
    await expectProblem(app, { method: 'DELETE', url: '/v1/vms/sim1/users/admin/ssh-keys' }, 400, 'VALIDATION_FAILED');
    await expectProblem(app, { method: 'POST', url: '/v1/vms/sim1/users/admin/ssh-keys', payload: { keys: [KEY_A], append: true } }, 400, 'VALIDATION_FAILED');
  });
});

describe('power: 202 after the sync fence', () => {
  it('POST /shutdown with and without a mode', async () => {
    const fleet2 = await startSim();
    try {
      const guest = await fleet2.add({ name: 'down1', shutdownDelayMs: 50 });
      const app2 = await makeRoutesApp({ vms: [{ name: 'down1', endpoint: guest.endpoint }] });
      try {
        const res = await app2.inject({ method: 'POST', url: '/v1/vms/down1/shutdown', payload: { mode: 'reboot' } });
        expect(res.statusCode, res.body).toBe(202);
        expect(body(res)).toEqual({ accepted: true, command: 'guest-shutdown', mode: 'reboot' });
        expect(guest.state.powerRequests.at(-1)).toMatchObject({ command: 'guest-shutdown', mode: 'reboot' });
        await expectProblem(app2, { method: 'POST', url: '/v1/vms/down1/shutdown', payload: { mode: 'off' } }, 400, 'VALIDATION_FAILED');
      } finally {
        await app2.close();
      }
    } finally {
      await fleet2.close();
    }
  });

  it('POST /shutdown with no body defaults to powerdown (no mode sent)', async () => {
    const fleet2 = await startSim();
    try {
      const guest = await fleet2.add({ name: 'down2', shutdownDelayMs: 50 });
      const app2 = await makeRoutesApp({ vms: [{ name: 'down2', endpoint: guest.endpoint }] });
      try {
        const res = await app2.inject({ method: 'POST', url: '/v1/vms/down2/shutdown' });
        expect(res.statusCode, res.body).toBe(202);
        expect(body(res).mode).toBe('powerdown');
        expect(guest.stats.commandLog.find((e) => e.command === 'guest-shutdown')?.args ?? {}).toEqual({});
      } finally {
        await app2.close();
      }
    } finally {
      await fleet2.close();
    }
  });

  it('POST /suspend maps the mode to its command; a refusal is 422', async () => {
    for (const mode of ['disk', 'ram', 'hybrid'] as const) {
      const res = await app.inject({ method: 'POST', url: '/v1/vms/sim1/suspend', payload: { mode } });
      expect(res.statusCode, res.body).toBe(202);
      expect(body(res)).toEqual({ accepted: true, command: `guest-suspend-${mode}`, mode });
      expect(vm.state.powerRequests.at(-1)?.command).toBe(`guest-suspend-${mode}`);
    }
    vm.setFault({ command: 'guest-suspend-ram', kind: 'error', class: 'Unsupported', desc: 'suspend-to-ram not supported by OS', times: 1 });
    const p = await expectProblem(app, { method: 'POST', url: '/v1/vms/sim1/suspend', payload: { mode: 'ram' } }, 422, 'AGENT_ERROR');
    expect(p.qga).toEqual({ class: 'Unsupported', desc: 'suspend-to-ram not supported by OS' });
    await expectProblem(app, { method: 'POST', url: '/v1/vms/sim1/suspend', payload: {} }, 400, 'VALIDATION_FAILED');
    await expectProblem(app, { method: 'POST', url: '/v1/vms/sim1/suspend', payload: { mode: 'sleep' } }, 400, 'VALIDATION_FAILED');
  });
});
