/**
 * FreezeService: filesystem freezes for backup systems, as leases.
 *   freeze → a lease {leaseId, fence, expiresAt} with a bounded TTL; renew within a hard cap;
 *   thaw with the lease (or force + admin, audited); status = agent status + lease.
 * Auto-thaw twice over: a local timer in the process that froze (ThawEngine) and a durable
 * deadline in the store swept by every process (Sweeper), plus reconciliation at start-up.
 * Freeze groups (several VMs, one lease, all or nothing) live in groups.ts on the same parts.
 */
import { HeldJournal } from './held-journal.js';
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { FreezeLogger as Logger } from './types.js';
import { createAuditLog, type AuditLog } from '../util/audit.js';
import { isGatewayError, errors } from '../errors.js';
import { groupOfSession, vmKey, type EndedLease, type Lease, type LeaseStore } from '../store/types.js';
import { FreezeGroups } from './groups.js';
import { SessionFreezer } from './session.js';
import { Sweeper } from './sweeper.js';
import { ThawEngine } from './thaw.js';
import { leaseView, type LeaseView } from './view.js';
import { boundTo, freezeData, heldVms, iso, leaseExpiredError, requestIdOf, type Caller, type FreezeAgent, type FreezeDeps, type FreezeRegistry, type FreezeSettings, type VmThawReport } from './types.js';

export interface FreezeResponse {
  leaseId: string;
  fence: number;
  frozen: number;
  createdAt: string;
  expiresAt: string;
  hardDeadline: string;
  mountpoints?: string[];
  /** true when this answers an idempotent retry: same lease, not extended */
  reused: boolean;
}

export interface RenewResponse {
  leaseId: string;
  fence: number;
  expiresAt: string;
  hardDeadline: string;
  /** the requested TTL would have passed the hard cap: expiresAt is the cap */
  capped: boolean;
}

export interface ThawResponse extends VmThawReport {
  forced?: boolean;
  /** how the lease was verified: by the store, or only by this process (store unavailable) */
  leaseCheck?: 'store' | 'local' | 'unverified';
}

export class FreezeService {
  readonly gatewayId: string;
  readonly engine: ThawEngine;
  readonly sweeper: Sweeper;
  readonly groups: FreezeGroups;
  private readonly freezer: SessionFreezer;
  private readonly store: LeaseStore;
  private readonly agent: FreezeAgent;
  private readonly registry: FreezeRegistry;
  private readonly logger: Logger;
  private readonly audit: AuditLog;
  readonly settings: FreezeSettings & { handoverOnShutdown?: boolean };
  /** session → its VMs and deadline, while the shutdown thaws it (unthawedAtShutdown) */
  private readonly shutdownThaws = new Map<string, { vms: string[]; expiresAt: number }>();
  private readonly journal?: HeldJournal;

  constructor(deps: FreezeDeps & { settings: FreezeSettings & { handoverOnShutdown?: boolean } }) {
    this.store = deps.store;
    this.agent = deps.agent;
    this.registry = deps.registry;
    this.settings = deps.settings;
    this.logger = deps.logger.child({ component: 'freeze' });
    this.audit = deps.audit ?? createAuditLog(this.logger);
    this.gatewayId = deps.gatewayId ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    const claimRetryMs = Math.max(2 * this.settings.sweepIntervalMs, 5_000);
    this.engine = new ThawEngine(this.store, this.agent, this.logger, this.settings.thawTimeoutMs, claimRetryMs, this.audit);
    const nodeId = deps.nodeId;
    this.sweeper = new Sweeper(this.store, this.engine, this.logger, this.settings.sweepIntervalMs, claimRetryMs, nodeId === undefined ? undefined : (lease) => {
      const id = nodeId();
      return id !== undefined && boundTo(lease, id);
    });
    this.freezer = new SessionFreezer(this.store, this.agent, this.registry, this.engine, this.settings, this.logger, this.gatewayId, claimRetryMs, deps.releaseChannel);
    this.groups = new FreezeGroups(this.store, this.agent, this.registry, this.engine, this.freezer, this.logger, this.audit, this.settings.maxGroupVms);
    // with Redis: what this process holds, for a restart after Redis lost it (held-journal.ts)
    if (deps.heldJournal !== undefined && this.store.kind === 'redis') {
      const journal = new HeldJournal(deps.heldJournal, this.logger, () => this.engine.localSessions());
      this.engine.onLocalChange(() => journal.changed());
      this.journal = journal;
    }
  }

  /** Reconcile, then sweep every interval. Call once the app is ready. */
  async start(): Promise<void> {
    if (this.journal) this.sweeper.recoverHeld(this.journal.open());
    await this.sweeper.start();
  }

  /**
   * Stop timers, then thaw what this process froze (shutdown: SIGTERM/SIGINT), so a stopped
   * gateway never leaves a VM frozen. Which sessions: with the embedded store every one (this
   * process is the store's only user, and nobody else would thaw them); with Redis the sessions
   * this process froze (their data names its gatewayId), unless `handoverOnShutdown` leaves them
   * to the other replicas' sweepers, which thaw them by their deadline.
   */
  async stop(): Promise<void> {
    await this.sweeper.stop();
    // the leases this process holds timers for: what it froze, whatever the store says or can say
    const held = this.engine.localSessions();
    // no local timer may start a thaw of its own beside the shutdown's (one in flight is shared)
    this.engine.stop();
    const handover = this.store.kind === 'redis' && this.settings.handoverOnShutdown === true;
    if (handover) {
      // say what is left frozen, and until when, so an operator reading the stop knows
      for (const l of held) {
        this.logger.warn(
          { session: l.session, owner: l.owner, vms: freezeData(l).vms, expiresAt: iso(l.expiresAt) },
          'shutting down: leaving a frozen session to the other gateways (freeze.handoverOnShutdown): thawed by its holder, or by their sweepers at its deadline',
        );
      }
    } else {
      let sessions: Lease[];
      try {
        sessions = await this.store.listSessions();
      } catch (err) {
        // the store down or hung (Redis stopped first at a reboot): thaw what this process knows it froze
        this.logger.error({ err, sessions: held.map((l) => l.session) }, 'shutting down: the lease store cannot be read; thawing the leases this process holds');
        sessions = [];
      }
      const listed = this.store.kind === 'memory' ? sessions : sessions.filter((s) => freezeData(s).gateway === this.gatewayId);
      // and those the store no longer has (it lost its data) but this process froze under
      const known = new Set(listed.map((s) => s.leaseId));
      const mine = [...listed, ...held.filter((l) => !known.has(l.leaseId))];
      for (const s of mine) this.shutdownThaws.set(s.session, { vms: freezeData(s).vms, expiresAt: s.expiresAt });
      for (const s of mine) {
        this.logger.warn({ session: s.session, owner: s.owner, expiresAt: iso(s.expiresAt) }, 'shutting down: thawing a frozen session this gateway holds');
        const r = await this.engine.thawSession(s, 'shutdown').catch((e: unknown) => {
          this.logger.error({ err: e, session: s.session }, 'thaw at shutdown failed');
          return undefined;
        });
        if (r?.done) this.shutdownThaws.delete(s.session);
      }
    }
    this.journal?.close();
  }

  /**
   * The sessions the shutdown set out to thaw and has not (yet) thawed, with their VMs and
   * deadlines: what the process names if it has to exit before they are done (cli/serve.ts).
   */
  unthawedAtShutdown(): Array<{ session: string; vms: string[]; expiresAt: string }> {
    return [...this.shutdownThaws].map(([session, v]) => ({ session, vms: v.vms, expiresAt: iso(v.expiresAt) }));
  }

  async freeze(vm: string, body: { mountpoints?: string[]; ttlSeconds?: number }, caller: Caller, idempotencyKey?: string): Promise<FreezeResponse> {
    const r = await this.freezer.freeze({
      session: vmKey(vm),
      kind: 'vm',
      vms: [vm],
      ...(body.mountpoints ? { mountpoints: body.mountpoints } : {}),
      ...(body.ttlSeconds !== undefined ? { ttlSeconds: body.ttlSeconds } : {}),
      ...(idempotencyKey ? { idempotencyKey } : {}),
      caller,
    });
    const l = r.lease;
    const mp = freezeData(l).mountpoints;
    return {
      leaseId: l.leaseId,
      fence: l.fence,
      frozen: r.frozen[vm] ?? 0,
      createdAt: iso(l.createdAt),
      expiresAt: iso(l.expiresAt),
      hardDeadline: iso(l.hardDeadline),
      ...(mp ? { mountpoints: mp } : {}),
      reused: r.reused,
    };
  }

  async renew(vm: string, leaseId: string, ttlSeconds: number | undefined): Promise<RenewResponse> {
    await this.registry.require(vm);
    const ttlMs = this.freezer.ttlMs(ttlSeconds);
    const r = await this.store.renew(vmKey(vm), leaseId, ttlMs);
    if (!r.ok) {
      // expired, its thaw due any moment: the lease ended at its deadline even if the guest is not thawed yet
      if (r.reason === 'expired' && r.lease) throw leaseExpiredError({ leaseId, endedAt: r.lease.expiresAt, endedBy: 'deadline' }, 'renew', { vm });
      const ended = await this.endedOn(vmKey(vm), leaseId);
      if (ended) throw leaseExpiredError(ended, 'renew', { vm });
      const holder = await this.store.getByKey(vmKey(vm));
      if (holder && holder.leaseId === leaseId && holder.session !== vmKey(vm)) {
        const group = groupOfSession(holder.session) ?? holder.session;
        throw errors.leaseConflict(`VM ${vm} is frozen as part of freeze group ${group}: renew the group`, { vm, extra: { group } });
      }
      const why = r.reason === 'expired' ? 'has expired (its thaw is due)' : r.reason === 'lease-mismatch' ? 'is not the lease VM ' + vm + ' is frozen under' : 'does not exist on this VM';
      throw errors.leaseConflict(`lease ${leaseId} ${why}`, { vm, extra: { reason: r.reason } });
    }
    this.engine.arm(r.lease);
    return { leaseId: r.lease.leaseId, fence: r.lease.fence, expiresAt: iso(r.lease.expiresAt), hardDeadline: iso(r.lease.hardDeadline), capped: r.capped };
  }

  async thaw(vm: string, q: { leaseId?: string; force?: boolean }, caller: Caller): Promise<ThawResponse> {
    await this.registry.require(vm);
    if (q.force) return this.forceThaw(vm, caller);
    if (!q.leaseId) throw errors.validation('leaseId is required (or force=true, which needs the admin scope)', { vm });
    const key = vmKey(vm);
    let lease: Lease | undefined;
    let check: ThawResponse['leaseCheck'] = 'store';
    try {
      lease = await this.store.getByKey(key);
    } catch (e) {
      if (!isGatewayError(e) || e.code !== 'STORE_UNAVAILABLE') throw e;
      // Thaw is never blocked by the lock: without the store, trust what this process knows, and
      // failing that thaw anyway — an unneeded thaw harms no VM, a refused one may leave it frozen.
      const local = this.engine.localLease(key);
      // a group this process holds with this VM in it (the single route never thaws a member)
      const group = this.engine.localSessions().find((l) => l.session !== key && l.keys.includes(key));
      if (local?.leaseId === q.leaseId) {
        lease = local;
        check = 'local';
      } else if (local !== undefined || group !== undefined) {
        // this process knows the lease VM is frozen under, and it is not this one: refused as when
        // the store answers (h10 F9: any lease id thawed any freeze while Redis was down)
        const held = (local ?? group) as Lease;
        if (group !== undefined && group.leaseId === q.leaseId) {
          const id = groupOfSession(group.session) ?? group.session;
          throw errors.leaseConflict(`VM ${vm} is frozen as part of freeze group ${id}: thaw the group`, { vm, extra: { group: id } });
        }
        throw errors.leaseConflict(`lease ${q.leaseId} is not the lease VM ${vm} is frozen under (held by ${held.owner} until ${iso(held.expiresAt)}; checked by this gateway, the lease store is unavailable); nothing was sent to the agent`, {
          vm,
          extra: { holder: held.owner, expiresAt: iso(held.expiresAt), leaseCheck: 'local' },
        });
      } else {
        check = 'unverified';
        this.audit.record({ action: 'thaw-unverified', vm, by: caller.name, leaseId: q.leaseId, ...requestIdOf(caller) }, 'lease store unavailable: thawing with an unverified lease id');
        return this.unverifiedThaw(vm, q.leaseId, caller);
      }
    }
    if (!lease || lease.leaseId !== q.leaseId) {
      const ended = await this.endedOn(key, q.leaseId);
      if (ended) throw leaseExpiredError(ended, 'thaw', { vm });
    }
    if (!lease) {
      // the store has neither the lease nor its end, but this process froze under it and still
      // holds it (Redis restarted empty, a failover to a replica behind): the holder's thaw goes
      // through, as it does while the store is down
      const held = this.engine.localLeaseById(q.leaseId);
      if (held?.session === key) {
        lease = held;
        check = 'local';
        this.logger.warn({ vm, session: key, leaseId: q.leaseId }, 'the lease store has no record of a lease this process holds (its data was lost?): thawing with the local lease');
      }
    }
    if (!lease) {
      throw errors.leaseConflict(`VM ${vm} has no lease ${q.leaseId}: it never existed, was for another VM, or was thawed by its holder; nothing was sent to the agent`, { vm });
    }
    if (lease.leaseId !== q.leaseId) {
      throw errors.leaseConflict(`lease ${q.leaseId} is not the lease VM ${vm} is frozen under (held by ${lease.owner} until ${iso(lease.expiresAt)})`, {
        vm,
        extra: { holder: lease.owner, expiresAt: iso(lease.expiresAt) },
      });
    }
    if (lease.session !== key) {
      const group = groupOfSession(lease.session) ?? lease.session;
      throw errors.leaseConflict(`VM ${vm} is frozen as part of freeze group ${group}: DELETE /v1/freeze-groups/${group}`, { vm, extra: { group } });
    }
    const res = await this.engine.thawSession(lease, 'caller', [vm], 'caller', requestIdOf(caller));
    const o = res.outcomes[0];
    if (o.status === 'failed') throw o.error;
    if (o.status === 'skipped') {
      const ended = await this.endedOn(key, q.leaseId).catch(() => undefined);
      if (ended) throw leaseExpiredError(ended, 'thaw', { vm });
      throw errors.leaseConflict(`lease ${q.leaseId} ended while this thaw was being prepared; nothing was sent to the agent`, { vm });
    }
    return { ...o.report, leaseCheck: check };
  }

  /**
   * Why VM `vm` must not leave the registry now (deregistration, a config reload), or undefined:
   * it is under a freeze lease (the lease's deadline thaw, its holder's thaw and a forced thaw all
   * reach the guest through its registration; without it the guest would stay frozen with nothing
   * left to thaw it). Throws STORE_UNAVAILABLE when the store cannot say.
   */
  async removalBlocker(vm: string): Promise<{ holder: string; expiresAt: string; detail: string } | undefined> {
    const lease = await this.store.getByKey(vmKey(vm));
    if (lease === undefined) return undefined;
    // Past its hard deadline (freeze.maxTotalSeconds) a lease holds nothing: its deadline thaw has
    // been retried since the lease expired, and a VM that went away for good (destroyed, moved to
    // another host) would otherwise stay registered, and its thaw retried, for ever (h11 F1). Let go,
    // the VM leaves the registry and the next retry drops it from the lease (thaw.ts, VM_NOT_FOUND).
    if (lease.hardDeadline <= (await this.store.now())) return undefined;
    const expiresAt = iso(lease.expiresAt);
    const what = groupOfSession(lease.session) !== undefined ? `a freeze group's lease` : 'a freeze lease';
    return { holder: lease.owner, expiresAt, detail: `VM ${vm} is frozen under ${what} held by ${lease.owner} until ${expiresAt}` };
  }

  /**
   * The VM's freeze status and lease. Where the store has no lease of the VM (or does not answer)
   * but this process holds one it thaws by (its local timer: it froze the VM, and Redis lost its
   * data since, or is down), that lease is shown: `leaseStore: "lost"` (or "unavailable") says the
   * store does not back it (h10 L6: the view said "no lease" while the gateway still held one).
   */
  async status(vm: string, caller: Caller): Promise<{ status: string; lease: LeaseView | null; leaseStore: 'ok' | 'unavailable' | 'lost' }> {
    await this.registry.require(vm);
    const status = String(await this.agent.call(vm, 'guest-fsfreeze-status'));
    // the lease this process holds (its local timer) for the VM, if any
    const local = this.engine.localSessions().find((s) => heldVms(s).includes(vm));
    try {
      const lease = await this.store.getByKey(vmKey(vm));
      if (lease) return { status, lease: leaseView(lease, caller), leaseStore: 'ok' };
      // not lost if the store still knows it (a group that let this VM go since: the local copy is
      // older; a lease ended elsewhere; one superseded since the read above)
      if (local !== undefined && (await this.lostByStore(local))) return { status, lease: leaseView(local, caller), leaseStore: 'lost' };
      return { status, lease: null, leaseStore: 'ok' };
    } catch (e) {
      if (!isGatewayError(e) || e.code !== 'STORE_UNAVAILABLE') throw e;
      return { status, lease: local ? leaseView(local, caller) : null, leaseStore: 'unavailable' };
    }
  }

  /** The leases this process holds (and thaws by) that are not among `listed` (the store's) and that the store lost. */
  async heldOnlyHere(listed: ReadonlySet<string>): Promise<Lease[]> {
    const out: Lease[] = [];
    for (const l of this.engine.localSessions()) if (!listed.has(l.leaseId) && (await this.lostByStore(l))) out.push(l);
    return out;
  }

  /**
   * A lease held here that the store lost: its data is gone (Redis restarted empty, a failover to a
   * replica behind), not merely without this lease (a group that let a VM go since, a lease ended
   * through another node or gateway: this process's timer learns that when it fires).
   */
  private async lostByStore(l: Lease): Promise<boolean> {
    // 'lost' only when the store's epoch of the VM changed (it lost its data), as the thaw's fence
    // check tells it: a lease its holder thawed through another gateway leaves no record of its end
    // there, and this process's timer for it stays until its deadline (h13 F1)
    const key = l.keys[0];
    if (key === undefined) return false;
    const c = await this.store.check(key, l.leaseId, l.epoch);
    return c.state === 'lost';
  }

  private async forceThaw(vm: string, caller: Caller): Promise<ThawResponse> {
    if (!caller.admin) throw errors.forbidden('force=true needs the admin scope', { vm });
    let lease: Lease | undefined;
    try {
      lease = await this.store.getByKey(vmKey(vm));
    } catch (e) {
      if (!isGatewayError(e) || e.code !== 'STORE_UNAVAILABLE') throw e;
    }
    this.audit.record({ action: 'force-thaw', vm, by: caller.name, holder: lease?.owner, leaseId: lease?.leaseId, session: lease?.session, ...requestIdOf(caller) }, 'forced thaw');
    // A freeze still in flight under this lease (any process's) must not answer 201 once its guest
    // is thawed by this: it reads the mark right after its agent answers and rolls back instead
    // (session.ts). Marked before the thaw is sent, so a freeze that answers after it sees it.
    if (lease && freezeData(lease).state === 'freezing') {
      await this.store.updateData(lease.session, lease.leaseId, { ...lease.data, forcedBy: caller.name }).catch(() => false);
    }
    const o = await this.engine.thawVm(vm, lease, 'force');
    if (o.status === 'failed') throw o.error;
    if (o.status === 'skipped') throw errors.internal('a forced thaw was skipped');
    if (!o.shared) {
      this.logger.info({ vm, session: lease?.session, trigger: 'force', thawed: o.report.thawed, ...requestIdOf(caller) }, 'thawed');
      if (lease) this.engine.thawedOutside(vm, lease, 'force');
    }
    // a single-VM lease ends with its thaw; a group keeps its lease for its other members (its
    // deadline thaws them) and lets this one go, which may then be frozen again (unless the
    // group's freeze is in flight: it is rolled back whole, and its lease ends with that)
    if (lease && lease.session === vmKey(vm)) {
      this.engine.forget(lease.session, lease.leaseId);
      await this.engine.release(lease.session, lease.leaseId, 'forced');
    } else if (lease && freezeData(lease).state !== 'freezing') {
      await this.engine.releaseMembers(lease, [vm], 'forced');
    }
    // no lease: no freeze count to hold the thaw to, so never `consistent: true`; and not a partial
    // thaw either (the count it would be held to is nobody's): NO_LEASE, saying what was thawed
    if (!lease) {
      const detail =
        o.report.thawed > 0
          ? `no lease of the gateway held this VM: ${o.report.thawed} filesystems frozen outside it (another tool, a script on the agent socket) were thawed`
          : 'no lease of the gateway held this VM, and nothing was frozen';
      return { ...o.report, forced: true, consistent: false, reason: 'NO_LEASE' as const, detail };
    }
    return { ...o.report, forced: true };
  }

  /** The tombstone of `leaseId` if that lease was for `session` (a lease id of another VM does not count). */
  private async endedOn(session: string, leaseId: string): Promise<EndedLease | undefined> {
    const t = await this.store.ended(leaseId);
    return t && t.session === session ? t : undefined;
  }

  private async unverifiedThaw(vm: string, leaseId: string, caller: Caller): Promise<ThawResponse> {
    const o = await this.engine.thawVm(vm, undefined, 'caller');
    if (o.status === 'failed') throw o.error;
    if (o.status === 'skipped') throw errors.internal('an unverified thaw was skipped');
    this.logger.info({ vm, trigger: 'caller', thawed: o.report.thawed, leaseCheck: 'unverified', ...requestIdOf(caller) }, 'thawed');
    await this.engine.release(vmKey(vm), leaseId);
    return {
      vm,
      thawed: o.report.thawed,
      frozen: o.report.thawed,
      consistent: false,
      reason: 'LEASE_UNVERIFIED',
      detail: 'the lease store is unavailable: the lease and how many filesystems it froze could not be checked',
      leaseCheck: 'unverified',
    };
  }
}
