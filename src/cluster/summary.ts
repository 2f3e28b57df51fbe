/**
 * What a node publishes of each VM it serves (one field of its VM hash in Redis), enough for the
 * cluster-wide GET /v1/vms: source, endpoint (admin callers see it), labels, the agent's state
 * (without lastSeen, which changes on every call and would make every listing rewrite the hash),
 * capabilities, frozen, and the channel's state. The freeze owner is not in it: leases live in the
 * shared store, and every node reads them from there.
 */
import type { Endpoint } from '../qga/types.js';
import type { VmRecord, VmSource } from '../registry/types.js';
import { isRecord } from '../util/unknown.js';

export type AgentState = 'up' | 'down' | 'unknown';
export type ChannelStateName = 'idle' | 'connecting' | 'syncing' | 'ready' | 'backoff' | 'closing' | 'closed';

export interface VmEntrySummary {
  source: VmSource;
  endpoint?: Endpoint;
  labels?: Record<string, string>;
  agent: { state: AgentState; since: string; lastError?: string; version?: string };
  capabilities?: string[];
  frozen: boolean;
  /** frozen outside the gateway, seen since (ISO) */
  externalSince?: string;
  channel: ChannelStateName;
}

/** What the summary is built from (the agent service's view of one VM). */
export interface SummarySource {
  fleetState(vm: string): { agent: { state: AgentState; since: string; lastError?: string; version?: string }; capabilities?: string[] };
  frozen(vm: string): boolean;
  externalSince(vm: string): string | undefined;
  channel(vm: string): ChannelStateName | undefined;
}

export function summarize(rec: VmRecord, src: SummarySource): VmEntrySummary {
  const fleet = src.fleetState(rec.name);
  const a = fleet.agent;
  const ext = src.externalSince(rec.name);
  return {
    source: rec.source,
    endpoint: rec.endpoint,
    ...(rec.labels ? { labels: rec.labels } : {}),
    agent: { state: a.state, since: a.since, ...(a.lastError !== undefined ? { lastError: a.lastError } : {}), ...(a.version !== undefined ? { version: a.version } : {}) },
    ...(fleet.capabilities ? { capabilities: fleet.capabilities } : {}),
    frozen: src.frozen(rec.name) || ext !== undefined,
    ...(ext !== undefined ? { externalSince: ext } : {}),
    channel: src.channel(rec.name) ?? 'idle',
  };
}

const SOURCES = new Set(['config', 'directory', 'api']);
const STATES = new Set(['up', 'down', 'unknown']);
const CHANNELS = new Set(['idle', 'connecting', 'syncing', 'ready', 'backoff', 'closing', 'closed']);

const isStringMap = (v: unknown): v is Record<string, string> => isRecord(v) && Object.values(v).every((x) => typeof x === 'string');

/** A hash field another node wrote, checked; undefined for anything malformed (skipped, never trusted). */
export function decodeSummary(text: string): VmEntrySummary | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isRecord(v) || typeof v.source !== 'string' || !SOURCES.has(v.source) || typeof v.frozen !== 'boolean') return undefined;
  const a = v.agent;
  if (!isRecord(a) || typeof a.state !== 'string' || !STATES.has(a.state) || typeof a.since !== 'string') return undefined;
  if (v.labels !== undefined && !isStringMap(v.labels)) return undefined;
  if (v.capabilities !== undefined && !(Array.isArray(v.capabilities) && v.capabilities.every((c) => typeof c === 'string'))) return undefined;
  if (typeof v.channel !== 'string' || !CHANNELS.has(v.channel)) return undefined;
  const e = v.endpoint;
  const endpoint: Endpoint | undefined =
    isRecord(e) && e.type === 'unix' && typeof e.path === 'string'
      ? { type: 'unix', path: e.path }
      : isRecord(e) && e.type === 'tcp' && typeof e.host === 'string' && typeof e.port === 'number'
        ? { type: 'tcp', host: e.host, port: e.port }
        : undefined;
  return {
    source: v.source as VmSource,
    ...(endpoint ? { endpoint } : {}),
    ...(v.labels !== undefined ? { labels: v.labels } : {}),
    agent: {
      state: a.state as AgentState,
      since: a.since,
      ...(typeof a.lastError === 'string' ? { lastError: a.lastError } : {}),
      ...(typeof a.version === 'string' ? { version: a.version } : {}),
    },
    ...(v.capabilities !== undefined ? { capabilities: v.capabilities as string[] } : {}),
    frozen: v.frozen,
    ...(typeof v.externalSince === 'string' ? { externalSince: v.externalSince } : {}),
    channel: v.channel as ChannelStateName,
  };
}
