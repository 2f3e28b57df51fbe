/**
 * What a simulated command sees. `GuestState` is the guest (disk, clock, accounts); `ProcessState`
 * is the agent process (file handles, exec records), which a guest reboot wipes but a host-side
 * disconnect does not.
 */
import type { JsonValue } from '../../src/qga/types.js';
import type { GuestState } from '../state.js';
import type { VersionTraits } from '../version.js';
import type { ArgStruct, Member } from '../visitor.js';
import type { FileNode } from '../vfs.js';

export interface OpenFile {
  path: string;
  node: FileNode;
  pos: number;
  readable: boolean;
  writable: boolean;
  append: boolean;
}

export type CaptureMode = 'none' | 'stdout' | 'stderr' | 'separated' | 'merged';

export interface ExecRecord {
  pid: number;
  /** wall-clock ms when the simulated process exits */
  exitAt: number;
  exitcode?: number;
  signal?: number;
  capture: CaptureMode;
  out: Buffer;
  err: Buffer;
  outTruncated: boolean;
  errTruncated: boolean;
}

export interface ProcessState {
  handles: Map<number, OpenFile>;
  /** next handle number: starts at 1000, never reused */
  nextHandle: number;
  execs: Map<number, ExecRecord>;
  nextPid: number;
}

export function newProcessState(): ProcessState {
  return { handles: new Map(), nextHandle: 1000, execs: new Map(), nextPid: 1200 };
}

export interface CommandInfo {
  name: string;
  enabled: boolean;
  successResponse: boolean;
}

export interface AgentRuntime {
  readonly state: GuestState;
  readonly proc: ProcessState;
  readonly version: string;
  readonly traits: VersionTraits;
  /** multiplies simulated durations (guest-exec of /bin/sleep) */
  readonly timeScale: number;
  /** wall clock, milliseconds */
  now(): number;
  /** waits, or resolves early when the simulator shuts down */
  sleep(ms: number): Promise<void>;
  /** the next reply gets the 0xFF sentinel (guest-sync-delimited) */
  setDelimited(): void;
  /** guest-info's view of the command table (current enabled flags) */
  commandTable(): CommandInfo[];
  /** freeze or thaw: switches the frozen allow-list on or off */
  setFrozen(frozen: boolean): void;
  /** guest-shutdown: the VM goes away (halt/powerdown) or reboots */
  shutdown(mode: string): void;
}

export type CommandResult = JsonValue | undefined;

export interface CommandDef {
  name: string;
  /** QGA version that introduced it (from the reference) */
  since: string;
  /** argument schema; a function when it changed between agent versions */
  args?: readonly Member[] | ((traits: VersionTraits) => readonly Member[]);
  /** false for guest-shutdown and guest-suspend-*: nothing is sent on success */
  successResponse?: boolean;
  /** undefined means "no return value": `{}` on the wire, or nothing when successResponse is false */
  run(rt: AgentRuntime, args: ArgStruct): CommandResult | Promise<CommandResult>;
}
