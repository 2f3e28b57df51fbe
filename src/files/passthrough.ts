/**
 * The files service's share of the raw passthrough (agent/raw.ts). The agent never closes a file
 * handle on its own: one opened through the raw guest-file-open is adopted as an `api` handle
 * (closed by the idle reaper), raw uses of a tracked handle keep it alive, and a raw
 * guest-file-close forgets it.
 */
import type { JsonObject, JsonValue } from '../qga/types.js';
import type { AgentCaller } from '../agent/service.js';
import type { FilesLogger } from './guest.js';
import type { FilesService } from './service.js';

const HANDLE_COMMANDS = new Set(['guest-file-read', 'guest-file-write', 'guest-file-seek', 'guest-file-flush']);

export function filesPassthrough(files: FilesService) {
  return {
    afterRaw(vm: string, command: string, args: JsonObject | undefined, value: JsonValue): void {
      const registry = files.guest.registry;
      if (command === 'guest-file-open') {
        const handle = safeInt(value);
        if (handle === undefined) return;
        const path = typeof args?.path === 'string' ? args.path : undefined;
        const mode = typeof args?.mode === 'string' ? args.mode : 'r';
        registry.add(vm, handle, { owner: 'api', ...(path ? { path } : {}), mode });
        return;
      }
      const handle = safeInt(args?.handle);
      if (handle === undefined) return;
      if (command === 'guest-file-close') {
        registry.remove(vm, handle);
      } else if (HANDLE_COMMANDS.has(command)) {
        // begin+end: marks the handle used now, so the idle reaper leaves it alone a while longer
        registry.begin(vm, handle);
        registry.end(vm, handle);
      }
    },
  };
}

function safeInt(v: JsonValue | undefined): number | undefined {
  return typeof v === 'number' && Number.isSafeInteger(v) ? v : undefined;
}

/**
 * A guest-file-open that timed out (or whose caller left) may still have opened the file: when its
 * late reply arrives on the channel (the pool's 'orphan' event), the handle it names is closed
 * here. Nobody else could: the gateway never told anyone the number, and the agent keeps handles
 * forever.
 */
export function closeOrphanedHandles(agent: AgentCaller, log?: FilesLogger) {
  return (e: { vm: string; command: string; value: unknown }): void => {
    if (e.command !== 'guest-file-open' || typeof e.value !== 'number') return;
    const handle = e.value;
    agent.call(e.vm, 'guest-file-close', { handle }).then(
      () => log?.warn({ vm: e.vm, handle }, 'closed the handle of a guest-file-open whose caller had given up'),
      (err: unknown) => log?.warn({ vm: e.vm, handle, err: err instanceof Error ? err.message : String(err) }, 'could not close the handle of an abandoned guest-file-open'),
    );
  };
}
