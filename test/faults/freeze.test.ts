/**
 * Fault matrix, group B (freeze lifecycle) and E2, through real I/O: the gateway as a child
 * process (`node --import tsx src/server.ts`), simulated VMs on unix sockets in this process, a
 * real redis-server. The invariants are asserted from the simulator's command log, the history of
 * what the agent actually received, not from what the gateway says it did:
 *
 *  - no VM frozen longer than D + S + 1 s (D the lease deadline, S the sweep interval), and never
 *    thawed before its deadline by anyone but the holder;
 *  - exactly one thaw per freeze (no VM left frozen, no double thaw reaching the agent).
 *
 * Crash loop (B1, B2, E2): CYCLES SIGKILL/restart cycles of the gateway, with the embedded store
 * (one gateway with a state directory, restarted after each SIGKILL) and with Redis (two gateways,
 * the freezing one SIGKILLed and restarted each cycle). CYCLES is 4 by default, 10 with
 * QGA_FAULTS_FULL=1.
 *
 * B12 (lost freeze): the agent reads the freeze, freezes the guest, and never answers.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { simFleet, waitFor, type SimFleet } from '../integration/freeze-fixture.js';
import { call, spawnGateway, type Gateway } from '../e2e/freeze-gateways.js';

const FULL = process.env.QGA_FAULTS_FULL === '1';
const CYCLES = FULL ? 10 : 4;
const SWEEP_MS = 500;
const SLACK_MS = 1_000; // the "+ 1 s" of the invariant
const FREEZE_CMDS = new Set(['guest-fsfreeze-freeze', 'guest-fsfreeze-freeze-list']);
const THAW = 'guest-fsfreeze-thaw';

let redis: TestRedis;
let fleet: SimFleet;
const gateways: Gateway[] = [];

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});
afterEach(async () => {
  for (const g of gateways.splice(0)) await g.stop();
  await fleet?.close();
});

/** freeze and thaw commands the VM's agent received, oldest first */
function history(vm: string): Array<{ command: string; at: number }> {
  return fleet.vm[vm].stats.commandLog.filter((e) => FREEZE_CMDS.has(e.command) || e.command === THAW).map((e) => ({ command: e.command, at: e.at }));
}

/**
 * The invariant over a whole history: freezes and thaws strictly alternate, starting with a
 * freeze and ending with a thaw (exactly one thaw per freeze), and each thaw reaches the agent no
 * earlier than the lease's deadline and no later than deadline + S + 1 s.
 */
function assertInvariant(vm: string, deadlines: number[], sweepMs: number): number[] {
  const h = history(vm);
  expect(h.map((e) => (e.command === THAW ? 'thaw' : 'freeze'))).toEqual(deadlines.flatMap(() => ['freeze', 'thaw']));
  const overshoots: number[] = [];
  for (let i = 0; i < deadlines.length; i++) {
    const freeze = h[2 * i];
    const thaw = h[2 * i + 1];
    const overshoot = thaw.at - deadlines[i];
    overshoots.push(overshoot);
    expect(freeze.at).toBeLessThanOrEqual(deadlines[i]);
    expect(overshoot, `${vm} cycle ${i}: thaw ${overshoot} ms past the deadline`).toBeGreaterThanOrEqual(0);
    expect(overshoot, `${vm} cycle ${i}: thaw ${overshoot} ms past the deadline`).toBeLessThanOrEqual(sweepMs + SLACK_MS);
  }
  return overshoots;
}

function baseConfig(store: Record<string, unknown>, extra: { ttl: number; freezeTimeoutMs?: number; sweepIntervalMs?: number; stateFile?: string }): Record<string, unknown> {
  return {
    log: { level: 'info' },
    store,
    agent: { idleReleaseMs: 200, ...(extra.freezeTimeoutMs ? { timeouts: { freeze: extra.freezeTimeoutMs } } : {}) },
    freeze: {
      defaultTtlSeconds: extra.ttl,
      maxTtlSeconds: 60,
      maxTotalSeconds: 120,
      sweepIntervalMs: extra.sweepIntervalMs ?? SWEEP_MS,
      ...(extra.stateFile ? { stateFile: extra.stateFile } : {}),
    },
    vms: Object.values(fleet.vm).map((a) => ({ name: a.name, endpoint: a.endpoint })),
  };
}

async function start(name: string, config: Record<string, unknown>, stateDir?: string): Promise<Gateway> {
  const g = await spawnGateway(name, fleet.dir, config, stateDir ? { stateDir } : {});
  gateways.push(g);
  return g;
}

async function kill(g: Gateway): Promise<void> {
  g.signal('SIGKILL');
  await g.exit;
  gateways.splice(gateways.indexOf(g), 1);
}

const VMS = ['vm1', 'vm2'];

/** freeze every VM through `g`; returns each VM's deadline (the lease's expiresAt) */
async function freezeAll(g: Gateway, ttl: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  await Promise.all(
    VMS.map(async (vm) => {
      const r = await call(g, 'POST', `/v1/vms/${vm}/fsfreeze`, { ttlSeconds: ttl });
      expect(r.status).toBe(201);
      out[vm] = Date.parse(String(r.json.expiresAt));
    }),
  );
  for (const vm of VMS) expect(fleet.vm[vm].state.frozen).toBe(true);
  return out;
}

const thawCount = (vm: string) => history(vm).filter((e) => e.command === THAW).length;

describe(`crash loop: ${CYCLES} SIGKILL/restart cycles keep every VM frozen ≤ D + S + 1 s with exactly one thaw per freeze (B1, B2, E2)`, { timeout: 180_000 }, () => {
  // Was a defect (issue 13): in the restarted process the local auto-thaw timer and the sweeper's
  // deadline pass both thawed the same expired lease when they fired together. The local timer now
  // claims the session in the store as the sweeper does, so exactly one of them thaws.
  it('embedded store (state directory): the freezing gateway is SIGKILLed and restarted each cycle; the restarted process thaws by the deadline', async () => {
    fleet = await simFleet(VMS);
    const stateDir = path.join(fleet.dir, 'gw.state');
    // a 6 s lease: the restart (tsx start-up, several seconds on a loaded machine) completes
    // before the deadline, so the restarted process's own timer or sweeper thaws
    const TTL = 6;
    const cfg = baseConfig({ type: 'memory' }, { ttl: TTL });
    const deadlines: Record<string, number[]> = { vm1: [], vm2: [] };
    let g = await start('m0', cfg, stateDir);
    for (let i = 0; i < CYCLES; i++) {
      const d = await freezeAll(g, TTL);
      for (const vm of VMS) deadlines[vm].push(d[vm]);
      await kill(g);
      g = await start(`m${i + 1}`, cfg, stateDir);
      for (const vm of VMS) await waitFor(() => thawCount(vm) >= i + 1 && !fleet.vm[vm].state.frozen, TTL * 1_000 + SWEEP_MS + 10_000, `${vm} cycle ${i} thaw`);
      for (const vm of VMS) expect(thawCount(vm), `${vm} cycle ${i}: thaws so far`).toBe(i + 1);
      for (const vm of VMS) expect((await call(g, 'GET', `/v1/vms/${vm}/fsfreeze`)).json).toMatchObject({ status: 'thawed', lease: null });
    }
    // the last process lives on: its sweeper must not thaw anything twice
    await new Promise((r) => setTimeout(r, 2 * SWEEP_MS));
    const over = VMS.map((vm) => assertInvariant(vm, deadlines[vm], SWEEP_MS));
    process.stdout.write(`[faults] memory crash loop (${CYCLES} cycles): thaw past deadline ms ${JSON.stringify(over)}\n`);
  });

  it('Redis: two gateways, the freezing one SIGKILLed and restarted each cycle; a replica thaws by D + S + 1 s, never twice', async () => {
    fleet = await simFleet(VMS);
    const TTL = 2;
    const cfg = baseConfig({ type: 'redis', redisUrl: redis.url, keyPrefix: `e2${Date.now()}:`, commandTimeoutMs: 1_000 }, { ttl: TTL });
    const deadlines: Record<string, number[]> = { vm1: [], vm2: [] };
    const live: Gateway[] = await Promise.all([start('r0a', cfg), start('r0b', cfg)]);
    for (let i = 0; i < CYCLES; i++) {
      const holder = live[i % 2];
      const d = await freezeAll(holder, TTL);
      for (const vm of VMS) deadlines[vm].push(d[vm]);
      await kill(holder);
      // the holder restarts while its lease runs; whichever replica thaws, one thaw reaches the agent
      const restarted = start(`r${i + 1}${i % 2 ? 'b' : 'a'}`, cfg);
      for (const vm of VMS) await waitFor(() => thawCount(vm) >= i + 1 && !fleet.vm[vm].state.frozen, TTL * 1_000 + SWEEP_MS + 10_000, `${vm} cycle ${i} thaw`);
      live[i % 2] = await restarted;
      for (const vm of VMS) expect(thawCount(vm), `${vm} cycle ${i}: thaws so far`).toBe(i + 1);
      for (const vm of VMS) expect((await call(live[(i + 1) % 2], 'GET', `/v1/vms/${vm}/fsfreeze`)).json).toMatchObject({ status: 'thawed', lease: null });
    }
    await new Promise((r) => setTimeout(r, 2 * SWEEP_MS));
    const over = VMS.map((vm) => assertInvariant(vm, deadlines[vm], SWEEP_MS));
    process.stdout.write(`[faults] redis crash loop (${CYCLES} cycles): thaw past deadline ms ${JSON.stringify(over)}\n`);
    // the deadline thaws were the sweeper's or the restarted process's reconciliation
    expect(gateways.map((g) => g.log()).join('\n')).toMatch(/lease expired: thawing by deadline|start-up reconciliation: lease expired/);
  });
});

/** a counter's value from the gateway's /metrics (0 when the series is absent) */
async function metric(g: Gateway, series: string): Promise<number> {
  const text = await fetch(`${g.url}/metrics`, { signal: AbortSignal.timeout(5_000) }).then((r) => r.text());
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

describe('B12: a lost freeze (the agent reads it, freezes the guest, never answers)', { timeout: 60_000 }, () => {
  it('504 AGENT_TIMEOUT at the freeze timeout naming the lease; the VM stays frozen under it (status, 409 to other freezes, nothing sent), the channel is resynced, exactly one thaw reaches the agent within 1 s of the deadline; logged and counted', async () => {
    fleet = await simFleet(['vm1']);
    const FREEZE_TIMEOUT_MS = 1_000;
    const TTL = 4;
    const g = await start('b12', baseConfig({ type: 'memory' }, { ttl: TTL, freezeTimeoutMs: FREEZE_TIMEOUT_MS }));
    // runs the freeze in the guest, sends no reply (one time)
    fleet.vm.vm1.setFault({ command: 'guest-fsfreeze-freeze', kind: 'no-reply', times: 1 });
    const mark = fleet.vm.vm1.stats.commandLog.length;
    const t0 = Date.now();
    const r = await call(g, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: TTL });
    const elapsed = Date.now() - t0;
    expect(r.status).toBe(504);
    expect(r.json.code).toBe('AGENT_TIMEOUT');
    // fails at the freeze timeout, not at the lease's deadline (4 s) nor the HTTP budget
    expect(elapsed).toBeGreaterThanOrEqual(FREEZE_TIMEOUT_MS);
    expect(elapsed).toBeLessThanOrEqual(FREEZE_TIMEOUT_MS + 1_000);
    // the VM is treated as frozen under the lease, which the answer names (its holder may thaw early)
    expect(r.json).toMatchObject({ leaseId: expect.any(String), frozenUnderLease: true });
    expect(r.json.vms).toEqual([expect.objectContaining({ vm: 'vm1', result: 'unknown', error: expect.objectContaining({ code: 'AGENT_TIMEOUT' }), thawAttempted: false })]);
    const deadline = Date.parse(String(r.json.expiresAt));
    expect(deadline).toBeGreaterThanOrEqual(t0 + TTL * 1_000 - 5);
    expect(deadline).toBeLessThanOrEqual(t0 + TTL * 1_000 + 1_000);
    expect(history('vm1').map((e) => e.command)).toEqual(['guest-fsfreeze-freeze']);
    expect(fleet.vm.vm1.state.frozen).toBe(true);
    const st = await call(g, 'GET', '/v1/vms/vm1/fsfreeze');
    expect(st.status).toBe(200);
    expect(st.json).toMatchObject({ status: 'frozen', lease: { leaseId: r.json.leaseId, expired: false } });
    const other = await call(g, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: TTL });
    expect(other.status).toBe(409);
    expect(other.json).toMatchObject({ code: 'LEASE_CONFLICT', expiresAt: r.json.expiresAt });
    expect(history('vm1').map((e) => e.command)).toEqual(['guest-fsfreeze-freeze']);
    // the deadline thaw: within 1 s of the deadline, not before it, exactly once
    await waitFor(() => thawCount('vm1') === 1 && !fleet.vm.vm1.state.frozen, TTL * 1_000 + 5_000, 'the deadline thaw');
    await waitFor(() => Date.now() >= deadline + 2 * SWEEP_MS + 200, 5_000, 'two sweeps past the deadline');
    const over = assertInvariant('vm1', [deadline], 0);
    process.stdout.write(`[faults] B12: thaw +${over[0]} ms after the deadline\n`);
    // the channel was resynced between the unanswered freeze and the thaw
    const log = fleet.vm.vm1.stats.commandLog.slice(mark).map((e) => e.command);
    expect(log.slice(log.indexOf('guest-fsfreeze-freeze') + 1, log.indexOf(THAW))).toContain('guest-sync-delimited');
    // logged (error) and counted
    const lost = () => g.log().split('\n').filter((l) => l.includes('"freeze timed out: the VM is treated as frozen under the lease until its deadline"'));
    await waitFor(() => lost().length > 0, 5_000, 'the log line (the child writes its log asynchronously)');
    expect(lost()).toHaveLength(1);
    expect(JSON.parse(lost()[0])).toMatchObject({ level: 50, vm: 'vm1', code: 'AGENT_TIMEOUT' });
    expect(await metric(g, 'qga_agent_commands_total{command="guest-fsfreeze-freeze",outcome="timeout"}')).toBe(1);
    expect(await metric(g, 'qga_channel_resyncs_total{reason="timeout"}')).toBe(1);
    expect(await metric(g, 'qga_freeze_auto_thaws_total')).toBe(1);
    // the lease ended by its deadline
    const late = await call(g, 'DELETE', `/v1/vms/vm1/fsfreeze?leaseId=${String(r.json.leaseId)}`);
    expect(late.status).toBe(409);
    expect(late.json).toMatchObject({ code: 'LEASE_EXPIRED', endedBy: 'deadline' });
    // the channel is usable: the next freeze and thaw go through
    const again = await call(g, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: TTL });
    expect(again.status).toBe(201);
    const thawed = await call(g, 'DELETE', `/v1/vms/vm1/fsfreeze?leaseId=${String(again.json.leaseId)}`);
    expect(thawed.status).toBe(200);
    expect(history('vm1').map((e) => e.command)).toEqual(['guest-fsfreeze-freeze', THAW, 'guest-fsfreeze-freeze', THAW]);
  });
});

describe.each([
  ['embedded store', () => ({ type: 'memory' })],
  ['Redis', () => ({ type: 'redis', redisUrl: redis.url, keyPrefix: `b1${Date.now()}:`, commandTimeoutMs: 1_000 })],
])('B1: the caller never thaws, the holder lives (%s)', (_kind, store) => {
  it('the thaw reaches the agent within 1 s of the deadline, not before it, exactly once, audited auto_thaw and counted (qga_freeze_auto_thaws_total, qga_freeze_duration_seconds, qga_freeze_leases_active); the lease ends endedBy deadline', { timeout: 30_000 }, async () => {
    fleet = await simFleet(['vm1']);
    const TTL = 2;
    const g = await start('b1', baseConfig(store(), { ttl: TTL }));
    const r = await call(g, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: TTL });
    expect(r.status).toBe(201);
    const deadline = Date.parse(String(r.json.expiresAt));
    expect(await metric(g, 'qga_freeze_leases_active')).toBe(1);
    expect(await metric(g, 'qga_freeze_auto_thaws_total')).toBe(0);
    await waitFor(() => thawCount('vm1') === 1 && !fleet.vm.vm1.state.frozen, TTL * 1_000 + 5_000, 'the deadline thaw');
    // two sweeps more: a second thaw would show now
    await waitFor(() => Date.now() >= deadline + 2 * SWEEP_MS + 200, 5_000, 'two sweeps past the deadline');
    const over = assertInvariant('vm1', [deadline], 0); // within 1 s of D: no sweep interval allowed
    process.stdout.write(`[faults] B1 ${_kind}: thaw +${over[0]} ms after the deadline\n`);
    // audited once (action auto_thaw, by the gateway) and counted once
    const audits = () => g.log().split('\n').filter((l) => l.includes('"audit":true') && l.includes('"auto_thaw"'));
    await waitFor(() => audits().length > 0, 5_000, 'the auto_thaw audit line');
    expect(audits()).toHaveLength(1);
    expect(JSON.parse(audits()[0])).toMatchObject({ audit: true, action: 'auto_thaw', by: 'gateway', vm: 'vm1', leaseId: r.json.leaseId, holder: 'anonymous' });
    expect(await metric(g, 'qga_freeze_auto_thaws_total')).toBe(1);
    expect(await metric(g, 'qga_freeze_leases_active')).toBe(0);
    // one freeze-to-thaw duration, the lease's length (+ at most the 1 s slack)
    expect(await metric(g, 'qga_freeze_duration_seconds_count')).toBe(1);
    const secs = await metric(g, 'qga_freeze_duration_seconds_sum');
    expect(secs).toBeGreaterThanOrEqual(TTL - 0.05);
    expect(secs).toBeLessThanOrEqual(TTL + 1);
    const late = await call(g, 'DELETE', `/v1/vms/vm1/fsfreeze?leaseId=${String(r.json.leaseId)}`);
    expect(late.status).toBe(409);
    expect(late.json).toMatchObject({ code: 'LEASE_EXPIRED', endedBy: 'deadline' });
    expect(thawCount('vm1')).toBe(1);
  });
});

describe('B12 with the default freeze timeout (bounded by the lease)', { timeout: 30_000 }, () => {
  // Was a defect (issue 13): the local auto-thaw timer and the freeze's rollback both thawed. A
  // timed-out freeze is no longer rolled back: the lease is kept and its deadline thaws, once.
  it('504 AGENT_TIMEOUT at the deadline; exactly one thaw reaches the agent, within 1 s of the deadline', async () => {
    fleet = await simFleet(['vm1']);
    const TTL = 3;
    const g = await start('b12d', baseConfig({ type: 'memory' }, { ttl: TTL }));
    fleet.vm.vm1.setFault({ command: 'guest-fsfreeze-freeze', kind: 'no-reply', times: 1 });
    const t0 = Date.now();
    const r = await call(g, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: TTL });
    const elapsed = Date.now() - t0;
    expect(r.status).toBe(504);
    expect(r.json).toMatchObject({ code: 'AGENT_TIMEOUT', leaseId: expect.any(String), frozenUnderLease: true });
    expect(elapsed).toBeGreaterThanOrEqual(TTL * 1_000 - 100);
    expect(elapsed).toBeLessThanOrEqual(TTL * 1_000 + 1_000);
    const deadline = Date.parse(String(r.json.expiresAt));
    await waitFor(() => thawCount('vm1') === 1 && !fleet.vm.vm1.state.frozen, 5_000, 'the deadline thaw');
    await waitFor(() => Date.now() >= deadline + 2 * SWEEP_MS + 200, 10_000, 'two sweeps past the deadline');
    assertInvariant('vm1', [deadline], 0);
    expect(fleet.vm.vm1.state.frozen).toBe(false);
  });
});

describe('slow freezes (B4, B11)', { timeout: 30_000 }, () => {
  it('B4: the freeze times out (default timeout: at the deadline) but the guest froze later → 504 AGENT_TIMEOUT at the freeze timeout naming the lease; one thaw, after the late freeze, within T_cmd + the thaw; lease ended endedBy deadline', async () => {
    fleet = await simFleet(['vm1']);
    const TTL = 2;
    const SLOW_MS = 2_500;
    const g = await start('b4', baseConfig({ type: 'memory' }, { ttl: TTL }));
    fleet.vm.vm1.setFault({ command: 'guest-fsfreeze-freeze', kind: 'delay', ms: SLOW_MS, times: 1 });
    const t0 = Date.now();
    const r = await call(g, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: TTL });
    const elapsed = Date.now() - t0;
    expect(r.status).toBe(504);
    expect(r.json).toMatchObject({ code: 'AGENT_TIMEOUT', leaseId: expect.any(String), frozenUnderLease: true });
    // T_cmd of a freeze is bounded by the lease: the 504 comes at the deadline, not after the late freeze
    expect(elapsed).toBeGreaterThanOrEqual(TTL * 1_000 - 100);
    expect(elapsed).toBeLessThanOrEqual(TTL * 1_000 + 1_000);
    await waitFor(() => thawCount('vm1') === 1 && !fleet.vm.vm1.state.frozen, 10_000, 'the thaw after the late freeze');
    await waitFor(() => Date.now() >= t0 + SLOW_MS + 2 * SWEEP_MS + 200, 10_000, 'two sweeps past the late freeze');
    const h = history('vm1');
    expect(h.map((e) => e.command)).toEqual(['guest-fsfreeze-freeze', THAW]);
    // the thaw follows the late freeze (received at h[0].at, done SLOW_MS later): within T_cmd + the thaw's round trip
    const after = h[1].at - h[0].at;
    expect(after).toBeGreaterThanOrEqual(SLOW_MS - 50);
    expect(after).toBeLessThanOrEqual(SLOW_MS + 1_000);
    expect((await call(g, 'GET', '/v1/vms/vm1/fsfreeze')).json).toMatchObject({ status: 'thawed', lease: null });
    const late = await call(g, 'DELETE', `/v1/vms/vm1/fsfreeze?leaseId=${String(r.json.leaseId)}`);
    expect(late.json).toMatchObject({ code: 'LEASE_EXPIRED', endedBy: 'deadline' });
  });

  it('B11: a slow freeze that outlives the freeze timeout → 504 AGENT_TIMEOUT at the timeout naming the lease, frozen under it; its holder thaws early with it (FREEZE_UNCONFIRMED), one thaw, after the late freeze', async () => {
    fleet = await simFleet(['vm1']);
    const FREEZE_TIMEOUT_MS = 1_000;
    const SLOW_MS = 1_500;
    const g = await start('b11t', baseConfig({ type: 'memory' }, { ttl: 10, freezeTimeoutMs: FREEZE_TIMEOUT_MS }));
    fleet.vm.vm1.setFault({ command: 'guest-fsfreeze-freeze', kind: 'delay', ms: SLOW_MS, times: 1 });
    const t0 = Date.now();
    const r = await call(g, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: 10 });
    const elapsed = Date.now() - t0;
    expect(r.status).toBe(504);
    expect(r.json).toMatchObject({ code: 'AGENT_TIMEOUT', leaseId: expect.any(String), frozenUnderLease: true });
    expect(elapsed).toBeGreaterThanOrEqual(FREEZE_TIMEOUT_MS);
    expect(elapsed).toBeLessThanOrEqual(FREEZE_TIMEOUT_MS + 1_000);
    expect(thawCount('vm1')).toBe(0);
    // the status command queues behind the late freeze on the VM's one channel: frozen, under the lease
    const st = await call(g, 'GET', '/v1/vms/vm1/fsfreeze');
    expect(st.json).toMatchObject({ status: 'frozen', lease: { leaseId: r.json.leaseId } });
    const th = await call(g, 'DELETE', `/v1/vms/vm1/fsfreeze?leaseId=${String(r.json.leaseId)}`);
    expect(th.status).toBe(200);
    expect(th.json).toMatchObject({ vm: 'vm1', consistent: false, reason: 'FREEZE_UNCONFIRMED', detail: expect.any(String) });
    expect(fleet.vm.vm1.state.frozen).toBe(false);
    const h = history('vm1');
    expect(h.map((e) => e.command)).toEqual(['guest-fsfreeze-freeze', THAW]);
    expect(h[1].at - h[0].at).toBeGreaterThanOrEqual(SLOW_MS - 50);
    expect((await call(g, 'GET', '/v1/vms/vm1/fsfreeze')).json).toMatchObject({ status: 'thawed', lease: null });
  });

  it('B11: a slow freeze that completes within the freeze timeout → 201 with the lease when it completes; thawed at the lease deadline (within 1 s), once', async () => {
    fleet = await simFleet(['vm1']);
    const SLOW_MS = 1_500;
    const TTL = 3;
    const g = await start('b11', baseConfig({ type: 'memory' }, { ttl: TTL, freezeTimeoutMs: 2_500 }));
    fleet.vm.vm1.setFault({ command: 'guest-fsfreeze-freeze', kind: 'delay', ms: SLOW_MS, times: 1 });
    const t0 = Date.now();
    const r = await call(g, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: TTL });
    const elapsed = Date.now() - t0;
    expect(r.status).toBe(201);
    expect(elapsed).toBeGreaterThanOrEqual(SLOW_MS);
    expect(elapsed).toBeLessThanOrEqual(SLOW_MS + 1_000);
    expect(fleet.vm.vm1.state.frozen).toBe(true);
    const deadline = Date.parse(String(r.json.expiresAt));
    await waitFor(() => thawCount('vm1') === 1 && !fleet.vm.vm1.state.frozen, TTL * 1_000 + 5_000, 'the deadline thaw');
    await waitFor(() => Date.now() >= deadline + 2 * SWEEP_MS + 200, 5_000, 'two sweeps past the deadline');
    assertInvariant('vm1', [deadline], 0);
  });
});

describe('B13: other commands while frozen', { timeout: 30_000 }, () => {
  it('409 VM_FROZEN (never sent) except ping/info/status/thaw; a ping timeout during the freeze does not mark the agent dead', async () => {
    fleet = await simFleet(['vm1']);
    const PING_TIMEOUT_MS = 500;
    const cfg = baseConfig({ type: 'memory' }, { ttl: 30 });
    (cfg.agent as Record<string, unknown>).timeouts = { fast: PING_TIMEOUT_MS };
    const g = await start('b13', cfg);
    const fr = await call(g, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: 30 });
    expect(fr.status).toBe(201);
    const sent = (cmd: string) => fleet.vm.vm1.stats.commandLog.filter((e) => e.command === cmd).length;
    const refused = await call(g, 'GET', '/v1/vms/vm1/vcpus');
    expect(refused.status).toBe(409);
    expect(refused.json.code).toBe('VM_FROZEN');
    expect(sent('guest-get-vcpus')).toBe(0);
    expect((await call(g, 'GET', '/v1/vms/vm1/ping')).status).toBe(200);
    expect((await call(g, 'GET', '/v1/vms/vm1/agent')).status).toBe(200);
    expect((await call(g, 'GET', '/v1/vms/vm1/fsfreeze')).json).toMatchObject({ status: 'frozen' });
    // a ping the agent reads and never answers: 504 at the ping's timeout
    fleet.vm.vm1.setFault({ command: 'guest-ping', kind: 'no-reply', times: 1 });
    const t0 = Date.now();
    const lost = await call(g, 'GET', '/v1/vms/vm1/ping');
    const elapsed = Date.now() - t0;
    expect(lost.status).toBe(504);
    expect(lost.json.code).toBe('AGENT_TIMEOUT');
    expect(elapsed).toBeGreaterThanOrEqual(PING_TIMEOUT_MS);
    expect(elapsed).toBeLessThanOrEqual(PING_TIMEOUT_MS + 1_000);
    // not dead: the VM's agent state stays "up" (a ping timeout while frozen marks nothing down),
    // the next ping answers, the holder's thaw goes through at once
    const view = await call(g, 'GET', '/v1/vms/vm1');
    expect(view.status).toBe(200);
    expect((view.json.agent as { state: string }).state).toBe('up');
    expect(view.json.frozen).toBe(true);
    expect((await call(g, 'GET', '/v1/vms/vm1/ping')).status).toBe(200);
    const th = await call(g, 'DELETE', `/v1/vms/vm1/fsfreeze?leaseId=${String(fr.json.leaseId)}`);
    expect(th.status).toBe(200);
    expect(th.json).toMatchObject({ consistent: true });
    expect(fleet.vm.vm1.state.frozen).toBe(false);
    expect(thawCount('vm1')).toBe(1);
    expect((await call(g, 'GET', '/v1/vms/vm1/vcpus')).status).toBe(200);
  });
});

describe('B14: a VM found frozen at start-up', { timeout: 30_000 }, () => {
  it('with no lease at all (frozen outside the gateway): left frozen, never thawed, reported frozen with no lease; a freeze is refused VM_FROZEN', async () => {
    fleet = await simFleet(['vm1'], { frozen: ['vm1'] });
    const g = await start('b14', baseConfig({ type: 'memory' }, { ttl: 2 }));
    await waitFor(() => /start-up reconciliation done|qga-gateway ready/.test(g.log()), 5_000, 'start-up');
    const st = await call(g, 'GET', '/v1/vms/vm1/fsfreeze');
    expect(st.status).toBe(200);
    expect(st.json).toMatchObject({ status: 'frozen', lease: null });
    // the fleet view: frozen by someone else ("external", no deadline), listed by GET /v1/freezes
    // (the status read above notices it; the view is updated asynchronously: polled, bounded)
    let view = await call(g, 'GET', '/v1/vms/vm1');
    await waitFor(async () => (view = await call(g, 'GET', '/v1/vms/vm1')).json.frozen === true, 2_000, 'GET /v1/vms/vm1 frozen');
    expect(view.json.frozen).toBe(true);
    expect(view.json.freeze).toEqual({ owner: 'external', since: expect.any(String) });
    const since = String((view.json.freeze as { since: string }).since);
    const listed = await call(g, 'GET', '/v1/freezes');
    expect(listed.status).toBe(200);
    expect(listed.json.freezes).toEqual([{ vm: 'vm1', vms: ['vm1'], owner: 'external', state: 'frozen', frozenAt: since }]);
    const r = await call(g, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: 2 });
    expect(r.status).toBe(409);
    expect(r.json.code).toBe('VM_FROZEN');
    // several sweeps and more than a lease's length: still nothing thaws it
    const t0 = Date.now();
    await waitFor(() => Date.now() - t0 >= 2_000 + 3 * SWEEP_MS, 10_000, 'a lease length and three sweeps');
    expect(thawCount('vm1')).toBe(0);
    expect(fleet.vm.vm1.state.frozen).toBe(true);
    expect((await call(g, 'GET', '/v1/vms/vm1')).json).toMatchObject({ frozen: true, freeze: { owner: 'external', since } });
  });
});

describe('B8: thaw with a wrong or ended lease', { timeout: 30_000 }, () => {
  it('wrong lease → 409 LEASE_CONFLICT, ended lease → 409 LEASE_EXPIRED (endedBy forced), the agent receives nothing; force → thaw + one audit record', async () => {
    fleet = await simFleet(['vm1']);
    const g = await start('b8', baseConfig({ type: 'memory' }, { ttl: 30 }));
    const fr = await call(g, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: 30 });
    expect(fr.status).toBe(201);
    const mark = fleet.vm.vm1.stats.commandLog.length;
    const wrong = await call(g, 'DELETE', '/v1/vms/vm1/fsfreeze?leaseId=00000000-0000-4000-8000-000000000000');
    expect(wrong.status).toBe(409);
    expect(wrong.json.code).toBe('LEASE_CONFLICT');
    expect(fleet.vm.vm1.stats.commandLog.slice(mark)).toEqual([]);
    expect(fleet.vm.vm1.state.frozen).toBe(true);
    // the anonymous caller of these gateways has the admin scope
    const forced = await call(g, 'DELETE', '/v1/vms/vm1/fsfreeze?force=true');
    expect(forced.status).toBe(200);
    expect(forced.json).toMatchObject({ forced: true, consistent: true });
    expect(fleet.vm.vm1.state.frozen).toBe(false);
    expect(thawCount('vm1')).toBe(1);
    const audits = () => g.log().split('\n').filter((l) => l.includes('"audit":true') && l.includes('"force-thaw"'));
    await waitFor(() => audits().length > 0, 5_000, 'the audit line');
    expect(audits()).toHaveLength(1);
    expect(JSON.parse(audits()[0])).toMatchObject({ audit: true, action: 'force-thaw', vm: 'vm1', by: 'anonymous', holder: 'anonymous', leaseId: fr.json.leaseId });
    // the forced thaw ends the freeze in the metrics too (not an automatic thaw)
    expect(await metric(g, 'qga_freeze_duration_seconds_count')).toBe(1);
    expect(await metric(g, 'qga_freeze_auto_thaws_total')).toBe(0);
    const mark2 = fleet.vm.vm1.stats.commandLog.length;
    const ended = await call(g, 'DELETE', `/v1/vms/vm1/fsfreeze?leaseId=${String(fr.json.leaseId)}`);
    expect(ended.status).toBe(409);
    expect(ended.json).toMatchObject({ code: 'LEASE_EXPIRED', endedBy: 'forced' });
    expect(fleet.vm.vm1.stats.commandLog.slice(mark2)).toEqual([]);
  });
});
