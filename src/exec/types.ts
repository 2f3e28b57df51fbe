/**
 * Exec types shared by the service and the routes. `ExecStatus` is the agent's GuestExecStatus
 * with the QGA member names verbatim; the gateway adds only camelCase members on the HTTP side.
 */
import type { ExecuteOptions, JsonObject, JsonValue } from '../qga/types.js';

/** GuestExecCaptureOutputMode (QGA 8.0); `true`/`false` is the older flag form. */
export type CaptureMode = 'none' | 'stdout' | 'stderr' | 'separated' | 'merged';
export type CaptureOutput = boolean | CaptureMode;

export interface ExecStartRequest {
  path: string;
  arg?: string[];
  env?: string[];
  /** stdin bytes, already decoded from text or base64 and checked against the cap */
  input?: Buffer;
  capture?: CaptureOutput;
}

/** GuestExecStatus as the agent sends it. */
export interface ExecStatus {
  exited: boolean;
  exitcode?: number;
  signal?: number;
  'out-data'?: string;
  'err-data'?: string;
  'out-truncated'?: boolean;
  'err-truncated'?: boolean;
}

/** A status as the gateway reports it: where it came from and when it was collected. */
export interface ExecStatusRecord {
  pid: number;
  status: ExecStatus;
  /** epoch ms when the gateway read the final status from the agent (exited only) */
  collectedAt?: number;
}

/** What the exec and files services need from the agent layer (app.services.agent). */
/** The guest-info version of a VM's agent ([major, minor, micro]; [0,0,0] when unparseable). */
export type AgentVersionOf = (vm: string) => Promise<readonly [number, number, number]>;
