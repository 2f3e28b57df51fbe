/**
 * The Channel's waiting line. A job is one accepted unit of work (a user command, a forced sync,
 * an info request); its deadline is fixed when it is accepted, so queue wait, connect, sync and
 * run all count against it. Settling goes through finish() exactly once: timer cleared, caller's
 * abort listener removed, job out of the line, one 'command' event.
 */
import { abortReason } from '../util/abort.js';
import type { CommandSpec, JsonObject } from './types.js';

export type JobKind = 'command' | 'sync' | 'info';

export type CommandOutcome = 'ok' | 'agent-error' | 'timeout' | 'unavailable' | 'protocol-error' | 'aborted';

export interface CommandEvent {
  command: string;
  durationMs: number;
  outcome: CommandOutcome;
}

export interface Job {
  readonly kind: JobKind;
  readonly command: string;
  readonly args: JsonObject | undefined;
  readonly spec: CommandSpec;
  readonly acceptedAt: number;
  readonly timeoutMs: number;
  /** on the queue's clock: after this the job fails */
  readonly deadline: number;
  /** set while the job is on the wire */
  running: boolean;
  /** an idempotent command already re-sent once after a dropped connection */
  retried: boolean;
  settled: boolean;
  /** cancels the connection wait of a running job (deadline or caller abort) */
  readonly cancel: AbortController;
  timer?: NodeJS.Timeout;
  detach?: () => void;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

export interface JobQueueHooks {
  now(): number;
  /** the job's deadline passed (it may be waiting or running) */
  onDeadline(job: Job): void;
  /** the caller's signal aborted (it may be waiting or running) */
  onAbort(job: Job, reason: Error): void;
  onSettled(event: CommandEvent): void;
  /** the last waiting job left the line */
  onEmpty(): void;
}

export class JobQueue {
  private readonly jobs: Job[] = [];

  constructor(private readonly hooks: JobQueueHooks) {}

  get length(): number {
    return this.jobs.length;
  }

  /** Append a job; the promise settles through finish(). */
  accept<T>(kind: JobKind, command: string, args: JsonObject | undefined, spec: CommandSpec, timeoutMs: number, signal?: AbortSignal): Promise<T> {
    const acceptedAt = this.hooks.now();
    return new Promise<T>((resolve, reject) => {
      const job: Job = {
        kind, command, args, spec, acceptedAt, timeoutMs,
        deadline: acceptedAt + timeoutMs,
        running: false, retried: false, settled: false,
        cancel: new AbortController(),
        resolve: (v) => resolve(v as T),
        reject,
      };
      job.timer = setTimeout(() => this.hooks.onDeadline(job), timeoutMs);
      if (signal) {
        const onAbort = (): void => this.hooks.onAbort(job, abortReason(signal));
        signal.addEventListener('abort', onAbort, { once: true });
        job.detach = () => signal.removeEventListener('abort', onAbort);
      }
      this.jobs.push(job);
    });
  }

  shift(): Job | undefined {
    return this.jobs.shift();
  }

  /** Put a job back at the head (an idempotent command resent after a drop). */
  requeue(job: Job): void {
    this.jobs.unshift(job);
  }

  all(): Job[] {
    return [...this.jobs];
  }

  /** Settle a job exactly once. */
  finish(job: Job, outcome: CommandOutcome, result: { value?: unknown; error?: unknown }): void {
    if (job.settled) return;
    job.settled = true;
    clearTimeout(job.timer);
    job.detach?.();
    const i = this.jobs.indexOf(job);
    if (i >= 0) {
      this.jobs.splice(i, 1);
      if (this.jobs.length === 0) this.hooks.onEmpty();
    }
    if (outcome === 'ok') job.resolve(result.value);
    else job.reject(result.error);
    this.hooks.onSettled({ command: job.command, durationMs: this.hooks.now() - job.acceptedAt, outcome });
  }
}
