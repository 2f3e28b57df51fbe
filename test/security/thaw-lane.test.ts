/**
 * Thaw always gets through (issue 12 item 1): freezes and thaws go in the channel's priority lane,
 * the next command on the wire after the one in flight, ahead of everything queued, never refused
 * by maxQueue or the pool's maxOpen. On the simulator, with every flooded command made slow
 * (200 ms), through the real app listening on a port and 200 concurrent HTTP clients.
 */
import { Worker } from 'node:worker_threads';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AgentPool } from '../../src/pool/pool.js';
import { Channel } from '../../src/qga/channel.js';
import type { CommandSpec, JsonValue, TimeoutClass } from '../../src/qga/types.js';
import type { SimAgent } from '../../sim/index.js';
import { listen, makeApp } from '../helpers/app.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { announceVmSkip, startVm, vmAvailable, type RunningVm } from '../helpers/vm.js';
import { BACKUP, rig, simFleet, type Rig, type SimFleet as FreezeFleet } from '../integration/freeze-fixture.js';
import { startSim, type SimFleet } from '../integration/routes-support.js';

const SLOW_MS = 200;
const CLIENTS = 200;
const VM_CLIENTS = 50;
const REAL_IN_FLIGHT_MS = 100;
const REFUSED_PAUSE_MS = 250;
const TIMEOUTS: Record<TimeoutClass, number> = { fast: 10_000, normal: 10_000, slow: 10_000, freeze: 10_000, long: 10_000 };
const catalog = (name: string): CommandSpec => ({
  name, timeout: 'normal', idempotent: true, successResponse: true, frozenSafe: false, scope: 'read', since: '0.15',
});
const rejection = (p: Promise<unknown>) => p.then(() => { throw new Error('expected a rejection'); }, (e: unknown) => e);

let fleet: SimFleet;
beforeAll(async () => {
  fleet = await startSim();
});
afterAll(async () => {
  await fleet?.close();
});

/** Wait until `cond` holds, polling; fails after `ms`. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('the channel priority lane', () => {
  const channels: Channel[] = [];
  afterEach(() => {
    for (const ch of channels.splice(0)) ch.destroy();
  });

  it('a full line still takes a thaw (and a freeze), and they run next, FIFO among them, ahead of every queued job', async () => {
    const vm = await fleet.add({ name: 'lane1' });
    vm.setFault({ command: 'guest-get-osinfo', kind: 'delay', ms: SLOW_MS });
    const ch = new Channel({ vm: 'lane1', endpoint: vm.endpoint, catalog, timeouts: TIMEOUTS, maxQueue: 4, idleReleaseMs: 0 });
    channels.push(ch);
    await ch.info();
    vm.resetStats();
    const reads: Promise<JsonValue>[] = [ch.execute('guest-get-osinfo')];
    await until(() => ch.stats().inFlight === 1, 2000, 'the first read on the wire');
    for (let i = 0; i < 4; i++) reads.push(ch.execute('guest-get-osinfo'));
    expect(await rejection(ch.execute('guest-get-osinfo'))).toMatchObject({ code: 'QUEUE_FULL' });
    const freeze = ch.execute('guest-fsfreeze-freeze', undefined, { priority: 'freeze' });
    const thaw = ch.execute('guest-fsfreeze-thaw', undefined, { priority: 'thaw' });
    expect(ch.stats().queued).toBe(6);
    // the lane does not count against maxQueue, nor make room for ordinary jobs
    expect(await rejection(ch.execute('guest-get-osinfo'))).toMatchObject({ code: 'QUEUE_FULL' });
    await expect(freeze).resolves.toBeGreaterThan(0);
    await expect(thaw).resolves.toBeGreaterThan(0);
    await Promise.all(reads);
    expect(vm.stats.commandLog.map((e) => e.command)).toEqual([
      'guest-get-osinfo', 'guest-fsfreeze-freeze', 'guest-fsfreeze-thaw', 'guest-get-osinfo', 'guest-get-osinfo', 'guest-get-osinfo', 'guest-get-osinfo',
    ]);
  });

  it('a draining (closing) channel takes a thaw at the head of its line; ordinary work is refused', async () => {
    const vm = await fleet.add({ name: 'lane2' });
    vm.setFault({ command: 'guest-get-osinfo', kind: 'delay', ms: SLOW_MS });
    const ch = new Channel({ vm: 'lane2', endpoint: vm.endpoint, catalog, timeouts: TIMEOUTS, maxQueue: 8, idleReleaseMs: 0 });
    channels.push(ch);
    await ch.info();
    vm.resetStats();
    const reads = [1, 2, 3].map(() => ch.execute('guest-get-osinfo'));
    await until(() => ch.stats().inFlight === 1, 2000, 'the first read on the wire');
    const closed = ch.close();
    expect(await rejection(ch.execute('guest-get-osinfo'))).toMatchObject({ code: 'SHUTTING_DOWN' });
    const t0 = Date.now();
    await expect(ch.execute('guest-fsfreeze-thaw', undefined, { priority: 'thaw' })).resolves.toBe(0);
    expect(Date.now() - t0).toBeLessThan(SLOW_MS + 150);
    await Promise.all(reads);
    await closed;
    expect(vm.stats.commandLog.map((e) => e.command)).toEqual(['guest-get-osinfo', 'guest-fsfreeze-thaw', 'guest-get-osinfo', 'guest-get-osinfo']);
  });

  it("the pool's maxOpen refuses an ordinary command but opens one more socket for a thaw", async () => {
    const a = await fleet.add({ name: 'lane3' });
    const b = await fleet.add({ name: 'lane4' });
    a.setFault({ command: 'guest-get-osinfo', kind: 'delay', ms: SLOW_MS });
    const endpoints: Record<string, SimAgent> = { lane3: a, lane4: b };
    const pool = new AgentPool({ resolve: (vm) => endpoints[vm]?.endpoint, maxOpen: 1, channelOptions: { catalog, timeouts: TIMEOUTS, idleReleaseMs: 0 } });
    try {
      const busy = pool.execute('lane3', 'guest-get-osinfo');
      await until(() => pool.stats().inFlight === 1, 2000, 'lane3 busy');
      expect(await rejection(pool.execute('lane4', 'guest-ping'))).toMatchObject({ code: 'QUEUE_FULL' });
      await expect(pool.execute('lane4', 'guest-fsfreeze-thaw', undefined, { priority: 'thaw' })).resolves.toBe(0);
      expect(pool.stats().open).toBe(2);
      await busy;
    } finally {
      pool.destroy();
    }
  });
});

/**
 * 200 clients, each GETting the VM's os info in a loop until stop(); answers counted by status.
 * They run in a worker thread: in the test's own thread they would starve the gateway's event
 * loop and the timings would measure the test harness rather than the gateway.
 */
const FLOOD_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
let stopped = false;
const byStatus = {};
parentPort.on('message', (m) => { if (m === 'stop') stopped = true; });
const loop = async () => {
  while (!stopped) {
    let status = 0;
    try {
      const r = await fetch(workerData.url);
      await r.arrayBuffer();
      status = r.status;
    } catch {}
    byStatus[status] = (byStatus[status] || 0) + 1;
    // a refused request (429 QUEUE_FULL, Retry-After: 1) comes back at once; these clients pause
    // a quarter of what they are told, so the line stays full without a busy loop of refusals
    if (status !== 200) await new Promise((r) => setTimeout(r, workerData.pauseMs));
  }
};
Promise.all(Array.from({ length: workerData.clients }, loop)).then(() => parentPort.postMessage(byStatus));
`;

function flood(base: string, vm: string, clients = CLIENTS, pauseMs = REFUSED_PAUSE_MS, route = 'os') {
  const worker = new Worker(FLOOD_WORKER, { eval: true, workerData: { url: `${base}/v1/vms/${vm}/${route}`, clients, pauseMs } });
  const done = new Promise<Record<string, number>>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  let stopping: Promise<Record<string, number>> | undefined;
  return {
    stop(): Promise<Record<string, number>> {
      stopping ??= (async () => {
        worker.postMessage('stop');
        const byStatus = await done;
        await worker.terminate();
        return byStatus;
      })();
      return stopping;
    },
  };
}

describe('freeze and thaw under a flood of 200 HTTP clients', { timeout: 30_000 }, () => {
  let app: FastifyInstance | undefined;
  let base: string;
  let vm: SimAgent;
  let name: string;
  let n = 0;

  async function setup(): Promise<void> {
    name = `fl${++n}`;
    vm = await fleet.add({ name });
    app = await makeApp({ vms: [{ name, endpoint: vm.endpoint }], config: { freeze: { sweepIntervalMs: 200 } } });
    base = await listen(app);
    // every command a reader makes on the agent (frozen or not) takes 200 ms
    vm.setFault({ command: 'guest-get-osinfo', kind: 'delay', ms: SLOW_MS });
    vm.setFault({ command: 'guest-fsfreeze-status', kind: 'delay', ms: SLOW_MS });
    watchPriority();
  }
  afterEach(async () => {
    vm?.clearFaults();
    await app?.close();
    app = undefined;
  });

  /** when each priority job was handed to the channel (the pool's execute wrapped) */
  let handedOver: Record<string, number[]> = {};
  /** how many jobs waited in the VM's line(s) when each priority job was handed over */
  let waitingThen: Record<string, number[]> = {};
  function watchPriority(): void {
    handedOver = {};
    waitingThen = {};
    const pool = app!.services.pool;
    const execute = pool.execute.bind(pool);
    pool.execute = (vmName, command, args, opts) => {
      if (opts?.priority) {
        (handedOver[command] ??= []).push(Date.now());
        (waitingThen[command] ??= []).push(pool.stats().queued);
      }
      return execute(vmName, command, args, opts);
    };
  }
  const queued = () => app!.services.pool.stats().queued;
  const log = () => vm.stats.commandLog;
  /** the first `command` in the agent's log at or after `from` */
  const entry = (command: string, from: number) => log().find((e) => e.command === command && e.at >= from);

  it("a freeze reaches the agent within 1 s + the in-flight command; then the owner's DELETE answers thawed within 1 s + the in-flight command", async () => {
    await setup();
    // pings: allowed while frozen and never shared by the read coalescer (identical osinfo reads
    // would share one queued command, and while frozen each would only wait on one shared status
    // check), so the line stays full of distinct commands before and after the freeze
    vm.setFault({ command: 'guest-ping', kind: 'delay', ms: SLOW_MS });
    const f = flood(base, name, CLIENTS, REFUSED_PAUSE_MS, 'ping');
    let byStatus: Record<string, number> = {};
    try {
      await until(() => queued() >= 64, 5000, 'the line full (maxQueue 64)');
      // past the start-up burst (200 connections opening at once): the steady flood
      await new Promise((r) => setTimeout(r, 1000));
      await until(() => queued() >= 64, 5000, 'the line full again');
      const t0 = Date.now();
      const fr = await fetch(`${base}/v1/vms/${name}/fsfreeze`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ttlSeconds: 60 }) });
      const t1 = Date.now();
      expect(fr.status, await fr.clone().text()).toBe(201);
      const lease = (await fr.json()) as { leaseId: string };
      const frozeAt = entry('guest-fsfreeze-freeze', t0);
      expect(frozeAt, 'the freeze reached the agent').toBeDefined();
      // both ends: not before it was asked for, and within 1 s + one in-flight command
      expect(frozeAt!.at).toBeGreaterThanOrEqual(t0);
      expect(frozeAt!.at - t0).toBeLessThanOrEqual(1000 + SLOW_MS);
      expect(t1 - t0).toBeLessThanOrEqual(1000 + SLOW_MS);
      // it overtook the full line: from its hand-over to the channel to its arrival, the agent
      // received at most the command that was already on its way; the readers queued ran after it
      const fAccepted = handedOver['guest-fsfreeze-freeze']?.[0] ?? Infinity;
      expect(fAccepted).toBeLessThanOrEqual(frozeAt!.at);
      expect(log().filter((e) => e.at > fAccepted && e.at < frozeAt!.at).length).toBeLessThanOrEqual(1);
      expect(waitingThen['guest-fsfreeze-freeze'][0]).toBeGreaterThanOrEqual(32);

      // the VM is frozen and still flooded (pings are allowed while frozen: 200 ms each)
      await new Promise((r) => setTimeout(r, 500));
      await until(() => queued() >= 64, 5000, 'the line full again');
      const d0 = Date.now();
      const th = await fetch(`${base}/v1/vms/${name}/fsfreeze?leaseId=${encodeURIComponent(lease.leaseId)}`, { method: 'DELETE' });
      const d1 = Date.now();
      expect(th.status, await th.clone().text()).toBe(200);
      expect(await th.json()).toMatchObject({ thawed: expect.any(Number), consistent: true });
      const thawAt = entry('guest-fsfreeze-thaw', d0);
      expect(thawAt, 'the thaw reached the agent').toBeDefined();
      expect(thawAt!.at).toBeGreaterThanOrEqual(d0);
      expect(thawAt!.at - d0).toBeLessThanOrEqual(1000 + SLOW_MS);
      expect(d1 - d0).toBeLessThanOrEqual(1000 + SLOW_MS);
      const tAccepted = handedOver['guest-fsfreeze-thaw']?.[0] ?? Infinity;
      expect(tAccepted).toBeLessThanOrEqual(thawAt!.at);
      expect(log().filter((e) => e.at > tAccepted && e.at < thawAt!.at).length).toBeLessThanOrEqual(1);
      expect(waitingThen['guest-fsfreeze-thaw'][0]).toBeGreaterThanOrEqual(32);
      expect(vm.stats.frozen).toBe(false);
      console.log(
        `[thaw-lane] freeze: handed over +${fAccepted - t0} ms, agent +${frozeAt!.at - t0} ms, HTTP ${t1 - t0} ms; ` +
          `DELETE: handed over +${tAccepted - d0} ms, agent +${thawAt!.at - d0} ms, HTTP ${d1 - d0} ms`,
      );
    } finally {
      vm.clearFaults();
      byStatus = await f.stop();
    }
    console.log(`[thaw-lane] flood answers by status: ${JSON.stringify(byStatus)}`);
    // the flood was real: the line was full, so some readers were turned away
    expect(byStatus['429'] ?? 0).toBeGreaterThan(0);
  });

  it('the deadline thaw reaches the agent within 1 s of the deadline (and not before it)', async () => {
    await setup();
    // 3 s: the 200 flooding connections fill the line well before the deadline, even on a busy machine
    const fr = await fetch(`${base}/v1/vms/${name}/fsfreeze`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ttlSeconds: 3 }) });
    expect(fr.status).toBe(201);
    const lease = (await fr.json()) as { expiresAt: string };
    const deadline = Date.parse(lease.expiresAt);
    // pings (allowed while frozen, 200 ms each) fill the line: refused reads no longer do, as they
    // share one status read (agent/service.ts freezeStatus)
    vm.setFault({ command: 'guest-ping', kind: 'delay', ms: SLOW_MS });
    const f = flood(base, name, CLIENTS, REFUSED_PAUSE_MS, 'ping');
    try {
      await until(() => queued() >= 64, 5000, 'the line full (maxQueue 64)');
      expect(Date.now()).toBeLessThan(deadline); // the flood was on before the deadline
      await until(() => entry('guest-fsfreeze-thaw', 0) !== undefined, deadline - Date.now() + 3000, 'the deadline thaw');
      const thawAt = entry('guest-fsfreeze-thaw', 0)!.at;
      const tAccepted = handedOver['guest-fsfreeze-thaw']?.[0] ?? Infinity;
      expect(log().filter((e) => e.at > tAccepted && e.at < thawAt).length).toBeLessThanOrEqual(1);
      expect(waitingThen['guest-fsfreeze-thaw'][0]).toBeGreaterThanOrEqual(32);
      expect(thawAt).toBeGreaterThanOrEqual(deadline - 5);
      expect(thawAt - deadline).toBeLessThanOrEqual(1000);
      console.log(`[thaw-lane] deadline thaw: handed over +${tAccepted - deadline} ms, agent +${thawAt - deadline} ms after the deadline`);
    } finally {
      vm.clearFaults();
      await f.stop();
    }
    expect(vm.stats.frozen).toBe(false);
  });
});

describe('the holder died: the sweeper\'s deadline thaw under a flood (two gateways sharing Redis)', { timeout: 30_000 }, () => {
  let redis: TestRedis;
  let fl: FreezeFleet;
  const rigs: Rig[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    fl = await simFleet(['sw1']);
  });
  afterAll(async () => {
    for (const r of rigs) await r.close().catch(() => undefined);
    await fl?.close();
    await redis?.stop();
  });

  it('reaches the agent within deadline + sweepIntervalMs + 1 s while 200 callers flood the survivor', async () => {
    const SWEEP_MS = 500;
    const vm = fl.vm.sw1;
    const holder = await rig(fl, { redisUrl: redis.url, keyPrefix: 'tl:', freeze: { sweepIntervalMs: SWEEP_MS } });
    const survivor = await rig(fl, { redisUrl: redis.url, keyPrefix: 'tl:', freeze: { sweepIntervalMs: SWEEP_MS } });
    rigs.push(holder, survivor);
    const r = await holder.freeze.freeze('sw1', { ttlSeconds: 1 }, BACKUP);
    const deadline = Date.parse(r.expiresAt);
    await holder.crash();
    // pings (allowed while frozen, 200 ms each) fill the line: refused reads no longer do, as they
    // share one status read (agent/service.ts freezeStatus)
    vm.setFault({ command: 'guest-ping', kind: 'delay', ms: SLOW_MS });
    let stop = false;
    const refused = new Map<string, number>();
    // 200 callers on the survivor's agent service (the path every HTTP read takes)
    const loops = Array.from({ length: CLIENTS }, async () => {
      while (!stop) {
        await survivor.services.agent.call('sw1', 'guest-ping').catch((e: { code?: string }) => {
          refused.set(String(e.code), (refused.get(String(e.code)) ?? 0) + 1);
          return new Promise((res) => setTimeout(res, 20));
        });
      }
    });
    try {
      await until(() => survivor.services.pool.stats().queued >= 64, 5000, 'the survivor\'s line full');
      expect(Date.now()).toBeLessThan(deadline);
      await until(() => vm.stats.commandLog.some((e) => e.command === 'guest-fsfreeze-thaw'), deadline - Date.now() + SWEEP_MS + 3000, 'the sweeper\'s thaw');
      const thawAt = vm.stats.commandLog.find((e) => e.command === 'guest-fsfreeze-thaw')!.at;
      console.log(`[thaw-lane] dead holder: sweeper's thaw reached the agent +${thawAt - deadline} ms after the deadline (sweep ${SWEEP_MS} ms); refused: ${JSON.stringify([...refused])}`);
      expect(thawAt).toBeGreaterThanOrEqual(deadline - 5);
      expect(thawAt - deadline).toBeLessThanOrEqual(SWEEP_MS + 1000);
      expect(refused.get('QUEUE_FULL') ?? 0).toBeGreaterThan(0);
    } finally {
      stop = true;
      vm.clearFaults();
      await Promise.all(loops);
    }
    expect(vm.stats.frozen).toBe(false);
  });
});

announceVmSkip('thaw-lane');

describe.skipIf(!vmAvailable())('the owner\'s thaw of a real guest under a flood of 50 HTTP clients', { timeout: 240_000 }, () => {
  let rig: RunningVm;
  beforeAll(async () => {
    rig = await startVm('thawlane');
  }, 240_000);
  afterAll(async () => {
    await rig?.stop();
  });

  it('DELETE answers thawed within 1 s + the in-flight command while 50 clients hammer the frozen guest', { timeout: 20_000 }, async () => {
    const app = await makeApp({ vms: [{ name: 'guest', endpoint: { type: 'unix', path: rig.socketPath } }] });
    let byStatus: Record<string, number> = {};
    try {
      const base = await listen(app);
      const fr = await fetch(`${base}/v1/vms/guest/fsfreeze`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ mountpoints: ['/data'], ttlSeconds: 60 }) });
      expect(fr.status, await fr.clone().text()).toBe(201);
      const lease = (await fr.json()) as { leaseId: string; frozen: number };
      expect(lease.frozen).toBe(1);
      // the real agent answers in about a millisecond: the clients come back 10 ms after a refusal
      const f = flood(base, 'guest', VM_CLIENTS, 10);
      let d0 = 0;
      let d1 = 0;
      try {
        await new Promise((r) => setTimeout(r, 1500));
        d0 = Date.now();
        const th = await fetch(`${base}/v1/vms/guest/fsfreeze?leaseId=${encodeURIComponent(lease.leaseId)}`, { method: 'DELETE' });
        d1 = Date.now();
        expect(th.status, await th.clone().text()).toBe(200);
        expect(await th.json()).toMatchObject({ thawed: 1, frozen: 1, consistent: true });
      } finally {
        byStatus = await f.stop();
      }
      console.log(`[thaw-lane] real guest: DELETE answered in ${d1 - d0} ms; flood answers by status: ${JSON.stringify(byStatus)}`);
      // the flood was on the frozen guest: readers were refused as VM_FROZEN (or the line was full)
      expect((byStatus['409'] ?? 0) + (byStatus['429'] ?? 0)).toBeGreaterThan(VM_CLIENTS);
      // a command on this guest takes about a millisecond (ping 0.45 ms, status alike): 100 ms covers the one in flight
      expect(d1 - d0).toBeLessThanOrEqual(1000 + REAL_IN_FLIGHT_MS);
      const st = await fetch(`${base}/v1/vms/guest/fsfreeze`);
      expect(await st.json()).toMatchObject({ status: 'thawed', lease: null });
    } finally {
      await app.close();
    }
  });
});
