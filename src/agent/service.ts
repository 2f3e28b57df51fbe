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

  constructor(
    readonly pool: AgentPool,
    readonly registry: VmRegistry,
  ) {}

  /**
   * `opts.timeoutMs` (default: the command's catalog timeout) bounds the whole call: the
   * capability and frozen checks spend from the same budget as the command itself.
   */
  async call(vm: string, command: string, args?: JsonObject, opts: CallOptions = {}): Promise<JsonValue> {
    const budget = new Budget(vm, command, opts, opts.timeoutMs ?? this.pool.defaultTimeoutMs(command));
    await this.registry.require(vm);
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
      const result = await this.pool.execute(vm, command, args, budget.next());
      this.observe(vm, command, result);
      return result;
    } catch (e) {
      if (isGatewayError(e) && e.code === 'VM_FROZEN') this.frozen.add(vm);
      throw e;
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
