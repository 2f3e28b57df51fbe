/**
 * Channel: everything the gateway says to one VM's agent goes through here, one command at a time.
 *
 *   execute() / sync() / info()
 *        │  rejected at once: SHUTTING_DOWN (closing), QUEUE_FULL (maxQueue waiting)
 *        ▼
 *   ┌──────────── queue (FIFO, bounded) ────────────┐      each job: deadline timer from acceptance;
 *   │ job job job ...                               │      expiry or caller abort takes it out
 *   └──────────────────────┬────────────────────────┘
 *                          │ pump(): the ONE loop that drains it
 *                          ▼
 *   ensureReady():  idle ─► connecting ─► syncing ─► (guest-info, once per connection) ─► ready
 *                     ▲          │ fail       │ fail: socket destroyed
 *                     │          ▼            ▼
 *                     └─────── backoff (full jitter; only while jobs wait)
 *                          │
 *                          ▼
 *   run(job): exactly one on the wire ─► reply ─► resolve / reject (mapped agent error)
 *        timeout/abort ─► caller rejected now; the connection is marked out of sync; the next
 *                         job first re-syncs on the SAME socket (0xFF + guest-sync-delimited);
 *                         only a failed resync costs the socket
 *        socket lost   ─► idempotent: back to the queue head once; otherwise AGENT_UNAVAILABLE
 *        garbage/oversize ─► AGENT_PROTOCOL_ERROR, resync
 *                          │ queue empty
 *                          ▼
 *   ready ──idleReleaseMs──► idle (socket closed: the agent serves one client at a time)
 *   close(): closing (drain) ─► closed          destroy(): fail everything ─► closed
 *
 * Events (state, command, resync, stale, orphan; each names its VM) go to one ChannelEvents
 * emitter: the pool's for a pooled channel, a channel's own otherwise.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { GatewayError } from '../errors.js';
import type { AgentConnection } from './connection.js';
import { dispatch } from './dispatch.js';
import { ChannelEvents } from './events.js';
import { AgentLink, type ResyncReason } from './link.js';
import { abortReason } from '../util/abort.js';
import { defaultSpec } from './commands.js';
import { JobQueue, type Job, type JobKind } from './queue.js';
import type {
  AgentInfo, ChannelState, ChannelStats, CommandSpec, Endpoint, ExecuteOptions, JsonObject, JsonValue, TimeoutClass,
} from './types.js';

export type { CommandEvent, CommandOutcome, OrphanEvent, ResyncEvent, ResyncReason, StaleEvent, StateEvent } from './events.js';

export interface ChannelOptions {
  vm: string;
  endpoint: Endpoint;
  catalog: (command: string) => CommandSpec | undefined;
  timeouts: Record<TimeoutClass, number>;
  /** commands allowed to wait (not counting the one in flight) */
  maxQueue?: number;
  maxReplyBytes?: number;
  syncTimeoutMs?: number;
  connectTimeoutMs?: number;
  backoff?: { initialMs: number; maxMs: number };
  /** close the socket after this long with nothing to do; 0 = never */
  idleReleaseMs?: number;
  /** where events go (the pool hands every channel its own); default: a new emitter for this channel */
  events?: ChannelEvents;
  logger?: Logger;
  /** monotonic clock in ms */
  now?: () => number;
}

export class Channel {
  readonly vm: string;
  readonly endpoint: Endpoint;
  readonly events: ChannelEvents;
  private readonly opts: Required<Omit<ChannelOptions, 'logger' | 'events'>> & { logger?: Logger };
  private readonly now: () => number;
  private current: ChannelState = 'idle';
  private readonly queue: JobQueue;
  private inFlight: Job | undefined;
  private pumping = false;
  private readonly link: AgentLink;
  private lastUsed: number;
  private failures = 0;
  private lastFailure: Error | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private backoffTimer: NodeJS.Timeout | undefined;
  private wakeBackoff: (() => void) | undefined;
  private closeWaiters: (() => void)[] = [];
  private admission: (() => GatewayError | undefined) | undefined;

  constructor(options: ChannelOptions) {
    const { events, ...rest } = options;
    this.vm = options.vm;
    this.endpoint = options.endpoint;
    this.events = events ?? new ChannelEvents();
    this.opts = {
      maxQueue: 64,
      maxReplyBytes: 64 * 1024 * 1024,
      syncTimeoutMs: 5000,
      connectTimeoutMs: 3000,
      backoff: { initialMs: 100, maxMs: 5000 },
      idleReleaseMs: 30_000,
      now: () => performance.now(),
      ...stripUndefined(rest),
    };
    this.now = this.opts.now;
    this.lastUsed = this.now();
    this.queue = new JobQueue({
      now: this.now,
      onDeadline: (job) => this.onDeadline(job),
      onAbort: (job, reason) => this.onCallerAbort(job, reason),
      onSettled: (event) => this.events.emit('command', { ...event, vm: this.vm }),
      onEmpty: () => this.wakeBackoff?.(),
    });
    this.link = new AgentLink({
      vm: this.vm,
      endpoint: this.endpoint,
      connectTimeoutMs: this.opts.connectTimeoutMs,
      syncTimeoutMs: this.opts.syncTimeoutMs,
      maxReplyBytes: this.opts.maxReplyBytes,
      now: this.now,
      logger: this.opts.logger,
    });
    this.link.on('stale', (e: { bytes: number }) => this.events.emit('stale', { ...e, vm: this.vm }));
    this.link.on('resync', (e: { reason: ResyncReason }) => this.events.emit('resync', { ...e, vm: this.vm }));
    this.link.on('orphan', (e: { command: string; value: JsonValue }) => this.events.emit('orphan', { ...e, vm: this.vm }));
    this.link.on('lost', () => {
      this.clearIdleTimer();
      if (!this.pumping) this.setState('idle');
    });
  }

  get state(): ChannelState {
    return this.current;
  }

  get agentInfo(): AgentInfo | undefined {
    return this.link.agentInfo;
  }

  /** has something queued or on the wire */
  get busy(): boolean {
    return this.queue.length > 0 || this.inFlight !== undefined;
  }

  /** holds (or is about to hold) the agent's socket */
  get holdsSocket(): boolean {
    return this.link.connection !== undefined || this.current === 'connecting' || this.current === 'backoff';
  }

  get lastUsedAt(): number {
    return this.lastUsed;
  }

  stats(): ChannelStats {
    return {
      vm: this.vm,
      state: this.current,
      queued: this.queue.length,
      inFlight: this.inFlight ? 1 : 0,
      connectedAt: this.link.connectedAt,
      lastUsedAt: this.lastUsed,
      agentVersion: this.link.agentInfo?.version,
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
    this.link.invalidateInfo();
  }

  /**
   * Asked right before this channel would open a socket; an error refuses it. The pool installs
   * its maxOpen bound here, so every path that connects (execute, info, sync, a reconnect while
   * draining) is bounded, not only the pool's own execute().
   */
  setAdmission(check: (() => GatewayError | undefined) | undefined): void {
    this.admission = check;
  }

  /** Stop accepting work, let the queue drain, then close the socket. */
  close(): Promise<void> {
    if (this.current === 'closed') return Promise.resolve();
    const done = new Promise<void>((resolve) => this.closeWaiters.push(resolve));
    if (this.current !== 'closing') {
      this.setState('closing');
      this.clearIdleTimer();
      if (!this.pumping) this.finishClose();
    }
    return done;
  }

  /** Fail everything waiting or in flight at once and close the socket. */
  destroy(err?: Error): void {
    if (this.current === 'closed') return;
    const error = err ?? new GatewayError('AGENT_UNAVAILABLE', `the channel to ${this.vm} was shut down`, { vm: this.vm });
    const jobs = this.queue.all();
    if (this.inFlight) jobs.push(this.inFlight);
    for (const job of jobs) {
      this.queue.finish(job, 'unavailable', { error });
      job.cancel.abort(error);
    }
    this.finishClose();
  }

  /** Close the socket now if nothing is waiting (idle release, pool eviction). */
  release(): boolean {
    if (this.busy || this.current === 'closing' || this.current === 'closed') return false;
    this.clearIdleTimer();
    this.link.drop();
    this.setState('idle');
    return true;
  }

  // ---------------------------------------------------------------------------------------------

  /** re-reads the state after an await (TypeScript's narrowing would assume it unchanged) */
  private isClosed(): boolean {
    return this.current === 'closed';
  }

  private setState(next: ChannelState): void {
    const prev = this.current;
    if (prev === next || prev === 'closed') return;
    // A draining channel still connects and syncs, but it stays 'closing' to the outside.
    if (prev === 'closing' && next !== 'closed') return;
    this.current = next;
    this.events.emit('state', { vm: this.vm, state: next, prev });
  }

  private enqueue<T>(kind: JobKind, command: string, args: JsonObject | undefined, opts: ExecuteOptions): Promise<T> {
    const ctx = { vm: this.vm, command };
    if (this.current === 'closing' || this.current === 'closed') {
      return Promise.reject(new GatewayError('SHUTTING_DOWN', `the channel to ${this.vm} is closing`, ctx));
    }
    const { signal } = opts;
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    if (this.queue.length >= this.opts.maxQueue) {
      return Promise.reject(
        new GatewayError('QUEUE_FULL', `${this.queue.length} commands are already waiting for ${this.vm}`, { ...ctx, retryAfter: 1 }),
      );
    }
    // Refused before it is accepted (like a full queue): no job, no command event.
    const refused = this.holdsSocket ? undefined : this.admission?.();
    if (refused) return Promise.reject(refused);
    const spec = this.opts.catalog(command) ?? defaultSpec(command);
    const promise = this.queue.accept<T>(kind, command, args, spec, opts.timeoutMs ?? this.opts.timeouts[spec.timeout], signal);
    this.lastUsed = this.now();
    this.clearIdleTimer();
    this.kick();
    return promise;
  }

  private onDeadline(job: Job): void {
    const ctx = { vm: this.vm, command: job.command };
    if (job.running) {
      const unknown = job.spec.idempotent ? '' : '; it may still complete in the guest';
      this.queue.finish(job, 'timeout', {
        error: new GatewayError('AGENT_TIMEOUT', `${job.command} got no reply from the agent of ${this.vm} within ${job.timeoutMs} ms${unknown}`, ctx),
      });
      this.link.markOutOfSync('timeout');
      job.cancel.abort();
    } else if (this.inFlight) {
      this.queue.finish(job, 'timeout', {
        error: new GatewayError('AGENT_TIMEOUT', `${job.command} waited ${job.timeoutMs} ms behind other commands for ${this.vm}; it was never sent`, ctx),
      });
    } else {
      // Nothing on the wire, so the loop is connecting, syncing or backing off.
      const why = this.lastFailure ? `: ${this.lastFailure.message}` : '';
      this.queue.finish(job, 'unavailable', {
        error: new GatewayError('AGENT_UNAVAILABLE', `could not connect to and sync with the agent of ${this.vm} within ${job.timeoutMs} ms${why}`, ctx),
      });
    }
  }

  private onCallerAbort(job: Job, reason: Error): void {
    if (job.settled) return;
    const wasRunning = job.running;
    this.queue.finish(job, 'aborted', { error: reason });
    if (wasRunning) {
      this.link.markOutOfSync('aborted');
      job.cancel.abort();
    }
  }

  /** Start the loop if it is not running. It does not throw; if it ever did, fail loudly but safely. */
  private kick(): void {
    this.pump().catch((err: unknown) => {
      this.opts.logger?.error({ vm: this.vm, err }, 'channel loop failed');
      this.destroy(new GatewayError('INTERNAL', `the channel to ${this.vm} failed: ${String(err)}`, { vm: this.vm, cause: err }));
    });
  }

  /** The one loop that drains the queue. */
  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.queue.length > 0 && this.current !== 'closed') {
        // A reconnect (the socket was lost or released while jobs waited) needs a slot too.
        const refused = this.link.connection?.closed === false ? undefined : this.admission?.();
        if (refused) {
          for (const job of this.queue.all()) {
            this.queue.finish(job, 'unavailable', { error: new GatewayError(refused.code, refused.message, { vm: this.vm, command: job.command, retryAfter: refused.retryAfter }) });
          }
          break;
        }
        let ready: { conn: AgentConnection; rttMs?: number };
        try {
          ready = await this.link.ready((phase) => this.setState(phase), () => this.isClosed());
          this.failures = 0;
          this.lastFailure = undefined;
          this.setState('ready');
        } catch (err) {
          if (this.isClosed()) break;
          this.failures++;
          this.lastFailure = err instanceof Error ? err : new Error(String(err));
          this.opts.logger?.debug({ vm: this.vm, err: this.lastFailure.message, failures: this.failures }, 'agent connect/sync failed');
          if (this.queue.length === 0) break;
          if (nobodyListens(err)) {
            // No QEMU behind the path (or nothing on the port): retrying until each caller's
            // deadline would only make them wait for the same answer.
            const detail = `the agent socket of ${this.vm} cannot be connected (${errnoOf(err)})`;
            for (const job of this.queue.all()) {
              this.queue.finish(job, 'unavailable', { error: new GatewayError('AGENT_UNAVAILABLE', detail, { vm: this.vm, command: job.command }) });
            }
            break;
          }
          await this.backoff();
          continue;
        }
        const job = this.queue.shift();
        if (!job) break;
        await this.run(ready.conn, job, ready.rttMs);
      }
    } finally {
      this.pumping = false;
      this.afterPump();
    }
  }

  private afterPump(): void {
    if (this.current === 'closed') return;
    if (this.queue.length > 0) {
      this.kick();
      return;
    }
    if (this.current === 'closing') {
      this.finishClose();
      return;
    }
    if (!this.link.connection) {
      this.setState('idle');
      return;
    }
    this.armIdleTimer();
  }

  private async run(conn: AgentConnection, job: Job, readyRttMs: number | undefined): Promise<void> {
    job.running = true;
    this.inFlight = job;
    this.lastUsed = this.now();
    const result = await dispatch(this.link, conn, job, this.vm, readyRttMs);
    job.running = false;
    this.inFlight = undefined;
    this.lastUsed = this.now();
    if (result.outcome === 'abandoned') return;
    if (result.outcome === 'resend' && this.now() < job.deadline) {
      job.retried = true;
      this.queue.requeue(job);
      this.opts.logger?.debug({ vm: this.vm, command: job.command }, 'connection lost; resending idempotent command');
    } else if (result.outcome === 'resend') {
      const error = new GatewayError('AGENT_UNAVAILABLE', `the connection to the agent of ${this.vm} was lost during ${job.command}`, { vm: this.vm, command: job.command });
      this.queue.finish(job, 'unavailable', { error });
    } else if (result.outcome === 'ok') {
      this.queue.finish(job, 'ok', { value: result.value });
    } else {
      this.queue.finish(job, result.outcome, { error: result.error });
    }
  }

  private backoff(): Promise<void> {
    const { initialMs, maxMs } = this.opts.backoff;
    const cap = Math.min(maxMs, initialMs * 2 ** Math.min(this.failures - 1, 30));
    const delay = Math.random() * cap;
    this.setState('backoff');
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(this.backoffTimer);
        this.backoffTimer = undefined;
        this.wakeBackoff = undefined;
        resolve();
      };
      this.wakeBackoff = wake;
      this.backoffTimer = setTimeout(wake, delay);
    });
  }

  private armIdleTimer(): void {
    this.clearIdleTimer();
    if (this.opts.idleReleaseMs <= 0) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.release()) this.opts.logger?.debug({ vm: this.vm }, 'released idle agent connection');
    }, this.opts.idleReleaseMs);
    this.idleTimer.unref();
  }

  private clearIdleTimer(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  private finishClose(): void {
    this.clearIdleTimer();
    this.wakeBackoff?.();
    this.link.drop();
    this.setState('closed');
    const waiters = this.closeWaiters;
    this.closeWaiters = [];
    for (const w of waiters) w();
  }
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

const NOBODY_LISTENS = new Set(['ENOENT', 'ECONNREFUSED', 'ENOTSOCK', 'EACCES', 'EPERM']);

function errnoOf(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && typeof e === 'object' && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('E') && code !== 'AGENT_UNAVAILABLE') return code;
  }
  return undefined;
}

function nobodyListens(err: unknown): boolean {
  const code = errnoOf(err);
  return code !== undefined && NOBODY_LISTENS.has(code);
}
