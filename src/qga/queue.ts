/**
 * The Channel's waiting line: urgent (priority-lane) jobs first, FIFO among them, then ordinary
 * jobs, FIFO. A job is one accepted unit of work (a user command, a forced sync,
 * an info request); its deadline is fixed when it is accepted, so queue wait, connect, sync and
 * run all count against it. The line keeps no timers: the Session decides when a deadline has
 * passed. Settling goes through finish() exactly once: caller's abort listener removed, job out of
 * the line, promise settled, one 'command' event.
 */
import { unwatchAbort, watchAbort, type AbortWatcher } from '../util/abort.js';
import { answerInTurn } from '../util/turn-end.js';
import type { AuditContext } from '../util/audit.js';
import type { CommandOutcome } from './events.js';
import type { CommandSpec, JsonObject } from './types.js';

export type JobKind = 'command' | 'sync' | 'info';

/** Told when a caller's AbortSignal fires for one of its jobs (waiting or on the wire). */
export interface AbortHandler {
  onCallerAbort(job: Job): void;
}

export class Job implements AbortWatcher {
  /** on the session's clock: after this the job fails */
  readonly deadline: number;
  /** set while the job is on the wire */
  running = false;
  /** an idempotent command already re-sent once after a dropped connection */
  retried = false;
  /** in the priority lane (freeze, thaw): ahead of every ordinary waiting job */
  urgent = false;
  settled = false;
  /** a mutating command: who it is for (set when accepted); audited once sent */
  audit: AuditContext | undefined;
  /** times written to the agent; when the first write happened (session clock) */
  sends = 0;
  firstSentAt = 0;
  /** pairs the audit start and end records */
  auditId = 0;
  /** ExecuteOptions.gate, asked when the job reaches the wire; `gated` once it let it go (on this socket) */
  gate: (() => Promise<true | Error>) | undefined;
  gated = false;
  /** ExecuteOptions.background */
  background = false;
  resolve!: (value: never) => void;
  reject!: (err: unknown) => void;

  constructor(
    readonly kind: JobKind,
    readonly command: string,
    readonly args: JsonObject | undefined,
    readonly spec: CommandSpec,
    readonly acceptedAt: number,
    readonly timeoutMs: number,
    readonly signal: AbortSignal | undefined,
    private readonly onAbort: AbortHandler,
  ) {
    this.deadline = acceptedAt + timeoutMs;
    if (signal !== undefined) watchAbort(signal, this);
  }

  /** its caller's signal aborted (one listener per signal: util/abort.ts watchAbort) */
  onSignalAbort(): void {
    this.onAbort.onCallerAbort(this);
  }
}

export class JobQueue {
  private readonly jobs: Job[] = [];
  /** > 0 while a job settles: a 'command' listener may enqueue from there, mid-transition */
  settling = 0;

  constructor(private readonly onSettled: (job: Job, outcome: CommandOutcome, result: unknown) => void) {}

  get length(): number {
    return this.jobs.length;
  }

  /** priority-lane jobs waiting (they are always the first ones in the line) */
  get urgent(): number {
    let n = 0;
    while (n < this.jobs.length && this.jobs[n].urgent) n++;
    return n;
  }

  /** A new job's promise, settled through finish(). An urgent job goes behind the urgent ones only. */
  accept<T>(job: Job): Promise<T> {
    const p = new Promise<T>((resolve, reject) => {
      job.resolve = resolve as (value: never) => void;
      job.reject = reject;
    });
    if (job.urgent) this.jobs.splice(this.urgent, 0, job);
    else this.jobs.push(job);
    unsettled++;
    return p;
  }

  /** ordinary jobs waiting: what maxQueue bounds */
  get ordinary(): number {
    return this.jobs.length - this.urgent;
  }

  /** the job shift() would take next */
  get head(): Job | undefined {
    return this.jobs[0];
  }

  shift(): Job | undefined {
    return this.jobs.shift();
  }

  /** Put a job back at the head of its lane (an idempotent command resent after a drop). */
  requeue(job: Job): void {
    this.jobs.splice(job.urgent ? 0 : this.urgent, 0, job);
  }

  all(): Job[] {
    return [...this.jobs];
  }

  /** the earliest deadline of a waiting job (Infinity when none waits) */
  earliestDeadline(): number {
    let at = Infinity;
    for (const job of this.jobs) if (job.deadline < at) at = job.deadline;
    return at;
  }

  /**
   * Settle a job exactly once: `result` is the value for 'ok', the error otherwise. The job leaves
   * the line and its 'command' event is emitted now. Its promise settles now when it was the
   * process's last unsettled job (and nothing deferred waits); else at the end of this event-loop
   * turn (util/turn-end.ts answerInTurn): a reply's caller (an HTTP answer) then runs after every
   * channel whose reply came in this turn has written its next command, and the answers go out
   * together.
   */
  finish(job: Job, outcome: CommandOutcome, result: unknown): void {
    if (job.settled) return;
    job.settled = true;
    if (job.signal !== undefined) unwatchAbort(job.signal, job);
    const i = this.jobs.indexOf(job);
    if (i >= 0) this.jobs.splice(i, 1);
    unsettled--;
    answerInTurn(unsettled > 0, outcome === 'ok' ? job.resolve : job.reject, result as never, undefined);
    this.settling++;
    try {
      this.onSettled(job, outcome, result);
    } finally {
      this.settling--;
    }
  }

  /** Settle the waiting jobs due by `dueBy` (default: all of them) with the error made for each. */
  failWaiting(outcome: CommandOutcome, errorFor: (job: Job) => Error, dueBy = Infinity): void {
    for (const job of this.all()) if (job.deadline <= dueBy) this.finish(job, outcome, errorFor(job));
  }
}

/** jobs accepted and not yet finished, in every line of the process */
let unsettled = 0;

/** jobs accepted and not yet finished in this process (every accepted job is finished exactly once) */
export function unsettledJobs(): number {
  return unsettled;
}
