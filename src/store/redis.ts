/**
 * The shared lease store on Redis (ioredis): one server, Sentinel or a Redis Cluster
 * (redis-connect.ts). Several gateway processes see the same locks, sessions, deadlines and
 * API-registered VMs. Key layout: redis-keys.ts; scripts: redis-scripts.ts.
 *
 * Layout for a Cluster. Every key a script touches is passed in KEYS[], and one script only
 * touches keys of one hash tag: a VM's lock, its single-VM lease record and its fence/epoch live
 * under `{vm:<name>}`; a group's record under `{group:<id>}`; the deadline index is 256 bucket
 * keys (below); idempotency records and tombstones are single keys. What must span slots is done
 * in steps, in an order chosen so that a crash between two of them is harmless:
 *
 * Fencing still holds.
 * - A VM's lock is taken only by a script on the VM's node that found it free, and deleted only by
 *   compare-and-delete with the lease id that took it: while a lease holds a VM, nobody else can.
 * - Each VM's fence is monotonic on its own: max(last + 1, node clock in µs, caller's floor + 1)
 *   (the clock term keeps it ahead of the fences handed out before a node lost its data, as long as
 *   fewer than 1e6 acquires per second were made and that clock does not step back; the floor,
 *   the highest fence this process has seen, covers a clock that did). A group's fence is the
 *   highest of its VMs' (each VM's acquisition gets the previous one's as its floor).
 * - Before sending a command under a lease, the gateway checks the per-VM lock (check()): ours
 *   and live → send; ours but expired → only a thaw; another lease's → superseded, send nothing;
 *   nobody's → ended (or lost: see epochs). A group member's lock names the group; its expiry is
 *   read from the group's record right after, so the answer is as of that moment, as on one node.
 * - A group is taken as: index entry and a *pending* record (holding the key list) first, then
 *   each VM in key order, then the record made active. A conflict (reported with its holder, as
 *   before) or any failure rolls back: the VM locks taken so far, then the record, then the entry
 *   (what cannot be reached is retried in the background, redis-abandon.ts). No agent is asked to
 *   freeze before acquire() returned, so a partial group never froze anything. A pending group
 *   older than 30 s is found abandoned (crashed acquirer) and rolled back by whoever meets it.
 *   A group's record is deleted only after its VM locks, so a lock whose group record is gone was
 *   left behind by a lost shard: it is cleared and reported as lost to its holder.
 * - A group lets members go (releaseMembers: thawed while another member's thaw is still due) the
 *   same way round: their locks first (compare-and-delete), then the record's key list (compare-
 *   and-set on the list read). A crash between leaves a record naming a VM it no longer locks,
 *   which nobody reads as held; never a lock whose record does not name it.
 * - Idempotency: a single-VM retry finds its own lock (same owner and key) and takes the lease
 *   back, even when the idempotency record was never written (reply lost); a group retry needs the
 *   record, which is written after the group is active (a group whose reply was lost is rolled
 *   back instead, so its owner is never locked out, and a retry gets a new lease).
 * - Failover (Sentinel, or a Cluster replica promoted): writes acknowledged by the old master but
 *   not yet replicated can be lost, as on one Redis restarted without persistence: a lease may
 *   vanish (its holder's check says lost when the VM's epoch went with it, else ended), and fences
 *   keep growing (clock term). Run the masters with appendfsync and min-replicas-to-write for more.
 *
 * Deadlines. A lease's deadline (expiresAt, with hardDeadline) is a field of its record, written
 * by the same script as the lock: a single-VM lease's under the VM's own tag `{vm:<name>}`, a
 * group's under `{group:<id>}` (one deadline per lease, renewed in one place). The sweep finds
 * them through the index: one entry per lease ("<session>\n<leaseId>" → a time no later than its
 * deadline) in one of 256 bucket keys (redis-slots.ts). Bucket b covers the slots
 * [64b, 64b + 64); its key carries a hash tag chosen at start to hash into that range (nearest
 * its middle); a lease's entry goes to the bucket of its session's slot. Masters serve contiguous
 * slot ranges in the usual layouts (CLUSTER ADDSLOTSRANGE, redis-cli --cluster create), so the
 * entry sits on the master of the lease's record. Exceptions: a bucket whose 64 slots straddle
 * two masters' ranges lives on one of them (with 3 masters, 2 of 256 buckets: the VMs of up to 63
 * slots next to a boundary depend on the neighbouring master too), and a resharded slot moves
 * its keys but not its bucket (still correct; only that independence is lost).
 * The entry is written BEFORE the lease exists (its first score a lower bound of the expiry; on
 * one Redis sent ahead of the lease's script on the same connection, on a Cluster awaited before
 * it: another slot, so not in the same script), removed AFTER the lease is gone. So every lease
 * has an entry (a crash leaves at most a stale entry, which costs one look and is pruned 60 s
 * past its score, when its acquire can no longer run). dueSessions reads the due entries of every
 * bucket (one script over the 256 keys on one server or Sentinel; on a Cluster the 256 reads sent
 * at once, each to its node; each bucket gives at most L = limit × 4 + 16 due entries and the L
 * oldest of them all are kept), then each
 * lease's record (on its own node); an entry of a lease found live is moved to its expiry. claim
 * checks the record is expired and this lease's, then moves the entry forward by the retry delay
 * in one script on the bucket's node (only one claimer wins). A renewal raises the entry after
 * the record; a crash between leaves it early, never late. While a master is down (or stalled):
 * acquires of the sessions hashed to its slots fail (503: their record and their entry are
 * there), all others are taken; its buckets are skipped by the sweep (each sweep tries them again,
 * after the command timeout when it is stalled) and the other buckets swept; its leases wait for
 * it (their holders' local timers still thaw). A group needs its record's master and each of its
 * VMs' masters.
 *
 * Epochs: each VM has its own (random, taken when the VM's keys are first written); a lease
 * records its VM's (a group: its VMs', space-separated). check() finds "no lock" and an epoch
 * that is not the VM's now → lost: that VM's shard lost its data, so "no lock" does not mean
 * somebody thawed it. health() reports a store-wide epoch key.
 *
 * Times are each node's TIME (createdAt and expiresAt on the lease's node; claims on its bucket's).
 * The connection fails fast on purpose (redis-connect.ts): a lock operation that cannot reach
 * Redis fails NOW (freeze → 503) rather than running minutes later. Nothing given up on happens
 * later: acquire and renew scripts carry a not-after instant (redis-clock.ts), and an acquire
 * without an idempotency key whose reply was lost is released once the store answers again.
 * Upgrading from the layout before this one: thaw every freeze first (old keys are not read).
 */
import { Cluster } from 'ioredis';
import { errors } from '../errors.js';
import { errorMessage } from '../util/unknown.js';
import { acquire } from './redis-acquire.js';
import { connectRedis, lastRedisError, onNodeReady, type RedisClient, type RedisTarget } from './redis-connect.js';
import { RedisCore } from './redis-core.js';
import * as due from './redis-due.js';
import { connectionWhy, decode, fields, list, ScriptRunner, withTimeout } from './redis-exec.js';
import { RedisKeys } from './redis-keys.js';
import { canonicalKeys } from './memory.js';
import * as S from './redis-scripts.js';
import type { AcquireRequest, AcquireResult, EndedBy, EndedLease, FenceCheck, Lease, LeaseStore, RenewResult, SessionData, StoreHealth, VmRegistration } from './types.js';
import { ENDED_RETENTION_MS, groupOfSession, isEndedBy, isVmRegistration } from './types.js';

/** Where Redis is (url, sentinels, clusterNodes; see redis-connect.ts) and the store's own settings. */
export interface RedisStoreOptions extends RedisTarget {
  keyPrefix?: string;
  commandTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** how long a tombstone is kept (default ENDED_RETENTION_MS) */
  endedRetentionMs?: number;
}

const RENEW_FAILURES = ['not-found', 'lease-mismatch', 'expired'] as const;
type RenewFailure = (typeof RENEW_FAILURES)[number];
const isRenewFailure = (tag: unknown): tag is RenewFailure => RENEW_FAILURES.some((f) => f === tag);
const isStringList = (value: unknown): value is string[] => Array.isArray(value) && value.every((k) => typeof k === 'string');

export class RedisStore implements LeaseStore {
  readonly kind = 'redis' as const;
  readonly durable = true;
  private readonly redis: RedisClient;
  private readonly keys: RedisKeys;
  private readonly exec: ScriptRunner;
  private readonly core: RedisCore;
  private readonly endedRetentionMs: number;

  constructor(opts: RedisStoreOptions) {
    this.keys = new RedisKeys(opts.keyPrefix ?? 'qga:');
    this.endedRetentionMs = opts.endedRetentionMs ?? ENDED_RETENTION_MS;
    const commandTimeoutMs = opts.commandTimeoutMs ?? 2_000;
    // one server, Sentinel or Cluster, with the fail-fast settings (redis-connect.ts); its
    // 'error' events are recorded there, callers learn of outages from rejections
    this.redis = connectRedis(opts, { commandTimeoutMs, connectTimeoutMs: opts.connectTimeoutMs ?? 2_000 });
    // load the scripts on every (re)connect of every data node, so that an EVALSHA whose reply is
    // lost was not a NOSCRIPT that never ran (a fresh or restarted Redis knows no scripts)
    onNodeReady(this.redis, (node) => {
      for (const script of S.ALL_SCRIPTS) node.script('LOAD', script).catch(() => undefined);
    });
    // on a Cluster, connect to every master as soon as the slot map is known: a command for a node
    // whose connection is still being made fails at once (no offline queue), see ready()
    if (this.redis instanceof Cluster) {
      const cluster = this.redis;
      const warm = () => {
        for (const node of cluster.nodes('master')) if (node.status === 'wait') node.connect().catch(() => undefined);
      };
      cluster.on('ready', warm);
      cluster.on('+node', () => setImmediate(warm));
    }
    this.exec = new ScriptRunner(this.redis, commandTimeoutMs);
    this.core = new RedisCore(this.redis, this.keys, this.exec, commandTimeoutMs);
  }

  /** Ready: the client, and on a Cluster every master's connection (else a command to one not yet connected fails). */
  async ready(timeoutMs = 5_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    await this.clientReady(timeoutMs);
    const cluster = this.redis;
    if (!(cluster instanceof Cluster)) return;
    for (;;) {
      const masters = cluster.nodes('master');
      if (masters.length > 0 && masters.every((n) => n.status === 'ready')) return;
      for (const n of masters) if (n.status === 'wait') n.connect().catch(() => undefined);
      if (Date.now() >= end) {
        throw errors.storeUnavailable(`Redis Cluster: not every master connected within ${timeoutMs} ms${connectionWhy(lastRedisError(cluster))}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  private async clientReady(timeoutMs: number): Promise<void> {
    if (this.redis.status === 'ready') return;
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        this.redis.off('ready', onReady);
        reject(errors.storeUnavailable(`Redis not ready within ${timeoutMs} ms${connectionWhy(lastRedisError(this.redis))}`));
      }, timeoutMs);
      const onReady = () => {
        clearTimeout(t);
        resolve();
      };
      this.redis.once('ready', onReady);
    });
  }

  /**
   * The connection and the key prefix, for the HTTP rate limit's counters (http/plugins/limits.ts),
   * so they need no second connection. Its fail-fast settings apply to them too.
   */
  get connection(): { client: RedisClient; keyPrefix: string } {
    return { client: this.redis, keyPrefix: this.keys.prefix };
  }

  get fenceHighWater(): number {
    return this.core.highWater;
  }

  acquire(req: AcquireRequest): Promise<AcquireResult> {
    return acquire(this.core, req);
  }

  async renew(session: string, leaseId: string, ttlMs: number): Promise<RenewResult> {
    const r = list(await this.exec.run(S.RECORD_RENEW, [this.keys.record(session)], [leaseId, ttlMs, await this.core.clock.notAfter()]));
    const reason = r[0];
    if (reason === 'late') throw this.core.clock.lateError('renew');
    if (reason === 'ok') {
      const lease = this.core.lease(fields(r.slice(2)));
      // after the record: a crash between leaves the entry early (one look), never late
      await this.core.indexRaise(session, leaseId, lease.expiresAt).catch(() => undefined);
      return { ok: true, capped: r[1] === '1', lease };
    }
    if (!isRenewFailure(reason)) throw errors.internal(`RENEW answered ${String(reason)}`);
    return r.length > 1 ? { ok: false, reason, lease: this.core.lease(fields(r.slice(1))) } : { ok: false, reason };
  }

  async release(session: string, leaseId: string, endedBy?: EndedBy, endedNoLaterThan?: number): Promise<boolean> {
    let keys = [session];
    if (groupOfSession(session) !== undefined) {
      const { rec } = await this.core.record(session);
      if (!rec || rec.leaseId !== leaseId) return false;
      keys = decode(rec.keys, isStringList, 'lock key list');
    }
    const released = await this.core.releaseParts(session, leaseId, keys);
    // the tombstone follows the release (another slot); a release that was not ours writes none
    if (released && endedBy) await this.exec.run(S.TOMBSTONE, [this.keys.ended(leaseId)], [session, endedBy, this.endedRetentionMs, endedNoLaterThan === undefined ? '' : Math.round(endedNoLaterThan)]).catch(() => undefined);
    return released;
  }

  async releaseMembers(session: string, leaseId: string, keys: string[]): Promise<number | false> {
    const drop = new Set(keys);
    // the record's key list is replaced only if unchanged since read (another releaseMembers)
    for (let round = 0; round < 3; round++) {
      const { rec } = await this.core.record(session);
      if (!rec || rec.leaseId !== leaseId || rec.state === 'pending') return false;
      const had = decode(rec.keys, isStringList, 'lock key list');
      const kept = had.filter((k) => !drop.has(k));
      if (kept.length === 0) return false;
      if (kept.length === had.length) return 0;
      // the locks first: a crash in between leaves the record naming a VM it no longer locks (read
      // as not held, and its unlock at the release a no-op), never a lock the record does not name
      await Promise.all(had.filter((k) => drop.has(k)).map((k) => this.core.vm(S.VM_UNLOCK, k, [leaseId])));
      if ((await this.exec.run(S.RECORD_KEYS, [this.keys.record(session)], [leaseId, rec.keys, canonicalKeys(kept)])) === 1) return had.length - kept.length;
    }
    return false;
  }

  async ended(leaseId: string): Promise<EndedLease | undefined> {
    const m = await this.exec.guard(() => this.redis.hgetall(this.keys.ended(leaseId)));
    if (!Object.keys(m).length) return undefined;
    if (typeof m.session !== 'string' || !isEndedBy(m.endedBy) || !Number.isFinite(Number(m.endedAt))) {
      throw errors.internal('the lease store holds a malformed tombstone');
    }
    return { leaseId, session: m.session, endedAt: Number(m.endedAt), endedBy: m.endedBy };
  }

  async getByKey(key: string): Promise<Lease | undefined> {
    return (await this.core.holder(key, false)).lease;
  }

  async getSession(session: string): Promise<Lease | undefined> {
    const { rec } = await this.core.record(session);
    return rec && rec.state !== 'pending' ? this.core.lease(rec) : undefined;
  }

  async updateData(session: string, leaseId: string, data: SessionData): Promise<boolean> {
    return (await this.exec.run(S.RECORD_UPDATE, [this.keys.record(session)], [leaseId, JSON.stringify(data)])) === 1;
  }

  check(key: string, leaseId: string, epoch: string, opts: { timeoutMs?: number } = {}): Promise<FenceCheck> {
    const p = (async (): Promise<FenceCheck> => {
      const h = await this.core.holder(key, true);
      if (h.lease?.leaseId === leaseId) return { state: h.lease.expiresAt > h.now ? 'live' : 'expired', lease: h.lease };
      if (h.lease) return { state: 'superseded', holder: h.lease };
      // the lease's own lock was left without its group record: that shard lost it
      if (h.dropped.includes(leaseId)) return { state: 'lost', epoch: h.epoch };
      return epoch.split(' ').includes(h.epoch) ? { state: 'ended' } : { state: 'lost', epoch: h.epoch };
    })();
    return opts.timeoutMs !== undefined ? withTimeout(this.exec.guard(() => p), opts.timeoutMs) : p;
  }

  dueSessions(limit: number): Promise<Lease[]> {
    return due.dueSessions(this.core, limit);
  }

  claim(session: string, leaseId: string, retryMs: number, opts: { timeoutMs?: number } = {}): Promise<boolean> {
    const p = due.claim(this.core, session, leaseId, retryMs);
    return opts.timeoutMs !== undefined ? withTimeout(this.exec.guard(() => p), opts.timeoutMs) : p;
  }

  listSessions(): Promise<Lease[]> {
    return due.listSessions(this.core);
  }

  async now(): Promise<number> {
    return this.core.now();
  }

  async putVm(rec: VmRegistration): Promise<boolean> {
    return (await this.exec.guard(() => this.redis.hsetnx(this.keys.vms, rec.name, JSON.stringify(rec)))) === 1;
  }

  async getVm(name: string): Promise<VmRegistration | undefined> {
    const v = await this.exec.guard(() => this.redis.hget(this.keys.vms, name));
    return v === null ? undefined : decode(v, isVmRegistration, 'VM record');
  }

  async deleteVm(name: string): Promise<boolean> {
    return (await this.exec.guard(() => this.redis.hdel(this.keys.vms, name))) === 1;
  }

  async listVms(): Promise<VmRegistration[]> {
    const vals = await this.exec.guard(() => this.redis.hvals(this.keys.vms));
    return vals.map((v) => decode(v, isVmRegistration, 'VM record')).sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async health(): Promise<StoreHealth> {
    const t0 = performance.now();
    try {
      const r = list(await this.exec.run(S.EPOCH, [this.keys.epoch], [this.core.epochCandidate]));
      this.core.clock.note(Number(r[1]));
      return { ok: true, kind: 'redis', epoch: String(r[0]), latencyMs: Math.round((performance.now() - t0) * 100) / 100 };
    } catch (e) {
      return { ok: false, kind: 'redis', detail: errorMessage(e) };
    }
  }

  async close(): Promise<void> {
    this.core.abandoned.close();
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }
}
