/**
 * Shared protocol-level types. Agent replies are decoded losslessly: an integer that does not fit
 * in a JavaScript number exactly (|n| > 2^53 - 1) is a `bigint`; every other number is a `number`.
 * `src/util/json.ts` serializes these values back to JSON text without losing a digit.
 */

// The JSON value types live with the lossless codec (util/, below this layer); re-exported for the protocol's users.
import type { JsonObject, JsonValue } from '../util/json.js';
import type { ReplyBudget } from './reply-budget.js';
export type { JsonObject, JsonValue };

/** Where a VM's agent socket is. Resolved server-side only; never taken from an HTTP caller. */
export type Endpoint =
  | { type: 'unix'; path: string }
  | { type: 'tcp'; host: string; port: number };

export type ChannelState =
  | 'idle' // no socket; the next command connects
  | 'connecting' // socket being opened
  | 'syncing' // 0xFF + guest-sync-delimited handshake in progress; user commands wait
  | 'ready' // in sync; commands flow
  | 'backoff' // connect or sync failed; waiting before the next attempt
  | 'closing' // close(): draining the queue, accepting nothing new
  | 'closed'; // terminal

export type TimeoutClass = 'fast' | 'normal' | 'slow' | 'freeze' | 'long';

export interface CommandSpec {
  name: string;
  /** timeout class; its default duration lives in DEFAULT_TIMEOUTS (commands.ts) */
  timeout: TimeoutClass;
  /** safe to send again after a drop or timeout (reads are; exec, file-write, set-* are not) */
  idempotent: boolean;
  /** false for guest-shutdown and guest-suspend-*: no reply on success; completed by a sync fence */
  successResponse: boolean;
  /** one of the six commands the agent allows while frozen */
  frozenSafe: boolean;
  /** what it does to the guest: read (safe), write (changes guest state), admin */
  scope: 'read' | 'write' | 'admin';
  /** QGA version that introduced it, from the reference */
  since: string;
  /**
   * changes guest state (freeze/thaw, fstrim, power, set-*, exec, file open/write/seek/flush/close,
   * ssh keys): every one sent gets an audit start and completion record (absent: false)
   */
  mutating?: boolean;
}

/** What guest-info told us, cached per channel after the first sync. */
export interface AgentInfo {
  version: string;
  /** [major, minor, micro] parsed from version; [0,0,0] when unparseable */
  versionTuple: [number, number, number];
  commands: Map<string, { enabled: boolean; successResponse: boolean }>;
  /** the agent echoes request ids (>= 4.0): we send and check them */
  echoesId: boolean;
  /** the raw guest-info return, losslessly decoded */
  raw: JsonObject;
}

/** A channel's tunables (ChannelOptions makes them optional; the defaults are in channel.ts). */
export interface ChannelSettings {
  /** commands allowed to wait (not counting the one in flight) */
  maxQueue: number;
  /** longest reply line accepted; a longer one is dropped unbuffered and the socket resynced */
  maxReplyBytes: number;
  /** one budget over the partial reply lines of all channels (agent.maxBufferedBytes); none: no global limit */
  replyBudget?: ReplyBudget;
  /** one deadline for the whole resync, and one for reading guest-info */
  syncTimeoutMs: number;
  connectTimeoutMs: number;
  /** full-jitter delays between connect/sync attempts, only while commands wait */
  backoff: { initialMs: number; maxMs: number };
  /** close the socket after this long with nothing to do; 0 = never */
  idleReleaseMs: number;
  /**
   * a guest-ping on a new socket runs without reading guest-info first when the channel's copy
   * was read less than this long ago (on an earlier socket); 0 = read it on every new socket
   */
  infoMaxAgeMs: number;
}

export interface ExecuteOptions {
  /** per-call override of the catalog timeout, milliseconds */
  timeoutMs?: number;
  /** abort: takes a waiting command out of the queue; an in-flight one is abandoned (reply discarded) */
  signal?: AbortSignal;
  /**
   * The priority lane (freeze and thaw): the job goes ahead of every ordinary waiting job (behind
   * earlier priority jobs), and is never refused by maxQueue, the pool's maxOpen or a draining channel.
   */
  priority?: 'thaw' | 'freeze';
  /**
   * Who the audit trail names for a mutating command: 'gateway' for the gateway's own actions
   * (deadline and shutdown thaws). Default: the principal of the HTTP request the call runs in
   * (src/util/audit.ts auditContext), else 'gateway'.
   */
  actor?: string;
  /**
   * Asked when the job reaches the wire, the socket held and nothing else on it: `true` sends the
   * command, an Error fails it unsent (outcome `fenced`). A thaw's fence check: the lease it was
   * checked under may have ended, and the VM been frozen under another, while it waited for the
   * socket (another process held it). Waited for up to syncTimeoutMs; past that, or if it throws,
   * the command is sent (an unneeded thaw costs nothing, a missing one leaves a guest frozen).
   */
  gate?: () => Promise<true | Error>;
  /**
   * The gateway's own check, asked by nobody (the probe, a down VM's retry): its command event says
   * so (CommandEvent.background), and it is not counted among the agent commands in the metrics.
   */
  background?: true;
}

export interface ChannelStats {
  vm: string;
  state: ChannelState;
  queued: number;
  inFlight: number;
  connectedAt?: number;
  lastUsedAt: number;
  agentVersion?: string;
}
