/**
 * Redis key names of RedisStore, built here and nowhere else (the Lua scripts get every key in
 * KEYS[]). Under the prefix P (store.keyPrefix, e.g. `qga:`):
 *
 *   P{vm:<name>}:lock       hash {session, leaseId}: the VM is locked by that lease
 *   P{vm:<name>}:session    hash, the lease record of a single-VM session (fields below)
 *   P{vm:<name>}:meta       hash {fence, epoch}: the VM's last fence and its epoch
 *   P{group:<id>}:session   hash, the lease record of a freeze group (fields below + state)
 *   P{dl:<n>}:deadlines     zset "<session>\n<leaseId>" → time (ms) the lease must be thawed by:
 *                           one of 256 buckets; a lease's entry is in the bucket of its session's
 *                           slot, whose key hashes into that slot's range (redis-slots.ts)
 *   Pidem:<owner>\n<key>    string "<session>\n<leaseId>" (expires after the hard cap + 1 h)
 *   Pended:<leaseId>        hash {session, endedAt, endedBy}: a tombstone (expires)
 *   Pepoch                  string, the epoch health() reports
 *   Pvms                    hash name → VM record (API-registered VMs)
 *
 * Lease record fields: session, leaseId, owner, fence, createdAt, expiresAt, hardDeadline, idem,
 * epoch, keys (JSON), data (JSON), state ('active', or 'pending' while a group is being taken).
 *
 * The part in braces is the Redis Cluster hash tag: every key of one VM (or one group) hashes to
 * one slot, so a script touching them runs on one node. The lock key (`vm:<name>`) or session key
 * (`group:<id>`) is the tag as it is; the prefix stays outside the braces.
 */
import { bucketKeys, bucketOfSlot, keySlot } from './redis-slots.js';

export class RedisKeys {
  constructor(readonly prefix: string) {
    this.buckets = bucketKeys(prefix);
  }

  private tagged(key: string, what: string): string {
    return `${this.prefix}{${key}}:${what}`;
  }

  /** the lock of a lock key (`vm:<name>`) */
  lock(key: string): string {
    return this.tagged(key, 'lock');
  }

  /** the lease record of a session (`vm:<name>` or `group:<id>`), in the session's own slot */
  record(session: string): string {
    return this.tagged(session, 'session');
  }

  /** the VM's fence and epoch */
  meta(key: string): string {
    return this.tagged(key, 'meta');
  }

  /** [lock, record, meta]: the KEYS of every per-VM script */
  vm(key: string): [string, string, string] {
    return [this.lock(key), this.record(key), this.meta(key)];
  }

  /** the deadline index buckets, all of them (bucket b covers slots [b × 64, (b + 1) × 64)) */
  readonly buckets: string[];

  /** the bucket holding a session's index entry: the bucket of the session's own slot */
  index(session: string): string {
    return this.buckets[bucketOfSlot(keySlot(this.record(session)))];
  }

  idem(owner: string, idem: string): string {
    return `${this.prefix}idem:${owner}\n${idem}`;
  }

  ended(leaseId: string): string {
    return `${this.prefix}ended:${leaseId}`;
  }

  get epoch(): string {
    return `${this.prefix}epoch`;
  }

  get vms(): string {
    return `${this.prefix}vms`;
  }
}

/** The deadline index member of a lease: one per lease (not per session), see redis.ts. */
export const indexMember = (session: string, leaseId: string): string => `${session}\n${leaseId}`;

/** The inverse of indexMember; undefined for a member this store did not write. */
export function parseMember(member: string): { session: string; leaseId: string } | undefined {
  const i = member.lastIndexOf('\n');
  return i > 0 ? { session: member.slice(0, i), leaseId: member.slice(i + 1) } : undefined;
}

/**
 * The idempotency record: "<session>\n<leaseId>\n<the requested keys, canonical JSON>". The keys
 * are the ones ASKED for, kept apart from the record's key list, which shrinks when a group lets a
 * member go (releaseMembers): a retry of the same request must still find its lease.
 */
export const idemRecord = (session: string, leaseId: string, keysJson: string): string => `${indexMember(session, leaseId)}\n${keysJson}`;

/** The inverse of idemRecord; `keys` undefined for a record written without them (before they were kept). */
export function parseIdemRecord(value: string): { session: string; leaseId: string; keys?: string } | undefined {
  const i = value.lastIndexOf('\n');
  // a lease id is a UUID: a last line opening a JSON list is the keys
  if (i > 0 && value[i + 1] === '[') {
    const m = parseMember(value.slice(0, i));
    return m ? { ...m, keys: value.slice(i + 1) } : undefined;
  }
  return parseMember(value);
}
