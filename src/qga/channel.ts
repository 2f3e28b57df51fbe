/**
 * Channel: everything the gateway says to one VM's agent goes through here, one command at a time.
 * This is its public face and its bounded line; the socket's state machine, the running of jobs
 * and every timeout are the Session's (session.ts).
 *
 *   execute() / sync() / info()                          execute(…, { priority: 'thaw' | 'freeze' })
 *        │  refused at once: SHUTTING_DOWN (closing),           │  refused only when closed or
 *        │  an aborted signal, QUEUE_FULL (maxQueue             │  aborted: never QUEUE_FULL, never
 *        │  ordinary jobs wait behind the next one on the       │  the admission check (the pool
 *        │  wire), the admission check (the pool's maxOpen)     │  lets it exceed maxOpen), and a
 *        │  when no socket is held                              │  draining (closing) line takes it
 *        ▼                                                      ▼
 *   ┌──────────── line ─────────────────────────────────────────────────┐
 *   │ [priority lane: thaw freeze …] ◄── inserted here, FIFO among them │ each job: deadline fixed
 *   │ ordinary job job job …  ◄── appended (FIFO, bounded by maxQueue)  │ at acceptance; the caller's
 *   └──────────────────────┬────────────────────────────────────────────┘ abort takes it out (or, on
 *                          ▼                                              the wire, abandons it)
 *   Session: connect → sync → guest-info → one job on the wire → ... (diagram in session.ts)
 *   So a thaw is the next command the agent gets after the one already on the wire.
 *
 * Events (state, command, resync, stale, orphan; each names its VM) go to one ChannelEvents
 * emitter: the pool's for a pooled channel, a channel's own otherwise.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { GatewayError } from '../errors.js';
import { abortReason } from '../util/abort.js';
import { auditSettled, stampAudit } from './audit-trail.js';
import { defaultSpec } from './commands.js';
import { ChannelEvents } from './events.js';
import { ended } from './outcomes.js';
import { Job, JobQueue, type JobKind } from './queue.js';
import { Session } from './session.js';
import type {
  AgentInfo, ChannelSettings, ChannelState, ChannelStats, CommandSpec, Endpoint, ExecuteOptions, JsonObject, JsonValue, TimeoutClass,
} from './types.js';

export type { CommandEvent, CommandOutcome, OrphanEvent, ResyncEvent, ResyncReason, StaleEvent, StateEvent } from './events.js';

export interface ChannelOptions extends Partial<ChannelSettings> {
  vm: string;
  endpoint: Endpoint;
  catalog: (command: string) => CommandSpec | undefined;
  timeouts: Record<TimeoutClass, number>;
  /** where events go: a pool hands every channel it makes the same one (itself); default: a new one */
  events?: ChannelEvents;
  logger?: Logger;
  /** monotonic clock in ms */
  now?: () => number;
}

const DEFAULTS: ChannelSettings = {
  maxQueue: 64,
  maxReplyBytes: 64 * 1024 * 1024,
  syncTimeoutMs: 5000,
  connectTimeoutMs: 3000,
  backoff: { initialMs: 100, maxMs: 5000 },
  idleReleaseMs: 30_000,
  infoMaxAgeMs: 60_000,
};

export class Channel {
  readonly vm: string;
  readonly endpoint: Endpoint;
  readonly events: ChannelEvents;
  private readonly catalog: (command: string) => CommandSpec | undefined;
  private readonly timeouts: Record<TimeoutClass, number>;
  private readonly maxQueue: number;
  private readonly now: () => number;
  private readonly queue: JobQueue;
  private readonly session: Session;
  /** the settings the session reads (shared: a reload may change the idle release) */
  private readonly settings: ChannelSettings;

  constructor(options: ChannelOptions) {
    const { vm, endpoint, catalog, timeouts, events, logger, now, ...settings } = options;
    this.vm = vm;
    this.endpoint = endpoint;
    this.catalog = catalog;
    this.timeouts = timeouts;
    this.events = events ?? new ChannelEvents();
    this.now = now ?? (() => performance.now());
    const s: ChannelSettings = { ...DEFAULTS, ...stripUndefined(settings) };
    this.maxQueue = s.maxQueue;
    const clock = this.now;
    this.queue = new JobQueue((job, outcome, result) => {
      const now = clock();
      this.events.emit('command', job.background ? { vm, command: job.command, durationMs: now - job.acceptedAt, outcome, kind: job.kind, background: true } : { vm, command: job.command, durationMs: now - job.acceptedAt, outcome, kind: job.kind });
      if (job.audit) auditSettled(this.events, vm, job, outcome, result, now);
    });
    this.settings = s;
    this.session = new Session(vm, endpoint, s, this.queue, this.events, clock, logger);
  }

  get state(): ChannelState {
    return this.session.state;
  }

  get agentInfo(): AgentInfo | undefined {
    return this.session.agentInfo;
  }

  /**
   * The guest-info that info() would answer right now without touching the agent: the socket is
   * connected and in step, and the copy read on it is current (not invalidated). Undefined
   * otherwise (then info() connects, syncs or re-reads). Lets a caller's capability check skip a
   * queued info job (issue 14: ~30 µs per checked agent call).
   */
  currentInfo(): AgentInfo | undefined {
    return this.session.currentInfo();
  }

  /** has something queued or on the wire */
  get busy(): boolean {
    return this.queue.length > 0 || this.session.inFlight !== undefined;
  }

  /** holds (or is about to hold) the agent's socket */
  get holdsSocket(): boolean {
    return this.session.holdsSocket;
  }

  get lastUsedAt(): number {
    return this.session.lastUsed;
  }

  /** how long ago (ms) the agent's end last closed a connection this channel held (not a release of ours), if it did */
  lostAgoMs(): number | undefined {
    const at = this.session.lostAt;
    return at === undefined ? undefined : this.now() - at;
  }

  stats(): ChannelStats {
    const s = this.session;
    return {
      vm: this.vm,
      state: s.state,
      queued: this.queue.length,
      inFlight: s.inFlight ? 1 : 0,
      connectedAt: s.connectedAt,
      lastUsedAt: s.lastUsed,
      agentVersion: s.agentInfo?.version,
    };
  }

  execute(command: string, args?: JsonObject, opts: ExecuteOptions = {}): Promise<JsonValue> {
    return this.enqueue<JsonValue>('command', command, args, opts);
  }

  /** Force a resync (queued like a command) and report its round trip. */
  sync(opts: ExecuteOptions = {}): Promise<{ rttMs: number }> {
    return this.enqueue<{ rttMs: number }>('sync', 'guest-sync-delimited', undefined, opts);
  }

  /** Connect and sync if needed, and return the cached guest-info. */
  info(opts: ExecuteOptions = {}): Promise<AgentInfo> {
    return this.enqueue<AgentInfo>('info', 'guest-info', undefined, opts);
  }

  /**
   * Have guest-info re-read before the next command: a frozen agent reports every command outside
   * its allow-list as disabled, so a copy cached during a freeze is wrong after the thaw.
   */
  invalidateInfo(): void {
    this.session.invalidateInfo();
  }

  /**
   * Asked right before this channel would open a socket (`urgent`: for a priority-lane job, which
   * the pool never refuses); an error refuses it. The pool installs
   * its maxOpen bound here, so every path that connects (execute, info, sync, a reconnect while
   * draining) is bounded, not only the pool's own execute().
   */
  setAdmission(check: ((urgent: boolean) => GatewayError | undefined) | undefined): void {
    this.session.admission = check;
  }

  /** Stop accepting work, let the line drain, then close the socket. */
  close(): Promise<void> {
    return this.session.close();
  }

  /** Fail everything waiting or in flight at once and close the socket. */
  destroy(err?: Error): void {
    this.session.destroy(err ?? ended.shutDown(this.vm));
  }

  /** Close the socket now if nothing is waiting (idle release, pool eviction). */
  release(): boolean {
    return this.session.release();
  }

  /** A new idle release (a configuration reload): from the next time the line empties. */
  setIdleReleaseMs(ms: number): void {
    this.settings.idleReleaseMs = ms;
  }

  /**
   * maxQueue bounds the ordinary jobs waiting BEHIND the one on the wire. With nothing on the wire
   * and no priority job ahead, the first ordinary job waiting (for the connect, sync or guest-info
   * read of a new socket, or a backoff) is that one, not yet sent: it is not one of the maxQueue,
   * else a burst reaching an idle channel would get one job fewer than the same burst a moment later.
   */
  private nextOnWireWaits(): boolean {
    return this.session.inFlight === undefined && this.queue.length > 0 && this.queue.urgent === 0;
  }

  private enqueue<T>(kind: JobKind, command: string, args: JsonObject | undefined, opts: ExecuteOptions): Promise<T> {
    const { session } = this;
    const urgent = opts.priority !== undefined;
    // a draining line still takes a priority job (a thaw must not wait for a new socket behind it)
    if (session.state === 'closed' || (session.state === 'closing' && !urgent)) return Promise.reject(ended.closing(this.vm, command));
    const { signal } = opts;
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    if (!urgent && this.queue.ordinary >= this.maxQueue + (this.nextOnWireWaits() ? 1 : 0)) {
      return Promise.reject(ended.queueFull(this.vm, command, this.queue.length));
    }
    // Refused before it is accepted (like a full line): no job, no command event.
    const refused = session.holdsSocket ? undefined : session.admission?.(urgent);
    if (refused) return Promise.reject(refused);
    const spec = this.catalog(command) ?? defaultSpec(command);
    const job = new Job(kind, command, args, spec, this.now(), opts.timeoutMs ?? this.timeouts[spec.timeout], signal, session);
    job.urgent = urgent;
    job.gate = opts.gate;
    job.background = opts.background === true;
    stampAudit(job, opts.actor);
    const promise = this.queue.accept<T>(job);
    session.accept(job);
    return promise;
  }
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
