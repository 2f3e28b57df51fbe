/**
 * guest-info across sockets (issue 14, churn): a guest-ping on a new socket runs right after the
 * sync handshake when the channel's guest-info was read on an earlier socket less than
 * infoMaxAgeMs ago; every other job, a channel that never read it, an invalidated copy and an old
 * one read it first. A ping sent before the re-read carries no id (an agent restarted as an older
 * build may reject ids) and the copy of the earlier socket is never offered as current.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Channel } from '../../src/qga/channel.js';
import { AgentConnection } from '../../src/qga/connection.js';
import type { SimAgent } from '../../sim/index.js';
import { useSimChannels } from '../helpers/sim-channels.js';

const chans = useSimChannels('vm');
const setup = (opts?: Parameters<typeof chans.channel>[0]) => chans.channel(opts);

afterEach(() => {
  vi.restoreAllMocks();
});

const log = (vm: SimAgent): string[] => vm.stats.commandLog.map((e) => e.command);

describe('guest-info across sockets', () => {
  it('a ping on a new socket after a release is sync + ping, without an id; the next other command reads guest-info first', async () => {
    const { vm, ch } = await setup();
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
    // first contact: the channel has no copy yet, so it is read before the ping
    expect(log(vm)).toEqual(['guest-sync-delimited', 'guest-info', 'guest-ping']);
    expect(ch.agentInfo?.version).toBe('10.0.0');
    expect(ch.release()).toBe(true);
    const sent = vi.spyOn(AgentConnection.prototype, 'request');
    const syncs = vi.spyOn(AgentConnection.prototype, 'sync');
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
    expect(log(vm).slice(3)).toEqual(['guest-sync-delimited', 'guest-ping']);
    // written in the same write behind the sync (no id: AgentConnection.sync's follow)
    expect(syncs.mock.calls).toEqual([['guest-ping']]);
    expect(sent.mock.calls).toEqual([]);
    // the kept copy is the fleet view's (agentInfo), never offered as current on this socket
    expect(ch.agentInfo?.version).toBe('10.0.0');
    expect(ch.currentInfo()).toBeUndefined();
    await expect(ch.execute('guest-get-host-name')).resolves.toHaveProperty('host-name');
    expect(log(vm).slice(5)).toEqual(['guest-info', 'guest-get-host-name']);
    expect(sent.mock.calls).toEqual([
      ['guest-info', undefined, false],
      ['guest-get-host-name', undefined, true],
    ]);
    expect(ch.currentInfo()?.version).toBe('10.0.0');
    // read on this socket now: more pings send no guest-info, with ids (10.0 echoes them)
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
    expect(log(vm).slice(7)).toEqual(['guest-ping']);
    expect(sent.mock.calls[2]).toEqual(['guest-ping', undefined, true]);
  });

  it('an info or sync job on a new socket reads guest-info again (the probe notices a restarted agent)', async () => {
    const { vm, ch } = await setup();
    await ch.info();
    ch.release();
    await expect(ch.sync()).resolves.toHaveProperty('rttMs');
    expect(log(vm)).toEqual(['guest-sync-delimited', 'guest-info', 'guest-sync-delimited', 'guest-info']);
    ch.release();
    await ch.info();
    expect(log(vm).slice(4)).toEqual(['guest-sync-delimited', 'guest-info']);
  });

  it('an agent restarted as an old build that rejects ids still answers the first ping; the next command learns the new version', async () => {
    const { vm, ch, socketPath } = await setup();
    await ch.info();
    expect(ch.agentInfo?.echoesId).toBe(true);
    await vm.close();
    const old = await chans.sim.addVm({ name: `${vm.name}-old`, version: '2.5.0', disabled: [], socketPath });
    // the socket went with the old agent; the next ping connects again and skips guest-info (kept copy)
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
    expect(log(old)).toEqual(['guest-sync-delimited', 'guest-ping']);
    expect(ch.agentInfo?.version).toBe('10.0.0');
    expect(typeof (await ch.execute('guest-get-time'))).toBe('bigint');
    expect(log(old).slice(2)).toEqual(['guest-info', 'guest-get-time']);
    expect(ch.agentInfo?.version).toBe('2.5.0');
    expect(ch.agentInfo?.echoesId).toBe(false);
  });

  it('a copy infoMaxAgeMs old, an invalidated one, or infoMaxAgeMs 0: the ping waits for guest-info', async () => {
    let skew = 0;
    const { vm, ch } = await setup({ infoMaxAgeMs: 60_000, now: () => performance.now() + skew });
    await ch.info();
    ch.release();
    skew = 60_000;
    await ch.execute('guest-ping');
    expect(log(vm).slice(2)).toEqual(['guest-sync-delimited', 'guest-info', 'guest-ping']);
    // invalidated (e.g. after a thaw): re-read before the next job, a ping on the held socket too
    ch.invalidateInfo();
    await ch.execute('guest-ping');
    expect(log(vm).slice(5)).toEqual(['guest-info', 'guest-ping']);
    const { vm: vm0, ch: ch0 } = await setup({ infoMaxAgeMs: 0 });
    await ch0.info();
    ch0.release();
    await ch0.execute('guest-ping');
    expect(log(vm0)).toEqual(['guest-sync-delimited', 'guest-info', 'guest-sync-delimited', 'guest-info', 'guest-ping']);
  });

  it('replies an earlier client left behind never answer a ping that skipped guest-info', async () => {
    const { vm, ch, socketPath } = await setup();
    await ch.info();
    ch.release();
    vm.setFault({ command: 'guest-get-osinfo', kind: 'delay', ms: 100, times: 1 });
    await new Promise<void>((resolve, reject) => {
      const s = net.connect(socketPath, () => {
        s.write(Buffer.concat([Buffer.from([0xff]), Buffer.from('{"execute":"guest-get-osinfo"}\n{"execute":"guest-get-time"}\n')]), () => {
          s.destroy();
          resolve();
        });
      });
      s.on('error', reject);
    });
    let stale = 0;
    ch.events.on('stale', (e: { bytes: number }) => (stale += e.bytes));
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
    await expect(ch.execute('guest-get-host-name')).resolves.toHaveProperty('host-name');
    expect(stale).toBeGreaterThan(0);
    expect(log(vm).filter((c) => c === 'guest-info')).toHaveLength(2);
  });
});

describe('a ping written behind the sync (one write on a new socket)', () => {
  it('aborted while the sync is on the wire: the ping reply on its way is stale, the next job resyncs and gets its own answer', async () => {
    const { vm, ch } = await setup();
    await ch.info();
    ch.release();
    const resyncs: string[] = [];
    ch.events.on('resync', (e: { reason: string }) => resyncs.push(e.reason));
    vm.setFault({ command: 'guest-sync-delimited', kind: 'delay', ms: 150, times: 1 });
    const ac = new AbortController();
    const ping = ch.execute('guest-ping', undefined, { signal: ac.signal });
    await waitFor(() => log(vm).length === 3);
    ac.abort();
    await expect(ping).rejects.toMatchObject({ name: 'AbortError' });
    const t0 = performance.now();
    await expect(ch.execute('guest-get-host-name')).resolves.toHaveProperty('host-name');
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(resyncs).toEqual(['connect', 'aborted']);
    expect(log(vm).slice(2)).toEqual(['guest-sync-delimited', 'guest-ping', 'guest-sync-delimited', 'guest-info', 'guest-get-host-name']);
  });

  it('a priority job that arrives during the sync goes first; the ping runs after it, each with its own answer', async () => {
    const { vm, ch } = await setup();
    await ch.info();
    ch.release();
    vm.setFault({ command: 'guest-sync-delimited', kind: 'delay', ms: 150, times: 1 });
    const ping = ch.execute('guest-ping');
    await waitFor(() => log(vm).length === 3);
    const urgent = ch.execute('guest-get-host-name', undefined, { priority: 'freeze' });
    await expect(urgent).resolves.toHaveProperty('host-name');
    await expect(ping).resolves.toEqual({});
    expect(log(vm).slice(2)).toEqual(['guest-sync-delimited', 'guest-ping', 'guest-sync-delimited', 'guest-info', 'guest-get-host-name', 'guest-ping']);
  });

  it('the agent closes the socket during the sync: the ping is sent again on the next socket and answered once', async () => {
    const { vm, ch } = await setup();
    await ch.info();
    ch.release();
    vm.setFault({ command: 'guest-sync-delimited', kind: 'drop-mid-reply', times: 1 });
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
    expect(log(vm).slice(2)).toEqual(['guest-sync-delimited', 'guest-ping', 'guest-sync-delimited', 'guest-ping']);
    expect(ch.state).toBe('ready');
  });
});

async function waitFor(cond: () => boolean, ms = 2000): Promise<void> {
  const until = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('release (an eviction by the pool)', () => {
  it('leaves no idle-release timer behind: the released channel does not wake up when its idle release would have been due', async () => {
    const { ch: released } = await setup({ idleReleaseMs: 150 });
    const { ch: kept } = await setup({ idleReleaseMs: 150 });
    await released.execute('guest-ping');
    await kept.execute('guest-ping');
    // Session.prototype.tick: what the session's one Alarm calls when it rings
    const ticks = vi.spyOn(Object.getPrototypeOf((released as unknown as { session: object }).session) as { tick(): void }, 'tick');
    expect(released.release()).toBe(true);
    // the kept one's idle release rings (its tick), the released one's does not
    await waitFor(() => kept.state === 'idle', 2000);
    const self = (c: Channel) => (c as unknown as { session: object }).session;
    expect(ticks.mock.contexts.filter((s) => s === self(kept)).length).toBeGreaterThanOrEqual(1);
    expect(ticks.mock.contexts.filter((s) => s === self(released))).toHaveLength(0);
  });
});
