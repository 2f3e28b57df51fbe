/**
 * Any QGA command, verbatim (the admin passthrough), with the rules a verbatim command must still
 * obey and the bookkeeping it must not escape:
 *  - the channel's own handshake (guest-sync, guest-sync-delimited) is refused: a caller's sync id
 *    would confuse the resync logic;
 *  - freeze and thaw are refused (409 USE_FREEZE_API): a freeze without a lease would have no
 *    deadline and no automatic thaw, and a thaw would end someone else's lease without a check;
 *  - every call is recorded in the audit trail (who, which VM, which command: never arguments,
 *    which may hold file contents or passwords);
 *  - the agent service's capability and frozen checks apply as for every typed route;
 *  - the domain services see every raw command: one may answer it itself (a guest-exec-status the
 *    exec reaper already collected, which the agent has therefore deleted), and each records the
 *    effect of one that succeeded (a handle opened, a process started), so nothing the passthrough
 *    creates is left behind in the agent.
 */
import { errors } from '../errors.js';
import { NO_RESPONSE } from '../qga/commands.js';
import type { JsonObject, JsonValue } from '../qga/types.js';
import type { AuditLog } from '../util/audit.js';
import type { AgentService } from './service.js';

/** A domain service's share of raw-command bookkeeping (exec, files). */
export interface RawObserver {
  /** answer the command without the agent; undefined = send it */
  answerRaw?(vm: string, command: string, args: JsonObject | undefined, signal: AbortSignal): Promise<JsonValue | undefined>;
  /** record the effect of a command that succeeded */
  afterRaw?(vm: string, command: string, args: JsonObject | undefined, value: JsonValue): void;
}

export interface RawResult {
  value: JsonValue;
  /** the command sends no reply on success (shutdown, suspend…): only its acceptance is known */
  noResponse: boolean;
}

const INTERNAL_COMMANDS = new Set(['guest-sync', 'guest-sync-delimited']);
const FREEZE_COMMANDS = new Set(['guest-fsfreeze-freeze', 'guest-fsfreeze-freeze-list', 'guest-fsfreeze-thaw']);

export class RawPassthrough {
  constructor(
    private readonly agent: AgentService,
    private readonly observers: readonly RawObserver[],
    private readonly audit: AuditLog,
  ) {}

  /** `who`: the principal (token name) sending it and the HTTP request's id, for the audit trail */
  async run(vm: string, command: string, args: JsonObject | undefined, who: { by: string; requestId?: string }, signal: AbortSignal): Promise<RawResult> {
    if (INTERNAL_COMMANDS.has(command)) {
      throw errors.validation(`${command} is the gateway's channel handshake; use POST /v1/vms/${vm}/agent/sync`, { vm, command });
    }
    if (FREEZE_COMMANDS.has(command)) throw errors.useFreezeApi(vm, command);
    this.audit.record({ action: 'raw', by: who.by, vm, command, ...(who.requestId === undefined ? {} : { requestId: who.requestId }) }, 'raw QGA command');
    // Asked first: after a no-response command the guest may be gone, and with it the channel.
    // The call below needs the same (cached) guest-info for its checks: no extra round trip.
    const info = await this.agent.info(vm, { signal });
    const noResponse = info.commands.get(command)?.successResponse === false || NO_RESPONSE.has(command);
    for (const o of this.observers) {
      const served = await o.answerRaw?.(vm, command, args, signal);
      if (served !== undefined) return { value: served, noResponse };
    }
    const value = await this.agent.call(vm, command, args, { signal });
    for (const o of this.observers) o.afterRaw?.(vm, command, args, value);
    return { value, noResponse };
  }
}
