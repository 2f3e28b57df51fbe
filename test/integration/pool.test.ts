import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { Channel } from '../../src/qga/channel.js';
import type { Endpoint, TimeoutClass } from '../../src/qga/types.js';
import { AgentPool, type AgentPoolOptions, type PoolCommandEvent, type PoolStateEvent } from '../../src/pool/pool.js';
import { startFakeAgent, type FakeAgent } from '../helpers/fake-agent.js';

const TIMEOUTS: Record<TimeoutClass, number> = { fast: 3000, normal: 3000, slow: 3000, freeze: 3000, long: 3000 };

let dir: string;
let agents: Map<string, FakeAgent>;
let pools: AgentPool[];

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'pool-test-'));
  agents = new Map();
  pools = [];
  for (const name of ['vm1', 'vm2', 'vm3']) agents.set(name, await startFakeAgent({ dir, name }));
});

afterEach(async () => {
  for (const p of pools) p.destroy();
  for (const a of agents.values()) await a.close();
  await rm(dir, { recursive: true, force: true });
});

function endpointOf(vm: string): Endpoint | undefined {
  const a = agents.get(vm);
  return a ? { type: 'unix', path: a.socketPath } : undefined;
}

function makePool(opts: Partial<AgentPoolOptions> & { idleReleaseMs?: number; maxQueue?: number } = {}): AgentPool {
  const { idleReleaseMs, maxQueue, ...rest } = opts;
  const pool = new AgentPool({
    resolve: endpointOf,
    channelOptions: { catalog: () => undefined, timeouts: TIMEOUTS, idleReleaseMs: idleReleaseMs ?? 0, maxQueue },
    ...rest,
  });
  pools.push(pool);
  return pool;
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
}

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('AgentPool', () => {
  it('creates channels lazily through the factory and reuses them', async () => {
    const made: string[] = [];
    const pool = makePool({
      createChannel: (vm, endpoint) => {
        made.push(vm);
        return new Channel({ vm, endpoint, catalog: () => undefined, timeouts: TIMEOUTS, idleReleaseMs: 0 });
      },
    });
    expect(pool.has('vm1')).toBe(false);
    expect(pool.stats().channels).toEqual([]);
    expect(agents.get('vm1')!.connections).toBe(0);
    await expect(pool.execute('vm1', 'guest-ping')).resolves.toEqual({});
    await expect(pool.execute('vm1', 'guest-ping')).resolves.toEqual({});
    expect(made).toEqual(['vm1']);
    expect(pool.has('vm1')).toBe(true);
    expect(pool.channel('vm1')).toBe(pool.channel('vm1'));
    expect(agents.get('vm1')!.connections).toBe(1);
  });

  it('rejects an unknown VM with VM_NOT_FOUND', async () => {
    const pool = makePool();
    const err = await rejection(pool.execute('nope', 'guest-ping'));
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe('VM_NOT_FOUND');
    expect(() => pool.channel('nope')).toThrow(GatewayError);
    expect(pool.has('nope')).toBe(false);
  });

  it('releases the least recently used idle channel at maxOpen', async () => {
    const pool = makePool({ maxOpen: 2 });
    await pool.execute('vm1', 'guest-ping');
    await pool.execute('vm2', 'guest-ping');
    await pool.execute('vm1', 'guest-ping'); // vm2 is now the least recently used
    expect(pool.stats().open).toBe(2);
    await pool.execute('vm3', 'guest-ping');
    const states = Object.fromEntries(pool.stats().channels.map((c) => [c.vm, c.state]));
    expect(states).toEqual({ vm1: 'ready', vm2: 'idle', vm3: 'ready' });
    expect(pool.stats().open).toBe(2);
    await waitFor(() => agents.get('vm2')!.connected === 0);
    // vm2 comes back by pushing out vm1 (now the LRU)
    await pool.execute('vm2', 'guest-ping');
    expect(pool.channel('vm1').state).toBe('idle');
    expect(pool.stats().open).toBe(2);
  });

  it('passes over a busy least recently used channel and releases the next idle one', async () => {
    const pool = makePool({ maxOpen: 2 });
    const hung = pool.execute('vm1', 'test-hang', undefined, { timeoutMs: 2000 });
    await waitFor(() => agents.get('vm1')!.commands.includes('test-hang'));
    await pool.execute('vm2', 'guest-ping');
    await pool.execute('vm3', 'guest-ping');
    const states = Object.fromEntries(pool.stats().channels.map((c) => [c.vm, c.state]));
    expect(states).toEqual({ vm1: 'ready', vm2: 'idle', vm3: 'ready' });
    expect(pool.stats().open).toBe(2);
    pool.destroy();
    expect(await rejection(hung)).toMatchObject({ code: 'AGENT_UNAVAILABLE' });
  });

  it('a channel that let go of its socket by itself (idle release) frees its place without evicting another', async () => {
    const pool = makePool({ maxOpen: 2, idleReleaseOf: (vm) => (vm === 'vm1' ? 30 : undefined) });
    await pool.execute('vm1', 'guest-ping');
    await pool.execute('vm2', 'guest-ping');
    await waitFor(() => pool.channel('vm1').state === 'idle');
    await pool.execute('vm3', 'guest-ping');
    const states = Object.fromEntries(pool.stats().channels.map((c) => [c.vm, c.state]));
    expect(states).toEqual({ vm1: 'idle', vm2: 'ready', vm3: 'ready' });
    expect(pool.stats().open).toBe(2);
  });

  it('answers QUEUE_FULL when every open channel is busy', async () => {
    const pool = makePool({ maxOpen: 1 });
    const hung = pool.execute('vm1', 'test-hang', undefined, { timeoutMs: 2000 });
    await waitFor(() => agents.get('vm1')!.commands.includes('test-hang'));
    const err = await rejection(pool.execute('vm2', 'guest-ping'));
    expect(err).toMatchObject({ code: 'QUEUE_FULL', retryAfter: 1 });
    expect(pool.has('vm2')).toBe(true);
    expect(pool.channel('vm2').state).toBe('idle');
    pool.destroy();
    expect(await rejection(hung)).toMatchObject({ code: 'AGENT_UNAVAILABLE' });
  });

  it('bounds sockets opened through the channel itself (info, sync, execute) at maxOpen', async () => {
    const pool = makePool({ maxOpen: 1 });
    const hung = pool.execute('vm1', 'test-hang', undefined, { timeoutMs: 2000 });
    await waitFor(() => agents.get('vm1')!.commands.includes('test-hang'));
    const ch = pool.channel('vm2');
    // read-only inspection makes the channel object but opens nothing
    expect(ch.stats()).toMatchObject({ vm: 'vm2', state: 'idle' });
    expect(ch.agentInfo).toBeUndefined();
    for (const attempt of [() => ch.info(), () => ch.sync(), () => ch.execute('guest-ping')]) {
      expect(await rejection(attempt())).toMatchObject({ code: 'QUEUE_FULL', retryAfter: 1 });
    }
    expect(pool.stats().open).toBe(1);
    expect(agents.get('vm2')!.connections).toBe(0);
    pool.destroy();
    await rejection(hung);
  });

  it('counts a draining (removed) channel against maxOpen until it has closed', async () => {
    const pool = makePool({ maxOpen: 1 });
    const slow = pool.execute('vm1', 'test-sleep', { ms: 300 });
    await waitFor(() => agents.get('vm1')!.commands.includes('test-sleep'));
    const removed = pool.remove('vm1');
    expect(await rejection(pool.execute('vm2', 'guest-ping'))).toMatchObject({ code: 'QUEUE_FULL' });
    expect(agents.get('vm2')!.connections).toBe(0);
    await expect(slow).resolves.toEqual({});
    await removed;
    await expect(pool.execute('vm2', 'guest-ping')).resolves.toEqual({});
  });

  it('gives a command outside the catalog the slow timeout, as commands.ts says', async () => {
    const pool = makePool({ channelOptions: { catalog: () => undefined, timeouts: { ...TIMEOUTS, normal: 50, slow: 5000 }, idleReleaseMs: 0 } });
    expect(pool.defaultTimeoutMs('test-sleep')).toBe(5000);
    await expect(pool.execute('vm1', 'test-sleep', { ms: 300 })).resolves.toEqual({});
  });

  it('idle-releases sockets; an idle channel does not count as open', async () => {
    const pool = makePool({ maxOpen: 1, idleReleaseMs: 30 });
    const states: PoolStateEvent[] = [];
    pool.on('state', (e: PoolStateEvent) => states.push(e));
    await pool.execute('vm1', 'guest-ping');
    await waitFor(() => pool.channel('vm1').state === 'idle');
    expect(pool.stats().open).toBe(0);
    expect(states.map((s) => `${s.vm}:${s.state}`)).toEqual(['vm1:connecting', 'vm1:syncing', 'vm1:ready', 'vm1:idle']);
    await waitFor(() => agents.get('vm1')!.connected === 0);
    await expect(pool.execute('vm2', 'guest-ping')).resolves.toEqual({});
    await expect(pool.execute('vm1', 'guest-ping')).resolves.toEqual({});
  });

  it('forgets channels that stayed idle (bounded memory)', async () => {
    const pool = makePool({ idleReleaseMs: 10, dropIdleMs: 20 });
    await pool.execute('vm1', 'guest-ping');
    await pool.execute('vm2', 'guest-ping');
    await waitFor(() => pool.stats().open === 0);
    await new Promise((r) => setTimeout(r, 40));
    pool.sweep();
    await waitFor(() => !pool.has('vm1') && !pool.has('vm2'));
    expect(pool.stats().channels).toEqual([]);
    // nothing keeps the forgotten channels alive (h11 F4: the admission set did, up to maxOpen of them)
    await waitFor(() => (pool as unknown as { admitted: Set<unknown> }).admitted.size === 0);
    await expect(pool.execute('vm1', 'guest-ping')).resolves.toEqual({});
  });

  it('close() drains queued commands, then refuses new ones', async () => {
    const pool = makePool();
    const running = [1, 2, 3].map(() => pool.execute('vm1', 'test-sleep', { ms: 30 }));
    await waitFor(() => pool.stats().inFlight === 1);
    expect(pool.stats()).toMatchObject({ queued: 2, inFlight: 1 });
    const closed = pool.close();
    const refused = await rejection(pool.execute('vm2', 'guest-ping'));
    expect(refused).toMatchObject({ code: 'SHUTTING_DOWN' });
    await closed;
    await expect(Promise.all(running)).resolves.toEqual([{}, {}, {}]);
    expect(agents.get('vm1')!.commands.filter((c) => c === 'test-sleep')).toHaveLength(3);
    await waitFor(() => agents.get('vm1')!.connected === 0);
  });

  it('destroy() fails every waiter at once', async () => {
    const pool = makePool();
    const waiting = [
      pool.execute('vm1', 'test-hang', undefined, { timeoutMs: 10_000 }),
      pool.execute('vm1', 'guest-ping', undefined, { timeoutMs: 10_000 }),
      pool.execute('vm2', 'test-hang', undefined, { timeoutMs: 10_000 }),
    ];
    await waitFor(() => pool.stats().inFlight === 2);
    expect(pool.stats()).toMatchObject({ open: 2, ready: 2, queued: 1, inFlight: 2 });
    pool.destroy();
    const errors = await Promise.all(waiting.map((p) => rejection(p)));
    for (const e of errors) expect(e).toMatchObject({ code: 'AGENT_UNAVAILABLE' });
  });

  it('replaces a channel whose endpoint changed and closes the old one', async () => {
    const paths: Record<string, string> = { vm1: agents.get('vm1')!.socketPath };
    const pool = makePool({ resolve: (vm) => (paths[vm] ? { type: 'unix', path: paths[vm] } : undefined) });
    await pool.execute('vm1', 'guest-ping');
    const old = pool.channel('vm1');
    paths.vm1 = agents.get('vm2')!.socketPath;
    const fresh = pool.channel('vm1');
    expect(fresh).not.toBe(old);
    await waitFor(() => old.state === 'closed');
    await pool.execute('vm1', 'guest-ping');
    expect(agents.get('vm2')!.commands).toContain('guest-ping');
  });

  it('remove() closes and forgets a channel', async () => {
    const pool = makePool();
    await pool.execute('vm1', 'guest-ping');
    const ch = pool.channel('vm1');
    await pool.remove('vm1');
    expect(pool.has('vm1')).toBe(false);
    expect(ch.state).toBe('closed');
    await waitFor(() => agents.get('vm1')!.connected === 0);
  });

  it('remove() waits for that VM only, not for other VMs still draining', async () => {
    const pool = makePool();
    await pool.execute('vm1', 'guest-ping');
    const hung = pool.execute('vm2', 'test-hang', undefined, { timeoutMs: 10_000 });
    await waitFor(() => agents.get('vm2')!.commands.includes('test-hang'));
    let vm2Gone = false;
    const removing = pool.remove('vm2').then(() => {
      vm2Gone = true;
    });
    await pool.remove('vm1');
    expect(pool.has('vm1')).toBe(false);
    expect(vm2Gone).toBe(false);
    pool.destroy();
    expect(await rejection(hung)).toMatchObject({ code: 'AGENT_UNAVAILABLE' });
    await removing;
    expect(vm2Gone).toBe(true);
  });

  it('remove() also waits for a channel of that VM left draining by an endpoint change', async () => {
    const paths: Record<string, string> = { vm1: agents.get('vm1')!.socketPath };
    const pool = makePool({ resolve: (vm) => (paths[vm] ? { type: 'unix', path: paths[vm] } : undefined) });
    const slow = pool.execute('vm1', 'test-sleep', { ms: 200 });
    await waitFor(() => agents.get('vm1')!.commands.includes('test-sleep'));
    const old = pool.channel('vm1');
    paths.vm1 = agents.get('vm2')!.socketPath;
    expect(pool.channel('vm1')).not.toBe(old);
    await pool.remove('vm1');
    expect(old.state).toBe('closed');
    await expect(slow).resolves.toEqual({});
  });

  it('forwards command events with the VM name', async () => {
    const pool = makePool();
    const events: PoolCommandEvent[] = [];
    pool.on('command', (e: PoolCommandEvent) => events.push(e));
    await pool.execute('vm2', 'guest-ping');
    await rejection(pool.execute('vm2', 'guest-nonexistent'));
    expect(events.map((e) => [e.vm, e.command, e.outcome])).toEqual([
      ['vm2', 'guest-ping', 'ok'],
      ['vm2', 'guest-nonexistent', 'agent-error'],
    ]);
    expect(events[0]!.durationMs).toBeGreaterThanOrEqual(0);
  });
});
