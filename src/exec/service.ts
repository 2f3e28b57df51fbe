/**
 * ExecService: guest-exec made usable. Starts processes, collects their final status exactly
 * once from the agent (which deletes it on that read) and keeps it on the gateway, waits with
 * backoff, and reaps processes nobody polls so their records do not pile up in the agent.
 *
 * Two rules follow from the agent's "first exited reply deletes the record":
 *  - a `guest-exec-status` is never abandoned once sent (no caller signal reaches it): its reply
 *    may be the only copy of the result. Callers that go away simply stop waiting for it.
 *  - concurrent polls of one pid share one agent call, so two readers never race the record.
 * For the same reason `guest-exec` itself is sent without the caller's signal: once it is on the
 * wire the process will run, and only its pid lets the reaper clean up after it.
 */
import { VM_GONE_GRACE_MS } from '../registry/types.js';
import type { Config } from '../config/schema.js';
import { isGatewayError, errors } from '../errors.js';
import type { JsonObject, JsonValue } from '../qga/types.js';
import { isJsonObject } from '../util/json.js';
import { isTransient, isUnknownPid, unknownPid } from './errors.js';
import { ResultCache } from './results.js';
import { PidTracker, type TrackedPid } from './tracker.js';
import type { AgentCaller, SocketSharing } from '../agent/service.js';
import type { AgentVersionOf, CaptureOutput, ExecStartRequest, ExecStatus, ExecStatusRecord } from './types.js';
import { abortReason } from '../util/abort.js';

export type ExecSettings = Config['exec'];

export interface ExecLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

const REAP_BATCH = 16;
const CAPTURE_ENUM_SINCE: readonly [number, number, number] = [8, 0, 0];

/** a pause between two polls of a wait at least this long lets the agent socket go (yieldSocket) */
export const YIELD_AFTER_MS = 500;

export class ExecService {
  readonly results: ResultCache;
  readonly tracker: PidTracker;
  private readonly inflight = new Map<string, Promise<ExecStatusRecord>>();
  private reaperTimer?: NodeJS.Timeout;
  private reaping = false;

  constructor(
    private readonly agent: AgentCaller & Partial<SocketSharing> & { connectionLostAt?(vm: string): number | undefined },
    private readonly versionOf: AgentVersionOf,
    readonly settings: ExecSettings,
    readonly log?: ExecLogger,
  ) {
    this.results = new ResultCache({
      ttlMs: settings.resultTtlSeconds * 1000,
      maxEntries: settings.resultCacheMaxEntries,
      maxBytes: settings.resultCacheMaxBytes,
    });
    this.tracker = new PidTracker(
      { intervalMs: settings.reaperIntervalMs, maxIntervalMs: settings.reaperMaxIntervalMs, maxTracked: settings.maxTrackedPids },
      Date.now,
      (t) => this.noteGivenUp(t.vm, t.pid),
    );
  }

  /**
   * A pid no longer tracked (past exec.maxTrackedPids): the first of a burst is logged at once, the
   * rest counted and said in one line at most every 10 s (h11 F5: a burst of exec starts wrote one
   * warning per pid, 21,394 lines in 20 s).
   */
  private givenUp = { count: 0, loggedAt: -Infinity, vms: new Set<string>() };
  private noteGivenUp(vm: string, pid: number): void {
    const g = this.givenUp;
    const now = Date.now();
    if (now - g.loggedAt >= 10_000) {
      const also = g.count > 0 ? { notLoggedSince: g.count, vmsSince: [...g.vms].slice(0, 20) } : {};
      this.log?.warn({ vm, pid, ...also }, 'exec: too many unreaped processes (exec.maxTrackedPids), no longer tracking the oldest; further ones are counted in this line at most every 10 s');
      g.loggedAt = now;
      g.count = 0;
      g.vms.clear();
      return;
    }
    g.count++;
    if (g.vms.size < 20) g.vms.add(vm);
  }

  /** Start a process; returns its pid. Its final status will be collected even if nobody asks. */
  async start(vm: string, req: ExecStartRequest): Promise<number> {
    const args: JsonObject = { path: req.path };
    if (req.arg) args.arg = req.arg;
    if (req.env) args.env = req.env;
    if (req.input && req.input.length > 0) args['input-data'] = req.input.toString('base64');
    args['capture-output'] = await this.captureArgument(vm, req.capture ?? true);
    const reply = await this.agent.call(vm, 'guest-exec', args);
    const pid = isJsonObject(reply) ? reply.pid : undefined;
    if (typeof pid !== 'number' || !Number.isSafeInteger(pid)) {
      throw errors.unexpectedReply(vm, 'guest-exec', 'no pid');
    }
    // A guest pid can be reused; a result kept for an earlier process must not answer for this one.
    this.results.delete(vm, pid);
    this.tracker.track(vm, pid);
    return pid;
  }

  /**
   * The process's status: the kept final status if the gateway has one, otherwise one
   * guest-exec-status (shared with any concurrent poll of the same pid).
   */
  async status(vm: string, pid: number, signal?: AbortSignal): Promise<ExecStatusRecord> {
    const kept = this.results.get(vm, pid);
    if (kept) return kept;
    const key = ResultCache.key(vm, pid);
    let poll = this.inflight.get(key);
    if (!poll) {
      poll = this.pollAgent(vm, pid).finally(() => this.inflight.delete(key));
      this.inflight.set(key, poll);
    }
    this.tracker.touched(vm, pid);
    return signal ? raceAbort(poll, signal) : poll;
  }

  /**
   * Poll until the process exits or `waitMs` runs out, backing off from pollInitialMs to
   * pollMaxMs. Returns the last status seen: `exited: false` when time ran out. Transient agent
   * trouble (a lost reply, a resync, a frozen guest) only costs a poll; the process runs on.
   */
  async wait(vm: string, pid: number, waitMs: number, signal?: AbortSignal): Promise<ExecStatusRecord> {
    const deadline = performance.now() + waitMs;
    let delay = this.settings.pollInitialMs;
    let last: ExecStatusRecord = { pid, status: { exited: false } };
    this.tracker.beginWait(vm, pid);
    try {
      for (;;) {
        try {
          last = await this.status(vm, pid, signal);
          if (last.status.exited) return last;
        } catch (e) {
          if (signal?.aborted || !isTransient(e)) throw e;
          this.log?.debug({ vm, pid, err: e }, 'exec: status poll failed, polling again');
        }
        const remaining = deadline - performance.now();
        if (remaining <= 0) return last;
        const pause = Math.min(delay, remaining);
        // a wait that has gone on past its first quick polls lets the socket go between them: the
        // agent serves one client, and another tool (qm agent, vzdump's freeze) would otherwise
        // wait for the whole wait behind it; the next poll connects again
        if (pause >= YIELD_AFTER_MS) this.agent.yieldSocket?.(vm);
        await sleep(pause, signal);
        delay = Math.min(delay * 1.5, this.settings.pollMaxMs);
      }
    } finally {
      this.tracker.endWait(vm, pid);
    }
  }

  startReaper(): void {
    if (this.reaperTimer) return;
    const every = Math.max(100, Math.min(this.settings.reaperIntervalMs, 5_000));
    this.reaperTimer = setInterval(() => void this.reapOnce(), every);
    this.reaperTimer.unref();
  }

  stop(): void {
    if (this.reaperTimer) clearInterval(this.reaperTimer);
    this.reaperTimer = undefined;
  }

  /** One reaper pass (exported for tests): poll every due pid, keep what has exited. */
  async reapOnce(): Promise<void> {
    if (this.reaping) return;
    this.reaping = true;
    try {
      this.results.sweep();
      const due = this.tracker.due(REAP_BATCH);
      await Promise.all(due.map((t) => this.reapOne(t)));
    } finally {
      this.reaping = false;
    }
  }

  private async reapOne(t: TrackedPid): Promise<void> {
    try {
      const rec = await this.status(t.vm, t.pid);
      if (!rec.status.exited) this.tracker.backOff(t);
    } catch (e) {
      const now = Date.now();
      // the VM left the registry: it may come back with the same agent, which still holds the
      // record (a reload, a socket gone for a while); given up after VM_GONE_GRACE_MS
      if (isTransient(e) || (isGatewayError(e) && e.code === 'VM_NOT_FOUND' && now - (t.vmGoneSince ??= now) < VM_GONE_GRACE_MS)) this.tracker.backOff(t);
      else {
        // Unknown pid, VM gone, command disabled: polling again will not help.
        this.tracker.untrack(t.vm, t.pid);
        this.log?.warn({ vm: t.vm, pid: t.pid, err: e }, 'exec: reaper gave up on a process');
      }
    }
  }

  /**
   * The late reply of a guest-exec or guest-exec-status whose caller had given up (a timeout: the
   * pool's 'orphan' event). A final status is the agent's only copy (it deleted its record when it
   * sent it): kept, as a poll's would be. A pid is a process nobody knows of: tracked, so the reaper
   * collects it and its record does not stay in the agent.
   */
  lateReply(e: { vm: string; command: string; value: JsonValue; args?: JsonObject }): void {
    if (e.command === 'guest-exec') {
      const pid = isJsonObject(e.value) ? e.value.pid : undefined;
      if (typeof pid !== 'number' || !Number.isSafeInteger(pid)) return;
      this.tracker.track(e.vm, pid);
      this.log?.warn({ vm: e.vm, pid }, 'exec: a guest-exec whose caller had given up started a process: tracked, its result is reaped');
      return;
    }
    if (e.command !== 'guest-exec-status') return;
    const pid = e.args?.pid;
    if (typeof pid !== 'number' || !Number.isSafeInteger(pid)) return;
    let status: ExecStatus;
    try {
      status = toExecStatus(e.value, e.vm);
    } catch {
      return;
    }
    if (!status.exited || this.results.get(e.vm, pid)) return;
    this.results.set(e.vm, { pid, status, collectedAt: Date.now() });
    this.tracker.untrack(e.vm, pid);
    this.log?.info({ vm: e.vm, pid }, 'exec: kept the final status of a late guest-exec-status reply (the agent has no copy left)');
  }

  /** when the agent's end closed the connection after `at` (an agent restart, or a lost reply), if it did */
  private agentLostAfter(vm: string, at: number): number | undefined {
    const lost = this.agent.connectionLostAt?.(vm);
    return lost !== undefined && lost >= at ? lost : undefined;
  }

  private async pollAgent(vm: string, pid: number): Promise<ExecStatusRecord> {
    let reply: JsonValue;
    try {
      reply = await this.agent.call(vm, 'guest-exec-status', { pid });
    } catch (e) {
      if (isUnknownPid(e)) {
        // A concurrent path (an earlier poll whose reply we did get) may have kept it meanwhile.
        const kept = this.results.get(vm, pid);
        if (kept) return kept;
        const startedAt = this.tracker.get(vm, pid)?.startedAt;
        this.tracker.untrack(vm, pid);
        throw unknownPid(vm, pid, e, startedAt, startedAt === undefined ? undefined : this.agentLostAfter(vm, startedAt));
      }
      // VM_NOT_FOUND: left to the reaper, which keeps the pid a while (the VM may come back)
      throw e;
    }
    const status = toExecStatus(reply, vm);
    const rec: ExecStatusRecord = { pid, status };
    if (status.exited) {
      rec.collectedAt = Date.now();
      this.results.set(vm, rec);
      this.tracker.untrack(vm, pid);
    }
    return rec;
  }

  /**
   * The `capture-output` value this agent understands. The flag form works on every agent, so
   * the modes that mean the same thing are sent as the flag; the others need QGA >= 8.0.
   */
  private async captureArgument(vm: string, capture: CaptureOutput): Promise<JsonValue> {
    if (typeof capture === 'boolean') return capture;
    if (capture === 'separated') return true;
    if (capture === 'none') return false;
    // The version comes from guest-info, cached when the channel synced (a sync happens here if needed).
    const version = await this.versionOf(vm);
    const known = version.some((n) => n > 0); // [0,0,0]: unparseable, let the agent judge
    if (known && compareVersion(version, CAPTURE_ENUM_SINCE) < 0) {
      throw errors.commandNotSupported(
        vm,
        'guest-exec',
        `capture-output "${capture}" needs a guest agent >= 8.0 (this one is ${version.join('.')}); use true, false, "separated" or "none"`,
      );
    }
    return capture;
  }
}

function compareVersion(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
  return 0;
}

function toExecStatus(reply: JsonValue, vm: string): ExecStatus {
  if (!isJsonObject(reply) || typeof reply.exited !== 'boolean') {
    throw errors.unexpectedReply(vm, 'guest-exec-status', 'no "exited" flag');
  }
  const s: ExecStatus = { exited: reply.exited };
  if (typeof reply.exitcode === 'number') s.exitcode = reply.exitcode;
  if (typeof reply.signal === 'number') s.signal = reply.signal;
  if (typeof reply['out-data'] === 'string') s['out-data'] = reply['out-data'];
  if (typeof reply['err-data'] === 'string') s['err-data'] = reply['err-data'];
  if (typeof reply['out-truncated'] === 'boolean') s['out-truncated'] = reply['out-truncated'];
  if (typeof reply['err-truncated'] === 'boolean') s['err-truncated'] = reply['err-truncated'];
  return s;
}


/** Stop waiting for `p` when `signal` aborts; `p` itself runs on. */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(abortReason(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortReason(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(abortReason(signal));
  return new Promise((resolve, reject) => {
    // registered on the signal only, so it runs only when there is one
    const onAbort = () => {
      clearTimeout(timer);
      if (signal) reject(abortReason(signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
