/**
 * What the gateway knows of each VM's agent, kept from the outcome of every call and every
 * handshake (the channels' state events) and from the background probe (probe.ts):
 *
 *   unknown ──answer──► up ◄──answer── down
 *      │                 │               ▲
 *      └───── failed connect / handshake ┘
 *
 * `since` is when the state last changed, `lastSeen` when the agent last answered anything.
 * One entry per VM that was ever touched; forgotten when the VM is deregistered, so memory is
 * bounded by the registry. Listeners (fleet metrics, the recovery loop) hear every change.
 */
import type { AgentInfo } from '../qga/types.js';

export type AgentState = 'up' | 'down' | 'unknown';

/** The interface other parts (lists, the /ui page, metrics) consume: do not rename. */
export interface FleetState {
  agent: { state: AgentState; since: string; lastSeen?: string; lastError?: string; version?: string };
  capabilities?: string[];
}

export interface StateChange {
  vm: string;
  state: AgentState;
  prev: AgentState;
}

interface Entry {
  state: AgentState;
  since: number;
  lastSeen?: number;
  lastError?: string;
  /** the last failure was a handshake with no answer on a socket that accepted the connection */
  silentSocket?: boolean;
  version?: string;
  capabilities?: string[];
  /** the guest-info the capabilities were taken from (recomputed only when it changes) */
  info?: AgentInfo;
}

/** per guest-info (interned: shared by the VMs that gave the same answer), its sorted list; never changed once made */
const enabledOf = new WeakMap<AgentInfo, string[]>();

/** Commands the agent lists as enabled in guest-info, sorted (one shared array per AgentInfo: do not change it). */
export function enabledCommands(info: AgentInfo): string[] {
  let out = enabledOf.get(info);
  if (out !== undefined) return out;
  out = [];
  for (const [name, c] of info.commands) if (c.enabled) out.push(name);
  out.sort();
  enabledOf.set(info, out);
  return out;
}

export class AgentStates {
  private readonly entries = new Map<string, Entry>();
  private readonly listeners = new Set<(c: StateChange) => void>();
  private readonly startedAt: number;

  constructor(private readonly clock: () => number = Date.now) {
    this.startedAt = clock();
  }

  state(vm: string): AgentState {
    return this.entries.get(vm)?.state ?? 'unknown';
  }

  isDown(vm: string): boolean {
    return this.entries.get(vm)?.state === 'down';
  }

  lastError(vm: string): string | undefined {
    return this.entries.get(vm)?.lastError;
  }

  /** the last failure was a handshake nobody answered on a socket that accepted the connection */
  silentSocket(vm: string): boolean {
    return this.entries.get(vm)?.silentSocket === true;
  }

  /**
   * The agent answered (a reply, an agent error, a handshake). With `info` (a fresh guest-info)
   * the version is taken, and the capabilities unless `frozen` (a frozen agent lists most
   * commands as disabled: the copy would be wrong after the thaw).
   */
  answered(vm: string, info?: AgentInfo, frozen = false): void {
    const e = this.entry(vm);
    e.lastSeen = this.clock();
    if (info && info !== e.info && !frozen) {
      e.info = info;
      e.version = info.version;
      e.capabilities = enabledCommands(info);
    } else if (info) {
      e.version = info.version;
    }
    this.set(vm, e, 'up');
  }

  /** A connect or handshake failed, or a call found the agent unavailable: down at once. */
  failed(vm: string, error: string, silentSocket = false): void {
    const e = this.entry(vm);
    e.lastError = error;
    e.silentSocket = silentSocket;
    this.set(vm, e, 'down');
  }

  /** Record an error without changing the state (e.g. a handshake timeout while frozen through us). */
  noted(vm: string, error: string): void {
    this.entry(vm).lastError = error;
  }

  view(vm: string): FleetState {
    const e = this.entries.get(vm);
    if (!e) return { agent: { state: 'unknown', since: new Date(this.startedAt).toISOString() } };
    return {
      agent: {
        state: e.state,
        since: new Date(e.since).toISOString(),
        ...(e.lastSeen !== undefined ? { lastSeen: new Date(e.lastSeen).toISOString() } : {}),
        ...(e.lastError !== undefined ? { lastError: e.lastError } : {}),
        ...(e.version !== undefined ? { version: e.version } : {}),
      },
      ...(e.capabilities ? { capabilities: [...e.capabilities] } : {}),
    };
  }

  /** VMs with an entry, and their state */
  *all(): IterableIterator<[string, AgentState]> {
    for (const [vm, e] of this.entries) yield [vm, e.state];
  }

  /** A VM registered while the gateway runs (API, reload): unknown since now, not since the start. */
  appeared(vm: string): void {
    const e = this.entries.get(vm);
    if (e === undefined) this.entries.set(vm, { state: 'unknown', since: this.clock() });
    else if (e.state === 'unknown') e.since = this.clock();
  }

  forget(vm: string): void {
    const e = this.entries.get(vm);
    if (!e) return;
    this.entries.delete(vm);
    if (e.state !== 'unknown') this.emit({ vm, state: 'unknown', prev: e.state });
  }

  onChange(fn: (c: StateChange) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private entry(vm: string): Entry {
    let e = this.entries.get(vm);
    if (!e) {
      e = { state: 'unknown', since: this.startedAt };
      this.entries.set(vm, e);
    }
    return e;
  }

  private set(vm: string, e: Entry, state: AgentState): void {
    const prev = e.state;
    if (prev === state) return;
    e.state = state;
    e.since = this.clock();
    this.emit({ vm, state, prev });
  }

  private emit(c: StateChange): void {
    for (const fn of this.listeners) fn(c);
  }
}
