/**
 * The audit trail of mutating agent commands (invariant 4 of the fault matrix): for every command
 * the catalog marks mutating (src/qga/commands.ts MUTATING; a command it does not know counts as
 * mutating) that is actually written to an agent, exactly one `start` record and one completion
 * record, whatever path sent it: typed routes, the raw passthrough, freezes and thaws (caller,
 * group, rollback, deadline, shutdown, forced), exec, file handles and streaming. The channel
 * emits the `audit` events (src/qga/audit-trail.ts), so no path can skip them.
 *
 *   {audit: true, action: "agent-command", phase: "start", id, vm, command, by, requestId?, fields?, argv?}
 *   {audit: true, action: "agent-command", phase: "end", id, vm, command, by, requestId?,
 *    outcome: ok | agent_error | timeout | unavailable | protocol_error | aborted (as the metrics spell it), code?, sends, durationMs}
 *
 * `by` is the principal (token name) of the HTTP request the command was sent for, or `gateway`
 * for the gateway's own actions (deadline, reconcile and shutdown thaws). `outcome: unavailable`
 * after a start means the connection was lost with the command on the wire (its effect unknown).
 * A command refused before it was sent (validation, scope, VM_FROZEN, COMMAND_DISABLED,
 * QUEUE_FULL, a deadline or abort while it waited) has no record: the agent never saw it.
 * Argument values (passwords, file content, exec input, environment) are never part of a record:
 * `fields` names the arguments given, shown redacted by their absence; guest-exec's record carries
 * its argv (path and arg, capped), as the fault matrix asks (D7).
 */
import { outcomeLabel, type AuditCommandEvent, type ChannelEvents } from '../qga/events.js';
import type { AuditLog } from '../util/audit.js';

export const COMMAND_AUDIT_ACTION = 'agent-command';

/** Write the records for every channel reporting to `events` (the pool); returns the unsubscribe. */
export function auditAgentCommands(events: ChannelEvents, audit: AuditLog): () => void {
  const onAudit = (e: AuditCommandEvent): void => {
    // the outcome spelled as in the metrics (agent_error, not agent-error): one spelling to query
    const record = e.outcome === undefined ? e : { ...e, outcome: outcomeLabel(e.outcome) };
    audit.record({ action: COMMAND_AUDIT_ACTION, ...record }, e.phase === 'start' ? 'agent command sent' : 'agent command completed', 'info');
  };
  events.on('audit', onAudit);
  return () => events.off('audit', onAudit);
}
