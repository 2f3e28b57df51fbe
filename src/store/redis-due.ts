/**
 * The deadline sweep's side of RedisStore: dueSessions, claim, listSessions, all from the deadline
 * index (256 bucket keys, redis-slots.ts) and each lease's record (on the lease's node). Why an
 * entry is trusted only with its record, and when a stale one is pruned: redis.ts's header.
 */
import type { RedisCore } from './redis-core.js';
import { PENDING_GRACE_MS, STALE_ENTRY_GRACE_MS } from './redis-core.js';
import { errorMessage } from '../util/unknown.js';
import { decode, list, type Reply } from './redis-exec.js';
import { indexMember, parseMember } from './redis-keys.js';
import * as S from './redis-scripts.js';
import type { Lease } from './types.js';

const isStringList = (value: unknown): value is string[] => Array.isArray(value) && value.every((k) => typeof k === 'string');

type Visit = (entry: { session: string; leaseId: string }, now: number, rec: Record<string, string>) => Promise<void>;

/** stores whose one server refused INDEX_RANGE_ALL (CROSSSLOT): read bucket by bucket */
const perBucket = new WeakSet<RedisCore>();

interface Entry {
  member: string;
  score: number;
  session: string;
  leaseId: string;
  /** the clock of the node that holds the entry's bucket, when it was read */
  indexNow: number;
}

/** A bucket read's reply {nowMs, member, score, ...} as entries (members this store did not write are left out). */
function entriesOf(r: Reply[]): Entry[] {
  const indexNow = Number(r[0]);
  const out: Entry[] = [];
  for (let i = 1; i + 1 < r.length; i += 2) {
    const m = parseMember(String(r[i]));
    if (m) out.push({ member: String(r[i]), score: Number(r[i + 1]), indexNow, ...m });
  }
  return out;
}

/**
 * The `limit` oldest entries with a score up to `max`, over every bucket. On one server (or
 * Sentinel) one script reads them all; on a Cluster each bucket is read on its own node, all sent
 * at once: a bucket whose node does not answer (down, stalled: after the command timeout) is left
 * out of this sweep and read again by the next one. Only when no bucket answered does it throw.
 */
async function readBuckets(core: RedisCore, max: 'now' | '+inf', limit: number): Promise<Entry[]> {
  const buckets = core.keys.buckets;
  if (!core.cluster && !perBucket.has(core)) {
    try {
      return entriesOf(list(await core.exec.run(S.INDEX_RANGE_ALL, buckets, [max, limit])));
    } catch (e) {
      // a one-node Redis Cluster reached through a plain URL refuses keys of many slots in one script
      if (!/CROSSSLOT/.test(errorMessage(e))) throw e;
      perBucket.add(core);
    }
  }
  const reads = await Promise.allSettled(buckets.map((b) => core.exec.run(S.INDEX_RANGE, [b], [max, limit])));
  const all: Entry[] = [];
  let failed: unknown;
  for (const r of reads) {
    if (r.status === 'fulfilled') all.push(...entriesOf(list(r.value)));
    else failed ??= r.reason;
  }
  if (failed !== undefined && reads.every((r) => r.status === 'rejected')) throw failed;
  return all.sort((a, b) => a.score - b.score).slice(0, limit);
}

/**
 * Index entries up to `max` (oldest first, over every bucket), each with its lease record read on
 * the lease's node: `fn` gets those that are this entry's lease (in index order up to its first
 * await); stale entries are pruned once past their grace. A record that cannot be read (its node
 * down) is skipped: the other shards' leases still go.
 */
async function scan(core: RedisCore, max: 'now' | '+inf', limit: number, fn: Visit): Promise<void> {
  const entries = await readBuckets(core, max, limit);
  const reads = await Promise.allSettled(entries.map((e) => core.record(e.session)));
  const work: Array<Promise<unknown>> = [];
  entries.forEach((e, i) => {
    const read = reads[i];
    if (read.status === 'rejected') return;
    const { now, rec } = read.value;
    if (rec && rec.leaseId === e.leaseId) work.push(fn(e, now, rec).catch(() => undefined));
    else if (e.score + STALE_ENTRY_GRACE_MS <= e.indexNow) {
      work.push(core.exec.run(S.INDEX_PRUNE, [core.keys.index(e.session)], [e.member, STALE_ENTRY_GRACE_MS]).catch(() => undefined));
    }
  });
  await Promise.all(work);
}

export async function dueSessions(core: RedisCore, limit: number): Promise<Lease[]> {
  const out: Lease[] = [];
  // more entries than asked for: some may be live (their first, estimated score) or stale
  await scan(core, 'now', limit * 4 + 16, async (entry, now, rec) => {
    if (rec.state === 'pending') {
      // a group its acquirer abandoned mid-way (it never froze anything): rolled back
      if (Number(rec.createdAt) + PENDING_GRACE_MS <= now) await core.releaseParts(entry.session, entry.leaseId, decode(rec.keys, isStringList, 'lock key list'));
      return;
    }
    const lease = core.lease(rec);
    if (lease.expiresAt <= now) {
      if (out.length < limit) out.push(lease);
      return;
    }
    await core.indexRaise(lease.session, lease.leaseId, lease.expiresAt);
  });
  return out;
}

export async function claim(core: RedisCore, session: string, leaseId: string, retryMs: number): Promise<boolean> {
  const { now, rec } = await core.record(session);
  if (!rec || rec.leaseId !== leaseId || rec.state === 'pending') return false;
  const expiresAt = Number(rec.expiresAt);
  if (expiresAt > now) {
    // renewed since it was listed
    await core.indexRaise(session, leaseId, expiresAt).catch(() => undefined);
    return false;
  }
  // one script on the node of the entry's bucket: of two claimers, one moves the entry, the other finds it not due
  return (await core.exec.run(S.INDEX_CLAIM, [core.keys.index(session)], [indexMember(session, leaseId), retryMs])) === 1;
}

export async function listSessions(core: RedisCore): Promise<Lease[]> {
  const seen = new Map<string, Lease>();
  await scan(core, '+inf', 1_000_000, async (_entry, _now, rec) => {
    if (rec.state !== 'pending') seen.set(rec.session, core.lease(rec));
  });
  return [...seen.values()];
}
