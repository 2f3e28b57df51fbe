/**
 * Fault matrix E1 (../shared/FAULTS.md): a real SIGTERM to the gateway process (src/server.ts)
 * while a request is in flight (waiting on a slow agent command) and a VM is frozen; a second
 * connection has sent a request line whose headers are completed only after the signal, so it is
 * a new request to a stopping gateway. Asserted: the in-flight request
 * finishes (200) within server.shutdownGraceMs, the new one is 503 problem+json SHUTTING_DOWN, then the VM this
 * process froze is thawed (after the in-flight request ended), and the process exits 0.
 *
 * E3: a real event-loop stall — a busy loop of 2·L started by SIGUSR2 through a preloaded hook
 * (test/faults/stall-hook.mjs) — in the process that froze, with two processes sharing Redis.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, freePort, spawnGateway, type Gateway } from '../e2e/freeze-gateways.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { simFleet, waitFor, type SimFleet } from '../integration/freeze-fixture.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const GRACE_MS = 3_000;
const SLOW_MS = 1_200;

let fleet: SimFleet;
let gw: Gateway | undefined;
const others: Array<{ stop(): Promise<void> }> = [];

beforeAll(async () => {
  fleet = await simFleet(['e1a', 'e1b', 'e3']);
});
afterAll(async () => {
  await gw?.stop();
  for (const o of others.splice(0)) await o.stop();
  await fleet?.close();
});

/** Split raw HTTP/1.1 responses (Content-Length framed) read from one socket. */
function responses(raw: string): Array<{ status: number; body: string }> {
  const out: Array<{ status: number; body: string }> = [];
  let rest = raw;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const head = rest.slice(0, end);
    const len = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
    if (rest.length < end + 4 + len) break;
    out.push({ status: Number(head.split(' ')[1]), body: rest.slice(end + 4, end + 4 + len) });
    rest = rest.slice(end + 4 + len);
  }
  return out;
}

describe('E1: SIGTERM with a request in flight and a frozen VM', { timeout: 60_000 }, () => {
  it('the in-flight request finishes within shutdownGraceMs, a new one is 503, then the frozen VM is thawed and the process exits 0', async () => {
    gw = await spawnGateway('e1', fleet.dir, {
      log: { level: 'info' },
      server: { shutdownGraceMs: GRACE_MS },
      freeze: { defaultTtlSeconds: 60, maxTtlSeconds: 600, maxTotalSeconds: 600 },
      vms: ['e1a', 'e1b'].map((name) => ({ name, endpoint: fleet.vm[name].endpoint })),
    });
    const g = gw;
    const frozen = await fetch(`${g.url}/v1/vms/e1a/fsfreeze`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"ttlSeconds":60}' });
    expect(frozen.status).toBe(201);
    expect(fleet.vm.e1a.state.frozen).toBe(true);
    // warm the slow VM's channel, then make its osinfo slow
    expect((await fetch(`${g.url}/v1/vms/e1b/ping`)).status).toBe(200);
    // an exec waiting for a process that outlives the grace: cut by the stop, answered 202 still running
    const execWait = fetch(`${g.url}/v1/vms/e1b/exec`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ path: '/bin/sh', arg: ['-c', 'sleep 600'], wait: 120 }) }).then(
      async (r) => ({ status: r.status, location: r.headers.get('location'), body: (await r.json()) as Record<string, unknown> }),
    );
    await waitFor(() => fleet.vm.e1b.stats.commandLog.some((c) => c.command === 'guest-exec'), 5_000, 'the exec to start');
    fleet.vm.e1b.setFault({ command: 'guest-get-osinfo', kind: 'delay', ms: SLOW_MS });

    const { port } = new URL(g.url);
    const host = `127.0.0.1:${port}`;
    // the in-flight request, on its own connection
    const mark = fleet.vm.e1b.stats.commandLog.length;
    let inflightAt = 0;
    const inflight = fetch(`${g.url}/v1/vms/e1b/os`).then(async (r) => ((inflightAt = Date.now()), { status: r.status, body: await r.text() }));
    await waitFor(() => fleet.vm.e1b.stats.commandLog.slice(mark).some((c) => c.command === 'guest-get-osinfo'), 5_000, 'the slow command reaching the agent');
    // a second connection whose request line has arrived but not the end of its headers: the
    // request exists for the application only once they are complete, after the signal
    const sock = net.connect(Number(port), '127.0.0.1');
    let raw = '';
    sock.on('data', (d: Buffer) => (raw += d.toString('latin1')));
    sock.on('error', () => undefined);
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.write(`GET /v1/vms/e1b/hostname HTTP/1.1\r\nHost: ${host}\r\n`);

    const t0 = Date.now();
    g.signal('SIGTERM');
    await waitFor(() => /"msg":"shutting down"/.test(g.log()), 5_000, 'the shutdown log line');
    sock.write('\r\n');
    await waitFor(() => responses(raw).length >= 1, 5_000, 'the answer to the request made after SIGTERM');
    const [late] = responses(raw);
    expect(late.status, late.body).toBe(503);
    expect(JSON.parse(late.body)).toMatchObject({ code: 'SHUTTING_DOWN', status: 503 });
    sock.destroy();

    const first = await inflight;
    expect(first.status, first.body).toBe(200);
    expect(inflightAt - t0).toBeGreaterThanOrEqual(0);
    expect(inflightAt - t0).toBeLessThanOrEqual(GRACE_MS);

    const code = await Promise.race([g.exit, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), GRACE_MS + 15_000))]);
    expect(code).toBe(0);
    // the exec wait was cut by the stop: 202, the process still running (exited: false), where to ask later
    const ex = await execWait;
    expect([ex.status, ex.body.exited, typeof ex.body.pid]).toEqual([202, false, 'number']);
    expect(ex.location).toBe(`/v1/vms/e1b/exec/${String(ex.body.pid)}`);
    expect(fleet.vm.e1a.state.frozen).toBe(false);
    const thawAt = fleet.vm.e1a.stats.commandLog.filter((c) => c.command === 'guest-fsfreeze-thaw').at(-1)?.at ?? 0;
    // thawed on the way out, after the in-flight request ended and before the exit
    expect(thawAt).toBeGreaterThanOrEqual(t0);
    expect(thawAt).toBeLessThanOrEqual(Date.now());
    expect(g.log()).toMatch(/shutting down: thawing a frozen session/);
  });
});

/** A gateway process like spawnGateway's, with test/faults/stall-hook.mjs preloaded (SIGUSR2 = busy loop of stallMs). */
async function stallableGateway(name: string, config: Record<string, unknown>, stallMs: number): Promise<{ url: string; log(): string; stall(): void; stop(): Promise<void> }> {
  const port = await freePort();
  const file = path.join(fleet.dir, `${name}.yaml`);
  await writeFile(file, stringify({ auth: { anonymousScopes: ['read', 'write', 'admin'] }, ...config, server: { host: '127.0.0.1', port } }));
  let out = '';
  const child = spawn(process.execPath, ['--import', 'tsx', '--import', path.join(ROOT, 'test', 'faults', 'stall-hook.mjs'), 'src/server.ts', '--config', file], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, QGA_GATEWAY_CONFIG: '', REDIS_URL: '', QGA_STORE: '', QGA_GATEWAY_STATE_DIR: path.join(fleet.dir, `${name}.state`), STATE_DIRECTORY: '', QGA_TEST_STALL_MS: String(stallMs) },
  });
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exit = new Promise<void>((r) => child.once('exit', () => r()));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1_000) }).catch(() => undefined))?.ok === true, 60_000, `${name} listening`);
  return {
    url,
    log: () => out,
    stall: () => void child.kill('SIGUSR2'),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exit;
    },
  };
}

describe('E3: event-loop stall of 2·L in the freezing process', { timeout: 60_000 }, () => {
  it('another process thaws within [D, D + S + 1 s]; after the stall the stalled process sends the agent nothing and its thaw is 409 LEASE_EXPIRED', async () => {
    const L = 3;
    const SWEEP_MS = 500;
    const redis: TestRedis = await startRedis();
    others.push(redis);
    const config = (sweepIntervalMs: number) => ({
      log: { level: 'info' },
      store: { type: 'redis', redisUrl: redis.url, keyPrefix: 'e3:', commandTimeoutMs: 1_000 },
      agent: { idleReleaseMs: 200 },
      freeze: { defaultTtlSeconds: L, maxTtlSeconds: 60, maxTotalSeconds: 120, sweepIntervalMs },
      vms: [{ name: 'e3', endpoint: fleet.vm.e3.endpoint }],
    });
    const a = await stallableGateway('e3a', config(SWEEP_MS), 2 * L * 1000);
    others.push(a);
    const b = await spawnGateway('e3b', fleet.dir, config(SWEEP_MS));
    others.push(b);
    const old = await fetch(`${a.url}/v1/vms/e3/fsfreeze`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ttlSeconds: L }) });
    expect(old.status).toBe(201);
    const lease = (await old.json()) as { leaseId: string; expiresAt: string; fence: number };
    const deadline = Date.parse(lease.expiresAt);
    const stalledAt = Date.now();
    a.stall();
    // the other process keeps the deadline while the freezer's event loop is blocked
    await waitFor(() => !fleet.vm.e3.state.frozen, 10_000, 'deadline thaw by the other process');
    const thawAt = fleet.vm.e3.stats.commandLog.filter((c) => c.command === 'guest-fsfreeze-thaw').at(-1)?.at ?? 0;
    expect(thawAt).toBeGreaterThanOrEqual(deadline);
    expect(thawAt).toBeLessThanOrEqual(deadline + SWEEP_MS + 1_000);
    const fresh = await call(b, 'POST', '/v1/vms/e3/fsfreeze', { ttlSeconds: 30 });
    expect(fresh.status).toBe(201);
    expect(Number(fresh.json.fence)).toBeGreaterThan(lease.fence);
    expect(Date.now() - stalledAt).toBeLessThan(2 * L * 1000);
    const mark = fleet.vm.e3.stats.commandLog.length;
    // the stall ends: the stalled process's overdue timer fires, checks its lease, and sends nothing
    await waitFor(() => /stale thaw not sent/.test(a.log()), 2 * L * 1000 + 10_000, 'the stalled process refusing its stale thaw');
    expect(fleet.vm.e3.stats.commandLog.slice(mark).map((c) => c.command)).toEqual([]);
    const stale = await fetch(`${a.url}/v1/vms/e3/fsfreeze?leaseId=${encodeURIComponent(lease.leaseId)}`, { method: 'DELETE' });
    expect(stale.status).toBe(409);
    expect(((await stale.json()) as { code: string }).code).toBe('LEASE_EXPIRED');
    expect(fleet.vm.e3.stats.commandLog.slice(mark).map((c) => c.command)).toEqual([]);
    expect(fleet.vm.e3.state.frozen).toBe(true);
    const ok = await call(b, 'DELETE', `/v1/vms/e3/fsfreeze?leaseId=${String(fresh.json.leaseId)}`);
    expect(ok.status).toBe(200);
  });
});
