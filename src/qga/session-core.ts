/**
 * What the Session state machine (session.ts, where its diagram and transitions are) stands on:
 * its state, its one Alarm, the socket handle, how a phase is entered and shown, the requests from
 * outside that end or suspend work (release, close, destroy), closing for good, and the wire's
 * reports that change no phase (stale bytes, a stray reply that may answer an abandoned request).
 */
import type { Logger } from 'pino';
import type { GatewayError } from '../errors.js';
import { Alarm } from './alarm.js';
import type { AgentConnection } from './connection.js';
import type { ChannelEvents, ResyncReason } from './events.js';
import { ended } from './outcomes.js';
import type { Job, JobQueue } from './queue.js';
import type { AgentInfo, ChannelSettings, ChannelState, Endpoint, JsonObject } from './types.js';

/** abandoned requests remembered for their late replies; the oldest are forgotten first */
const MAX_ORPHANS = 64;
/**
 * Commands whose late reply must not be lost: it names something the agent created that nobody
 * else could clean up (a file handle, a process), or carries what the agent hands out once only (a
 * process's final status: the agent deletes its record with that reply).
 */
const LATE_REPLY_MATTERS = new Set(['guest-file-open', 'guest-exec', 'guest-exec-status']);

/**
 * Commands whose handling needs nothing from guest-info: every agent has them and they always
 * answer (no success-response lookup), and after a fresh guest-sync-delimited the socket is in
 * step, so their reply is paired in order without an id. On a new socket they may run before
 * guest-info is read (Session.infoFirst; issue 14, churn: a ping on a new socket is connect +
 * sync + ping, not also a guest-info round trip).
 */
const INFO_FREE = new Set(['guest-ping']);

/**
 * A job that must not run on a socket before guest-info was read on it: every job except the
 * info-free commands. An info job answers with the copy; a sync job (the probe's) re-reads it, so an
 * agent restarted with another version or other commands is noticed.
 */
function needsInfo(job: Job): boolean {
  return job.kind !== 'command' || !INFO_FREE.has(job.command);
}

/**
 * The freeze lane's commands never wait for a guest-info read, on any socket: the agent's own
 * answer decides (frozen, disabled, unknown), they always answer (the catalog's success-response)
 * and after the sync pair in order without an id. A read for them would be thrown away (a freeze
 * lets go of its socket) or wrong (read while frozen, before a thaw); the next other job reads it.
 */
const INFO_BLIND = new Set(['guest-fsfreeze-freeze', 'guest-fsfreeze-freeze-list', 'guest-fsfreeze-thaw']);

export type Phase = 'idle' | 'connecting' | 'syncing' | 'info' | 'gating' | 'ready' | 'inflight' | 'backoff' | 'closed';

/** What the outside sees of each phase; the info step keeps what was shown before it. */
const SHOWN: Record<Phase, ChannelState | undefined> = {
  idle: 'idle', connecting: 'connecting', syncing: 'syncing', info: undefined, gating: 'ready', ready: 'ready', inflight: 'ready', backoff: 'backoff', closed: 'closed',
};

export abstract class SessionCore {
  phase: Phase = 'idle';
  /** the job whose gate is being asked (phase gating), and the number of that asking */
  protected gating: Job | undefined;
  protected gateAsks = 0;
  /** what the outside sees (and is told by 'state' events) */
  state: ChannelState = 'idle';
  /** asked before every socket is opened (the pool's maxOpen; urgent: a priority job waits); an error refuses it */
  admission: ((urgent: boolean) => GatewayError | undefined) | undefined;
  agentInfo: AgentInfo | undefined;
  connectedAt: number | undefined;
  /** when the agent's end last closed a connection we held (not our own release): a lost reply, or an agent restart */
  lostAt: number | undefined;
  inFlight: Job | undefined;
  lastUsed: number;
  protected readonly alarm: Alarm;
  protected conn: AgentConnection | undefined;
  protected infoError: GatewayError | undefined;
  /** guest-info was not read on this socket (a new one), or invalidateInfo() asked for a re-read */
  protected infoStale = true;
  /** when agentInfo was read (-Infinity: never, or invalidated) */
  protected infoReadAt = -Infinity;
  /** why the socket is out of step, for the next resync's 'resync' event */
  protected resyncReason: ResyncReason | undefined;
  protected syncStartedAt = 0;
  /** the round trip of the sync this handshake just did: a forced sync right behind it takes it */
  protected freshRttMs: number | undefined;
  /** the head job written behind the sync in progress (mayFollowSync), not yet taken from the line */
  protected piped: Job | undefined;
  /** the id the job on the wire was sent with (agents that echo ids) */
  protected inFlightId: number | undefined;
  /** when the current step (connect, sync, guest-info, forced sync, backoff, idle release) is over */
  protected stepDeadline = Infinity;
  protected failures = 0;
  /** when the current run of failed connect/sync attempts began (its first failure) */
  protected failingSince = 0;
  protected lastFailure: Error | undefined;
  private readonly orphans = new Map<number, { command: string; args: JsonObject | undefined }>();
  private closeWaiters: (() => void)[] = [];

  constructor(
    readonly vm: string,
    protected readonly endpoint: Endpoint,
    protected readonly s: ChannelSettings,
    protected readonly q: JobQueue,
    protected readonly events: ChannelEvents,
    protected readonly now: () => number,
    protected readonly logger?: Logger,
  ) {
    this.lastUsed = now();
    this.alarm = new Alarm(() => this.guard(this.tick), now);
  }

  /** holds (or is about to hold) the agent's socket */
  get holdsSocket(): boolean {
    return this.conn !== undefined || this.phase === 'backoff';
  }

  /** the cached guest-info when it is current on a connected socket in step (Channel.currentInfo) */
  currentInfo(): AgentInfo | undefined {
    if (this.infoStale || (this.phase !== 'ready' && this.phase !== 'inflight' && this.phase !== 'gating')) return undefined;
    const conn = this.conn;
    return conn !== undefined && !conn.needsSync && this.state !== 'closing' ? this.agentInfo : undefined;
  }

  /**
   * guest-info must be read on this socket before `job` runs: it was not read here yet, and the job
   * needs it (needsInfo), or the channel has no copy, or its copy (read on an earlier socket, kept
   * so a ping on a new socket need not wait for it) is infoMaxAgeMs old or was invalidated.
   */
  protected infoFirst(job: Job): boolean {
    if (job.kind === 'command' && INFO_BLIND.has(job.command)) return false;
    return this.infoStale && (needsInfo(job) || this.agentInfo === undefined || this.now() - this.infoReadAt >= this.s.infoMaxAgeMs);
  }

  /**
   * May `job` be written behind the sync in the same write (AgentConnection.sync's follow)? An
   * info-free command without arguments (guest-ping: idempotent and harmless, so a copy written on
   * a socket whose handshake then fails, or that is abandoned, costs nothing) that needs no
   * guest-info read first.
   */
  protected mayFollowSync(job: Job): boolean {
    return job.kind === 'command' && job.args === undefined && !needsInfo(job) && !this.infoFirst(job);
  }

  /** Have guest-info re-read before the next job (an info-free one too). */
  invalidateInfo(): void {
    this.infoStale = true;
    this.infoReadAt = -Infinity;
  }

  /** Close the socket now if nothing waits (idle release, pool eviction): ready → idle. */
  release(): boolean {
    if (this.q.length > 0 || this.inFlight || this.state === 'closing' || this.phase === 'closed') return false;
    this.dropConn();
    // nothing waits and idle has no step: the idle-release ring is not needed (an eviction under churn)
    this.alarm.clear();
    this.go('idle', Infinity, true);
    return true;
  }

  /** Show 'closing' (the Channel refuses new work), let the line drain, then close. */
  close(): Promise<void> {
    if (this.phase === 'closed') return Promise.resolve();
    const closed = new Promise<void>((resolve) => this.closeWaiters.push(resolve));
    this.show('closing');
    if (this.phase === 'idle' || this.phase === 'ready') this.finishClose();
    return closed;
  }

  /** Fail every waiting and running job now, and close. */
  destroy(error: Error): void {
    // waiting jobs, then the one on the wire; again if a listener slipped a job in meanwhile
    // (the running job stays inFlight until its own turn: counted in stats() until it settles)
    while (this.phase !== 'closed') {
      if (this.q.length === 0 && !this.inFlight) return this.finishClose();
      this.q.failWaiting('unavailable', () => error);
      const running = this.inFlight;
      this.inFlight = undefined;
      if (running) this.q.finish(running, 'unavailable', error);
    }
  }

  onWireStale(bytes: number): void {
    this.logger?.debug({ vm: this.vm, bytes }, 'discarded stale agent data');
    this.events.emit('stale', { vm: this.vm, bytes });
  }

  /** A reply nobody waited for: the late answer of an abandoned request that matters is handed on. */
  onWireStray(msg: JsonObject): void {
    const orphan = typeof msg.id === 'number' ? this.orphans.get(msg.id) : undefined;
    if (orphan === undefined) return;
    this.orphans.delete(msg.id as number);
    if ('return' in msg) this.events.emit('orphan', { vm: this.vm, command: orphan.command, value: msg.return, ...(orphan.args ? { args: orphan.args } : {}) });
  }

  /** An abandoned request whose late reply must not be lost (LATE_REPLY_MATTERS): watch for it. */
  protected mayOrphan(id: number, command: string, args?: JsonObject): void {
    if (!LATE_REPLY_MATTERS.has(command)) return;
    this.orphans.set(id, { command, args });
    if (this.orphans.size > MAX_ORPHANS) this.orphans.delete(this.orphans.keys().next().value as number);
  }

  /** The Alarm rang: act on whatever is due. */
  protected abstract tick(): void;

  /** Enter a phase and show it; its step must be over `stepMs` from now. `released`: release() let the socket go (StateEvent.released). */
  protected go(phase: Phase, stepMs = Infinity, released = false): void {
    if (this.phase === 'closed') return;
    this.phase = phase;
    this.stepDeadline = stepMs === Infinity ? Infinity : this.now() + stepMs;
    this.alarm.set(this.stepDeadline, phase !== 'ready');
    const shown = SHOWN[phase];
    if (shown) this.show(shown, released);
  }

  /** Between steps: the Session's advance() or rest() decides (and shows) what comes next. */
  protected toRest(): void {
    if (this.phase === 'closed') return;
    this.phase = this.conn ? 'ready' : 'idle';
    this.stepDeadline = Infinity;
  }

  protected show(next: ChannelState, released = false): void {
    const prev = this.state;
    // a draining session still connects and syncs, but it stays 'closing' to the outside
    if (prev === next || prev === 'closed' || (prev === 'closing' && next !== 'closed')) return;
    this.state = next;
    this.events.emit('state', released ? { vm: this.vm, state: next, prev, released: true } : { vm: this.vm, state: next, prev });
  }

  protected dropConn(): void {
    const conn = this.conn;
    this.conn = this.connectedAt = this.piped = undefined;
    conn?.destroy();
  }

  protected finishClose(): void {
    this.alarm.clear();
    this.dropConn();
    this.phase = 'closed';
    this.stepDeadline = Infinity;
    this.show('closed');
    for (const resolve of this.closeWaiters.splice(0)) resolve();
  }

  /** Run a transition; a defect in it fails this channel loudly but safely, not the process. */
  protected guard(step: () => void): void;
  protected guard<A>(step: (a: A) => void, a: A): void;
  protected guard<A, B>(step: (a: A, b: B) => void, a: A, b: B): void;
  protected guard(step: (a?: unknown, b?: unknown) => void, a?: unknown, b?: unknown): void {
    try {
      step.call(this, a, b);
    } catch (err) {
      this.logger?.error({ vm: this.vm, err }, 'channel loop failed');
      this.destroy(ended.internal(this.vm, err));
    }
  }
}
