/**
 * File-specific readings of agent errors. qemu-ga reports a missing file only in its message
 * ("failed to open file '/x' (mode: 'r'): No such file or directory") and an unknown handle as
 * "handle '1234' has not been found", both with class GenericError; this is the one place that
 * reads that text, to give callers a 404 instead of a generic 422.
 */
import { GatewayError, isGatewayError } from '../errors.js';

export function mapFileError(e: unknown, ctx: { vm: string; path?: string; handle?: number }): unknown {
  if (!isGatewayError(e) || e.code !== 'AGENT_ERROR') return e;
  const desc = e.qga?.desc ?? '';
  if (/no such file or directory/i.test(desc)) {
    return new GatewayError('NOT_FOUND', `no such file in the guest: ${ctx.path ?? desc}`, {
      vm: ctx.vm,
      command: e.command,
      qga: e.qga,
      cause: e,
    });
  }
  if (/handle '?-?\d+'? has not been found/i.test(desc)) {
    return new GatewayError('NOT_FOUND', `the agent has no open file handle ${ctx.handle ?? ''}`.trim(), {
      vm: ctx.vm,
      command: e.command,
      qga: e.qga,
      cause: e,
    });
  }
  return e;
}
