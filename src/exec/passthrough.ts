/**
 * The exec service's share of the raw passthrough (agent/raw.ts). The agent keeps a guest-exec
 * process record until some guest-exec-status sees it exited, and deletes it on that read:
 *  - a raw guest-exec's pid is tracked like a typed one, so the reaper collects it;
 *  - a raw guest-exec-status of a tracked pid is answered through the service, so a status the
 *    reaper already collected (and the agent therefore deleted) is still returned.
 */
import type { JsonObject, JsonValue } from '../qga/types.js';
import type { ExecService } from './service.js';
import type { ExecStatus } from './types.js';

export function execPassthrough(exec: ExecService) {
  return {
    async answerRaw(vm: string, command: string, args: JsonObject | undefined, signal: AbortSignal): Promise<JsonValue | undefined> {
      if (command !== 'guest-exec-status' || !args || Object.keys(args).length !== 1) return undefined;
      const pid = safeInt(args.pid);
      if (pid === undefined) return undefined;
      if (!exec.tracker.get(vm, pid) && !exec.results.get(vm, pid)) return undefined;
      const record = await exec.status(vm, pid, signal);
      return statusToJson(record.status);
    },
    afterRaw(vm: string, command: string, _args: JsonObject | undefined, value: JsonValue): void {
      if (command !== 'guest-exec' || value === null || typeof value !== 'object' || Array.isArray(value)) return;
      const pid = safeInt(value.pid);
      if (pid === undefined) return;
      exec.results.delete(vm, pid);
      exec.tracker.track(vm, pid);
    },
  };
}

function safeInt(v: JsonValue | undefined): number | undefined {
  return typeof v === 'number' && Number.isSafeInteger(v) ? v : undefined;
}

function statusToJson(s: ExecStatus): JsonObject {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(s)) if (v !== undefined) out[k] = v;
  return out;
}
