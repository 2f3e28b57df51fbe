/**
 * The local auto-thaw timers: one per session this process froze or renewed, due at the lease's
 * expiry, plus the retries of thaws that failed. The durable half (the deadline index every
 * process sweeps) is sweeper.ts; both end in ThawEngine.thawSession.
 *
 * A timer claims the expired session in the store before thawing, as the sweeper does, so that one
 * path thaws it. The claim is given CLAIM_WAIT_MS: a store that does not answer by then (or at all)
 * must not push the thaw past its deadline, so the timer then thaws unclaimed — an extra thaw costs
 * nothing, a late one keeps a guest frozen; the thaw's fence check still runs.
 */
import { isGatewayError } from '../errors.js';
import type { Lease, LeaseStore } from '../store/types.js';
import type { FreezeLogger as Logger, ThawTrigger } from './types.js';

const MAX_TIMER_MS = 2_147_483_647;
const RETRY_BASE_MS = 500;
const RETRY_MAX_MS = 30_000;
/** how long the local auto-thaw waits for its claim before thawing unclaimed */
export const CLAIM_WAIT_MS = 250;

interface LocalEntry {
  lease: Lease;
  timer?: NodeJS.Timeout;
  attempt: number;
  /** for a retry: the trigger of the thaw that failed (it decides the tombstone's endedBy) */
  origin?: ThawTrigger;
  /** its thaw is under way (retryNow leaves it: it would run twice) */
  running?: boolean;
}

/**
 * What the timers do when one is due: thaw the session (ThawEngine.thawSession). `storeWaitMs`:
 * the store just failed to answer the claim in time, so the thaw's fence check waits no longer
 * than the claim did (a hung store must not push the thaw past deadline + 1 s).
 */
export type ThawFn = (lease: Lease, trigger: ThawTrigger, origin: ThawTrigger, storeWaitMs?: number) => Promise<unknown>;

export class LocalTimers {
  private readonly local = new Map<string, LocalEntry>();
  /**
   * leaseId → the timer of a lease whose session got another lease in this process before this
   * one was thawed or released (the store lost it — Redis restarted empty, a failover to a replica
   * behind — and granted the session again): it keeps its timer, so the guest that lease froze is
   * still thawed at its deadline (the thaw's fence check holds it back if the newer lease holds
   * the VM). Bounded by the leases this process holds.
   */
  private readonly displaced = new Map<string, LocalEntry>();
  private stopped = false;
  /** the set of leases with a timer here changed (the journal of held leases: held-journal.ts) */
  onChange?: () => void;

  constructor(
    private readonly store: LeaseStore,
    private readonly logger: Logger,
    private readonly claimRetryMs: number,
    private readonly thaw: ThawFn,
  ) {}

  /** Arm (or re-arm) the timer of a lease this process holds, due at its expiry. */
  arm(lease: Lease, minDelayMs = 0): void {
    if (this.stopped) return;
    const prev = this.local.get(lease.session);
    if (prev && prev.lease.leaseId !== lease.leaseId) this.displaced.set(prev.lease.leaseId, prev);
    else if (prev?.timer) clearTimeout(prev.timer);
    const old = this.displaced.get(lease.leaseId);
    if (old) {
      if (old.timer) clearTimeout(old.timer);
      this.displaced.delete(lease.leaseId);
    }
    const entry: LocalEntry = { lease, attempt: 0 };
    const delay = Math.min(Math.max(minDelayMs, lease.expiresAt - Date.now()), MAX_TIMER_MS);
    entry.timer = setTimeout(() => void this.fire(entry, 'local-timer'), delay);
    this.local.set(lease.session, entry);
    this.onChange?.();
  }

  /** Retry a failed thaw with exponential backoff; `origin` is the trigger of the thaw that failed. */
  scheduleRetry(lease: Lease, origin: ThawTrigger): void {
    if (this.stopped) return;
    const current = this.local.get(lease.session);
    // a displaced lease retries as displaced, never over the session's current lease
    const displaced = current !== undefined && current.lease.leaseId !== lease.leaseId;
    const prev = displaced ? this.displaced.get(lease.leaseId) : current;
    if (prev?.timer) clearTimeout(prev.timer);
    const attempt = (prev?.attempt ?? 0) + 1;
    const delay = Math.min(RETRY_BASE_MS * 2 ** (attempt - 1), RETRY_MAX_MS);
    const entry: LocalEntry = { lease, attempt, origin };
    entry.timer = setTimeout(() => void this.fire(entry, 'retry'), delay);
    if (displaced) this.displaced.set(lease.leaseId, entry);
    else this.local.set(lease.session, entry);
  }

  /**
   * Send now the retries waiting (a thaw that failed, backing off up to RETRY_MAX_MS) of the leases
   * `match` picks: what they waited for is back (a cluster node). Timers not yet due are left.
   * Returns how many.
   */
  retryNow(match: (lease: Lease) => boolean): number {
    let n = 0;
    for (const e of [...this.local.values(), ...this.displaced.values()]) {
      if (e.attempt === 0 || e.running === true || this.stopped || !match(e.lease)) continue;
      if (e.timer) clearTimeout(e.timer);
      e.timer = setTimeout(() => void this.fire(e, 'retry'), 0);
      n++;
    }
    return n;
  }

  /** A thaw found the lease renewed: follow its new expiry (re-read from the store). */
  async rearmFromStore(lease: Lease): Promise<void> {
    try {
      const s = await this.store.getSession(lease.session);
      // the store's clock may run a little behind ours: do not spin while it catches up
      if (s && s.leaseId === lease.leaseId) this.arm(s, 100);
    } catch {
      this.scheduleRetry(lease, 'local-timer');
    }
  }

  lease(session: string): Lease | undefined {
    return this.local.get(session)?.lease;
  }

  /** every lease with a timer here: each session's current one and the displaced ones */
  leases(): Lease[] {
    return [...this.local.values(), ...this.displaced.values()].map((e) => e.lease);
  }

  /** Drop the timer of `session`'s lease; with `leaseId`, only that lease's (current or displaced). */
  forget(session: string, leaseId?: string): void {
    const e = this.local.get(session);
    if (e && (leaseId === undefined || e.lease.leaseId === leaseId)) {
      if (e.timer) clearTimeout(e.timer);
      this.local.delete(session);
    }
    const d = leaseId === undefined ? undefined : this.displaced.get(leaseId);
    if (d) {
      if (d.timer) clearTimeout(d.timer);
      this.displaced.delete(d.lease.leaseId);
    }
    this.onChange?.();
  }

  stop(): void {
    this.stopped = true;
    for (const e of [...this.local.values(), ...this.displaced.values()]) if (e.timer) clearTimeout(e.timer);
    this.local.clear();
    this.displaced.clear();
  }

  /** whether `entry` is still the timer of its lease (not replaced by a retry, re-arm or forget) */
  private holds(entry: LocalEntry): boolean {
    return this.local.get(entry.lease.session) === entry || this.displaced.get(entry.lease.leaseId) === entry;
  }

  private async fire(entry: LocalEntry, trigger: ThawTrigger): Promise<void> {
    if (this.stopped || !this.holds(entry)) return;
    const session = entry.lease.session;
    // libuv times a timer from the loop's cached clock, so under load it can fire a few ms before
    // the instant it was set for: wait out the rest rather than ask the store too early
    if (trigger === 'local-timer' && Date.now() < entry.lease.expiresAt) {
      entry.timer = setTimeout(() => void this.fire(entry, trigger), entry.lease.expiresAt - Date.now());
      return;
    }
    const origin = trigger === 'retry' ? entry.origin ?? trigger : trigger;
    entry.running = true;
    try {
      const claim = trigger === 'local-timer' ? await this.claim(entry.lease) : 'claimed';
      if (claim === 'not-ours') return;
      await this.thaw(entry.lease, trigger, origin, claim === 'store-slow' ? CLAIM_WAIT_MS : undefined);
    } catch (e) {
      this.logger.error({ err: e, session }, 'auto-thaw failed');
      this.scheduleRetry(entry.lease, origin);
    } finally {
      entry.running = false;
    }
  }

  /**
   * Claim an expired lease for the timer. True when claimed, when the store cannot answer within
   * CLAIM_WAIT_MS, or when the session is not in the store any more (the thaw's fence check then
   * tells an ended lease from lost data). False when it is not due yet on the store's clock
   * (renewed, or that clock runs behind ours: re-armed) or someone else claimed it (that path
   * thaws). "Not due" and "claimed by another" look alike from one refused claim, and a claim made
   * just before the expiry on the store's clock is refused although nobody else has it: a refused
   * claim of a lease that has expired by the time we look is tried once more, which tells them apart.
   */
  private async claim(lease: Lease): Promise<'claimed' | 'store-slow' | 'not-ours'> {
    for (let attempt = 0; attempt < 2; attempt++) {
      let claimed: boolean;
      try {
        claimed = await this.store.claim(lease.session, lease.leaseId, this.claimRetryMs, { timeoutMs: CLAIM_WAIT_MS });
      } catch (e) {
        if (!isGatewayError(e) || e.code !== 'STORE_UNAVAILABLE') throw e;
        this.logger.warn({ session: lease.session, err: e.message }, 'lease store unavailable or slow: local auto-thaw without a claim');
        return 'store-slow';
      }
      if (claimed) return 'claimed';
      const s = await this.store.getSession(lease.session).catch(() => undefined);
      if (!s || s.leaseId !== lease.leaseId) return 'claimed';
      const now = await this.store.now().catch(() => Date.now());
      if (s.expiresAt > now) {
        this.arm(s, 100);
        return 'not-ours';
      }
    }
    this.logger.info({ session: lease.session, trigger: 'local-timer' }, 'expired lease claimed by another thaw path: local auto-thaw not sent');
    this.forget(lease.session, lease.leaseId);
    return 'not-ours';
  }
}
