/**
 * What the raw passthrough must not leave behind. The agent never forgets on its own: a file
 * handle opened through POST …/qga/guest-file-open stays open for the agent's lifetime, and a
 * guest-exec process record stays in agent memory until some guest-exec-status sees it exited.
 * So raw commands are reconciled with the same bookkeeping the typed routes use:
 *  - guest-file-open → the handle is adopted as an `api` handle (closed by the reaper when idle);
 *    raw uses of a tracked handle keep it alive; guest-file-close forgets it;
 *  - guest-exec → the pid is tracked by the exec service (its reaper collects the final status);
 *    guest-exec-status of a tracked pid is answered through the exec service, so that a status
 *    the reaper already collected (and the agent therefore deleted) is still returned.
 */
import { execServiceFor } from '../../exec/index.js';
import type { ExecStatus } from '../../exec/types.js';
import { filesServiceFor } from '../../files/index.js';
import type { JsonObject, JsonValue } from '../../qga/types.js';
import type { Services } from '../../services.js';

const HANDLE_COMMANDS = new Set(['guest-file-read', 'guest-file-write', 'guest-file-seek', 'guest-file-flush']);

function safeInt(v: JsonValue | undefined): number | undefined {
  return typeof v === 'number' && Number.isSafeInteger(v) ? v : undefined;
}

/**
 * If the exec service can answer this raw command itself (a guest-exec-status for a pid it
 * tracks or has a kept result for), its answer in the agent's shape; otherwise undefined and the
 * command goes to the agent verbatim.
 */
export async function answerFromServices(
  services: Services,
  vm: string,
  command: string,
  args: JsonObject | undefined,
  signal: AbortSignal,
): Promise<JsonValue | undefined> {
  if (command !== 'guest-exec-status' || !args || Object.keys(args).length !== 1) return undefined;
  const pid = safeInt(args.pid);
  if (pid === undefined) return undefined;
  const exec = execServiceFor(services);
  if (!exec.tracker.get(vm, pid) && !exec.results.get(vm, pid)) return undefined;
  const record = await exec.status(vm, pid, signal);
  return statusToJson(record.status);
}

function statusToJson(s: ExecStatus): JsonObject {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(s)) if (v !== undefined) out[k] = v;
  return out;
}

/** Record the effect of a raw command that succeeded. */
export function afterRawCommand(services: Services, vm: string, command: string, args: JsonObject | undefined, value: JsonValue): void {
  if (command === 'guest-file-open') {
    const handle = safeInt(value);
    if (handle === undefined) return;
    const path = typeof args?.path === 'string' ? args.path : undefined;
    const mode = typeof args?.mode === 'string' ? args.mode : 'r';
    filesServiceFor(services).guest.registry.add(vm, handle, { owner: 'api', ...(path ? { path } : {}), mode });
    return;
  }
  const handle = safeInt(args?.handle);
  if (command === 'guest-file-close' && handle !== undefined) {
    filesServiceFor(services).guest.registry.remove(vm, handle);
    return;
  }
  if (HANDLE_COMMANDS.has(command) && handle !== undefined) {
    const registry = filesServiceFor(services).guest.registry;
    // begin+end: marks the handle used now, so the idle reaper leaves it alone a while longer
    registry.begin(vm, handle);
    registry.end(vm, handle);
    return;
  }
  if (command === 'guest-exec' && value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const pid = safeInt(value.pid);
    if (pid === undefined) return;
    const exec = execServiceFor(services);
    exec.results.delete(vm, pid);
    exec.tracker.track(vm, pid);
  }
}
