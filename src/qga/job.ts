/**
 * One accepted unit of work on a Channel: a user command, a forced sync, or an info request.
 * Its deadline is fixed when it is accepted, so queue wait, connect, sync and run all count.
 */
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
  /** monotonic ms (the channel's clock) after which the job fails */
  readonly deadline: number;
  /** set while the job is on the wire */
  running: boolean;
  /** an idempotent command already re-sent once after a dropped connection */
  retried: boolean;
  settled: boolean;
  /** cancels the connection wait of a running job (deadline or caller abort) */
  readonly cancel: AbortController;
  timer?: NodeJS.Timeout;
  /** removes the caller's abort listener */
  detach?: () => void;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

/** What an unknown command is treated as: normal timeout, never resent, has a reply. */
export function defaultSpec(command: string): CommandSpec {
  return {
    name: command,
    timeout: 'normal',
    idempotent: false,
    successResponse: true,
    frozenSafe: false,
    scope: 'admin',
    since: '0.0',
  };
}
