/**
 * What channels tell the rest of the gateway, on ONE typed emitter. The pool is that emitter for
 * every channel it makes (metrics and the files service subscribe to it once); a Channel built on
 * its own gets a fresh one. Every payload names its VM, so nobody has to relay events per channel.
 */
import { EventEmitter } from 'node:events';
import type { ChannelState, JsonObject, JsonValue } from './types.js';

export type CommandOutcome = 'ok' | 'agent-error' | 'timeout' | 'unavailable' | 'protocol-error' | 'aborted' | 'fenced';

export type ResyncReason = 'connect' | 'timeout' | 'aborted' | 'protocol-error' | 'stale-data' | 'requested';

/** one accepted job settled (durationMs: from acceptance, queue wait included) */
export interface CommandEvent {
  vm: string;
  command: string;
  durationMs: number;
  outcome: CommandOutcome;
  /** 'info' jobs are answered from the guest-info cached at connect (nothing is sent for them) */
  kind?: 'command' | 'sync' | 'info';
  /** the gateway's own check (ExecuteOptions.background): not an agent command anyone asked for */
  background?: true;
}

export interface StateEvent {
  vm: string;
  state: ChannelState;
  prev: ChannelState;
  /**
   * the gateway let the socket go itself (release(): idle release, a probe or wait done, pool
   * eviction), also mid-handshake when nothing waits for it any more: says nothing of the agent
   */
  released?: true;
}

/** 0xFF + guest-sync-delimited is about to be written, and why */
export interface ResyncEvent {
  vm: string;
  reason: ResyncReason;
}

/** bytes discarded: replies left by an earlier client or an abandoned command, torn or oversize lines */
export interface StaleEvent {
  vm: string;
  bytes: number;
}

/** the late reply of an abandoned command that created something in the agent (a file handle) */
export interface OrphanEvent {
  vm: string;
  command: string;
  value: JsonValue;
  /** the arguments the abandoned request was sent with */
  args?: JsonObject;
}

/**
 * A mutating command (CommandSpec.mutating) and the agent: `start` when it is first written to the
 * socket, `end` when its job settles after that (one of each per job; a job never sent has none).
 * `id` pairs them (unique per process); argument values never, only their names (and exec's argv).
 */
export interface AuditCommandEvent {
  phase: 'start' | 'end';
  id: number;
  vm: string;
  command: string;
  /** the principal, or 'gateway' */
  by: string;
  requestId?: string;
  /** start: the names of the arguments given (never their values) */
  fields?: string[];
  /** start, guest-exec only: path and arg (capped) */
  argv?: string[];
  /** end: how it ended */
  outcome?: CommandOutcome;
  /** end, not ok: the error code the caller got */
  code?: string;
  /** end: times it was written (2: an idempotent command resent after a lost connection) */
  sends?: number;
  /** end: from the first send */
  durationMs?: number;
}

export interface ChannelEventMap {
  state: [StateEvent];
  command: [CommandEvent];
  resync: [ResyncEvent];
  stale: [StaleEvent];
  orphan: [OrphanEvent];
  audit: [AuditCommandEvent];
}

export class ChannelEvents extends EventEmitter<ChannelEventMap> {}

/** A command's outcome as logs and metrics spell it (Prometheus style: snake case), a fixed set. */
const OUTCOME_LABEL: Record<CommandOutcome, string> = {
  ok: 'ok',
  'agent-error': 'agent_error',
  timeout: 'timeout',
  unavailable: 'unavailable',
  'protocol-error': 'protocol_error',
  aborted: 'aborted',
  fenced: 'fenced',
};

export function outcomeLabel(outcome: CommandOutcome): string {
  return OUTCOME_LABEL[outcome] ?? 'other';
}
