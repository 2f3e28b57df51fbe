/**
 * The durable half of auto-thaw. Every gateway process runs one sweeper: at start-up it reconciles
 * (every session in the store whose lease has expired is thawed now; live ones get their local
 * timers back when they are this process's: all of the embedded store's, and with Redis those the
 * previous process on this state file held, by its journal, held-journal.ts), then every
 * `sweepIntervalMs` (80–100 % of it, so that processes drift apart) it claims the sessions whose deadline
 * has passed and thaws them. The claim makes one process do each thaw, and moves the deadline
 * forward by `claimRetryMs` so that a claimer that dies is replaced on a later sweep.
 *
 * This is what keeps the promise when the process that froze is gone: a VM stays frozen at most
 * its lease plus one sweep interval (plus the thaw's own round trip).
 */
import type { FreezeLogger as Logger } from './types.js';
import { isGatewayError } from '../errors.js';
import type { Lease, LeaseStore } from '../store/types.js';
import type { ThawEngine } from './thaw.js';

const BATCH = 100;
const RECONCILE_RETRY_MS = 500;

export class Sweeper {
  private timer?: NodeJS.Timeout;
  private stopped = true;
  private reconciled = false;
  private storeDown = false;
  private running?: Promise<void>;
  /** the leases the last process on this journal held (held-journal.ts), looked at by the reconciliation */
  private journaled: Lease[] = [];

  constructor(
    private readonly store: LeaseStore,
    private readonly engine: ThawEngine,
    private readonly logger: Logger,
    private readonly intervalMs: number,
    private readonly claimRetryMs: number,
    /** cluster mode: the lease has a VM whose freeze is bound to this node (FreezeDeps.nodeId) */
    private readonly boundHere?: (lease: Lease) => boolean,
  ) {}

  /** The leases a previous process held (its journal), for the reconciliation at start. */
  recoverHeld(leases: Lease[]): void {
    this.journaled = leases;
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.sweepOnce();
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One pass: reconcile if not done yet, retry failed releases, thaw what is due. Never throws. */
  sweepOnce(): Promise<void> {
    if (!this.running) {
      this.running = this.pass().finally(() => {
        this.running = undefined;
      });
    }
    return this.running;
  }

  private async pass(): Promise<void> {
    try {
      if (!this.reconciled) await this.reconcile();
      await this.engine.retryPendingReleases();
      for (;;) {
        const due = await this.store.dueSessions(BATCH);
        let claimed = 0;
        await Promise.all(
          due.map(async (s) => {
            if (!(await this.store.claim(s.session, s.leaseId, this.claimRetryMs))) return;
            claimed++;
            this.logger.warn({ session: s.session, owner: s.owner, expiredAt: new Date(s.expiresAt).toISOString() }, 'lease expired: thawing by deadline');
            await this.engine.thawSession(s, 'deadline');
          }),
        );
        if (due.length < BATCH || claimed === 0) break;
      }
      if (this.storeDown) this.logger.info('lease store reachable again: sweeping');
      this.storeDown = false;
    } catch (e) {
      if (isGatewayError(e) && e.code === 'STORE_UNAVAILABLE') {
        if (!this.storeDown) this.logger.warn({ err: e.message }, 'lease store unavailable: deadline sweep skipped (local timers still run)');
        this.storeDown = true;
      } else {
        this.logger.error({ err: e }, 'deadline sweep failed');
      }
    }
  }

  private async reconcile(): Promise<void> {
    const sessions = await this.store.listSessions();
    const now = await this.store.now();
    const held = new Set(this.journaled.map((l) => l.leaseId));
    for (const s of sessions) {
      if (s.expiresAt <= now) {
        if (await this.store.claim(s.session, s.leaseId, this.claimRetryMs)) {
          this.logger.warn({ session: s.session, owner: s.owner }, 'start-up reconciliation: lease expired while no process watched it, thawing');
          await this.engine.thawSession(s, 'reconcile');
        } else if (this.boundHere?.(s)) {
          // claimed by another node's sweeper, whose thaw of a VM bound to this node could only fail
          // while this node was away (h12 F1: the thaw came 9 s after the restart): this node serves
          // it and thaws it now; a thaw the other node's retry sends too finds it thawed (harmless)
          this.logger.warn({ session: s.session, owner: s.owner }, 'start-up reconciliation: an overdue lease of a VM this node serves, claimed by another node while this one was away: thawing');
          await this.engine.thawSession(s, 'reconcile');
        }
      } else if (this.store.kind === 'memory' || held.has(s.leaseId)) {
        // the embedded store serves this process alone: its live sessions are ours to time; with
        // Redis, a live lease the previous process on this journal held (it took the freeze, or
        // served the VM it was forwarded to) gets its local timer back, so a restart does not put
        // its thaw off to the first sweep after its deadline (h10 F6)
        this.engine.arm(s);
      }
    }
    await this.recoverLost(sessions);
    this.reconciled = true;
    if (sessions.length) this.logger.info({ sessions: sessions.length }, 'start-up reconciliation done');
  }

  /**
   * The leases the previous process held (its journal) that the store does not know at all (no
   * session of that lease, no other lease of the session, no tombstone): Redis lost them while that
   * process was away. Their local timers come back here, so their guests are thawed at their
   * deadlines (at once if past), as that process would have done.
   */
  private async recoverLost(listed: Lease[]): Promise<void> {
    const known = new Set(listed.map((s) => s.leaseId));
    const busy = new Set(listed.map((s) => s.session));
    const now = await this.store.now();
    for (const lease of this.journaled) {
      if (known.has(lease.leaseId) || busy.has(lease.session)) continue;
      // past its hard deadline a lease is over, whatever became of it (a journal left by a process
      // stopped long ago must not thaw VMs frozen since under other leases)
      if (lease.hardDeadline <= now) continue;
      if ((await this.store.ended(lease.leaseId)) !== undefined) continue;
      // a VM of it held by another lease now: that lease is the VM's
      if ((await Promise.all(lease.keys.map((k) => this.store.getByKey(k)))).some((held) => held !== undefined && held.leaseId !== lease.leaseId)) continue;
      this.logger.warn(
        { session: lease.session, leaseId: lease.leaseId, owner: lease.owner, expiresAt: new Date(lease.expiresAt).toISOString() },
        'start-up reconciliation: a lease the previous process held is not in the lease store (its data was lost?): thawing it at its deadline with the held lease',
      );
      this.engine.arm(lease);
    }
    this.journaled = [];
  }

  private schedule(): void {
    if (this.stopped) return;
    // until the start-up reconciliation has run (the store may still be connecting), retry soon
    const base = this.reconciled ? this.intervalMs : Math.min(this.intervalMs, RECONCILE_RETRY_MS);
    // jitter only downwards: processes drift apart, and no gap between sweeps exceeds the interval
    const jitter = base * (0.8 + Math.random() * 0.2);
    this.timer = setTimeout(() => {
      void this.sweepOnce().finally(() => this.schedule());
    }, jitter);
    this.timer.unref();
  }
}
