/**
 * How a channel job ends when the agent did not simply answer it: each situation worded once, for
 * the Channel and its Session to pick. These codes and texts are what callers (and HTTP clients)
 * see; agent error replies are mapped in agent-errors.ts instead.
 */
import { GatewayError, errors } from '../errors.js';
import type { Job } from './queue.js';
import { ReplyTooLargeError } from './wire-errors.js';

/**
 * `sent: false` in the problem body: the command was never written to the agent (nobody listens,
 * no connection or sync within the deadline, or the deadline passed while it waited in line), so it
 * did not run in the guest. A freeze failing this way needs no rollback thaw (freeze/session.ts).
 */
const NOT_SENT: Readonly<Record<string, unknown>> = Object.freeze({ sent: false });

/** errors of a job whose own deadline passed while the session was still connecting or syncing (ended.notConnected) */
const CALLER_DEADLINES = new WeakSet<Error>();

/** True for an AGENT_UNAVAILABLE that says only that the caller's deadline came first, not that a handshake failed. */
export function callerDeadline(e: unknown): boolean {
  return e instanceof Error && CALLER_DEADLINES.has(e);
}

export const ended = {
  /** close() was called: nothing new is accepted */
  closing: (vm: string, command: string) => errors.shuttingDown(`the channel to ${vm} is closing`, { vm, command }),
  queueFull: (vm: string, command: string, waiting: number) =>
    errors.queueFull(vm, `${waiting} commands are already waiting for ${vm}`, { command }),
  /** destroy() without an error of its own */
  shutDown: (vm: string) => errors.agentUnavailable(vm, `the channel to ${vm} was shut down`),
  /** a (re)connect was refused by the admission check (the pool's maxOpen) */
  refused: (vm: string, job: Job, refused: GatewayError) =>
    errors.rewrap(refused, refused.code, refused.message, { vm, command: job.command }),
  nobodyListens: (vm: string, job: Job, errno: string) =>
    errors.agentUnavailable(vm, `the agent socket of ${vm} cannot be connected (${errno})`, { command: job.command, extra: NOT_SENT }),
  /**
   * Deadline passed while the session was connecting, syncing or backing off. Worded by what it was
   * doing: a channel still setting up (or resynchronizing after an earlier command's timeout) is not
   * an agent that failed to answer, and under load the difference is what an operator needs (h10 L3).
   */
  notConnected: (vm: string, job: Job, lastFailure: Error | undefined, phase?: string) => {
    const step = phase === 'connecting' ? 'connecting to it' : phase === 'syncing' ? 'synchronizing with it (guest-sync-delimited)' : phase === 'info' ? 'reading its guest-info' : undefined;
    const text =
      step !== undefined && lastFailure === undefined
        ? `the channel to the agent of ${vm} was still ${step} when this ${job.command}'s ${job.timeoutMs} ms deadline passed; it was never sent`
        : `could not connect to and sync with the agent of ${vm} within ${job.timeoutMs} ms${lastFailure ? `: ${lastFailure.message}` : ''}${step !== undefined ? ` (it was ${step} again)` : ''}`;
    const e = errors.agentUnavailable(vm, text, { command: job.command, extra: NOT_SENT });
    CALLER_DEADLINES.add(e);
    return e;
  },
  /** connect/sync kept failing for that long (Session.handshakeGiveUpMs), before the job's own deadline */
  handshakesFailed: (vm: string, job: Job, attempts: number, ms: number, lastFailure: Error | undefined) => {
    const why = lastFailure ? `; the last: ${lastFailure.message}` : '';
    return errors.agentUnavailable(vm, `could not connect to and sync with the agent of ${vm}: ${attempts} attempts failed over ${Math.round(ms)} ms${why}`, { command: job.command, extra: NOT_SENT });
  },
  /** deadline passed in the line, behind the job on the wire */
  neverSent: (vm: string, job: Job) =>
    errors.agentTimeout(vm, job.command, `${job.command} waited ${job.timeoutMs} ms behind other commands for ${vm}; it was never sent`, { extra: NOT_SENT }),
  /** deadline passed on the wire */
  noReply: (vm: string, job: Job) => {
    const unknown = job.spec.idempotent ? '' : '; it may still complete in the guest';
    return errors.agentTimeout(vm, job.command, `${job.command} got no reply from the agent of ${vm} within ${job.timeoutMs} ms${unknown}`);
  },
  /** the socket closed under a job that may not be (or was already) resent */
  lost: (vm: string, job: Job, resendable: boolean, cause?: Error) => {
    const detail = resendable
      ? `the connection to the agent of ${vm} was lost during ${job.command}`
      : `the connection to the agent of ${vm} was lost while ${job.command} was in flight; its outcome is unknown and it was not resent`;
    return errors.agentUnavailable(vm, detail, { command: job.command, cause });
  },
  /** the job could not be carried out on this socket (a forced sync with no reply, unserializable arguments) */
  failed: (vm: string, job: Job, err: unknown) =>
    errors.agentUnavailable(vm, `${job.command} failed for ${vm}: ${err instanceof Error ? err.message : String(err)}`, { command: job.command, cause: err }),
  /** a reply line that cannot be the answer; one over the reply cap or the buffer budget is REPLY_TOO_LARGE */
  garbage: (vm: string, job: Job, err: Error) =>
    err instanceof ReplyTooLargeError
      ? errors.replyTooLarge(vm, job.command, `${job.command} on ${vm}: ${err.message}`, { cause: err })
      : errors.protocol(vm, job.command, err.message, { cause: err }),
  infoFailed: (vm: string, job: Job) => errors.agentError(vm, job.command, 'guest-info failed'),
  internal: (vm: string, err: unknown) => errors.internal(`the channel to ${vm} failed: ${String(err)}`, { vm, cause: err }),
};

const NOBODY_LISTENS = new Set(['ENOENT', 'ECONNREFUSED', 'ENOTSOCK', 'EACCES', 'EPERM']);

/** The errno behind a failed connect when it means no agent is there at all (no QEMU, nothing on the port). */
export function nobodyListens(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && typeof e === 'object' && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('E') && code !== 'AGENT_UNAVAILABLE') return NOBODY_LISTENS.has(code) ? code : undefined;
  }
  return undefined;
}
