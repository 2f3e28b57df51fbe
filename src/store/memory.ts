/**
 * The embedded lease store: plain maps in this process. Right for one gateway instance; with
 * several instances each would hold its own locks, so use RedisStore there. Semantics mirror the
 * Redis Lua scripts exactly (the contract suite runs against both).
 *
 * With `persistPath`, every change is written to that file (write + rename, before the call's
 * promise settles; the changes of one event-loop turn in one write) and read back at
 * construction, so a gateway killed while a VM is frozen finds the session again when it restarts
 * and thaws it (start-up reconciliation). Without it the store is not durable, and the freeze
 * service thaws everything it holds when it shuts down.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { StateFile, readSnapshot, type Snapshot } from './memory-file.js';
import type { AcquireRequest, AcquireResult, EndedBy, EndedLease, EndedRecord, FenceCheck, Lease, LeaseStore, RenewResult, SessionData, StoreHealth, VmRegistration } from './types.js';
import { ENDED_RETENTION_MS } from './types.js';

interface Lock {
  session: string;
  leaseId: string;
}

/** How long an idempotency key is remembered after its lease could have ended at the latest. */
export const IDEMPOTENCY_RETENTION_MS = 3_600_000;

/** At most this many tombstones are kept; the oldest go first. */
export const MAX_ENDED_LEASES = 10_000;
/**
 * Idempotency records kept at most (the oldest go first): each is also forgotten an hour after its
 * lease's hard deadline, but a fleet backup sending a key with every freeze would otherwise grow
 * the state file, rewritten at each change, with every freeze of the last hours (h11 F3). A retry
 * whose record went is taken as a new request.
 */
export const MAX_IDEMPOTENCY_RECORDS = 10_000;

export interface MemoryStoreOptions {
  /** injectable so that tests can move time; default Date.now */
  clock?: () => number;
  /** keep the state in this file across restarts */
  persistPath?: string;
  /** how long a tombstone is kept (default ENDED_RETENTION_MS) */
  endedRetentionMs?: number;
  /** how many tombstones are kept at most (default MAX_ENDED_LEASES) */
  maxEndedLeases?: number;
}


export class MemoryStore implements LeaseStore {
  readonly kind = 'memory' as const;
  /** without a state file everything is lost with the process */
  readonly durable: boolean;
  private epoch: string = randomUUID();
  private readonly sessions = new Map<string, Lease>();
  private readonly locks = new Map<string, Lock>();
  /** session key → when it must be thawed (or retried after a claim) */
  private readonly deadlines = new Map<string, number>();
  /** (owner, key) → the lease it made, and the keys it was asked for (a group may hold fewer now: releaseMembers) */
  private readonly idem = new Map<string, { session: string; leaseId: string; keys?: string; forgetAt: number }>();
  private readonly vms = new Map<string, VmRegistration>();
  /** leaseId → tombstone, oldest first (insertion order) */
  private readonly endedLeases = new Map<string, EndedRecord>();
  private readonly endedRetentionMs: number;
  private readonly maxEndedLeases: number;
  private lastFence = 0;
  private closed = false;
  private readonly clock: () => number;
  private readonly file?: StateFile;

  constructor(opts: MemoryStoreOptions = {}) {
    this.clock = opts.clock ?? Date.now;
    this.durable = opts.persistPath !== undefined;
    this.endedRetentionMs = opts.endedRetentionMs ?? ENDED_RETENTION_MS;
    this.maxEndedLeases = opts.maxEndedLeases ?? MAX_ENDED_LEASES;
    if (opts.persistPath !== undefined) {
      this.file = new StateFile(opts.persistPath, () => this.snapshot());
      if (existsSync(opts.persistPath)) this.load(opts.persistPath);
    }
  }

  get fenceHighWater(): number {
    return this.lastFence;
  }

  async acquire(req: AcquireRequest): Promise<AcquireResult> {
    const now = this.clock();
    this.forgetIdempotency(now);
    const keysId = canonicalKeys(req.keys);
    if (req.idempotencyKey) {
      const rec = this.idem.get(idemId(req.owner, req.idempotencyKey));
      if (rec) {
        const s = this.sessions.get(rec.session);
        if (s && s.leaseId === rec.leaseId && (rec.keys ?? canonicalKeys(s.keys)) === keysId && s.expiresAt > now) {
          return { ok: true, lease: copy(s), reused: true };
        }
        return { ok: false, reason: 'idempotency-key-reused', leaseId: rec.leaseId, session: rec.session };
      }
    }
    for (const key of req.keys) {
      const holder = this.holderOf(key);
      if (holder) {
        return {
          ok: false,
          reason: 'conflict',
          key,
          pendingThaw: holder.expiresAt <= now,
          holder: { session: holder.session, owner: holder.owner, leaseId: holder.leaseId, expiresAt: holder.expiresAt, fence: holder.fence },
        };
      }
    }
    const fence = Math.max(this.lastFence + 1, now * 1000, (req.fenceFloor ?? 0) + 1);
    this.lastFence = fence;
    const hardDeadline = now + req.hardCapMs;
    const lease: Lease = {
      session: req.session,
      keys: [...req.keys].sort(),
      leaseId: randomUUID(),
      owner: req.owner,
      fence,
      createdAt: now,
      expiresAt: Math.min(now + req.ttlMs, hardDeadline),
      hardDeadline,
      ...(req.idempotencyKey ? { idempotencyKey: req.idempotencyKey } : {}),
      epoch: this.epoch,
      data: structuredClone(req.data ?? {}),
    };
    this.sessions.set(lease.session, lease);
    for (const key of lease.keys) this.locks.set(key, { session: lease.session, leaseId: lease.leaseId });
    this.deadlines.set(lease.session, lease.expiresAt);
    if (req.idempotencyKey) {
      this.idem.set(idemId(req.owner, req.idempotencyKey), {
        session: lease.session,
        leaseId: lease.leaseId,
        keys: keysId,
        forgetAt: hardDeadline + IDEMPOTENCY_RETENTION_MS,
      });
      for (const k of this.idem.keys()) {
        if (this.idem.size <= MAX_IDEMPOTENCY_RECORDS) break;
        this.idem.delete(k);
      }
    }
    const out: AcquireResult = { ok: true, lease: copy(lease), reused: false };
    try {
      await this.persist();
    } catch (e) {
      // refused (503): the lease must not live on in memory, or the VM stays locked by a lease its
      // caller was told does not exist until it expires
      this.undoAcquire(lease);
      throw e;
    }
    return out;
  }

  /** Take back an acquire whose write failed (what of it is still there: nothing else may have replaced it in between). */
  private undoAcquire(lease: Lease): void {
    if (this.sessions.get(lease.session)?.leaseId !== lease.leaseId) return;
    this.sessions.delete(lease.session);
    for (const key of lease.keys) if (this.locks.get(key)?.leaseId === lease.leaseId) this.locks.delete(key);
    this.deadlines.delete(lease.session);
    if (lease.idempotencyKey) {
      const id = idemId(lease.owner, lease.idempotencyKey);
      if (this.idem.get(id)?.leaseId === lease.leaseId) this.idem.delete(id);
    }
  }

  async renew(session: string, leaseId: string, ttlMs: number): Promise<RenewResult> {
    const now = this.clock();
    const s = this.sessions.get(session);
    if (!s) return { ok: false, reason: 'not-found' };
    if (s.leaseId !== leaseId) return { ok: false, reason: 'lease-mismatch', lease: copy(s) };
    if (s.expiresAt <= now) return { ok: false, reason: 'expired', lease: copy(s) };
    let want = now + ttlMs;
    let capped = false;
    if (want > s.hardDeadline) {
      want = s.hardDeadline;
      capped = true;
    }
    // a renewal never shortens a lease: a shorter ttl than what is left is a no-op
    s.expiresAt = Math.max(s.expiresAt, want);
    this.deadlines.set(session, s.expiresAt);
    const out: RenewResult = { ok: true, lease: copy(s), capped };
    await this.persist();
    return out;
  }

  async release(session: string, leaseId: string, endedBy?: EndedBy, endedNoLaterThan?: number): Promise<boolean> {
    const s = this.sessions.get(session);
    if (!s || s.leaseId !== leaseId) return false;
    for (const key of s.keys) {
      if (this.locks.get(key)?.leaseId === leaseId) this.locks.delete(key);
    }
    this.sessions.delete(session);
    this.deadlines.delete(session);
    if (endedBy) this.remember(leaseId, { session, endedAt: Math.min(this.clock(), endedNoLaterThan ?? Infinity), endedBy });
    await this.persist();
    return true;
  }

  async releaseMembers(session: string, leaseId: string, keys: string[]): Promise<number | false> {
    const s = this.sessions.get(session);
    if (!s || s.leaseId !== leaseId) return false;
    const drop = new Set(keys);
    const kept = s.keys.filter((k) => !drop.has(k));
    if (kept.length === 0) return false;
    if (kept.length === s.keys.length) return 0;
    for (const key of s.keys) if (drop.has(key) && this.locks.get(key)?.leaseId === leaseId) this.locks.delete(key);
    const letGo = s.keys.length - kept.length;
    s.keys = kept;
    await this.persist();
    return letGo;
  }

  async ended(leaseId: string): Promise<EndedLease | undefined> {
    this.forgetEnded(this.clock());
    const t = this.endedLeases.get(leaseId);
    return t ? { leaseId, ...t } : undefined;
  }

  async getByKey(key: string): Promise<Lease | undefined> {
    const h = this.holderOf(key);
    return h ? copy(h) : undefined;
  }

  async getSession(session: string): Promise<Lease | undefined> {
    const s = this.sessions.get(session);
    return s ? copy(s) : undefined;
  }

  async updateData(session: string, leaseId: string, data: SessionData): Promise<boolean> {
    const s = this.sessions.get(session);
    if (!s || s.leaseId !== leaseId) return false;
    s.data = structuredClone(data);
    await this.persist();
    return true;
  }

  async check(key: string, leaseId: string, epoch: string, _opts?: { timeoutMs?: number }): Promise<FenceCheck> {
    const holder = this.holderOf(key);
    if (holder && holder.leaseId === leaseId) {
      return { state: holder.expiresAt > this.clock() ? 'live' : 'expired', lease: copy(holder) };
    }
    if (holder) return { state: 'superseded', holder: copy(holder) };
    if (epoch !== this.epoch) return { state: 'lost', epoch: this.epoch };
    return { state: 'ended' };
  }

  async dueSessions(limit: number): Promise<Lease[]> {
    const now = this.clock();
    const due = [...this.deadlines.entries()].filter(([, at]) => at <= now).sort((a, b) => a[1] - b[1]);
    const out: Lease[] = [];
    for (const [session] of due.slice(0, limit)) {
      const s = this.sessions.get(session);
      if (s) out.push(copy(s));
      else this.deadlines.delete(session);
    }
    return out;
  }

  // answers at once: a per-call timeout (opts.timeoutMs) never applies
  async claim(session: string, leaseId: string, retryMs: number, _opts?: { timeoutMs?: number }): Promise<boolean> {
    const now = this.clock();
    const at = this.deadlines.get(session);
    const s = this.sessions.get(session);
    if (at === undefined || at > now || !s || s.leaseId !== leaseId) return false;
    if (s.expiresAt > now) {
      this.deadlines.set(session, s.expiresAt); // renewed since it was listed
      return false;
    }
    this.deadlines.set(session, now + retryMs);
    await this.persist();
    return true;
  }

  async listSessions(): Promise<Lease[]> {
    return [...this.sessions.values()].map(copy);
  }

  async now(): Promise<number> {
    return this.clock();
  }

  async putVm(rec: VmRegistration): Promise<boolean> {
    if (this.vms.has(rec.name)) return false;
    this.vms.set(rec.name, structuredClone(rec));
    await this.persist();
    return true;
  }

  async getVm(name: string): Promise<VmRegistration | undefined> {
    const r = this.vms.get(name);
    return r ? structuredClone(r) : undefined;
  }

  async deleteVm(name: string): Promise<boolean> {
    const had = this.vms.delete(name);
    if (had) await this.persist();
    return had;
  }

  async listVms(): Promise<VmRegistration[]> {
    return [...this.vms.values()].map((r) => structuredClone(r)).sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async health(): Promise<StoreHealth> {
    return { ok: !this.closed, kind: 'memory', epoch: this.epoch, latencyMs: 0 };
  }

  async ready(): Promise<void> {}

  async close(): Promise<void> {
    // the changes of this turn are written now, not by a turn that may come after the files are gone
    this.file?.writePending();
    this.closed = true;
  }

  /** The caller's change is durable when this settles (StateFile: one write per event-loop turn). */
  private persist(): Promise<void> {
    return this.file?.write() ?? Promise.resolve();
  }

  /** The whole state, as the state file holds it. */
  private snapshot(): Snapshot {
    return {
      epoch: this.epoch,
      lastFence: this.lastFence,
      sessions: [...this.sessions.values()],
      locks: [...this.locks],
      deadlines: [...this.deadlines],
      idem: [...this.idem],
      vms: [...this.vms.values()],
      ended: [...this.endedLeases],
    };
  }

  private load(file: string): void {
    const snap = readSnapshot(file);
    this.epoch = snap.epoch;
    this.lastFence = snap.lastFence;
    for (const l of snap.sessions) this.sessions.set(l.session, l);
    for (const [k, v] of snap.locks) this.locks.set(k, v);
    for (const [k, v] of snap.deadlines) this.deadlines.set(k, v);
    for (const [k, v] of snap.idem) this.idem.set(k, v);
    for (const v of snap.vms) this.vms.set(v.name, v);
    // state files written before tombstones existed have none
    for (const [k, v] of snap.ended ?? []) this.endedLeases.set(k, v);
  }

  /** Keep a tombstone, within the retention and the count bound. */
  private remember(leaseId: string, rec: EndedRecord): void {
    this.forgetEnded(rec.endedAt);
    this.endedLeases.delete(leaseId);
    this.endedLeases.set(leaseId, rec);
    for (const k of this.endedLeases.keys()) {
      if (this.endedLeases.size <= this.maxEndedLeases) break;
      this.endedLeases.delete(k);
    }
  }

  /** Drop tombstones past their retention (oldest first, so stop at the first one still kept). */
  private forgetEnded(now: number): void {
    for (const [k, v] of this.endedLeases) {
      if (v.endedAt + this.endedRetentionMs > now) break;
      this.endedLeases.delete(k);
    }
  }

  /** The session that really holds a lock key (a lock left by a half-ended session does not count). */
  private holderOf(key: string): Lease | undefined {
    const l = this.locks.get(key);
    if (!l) return undefined;
    const s = this.sessions.get(l.session);
    if (!s || s.leaseId !== l.leaseId) {
      this.locks.delete(key);
      return undefined;
    }
    return s;
  }

  private forgetIdempotency(now: number): void {
    for (const [k, v] of this.idem) if (v.forgetAt <= now) this.idem.delete(k);
  }
}

function copy(l: Lease): Lease {
  return structuredClone(l);
}

function idemId(owner: string, key: string): string {
  return `${owner}\n${key}`;
}

/** Keys compared as a set: the same group in another order is the same request. */
export function canonicalKeys(keys: string[]): string {
  return JSON.stringify([...keys].sort());
}
