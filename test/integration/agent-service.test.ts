/**
 * AgentService against the simulator: the pool's maxOpen bound holds for calls that first read
 * guest-info, a call's timeoutMs (or its catalog timeout) is one budget for the whole call —
 * capability and frozen checks included — not a fresh timeout per agent job, and a VM known to
 * be frozen gets a guest-fsfreeze-status instead of the command (the frozen pre-check).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AgentService } from '../../src/agent/service.js';
import { GatewayError } from '../../src/errors.js';
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

  // looked up like a discovered or API-registered VM (a configured one is known without a lookup)
  override isStatic(): boolean {
    return false;
  }
}

function registryConfig(vms: Array<{ name: string; endpoint: Endpoint }>): ConstructorParameters<typeof VmRegistry>[0] {
  return { vms, registry: { allowApiRegistration: false, directories: [], allowedSocketRoots: [], allowedTcpEndpoints: [] } };
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

/** The commands the simulated agent received, oldest first. */
function commandsSent(s: SimAgent): string[] {
  return s.stats.commandLog.map((e) => e.command);
}

async function rejection(p: Promise<unknown>): Promise<GatewayError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof GatewayError)) throw new Error(`expected a GatewayError, got ${e === undefined ? 'success' : String(e)}`);
  return e;
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

describe('AgentService frozen pre-check', () => {
  /**
   * One VM whose guest-info was read while thawed (guest-get-osinfo listed as enabled, so the
   * capability check lets it through and only the frozen pre-check can stop it), then frozen.
   */
  async function frozenVm(how: 'via-service' | 'behind-our-back'): Promise<{ s: SimAgent; vm: string; pool: AgentPool; agent: AgentService }> {
    const { sims, names, pool, agent } = await setup({ vms: 1 });
    const [s] = sims as [SimAgent];
    const [vm] = names as [string];
    expect(await code(agent.call(vm, 'guest-get-osinfo'))).toBe('ok');
    if (how === 'via-service') {
      expect(await agent.call(vm, 'guest-fsfreeze-freeze')).toBe(s.state.filesystems.length);
    } else {
      s.state.frozen = true; // e.g. Proxmox or a script in the guest froze it
    }
    expect(s.state.frozen).toBe(true);
    expect(pool.channel(vm).agentInfo?.commands.get('guest-get-osinfo')?.enabled).toBe(true);
    return { s, vm, pool, agent };
  }

  it('known frozen → guest-fsfreeze-status is asked, the command is never sent, 409 VM_FROZEN', async () => {
    const { s, vm, agent } = await frozenVm('via-service');
    expect(agent.isKnownFrozen(vm)).toBe(true);
    s.resetStats();
    const err = await rejection(agent.call(vm, 'guest-get-osinfo'));
    expect(err.code).toBe('VM_FROZEN');
    expect(err.status).toBe(409);
    // refused by the gateway: the status check went out, the command did not
    expect(commandsSent(s)).toEqual(['guest-fsfreeze-status']);
    expect(agent.isKnownFrozen(vm)).toBe(true);
  });

  it('learns "frozen" from the agent\'s own refusal, then refuses the next call without sending it', async () => {
    const { s, vm, agent } = await frozenVm('behind-our-back');
    expect(agent.isKnownFrozen(vm)).toBe(false);
    s.resetStats();
    // not known frozen yet: the command goes out and the agent refuses it
    const first = await rejection(agent.call(vm, 'guest-get-osinfo'));
    expect(first.code).toBe('VM_FROZEN');
    expect(first.qga?.class).toBe('CommandNotFound');
    expect(commandsSent(s)).toEqual(['guest-get-osinfo']);
    expect(agent.isKnownFrozen(vm)).toBe(true);
    s.resetStats();
    const second = await rejection(agent.call(vm, 'guest-get-host-name'));
    expect(second.code).toBe('VM_FROZEN');
    expect(second.status).toBe(409);
    expect(second.qga).toBeUndefined(); // the gateway's refusal, not the agent's
    expect(commandsSent(s)).toEqual(['guest-fsfreeze-status']);
  });

  it('known frozen but thawed by someone else → the status check sees thawed, the command is sent and succeeds', async () => {
    const { s, vm, agent } = await frozenVm('via-service');
    s.state.frozen = false; // e.g. someone ran fsfreeze -u in the guest
    s.resetStats();
    const osinfo = await agent.call(vm, 'guest-get-osinfo');
    expect(osinfo).toMatchObject({ id: expect.any(String) });
    // status first; guest-info re-read because the copy may be from a frozen agent; then the command
    expect(commandsSent(s)).toEqual(['guest-fsfreeze-status', 'guest-info', 'guest-get-osinfo']);
    expect(agent.isKnownFrozen(vm)).toBe(false);
    // no longer known frozen: the next call goes straight to the agent
    s.resetStats();
    expect(await code(agent.call(vm, 'guest-get-host-name'))).toBe('ok');
    expect(commandsSent(s)).toEqual(['guest-get-host-name']);
  });

  it('a frozen-safe command is sent without the status check', async () => {
    const { s, vm, agent } = await frozenVm('via-service');
    s.resetStats();
    expect(await agent.call(vm, 'guest-fsfreeze-status')).toBe('frozen');
    expect(commandsSent(s)).toEqual(['guest-fsfreeze-status']);
    expect(await agent.call(vm, 'guest-fsfreeze-thaw')).toBe(s.state.filesystems.length);
    expect(commandsSent(s)).toEqual(['guest-fsfreeze-status', 'guest-fsfreeze-thaw']);
    expect(s.state.frozen).toBe(false);
    expect(agent.isKnownFrozen(vm)).toBe(false);
  });
});

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await sleep(10);
  }
}

describe('AgentService and guest-info kept across sockets (agent.maxOpen evictions)', () => {
  /** the agent of `s` restarts with `disabled` commands on the same socket */
  async function restartAgent(s: SimAgent, disabled: string[]): Promise<SimAgent> {
    const socketPath = (s.endpoint as { path: string }).path;
    await s.close();
    return sim.addVm({ name: `${s.name}-again${++seq}`, socketPath, disabled });
  }

  it('a ping on a socket reopened after an eviction sends no guest-info; a capability check reads it fresh and never refuses on the kept copy', async () => {
    const { sims, names, pool, agent } = await setup({ vms: 2, maxOpen: 1 });
    const [a] = sims as [SimAgent, SimAgent];
    const [na, nb] = names as [string, string];
    expect(await agent.call(na, 'guest-ping')).toEqual({});
    expect(commandsSent(a)).toEqual(['guest-sync-delimited', 'guest-info', 'guest-ping']);
    // b takes the one socket: a's is released; a's agent restarts with guest-get-host-name disabled
    expect(await agent.call(nb, 'guest-ping')).toEqual({});
    const a2 = await restartAgent(a, ['guest-get-host-name']);
    expect(await agent.call(na, 'guest-ping')).toEqual({});
    expect(commandsSent(a2)).toEqual(['guest-sync-delimited', 'guest-ping']);
    // the kept copy still says enabled: the call reads guest-info on this socket first, which refuses it
    expect((await rejection(agent.call(na, 'guest-get-host-name'))).code).toBe('COMMAND_DISABLED');
    expect(commandsSent(a2).slice(2)).toEqual(['guest-info', 'guest-fsfreeze-status', 'guest-info']);
    expect(agent.fleetState(na).capabilities).not.toContain('guest-get-host-name');
    // and the other way round: disabled in the copy, enabled after a restart → not refused
    expect(await agent.call(nb, 'guest-ping')).toEqual({});
    const a3 = await restartAgent(a2, []);
    expect(await agent.call(na, 'guest-ping')).toEqual({});
    expect(pool.channel(na).agentInfo?.commands.get('guest-get-host-name')?.enabled).toBe(false);
    expect(await agent.call(na, 'guest-get-host-name')).toHaveProperty('host-name');
    expect(commandsSent(a3)).toEqual(['guest-sync-delimited', 'guest-ping', 'guest-info', 'guest-get-host-name']);
    expect(agent.fleetState(na).capabilities).toContain('guest-get-host-name');
  });
});
