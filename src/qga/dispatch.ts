/**
 * One job on the wire, and what became of it. The Channel acts on the result (settle, resend,
 * resync); this file only decides what the agent's answer — or its silence — means.
 */
import { GatewayError } from '../errors.js';
import { agentErrorToGatewayError } from './agent-errors.js';
import { ConnectionLostError, ProtocolViolationError, type AgentConnection } from './connection.js';
import type { AgentLink } from './link.js';
import type { CommandOutcome, Job } from './queue.js';

export type DispatchResult =
  | { outcome: 'ok'; value: unknown }
  | { outcome: Exclude<CommandOutcome, 'ok'>; error: GatewayError }
  /** the connection dropped before an answer; the command is safe to send again */
  | { outcome: 'resend' }
  /** the job was settled meanwhile (deadline or caller abort); its answer no longer matters */
  | { outcome: 'abandoned' };

/** Commands whose reply names something the agent created and that nobody else could clean up. */
const CREATES = new Set(['guest-file-open']);

export async function dispatch(link: AgentLink, conn: AgentConnection, job: Job, vm: string, readyRttMs: number | undefined): Promise<DispatchResult> {
  const ctx = { vm, command: job.command };
  const signal = job.cancel.signal;
  let id: number | undefined;
  try {
    if (job.kind === 'sync') {
      // a sync that ready() just did counts; otherwise do one now
      const rttMs = readyRttMs ?? (await link.resync(conn, 'requested', signal));
      return { outcome: 'ok', value: { rttMs } };
    }
    if (job.kind === 'info') {
      const info = link.agentInfo;
      if (info) return { outcome: 'ok', value: info };
      return { outcome: 'agent-error', error: link.agentInfoError ?? new GatewayError('AGENT_ERROR', 'guest-info failed', ctx) };
    }
    const info = link.agentInfo;
    // guest-info's own word on success-response beats the catalog's
    const successResponse = info?.commands.get(job.command)?.successResponse ?? job.spec.successResponse;
    id = info?.echoesId ? link.newRequestId() : undefined;
    const reply = successResponse
      ? await conn.request(job.command, job.args, id, { signal })
      : await conn.fence(job.command, job.args, id, link.newSyncId(), { signal });
    if (reply.ok) return { outcome: 'ok', value: reply.value };
    return { outcome: 'agent-error', error: agentErrorToGatewayError(reply.error, ctx) };
  } catch (err) {
    const result = classify(err, link, conn, job, vm);
    if (result.outcome === 'abandoned' && id !== undefined && CREATES.has(job.command)) link.orphan(id, job.command);
    return result;
  }
}

function classify(err: unknown, link: AgentLink, conn: AgentConnection, job: Job, vm: string): DispatchResult {
  // Deadline or caller abort: the connection already knows it must resync.
  if (job.settled) return { outcome: 'abandoned' };
  const ctx = { vm, command: job.command, cause: err };
  if (err instanceof ConnectionLostError) {
    const resendable = job.kind !== 'command' || job.spec.idempotent;
    if (resendable && !job.retried) return { outcome: 'resend' };
    const detail = resendable
      ? `the connection to the agent of ${vm} was lost during ${job.command}`
      : `the connection to the agent of ${vm} was lost while ${job.command} was in flight; its outcome is unknown and it was not resent`;
    return { outcome: 'unavailable', error: new GatewayError('AGENT_UNAVAILABLE', detail, ctx) };
  }
  if (err instanceof ProtocolViolationError) {
    link.markOutOfSync('protocol-error');
    return { outcome: 'protocol-error', error: new GatewayError('AGENT_PROTOCOL_ERROR', err.message, ctx) };
  }
  // A forced sync that did not come back: the socket cannot be trusted any more.
  conn.destroy();
  const detail = err instanceof Error ? err.message : String(err);
  return { outcome: 'unavailable', error: new GatewayError('AGENT_UNAVAILABLE', `${job.command} failed for ${vm}: ${detail}`, ctx) };
}
