/**
 * The one place that reads an agent's error text. qemu-ga sends `{"error": {"class", "desc"}}`
 * and, across versions, words the same situation differently and reuses classes for unrelated
 * ones (CommandNotFound means "unknown", "disabled" and "refused while frozen"; GenericError
 * carries "no such file", "unknown handle" and "unknown pid"). Everything else in the gateway
 * branches on the kind or the gateway code decided here, never on the text.
 */
import { GatewayError, type QgaErrorBody } from '../errors.js';

export type AgentErrorKind =
  /** refused because the guest's filesystems are frozen */
  | 'frozen'
  /** disabled in the agent (--block-rpcs, or disabled while frozen on older agents) */
  | 'disabled'
  /** the agent does not know the command */
  | 'not-supported'
  /** guest-exec-status for a pid the agent has no record of (never started, or already reaped) */
  | 'unknown-pid'
  /** a file path that does not exist in the guest */
  | 'no-such-file'
  /** a guest-file-* handle the agent does not know */
  | 'unknown-handle'
  /** any other failure the agent reports */
  | 'other';

const FROZEN = /frozen state|not allowed/i;
const DISABLED = /has been disabled/i;
const UNKNOWN_PID = /invalid parameter 'pid'/i;
const NO_SUCH_FILE = /no such file or directory/i;
const UNKNOWN_HANDLE = /handle '?-?\d+'? has not been found/i;

export function agentErrorKind(qga: QgaErrorBody | undefined): AgentErrorKind {
  if (!qga) return 'other';
  const desc = qga.desc ?? '';
  if (qga.class === 'CommandNotFound') {
    if (FROZEN.test(desc)) return 'frozen';
    if (DISABLED.test(desc)) return 'disabled';
    return 'not-supported';
  }
  if (UNKNOWN_PID.test(desc)) return 'unknown-pid';
  if (NO_SUCH_FILE.test(desc)) return 'no-such-file';
  if (UNKNOWN_HANDLE.test(desc)) return 'unknown-handle';
  return 'other';
}

/** An agent error reply as the gateway error a caller sees. */
export function agentErrorToGatewayError(qga: QgaErrorBody, ctx: { vm?: string; command?: string } = {}): GatewayError {
  const desc = qga.desc ?? '';
  switch (agentErrorKind(qga)) {
    case 'frozen':
      return new GatewayError('VM_FROZEN', `the agent refused ${ctx.command ?? 'the command'}: ${desc}`, { ...ctx, qga });
    case 'disabled':
      return new GatewayError('COMMAND_DISABLED', desc, { ...ctx, qga });
    case 'not-supported':
      return new GatewayError('COMMAND_NOT_SUPPORTED', desc, { ...ctx, qga });
    default:
      return new GatewayError('AGENT_ERROR', desc || qga.class, { ...ctx, qga });
  }
}

/** True when e is an agent error reply of the given kind. */
export function isAgentError(e: unknown, kind: AgentErrorKind): e is GatewayError {
  return e instanceof GatewayError && e.qga !== undefined && agentErrorKind(e.qga) === kind;
}
