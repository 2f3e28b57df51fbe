/**
 * The parts of RedisStore that acquire, release and the readers share: reading lease records,
 * finding who holds a VM (across the VM's slot and, for a group member, the group's slot),
 * releasing a lease's parts in the order that keeps fencing (locks first, record last), the
 * deadline index entries and the idempotency records. See redis.ts for why the order is what it is.
 */
import { randomUUID } from 'node:crypto';
import { Cluster } from 'ioredis';
import type { RedisClient } from './redis-connect.js';
import { AbandonedLeases } from './redis-abandon.js';
import { StoreClock } from './redis-clock.js';
import { decode, fields, list, type ScriptRunner } from './redis-exec.js';
import { idemRecord, indexMember, parseIdemRecord, type RedisKeys } from './redis-keys.js';
import * as S from './redis-scripts.js';
import { isRecord } from '../util/unknown.js';
import type { AcquireResult, Lease } from './types.js';
import { groupOfSession } from './types.js';

/** a group still pending this long after its record was written was abandoned by its acquirer */
export const PENDING_GRACE_MS = 30_000;
/** an index entry without its lease this long past its score is removed (its acquire cannot still run) */
export const STALE_ENTRY_GRACE_MS = 60_000;

const isStringList = (value: unknown): value is string[] => Array.isArray(value) && value.every((k) => typeof k === 'string');

/** A lease record as read: its fields, and the clock of the node that holds it. */
export interface RecordRead {
  now: number;
  rec?: Record<string, string>;
}

/** Who holds a VM, read on the VM's node (epoch, now) and, for a group, the group's. */
export interface VmHolder {
  /** the VM's epoch ('' when it has none and none was to be made) */
  epoch: string;
  now: number;
  lease?: Lease;
  /** the holder is a group still being taken */
  pending?: boolean;
  /** group leases whose record is gone while their lock on this VM was left: unlocked here */
  dropped: string[];
}

export class RedisCore {
  private high = 0;
  readonly clock: StoreClock;
  readonly abandoned: AbandonedLeases;
  /** a Redis Cluster: commands for different slots go to different nodes, in no order between them */
  readonly cluster: boolean;

  constructor(
    readonly redis: RedisClient,
    readonly keys: RedisKeys,
    readonly exec: ScriptRunner,
    commandTimeoutMs: number,
  ) {
    this.cluster = redis instanceof Cluster;
    this.clock = new StoreClock(commandTimeoutMs, () => this.now());
    this.abandoned = new AbandonedLeases(async (leaseId, a) => {
      await this.releaseParts(a.session, leaseId, a.keys);
    });
  }

  get highWater(): number {
    return this.high;
  }

  /**
   * Offered as an epoch when a VM (or the store) has none. Fresh on every call: a value reused
   * after Redis lost its data would bring the old epoch back and hide the loss.
   */
  get epochCandidate(): string {
    return randomUUID();
  }

  async now(): Promise<number> {
    const [sec, usec] = await this.exec.guard(() => this.redis.time());
    const ms = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
    this.clock.note(ms);
    return ms;
  }

  lease(m: Record<string, string>): Lease {
    const lease: Lease = {
      session: m.session,
      keys: decode(m.keys, isStringList, 'lock key list'),
      leaseId: m.leaseId,
      owner: m.owner,
      fence: Number(m.fence),
      createdAt: Number(m.createdAt),
      expiresAt: Number(m.expiresAt),
      hardDeadline: Number(m.hardDeadline),
      ...(m.idem ? { idempotencyKey: m.idem } : {}),
      epoch: m.epoch,
      data: decode(m.data, isRecord, 'session data'),
    };
    if (lease.fence > this.high) this.high = lease.fence;
    return lease;
  }

  /** A per-VM script: KEYS [lock, record, meta] of `key`, ARGV [key, ...args]. */
  vm(script: string, key: string, args: Array<string | number>, timeoutMs?: number) {
    return this.exec.run(script, this.keys.vm(key), [key, ...args], timeoutMs);
  }

  async record(session: string, timeoutMs?: number): Promise<RecordRead> {
    const r = list(await this.exec.run(S.RECORD_GET, [this.keys.record(session)], [], timeoutMs));
    const now = Number(r[0]);
    return r.length > 1 ? { now, rec: fields(r.slice(1)) } : { now };
  }

  /**
   * The group lease that a lock on `key` names, if its record still has that lease: a record that
   * is gone (or names another lease) means the lock was left behind (the group's shard lost its
   * data, or a crash mid-release): the lock is deleted and undefined returned. A group pending
   * for longer than PENDING_GRACE_MS was abandoned mid-acquisition: it is rolled back likewise.
   */
  async groupHolder(key: string, session: string, leaseId: string, timeoutMs?: number): Promise<{ lease: Lease; now: number; pending: boolean } | undefined> {
    const { now, rec } = await this.record(session, timeoutMs);
    if (rec && rec.leaseId === leaseId) {
      const pending = rec.state === 'pending';
      if (!pending || Number(rec.createdAt) + PENDING_GRACE_MS > now) return { lease: this.lease(rec), now, pending };
      await this.releaseParts(session, leaseId, decode(rec.keys, isStringList, 'lock key list'));
      return undefined;
    }
    await this.vm(S.VM_UNLOCK, key, [leaseId], timeoutMs);
    return undefined;
  }

  /** Who holds `key` now; `ensureEpoch` gives the VM an epoch if it has none (check). */
  async holder(key: string, ensureEpoch: boolean, timeoutMs?: number): Promise<VmHolder> {
    const dropped: string[] = [];
    for (let round = 0; ; round++) {
      const r = list(await this.vm(S.VM_HOLDER, key, [ensureEpoch ? this.epochCandidate : ''], timeoutMs));
      const epoch = String(r[1]);
      const now = Number(r[2]);
      if (r[0] === 'single') return { epoch, now, lease: this.lease(fields(r.slice(3))), dropped };
      if (r[0] !== 'group') return { epoch, now, dropped };
      const leaseId = String(r[4]);
      const g = await this.groupHolder(key, String(r[3]), leaseId, timeoutMs);
      if (g) return { epoch, now: g.now, lease: g.lease, pending: g.pending, dropped };
      dropped.push(leaseId);
      // a third stale lock in a row would be a bug, not a race
      if (round >= 2) return { epoch, now, dropped };
    }
  }

  /**
   * End a lease's parts: every VM lock it holds (compare-and-delete), then its record (for a
   * single VM, lock and record go in one script), then its deadline index entry. True if the
   * record was this lease's and is gone now.
   */
  async releaseParts(session: string, leaseId: string, keys: string[]): Promise<boolean> {
    let released: boolean;
    if (groupOfSession(session) === undefined) {
      released = Number(await this.vm(S.VM_UNLOCK, session, [leaseId])) >= 2;
    } else {
      await Promise.all(keys.map((k) => this.vm(S.VM_UNLOCK, k, [leaseId])));
      released = (await this.exec.run(S.RECORD_DELETE, [this.keys.record(session)], [leaseId])) === 1;
    }
    // a left-over entry only costs the sweeper a look (and is pruned): never fail or wait a release
    // for it (later commands on the same connection still see it done)
    void this.indexRemove(session, leaseId).catch(() => undefined);
    return released;
  }

  indexAdd(session: string, leaseId: string, score: number): Promise<unknown> {
    return this.exec.guard(() => this.redis.zadd(this.keys.index(session), 'NX', Math.round(score), indexMember(session, leaseId)));
  }

  /**
   * Move an existing entry later, never earlier: to the exact expiry after the estimate, after a
   * renewal, or for a listed lease found live (never undoing a claim's retry delay).
   */
  indexRaise(session: string, leaseId: string, score: number): Promise<unknown> {
    return this.exec.guard(() => this.redis.zadd(this.keys.index(session), 'XX', 'GT', Math.round(score), indexMember(session, leaseId)));
  }

  indexRemove(session: string, leaseId: string): Promise<unknown> {
    return this.exec.guard(() => this.redis.zrem(this.keys.index(session), indexMember(session, leaseId)));
  }

  idemGet(owner: string, idem: string): Promise<string | null> {
    return this.exec.guard(() => this.redis.get(this.keys.idem(owner, idem)));
  }

  /** Record that (owner, idem) made this lease for these requested keys; false if another lease got there first. */
  async idemSet(owner: string, idem: string, session: string, leaseId: string, keysJson: string, keepMs: number): Promise<boolean> {
    const r = await this.exec.guard(() => this.redis.set(this.keys.idem(owner, idem), idemRecord(session, leaseId, keysJson), 'PX', Math.round(keepMs), 'NX'));
    return r === 'OK';
  }

  /**
   * What an idempotency record says to a retry: the same lease if it is live and was asked for the
   * same keys (a group may hold fewer now: releaseMembers), else the key was used for something
   * else (or for a lease that has ended).
   */
  async fromIdem(value: string, keysJson: string): Promise<AcquireResult> {
    const id = parseIdemRecord(value) ?? { session: '', leaseId: '' };
    const { now, rec } = await this.record(id.session);
    if (rec && rec.leaseId === id.leaseId && rec.state === 'active' && (id.keys ?? rec.keys) === keysJson && Number(rec.expiresAt) > now) {
      return { ok: true, lease: this.lease(rec), reused: true };
    }
    return { ok: false, reason: 'idempotency-key-reused', session: id.session, leaseId: id.leaseId };
  }

  /**
   * Undo an acquire whose nodes answered: `locked` (the VMs that may hold this lease's lock; never
   * one it did not try) unlocked, then the record, then the entry. What fails is retried in the
   * background.
   */
  async rollback(session: string, leaseId: string, locked: string[], ttlMs: number): Promise<void> {
    try {
      await this.releaseParts(session, leaseId, locked);
    } catch {
      this.abandoned.add(leaseId, { session, keys: locked }, ttlMs);
    }
  }

  /**
   * Undo an acquire that failed on a node that did not answer: the VMs known locked (their nodes
   * just answered) are unlocked now, so they are free at once; `unknown` (a lock whose script's
   * answer was lost), the record and the entry as soon as the store answers, without making the
   * caller wait for a node that is not answering.
   */
  async rollbackSoon(session: string, leaseId: string, locked: string[], unknown: string[], ttlMs: number): Promise<void> {
    await Promise.allSettled(locked.map((k) => this.vm(S.VM_UNLOCK, k, [leaseId])));
    this.abandoned.add(leaseId, { session, keys: [...locked, ...unknown] }, ttlMs);
  }
}
