/**
 * Pids started through this gateway whose final status has not been collected yet. The agent
 * keeps a process record until a `guest-exec-status` sees it exited; a caller that never polls
 * would leave it there for ever, so the reaper polls what is due here. Polling backs off per pid
 * (a long-running daemon costs one command per `maxIntervalMs`), and the set is bounded.
 */

export interface TrackedPid {
  vm: string;
  pid: number;
  startedAt: number;
  nextPollAt: number;
  intervalMs: number;
  /** callers currently waiting on this pid: the reaper leaves it to them */
  waiters: number;
  /** when the reaper first found the VM unregistered (files/handles.ts VM_GONE_GRACE_MS) */
  vmGoneSince?: number;
}

export interface TrackerLimits {
  intervalMs: number;
  maxIntervalMs: number;
  maxTracked: number;
}

export class PidTracker {
  private readonly pids = new Map<string, TrackedPid>();

  constructor(
    private readonly limits: TrackerLimits,
    private readonly now: () => number = Date.now,
    private readonly onDropped: (t: TrackedPid) => void = () => {},
  ) {}

  private static key(vm: string, pid: number): string {
    return `${vm}\u0000${pid}`;
  }

  track(vm: string, pid: number): void {
    const now = this.now();
    this.pids.delete(PidTracker.key(vm, pid));
    this.pids.set(PidTracker.key(vm, pid), {
      vm,
      pid,
      startedAt: now,
      nextPollAt: now + this.limits.intervalMs,
      intervalMs: this.limits.intervalMs,
      waiters: 0,
    });
    // Oldest first: a gateway flooded with never-polled execs gives up on the oldest records.
    for (const [key, t] of this.pids) {
      if (this.pids.size <= this.limits.maxTracked) break;
      this.pids.delete(key);
      this.onDropped(t);
    }
  }

  get(vm: string, pid: number): TrackedPid | undefined {
    return this.pids.get(PidTracker.key(vm, pid));
  }

  untrack(vm: string, pid: number): void {
    this.pids.delete(PidTracker.key(vm, pid));
  }

  /** A caller just polled it: the reaper need not, for one more interval. */
  touched(vm: string, pid: number): void {
    const t = this.get(vm, pid);
    if (t) t.nextPollAt = this.now() + t.intervalMs;
  }

  beginWait(vm: string, pid: number): void {
    const t = this.get(vm, pid);
    if (t) t.waiters++;
  }

  endWait(vm: string, pid: number): void {
    const t = this.get(vm, pid);
    if (t && t.waiters > 0) t.waiters--;
  }

  /** Pids due for a reaper poll, oldest first, at most `limit`. */
  due(limit: number): TrackedPid[] {
    const now = this.now();
    const out: TrackedPid[] = [];
    for (const t of this.pids.values()) {
      if (out.length >= limit) break;
      if (t.waiters === 0 && t.nextPollAt <= now) out.push(t);
    }
    return out;
  }

  /** Still running (or the poll failed): poll again later, less often. */
  backOff(t: TrackedPid): void {
    t.intervalMs = Math.min(t.intervalMs * 2, this.limits.maxIntervalMs);
    t.nextPollAt = this.now() + t.intervalMs;
  }

  get size(): number {
    return this.pids.size;
  }
}
