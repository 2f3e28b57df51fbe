/**
 * File-specific readings of agent errors: a missing file and an unknown handle (both GenericError
 * with only the text to tell them, read in qga/agent-errors.ts) are a 404, not a generic 422.
 */
import { isGatewayError, errors } from '../errors.js';
import { agentErrorKind } from '../qga/agent-errors.js';

export function mapFileError(e: unknown, ctx: { vm: string; path?: string; handle?: number }): unknown {
  if (!isGatewayError(e) || e.code !== 'AGENT_ERROR') return e;
  const kind = agentErrorKind(e.qga);
  const desc = e.qga?.desc ?? '';
  if (kind === 'no-such-file') {
    return errors.rewrap(e, 'NOT_FOUND', `no such file in the guest: ${ctx.path ?? desc}`, { vm: ctx.vm });
  }
  if (kind === 'unknown-handle') {
    return errors.rewrap(e, 'NOT_FOUND', `the agent has no open file handle ${ctx.handle ?? ''}`.trim(), { vm: ctx.vm });
  }
  return e;
}
