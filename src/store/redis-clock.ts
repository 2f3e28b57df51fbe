/**
 * What this process knows of the store's clock: a lower bound of (store clock − performance.now()),
 * from replies that carry the store's time. Used for the not-after instant of ACQUIRE and RENEW
 * scripts (Redis refuses to run them once the caller has given up: a stopped Redis or a stalled
 * connection runs what it holds when it resumes) and for the first score of a lease's deadline
 * index entry (a lower bound of its expiry). On a Cluster the samples come from several nodes:
 * the bound follows the fastest clock, so a node whose clock is behind sees a not-after instant
 * later by that skew (a shard's clocks are expected within NTP's milliseconds).
 */
import { errors, type GatewayError } from '../errors.js';

/** a sample older than this is refreshed (TIME) before it is used */
const SAMPLE_MAX_AGE_MS = 30_000;
/** the not-after instant is this much before this process gives up: the reply still has to travel */
const LATE_MARGIN_MS = 50;

export class StoreClock {
  private lo?: number;
  private at = -Infinity;

  constructor(
    private readonly commandTimeoutMs: number,
    /** reads the store's time (and notes it) */
    private readonly fetch: () => Promise<number>,
  ) {}

  /**
   * A store time `storeMs` read in a reply that has just arrived: the store's clock minus ours was
   * at least storeMs − now (the store read its clock before we got the reply). The tightest recent
   * bound is kept; an old one is replaced (clocks drift).
   */
  note(storeMs: number): void {
    if (!Number.isFinite(storeMs)) return;
    const t = performance.now();
    const lo = storeMs - t;
    this.lo = this.lo === undefined || t - this.at > SAMPLE_MAX_AGE_MS ? lo : Math.max(this.lo, lo);
    this.at = t;
  }

  /** A lower bound of the store's clock now (refreshed when the sample is old). */
  async lowerBound(): Promise<number> {
    if (this.lo === undefined || performance.now() - this.at > SAMPLE_MAX_AGE_MS) await this.fetch();
    return Math.floor(performance.now() + (this.lo ?? 0));
  }

  /**
   * The instant, on the store's clock, after which a script sent now must not run: no later than
   * when this process gives up on it (commandTimeoutMs), a margin earlier for the reply's trip.
   */
  async notAfter(): Promise<number> {
    return (await this.lowerBound()) + this.commandTimeoutMs - LATE_MARGIN_MS;
  }

  lateError(what: 'lock' | 'renew'): GatewayError {
    return errors.storeUnavailable(
      `lease store (Redis) reached the ${what} operation only after this gateway had given up on it (store.commandTimeoutMs ${this.commandTimeoutMs} ms): refused by the store, nothing changed`,
    );
  }
}
