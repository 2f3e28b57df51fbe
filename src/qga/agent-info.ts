/** Turning a guest-info reply into the AgentInfo the channel caches. */
import type { AgentInfo, JsonObject, JsonValue } from './types.js';

/** Agents from 4.0 on echo a request's "id" in the reply; older ones drop or reject it. */
const ID_ECHO_SINCE: [number, number] = [4, 0];

export function parseAgentInfo(raw: JsonValue): AgentInfo {
  const obj: JsonObject = isObject(raw) ? raw : {};
  const version = typeof obj.version === 'string' ? obj.version : 'unknown';
  const versionTuple = parseVersion(version);
  const commands: AgentInfo['commands'] = new Map();
  const list = Array.isArray(obj.supported_commands) ? obj.supported_commands : [];
  for (const entry of list) {
    if (!isObject(entry) || typeof entry.name !== 'string') continue;
    commands.set(entry.name, {
      enabled: entry.enabled !== false,
      successResponse: entry['success-response'] !== false,
    });
  }
  const [major, minor] = versionTuple;
  const echoesId = major > ID_ECHO_SINCE[0] || (major === ID_ECHO_SINCE[0] && minor >= ID_ECHO_SINCE[1]);
  return { version, versionTuple, commands, echoesId, raw: obj };
}

export function parseVersion(version: string): [number, number, number] {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(version.trim());
  if (!m) return [0, 0, 0];
  return [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
}

function isObject(v: JsonValue | undefined): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
