/**
 * Shapes shared by the freeze service, its thaw engine and the HTTP routes.
 */
import { GatewayError, errors, isGatewayError } from '../errors.js';
import type { ExecuteOptions, JsonObject, JsonValue } from '../qga/types.js';
import { vmOfKey, type EndedBy, type EndedLease, type Lease, type LeaseStore } from '../store/types.js';
import type { AuditLog } from '../util/audit.js';

/** What the freeze service logs through: pino's logger, or Fastify's (which wraps it). */
export interface FreezeLogger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  child(bindings: Record<string, unknown>): FreezeLogger;
}
interface LogFn {
  (obj: object, msg?: string): void;
  (msg: string): void;
}

export interface FreezeSettings {
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  /** renewals never extend a freeze past this, counted from the freeze */
  maxTotalSeconds: number;
  /** how often every process sweeps the durable deadline index */
  sweepIntervalMs: number;
  /** agent timeout for a freeze; it is also never longer than the lease TTL. Default: catalog (300 s) */
  freezeTimeoutMs?: number;
  /** agent timeout for a thaw. Default: catalog (300 s: fsfreeze hooks may run) */
  thawTimeoutMs?: number;
  /** VMs in one freeze group; default MAX_GROUP_VMS (64) */
  maxGroupVms?: number;
}

/**
 * The lease an agent command is sent under. Cluster mode (src/cluster/remote-agent.ts): a command
 * for a VM another node serves runs on that node, which checks this against the store again right
 * before sending, so an orchestrator that lost its lease sends nothing. A local call ignores it.
 *  - a freeze: the lease must be the VM's current holder and live;
 *  - a thaw: sent unless another lease holds the VM now, or (not a rollback) the lease has ended;
 *  - `forced`: an admin's forced thaw, sent whatever the store says;
 *  - `node`: the node that served the VM when it was frozen, for a VM only that node reaches: the
 *    lease's freeze and thaws go there, never to another node's VM of the same name.
 */
export type AgentFence = { session: string; leaseId: string; epoch: string; rollback?: boolean; node?: string } | { forced: true; node?: string };

export type FreezeCallOptions = ExecuteOptions & { skipCapabilityCheck?: boolean; fence?: AgentFence };

/** The agent as the freeze service needs it (AgentService satisfies it; so does the cluster's routing agent). */
export interface FreezeAgent {
  call(vm: string, command: string, args?: JsonObject, opts?: FreezeCallOptions): Promise<JsonValue>;
  /** cluster mode: the node a freeze of `vm` is bound to (AgentFence.node); undefined on one gateway */
  pinFor?(vm: string): string | undefined;
}

/** Whether `lease` has a VM whose freeze is bound to node `nodeId` (cluster mode: FreezeData.nodes). */
export function boundTo(lease: Lease, nodeId: string): boolean {
  return Object.values(freezeData(lease).nodes ?? {}).includes(nodeId);
}

/**
 * The fence of a command sent under `lease` to `vm`, with the node its freeze was bound to (if
 * any); `forced`: an admin's forced thaw of that lease, which goes to the same node.
 */
export function fenceOf(lease: Lease, vm: string, how: { rollback?: boolean; forced?: boolean } = {}): AgentFence {
  const node = freezeData(lease).nodes?.[vm];
  const pin = node !== undefined ? { node } : {};
  if (how.forced) return { forced: true, ...pin };
  return { session: lease.session, leaseId: lease.leaseId, epoch: lease.epoch, ...(how.rollback ? { rollback: true } : {}), ...pin };
}

/** The registry as the freeze service needs it: throws VM_NOT_FOUND. */
export interface FreezeRegistry {
  require(vm: string): Promise<unknown>;
}

/**
 * Every VM looked up at once (a group's members: an API-registered VM is a store read each, so one
 * after another they cost a round trip per member). The VMs that are not registered, in the order
 * given; any other failure is thrown (the first in that order).
 */
export async function unregistered(registry: FreezeRegistry, vms: readonly string[]): Promise<string[]> {
  const found = await Promise.allSettled(vms.map((vm) => registry.require(vm)));
  const missing: string[] = [];
  for (const [i, r] of found.entries()) {
    if (r.status === 'fulfilled') continue;
    const e: unknown = r.reason;
    if (!isGatewayError(e) || e.code !== 'VM_NOT_FOUND') throw e;
    missing.push(vms[i]);
  }
  return missing;
}

export interface Caller {
  name: string;
  admin: boolean;
  /** the VMs this caller may reach (token VM globs); absent = all */
  mayReach?: (vm: string) => boolean;
  /** the HTTP request acting (X-Request-Id), for its log and audit lines */
  requestId?: string;
}

/** `{ requestId }` of the acting request for a log or audit line; empty for the gateway's own work */
export function requestIdOf(who: { requestId?: string } | undefined): { requestId?: string } {
  return who?.requestId === undefined ? {} : { requestId: who.requestId };
}

/**
 * freezing: the freeze command is on its way; frozen: the agent confirmed it; unknown: the freeze
 * command timed out (sent, never answered in time) — the VM is treated as frozen under the lease
 * until its deadline or its holder's thaw (FAULTS B11/B12).
 */
export type SessionState = 'freezing' | 'frozen' | 'unknown';

/** What the freeze service keeps in a store session's data. */
export interface FreezeData {
  kind: 'vm' | 'group';
  vms: string[];
  mountpoints?: string[];
  state: SessionState;
  /** filesystems frozen per VM, once the freeze succeeded */
  frozen?: Record<string, number>;
  /** the gateway process that froze (for logs and audits) */
  gateway: string;
  /** the TTL the freeze asked for (ms): an idempotent retry must ask the same */
  ttlMs?: number;
  /**
   * an admin's forced thaw came while the freeze was still in flight (state `freezing`): the
   * freeze, whichever process runs it, is not answered 201 but rolled back (session.ts)
   */
  forcedBy?: string;
  /** cluster mode: the node each VM was frozen through, for the VMs only that node reaches (AgentFence.node) */
  nodes?: Record<string, string>;
}

/** The VMs a lease still holds: its lock keys (a group lets thawed members go: LeaseStore.releaseMembers). */
export function heldVms(lease: Lease): string[] {
  return lease.keys.map(vmOfKey).filter((vm): vm is string => vm !== undefined);
}

export function freezeData(lease: Lease): FreezeData {
  const d = lease.data;
  const vms = Array.isArray(d.vms) ? d.vms.filter((v): v is string => typeof v === 'string') : [];
  const frozen: Record<string, number> = {};
  if (d.frozen && typeof d.frozen === 'object') {
    for (const [k, v] of Object.entries(d.frozen as Record<string, unknown>)) if (typeof v === 'number') frozen[k] = v;
  }
  return {
    kind: d.kind === 'group' ? 'group' : 'vm',
    // a session made by something else than this service still names its VMs through its keys
    vms: vms.length ? vms : lease.keys.map(vmOfKey).filter((vm): vm is string => vm !== undefined),
    ...(Array.isArray(d.mountpoints) ? { mountpoints: d.mountpoints.filter((m): m is string => typeof m === 'string') } : {}),
    state: d.state === 'frozen' || d.state === 'unknown' ? d.state : 'freezing',
    frozen,
    gateway: typeof d.gateway === 'string' ? d.gateway : 'unknown',
    ...(typeof d.ttlMs === 'number' ? { ttlMs: d.ttlMs } : {}),
    ...(typeof d.forcedBy === 'string' ? { forcedBy: d.forcedBy } : {}),
    ...(d.nodes !== null && typeof d.nodes === 'object' && !Array.isArray(d.nodes)
      ? { nodes: Object.fromEntries(Object.entries(d.nodes as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === 'string')) }
      : {}),
  };
}

/** The outcome of thawing one VM. */
export interface VmThawReport {
  vm: string;
  /** filesystems the thaw command thawed */
  thawed: number;
  /** filesystems the freeze had frozen */
  frozen: number;
  /** thawed === frozen and nothing lapsed: the snapshot taken while frozen is consistent */
  consistent: boolean;
  /** why consistent is false, as a code (ThawReason); the prose is in `detail` */
  reason?: ThawReason;
  detail?: string;
}

/**
 * Why a thaw report says consistent: false.
 * QUIESCE_TIMEOUT: the thaw failed but the guest is thawed (Windows VSS gave up its ~10 s freeze);
 * PARTIAL_THAW: the thaw count differs from the freeze count; FREEZE_UNCONFIRMED: the freeze timed
 * out, or a forced thaw came while it was in flight, so whether and when the guest froze is unknown; LEASE_UNVERIFIED: the lease store was down
 * and the lease could not be checked; NO_LEASE: a forced thaw of a VM no lease was held on;
 * NOT_THAWED / THAW_FAILED: a freeze group member this request did not thaw, or whose thaw failed.
 */
export const THAW_REASONS = ['QUIESCE_TIMEOUT', 'PARTIAL_THAW', 'FREEZE_UNCONFIRMED', 'LEASE_UNVERIFIED', 'NO_LEASE', 'NOT_THAWED', 'THAW_FAILED'] as const;
export type ThawReason = (typeof THAW_REASONS)[number];

/** Per-VM result when a thaw was not (or could not be) sent. */
export type VmThawOutcome =
  /** shared: the thaw another path of this process sent for the same lease (none sent again) */
  | { vm: string; status: 'thawed'; report: VmThawReport; shared?: boolean }
  | { vm: string; status: 'skipped'; why: 'ended' | 'superseded' | 'renewed' }
  | { vm: string; status: 'failed'; error: GatewayError };

export type ThawTrigger = 'caller' | 'force' | 'rollback' | 'local-timer' | 'deadline' | 'reconcile' | 'before-freeze' | 'retry' | 'shutdown';

/**
 * What a thaw by this trigger records in the lease's tombstone as why it ended (LEASE_EXPIRED
 * `endedBy`): every timer or sweep that thaws a lease past its expiry is its deadline. Undefined when
 * the holder ended it itself (its own thaw, the rollback of its own failed freeze): no tombstone.
 * 'retry' repeats an earlier thaw; the engine passes that thaw's trigger instead.
 */
/** A lease ended by its deadline ended at it (store clock), however late the thaw of its last VM got through. */
export function endedNoLaterThan(lease: Pick<Lease, 'expiresAt'>, endedBy: EndedBy | undefined): number | undefined {
  return endedBy === 'deadline' ? lease.expiresAt : undefined;
}

export function endedByOf(trigger: ThawTrigger): EndedBy | undefined {
  switch (trigger) {
    case 'force':
      return 'forced';
    case 'shutdown':
      return 'shutdown';
    case 'local-timer':
    case 'deadline':
    case 'reconcile':
    case 'before-freeze':
      return 'deadline';
    default:
      return undefined;
  }
}

const ENDED_HOW: Record<EndedBy, string> = {
  deadline: 'by its deadline: the gateway thawed the guest automatically',
  forced: 'by a forced thaw (an admin thawed the guest)',
  shutdown: 'when the gateway shut down and thawed the guest',
  'agent-restart': 'when the guest agent restarted and forgot the freeze',
};

/**
 * 409 LEASE_EXPIRED for a thaw or renew of `leaseId`, which ended at `endedAt` for `endedBy`: the
 * guest was thawed then, so a snapshot taken after that time is not consistent.
 */
export function leaseExpiredError(ended: Pick<EndedLease, 'leaseId' | 'endedAt' | 'endedBy'>, what: 'thaw' | 'renew', ctx: { vm?: string; group?: string } = {}): GatewayError {
  const detail =
    `lease ${ended.leaseId} ended at ${iso(ended.endedAt)} ${ENDED_HOW[ended.endedBy]}; ` +
    (what === 'thaw' ? 'nothing was sent to the agent. ' : 'it cannot be renewed: freeze again for a new lease. ') +
    'A snapshot taken after endedAt may not be consistent';
  return errors.leaseExpired(detail, { endedAt: iso(ended.endedAt), endedBy: ended.endedBy }, {
    ...(ctx.vm ? { vm: ctx.vm } : {}),
    extra: { leaseId: ended.leaseId, ...(ctx.group ? { group: ctx.group } : {}) },
  });
}

export interface FreezeDeps {
  store: LeaseStore;
  agent: FreezeAgent;
  registry: FreezeRegistry;
  settings: FreezeSettings;
  logger: FreezeLogger;
  /** where forced and unverified thaws are recorded (default: the logger, with audit: true) */
  audit?: AuditLog;
  /** this process's id in logs and session data */
  gatewayId?: string;
  /**
   * Let go of a VM's agent socket. Called right after a freeze: the agent serves one client at a
   * time, so a gateway that stalls (paused, swapping) while holding the socket would keep every
   * other gateway from thawing the VM it froze.
   */
  releaseChannel?: (vm: string) => Promise<void>;
  /** with Redis: the file of the leases this process holds (held-journal.ts), `<freeze.stateFile>.held` */
  heldJournal?: string;
  /**
   * Cluster mode: this node's id. A lease with a VM whose freeze is bound to this node (the node
   * that serves it: FreezeData.nodes) is thawed by this node's start-up reconciliation when it is
   * overdue, even where another node's sweeper holds its claim (that node can only fail to thaw it
   * while this one is away, and its claim would put the thaw off by up to a claim and a sweep).
   */
  nodeId?: () => string | undefined;
}

/** Rebuild a GatewayError with more members for the problem body. */
export function withExtra(e: GatewayError, extra: Record<string, unknown>): GatewayError {
  return errors.rewrap(e, e.code, e.message, { extra: { ...(e.extra ?? {}), ...extra }, cause: e.cause ?? e });
}

export function asGatewayError(e: unknown, ctx: { vm?: string; command?: string } = {}): GatewayError {
  return errors.wrap(e, ctx);
}

export function iso(ms: number): string {
  return new Date(ms).toISOString();
}
