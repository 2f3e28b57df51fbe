/**
 * AgentService against the simulator: the pool's maxOpen bound holds for calls that first read
 * guest-info, and a call's timeoutMs (or its catalog timeout) is one budget for the whole call —
 * capability and frozen checks included — not a fresh timeout per agent job.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AgentService } from '../../src/agent/service.js';
import { AgentPool } from '../../src/pool/pool.js';
import { COMMANDS, DEFAULT_TIMEOUTS, defaultSpec, defaultTimeoutMs } from '../../src/qga/commands.js';
import type { Endpoint, TimeoutClass } from '../../src/qga/types.js';
import { VmRegistry, type VmRecord } from '../../src/registry/registry.js';
import { Simulator, type SimAgent } from '../../sim/index.js';

let dir: string;
let sim: Simulator;
let pools: AgentPool[] = [];
let seq = 0;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'agent-service-test-'));
  sim = new Simulator({ dir });
});

afterEach(async () => {
  for (const p of pools) p.destroy();
  pools = [];
});

afterAll(async () => {
  await sim.close();
  await rm(dir, { recursive: true, force: true });
});

/** A registry whose lookups take a while (a slow store), to spend a call's budget before it starts. */
class SlowRegistry extends VmRegistry {
  constructor(vms: Array<{ name: string; endpoint: Endpoint }>, private readonly delayMs: number) {
    super(registryConfig(vms));
  }

  override async require(name: string): Promise<VmRecord> {
    await sleep(this.delayMs);
    return super.require(name);
  }
}

function registryConfig(vms: Array<{ name: string; endpoint: Endpoint }>): ConstructorParameters<typeof VmRegistry>[0] {
  return { vms, registry: { allowApiRegistration: false, directories: [], allowedSocketRoots: [] } };
}

async function setup(opts: { vms: number; maxOpen?: number; timeouts?: Partial<Record<TimeoutClass, number>>; registryDelayMs?: number }): Promise<{
  sims: SimAgent[];
  names: string[];
  pool: AgentPool;
  agent: AgentService;
}> {
  const sims: SimAgent[] = [];
  for (let i = 0; i < opts.vms; i++) sims.push(await sim.addVm({ name: `svc${++seq}` }));
  const vms = sims.map((s, i) => ({ name: `svc${seq - opts.vms + 1 + i}`, endpoint: s.endpoint }));
  const registry = opts.registryDelayMs ? new SlowRegistry(vms, opts.registryDelayMs) : new VmRegistry(registryConfig(vms));
  const pool = new AgentPool({
    resolve: (vm) => registry.resolve(vm),
    maxOpen: opts.maxOpen,
    channelOptions: {
      catalog: (name) => COMMANDS[name],
      timeouts: { ...DEFAULT_TIMEOUTS, ...opts.timeouts },
      idleReleaseMs: 0,
    },
  });
  pools.push(pool);
  return { sims, names: vms.map((v) => v.name), pool, agent: new AgentService(pool, registry) };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function code(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'ok',
    (e: unknown) => String((e as { code?: unknown }).code ?? e),
  );
}

function sent(s: SimAgent, command: string): number {
  return s.stats.commandLog.filter((e) => e.command === command).length;
}

describe('AgentService and agent.maxOpen', () => {
  it('refuses with QUEUE_FULL instead of opening a socket past maxOpen', async () => {
    const { sims, names, pool, agent } = await setup({ vms: 2, maxOpen: 1 });
    const [a, b] = sims as [SimAgent, SimAgent];
    const [na, nb] = names as [string, string];
    a.setFault({ command: 'guest-get-osinfo', kind: 'hang' });
    const busy = code(agent.call(na, 'guest-get-osinfo', undefined, { timeoutMs: 1500 }));
    await waitFor(() => sent(a, 'guest-get-osinfo') === 1);
    expect(await code(agent.call(nb, 'guest-get-host-name'))).toBe('QUEUE_FULL');
    expect(await code(agent.info(nb))).toBe('QUEUE_FULL');
    expect(pool.stats().open).toBe(1);
    expect(b.stats.connections).toBe(0);
    // the read-only views used by GET /v1/vms open nothing either
    expect(pool.channel(nb).stats().state).toBe('idle');
    expect(pool.channel(nb).agentInfo).toBeUndefined();
    expect(b.stats.connections).toBe(0);
    a.clearFaults();
    expect(await busy).toBe('AGENT_TIMEOUT');
    // a has nothing to do now: its socket is released for b
    expect(await code(agent.call(nb, 'guest-get-host-name'))).toBe('ok');
    expect(pool.stats().open).toBe(1);
  });
});

describe('AgentService call deadline', () => {
  it('counts the wait for guest-info against the caller’s timeoutMs', async () => {
    const { sims, names, pool, agent } = await setup({ vms: 1 });
    const [s] = sims as [SimAgent];
    const [vm] = names as [string];
    expect(await code(agent.call(vm, 'guest-get-osinfo'))).toBe('ok'); // guest-info cached
    s.setFault({ command: 'guest-get-fsinfo', kind: 'delay', ms: 1500, times: 1 });
    const other = code(pool.execute(vm, 'guest-get-fsinfo'));
    await waitFor(() => sent(s, 'guest-get-fsinfo') === 1);
    s.setFault({ command: 'guest-get-osinfo', kind: 'delay', ms: 1500, times: 1 });
    // ~1.5 s behind fsinfo, then 1.5 s for osinfo: more than the 2 s the caller allowed
    expect(await code(agent.call(vm, 'guest-get-osinfo', undefined, { timeoutMs: 2000 }))).toBe('AGENT_TIMEOUT');
    expect(await other).toBe('ok');
  });

  it('uses the configured catalog timeout as the budget when the caller names none', async () => {
    const { sims, names, pool, agent } = await setup({ vms: 1, timeouts: { fast: 1500 } });
    const [s] = sims as [SimAgent];
    const [vm] = names as [string];
    expect(pool.defaultTimeoutMs('guest-get-osinfo')).toBe(1500);
    expect(await code(agent.call(vm, 'guest-get-osinfo'))).toBe('ok');
    s.setFault({ command: 'guest-get-fsinfo', kind: 'delay', ms: 1000, times: 1 });
    const other = code(pool.execute(vm, 'guest-get-fsinfo'));
    await waitFor(() => sent(s, 'guest-get-fsinfo') === 1);
    s.setFault({ command: 'guest-get-osinfo', kind: 'delay', ms: 1000, times: 1 });
    // each job alone fits in 1.5 s (fast); together they do not
    expect(await code(agent.call(vm, 'guest-get-osinfo'))).toBe('AGENT_TIMEOUT');
    expect(await other).toBe('ok');
  });

  it('counts the frozen re-check (guest-fsfreeze-status) against the same budget', async () => {
    const { sims, names, agent } = await setup({ vms: 1 });
    const [s] = sims as [SimAgent];
    const [vm] = names as [string];
    expect(await code(agent.call(vm, 'guest-get-osinfo'))).toBe('ok');
    agent.setKnownFrozen(vm, true); // stale belief: the guest is not frozen
    s.setFault({ command: 'guest-fsfreeze-status', kind: 'delay', ms: 1200, times: 1 });
    s.setFault({ command: 'guest-get-osinfo', kind: 'delay', ms: 1200, times: 1 });
    expect(await code(agent.call(vm, 'guest-get-osinfo', undefined, { timeoutMs: 1800 }))).toBe('AGENT_TIMEOUT');
    expect(sent(s, 'guest-fsfreeze-status')).toBe(1);
    expect(agent.isKnownFrozen(vm)).toBe(false);
  });

  it('answers AGENT_TIMEOUT without sending the command when nothing is left', async () => {
    const { sims, names, agent } = await setup({ vms: 1, registryDelayMs: 300 });
    const [s] = sims as [SimAgent];
    const [vm] = names as [string];
    expect(await code(agent.call(vm, 'guest-get-osinfo', undefined, { timeoutMs: 100 }))).toBe('AGENT_TIMEOUT');
    expect(sent(s, 'guest-get-osinfo')).toBe(0);
    expect(await code(agent.call(vm, 'guest-get-osinfo'))).toBe('ok');
  });

  it('gives a command outside the catalog the class commands.ts gives it', () => {
    const name = 'guest-from-the-future';
    expect(DEFAULT_TIMEOUTS[defaultSpec(name).timeout]).toBe(defaultTimeoutMs(name));
  });
});

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await sleep(10);
  }
}
