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
import type { AgentInfo, ChannelStats, ExecuteOptions, JsonObject, JsonValue } from '../qga/types.js';
import type { AgentPool } from '../pool/pool.js';
import type { RegistrationView, VmRegistry } from '../registry/registry.js';
import type { Logger } from 'pino';
import { ExternalFreezes, type ExternalFreeze, type LeaseLookup } from './state-external.js';
import { AgentHealth, SILENT_SOCKET_HINT } from './state-health.js';
import type { AgentStates, FleetState } from './state.js';
import { ReadCoalescer } from './coalesce.js';
import { MIN_CALL_MS, releaseIdleAt } from './probe-release.js';
import { callerDeadline } from '../qga/outcomes.js';

export type { AgentState, FleetState } from './state.js';
export type { ExternalFreeze } from './state-external.js';
export { SILENT_SOCKET_HINT, MIN_CALL_MS };

export interface AgentServiceOptions {
  /** whether a lease of ours holds the VM (the lease store): tells freezes made outside the gateway from ours */
  hasLease?: LeaseLookup;
  logger?: Pick<Logger, 'warn' | 'info'>;
  /** wall clock, ms since 1970 (tests) */
  clock?: () => number;
}

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

/** Sharing a VM's one agent socket with other tools during long work (exec waits, transfers). */
export interface SocketSharing {
  /** let the socket go now if nothing of the gateway's waits on it; true if released */
  yieldSocket(vm: string): boolean;
  /** the VM's idle release (ms; 0 = never): how long another tool may wait behind the gateway */
  idleReleaseMsOf(vm: string): number;
}

export class AgentService implements AgentCaller, SocketSharing {
  /** VMs we believe are frozen; bounded by the number of registered VMs */
  private readonly frozen = new Set<string>();
  /** agent state per VM (up, down, unknown), from every call and handshake */
  private readonly health: AgentHealth;

  /** VMs frozen with no lease of ours */
  readonly external: ExternalFreezes;

  /** per channel, the last probe's own job (its lastUsedAt stamp) and the idle deadline it kept */
  private readonly probeMarks = new WeakMap<object, { stamp: number; releaseBy: number }>();

  /** identical concurrent reads share one agent call */
  readonly reads = new ReadCoalescer();

  constructor(
    readonly pool: AgentPool,
    readonly registry: VmRegistry,
    opts: AgentServiceOptions = {},
  ) {
    this.health = new AgentHealth(pool, (vm) => this.frozen.has(vm), opts.clock);
    this.external = new ExternalFreezes(opts.hasLease, opts.logger, opts.clock);
  }

  get states(): AgentStates {
    return this.health.states;
  }

  /** What the fleet view shows of a VM's agent: state, since, lastSeen, lastError, version, capabilities. */
  fleetState(vm: string): FleetState {
    return this.states.view(vm);
  }

  /**
   * Let the VM's socket go now if nothing of the gateway's waits on it and the VM releases idle
   * sockets at all (idleReleaseMs > 0): a long exec wait, between its polls, leaves the agent's one
   * client slot to another tool (qm agent, vzdump). True if released.
   */
  yieldSocket(vm: string): boolean {
    if (this.pool.idleReleaseMsOf(vm) <= 0) return false;
    return this.pool.peek(vm)?.release() ?? false;
  }

  idleReleaseMsOf(vm: string): number {
    return this.pool.idleReleaseMsOf(vm);
  }

  /** When the agent's end last closed this gateway's connection to it (a lost reply, or an agent restart), if known. */
  connectionLostAt(vm: string): number | undefined {
    const ago = this.pool.peek(vm)?.lostAgoMs();
    return ago === undefined ? undefined : Date.now() - ago;
  }

  /** VMs frozen with no lease of ours, and since when (GET /v1/freezes lists them as owner "external"). */
  externalFreezes(): ExternalFreeze[] {
    return this.external.list();
  }

  /**
   * `opts.timeoutMs` (default: the command's catalog timeout) bounds the whole call: the
   * capability and frozen checks spend from the same budget as the command itself.
   */
  async call(vm: string, command: string, args?: JsonObject, opts: CallOptions = {}): Promise<JsonValue> {
    const budget = new Budget(vm, command, opts, opts.timeoutMs ?? this.pool.defaultTimeoutMs(command));
    // a configured VM is known without a lookup (discovered and API-registered ones are looked up)
    if (!this.registry.isStatic(vm)) await this.registry.require(vm);
    const down = this.health.failFast(vm, command, opts);
    if (down) throw down;
    try {
      if (!ALWAYS_AVAILABLE.has(command)) {
        // A priority call (freeze, thaw) spends no job of the line on guest-info: the command itself
        // must be the next one on the wire after the one in flight; the agent's own answer decides.
        if (!opts.priority) {
          // the copy the channel holds when it is current (else an info job: connect, sync, re-read)
          const channel = this.pool.channel(vm);
          const info = channel.currentInfo() ?? (await this.reads.info(vm, budget.next(), (o) => channel.info(o)));
          if (!opts.skipCapabilityCheck) await this.checkCapability(vm, info, command, budget);
        }
        if (this.frozen.has(vm) && !FROZEN_SAFE.has(command)) await this.confirmFrozen(vm, command, budget);
      }
      // identical reads of this VM queued or in flight share one agent call (coalesce.ts)
      const result = await this.reads.run(vm, command, args, budget.next(), (o) => this.pool.execute(vm, command, args, o));
      this.observe(vm, command, result);
      return result;
    } catch (e) {
      if (isGatewayError(e) && e.code === 'VM_FROZEN') this.frozen.add(vm);
      throw this.health.failed(vm, e);
    }
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
      const status = await this.freezeStatus(vm, budget);
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
    const down = this.health.failFast(vm, 'guest-info', opts);
    if (down) throw down;
    try {
      return await this.pool.channel(vm).info(opts);
    } catch (e) {
      throw this.health.failed(vm, e);
    }
  }

  /** the VMs believed frozen (through the gateway or found frozen) */
  knownFrozen(): string[] {
    return [...this.frozen];
  }

  isKnownFrozen(vm: string): boolean {
    return this.frozen.has(vm);
  }

  /** For the freeze service, which knows better than replies alone (e.g. after a forced thaw). */
  setKnownFrozen(vm: string, frozen: boolean): void {
    if (frozen) this.frozen.add(vm);
    else this.frozen.delete(vm);
  }

  /** A VM registered while the gateway runs: its agent state is unknown from now (fleet view `since`). */
  registered(vm: string): void {
    this.health.appeared(vm);
  }

  forget(vm: string): void {
    this.frozen.delete(vm);
    this.health.forget(vm);
    this.external.forget(vm);
  }

  /**
   * One probe: a sync handshake (connecting if needed), with the socket released at once if the
   * probe opened it; then, if the agent answered, a guest-fsfreeze-status read (it notices freezes
   * made outside the gateway). True when the agent answered. Never throws.
   * `opts.timeoutMs` bounds the whole probe (default: syncTimeoutMs + 1 s); the status read is
   * skipped when less than MIN_CALL_MS of it is left.
   * A probe never makes the gateway hold a socket longer than it would have: on a socket the
   * channel already holds, every job restarts the idle release, so the probe lets the socket go at
   * the idle deadline it had before the probe (unless someone else used the channel meanwhile).
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
    const idleMs = this.pool.idleReleaseMsOf(vm);
    // the idle deadline the held socket had (its last job ended at lastUsedAt), or, when only
    // probes used it since, the one the first of them found
    const mark = this.probeMarks.get(ch);
    const releaseBy = !held || idleMs <= 0 ? undefined : mark && mark.stamp === ch.lastUsedAt ? mark.releaseBy : ch.lastUsedAt + idleMs;
    const deadline = performance.now() + (opts.timeoutMs ?? this.pool.syncTimeoutMs + 1000);
    // on a socket already held, re-read guest-info too: an agent restarted behind a virtio-serial
    // socket (the host side never sees it) may run with other commands enabled (not while frozen:
    // a frozen agent lists most commands as disabled)
    if (held && !this.frozen.has(vm)) ch.invalidateInfo();
    try {
      await ch.sync({ ...opts, timeoutMs: Math.max(1, Math.ceil(deadline - performance.now())) });
      const left = deadline - performance.now();
      if (this.frozenStatusReadable(vm) && left >= MIN_CALL_MS) {
        const status = await this.pool.execute(vm, 'guest-fsfreeze-status', undefined, { ...opts, timeoutMs: Math.ceil(Math.min(left, this.pool.syncTimeoutMs)) });
        this.observe(vm, 'guest-fsfreeze-status', status);
      }
      return true;
    } catch (e) {
      this.health.failed(vm, e);
      // the probe's own deadline came first: the agent did not answer, whatever its state says
      return !callerDeadline(e) && this.states.state(vm) === 'up';
    } finally {
      if (!held) ch.release();
      else if (releaseBy !== undefined) {
        // the channel's last use is now the probe's own job (its end): a later job changes it
        const stamp = ch.lastUsedAt;
        this.probeMarks.set(ch, { stamp, releaseBy });
        releaseIdleAt(ch, releaseBy, stamp);
      }
    }
  }

  /** the cached guest-info lists guest-fsfreeze-status (absent info: not known, skip) */
  private frozenStatusReadable(vm: string): boolean {
    return this.pool.peek(vm)?.agentInfo?.commands.has('guest-fsfreeze-status') === true;
  }

  /** Force a resync on the VM's channel (queued like a command) and report its round trip. */
  async sync(vm: string, opts: ExecuteOptions = {}): Promise<{ rttMs: number }> {
    await this.registry.require(vm);
    // never failed fast: a forced sync is how a caller asks whether a down agent is back
    try {
      return await this.pool.channel(vm).sync(opts);
    } catch (e) {
      throw this.health.failed(vm, e);
    }
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

  /**
   * The guest's freeze state, for a check before a command: shared with every other status read of
   * this VM queued or in flight (coalesce.ts), so a flood of requests refused while frozen costs
   * the agent one status read at a time, not one each (which filled the VM's queue: 429
   * QUEUE_FULL instead of 409 VM_FROZEN).
   */
  private async freezeStatus(vm: string, budget: Budget): Promise<JsonValue> {
    const status = await this.reads.run(vm, 'guest-fsfreeze-status', undefined, budget.next(), (o) => this.pool.execute(vm, 'guest-fsfreeze-status', undefined, o));
    this.observe(vm, 'guest-fsfreeze-status', status);
    return status;
  }

  private async confirmFrozen(vm: string, command: string, budget: Budget): Promise<void> {
    await this.freezeStatus(vm, budget);
    if (this.frozen.has(vm)) {
      throw errors.vmFrozen(vm, command);
    }
  }

  private observe(vm: string, command: string, result: JsonValue): void {
    switch (command) {
      case 'guest-fsfreeze-status':
        if (result !== 'frozen' && this.frozen.has(vm)) this.pool.channel(vm).invalidateInfo();
        this.setKnownFrozen(vm, result === 'frozen');
        void this.external.observed(vm, result);
        break;
      case 'guest-fsfreeze-freeze':
      case 'guest-fsfreeze-freeze-list':
        this.frozen.add(vm);
        this.external.cleared(vm);
        break;
      case 'guest-fsfreeze-thaw':
        this.frozen.delete(vm);
        this.external.cleared(vm);
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
