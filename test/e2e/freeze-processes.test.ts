/**
 * Real gateway processes sharing a real redis-server, simulated VMs in this process:
 *  - the process that froze is SIGKILLed → another process thaws by the deadline;
 *  - the freezing process is SIGSTOPped past its lease → after SIGCONT it sends the agent nothing
 *    and its stale thaw is refused;
 *  - a gateway restarted with a frozen VM under an expired lease reconciles it at start-up.
 * How long the VM stayed frozen past its lease is printed, and bounded only loosely (one sweep
 * interval plus 1.5 s: the sweeper's promise with slack for a loaded machine, not a speed test).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { simFleet, sleep, waitFor, type SimFleet } from '../integration/freeze-fixture.js';
import { call, spawnGateway, type Gateway } from './freeze-gateways.js';

const SWEEP_MS = 500;
let redis: TestRedis;
let fleet: SimFleet;
const gateways: Gateway[] = [];

beforeEach(async () => {
  redis = await startRedis();
  fleet = await simFleet(['vm1']);
});
afterEach(async () => {
  for (const g of gateways.splice(0)) await g.stop();
  await fleet?.close();
  await redis?.stop();
});

function config(sweepIntervalMs = SWEEP_MS): Record<string, unknown> {
  return {
    log: { level: 'info' },
    store: { type: 'redis', redisUrl: redis.url, keyPrefix: 'mp:', commandTimeoutMs: 1_000 },
    agent: { idleReleaseMs: 200 },
    freeze: { defaultTtlSeconds: 2, maxTtlSeconds: 60, maxTotalSeconds: 120, sweepIntervalMs },
    vms: [{ name: 'vm1', endpoint: fleet.vm.vm1.endpoint }],
  };
}

async function start(name: string, sweepIntervalMs?: number): Promise<Gateway> {
  const g = await spawnGateway(name, fleet.dir, config(sweepIntervalMs));
  gateways.push(g);
  return g;
}

const commands = () => fleet.vm.vm1.stats.commandLog;
/** Wait until this machine's clock is past an ISO instant (a lease's deadline): polled, bounded by it + 1 s. */
const untilPast = (iso: string) => waitFor(() => Date.now() > Date.parse(iso), Math.max(0, Date.parse(iso) - Date.now()) + 1_000, `past ${iso}`);
const thawAt = () => commands().find((c) => c.command === 'guest-fsfreeze-thaw')?.at;

describe('freeze across gateway processes', { timeout: 120_000 }, () => {
  it('SIGKILL of the freezing process: a second process thaws by the deadline', async () => {
    const [a, b] = await Promise.all([start('a'), start('b')]);
    const r = await call(a, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: 2 });
    expect(r.status).toBe(201);
    expect(fleet.vm.vm1.state.frozen).toBe(true);
    a.signal('SIGKILL');
    await waitFor(() => !fleet.vm.vm1.state.frozen, 20_000, 'deadline thaw by the surviving gateway');
    const overshoot = (thawAt() ?? Date.now()) - Date.parse(String(r.json.expiresAt));
    process.stdout.write(`[freeze-processes] freezer SIGKILLed: VM frozen ${overshoot} ms past its lease (sweep interval ${SWEEP_MS} ms)\n`);
    expect(overshoot).toBeGreaterThanOrEqual(0);
    // at most one sweep interval past the lease plus the thaw's round trip; 1.5 s of slack
    expect(overshoot).toBeLessThanOrEqual(SWEEP_MS + 1_500);
    expect(b.log()).toMatch(/lease expired: thawing by deadline/);
    const st = await call(b, 'GET', '/v1/vms/vm1/fsfreeze');
    expect(st.json).toMatchObject({ status: 'thawed', lease: null });
  });

  it('SIGSTOP past the lease: after SIGCONT the stale process sends nothing and its thaw is refused', async () => {
    const [a, b] = await Promise.all([start('a'), start('b')]);
    const old = await call(a, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: 2 });
    expect(old.status).toBe(201);
    // a lets go of the agent socket (agent.idleReleaseMs) right after the freeze: the simulator sees it leave
    await waitFor(() => !fleet.vm.vm1.stats.connected, 5_000, 'the freezer releases the agent socket');
    a.signal('SIGSTOP');
    // B3: while the stopped process's lease runs, the VM is held: another freeze is 409
    // LEASE_CONFLICT naming the holder and its deadline, and never reaches the agent
    const before = commands().length;
    const held = await call(b, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: 30 });
    expect(Date.now()).toBeLessThan(Date.parse(String(old.json.expiresAt)));
    expect(held.status).toBe(409);
    expect(held.json).toMatchObject({ code: 'LEASE_CONFLICT', holder: 'anonymous', expiresAt: old.json.expiresAt });
    expect(commands().slice(before).filter((c) => c.command.startsWith('guest-fsfreeze'))).toEqual([]);
    await waitFor(() => !fleet.vm.vm1.state.frozen, 20_000, 'deadline thaw while the freezer is stopped');
    // by the deadline: within one sweep interval + 1 s of it, not before it
    const late = (thawAt() ?? Date.now()) - Date.parse(String(old.json.expiresAt));
    expect(late).toBeGreaterThanOrEqual(0);
    expect(late).toBeLessThanOrEqual(SWEEP_MS + 1_000);
    // someone else freezes the VM again under a new lease, through the other process
    const fresh = await call(b, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: 30 });
    expect(fresh.status).toBe(201);
    expect(Number(fresh.json.fence)).toBeGreaterThan(Number(old.json.fence));
    // b lets go of the agent socket too, so that a could reach the agent at once after SIGCONT
    await waitFor(() => !fleet.vm.vm1.stats.connected, 5_000, 'the second process releases the agent socket');
    const mark = commands().length;
    a.signal('SIGCONT');
    // Not an event but a bounded "nothing happens" window (an absence has no event to wait for):
    // a's local timer fires at once and its sweeper runs every 0.5 s, so 3 s covers several rounds.
    await sleep(3_000);
    expect(commands().slice(mark)).toEqual([]);
    const stale = await call(a, 'DELETE', `/v1/vms/vm1/fsfreeze?leaseId=${String(old.json.leaseId)}`);
    expect(stale.status).toBe(409);
    // its lease was ended by the deadline thaw: LEASE_EXPIRED says so (it was LEASE_CONFLICT before tombstones)
    expect(stale.json.code).toBe('LEASE_EXPIRED');
    expect(stale.json.endedBy).toBe('deadline');
    expect(Date.parse(String(stale.json.endedAt))).toBeGreaterThanOrEqual(Date.parse(String(old.json.expiresAt)));
    expect(commands().slice(mark)).toEqual([]);
    expect(fleet.vm.vm1.state.frozen).toBe(true);
    expect(a.log()).toMatch(/stale thaw not sent/);
    const ok = await call(b, 'DELETE', `/v1/vms/vm1/fsfreeze?leaseId=${String(fresh.json.leaseId)}`);
    expect(ok.status).toBe(200);
    expect(fleet.vm.vm1.state.frozen).toBe(false);
  });

  it('a gateway restarted with a frozen VM under an expired lease thaws it at start-up', async () => {
    const a = await start('a', 60_000);
    const r = await call(a, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: 2 });
    expect(r.status).toBe(201);
    a.signal('SIGKILL');
    await a.exit;
    // the event: the lease's deadline passing (Redis and this process share the machine's clock)
    await untilPast(String(r.json.expiresAt));
    expect(fleet.vm.vm1.state.frozen).toBe(true);
    const t0 = Date.now();
    const a2 = await start('a2', 60_000); // no sweep tick for a minute: only reconciliation can thaw
    await waitFor(() => !fleet.vm.vm1.state.frozen, 20_000, 'reconciliation');
    process.stdout.write(`[freeze-processes] restarted gateway thawed the VM ${(thawAt() ?? Date.now()) - t0} ms after it was spawned (start-up included)\n`);
    expect(a2.log()).toMatch(/start-up reconciliation/);
  });

  it('embedded store with a state file: a SIGKILLed gateway thaws the VM when it starts again', async () => {
    const cfg = { ...config(60_000), store: { type: 'memory' }, freeze: { defaultTtlSeconds: 2, maxTtlSeconds: 60, maxTotalSeconds: 120, sweepIntervalMs: 60_000, stateFile: `${fleet.dir}/leases.json` } };
    const a = await spawnGateway('m1', fleet.dir, cfg);
    gateways.push(a);
    const r = await call(a, 'POST', '/v1/vms/vm1/fsfreeze', { ttlSeconds: 2 });
    expect(r.status).toBe(201);
    a.signal('SIGKILL');
    await a.exit;
    await untilPast(String(r.json.expiresAt)); // the lease's deadline, as above
    expect(fleet.vm.vm1.state.frozen).toBe(true);
    const a2 = await spawnGateway('m2', fleet.dir, cfg);
    gateways.push(a2);
    await waitFor(() => !fleet.vm.vm1.state.frozen, 20_000, 'reconciliation from the state file');
    expect(a2.log()).toMatch(/start-up reconciliation/);
  });
});
