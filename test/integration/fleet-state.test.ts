/**
 * Issue 15 items 1, 3, 6, 7, 9 against the simulator through the real app: agent state per VM
 * (unknown → up → down → up), fail-fast while down and the background recovery, thaws and status
 * reads never failed fast, a VM frozen through the gateway not marked down by a silent handshake,
 * a silent socket (another client holds it) named in the problem, capabilities, freezes nobody
 * owns (noticed by the probe and by status reads, optionally thawed after a while, audited),
 * qga_agent_up / qga_vm_frozen, and the socket shared politely (idle release, per-VM override,
 * a probe never extends the hold), and prompt recovery (down VMs retried at least every second, a
 * discovered VM retried at once when its socket comes back).
 */
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { buildConfig } from '../../src/config/load.js';
import type { Gateway } from '../../src/gateway.js';
import type { JsonObject } from '../../src/qga/types.js';
import type { SimAgent } from '../../sim/index.js';
import { testConfig, type TestAppOptions } from '../helpers/app.js';
import { body, expectProblem, startSim, type SimFleet } from './routes-support.js';

let fleet: SimFleet;
const apps: FastifyInstance[] = [];
const clients: net.Socket[] = [];

beforeAll(async () => {
  fleet = await startSim();
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  for (const a of apps.splice(0)) await a.close();
});

afterAll(async () => {
  await fleet.close();
});

let seq = 0;
const SYNC_MS = 400;

async function setup(opts: { vm?: Record<string, unknown>; config?: Record<string, unknown>; frozen?: boolean; discovered?: boolean } = {}): Promise<{
  app: FastifyInstance;
  sim: SimAgent;
  vm: string;
  logs: JsonObject[];
}> {
  const vm = `fs${++seq}`;
  // discovered: the VM is `<vm>.sock` in a folder of its own that the registry watches
  const dir = path.join(fleet.dir, `disc-${vm}`);
  if (opts.discovered) await mkdir(dir);
  const sim = await fleet.add({ name: vm, ...(opts.frozen ? { frozen: true } : {}), ...(opts.discovered ? { socketPath: path.join(dir, `${vm}.sock`) } : {}) });
  const logs: JsonObject[] = [];
  const cfg: TestAppOptions = {
    vms: opts.discovered ? [] : [{ name: vm, endpoint: sim.endpoint, ...opts.vm }],
    logLevel: 'info',
    config: {
      agent: { idleReleaseMs: 0, syncTimeoutMs: SYNC_MS, probeIntervalMs: 0, timeouts: { fast: 1500, normal: 1500 } },
      ...(opts.discovered ? { registry: { directories: [{ path: dir, suffix: '.sock' }] } } : {}),
      ...opts.config,
    },
  };
  const config = testConfig(cfg);
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) logs.push(JSON.parse(line) as JsonObject);
      done();
    },
  });
  const app = await buildApp({ config, logger: pino({ level: 'info' }, sink), env: {} });
  await app.ready();
  apps.push(app);
  return { app, sim, vm, logs };
}

function gw(app: FastifyInstance): Gateway {
  return app.services as unknown as Gateway;
}

async function vmObject(app: FastifyInstance, vm: string): Promise<JsonObject> {
  const r = await app.inject({ method: 'GET', url: `/v1/vms/${vm}` });
  expect(r.statusCode).toBe(200);
  return body(r);
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms: number): Promise<number> {
  const t0 = performance.now();
  while (!(await cond())) {
    if (performance.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return performance.now() - t0;
}

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const v = await f();
  return [v, performance.now() - t0];
}

/** A raw client on the VM's socket: 0xFF + guest-sync-delimited; resolves with the time to its answer. */
function rawSync(path: string): { socket: net.Socket; answered: Promise<number> } {
  const socket = net.connect(path);
  clients.push(socket);
  const t0 = performance.now();
  const answered = new Promise<number>((resolve, reject) => {
    let buf = Buffer.alloc(0);
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.includes(Buffer.from('{"return": 4242}')) || buf.includes(Buffer.from('{"return":4242}'))) resolve(performance.now() - t0);
    });
    socket.on('error', reject);
  });
  socket.write(Buffer.concat([Buffer.from([0xff]), Buffer.from('{"execute":"guest-sync-delimited","arguments":{"id":4242}}\n')]));
  return { socket, answered };
}

function stopProbe(app: FastifyInstance): Promise<void> {
  const part = gw(app).parts.find((p) => p.name === 'agent probe');
  return part ? part.stop() : Promise.resolve();
}

describe('agent state per VM', () => {
  it('unknown until contacted, up with version and capabilities, down at once when the socket goes, 503 within 100 ms while down, up again by the background retry', async () => {
    const { app, sim, vm } = await setup();
    const t0 = Date.now();
    let v = await vmObject(app, vm);
    expect(v.agent).toMatchObject({ state: 'unknown' });
    expect(v.frozen).toBe(false);
    expect(v.capabilities).toBeUndefined();

    expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
    v = await vmObject(app, vm);
    const agent = v.agent as JsonObject;
    expect(agent.state).toBe('up');
    expect(agent.version).toBe('10.0.0');
    expect(Date.parse(agent.since as string)).toBeGreaterThanOrEqual(t0 - 5);
    expect(Date.parse(agent.lastSeen as string)).toBeGreaterThanOrEqual(Date.parse(agent.since as string));
    expect(v.capabilities).toEqual(expect.arrayContaining(['guest-exec', 'guest-ping', 'guest-fsfreeze-status']));

    // the socket goes away: the first call finds it (no listener: refused at once) and marks the VM down
    await sim.kill();
    const [, firstMs] = await timed(() => expectProblem(app, { method: 'GET', url: `/v1/vms/${vm}/ping` }, 503, 'AGENT_UNAVAILABLE'));
    expect(firstMs).toBeLessThan(1000);
    v = await vmObject(app, vm);
    expect((v.agent as JsonObject).state).toBe('down');
    expect((v.agent as JsonObject).lastError).toMatch(/ENOENT|ECONNREFUSED/);

    // while down: fail fast, with when and why
    for (let i = 0; i < 3; i++) {
      const [p, ms] = await timed(() => expectProblem(app, { method: 'GET', url: `/v1/vms/${vm}/hostname` }, 503, 'AGENT_UNAVAILABLE'));
      expect(ms).toBeGreaterThanOrEqual(0);
      expect(ms).toBeLessThan(100);
      expect(p.detail).toMatch(/is down since .*retried in the background/);
    }

    // the agent comes back: the retry (250 ms, doubling to 1 s) sees it without any caller asking
    await sim.restart();
    const upMs = await waitFor('up again', async () => ((await vmObject(app, vm)).agent as JsonObject).state === 'up', 3000);
    expect(upMs).toBeLessThan(2500);
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
  });

  it('fsfreeze status and thaw are never failed fast; other calls are', async () => {
    const { app, vm } = await setup();
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
    await stopProbe(app); // no background retry: the VM stays marked down although its agent is fine
    gw(app).agent.states.failed(vm, 'marked down by the test');
    const [, ms] = await timed(() => expectProblem(app, { method: 'GET', url: `/v1/vms/${vm}/ping` }, 503, 'AGENT_UNAVAILABLE'));
    expect(ms).toBeLessThan(100);
    const status = await app.inject({ method: 'GET', url: `/v1/vms/${vm}/fsfreeze` });
    expect(status.statusCode).toBe(200);
    expect(body(status).status).toBe('thawed');
    // the status read got an answer: the agent is up again
    expect(gw(app).agent.fleetState(vm).agent.state).toBe('up');
    gw(app).agent.states.failed(vm, 'marked down by the test');
    const thaw = await app.inject({ method: 'DELETE', url: `/v1/vms/${vm}/fsfreeze?force=true` });
    expect(thaw.statusCode).not.toBe(503);
  });

  it('a socket that accepts but never answers (another client holds it): down, and the problem names qm/vzdump/libvirt', async () => {
    const { app, sim, vm } = await setup();
    const holder = rawSync((sim.endpoint as { path: string }).path);
    await holder.answered; // that client is being served: the gateway's connection waits in the backlog
    const [p, ms] = await timed(() => expectProblem(app, { method: 'GET', url: `/v1/vms/${vm}/ping` }, 503, 'AGENT_UNAVAILABLE'));
    // the call's own deadline (fast = 1500 ms) ends it; the first handshake timed out at SYNC_MS
    expect(ms).toBeGreaterThanOrEqual(1400);
    expect(ms).toBeLessThan(2500);
    expect(p.detail).toContain('another client (qm agent, vzdump, libvirt) may hold the socket');
    const state = gw(app).agent.fleetState(vm).agent;
    expect(state.state).toBe('down');
    expect(state.lastError).toContain('another client');
    const [fast, fastMs] = await timed(() => expectProblem(app, { method: 'GET', url: `/v1/vms/${vm}/ping` }, 503, 'AGENT_UNAVAILABLE'));
    expect(fastMs).toBeLessThan(100);
    expect(fast.detail).toContain('another client');
    // the other client leaves: the gateway gets the socket and the VM is up again
    holder.socket.destroy();
    await waitFor('up again', () => gw(app).agent.fleetState(vm).agent.state === 'up', 5000);
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
  });

  it('a VM frozen through the gateway is not marked down when its handshake times out', async () => {
    const { app, sim, vm } = await setup({ vm: { idleReleaseMs: 50 } });
    const f = await app.inject({ method: 'POST', url: `/v1/vms/${vm}/fsfreeze`, payload: { ttlSeconds: 60 } });
    expect(f.statusCode).toBe(201);
    const leaseId = body(f).leaseId as string;
    await waitFor('socket released', () => gw(app).pool.peek(vm)?.state !== 'ready', 2000);
    sim.setFault({ command: 'guest-sync-delimited', kind: 'hang', times: 1 });
    const r = await app.inject({ method: 'GET', url: `/v1/vms/${vm}/fsfreeze` });
    expect(r.statusCode).toBe(200); // the channel's retry after the hang got through
    const state = gw(app).agent.fleetState(vm).agent;
    expect(state.state).toBe('up');
    expect(state.lastError).toMatch(/frozen|no reply|handshake/);
    const v = await vmObject(app, vm);
    expect(v.frozen).toBe(true);
    expect(v.freeze).toMatchObject({ owner: expect.any(String), expiresAt: expect.any(String) });
    sim.clearFaults();
    expect((await app.inject({ method: 'DELETE', url: `/v1/vms/${vm}/fsfreeze?leaseId=${leaseId}` })).statusCode).toBe(200);
    expect((await vmObject(app, vm)).frozen).toBe(false);
  });

  it('a frozen VM whose guest answers the handshake slowly for good is not marked down by the probe giving up on it (h8 F0)', async () => {
    const { app, sim, vm } = await setup({ vm: { idleReleaseMs: 50 } });
    const f = await app.inject({ method: 'POST', url: `/v1/vms/${vm}/fsfreeze`, payload: { ttlSeconds: 60 } });
    expect(f.statusCode).toBe(201);
    await waitFor('socket released', () => gw(app).pool.peek(vm)?.state !== 'ready', 2000);
    // every handshake answered after the channel's own timeout (SYNC_MS): the probe (deadline
    // SYNC_MS + 1 s) lets the socket go in the middle of its second handshake
    sim.setFault({ command: 'guest-sync-delimited', kind: 'delay', ms: SYNC_MS + 300 });
    const seen = new Set<string>();
    for (let i = 0; i < 3; i++) {
      await gw(app).agent.probe(vm);
      seen.add(gw(app).agent.fleetState(vm).agent.state);
    }
    expect([...seen]).not.toContain('down');
    sim.clearFaults();
    // the simulated agent first works off the delayed handshakes of the sockets let go
    const t0 = performance.now();
    while ((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/fsfreeze` })).statusCode !== 200) {
      if (performance.now() - t0 > 15_000) throw new Error('the agent did not answer again');
    }
    const t = await app.inject({ method: 'DELETE', url: `/v1/vms/${vm}/fsfreeze?leaseId=${body(f).leaseId as string}` });
    expect(t.statusCode, t.body).toBe(200);
  });

  it("a caller's wait shorter than a slow handshake does not mark the VM down for everyone (h8 F0)", async () => {
    const { app, sim, vm } = await setup({ config: { agent: { idleReleaseMs: 0, syncTimeoutMs: 3_000, probeIntervalMs: 0, timeouts: { fast: 4_000, normal: 4_000 } } } });
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
    gw(app).pool.peek(vm)?.release();
    // the agent answers a handshake in 1.6 s: slow, but within syncTimeoutMs
    sim.setFault({ command: 'guest-sync-delimited', kind: 'delay', ms: 1_600 });
    const w = await app.inject({ method: 'GET', url: `/v1/vms/${vm}/wait?for=agent&timeout=1` });
    expect(w.statusCode, w.body).toBe(408);
    expect(gw(app).agent.fleetState(vm).agent.state).not.toBe('down');
    // another caller is served, not failed fast
    const p = await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` });
    expect(p.statusCode, p.body).toBe(200);
    expect(gw(app).agent.fleetState(vm).agent.state).toBe('up');
    sim.clearFaults();
  });
});

describe('the probe, with its shipped interval (60 s)', () => {
  it('probes every VM when it starts, and a VM whose socket appears at once: neither is unknown for an interval (h8 F13)', async () => {
    const { app, vm } = await setup({ discovered: true, config: { agent: { idleReleaseMs: 0, syncTimeoutMs: SYNC_MS, probeIntervalMs: 60_000 } } });
    await waitFor('the first sweep', () => gw(app).agent.fleetState(vm).agent.state === 'up', 3_000);
    const later = `${vm}-late`;
    await fleet.add({ name: later, socketPath: path.join(fleet.dir, `disc-${vm}`, `${later}.sock`) });
    await waitFor('the new VM probed', () => gw(app).agent.fleetState(later).agent.state === 'up', 3_000);
  });
});

describe('recovery', () => {
  it('agent.downRetryMaxMs (default 1000): a VM down for a while is up within about 1 s of its socket coming back', async () => {
    const { app, sim, vm } = await setup();
    expect(buildConfig({ freeze: { stateFile: '/tmp/unused-fleet-state.json' } }, {}, 'test').agent.downRetryMaxMs).toBe(1000);
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
    await sim.kill();
    await expectProblem(app, { method: 'GET', url: `/v1/vms/${vm}/ping` }, 503, 'AGENT_UNAVAILABLE');
    // down long enough for the retry interval to reach its cap (250, 500, 1000, 1000 …; with the
    // old 5 s cap the retries were at 0.25, 0.75, 1.75, 3.75 s)
    await new Promise((r) => setTimeout(r, 2000));
    expect(gw(app).agent.fleetState(vm).agent.state).toBe('down');
    // those retries are the gateway's own: not agent commands in the metrics (h9 F13); the caller's ping is
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).not.toMatch(/^qga_agent_commands_total\{command="guest-sync-delimited"/m);
    expect(metrics).toMatch(/^qga_agent_commands_total\{command="guest-ping",outcome="unavailable"\} 1$/m);
    const t0 = performance.now();
    await sim.restart();
    const back = performance.now();
    const ms = await waitFor('up again', () => gw(app).agent.fleetState(vm).agent.state === 'up', 3000);
    expect(back - t0 + ms).toBeGreaterThanOrEqual(0);
    expect(ms).toBeLessThan(1000 + 300);
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
  });

  it('a discovered VM whose socket goes away is forgotten, and is retried at once when the registry sees the socket again', async () => {
    // a 5 s retry cap and no periodic probe: only the registry's notice can bring it back quickly
    const { app, sim, vm } = await setup({ discovered: true, config: { agent: { idleReleaseMs: 0, syncTimeoutMs: SYNC_MS, probeIntervalMs: 0, downRetryMaxMs: 5000 } } });
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
    expect(gw(app).agent.fleetState(vm).agent.state).toBe('up');
    await sim.kill();
    // the folder watch sees the socket go: the VM leaves the registry and the fleet view
    await waitFor('gone', () => gw(app).registry.resolve(vm) === undefined, 3000);
    await waitFor('forgotten', () => gw(app).agent.fleetState(vm).agent.state === 'unknown', 1000);
    const t0 = performance.now();
    await sim.restart();
    const ms = await waitFor('up again', () => gw(app).agent.fleetState(vm).agent.state === 'up', 3000);
    const total = performance.now() - t0;
    expect(total).toBeGreaterThanOrEqual(ms);
    // the watch settles 50 ms, then one probe
    expect(total).toBeLessThan(1000 + 300);
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
  });
});

describe('capabilities', () => {
  it('come from guest-info and follow an agent restarted with other commands disabled; the probe re-reads them on a held socket', async () => {
    const { app, sim, vm } = await setup();
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
    expect(gw(app).agent.fleetState(vm).capabilities).toContain('guest-exec');
    const socketPath = (sim.endpoint as { path: string }).path;
    await sim.close();
    const restarted = await fleet.add({ name: `${vm}-again`, socketPath, disabled: ['guest-exec'] });
    // the connection dropped with the old agent: a ping connects again and syncs, but needs no
    // guest-info (the copy is younger than agent.infoMaxAgeMs): the capabilities stay as last read
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
    expect(restarted.stats.commandLog.map((e) => e.command)).toEqual(['guest-sync-delimited', 'guest-ping']);
    expect(gw(app).agent.fleetState(vm).capabilities).toContain('guest-exec');
    // the first call that needs guest-info on the new socket re-reads it
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/hostname` })).statusCode).toBe(200);
    expect(restarted.stats.commandLog.map((e) => e.command).slice(2)).toEqual(['guest-info', 'guest-get-host-name']);
    const caps = gw(app).agent.fleetState(vm).capabilities ?? [];
    expect(caps).not.toContain('guest-exec');
    expect(caps).toContain('guest-exec-status');
    const listed = body(await app.inject({ method: 'GET', url: `/v1/vms?capability=guest-exec` }));
    expect((listed.items as JsonObject[]).map((i) => i.name)).not.toContain(vm);
    // the probe on the socket the channel holds re-reads guest-info as well
    const infos = restarted.stats.commandLog.filter((e) => e.command === 'guest-info').length;
    expect(await gw(app).agent.probe(vm)).toBe(true);
    expect(restarted.stats.commandLog.filter((e) => e.command === 'guest-info').length).toBe(infos + 1);
  });
});

describe('freezes nobody owns', () => {
  it('a status read notices a VM frozen outside the gateway: frozen with owner "external", counted, warned once, cleared by a thaw', async () => {
    const { app, vm, logs } = await setup({ frozen: true });
    expect((await vmObject(app, vm)).frozen).toBe(false); // not known yet
    const s = await app.inject({ method: 'GET', url: `/v1/vms/${vm}/fsfreeze` });
    expect(body(s).status).toBe('frozen');
    await waitFor('external freeze noticed', () => gw(app).agent.externalFreezes().some((f) => f.vm === vm), 2000);
    const v = await vmObject(app, vm);
    expect(v.frozen).toBe(true);
    expect((v.freeze as JsonObject).owner).toBe('external');
    expect(Number.isNaN(Date.parse((v.freeze as JsonObject).since as string))).toBe(false);
    // a second read does not warn again
    await app.inject({ method: 'GET', url: `/v1/vms/${vm}/fsfreeze` });
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toContain(`qga_vm_frozen{vm="${vm}"} 1`);
    expect(metrics).toContain(`qga_agent_up{vm="${vm}"} 1`);
    const warns = logs.filter((l) => l.vm === vm && l.level === 40 && String(l.msg).includes('no lease of this gateway'));
    expect(warns.length).toBe(1);
    // an admin's forced thaw ends it
    expect((await app.inject({ method: 'DELETE', url: `/v1/vms/${vm}/fsfreeze?force=true` })).statusCode).toBe(200);
    expect(gw(app).agent.externalFreezes().some((f) => f.vm === vm)).toBe(false);
    const after = await vmObject(app, vm);
    expect(after.frozen).toBe(false);
    expect(after.freeze).toBeUndefined();
  });

  it('the probe notices it without any caller; freeze.externalThawAfterMs thaws it after that long, audited', async () => {
    const { app, sim, vm, logs } = await setup({ frozen: true, config: { agent: { idleReleaseMs: 0, syncTimeoutMs: SYNC_MS, probeIntervalMs: 200 }, freeze: { externalThawAfterMs: 600 } } });
    const t0 = performance.now();
    await waitFor('probe noticed', () => gw(app).agent.externalFreezes().some((f) => f.vm === vm), 3000);
    const noticedMs = performance.now() - t0;
    expect(noticedMs).toBeLessThan(1500);
    expect(sim.state.frozen).toBe(true);
    await waitFor('thawed', () => !sim.state.frozen, 3000);
    const thawMs = performance.now() - t0;
    // not before externalThawAfterMs after it was noticed, and soon after that
    expect(thawMs).toBeGreaterThanOrEqual(600);
    expect(thawMs).toBeLessThan(noticedMs + 600 + 1000);
    const audits = (): JsonObject[] => logs.filter((l) => l.audit === true && l.action === 'external-thaw' && l.vm === vm);
    await waitFor('audit of the outcome', () => audits().length >= 2, 2000);
    expect(audits().map((a) => a.outcome ?? 'start')).toEqual(['start', 'thawed']);
    await waitFor('external cleared', () => !gw(app).agent.externalFreezes().some((f) => f.vm === vm), 2000);
  });
});

describe('fleet metrics', () => {
  it('metrics.perVmLabels false: one count per gauge, no vm label', async () => {
    const { app, sim, vm } = await setup({ config: { metrics: { perVmLabels: false } } });
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
    await sim.kill();
    await expectProblem(app, { method: 'GET', url: `/v1/vms/${vm}/ping` }, 503, 'AGENT_UNAVAILABLE');
    const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(text).toMatch(/^qga_agent_up 0$/m);
    expect(text).toMatch(/^qga_agent_down 1$/m);
    expect(text).toMatch(/^qga_vm_frozen 0$/m);
    expect(text).not.toContain(`vm="${vm}"`);
  });
});

describe('sharing the socket', () => {
  it('agent.idleReleaseMs defaults to 2000 ms and probeIntervalMs to 60000', () => {
    const c = buildConfig({ freeze: { stateFile: '/tmp/unused-fleet-state.json' } }, {}, 'test');
    expect(c.agent.idleReleaseMs).toBe(2000);
    expect(c.agent.probeIntervalMs).toBe(60_000);
    expect(c.metrics.perVmLabels).toBe(true);
  });

  it('a direct client right after the gateway used the socket is answered within the VM\'s idleReleaseMs + margin', async () => {
    const IDLE = 300;
    const { app, sim, vm } = await setup({ vm: { idleReleaseMs: IDLE } });
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
    const client = rawSync((sim.endpoint as { path: string }).path);
    const ms = await client.answered;
    // it waited behind the gateway's idle channel (one client at a time), at most IDLE + margin
    expect(ms).toBeGreaterThanOrEqual(IDLE - 100);
    expect(ms).toBeLessThan(IDLE + 400);
    expect(gw(app).pool.peek(vm)?.state).toBe('idle');
  });

  it('the background probe never extends the hold: a direct client after a gateway call is answered within idleReleaseMs + margin, every time', async () => {
    const IDLE = 500;
    const { app, sim, vm } = await setup({ config: { agent: { idleReleaseMs: IDLE, syncTimeoutMs: SYNC_MS, probeIntervalMs: 150, timeouts: { fast: 1500, normal: 1500 } } } });
    const socketPath = (sim.endpoint as { path: string }).path;
    const syncs = (): number => sim.stats.commandLog.filter((e) => e.command === 'guest-sync-delimited').length;
    const before = syncs();
    for (let i = 0; i < 4; i++) {
      expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
      const client = rawSync(socketPath);
      // a client never answered (the probe keeps the socket) fails here, not at the test timeout
      const ms = await Promise.race([client.answered, new Promise<number>((r) => setTimeout(() => r(Infinity), IDLE + 1500))]);
      client.socket.destroy();
      // it waited behind the gateway's idle channel, and no longer than its idle release
      expect(ms).toBeGreaterThanOrEqual(IDLE - 150);
      expect(ms).toBeLessThan(IDLE + 250);
    }
    // the probe ran meanwhile (every 150 ms, also on the socket the channel held)
    expect(syncs() - before).toBeGreaterThanOrEqual(8);
    expect(gw(app).agent.fleetState(vm).agent.state).toBe('up');
  });

  it('POST /v1/vms takes idleReleaseMs for that VM: its channel lets the socket go after that long', async () => {
    const { app, sim: base } = await setup({ config: { registry: { allowApiRegistration: true, allowedSocketRoots: [fleet.dir] } } });
    const name = `api${++seq}`;
    const sim = await fleet.add({ name });
    // registered a while after the gateway started: its agent state is unknown since then, not since the start
    await new Promise((r) => setTimeout(r, 200));
    const requested = Date.now();
    const r = await app.inject({ method: 'POST', url: '/v1/vms', payload: { name, endpoint: sim.endpoint, idleReleaseMs: 250 } });
    expect(r.statusCode).toBe(201);
    const answered = Date.now();
    const before = (await vmObject(app, name)).agent as JsonObject;
    expect(before.state).toBe('unknown');
    expect(Date.parse(before.since as string)).toBeGreaterThanOrEqual(requested - 2);
    expect(Date.parse(before.since as string)).toBeLessThanOrEqual(answered + 2);
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${name}/ping` })).statusCode).toBe(200);
    const t0 = performance.now();
    await waitFor('released', () => gw(app).pool.peek(name)?.state === 'idle', 2000);
    const ms = performance.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(150);
    expect(ms).toBeLessThan(650);
    expect(base.name).not.toBe(name);
    expect((await app.inject({ method: 'GET', url: '/metrics' })).body).toContain(`qga_agent_up{vm="${name}"} 1`);
    // deregistered: it leaves the fleet view and the metrics
    expect((await app.inject({ method: 'DELETE', url: `/v1/vms/${name}` })).statusCode).toBe(204);
    expect(gw(app).agent.fleetState(name).agent.state).toBe('unknown');
    expect((await app.inject({ method: 'GET', url: '/metrics' })).body).not.toContain(`vm="${name}"`);
  });
});
