/**
 * Final exec statuses kept on the gateway. The agent deletes a process record with the first
 * `guest-exec-status` reply that says `exited: true`, so if that reply (or the HTTP response
 * carrying it) is lost, only this copy remains. Bounded three ways so memory stays flat:
 * a time to live, a maximum entry count and a maximum total of output bytes; the least recently
 * used entry goes first (a Map keeps insertion order; a hit re-inserts).
 */
import type { ExecStatusRecord } from './types.js';

export interface ResultCacheLimits {
  ttlMs: number;
  maxEntries: number;
  maxBytes: number;
}

interface Entry {
  record: ExecStatusRecord;
  bytes: number;
  expiresAt: number;
}

const ENTRY_OVERHEAD = 256;

function sizeOf(rec: ExecStatusRecord): number {
  const s = rec.status;
  return ENTRY_OVERHEAD + (s['out-data']?.length ?? 0) + (s['err-data']?.length ?? 0);
}

export class ResultCache {
  private readonly entries = new Map<string, Entry>();
  private bytes = 0;

  constructor(
    private readonly limits: ResultCacheLimits,
    private readonly now: () => number = Date.now,
  ) {}

  static key(vm: string, pid: number): string {
    return `${vm}\u0000${pid}`;
  }

  get(vm: string, pid: number): ExecStatusRecord | undefined {
    const key = ResultCache.key(vm, pid);
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expiresAt <= this.now()) {
      this.remove(key, e);
      return undefined;
    }
    this.entries.delete(key);
    this.entries.set(key, e);
    return e.record;
  }

  set(vm: string, rec: ExecStatusRecord): void {
    const key = ResultCache.key(vm, rec.pid);
    const old = this.entries.get(key);
    if (old) this.remove(key, old);
    const bytes = sizeOf(rec);
    // An output larger than the whole budget is not kept: it would evict everything else and
    // then itself. The caller still gets it once, in the reply that collected it.
    if (bytes > this.limits.maxBytes) return;
    this.entries.set(key, { record: rec, bytes, expiresAt: this.now() + this.limits.ttlMs });
    this.bytes += bytes;
    this.evict();
  }

  /** A pid reused by a new process we started: its old result must not answer for the new one. */
  delete(vm: string, pid: number): void {
    const key = ResultCache.key(vm, pid);
    const e = this.entries.get(key);
    if (e) this.remove(key, e);
  }

  /** Drop expired entries (called by the exec reaper; get() also expires lazily). */
  sweep(): void {
    const now = this.now();
    for (const [key, e] of this.entries) if (e.expiresAt <= now) this.remove(key, e);
  }

  get size(): number {
    return this.entries.size;
  }

  get totalBytes(): number {
    return this.bytes;
  }

  private evict(): void {
    for (const [key, e] of this.entries) {
      if (this.entries.size <= this.limits.maxEntries && this.bytes <= this.limits.maxBytes) break;
      this.remove(key, e);
    }
  }

  private remove(key: string, e: Entry): void {
    this.entries.delete(key);
    this.bytes -= e.bytes;
  }
}
