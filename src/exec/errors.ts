/**
 * Exec-specific readings of agent errors. qemu-ga answers a pid it has no record of the same way
 * for a pid it never started and for one whose final status was already handed out
 * (qga/agent-errors.ts reads that text).
 */
import { GatewayError, isGatewayError, type ErrorCode, errors } from '../errors.js';
import { isAgentError } from '../qga/agent-errors.js';

export function isUnknownPid(e: unknown): e is GatewayError {
  return isGatewayError(e) && e.code === 'AGENT_ERROR' && isAgentError(e, 'unknown-pid');
}

/** Errors after which polling again later may succeed (the process keeps running meanwhile). */
const TRANSIENT = new Set<ErrorCode>(['AGENT_TIMEOUT', 'AGENT_UNAVAILABLE', 'AGENT_PROTOCOL_ERROR', 'QUEUE_FULL', 'VM_FROZEN']);

export function isTransient(e: unknown): boolean {
  return isGatewayError(e) && TRANSIENT.has(e.code);
}

/**
 * `startedAt`: when this gateway started the process (undefined: not started here); `lostAt`: the
 * agent's end closed the connection after that, at this time (ms): the agent restarted (and its
 * records went with it), or the reply that carried the final status was lost with the connection.
 */
export function unknownPid(vm: string, pid: number, cause: GatewayError, startedAt?: number, lostAt?: number): GatewayError {
  const detail =
    startedAt === undefined
      ? `the agent has no process record for pid ${pid}: it was never started through guest-exec, ` +
        `or its final status was already collected (and is no longer kept by this gateway)`
      : lostAt !== undefined
        ? `the agent has no record of pid ${pid} any more and the gateway holds no final status for it: the agent's connection ` +
          `was lost after the process started (${new Date(startedAt).toISOString()}), at ${new Date(lostAt).toISOString()}: ` +
          `the agent restarted (its process records went with it, and the process most likely too), or the reply that carried ` +
          `the final status was lost with the connection`
        : `the agent has no record of pid ${pid} any more and the gateway holds no final status for it: ` +
          `the reply that carried it was lost, or another client collected it first`;
  return errors.rewrap(cause, 'NOT_FOUND', detail, { vm, command: 'guest-exec-status', extra: { pid } });
}
