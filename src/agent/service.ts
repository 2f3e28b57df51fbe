/**
 * The one way HTTP routes (and the freeze, exec and file services) talk to a VM's agent.
 * It adds what the channel does not know about: the registry (VM_NOT_FOUND), and capability and
 * state checks made BEFORE a command is sent, so no agent round trip is spent on a request the
 * gateway can refuse itself:
 *   - a command absent from the agent's guest-info        → 501 COMMAND_NOT_SUPPORTED
 *   - present but disabled by the guest admin (qemu-ga -b) → 403 COMMAND_DISABLED
 *   - the VM is known frozen and the command is not one of the six frozen-safe ones → 409 VM_FROZEN
 * "Known frozen" is learnt from freeze, thaw and status replies and from the agent's own frozen
 * refusals; before refusing on it, a cheap guest-fsfreeze-status confirms it, because someone
 * else (Proxmox, a script in the guest) may have thawed meanwhile.
 * A call with `priority` (the freeze service's freezes and thaws) goes in the channel's priority
 * lane and skips the guest-info capability check.
 */
import { performance } from 'node:perf_hooks';
import { isGatewayError, errors } from '../errors.js';
import { FROZEN_SAFE } from '../qga/commands.js';
import type { CommandEvent, StateEvent } from '../qga/events.js';
import type { AgentInfo, ChannelStats, ExecuteOptions, JsonObject, JsonValue } from '../qga/types.js';
import type { AgentPool } from '../pool/pool.js';
import type { RegistrationView, VmRegistry } from '../registry/registry.js';
import { AgentStates, type FleetState } from './state.js';
import { ReadCoalescer } from './coalesce.js';

export type { AgentState, FleetState } from './state.js';

/** Never failed fast while the agent is down: a thaw must always be tried, and so must the status read that confirms one. */
const NEVER_FAIL_FAST = new Set(['guest-fsfreeze-thaw', 'guest-fsfreeze-status']);

/** The likely causes when a socket accepts the connection but nobody answers the handshake. */
export const SILENT_SOCKET_HINT =
  'the agent socket accepted the connection but the handshake got no answer: another client (qm agent, vzdump, libvirt) may hold the socket (QEMU serves one client at a time), or the agent is not running in the guest';

/** Commands the gateway uses internally that every agent we support has. */
const ALWAYS_AVAILABLE = new Set(['guest-sync', 'guest-sync-delimited', 'guest-info', 'guest-ping']);

export interface CallOptions extends ExecuteOptions {
  /** skip the guest-info capability check (the raw passthrough still wants the frozen check) */
  skipCapabilityCheck?: boolean;
}

/** What a domain service needs of the agent service: one call, with the checks it makes. */
export interface AgentCaller {
  call(vm: string, command: string, args?: JsonObject, opts?: CallOptions): Promise<JsonValue>;
}

export class AgentService implements AgentCaller {
  /** VMs we believe are frozen; bounded by the number of registered VMs */
  private readonly frozen = new Set<string>();
  /** identical concurrent reads share one agent call */
  readonly reads = new ReadCoalescer();
  /** agent state per VM (up, down, unknown), from every call and handshake */
  readonly states: AgentStates;
  /** when each channel's current handshake (shown as 'syncing') began; bounded by the channels */
  private readonly syncingSince = new Map<string, number>();

  constructor(
    readonly pool: AgentPool,
    readonly registry: VmRegistry,
    clock: () => number = Date.now,
  ) {
    this.states = new AgentStates(clock);
    pool.on('state', (e) => this.onChannelState(e));
    pool.on('command', (e) => this.onCommand(e));
  }

  /** What the fleet view shows of a VM's agent: state, since, lastSeen, lastError, version, capabilities. */
  fleetState(vm: string): FleetState {
    return this.states.view(vm);
  }

  /**
   * `opts.timeoutMs` (default: the command's catalog timeout) bounds the whole call: the
   * capability and frozen checks spend from the same budget as the command itself.
   */
  async call(vm: string, command: string, args?: JsonObject, opts: CallOptions = {}): Promise<JsonValue> {
    const budget = new Budget(vm, command, opts, opts.timeoutMs ?? this.pool.defaultTimeoutMs(command));
    await this.registry.require(vm);
    if (this.states.isDown(vm) && !NEVER_FAIL_FAST.has(command) && opts.priority !== 'thaw') throw this.unavailable(vm, command);
    if (!ALWAYS_AVAILABLE.has(command)) {
      // A priority call (freeze, thaw) spends no job of the line on guest-info: the command itself
      // must be the next one on the wire after the one in flight; the agent's own answer decides.
      if (!opts.priority) {
        const info = await this.pool.channel(vm).info(budget.next());
        if (!opts.skipCapabilityCheck) await this.checkCapability(vm, info, command, budget);
      }
      if (this.frozen.has(vm) && !FROZEN_SAFE.has(command)) await this.confirmFrozen(vm, command, budget);
    }
    try {
      // identical reads of this VM queued or in flight share one agent call (coalesce.ts)
      const result = await this.reads.run(vm, command, args, budget.next(), (o) => this.pool.execute(vm, command, args, o));
      this.observe(vm, command, result);
      return result;
    } catch (e) {
      if (isGatewayError(e) && e.code === 'VM_FROZEN') this.frozen.add(vm);
      throw this.failedCall(vm, e);
    }
  }

  /** 503 at once: the agent is known down (a background retry brings it back). */
  private unavailable(vm: string, command: string): Error {
    const since = this.states.view(vm).agent.since;
    const last = this.states.lastError(vm);
    return errors.agentUnavailable(vm, `the agent of ${vm} is down since ${since}${last ? ` (${last})` : ''}; it is retried in the background`, { command });
  }

  /** A call's failure: AGENT_UNAVAILABLE marks the VM down (and names the likely cause of a silent socket). */
  private failedCall(vm: string, e: unknown): unknown {
    if (!isGatewayError(e) || e.code !== 'AGENT_UNAVAILABLE') return e;
    const silent = this.states.silentSocket(vm) && !e.message.includes(SILENT_SOCKET_HINT);
    const err = silent ? errors.rewrap(e, 'AGENT_UNAVAILABLE', `${e.message}: ${SILENT_SOCKET_HINT}`) : e;
    if (!this.states.isDown(vm)) this.states.failed(vm, e.message, this.states.silentSocket(vm));
    return err;
  }

  /** Handshakes seen on the VM's channel: a good one means up, a failed one down (see state.ts). */
  private onChannelState({ vm, state, prev }: StateEvent): void {
    if (state === 'syncing') {
      this.syncingSince.set(vm, performance.now());
      return;
    }
    if (prev === 'syncing') {
      const started = this.syncingSince.get(vm);
      this.syncingSince.delete(vm);
      if (state === 'ready') return this.states.answered(vm, this.pool.peek(vm)?.agentInfo, this.frozen.has(vm));
      if (state !== 'backoff' && state !== 'idle') return;
      const silent = started !== undefined && performance.now() - started >= this.pool.syncTimeoutMs - 25;
      if (!silent) return this.states.failed(vm, 'the agent socket closed during the handshake');
      // a frozen guest may answer slowly: a VM frozen through us is not marked down for that
      if (this.frozen.has(vm)) return this.states.noted(vm, `no answer to the handshake within ${this.pool.syncTimeoutMs} ms (the guest is frozen)`);
      return this.states.failed(vm, `no answer to the handshake within ${this.pool.syncTimeoutMs} ms: ${SILENT_SOCKET_HINT}`, true);
    }
    if (prev === 'connecting' && (state === 'backoff' || state === 'idle')) this.states.failed(vm, 'the agent socket could not be connected');
  }

  /** Any answer from the agent (a reply or an agent error) means it is up. */
  private onCommand({ vm, outcome }: CommandEvent): void {
    if (outcome === 'ok' || outcome === 'agent-error') this.states.answered(vm, this.pool.peek(vm)?.agentInfo, this.frozen.has(vm));
  }

  /**
   * A frozen agent lists every command outside its allow-list as `enabled: false` in guest-info,
   * so "disabled" in the cached copy means either the guest admin disabled it or the guest is
   * frozen (now, or when the copy was taken). Only for that rare case are the freeze state and
   * then a fresh guest-info asked for.
   */
  private async checkCapability(vm: string, info: AgentInfo, command: string, budget: Budget): Promise<void> {
    const c = info.commands.get(command);
    if (!c) {
      throw errors.commandNotSupported(vm, command, `the agent (version ${info.version}) does not offer ${command}`);
    }
    if (c.enabled) return;
    if (!FROZEN_SAFE.has(command)) {
      const status = await this.pool.execute(vm, 'guest-fsfreeze-status', undefined, budget.next());
      this.observe(vm, 'guest-fsfreeze-status', status);
      if (status === 'frozen') {
        throw errors.vmFrozen(vm, command);
      }
      const channel = this.pool.channel(vm);
      channel.invalidateInfo();
      const fresh = await channel.info(budget.next());
      if (fresh.commands.get(command)?.enabled) return;
    }
    throw errors.commandDisabled(vm, command);
  }

  /** The agent info (connecting and syncing if needed). */
  async info(vm: string, opts: ExecuteOptions = {}): Promise<AgentInfo> {
    await this.registry.require(vm);
    return this.pool.channel(vm).info(opts);
  }

  isKnownFrozen(vm: string): boolean {
    return this.frozen.has(vm);
  }

  /** For the freeze service, which knows better than replies alone (e.g. after a forced thaw). */
  setKnownFrozen(vm: string, frozen: boolean): void {
    if (frozen) this.frozen.add(vm);
    else this.frozen.delete(vm);
  }

  forget(vm: string): void {
    this.frozen.delete(vm);
    this.states.forget(vm);
    this.syncingSince.delete(vm);
  }

  /**
   * One probe: a sync handshake (connecting if needed), with the socket released at once if the
   * probe opened it; then, if the agent answered, a guest-fsfreeze-status read (it notices freezes
   * made outside the gateway). True when the agent answered. Never throws.
   */
  async probe(vm: string, opts: ExecuteOptions = {}): Promise<boolean> {
    if (!this.registry.resolve(vm)) {
      this.forget(vm);
      return false;
    }
    let ch;
    try {
      ch = this.pool.channel(vm);
    } catch {
      return false;
    }
    const held = ch.holdsSocket;
    try {
      await ch.sync({ timeoutMs: this.pool.syncTimeoutMs + 1000, ...opts });
      if (this.frozenStatusReadable(vm)) {
        const status = await this.pool.execute(vm, 'guest-fsfreeze-status', undefined, { timeoutMs: this.pool.syncTimeoutMs, ...opts });
        this.observe(vm, 'guest-fsfreeze-status', status);
      }
      return true;
    } catch (e) {
      this.failedCall(vm, e);
      return this.states.state(vm) === 'up';
    } finally {
      if (!held) ch.release();
    }
  }

  /** the cached guest-info lists guest-fsfreeze-status (absent info: not known, skip) */
  private frozenStatusReadable(vm: string): boolean {
    return this.pool.peek(vm)?.agentInfo?.commands.has('guest-fsfreeze-status') === true;
  }

  /** Force a resync on the VM's channel (queued like a command) and report its round trip. */
  async sync(vm: string, opts: ExecuteOptions = {}): Promise<{ rttMs: number }> {
    await this.registry.require(vm);
    return this.pool.channel(vm).sync(opts);
  }

  /** What is known of the VM's channel without touching the agent (undefined: never used, or forgotten). */
  channelState(vm: string): { stats: ChannelStats; agentInfo?: AgentInfo } | undefined {
    if (!this.pool.has(vm)) return undefined;
    const ch = this.pool.channel(vm);
    return { stats: ch.stats(), ...(ch.agentInfo ? { agentInfo: ch.agentInfo } : {}) };
  }

  /** Deregister an API-registered VM: its channel closes and what was known of it is forgotten. */
  async deregister(vm: string, view: RegistrationView): Promise<void> {
    await this.registry.deregister(vm, view);
    await this.pool.remove(vm);
    this.forget(vm);
  }

  private async confirmFrozen(vm: string, command: string, budget: Budget): Promise<void> {
    const status = await this.pool.execute(vm, 'guest-fsfreeze-status', undefined, budget.next());
    this.observe(vm, 'guest-fsfreeze-status', status);
    if (this.frozen.has(vm)) {
      throw errors.vmFrozen(vm, command);
    }
  }

  private observe(vm: string, command: string, result: JsonValue): void {
    switch (command) {
      case 'guest-fsfreeze-status':
        if (result !== 'frozen' && this.frozen.has(vm)) this.pool.channel(vm).invalidateInfo();
        this.setKnownFrozen(vm, result === 'frozen');
        break;
      case 'guest-fsfreeze-freeze':
      case 'guest-fsfreeze-freeze-list':
        this.frozen.add(vm);
        break;
      case 'guest-fsfreeze-thaw':
        this.frozen.delete(vm);
        // guest-info read while frozen marks most commands disabled
        this.pool.channel(vm).invalidateInfo();
        break;
      default:
        break;
    }
  }
}

/** One call's deadline, fixed when the call starts; each agent job gets what is left of it. */
class Budget {
  private readonly deadline: number;

  constructor(
    private readonly vm: string,
    private readonly command: string,
    private readonly opts: ExecuteOptions,
    private readonly totalMs: number,
  ) {
    this.deadline = performance.now() + totalMs;
  }

  /** The caller's options with the remaining time; AGENT_TIMEOUT when none is left. */
  next(): ExecuteOptions {
    const left = this.deadline - performance.now();
    if (left <= 0) {
      throw errors.agentTimeout(this.vm, this.command, `${this.command} for ${this.vm} used up its ${this.totalMs} ms before it could be sent`);
    }
    return { ...this.opts, timeoutMs: Math.ceil(left) };
  }
}
