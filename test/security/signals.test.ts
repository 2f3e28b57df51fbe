/**
 * Issue 12 item 8: signals and crashes never leave a VM frozen. The gateway runs as a child
 * process (src/server.ts with a config file), the VMs are simulated in this process.
 *  - SIGTERM with a frozen VM: the VM is thawed, the process exits 0 within grace + a bound;
 *  - SIGHUP: a new token and a new static VM take effect, the old lease stays valid and the
 *    agent channel is not dropped; an invalid file is reported once and the old config kept;
 *  - SIGKILL with the embedded store and no freeze.stateFile in the config: the gateway started
 *    again with the same state directory thaws the overdue VM at start;
 *  - Redis: SIGTERM thaws what this process froze; with handoverOnShutdown the lease is left in
 *    Redis for the other replicas' sweepers instead.
 */
import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { simFleet, sleep, waitFor, type SimFleet } from '../integration/freeze-fixture.js';
import { spawnGateway, type Gateway } from '../e2e/freeze-gateways.js';

let fleet: SimFleet | undefined;
let redis: TestRedis | undefined;
const gateways: Gateway[] = [];

afterEach(async () => {
  for (const g of gateways.splice(0)) await g.stop();
  await fleet?.close();
  fleet = undefined;
  await redis?.stop();
  redis = undefined;
});

const TOKEN_A = 'token-a-0123456789abcdef';
const TOKEN_B = 'token-b-0123456789abcdef';
const GRACE_MS = 1_500;

async function start(name: string, config: Record<string, unknown>, stateDir?: string): Promise<Gateway> {
  const g = await spawnGateway(name, fleet!.dir, config, stateDir ? { stateDir } : {});
  gateways.push(g);
  return g;
}

async function req(g: Gateway, method: string, url: string, opts: { token?: string; body?: unknown } = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = {};
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(g.url + url, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body), signal: AbortSignal.timeout(15_000) });
  const text = await r.text();
  return { status: r.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

/** Wait for the process to exit; its code and how long it took from now. */
async function exitOf(g: Gateway, withinMs: number): Promise<{ code: number | null; ms: number }> {
  const t0 = Date.now();
  const code = await Promise.race([g.exit, sleep(withinMs).then(() => 'timeout' as const)]);
  if (code === 'timeout') throw new Error(`gateway ${g.name} did not exit within ${withinMs} ms:\n${g.log()}`);
  return { code, ms: Date.now() - t0 };
}

const logLines = (g: Gateway, re: RegExp) => g.log().split('\n').filter((l) => re.test(l));

describe('signals and crashes never leave a VM frozen', { timeout: 30_000 }, () => {
  it('SIGTERM with a frozen VM (embedded store): the VM is thawed and the process exits 0 within the grace time + a bound', async () => {
    fleet = await simFleet(['vm1']);
    const g = await start('term', {
      log: { level: 'info' },
      server: { shutdownGraceMs: GRACE_MS },
      freeze: { defaultTtlSeconds: 60, maxTtlSeconds: 600, maxTotalSeconds: 600 },
      vms: [{ name: 'vm1', endpoint: fleet.vm.vm1.endpoint }],
    });
    const r = await req(g, 'POST', '/v1/vms/vm1/fsfreeze', { body: { ttlSeconds: 60 } });
    expect(r.status).toBe(201);
    expect(fleet.vm.vm1.stats.frozen).toBe(true);
    const before = fleet.vm.vm1.stats.commandLog.length;
    g.signal('SIGTERM');
    const { code, ms } = await exitOf(g, GRACE_MS + 10_000);
    process.stdout.write(`[signals] SIGTERM with a frozen VM: exit ${code} after ${ms} ms (grace ${GRACE_MS} ms)\n`);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(GRACE_MS + 5_000);
    expect(fleet.vm.vm1.stats.frozen).toBe(false);
    expect(fleet.vm.vm1.stats.commandLog.slice(before).map((c) => c.command)).toContain('guest-fsfreeze-thaw');
    expect(g.log()).toMatch(/shutting down: thawing a frozen session/);
  });

  it('SIGHUP: a new token and a new static VM take effect; the old token, the lease and the channel stay', async () => {
    fleet = await simFleet(['vm1', 'vm2']);
    const base = {
      log: { level: 'info' },
      agent: { idleReleaseMs: 60_000 },
      freeze: { defaultTtlSeconds: 60, maxTtlSeconds: 600, maxTotalSeconds: 600 },
    };
    const tokenA = { name: 'a', token: TOKEN_A, scopes: ['read', 'write', 'admin'] };
    const tokenB = { name: 'b', token: TOKEN_B, scopes: ['read'] };
    const vm1 = { name: 'vm1', endpoint: fleet.vm.vm1.endpoint };
    const vm2 = { name: 'vm2', endpoint: fleet.vm.vm2.endpoint };
    const g = await start('hup', { ...base, auth: { tokens: [tokenA] }, vms: [vm1] });
    const lease = await req(g, 'POST', '/v1/vms/vm1/fsfreeze', { token: TOKEN_A, body: { ttlSeconds: 60 } });
    expect(lease.status).toBe(201);
    // the freeze lets go of the socket; a ping opens the channel this test watches
    await sleep(300);
    expect((await req(g, 'GET', '/v1/vms/vm1/ping', { token: TOKEN_A })).status).toBe(200);
    expect((await req(g, 'GET', '/v1/vms/vm1/ping', { token: TOKEN_B })).status).toBe(401);
    expect((await req(g, 'GET', '/v1/vms/vm2', { token: TOKEN_A })).status).toBe(404);
    const connections = fleet.vm.vm1.stats.connections;

    await g.writeConfig({ ...base, log: { level: 'debug' }, auth: { tokens: [tokenA, tokenB] }, vms: [vm1, vm2] });
    g.signal('SIGHUP');
    await waitFor(() => /configuration reloaded/.test(g.log()), 10_000, 'the reload');
    expect(g.exited).toBe(false);

    expect((await req(g, 'GET', '/v1/vms/vm1/ping', { token: TOKEN_B })).status).toBe(200);
    expect((await req(g, 'GET', '/v1/vms/vm1/ping', { token: TOKEN_A })).status).toBe(200);
    expect((await req(g, 'GET', '/v1/vms/vm2/ping', { token: TOKEN_B })).status).toBe(200);
    // the channel to vm1 was kept: no new connection to its agent
    expect(fleet.vm.vm1.stats.connections).toBe(connections);
    // the lease survived: its holder can still renew it, and the VM is still frozen
    const renewed = await req(g, 'POST', '/v1/vms/vm1/fsfreeze/renew', { token: TOKEN_A, body: { leaseId: lease.json.leaseId, ttlSeconds: 60 } });
    expect(renewed.status).toBe(200);
    expect(fleet.vm.vm1.stats.frozen).toBe(true);
    // the new log level is in force
    expect(g.log()).toMatch(/"level":20/);
    // a token removed again at the next reload stops working
    await g.writeConfig({ ...base, auth: { tokens: [tokenA] }, vms: [vm1] });
    const reloads = logLines(g, /configuration reloaded/).length;
    g.signal('SIGHUP');
    await waitFor(() => logLines(g, /configuration reloaded/).length > reloads, 10_000, 'the second reload');
    expect((await req(g, 'GET', '/v1/vms/vm1/ping', { token: TOKEN_B })).status).toBe(401);
    expect((await req(g, 'GET', '/v1/vms/vm2', { token: TOKEN_A })).status).toBe(404);
  });

  it('SIGHUP with an invalid file: one error line, the old config kept, the process alive', async () => {
    fleet = await simFleet(['vm1']);
    const g = await start('bad-hup', { log: { level: 'info' }, auth: { tokens: [{ name: 'a', token: TOKEN_A, scopes: ['read'] }] }, vms: [{ name: 'vm1', endpoint: fleet.vm.vm1.endpoint }] });
    const { writeFile } = await import('node:fs/promises');
    await writeFile(g.configFile, 'server:\n  port: 99999\nauth: { tokens: [{ name: b, token: short, scopes: [read] }] }\n');
    g.signal('SIGHUP');
    await waitFor(() => /configuration reload \(SIGHUP\) failed/.test(g.log()), 10_000, 'the reload error');
    await sleep(300);
    expect(logLines(g, /reload \(SIGHUP\) failed/)).toHaveLength(1);
    expect(logLines(g, /"level":50/)).toHaveLength(1);
    expect(logLines(g, /reload \(SIGHUP\) failed/)[0]).toMatch(/server\.port/);
    expect(g.exited).toBe(false);
    expect((await req(g, 'GET', '/v1/vms/vm1/ping', { token: TOKEN_A })).status).toBe(200);
    expect((await req(g, 'GET', '/v1/vms/vm1/ping')).status).toBe(401);
  });

  it('SIGKILL with the embedded store and no stateFile in the config: restarted with the same state directory, it thaws the overdue VM at start', async () => {
    fleet = await simFleet(['vm1']);
    const stateDir = `${fleet.dir}/state`;
    // no freeze.stateFile: the default under the state directory is used; a minute between sweeps,
    // so only the start-up reconciliation can thaw
    const cfg = { log: { level: 'info' }, freeze: { defaultTtlSeconds: 1, maxTtlSeconds: 60, maxTotalSeconds: 120, sweepIntervalMs: 60_000 }, vms: [{ name: 'vm1', endpoint: fleet.vm.vm1.endpoint }] };
    const a = await start('kill-1', cfg, stateDir);
    expect(a.log()).toContain(`${stateDir}/freeze-leases.json`);
    const r = await req(a, 'POST', '/v1/vms/vm1/fsfreeze', { body: { ttlSeconds: 1 } });
    expect(r.status).toBe(201);
    expect(existsSync(`${stateDir}/freeze-leases.json`)).toBe(true);
    a.signal('SIGKILL');
    await a.exit;
    await sleep(1_200);
    expect(fleet.vm.vm1.stats.frozen).toBe(true); // nobody thawed it: the process is gone
    const t0 = Date.now();
    const b = await start('kill-2', cfg, stateDir);
    const ms = await waitFor(() => !fleet!.vm.vm1.stats.frozen, 10_000, 'the thaw at start');
    process.stdout.write(`[signals] SIGKILL + restart (embedded store, default state file): VM thawed ${Date.now() - t0} ms after the spawn (${ms} ms after ready)\n`);
    expect(b.log()).toMatch(/start-up reconciliation/);
  });

  it('Redis, handoverOnShutdown false (default): SIGTERM thaws what this process froze; true: the lease is left in Redis', async () => {
    fleet = await simFleet(['vm1', 'vm2']);
    redis = await startRedis();
    const cfg = (handoverOnShutdown: boolean) => ({
      log: { level: 'info' },
      server: { shutdownGraceMs: GRACE_MS },
      store: { type: 'redis', redisUrl: redis!.url, keyPrefix: 'sig:', commandTimeoutMs: 1_000 },
      freeze: { defaultTtlSeconds: 60, maxTtlSeconds: 600, maxTotalSeconds: 600, handoverOnShutdown },
      vms: [
        { name: 'vm1', endpoint: fleet!.vm.vm1.endpoint },
        { name: 'vm2', endpoint: fleet!.vm.vm2.endpoint },
      ],
    });
    // another replica holds vm2: a shutdown of the first must leave its lease alone
    const [g, other] = await Promise.all([start('redis-a', cfg(false)), start('redis-b', cfg(false))]);
    expect((await req(g, 'POST', '/v1/vms/vm1/fsfreeze', { body: { ttlSeconds: 60 } })).status).toBe(201);
    const otherLease = await req(other, 'POST', '/v1/vms/vm2/fsfreeze', { body: { ttlSeconds: 60 } });
    expect(otherLease.status).toBe(201);
    g.signal('SIGTERM');
    const { code, ms } = await exitOf(g, GRACE_MS + 10_000);
    process.stdout.write(`[signals] SIGTERM with Redis: exit ${code} after ${ms} ms\n`);
    expect(code).toBe(0);
    expect(fleet.vm.vm1.stats.frozen).toBe(false);
    expect(fleet.vm.vm2.stats.frozen).toBe(true);
    const st = await req(other, 'GET', '/v1/vms/vm2/fsfreeze');
    expect((st.json.lease as Record<string, unknown> | null)?.leaseId).toBe(otherLease.json.leaseId);

    // handoverOnShutdown: the lease stays in Redis for the surviving replica's sweeper
    const h = await start('redis-h', cfg(true));
    const lease = await req(h, 'POST', '/v1/vms/vm1/fsfreeze', { body: { ttlSeconds: 60 } });
    expect(lease.status).toBe(201);
    h.signal('SIGTERM');
    expect((await exitOf(h, GRACE_MS + 10_000)).code).toBe(0);
    expect(fleet.vm.vm1.stats.frozen).toBe(true);
    const held = await req(other, 'GET', '/v1/vms/vm1/fsfreeze');
    expect((held.json.lease as Record<string, unknown> | null)?.leaseId).toBe(lease.json.leaseId);
  });
});
