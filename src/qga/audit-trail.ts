/**
 * The channel's half of the audit trail of mutating commands (CommandSpec.mutating): a job is
 * stamped with who it is for when it is accepted, announced (`audit` event, phase start) when it
 * is first written to the agent's socket, and again (phase end) when it settles after that. A job
 * that never reached the socket (refused, timed out or aborted while waiting) has no record. The
 * log lines are written by src/agent/audit-commands.ts. Argument values never leave the job: a
 * start record names the fields given (and, for guest-exec, the argv).
 */
import { isGatewayError } from '../errors.js';
import { currentActor } from '../util/audit.js';
import type { ChannelEvents, CommandOutcome } from './events.js';
import type { Job } from './queue.js';
import type { JsonObject } from './types.js';

let nextAuditId = 0;

/** At acceptance, in the caller's async context: whose command this is (mutating commands only). */
export function stampAudit(job: Job, actor: string | undefined): void {
  if (job.kind === 'command' && job.spec.mutating === true) job.audit = currentActor(actor);
}

/** The job was written to the socket (again, for a resend). */
export function auditSent(events: ChannelEvents, vm: string, job: Job, now: number): void {
  job.sends++;
  const ctx = job.audit;
  if (!ctx || job.sends > 1) return;
  job.firstSentAt = now;
  job.auditId = ++nextAuditId;
  events.emit('audit', {
    phase: 'start',
    id: job.auditId,
    vm,
    command: job.command,
    by: ctx.by,
    ...(ctx.requestId !== undefined ? { requestId: ctx.requestId } : {}),
    ...describeArgs(job.command, job.args),
  });
}

const MAX_FIELDS = 32;
const MAX_ARGV = 64;
const MAX_ARG_CHARS = 256;

/**
 * What a start record says of the arguments: the names of the fields given, never their values
 * (a password, file content, exec input are all just "there"), and for guest-exec the argv (path
 * and arg, each cut at 256 characters, at most 64), which the fault matrix asks to be audited (D7).
 */
function describeArgs(command: string, args: JsonObject | undefined): { fields?: string[]; argv?: string[] } {
  if (!args) return {};
  const fields = Object.keys(args).slice(0, MAX_FIELDS);
  if (command !== 'guest-exec') return { fields };
  const cut = (v: unknown): string => (typeof v === 'string' ? v.slice(0, MAX_ARG_CHARS) : '?');
  const rest = Array.isArray(args.arg) ? args.arg.slice(0, MAX_ARGV - 1).map(cut) : [];
  return { fields, argv: [cut(args.path), ...rest] };
}

/** The job settled: its completion record, if it was ever sent. */
export function auditSettled(events: ChannelEvents, vm: string, job: Job, outcome: CommandOutcome, result: unknown, now: number): void {
  const ctx = job.audit;
  if (!ctx || job.sends === 0) return;
  // an abort carries the caller's reason, not a gateway error: the outcome says it
  const code = outcome !== 'ok' && isGatewayError(result) ? result.code : undefined;
  events.emit('audit', {
    phase: 'end',
    id: job.auditId,
    vm,
    command: job.command,
    by: ctx.by,
    ...(ctx.requestId !== undefined ? { requestId: ctx.requestId } : {}),
    outcome,
    ...(code !== undefined ? { code } : {}),
    sends: job.sends,
    durationMs: Math.round(now - job.firstSentAt),
  });
}
