/**
 * Keeps AgentStates (state.ts) current from what the VM's channel does, and answers for a VM
 * that is down:
 *   - a channel's handshake (shown as 'syncing') that ends in 'ready' → up; any answer to a
 *     command → up (lastSeen); version and capabilities only from a guest-info read on the
 *     socket that answered (Channel.currentInfo): a socket that ran only pings (which need no
 *     guest-info) leaves the last read ones as they were;
 *   - a connect that fails, or a handshake that fails → down at once, except a handshake timeout
 *     on a VM frozen through the gateway (a frozen guest may answer slowly): only noted;
 *   - a call failing AGENT_UNAVAILABLE while its channel is still connecting, syncing or backing
 *     off → down; a connection lost under a command does not mark it (the next handshake decides);
 *     nor does a call whose own deadline passed while the handshake was still going, nor the
 *     gateway letting a socket go mid-handshake (release(): a probe or a wait over): the
 *     handshake's own outcome (syncTimeoutMs) decides, not a caller's shorter patience;
 *   - while down, calls fail fast (503 AGENT_UNAVAILABLE) except thaws and fsfreeze status.
 * A handshake nobody answered on a socket that accepted the connection names the likely causes.
 */
import { performance } from 'node:perf_hooks';
import { isGatewayError, errors } from '../errors.js';
import type { AgentPool } from '../pool/pool.js';
import type { CommandEvent, StateEvent } from '../qga/events.js';
import type { ExecuteOptions } from '../qga/types.js';
import { callerDeadline } from '../qga/outcomes.js';
import { AgentStates } from './state.js';

/** Never failed fast while the agent is down: a thaw must always be tried, and so must the status read that confirms one. */
const NEVER_FAIL_FAST = new Set(['guest-fsfreeze-thaw', 'guest-fsfreeze-status']);

/** The likely causes when a socket accepts the connection but nobody answers the handshake. */
export const SILENT_SOCKET_HINT =
  'the agent socket accepted the connection but the handshake got no answer: another client (qm agent, vzdump, libvirt) may hold the socket (QEMU serves one client at a time), or the agent is not running in the guest';

export class AgentHealth {
  readonly states: AgentStates;
  /** when each channel's current handshake (shown as 'syncing') began; bounded by the channels */
  private readonly syncingSince = new Map<string, number>();

  constructor(
    private readonly pool: AgentPool,
    /** frozen through the gateway (as far as the agent service knows) */
    private readonly isFrozen: (vm: string) => boolean,
    clock?: () => number,
  ) {
    this.states = new AgentStates(clock);
    pool.on('state', (e) => this.onChannelState(e));
    pool.on('command', (e) => this.onCommand(e));
  }

  /** The 503 a call gets at once while the VM is down (undefined: go ahead). */
  failFast(vm: string, command: string, opts: ExecuteOptions): Error | undefined {
    if (!this.states.isDown(vm) || NEVER_FAIL_FAST.has(command) || opts.priority === 'thaw') return undefined;
    const since = this.states.view(vm).agent.since;
    const last = this.states.lastError(vm);
    // failed here, before the pool: nothing was sent (`sent: false`, as qga/outcomes.ts says of a refused connect)
    return errors.agentUnavailable(vm, `the agent of ${vm} is down since ${since}${last ? ` (${last})` : ''}; it is retried in the background`, { command, extra: { sent: false } });
  }

  /** A call failed with `e`: account for it, and return what the caller gets. */
  failed(vm: string, e: unknown): unknown {
    if (!isGatewayError(e) || e.code !== 'AGENT_UNAVAILABLE') return e;
    // the caller's own deadline passed while the handshake was still going (a short wait, a probe):
    // not a verdict on the agent (it may just be slow); the handshake's own end (syncTimeoutMs,
    // onChannelState) decides. Its words still name the likely cause if the VM is down already.
    const byDeadline = callerDeadline(e);
    const shown = this.pool.peek(vm)?.state;
    // still syncing at the deadline: the socket took the connection and nobody answered
    const silentNow = shown === 'syncing' && !byDeadline;
    if (silentNow && this.isFrozen(vm)) {
      this.states.noted(vm, e.message);
      return e;
    }
    // nothing listens (the channel already failed its waiting jobs with the errno)
    const refused = /cannot be connected/.test(e.message);
    // a forced sync (POST /agent/sync, the probe) that failed is a failed handshake too
    const handshaking = !byDeadline && (refused || silentNow || shown === 'connecting' || shown === 'backoff' || e.command === 'guest-sync-delimited');
    if (handshaking && !refused && this.isFrozen(vm)) {
      this.states.noted(vm, e.message);
      return e;
    }
    // already down: the call's own words (with the errno) are the better lastError
    const silent = silentNow || (!refused && this.states.isDown(vm) && this.states.silentSocket(vm));
    const detail = silent && !e.message.includes(SILENT_SOCKET_HINT) ? `${e.message}: ${SILENT_SOCKET_HINT}` : e.message;
    if (handshaking) this.states.failed(vm, detail, silent);
    return detail === e.message ? e : errors.rewrap(e, 'AGENT_UNAVAILABLE', detail);
  }

  forget(vm: string): void {
    this.states.forget(vm);
    this.syncingSince.delete(vm);
  }

  appeared(vm: string): void {
    this.states.appeared(vm);
  }

  private onChannelState({ vm, state, prev, released }: StateEvent): void {
    if (state === 'syncing') {
      this.syncingSince.set(vm, performance.now());
      return;
    }
    if (prev === 'syncing') {
      const started = this.syncingSince.get(vm);
      this.syncingSince.delete(vm);
      // the gateway let the socket go mid-handshake (nothing waited for it any more: a probe's or
      // a wait's deadline): no verdict on the agent
      if (released) return;
      if (state === 'ready') return this.states.answered(vm, this.pool.peek(vm)?.currentInfo(), this.isFrozen(vm));
      if (state !== 'backoff' && state !== 'idle') return;
      const syncMs = this.pool.syncTimeoutMs;
      const silent = started !== undefined && performance.now() - started >= syncMs - 25;
      if (!silent) return this.states.failed(vm, 'the agent socket closed during the handshake');
      if (this.isFrozen(vm)) return this.states.noted(vm, `no answer to the handshake within ${syncMs} ms (the guest is frozen)`);
      return this.states.failed(vm, `no answer to the handshake within ${syncMs} ms: ${SILENT_SOCKET_HINT}`, true);
    }
    if (prev === 'connecting' && (state === 'backoff' || state === 'idle')) this.states.failed(vm, 'the agent socket could not be connected');
  }

  /** Any answer from the agent (a reply or an agent error) means it is up. */
  private onCommand({ vm, outcome }: CommandEvent): void {
    if (outcome === 'ok' || outcome === 'agent-error') this.states.answered(vm, this.pool.peek(vm)?.currentInfo(), this.isFrozen(vm));
  }
}
