/**
 * Turning a guest-info reply into the AgentInfo the channel caches.
 *
 * Interned (issue 14): a fleet runs a handful of agent builds, so most VMs answer guest-info with
 * the same version and command list. Identical answers (same version, same commands with the same
 * enabled and success-response flags) share ONE frozen AgentInfo: an idle channel holds no copy of
 * its own (memory per channel), and a reconnect does not rebuild the command map (CPU under churn).
 * At most MAX_INTERNED distinct answers are kept (the oldest goes first); `raw` is the first of the
 * identical answers.
 *
 * Bounded (a guest is not trusted): the fleet view carries every VM's version and enabled commands
 * on every listing, so a hostile guest-info (300,000 invented commands, a version of a megabyte)
 * must not be copied there. Only command names of the agent's form are kept, at most
 * MAX_AGENT_COMMANDS (qemu-ga 9 has 53); a version that is not a short printable string is
 * `unknown`. `raw`, the reply as received, is what GET …/info answers (bounded by agent.maxReplyBytes).
 */
import type { AgentInfo, JsonObject, JsonValue } from './types.js';

/** Agents from 4.0 on echo a request's "id" in the reply; older ones drop or reject it. */
const ID_ECHO_SINCE: [number, number] = [4, 0];

const MAX_INTERNED = 256;
export const MAX_AGENT_COMMANDS = 512;
const COMMAND_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
const VERSION = /^[\x20-\x7e]{1,64}$/;
const interned = new Map<string, AgentInfo>();

export function parseAgentInfo(raw: JsonValue): AgentInfo {
  const obj: JsonObject = isObject(raw) ? raw : {};
  const version = typeof obj.version === 'string' && VERSION.test(obj.version) ? obj.version : 'unknown';
  const list = commandsOf(obj);
  // what identifies the answer: each part length-prefixed, so no two answers share a key
  let key = `${version.length}:${version}`;
  for (const entry of list) {
    key += `${entry.name.length}:${entry.name}${entry.enabled !== false ? 1 : 0}${entry['success-response'] !== false ? 1 : 0}`;
  }
  const known = interned.get(key);
  if (known !== undefined) return known;
  const info = build(obj, version, list);
  if (interned.size >= MAX_INTERNED) interned.delete(interned.keys().next().value as string);
  interned.set(key, info);
  return info;
}

/** the well-formed entries of supported_commands, at most MAX_AGENT_COMMANDS */
function commandsOf(obj: JsonObject): Array<JsonObject & { name: string }> {
  const out: Array<JsonObject & { name: string }> = [];
  if (!Array.isArray(obj.supported_commands)) return out;
  for (const entry of obj.supported_commands) {
    if (!isObject(entry) || typeof entry.name !== 'string' || !COMMAND_NAME.test(entry.name)) continue;
    out.push(entry as JsonObject & { name: string });
    if (out.length >= MAX_AGENT_COMMANDS) break;
  }
  return out;
}

function build(obj: JsonObject, version: string, list: Array<JsonObject & { name: string }>): AgentInfo {
  const versionTuple = parseVersion(version);
  const commands: AgentInfo['commands'] = new Map();
  for (const entry of list) {
    commands.set(entry.name, {
      enabled: entry.enabled !== false,
      successResponse: entry['success-response'] !== false,
    });
  }
  const [major, minor] = versionTuple;
  const echoesId = major > ID_ECHO_SINCE[0] || (major === ID_ECHO_SINCE[0] && minor >= ID_ECHO_SINCE[1]);
  return Object.freeze({ version, versionTuple, commands, echoesId, raw: obj });
}

export function parseVersion(version: string): [number, number, number] {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(version.trim());
  if (!m) return [0, 0, 0];
  return [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
}

function isObject(v: JsonValue | undefined): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
