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

export function unknownPid(vm: string, pid: number, cause: GatewayError, startedHere: boolean): GatewayError {
  const detail = startedHere
    ? `the agent has no record of pid ${pid} any more and the gateway holds no final status for it: ` +
      `the reply that carried it was lost, or another client collected it first`
    : `the agent has no process record for pid ${pid}: it was never started through guest-exec, ` +
      `or its final status was already collected (and is no longer kept by this gateway)`;
  return errors.rewrap(cause, 'NOT_FOUND', detail, { vm, command: 'guest-exec-status' });
}
