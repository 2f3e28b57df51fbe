/**
 * The deadline sweep's side of RedisStore: dueSessions, claim, listSessions, all from the deadline
 * index (one key) and each lease's record (on the lease's node). Why an entry is trusted only with
 * its record, and when a stale one is pruned: redis.ts's header.
 */
import type { RedisCore } from './redis-core.js';
import { PENDING_GRACE_MS, STALE_ENTRY_GRACE_MS } from './redis-core.js';
import { decode, list } from './redis-exec.js';
import { indexMember, parseMember } from './redis-keys.js';
import * as S from './redis-scripts.js';
import type { Lease } from './types.js';

const isStringList = (value: unknown): value is string[] => Array.isArray(value) && value.every((k) => typeof k === 'string');

type Visit = (entry: { session: string; leaseId: string }, now: number, rec: Record<string, string>) => Promise<void>;

/**
 * Index entries up to `max` (oldest first), each with its lease record read on the lease's node:
 * `fn` gets those that are this entry's lease (in index order up to its first await); stale
 * entries are pruned once past their grace. A record that cannot be read (its node down) is
 * skipped: the other shards' leases still go.
 */
async function scan(core: RedisCore, max: 'now' | '+inf', limit: number, fn: Visit): Promise<void> {
  const r = list(await core.exec.run(S.INDEX_RANGE, [core.keys.index], [max, limit]));
  const indexNow = Number(r[0]);
  const entries: Array<{ member: string; score: number; session: string; leaseId: string }> = [];
  for (let i = 1; i + 1 < r.length; i += 2) {
    const m = parseMember(String(r[i]));
    if (m) entries.push({ member: String(r[i]), score: Number(r[i + 1]), ...m });
  }
  const reads = await Promise.allSettled(entries.map((e) => core.record(e.session)));
  const work: Array<Promise<unknown>> = [];
  entries.forEach((e, i) => {
    const read = reads[i];
    if (read.status === 'rejected') return;
    const { now, rec } = read.value;
    if (rec && rec.leaseId === e.leaseId) work.push(fn(e, now, rec).catch(() => undefined));
    else if (e.score + STALE_ENTRY_GRACE_MS <= indexNow) {
      work.push(core.exec.run(S.INDEX_PRUNE, [core.keys.index], [e.member, STALE_ENTRY_GRACE_MS]).catch(() => undefined));
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
  // one script on the index's node: of two claimers, one moves the entry, the other finds it not due
  return (await core.exec.run(S.INDEX_CLAIM, [core.keys.index], [indexMember(session, leaseId), retryMs])) === 1;
}

export async function listSessions(core: RedisCore): Promise<Lease[]> {
  const seen = new Map<string, Lease>();
  await scan(core, '+inf', 1_000_000, async (_entry, _now, rec) => {
    if (rec.state !== 'pending') seen.set(rec.session, core.lease(rec));
  });
  return [...seen.values()];
}
