/**
 * RedisStore.acquire: a single VM in one script on the VM's node; a freeze group as per-VM
 * acquisitions with rollback. The order of the steps, and why it keeps fencing and the deadline
 * sweep whole, is in redis.ts's header.
 */
import { randomUUID } from 'node:crypto';
import { errors, isGatewayError } from '../errors.js';
import { IDEMPOTENCY_RETENTION_MS, canonicalKeys } from './memory.js';
import { PENDING_GRACE_MS, type RedisCore } from './redis-core.js';
import { fields, list, type Reply } from './redis-exec.js';
import * as S from './redis-scripts.js';
import type { AcquireRequest, AcquireResult, Lease } from './types.js';
import { groupOfSession } from './types.js';

/** the first score of a lease's index entry is its expiry estimated this much early (clock skew between nodes) */
const ESTIMATE_MARGIN_MS = 1_000;
/** a group acquisition taking longer than this is rolled back (well inside PENDING_GRACE_MS) */
const GROUP_ACQUIRE_MAX_MS = 10_000;
/** a VM lock found stale (its group gone) is cleared and the VM tried again, at most this often */
const STALE_RETRIES = 3;

type Conflict = Extract<AcquireResult, { reason: 'conflict' }>;

/** `acquiring`: the holder is a group still being taken, read at `now` (store clock) */
function conflict(key: string, h: Lease, pendingThaw: boolean, acquiring?: { now: number }): Conflict {
  return {
    ok: false,
    reason: 'conflict',
    key,
    pendingThaw,
    holder: { session: h.session, owner: h.owner, leaseId: h.leaseId, expiresAt: h.expiresAt, fence: h.fence },
    ...(acquiring
      ? { acquiring: { since: h.createdAt, rollbackAt: h.createdAt + PENDING_GRACE_MS, rollbackInMs: Math.max(0, h.createdAt + PENDING_GRACE_MS - acquiring.now) } }
      : {}),
  };
}

export async function acquire(core: RedisCore, req: AcquireRequest): Promise<AcquireResult> {
  const single = req.keys.length === 1 && req.session === req.keys[0] && groupOfSession(req.session) === undefined;
  return single ? acquireSingle(core, req) : acquireGroup(core, req);
}

/** A lower bound of the lease's expiry for its index entry, written before the lease exists. */
async function estimate(core: RedisCore, req: AcquireRequest): Promise<number> {
  return (await core.clock.lowerBound()) - ESTIMATE_MARGIN_MS + Math.min(req.ttlMs, req.hardCapMs);
}

const idemKeepMs = (req: AcquireRequest) => req.hardCapMs + IDEMPOTENCY_RETENTION_MS;

/**
 * The VM's script, its index entry and the idempotency record's read go out together: on one
 * Redis they run in that order on one connection, so a reply lost after they were sent does not
 * stop the lock (the owner's retry takes it back), and the entry exists before the lease. On a
 * Cluster the entry is on another node, with no order between nodes: it is written (and its reply
 * awaited) first.
 */
async function acquireSingle(core: RedisCore, req: AcquireRequest): Promise<AcquireResult> {
  const { session, owner } = req;
  const idem = req.idempotencyKey ?? '';
  const keysJson = canonicalKeys(req.keys);
  const keys = [session];
  const leaseId = randomUUID();
  const floor = Math.max(req.fenceFloor ?? 0, core.highWater);
  const score = await estimate(core, req);
  const args = (notAfter: number) => [core.epochCandidate, session, keysJson, owner, req.ttlMs, req.hardCapMs, idem, floor, JSON.stringify(req.data ?? {}), leaseId, notAfter];
  if (core.cluster) await core.indexAdd(session, leaseId, score);
  const notAfter = await core.clock.notAfter();
  // issued in this order, without awaiting in between (one connection on one Redis)
  const [idemR, idxR, first] = await Promise.allSettled([
    idem ? core.idemGet(owner, idem) : Promise.resolve(null),
    core.cluster ? Promise.resolve() : core.indexAdd(session, leaseId, score),
    core.vm(S.VM_ACQUIRE, session, args(notAfter)),
  ]);
  if (first.status === 'rejected') {
    // it may have run, its reply lost: undo it once the store answers again, unless an
    // idempotency key lets its owner's retry take it back (C6)
    if (!idem && isGatewayError(first.reason) && first.reason.code === 'STORE_UNAVAILABLE') core.abandoned.add(leaseId, { session, keys }, req.ttlMs);
    throw first.reason;
  }
  // this lease will not exist: its entry goes, without waiting for it
  const dropEntry = () => void core.indexRemove(session, leaseId).catch(() => undefined);
  const usedIdem = idemR.status === 'fulfilled' ? idemR.value : null;
  let r: Reply[] = list(first.value);
  for (let round = 0; ; round++) {
    const tag = r[0];
    if (tag === 'ok') break;
    dropEntry();
    if (tag === 'late') throw core.clock.lateError('lock');
    if (tag === 'idem') return { ok: false, reason: 'idempotency-key-reused', session: String(r[1]), leaseId: String(r[2]) };
    if (tag === 'reused') {
      const lease = core.lease(fields(r.slice(1)));
      // the first attempt's entry may be missing (on a Cluster it went to another node): no lease is handed out without one
      await core.indexAdd(session, lease.leaseId, lease.expiresAt);
      await core.idemSet(owner, idem, session, lease.leaseId, keysJson, idemKeepMs(req)).catch(() => false);
      return { ok: true, lease, reused: true };
    }
    if (usedIdem !== null) return core.fromIdem(usedIdem, keysJson);
    if (tag === 'conflict') return conflict(session, core.lease(fields(r.slice(2))), r[1] === '1');
    if (tag !== 'group') throw errors.internal(`VM_ACQUIRE answered ${String(tag)}`);
    const g = await core.groupHolder(session, String(r[1]), String(r[2]));
    if (g) return conflict(session, g.lease, !g.pending && g.lease.expiresAt <= g.now, g.pending ? { now: g.now } : undefined);
    if (round + 1 >= STALE_RETRIES) throw errors.internal(`the lock of ${session} stayed stale after ${STALE_RETRIES} clean-ups`);
    // the stale lock is gone: try again, with an entry of its own
    await core.indexAdd(session, leaseId, score);
    r = list(await core.vm(S.VM_ACQUIRE, session, args(await core.clock.notAfter())));
  }
  const lease = core.lease(fields(r.slice(1)));
  core.clock.note(lease.createdAt);
  if (idxR.status === 'rejected' || idemR.status === 'rejected') {
    await core.rollback(session, leaseId, keys, req.ttlMs);
    throw idxR.status === 'rejected' ? idxR.reason : (idemR as PromiseRejectedResult).reason;
  }
  const exact = core.indexRaise(session, leaseId, lease.expiresAt).catch(() => undefined);
  const other = await claimIdem(core, req, session, leaseId, usedIdem);
  await exact;
  if (other !== undefined) {
    await core.rollback(session, leaseId, keys, req.ttlMs);
    return core.fromIdem(other, keysJson);
  }
  return { ok: true, lease, reused: false };
}

/**
 * Record (owner, idempotency key) → this new lease. Answers the record of another lease if the
 * key was taken (before, or by a concurrent request): the caller rolls back and answers that.
 * A record that cannot be written leaves the lease as it is: only a later retry loses.
 */
async function claimIdem(core: RedisCore, req: AcquireRequest, session: string, leaseId: string, seen: string | null): Promise<string | undefined> {
  const idem = req.idempotencyKey;
  if (!idem) return undefined;
  if (seen !== null) return seen;
  if (await core.idemSet(req.owner, idem, session, leaseId, canonicalKeys(req.keys), idemKeepMs(req)).catch(() => true)) return undefined;
  return (await core.idemGet(req.owner, idem).catch(() => null)) ?? undefined;
}

/**
 * A group: its pending record (with the key list) and index entry first, then each VM in key
 * order (its lock names the group), then the record made active with the highest fence. Any
 * conflict or failure rolls back what was taken (locks, then record, then entry).
 */
async function acquireGroup(core: RedisCore, req: AcquireRequest): Promise<AcquireResult> {
  const { session, owner } = req;
  const idem = req.idempotencyKey ?? '';
  const keysJson = canonicalKeys(req.keys);
  const keys = [...new Set(req.keys)].sort();
  if (idem) {
    const used = await core.idemGet(owner, idem);
    if (used !== null) return core.fromIdem(used, keysJson);
  }
  const leaseId = randomUUID();
  let floor = Math.max(req.fenceFloor ?? 0, core.highWater);
  const record = core.keys.record(session);
  const [idxR, pendR] = await Promise.allSettled([
    core.indexAdd(session, leaseId, await estimate(core, req)),
    core.exec.run(S.GROUP_PENDING, [record], [session, leaseId, owner, req.ttlMs, req.hardCapMs, idem, keysJson, JSON.stringify(req.data ?? {})]),
  ]);
  if (pendR.status === 'rejected') {
    // no VM was tried: only the record (if it was written) and the entry are left to undo
    core.abandoned.add(leaseId, { session, keys: [] }, req.ttlMs);
    throw pendR.reason;
  }
  const p = list(pendR.value);
  if (p[0] === 'exists') {
    void core.indexRemove(session, leaseId).catch(() => undefined);
    return conflict(session, core.lease(fields(p.slice(1))), false);
  }
  if (idxR.status === 'rejected') {
    await core.rollbackSoon(session, leaseId, [], [], req.ttlMs);
    throw idxR.reason;
  }
  const started = performance.now();
  const epochs: string[] = [];
  /** the VMs whose lock script answered 'locked' */
  const locked: string[] = [];
  /** the VM being locked: if its script fails, it may have run (answer lost) */
  let trying: string[] = [];
  let lease: Lease;
  try {
    for (const key of keys) {
      if (performance.now() - started > GROUP_ACQUIRE_MAX_MS) throw errors.storeUnavailable(`lease store (Redis): locking the group's VMs took over ${GROUP_ACQUIRE_MAX_MS} ms: rolled back`);
      trying = [key];
      const m = await lockMember(core, req, key, leaseId, floor, keysJson);
      trying = [];
      if ('reason' in m) {
        // every node asked so far answered: undone now, before the conflict is reported
        await core.rollback(session, leaseId, locked, req.ttlMs);
        return m;
      }
      floor = m.fence;
      epochs.push(m.epoch);
      locked.push(key);
    }
    const a = list(await core.exec.run(S.GROUP_ACTIVATE, [record], [leaseId, floor, epochs.join(' '), await core.clock.notAfter()]));
    if (a[0] === 'late') throw core.clock.lateError('lock');
    if (a[0] !== 'ok') throw errors.storeUnavailable('lease store (Redis): the group was ended while its VMs were being locked (taken for abandoned): rolled back');
    lease = core.lease(fields(a.slice(1)));
  } catch (e) {
    await core.rollbackSoon(session, leaseId, locked, trying, req.ttlMs);
    throw e;
  }
  const exact = core.indexRaise(session, leaseId, lease.expiresAt).catch(() => undefined);
  const other = await claimIdem(core, req, session, leaseId, null);
  await exact;
  if (other !== undefined) {
    await core.rollback(session, leaseId, keys, req.ttlMs);
    return core.fromIdem(other, keysJson);
  }
  return { ok: true, lease, reused: false };
}

/** Lock one VM for a group: its fence and epoch, or the conflict that stops the group. */
async function lockMember(core: RedisCore, req: AcquireRequest, key: string, leaseId: string, floor: number, keysJson: string): Promise<{ fence: number; epoch: string } | Conflict> {
  for (let round = 0; round < STALE_RETRIES; round++) {
    const args = [core.epochCandidate, req.session, keysJson, req.owner, req.ttlMs, req.hardCapMs, req.idempotencyKey ?? '', floor, '', leaseId, await core.clock.notAfter()];
    const r = list(await core.vm(S.VM_ACQUIRE, key, args));
    if (r[0] === 'member') return { fence: Number(r[1]), epoch: String(r[2]) };
    if (r[0] === 'late') throw core.clock.lateError('lock');
    if (r[0] === 'conflict') return conflict(key, core.lease(fields(r.slice(2))), r[1] === '1');
    if (r[0] !== 'group') throw errors.internal(`VM_ACQUIRE answered ${String(r[0])} for a group member`);
    const g = await core.groupHolder(key, String(r[1]), String(r[2]));
    if (g) return conflict(key, g.lease, !g.pending && g.lease.expiresAt <= g.now, g.pending ? { now: g.now } : undefined);
  }
  throw errors.internal(`the lock of ${key} stayed stale after ${STALE_RETRIES} clean-ups`);
}
