/**
 * Acquires this process gave up on (a timeout, a lost reply, a rollback that could not reach the
 * store): their lease ids are released (compare-and-delete, so nothing of anyone else's) as soon
 * as the store answers again, retried every 500 ms, bounded in number and in time (past the
 * lease's would-be expiry the deadline sweeper ends it anyway: it has an index entry).
 */

/** given-up acquires still to be released, at most this many */
const ABANDONED_MAX = 1_000;
const RETRY_MS = 500;

export interface Abandoned {
  session: string;
  keys: string[];
}

export class AbandonedLeases {
  /** leaseId → what to release */
  private readonly pending = new Map<string, Abandoned & { until: number }>();
  private timer?: NodeJS.Timeout;
  private running = false;

  constructor(private readonly release: (leaseId: string, a: Abandoned) => Promise<void>) {}

  add(leaseId: string, a: Abandoned, ttlMs: number): void {
    if (this.pending.size >= ABANDONED_MAX) {
      const oldest = this.pending.keys().next();
      if (!oldest.done) this.pending.delete(oldest.value);
    }
    this.pending.set(leaseId, { ...a, until: Date.now() + ttlMs + 60_000 });
    if (!this.timer) {
      this.timer = setInterval(() => void this.retry(), RETRY_MS);
      this.timer.unref();
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async retry(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (const [leaseId, a] of [...this.pending]) {
        if (Date.now() > a.until) {
          this.pending.delete(leaseId);
          continue;
        }
        try {
          // an answer from the lease's node means it ran after the acquire (one connection, in order)
          await this.release(leaseId, a);
          this.pending.delete(leaseId);
        } catch {
          break;
        }
      }
    } finally {
      this.running = false;
      if (this.pending.size === 0) this.close();
    }
  }
}
