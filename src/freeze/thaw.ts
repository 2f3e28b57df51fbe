/**
 * Thawing, the one operation that must always get through. Every path that ends a freeze comes
 * here: the caller's DELETE, a forced thaw, the rollback of a failed freeze, the local auto-thaw
 * timer, the deadline sweeper and start-up reconciliation. Every thaw goes in the channel's
 * priority lane (`priority: 'thaw'`): the next command on the wire after the one in flight, ahead
 * of everything queued, never refused by maxQueue or the pool's maxOpen.
 *
 * Rules
 * - Thaw is never blocked by the lock. The store is asked, right before the agent command, only to
 *   find out whether this thaw has become STALE (fencing): if the session has been ended by
 *   someone else, or another session holds the VM now, nothing is sent. If the store cannot be
 *   reached the thaw is sent anyway: an unneeded thaw costs nothing, a missing one leaves a VM
 *   frozen. The same check is made again when the thaw reaches the wire (thaw-fence.ts, the
 *   channel's gate: the socket held and nothing else on it), since it may wait for the socket
 *   meanwhile (another process holds it) while its lease is ended and the VM frozen under another.
 * - A session is released (locks and deadline removed) only once every VM of it is known thawed.
 *   Until then the durable deadline stays, so some process keeps trying.
 * - Releases that failed because the store was down are retried by the sweeper.
 */
import type { FreezeLogger as Logger } from './types.js';
import { GatewayError, isGatewayError } from '../errors.js';
import { fenceAtWire, refusedAtWire, staleBy } from './thaw-fence.js';
import { quiesceTimeoutReport, thawReport, unconfirmedReport } from './thaw-report.js';
import type { AuditLog } from '../util/audit.js';
import { LocalTimers } from './local-timers.js';
import { groupOfSession, vmKey, type EndedBy, type FenceCheck, type Lease, type LeaseStore } from '../store/types.js';
import {
  asGatewayError,
  endedByOf,
  endedNoLaterThan,
  fenceOf,
  type AgentFence,
  boundTo,
  freezeData,
  type FreezeAgent,
  type ThawTrigger,
  type VmThawOutcome,
} from './types.js';

const AUTO_TRIGGERS: ReadonlySet<ThawTrigger> = new Set(['local-timer', 'deadline', 'reconcile', 'before-freeze', 'retry']);
/** how long a finished thaw is remembered for a rollback of the same lease to find */
const THAW_RECORD_MS = 60_000;
const DEFAULT_CLAIM_RETRY_MS = 5_000;

/** One thaw of one VM under one lease, in flight or finished (see `thawVm`). */
interface ThawRecord {
  outcome: Promise<VmThawOutcome>;
  /** event number when it settled; undefined while in flight */
  settledSeq?: number;
}

/** A thaw that reached the agent, as metrics see it (src/freeze/metrics.ts). */
export interface ThawEvent {
  vm: string;
  trigger: ThawTrigger;
  /** a thaw the gateway did on its own at the lease's deadline */
  auto: boolean;
  /** freeze (lease creation) to this thaw, ms; absent for a rollback (the freeze failed) */
  freezeMs?: number;
}

export interface ThawObserver {
  thawed(ev: ThawEvent): void;
}

export interface ThawOptions {
  /** how long the fence check may wait for the store; default its command timeout */
  storeWaitMs?: number;
  /** the HTTP request that asked for this thaw (X-Request-Id), for its log line; none for the gateway's own */
  requestId?: string;
  /** for a retry: the trigger of the thaw being retried (a holder's thaw is retried though its lease is live) */
  origin?: ThawTrigger;
}

export interface SessionThawResult {
  outcomes: VmThawOutcome[];
  /** every VM is thawed (or was not ours any more) */
  done: boolean;
  /** the session was removed from the store (false when the store was down: retried later) */
  released: boolean;
}

export class ThawEngine {
  /** sessions this process froze or renewed: the local auto-thaw timers (local-timers.ts) */
  private readonly timers: LocalTimers;
  /** session → lease (and why it ended) whose release could not reach the store */
  private readonly pendingReleases = new Map<string, { leaseId: string; endedBy?: EndedBy; endedAtMost?: number }>();
  /**
   * leaseId+vm → the latest thaw of that VM under that lease. A rollback consults it: a thaw of
   * the same lease that was still in flight when the freeze command settled, or started later,
   * reaches the agent after the freeze (one channel per VM, one command on the wire at a time),
   * so it undoes the freeze and the rollback sends no second one.
   */
  private readonly thaws = new Map<string, ThawRecord>();
  /** leaseId+vm → event number when this process's freeze command for it settled */
  private readonly freezeSettled = new Map<string, number>();
  private seq = 0;
  private readonly observers: ThawObserver[] = [];
  /**
   * session → the VMs this process has thawed under its current lease while another VM of it
   * failed to thaw: a retry (or a later deadline thaw of the same lease) thaws only the rest, so a
   * VM is thawed, audited and counted once per lease, not once per retry. Dropped when the session
   * is released or forgotten.
   */
  private readonly thawedUnder = new Map<string, { leaseId: string; vms: Set<string> }>();

  constructor(
    private readonly store: LeaseStore,
    private readonly agent: FreezeAgent,
    private readonly logger: Logger,
    private readonly thawTimeoutMs?: number,
    /** how far a claim moves a session's deadline (the sweeper's claimRetryMs) */
    private readonly claimRetryMs: number = DEFAULT_CLAIM_RETRY_MS,
    private readonly audit?: AuditLog,
  ) {
    this.timers = new LocalTimers(store, logger, claimRetryMs, (lease, trigger, origin, storeWaitMs) =>
      this.thawSession(lease, trigger, undefined, origin, storeWaitMs === undefined ? {} : { storeWaitMs }),
    );
  }

  observe(o: ThawObserver): void {
    this.observers.push(o);
  }

  /** A thaw sent outside thawSession (forced): its observers (metrics) hear of it too. */
  thawedOutside(vm: string, lease: Lease, trigger: ThawTrigger): void {
    const ev: ThawEvent = { vm, trigger, auto: false, freezeMs: Date.now() - lease.createdAt };
    for (const ob of this.observers) ob.thawed(ev);
  }

  /**
   * The freeze command of `vm` under `leaseId` has settled (answered, failed or timed out). A thaw
   * of that lease finished before this point does not count for the rollback that follows.
   */
  noteFreezeSettled(leaseId: string, vm: string): void {
    const key = thawKey(leaseId, vm);
    const mark = ++this.seq;
    this.freezeSettled.set(key, mark);
    setTimeout(() => {
      if (this.freezeSettled.get(key) === mark) this.freezeSettled.delete(key);
    }, THAW_RECORD_MS).unref();
  }

  /** Thaw one VM of a lease (or of no known lease, for a forced thaw). */
  /** `opts.storeWaitMs`: how long the fence check may wait for the store (default: its command timeout). */
  async thawVm(vm: string, lease: Lease | undefined, trigger: ThawTrigger, opts: ThawOptions = {}): Promise<VmThawOutcome> {
    if (!lease) return this.thawVmOnce(vm, lease, trigger, opts);
    const key = thawKey(lease.leaseId, vm);
    if (trigger === 'rollback') {
      // another path of this process (local timer, sweeper, caller) thaws or has thawed this VM
      // under this lease after the freeze went out: that thaw is the one, wait for it and use it
      const prev = this.thaws.get(key);
      const mark = this.freezeSettled.get(key);
      if (prev && mark !== undefined && (prev.settledSeq === undefined || prev.settledSeq > mark)) {
        const o = await prev.outcome.catch((e: unknown) => failed(vm, e));
        if (o.status === 'thawed') {
          this.logger.info({ vm, session: lease.session, trigger }, 'rollback: the thaw already sent after the freeze undid it, none sent again');
          return { ...o, shared: true };
        }
      }
    } else {
      // a thaw of this VM under this lease is in flight in this process already (the local timer
      // and a shutdown, a caller and the sweeper): it undoes the same freeze, so use it
      const prev = this.thaws.get(key);
      if (prev && prev.settledSeq === undefined) {
        const o = await prev.outcome.catch((e: unknown) => failed(vm, e));
        if (o.status === 'thawed') {
          this.logger.info({ vm, session: lease.session, trigger }, 'a thaw of this lease was already on its way: none sent again');
          return { ...o, shared: true };
        }
      }
    }
    const rec: ThawRecord = { outcome: this.thawVmOnce(vm, lease, trigger, opts) };
    this.thaws.set(key, rec);
    try {
      return await rec.outcome;
    } finally {
      rec.settledSeq = ++this.seq;
      setTimeout(() => {
        if (this.thaws.get(key) === rec) this.thaws.delete(key);
      }, THAW_RECORD_MS).unref();
    }
  }

  private async thawVmOnce(vm: string, lease: Lease | undefined, trigger: ThawTrigger, how: ThawOptions): Promise<VmThawOutcome> {
    const data = lease ? freezeData(lease) : undefined;
    const frozenCount = data?.frozen?.[vm] ?? 0;
    // 'freezing' not forced: a freeze whose gateway stopped mid-way (an idempotent retry tells its
    // holder to thaw it): no count was written, whether the guest froze is not known (h13 F2)
    const stopped = data?.state === 'freezing' && trigger !== 'force';
    const unconfirmed = data?.state === 'unknown' || stopped;
    // a forced thaw of a lease whose freeze is still in flight: that freeze is rolled back (session.ts)
    const inFlight = data?.state === 'freezing' && trigger === 'force';
    let storeDown = false;
    if (lease && trigger !== 'force') {
      let c: FenceCheck | undefined;
      try {
        c = await this.store.check(vmKey(vm), lease.leaseId, lease.epoch, how.storeWaitMs === undefined ? undefined : { timeoutMs: how.storeWaitMs });
      } catch (e) {
        if (!isGatewayError(e) || e.code !== 'STORE_UNAVAILABLE') throw e;
        storeDown = true;
        this.logger.warn({ vm, session: lease.session, trigger }, 'lease store unavailable: thawing without the fence check');
      }
      // stale (thaw-fence.ts): another lease holds the VM, or the lease ended (but for a rollback)
      const stale = staleBy(c, trigger === 'rollback');
      if (stale !== undefined) {
        this.logger.info({ vm, session: lease.session, trigger, state: stale }, 'stale thaw not sent');
        return { vm, status: 'skipped', why: stale };
      }
      // the gateway's own thaw of a live lease: renewed meanwhile, not due. A retry of a thaw its
      // holder (or a rollback) asked for still goes: the lease is live because that thaw failed
      const ownThaw = AUTO_TRIGGERS.has(trigger) && (how.origin === undefined || AUTO_TRIGGERS.has(how.origin));
      if (c?.state === 'live' && ownThaw) return { vm, status: 'skipped', why: 'renewed' };
    }
    // the priority lane: next on the wire after the command in flight, never QUEUE_FULL or refused by maxOpen
    // the audit trail names the gateway for its own thaws (deadline, shutdown…), the caller otherwise
    const actor = AUTO_TRIGGERS.has(trigger) || trigger === 'shutdown' ? { actor: 'gateway' } : {};
    // cluster mode: the node serving the VM repeats the fence check right before sending (AgentFence)
    // a forced thaw of a lease goes where that lease's freeze went (its node), like the holder's
    const fence: AgentFence = lease ? fenceOf(lease, vm, { rollback: trigger === 'rollback', forced: trigger === 'force' }) : { forced: true };
    // the fence checked again when the thaw reaches the wire (the socket held, nothing else on it):
    // it may have waited for the socket while another process ended this lease and another froze the VM
    // (not when the store just did not answer: the thaw is not held up by waiting for it again)
    const gate = lease && trigger !== 'force' && !storeDown ? () => fenceAtWire(this.store, vm, lease, trigger, how.storeWaitMs) : undefined;
    const opts = { priority: 'thaw' as const, ...actor, fence, ...(gate ? { gate } : {}), ...(this.thawTimeoutMs ? { timeoutMs: this.thawTimeoutMs } : {}) };
    try {
      const r = await this.agent.call(vm, 'guest-fsfreeze-thaw', undefined, opts);
      const thawed = typeof r === 'number' ? r : Number(r);
      // The socket stays (released when idle, like any other command's): the agent service marks
      // the channel's guest-info stale on a thaw (a copy read while frozen lists most commands
      // disabled), so the next command that needs it re-reads it on this socket
      const rep = inFlight || unconfirmed ? unconfirmedReport(vm, thawed, inFlight, stopped) : thawReport(vm, thawed, frozenCount);
      return { vm, status: 'thawed', report: rep };
    } catch (e) {
      const err = asGatewayError(e, { vm, command: 'guest-fsfreeze-thaw' });
      // refused at the wire by its fence (thaw-fence.ts): stale, nothing was sent
      const fenced = refusedAtWire(err);
      if (fenced !== undefined) {
        this.logger.info({ vm, session: lease?.session, trigger, state: fenced }, 'stale thaw not sent (fence checked at the wire)');
        return { vm, status: 'skipped', why: fenced };
      }
      // a VM deregistered while frozen can no longer be reached: retrying forever helps nobody
      if (err.code === 'VM_NOT_FOUND') {
        this.logger.error({ vm, session: lease?.session, trigger }, 'VM no longer registered: cannot thaw it, dropping it from the lease');
        return { vm, status: 'skipped', why: 'ended' };
      }
      // Windows VSS gives up a freeze after ~10 s; the thaw then fails although the guest is thawed.
      if (err.code === 'AGENT_ERROR') {
        const status = await this.agent.call(vm, 'guest-fsfreeze-status', undefined, { priority: 'thaw' }).catch(() => undefined);
        if (status === 'thawed') return { vm, status: 'thawed', report: quiesceTimeoutReport(vm, frozenCount, err.qga?.desc ?? err.message) };
      }
      return { vm, status: 'failed', error: err };
    }
  }

  /**
   * Thaw every VM of a session; release it when all are done (with a tombstone saying why, unless
   * its holder ended it); schedule a retry otherwise. `origin`: for a retry, the trigger of the
   * thaw being retried.
   */
  async thawSession(lease: Lease, trigger: ThawTrigger, vms?: string[], origin: ThawTrigger = trigger, opts: ThawOptions = {}): Promise<SessionThawResult> {
    const earlier = this.thawedUnder.get(lease.session);
    const before = earlier?.leaseId === lease.leaseId ? earlier.vms : undefined;
    // the gateway's own thaws skip what it already thawed; a caller's thaw still sends (and reports) every VM
    const skip = before !== undefined && AUTO_TRIGGERS.has(trigger) ? before : undefined;
    const targets = (vms ?? freezeData(lease).vms).filter((vm) => skip === undefined || !skip.has(vm));
    const how = origin === trigger ? opts : { ...opts, origin };
    const outcomes = await Promise.all(targets.map((vm) => this.thawVm(vm, lease, trigger, how).catch((e: unknown) => failed(vm, e))));
    const renewed = outcomes.some((o) => o.status === 'skipped' && o.why === 'renewed');
    const failures = outcomes.filter((o) => o.status === 'failed');
    // a deadline thaw (timer, sweep, reconciliation, or a retry of one): audited and counted
    const auto = endedByOf(origin) === 'deadline';
    for (const o of outcomes) {
      // a thaw another path sent (shared) was logged, audited and counted by that path
      if (o.status === 'thawed' && !o.shared) {
        this.logger.info({ vm: o.vm, session: lease.session, trigger, thawed: o.report.thawed, ...(opts.requestId === undefined ? {} : { requestId: opts.requestId }) }, 'thawed');
        if (auto) {
          this.audit?.record(
            { action: 'auto_thaw', by: 'gateway', vm: o.vm, session: lease.session, leaseId: lease.leaseId, holder: lease.owner, fence: lease.fence, trigger: origin },
            'lease deadline: the gateway thawed the VM',
          );
        }
        const ev: ThawEvent = { vm: o.vm, trigger, auto, ...(origin === 'rollback' ? {} : { freezeMs: Date.now() - lease.createdAt }) };
        for (const ob of this.observers) ob.thawed(ev);
      }
      if (o.status === 'failed') this.logger.error({ vm: o.vm, session: lease.session, trigger, err: o.error.message, code: o.error.code }, 'thaw failed');
    }
    if (renewed) {
      await this.timers.rearmFromStore(lease);
      return { outcomes, done: false, released: false };
    }
    if (failures.length > 0) {
      const done = before ?? new Set<string>();
      for (const o of outcomes) if (o.status === 'thawed') done.add(o.vm);
      if (done.size > 0) this.thawedUnder.set(lease.session, { leaseId: lease.leaseId, vms: done });
      this.timers.scheduleRetry(lease, origin);
      // a group's thawed members leave its lease now, not when the last member's thaw gets through
      await this.releaseMembers(lease, done);
      return { outcomes, done: false, released: false };
    }
    this.forget(lease.session, lease.leaseId);
    const released = await this.release(lease.session, lease.leaseId, endedByOf(origin), endedNoLaterThan(lease, endedByOf(origin)));
    return { outcomes, done: true, released };
  }

  /**
   * Members of a group thawed while another of it is still frozen (its thaw failed and is retried:
   * its node away, its agent down), or thawed by force, leave the group's lease: they can be
   * frozen again at once instead of when the last member's thaw gets through, and the group's
   * later thaws skip them (their fence check finds them no longer under this lease). Best effort:
   * a store that cannot be reached is asked again at the next retry of the group's thaw.
   */
  async releaseMembers(lease: Lease, vms: Iterable<string>, endedBy?: EndedBy): Promise<void> {
    const members = [...vms];
    if (groupOfSession(lease.session) === undefined || members.length === 0) return;
    try {
      const keys = members.map(vmKey);
      const letGo = await this.store.releaseMembers(lease.session, lease.leaseId, keys);
      if (letGo !== false) {
        // 0: let go by an earlier try (each retry of the group's thaw asks again): nothing to say
        if (letGo > 0) this.logger.info({ session: lease.session, vms: members }, 'thawed members let go by their group, which keeps the others until they are thawed');
        return;
      }
      // refused: these are the last VMs the lease holds (the others let go before): it ends
      const current = await this.store.getSession(lease.session);
      if (current !== undefined && current.leaseId === lease.leaseId && current.keys.every((k) => keys.includes(k))) {
        this.forget(lease.session, lease.leaseId);
        await this.release(lease.session, lease.leaseId, endedBy, endedNoLaterThan(lease, endedBy));
        this.logger.info({ session: lease.session, vms: members }, 'the last members of a group thawed: its lease ended');
      }
    } catch (e) {
      this.logger.warn({ session: lease.session, vms: members, err: e instanceof Error ? e.message : String(e) }, 'could not let thawed members go by their group yet: retried with its thaw');
    }
  }

  /** Release (leaving a tombstone when `endedBy` is given), or remember to once the store is back. */
  async release(session: string, leaseId: string, endedBy?: EndedBy, endedAtMost?: number): Promise<boolean> {
    try {
      await this.store.release(session, leaseId, endedBy, endedAtMost);
      this.pendingReleases.delete(session);
      return true;
    } catch (e) {
      if (!isGatewayError(e) || e.code !== 'STORE_UNAVAILABLE') throw e;
      this.pendingReleases.set(session, { leaseId, ...(endedBy ? { endedBy } : {}), ...(endedAtMost === undefined ? {} : { endedAtMost }) });
      return false;
    }
  }

  async retryPendingReleases(): Promise<void> {
    for (const [session, p] of [...this.pendingReleases]) {
      await this.store.release(session, p.leaseId, p.endedBy, p.endedAtMost);
      this.pendingReleases.delete(session);
    }
  }

  /** Arm (or re-arm) the local auto-thaw timer for a lease this process holds. */
  arm(lease: Lease, minDelayMs = 0): void {
    this.timers.arm(lease, minDelayMs);
  }

  /**
   * Cluster mode: node `nodeId` is back (it was gone): the thaws of leases with a VM bound to it
   * that failed meanwhile and wait for their next retry (up to 30 s away) are sent now.
   */
  retryBoundTo(nodeId: string): void {
    const n = this.timers.retryNow((l) => boundTo(l, nodeId));
    if (n > 0) this.logger.info({ node: nodeId, leases: n }, 'cluster: a node is back: retrying now the thaws that waited for it');
  }

  /** the lease `leaseId` if this process holds a timer for it (the session's current or a displaced one) */
  localLeaseById(leaseId: string): Lease | undefined {
    return this.timers.leases().find((l) => l.leaseId === leaseId);
  }

  localLease(session: string): Lease | undefined {
    return this.timers.lease(session);
  }

  localSessions(): Lease[] {
    return this.timers.leases();
  }

  /** Call `fn` whenever the leases with a local timer change (the journal of held leases). */
  onLocalChange(fn: () => void): void {
    this.timers.onChange = fn;
  }

  /** Drop the local timer of `session`'s lease; with `leaseId`, only that lease's (another lease of the session keeps its own). */
  forget(session: string, leaseId?: string): void {
    this.timers.forget(session, leaseId);
    if (leaseId === undefined || this.thawedUnder.get(session)?.leaseId === leaseId) this.thawedUnder.delete(session);
  }

  stop(): void {
    this.timers.stop();
  }
}

function thawKey(leaseId: string, vm: string): string {
  return `${leaseId}\u0000${vm}`;
}

function failed(vm: string, e: unknown): VmThawOutcome {
  return { vm, status: 'failed', error: e instanceof GatewayError ? e : asGatewayError(e, { vm }) };
}
