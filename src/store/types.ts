/**
 * The lease store: what freeze sessions and the API-registered VM registry need to share between
 * gateway processes. Two implementations honour the same contract (test/integration/
 * store-contract.test.ts): MemoryStore (embedded, one process) and RedisStore (many processes).
 *
 * Vocabulary
 * - lock key: one per VM (`vm:<name>`). A VM is locked from acquire until its session ends.
 * - session: what one acquire created: the lease (holder, fence, expiry) and the list of lock keys it
 *   holds. A single-VM freeze has one lock key and its session key equals it; a freeze group holds
 *   several VM keys under one session key (`group:<id>`), with ONE lease and ONE deadline.
 * - lease: a session is live while now < expiresAt. A session whose lease has expired is NOT gone:
 *   it stays (and keeps its VMs locked) until someone confirms the thaw and ends it with release().
 *   So an expired-but-unthawed VM can never be frozen again under a new lease by accident, and
 *   the durable deadline index still knows it must be thawed.
 * - deadline index: session → time it must be thawed by. Every gateway process sweeps it
 *   (dueSessions + claim); the claim moves the entry forward by a retry delay so that one process
 *   thaws at a time and a crashed claimer is retried. (Redis: the deadline itself is a field of the
 *   lease record, under the VM's hash tag `{vm:<name>}`, or the group's `{group:<id>}`; the index
 *   is 256 sorted-set buckets by slot range, the entry in the bucket of the session's own slot, so
 *   on a Redis Cluster it lives on the same master as the lease: redis.ts.)
 * - fence: a number that grows with every acquire of a VM and never goes backwards, even when Redis
 *   loses its data (restart without persistence). It is max(last + 1, store clock in microseconds,
 *   caller's floor + 1): the clock term keeps it ahead of every fence handed out before the loss
 *   (as long as fewer than 1e6 acquires per second were made and the store clock does not step
 *   back), and the floor term (each process passes the highest fence it has seen) covers a clock
 *   that did step back. Microseconds since 1970 stay below 2^53 until the year 2255. (Redis keeps
 *   the last fence per VM, so that one VM's keys live in one Cluster slot; a group's fence is the
 *   highest of its VMs'.)
 * - epoch: a random id the store takes when it starts empty (Redis: each VM's, taken when its keys
 *   are first written; a group lease records its VMs', space-separated). A lease records the epoch
 *   it was made in; a different epoch later means the store lost its data (so "no session" does
 *   not mean "someone already thawed it") and the holder must act on its own knowledge.
 *
 * - tombstone: when a lease is ended by someone other than its holder (its deadline, a forced thaw, a
 *   thaw at shutdown), release() is told why and the store remembers leaseId → {session, endedAt,
 *   endedBy} for a while (`endedRetentionMs`; the embedded store also keeps at most
 *   `maxEndedLeases` of them). So a holder that comes back to thaw or renew learns that its lease
 *   ended, when and why — its snapshot may not be consistent — instead of a bare "no such lease".
 *   A lease its holder thawed itself leaves no tombstone.
 *
 * Every time in here (createdAt, expiresAt, now) is milliseconds since 1970 on the STORE's clock
 * (Redis: the server's TIME; on a Cluster, that of the node holding the lease), so processes with
 * skewed clocks still agree on who holds a lease.
 * Every method rejects with GatewayError STORE_UNAVAILABLE when the store cannot be reached; none
 * of them waits for a reconnect.
 */
import type { Endpoint } from '../qga/types.js';
import { isRecord } from '../util/unknown.js';

/** Opaque, JSON-serialisable data the freeze service keeps with a session (VMs, mountpoints, …). */
export type SessionData = { [key: string]: unknown };

export interface Lease {
  /** session key: `vm:<name>` or `group:<id>` */
  session: string;
  /** lock keys held (VM keys) */
  keys: string[];
  leaseId: string;
  /** who asked: a caller principal; an idempotent retry must come from the same owner */
  owner: string;
  fence: number;
  createdAt: number;
  expiresAt: number;
  /** renewals never go past this: createdAt + the hard cap given at acquire */
  hardDeadline: number;
  idempotencyKey?: string;
  /** store epoch the lease was created in */
  epoch: string;
  data: SessionData;
}

/**
 * Why a lease ended when its holder did not end it (API.md LEASE_EXPIRED `endedBy`). Nothing in the
 * gateway writes 'agent-restart' yet: no code path detects that an agent forgot a freeze (on Linux
 * the frozen state survives an agent restart).
 */
export type EndedBy = 'deadline' | 'forced' | 'shutdown' | 'agent-restart';

/** A lease's tombstone: what release() recorded when it ended the lease with a reason. */
export interface EndedLease {
  leaseId: string;
  /** the session key the lease was for (`vm:<name>` or `group:<id>`) */
  session: string;
  /** store clock, ms */
  endedAt: number;
  endedBy: EndedBy;
}

/** A tombstone as the stores keep it, under its lease id. */
export type EndedRecord = Omit<EndedLease, 'leaseId'>;

export const ENDED_BY: readonly EndedBy[] = ['deadline', 'forced', 'shutdown', 'agent-restart'];
export const isEndedBy = (v: unknown): v is EndedBy => ENDED_BY.some((e) => e === v);

/** Default retention of tombstones; createStore keeps them max(this, freeze.maxTotalSeconds). */
export const ENDED_RETENTION_MS = 3_600_000;

export interface AcquireRequest {
  /** session key; equals keys[0] for a single VM */
  session: string;
  /** lock keys to take, all or none */
  keys: string[];
  owner: string;
  ttlMs: number;
  /** total life cap from creation (renewals stop there) */
  hardCapMs: number;
  idempotencyKey?: string;
  /** highest fence this process has seen; the new fence is above it */
  fenceFloor?: number;
  data?: SessionData;
}

export type AcquireResult =
  /** reused: an earlier acquire with the same owner + idempotency key made this live lease */
  | { ok: true; lease: Lease; reused: boolean }
  | {
      ok: false;
      reason: 'conflict';
      /** the session holding (one of) the keys */
      holder: { session: string; owner: string; leaseId: string; expiresAt: number; fence: number };
      /** the holder's lease has expired but its VMs are not thawed yet */
      pendingThaw: boolean;
      key: string;
      /**
       * the holder is a group still being taken (Redis: its VMs are locked one by one), since `since`;
       * one abandoned mid-way (its acquirer died) is rolled back by whoever meets it from `rollbackAt`
       * (store clock, ms); `rollbackInMs`: how long from the store's now until then (a wait worked out
       * on the gateway's clock would mix two clocks)
       */
      acquiring?: { since: number; rollbackAt: number; rollbackInMs: number };
    }
  | {
      ok: false;
      /** the idempotency key belongs to a lease that has ended (or to a different request) */
      reason: 'idempotency-key-reused';
      leaseId: string;
      session: string;
    };

export type RenewResult =
  | { ok: true; lease: Lease; capped: boolean }
  | { ok: false; reason: 'not-found' | 'lease-mismatch' | 'expired'; lease?: Lease };

/** What a process finds about its own lease right before it sends an agent command. */
export type FenceCheck =
  /** the lease is still ours and live */
  | { state: 'live'; lease: Lease }
  /** still ours (not ended by anyone) but expired: only a thaw may be sent */
  | { state: 'expired'; lease: Lease }
  /** someone ended it (thawed and released); nothing to do */
  | { state: 'ended' }
  /** another session holds the key now: send nothing */
  | { state: 'superseded'; holder: Lease }
  /** the store lost its data since the lease was made: the holder's own knowledge is all there is */
  | { state: 'lost'; epoch: string };

export interface VmRegistration {
  name: string;
  endpoint: Endpoint;
  labels?: Record<string, string>;
  /** the VM's own agent.idleReleaseMs */
  idleReleaseMs?: number;
}

/** A VM record as putVm stores it, read back: a name, an endpoint of a known type, string labels. */
export function isVmRegistration(value: unknown): value is VmRegistration {
  if (!isRecord(value) || typeof value.name !== 'string' || !isRecord(value.endpoint)) return false;
  const e = value.endpoint;
  const endpoint = e.type === 'unix' ? typeof e.path === 'string' : e.type === 'tcp' && typeof e.host === 'string' && typeof e.port === 'number';
  const labels = value.labels;
  const idle = value.idleReleaseMs === undefined || typeof value.idleReleaseMs === 'number';
  return endpoint && idle && (labels === undefined || (isRecord(labels) && Object.values(labels).every((l) => typeof l === 'string')));
}

export interface StoreHealth {
  ok: boolean;
  kind: 'memory' | 'redis';
  epoch?: string;
  latencyMs?: number;
  detail?: string;
}

export interface LeaseStore {
  readonly kind: 'memory' | 'redis';
  /** sessions outlive this process (another process, or this one restarted, will find them) */
  readonly durable: boolean;

  /** Take all keys or none. Idempotent per (owner, idempotencyKey): a retry returns the same lease, unextended. */
  acquire(req: AcquireRequest): Promise<AcquireResult>;
  /** Extend a live lease to now + ttlMs, never past its hardDeadline. */
  renew(session: string, leaseId: string, ttlMs: number): Promise<RenewResult>;
  /**
   * Compare-and-delete: ends the session (locks, deadline) only if leaseId matches. With `endedBy`
   * (the lease was ended by someone other than its holder) a tombstone is written in the same step
   * (Redis: right after it, before release() returns; a release that was not this lease's writes none).
   * Its `endedAt` is now, or `endedNoLaterThan` when earlier (store clock): a lease ended by its
   * deadline ended then, not when the thaw of its last VM got through (a group member on a node
   * that was away: the others were thawed at the deadline, and a snapshot taken after it may not be
   * consistent).
   */
  release(session: string, leaseId: string, endedBy?: EndedBy, endedNoLaterThan?: number): Promise<boolean>;
  /**
   * Let some VMs of a group lease go while it keeps the others: the members already thawed while
   * another's thaw is still due (its node away, its agent down), or thawed by force, so that they
   * can be frozen again at once. Compare-and-delete of each lock (this lease's only), and the
   * lease's `keys` no longer list them. Never every key: release() ends a lease. When the lease
   * (live or expired) is this one and still holds other keys: how many of `keys` it let go now (0
   * when it held none of them: asked again); false otherwise.
   */
  releaseMembers(session: string, leaseId: string, keys: string[]): Promise<number | false>;
  /** The tombstone of a lease ended with a reason, while it is retained; undefined otherwise. */
  ended(leaseId: string): Promise<EndedLease | undefined>;
  /** The session (live or expired-unthawed) holding a lock key, if any. */
  getByKey(key: string): Promise<Lease | undefined>;
  getSession(session: string): Promise<Lease | undefined>;
  /** Replace a session's data, only if leaseId matches. */
  updateData(session: string, leaseId: string, data: SessionData): Promise<boolean>;
  /** Fencing: where does this lease stand on `key` right now? */
  /** `timeoutMs`: as for claim, reject STORE_UNAVAILABLE if the store has not answered by then. */
  check(key: string, leaseId: string, epoch: string, opts?: { timeoutMs?: number }): Promise<FenceCheck>;

  /** Sessions whose deadline has passed (sweeper input), oldest first. */
  dueSessions(limit: number): Promise<Lease[]>;
  /**
   * Claim a due session for thawing: true if it is still due and was not renewed; its deadline
   * moves to now + retryMs so that nobody else takes it meanwhile and a crashed claimer is retried.
   * `timeoutMs`: reject STORE_UNAVAILABLE if the store has not answered by then (shorter than the
   * store's command timeout; the claim may still be applied later, which only delays the deadline).
   */
  claim(session: string, leaseId: string, retryMs: number, opts?: { timeoutMs?: number }): Promise<boolean>;
  /** Every session, live or expired (start-up reconciliation). */
  listSessions(): Promise<Lease[]>;

  /** The store's clock, milliseconds. */
  now(): Promise<number>;
  /** Highest fence this store object has handed out or seen. */
  readonly fenceHighWater: number;

  /** API-registered VMs. putVm is false when the name exists. */
  putVm(rec: VmRegistration): Promise<boolean>;
  getVm(name: string): Promise<VmRegistration | undefined>;
  deleteVm(name: string): Promise<boolean>;
  listVms(): Promise<VmRegistration[]>;

  health(): Promise<StoreHealth>;
  /** Resolves once the store can serve; rejects STORE_UNAVAILABLE after timeoutMs. Commands fail fast anyway. */
  ready(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

// The key format lives here and nowhere else: the stores, Redis scripts included, treat keys as
// opaque strings (RedisStore makes each its own Cluster hash tag, `<prefix>{<key>}:lock`, never
// looking inside; see redis-keys.ts).
const VM_PREFIX = 'vm:';
const GROUP_PREFIX = 'group:';

/** The lock key of a VM, which is also the session key of a single-VM freeze. */
export const vmKey = (vm: string): string => VM_PREFIX + vm;
/** The session key of a freeze group. */
export const groupKey = (id: string): string => GROUP_PREFIX + id;

export type ParsedKey = { kind: 'vm'; vm: string } | { kind: 'group'; id: string };

/** The inverse of vmKey and groupKey; undefined for a key that is neither (written by something else). */
export function parseKey(key: string): ParsedKey | undefined {
  if (key.startsWith(VM_PREFIX)) return { kind: 'vm', vm: key.slice(VM_PREFIX.length) };
  if (key.startsWith(GROUP_PREFIX)) return { kind: 'group', id: key.slice(GROUP_PREFIX.length) };
  return undefined;
}

/** The VM a lock key (or a single-VM session key) names; undefined for a group or foreign key. */
export function vmOfKey(key: string): string | undefined {
  const k = parseKey(key);
  return k?.kind === 'vm' ? k.vm : undefined;
}

/** The freeze group a session key names; undefined for a single-VM session or a foreign key. */
export function groupOfSession(session: string): string | undefined {
  const k = parseKey(session);
  return k?.kind === 'group' ? k.id : undefined;
}
