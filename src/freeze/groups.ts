/**
 * Freeze groups: several VMs frozen together for one consistent multi-VM snapshot, under ONE lease
 * and ONE deadline (the store session `group:<id>` holds every member's VM key). All or nothing:
 * if any member fails to freeze (a member that freezes 0 filesystems too: NOTHING_FROZEN), the
 * members already frozen are thawed and the answer reports each VM. DELETE thaws every member; the
 * group's deadline thaws them if nobody does. A renew or DELETE with the lease of a group that has
 * ended by its deadline or a forced thaw answers 409 LEASE_EXPIRED (when and why).
 */
import { randomUUID } from 'node:crypto';
import type { FreezeLogger as Logger } from './types.js';
import { GatewayError, isGatewayError, errors } from '../errors.js';
import { groupKey, groupOfSession, type Lease, type LeaseStore } from '../store/types.js';
import type { SessionFreezer } from './session.js';
import type { ThawEngine } from './thaw.js';
import { leaseView, type LeaseView } from './view.js';
import { freezeData, heldVms, iso, leaseExpiredError, requestIdOf, unregistered, withExtra, type Caller, type FreezeAgent, type FreezeRegistry, type VmThawReport } from './types.js';
import type { AuditLog } from '../util/audit.js';

/** the default of freeze.maxGroupVms */
export const MAX_GROUP_VMS = 64;

export interface GroupResponse {
  id: string;
  leaseId: string;
  fence: number;
  createdAt: string;
  expiresAt: string;
  hardDeadline: string;
  vms: Array<{ vm: string; frozen: number }>;
  reused: boolean;
}

export interface GroupThawResponse {
  id: string;
  consistent: boolean;
  vms: Array<VmThawReport & { skipped?: boolean }>;
  forced?: boolean;
}

export class FreezeGroups {
  constructor(
    private readonly store: LeaseStore,
    private readonly agent: FreezeAgent,
    private readonly registry: FreezeRegistry,
    private readonly engine: ThawEngine,
    private readonly freezer: SessionFreezer,
    private readonly logger: Logger,
    private readonly audit: AuditLog,
    private readonly maxVms = MAX_GROUP_VMS,
  ) {}

  async create(body: { vms: string[]; ttlSeconds?: number; mountpoints?: string[] }, caller: Caller, idempotencyKey?: string): Promise<GroupResponse> {
    const vms = body.vms;
    if (vms.length === 0 || vms.length > this.maxVms) {
      throw errors.validation(`a freeze group has 1 to ${this.maxVms} VMs (freeze.maxGroupVms)`);
    }
    if (new Set(vms).size !== vms.length) throw errors.validation('a VM is listed twice in the group');
    checkReach(vms, caller, true);
    const missing = await unregistered(this.registry, vms);
    if (missing.length) {
      throw errors.vmsNotFound(missing);
    }
    const id = randomUUID();
    const r = await this.freezer.freeze({
      session: groupKey(id),
      kind: 'group',
      vms,
      ...(body.mountpoints ? { mountpoints: body.mountpoints } : {}),
      ...(body.ttlSeconds !== undefined ? { ttlSeconds: body.ttlSeconds } : {}),
      ...(idempotencyKey ? { idempotencyKey } : {}),
      caller,
    });
    const l = r.lease;
    return {
      // a reused lease (same Idempotency-Key) is the first request's group, not the id drawn above
      id: groupOfSession(l.session) ?? l.session,
      leaseId: l.leaseId,
      fence: l.fence,
      createdAt: iso(l.createdAt),
      expiresAt: iso(l.expiresAt),
      hardDeadline: iso(l.hardDeadline),
      vms: freezeData(l).vms.map((vm) => ({ vm, frozen: r.frozen[vm] ?? 0 })),
      reused: r.reused,
    };
  }

  async get(id: string, caller: Caller): Promise<{ id: string; lease: LeaseView; vms: Array<{ vm: string; status: string }> }> {
    const l = await this.require(id);
    checkReach(freezeData(l).vms, caller);
    const held = new Set(heldVms(l));
    const vms = await Promise.all(
      freezeData(l).vms.map(async (vm) => {
        // let go by the group: another lease may hold it now; its status is none of the group's
        if (!held.has(vm)) return { vm, status: 'released' };
        try {
          return { vm, status: String(await this.agent.call(vm, 'guest-fsfreeze-status')) };
        } catch (e) {
          return { vm, status: 'unknown', ...(isGatewayError(e) ? { error: { code: e.code, detail: e.message } } : {}) };
        }
      }),
    );
    return { id, lease: leaseView(l, caller), vms };
  }

  async renew(id: string, leaseId: string, ttlSeconds: number | undefined, caller: Caller): Promise<{ id: string; leaseId: string; fence: number; expiresAt: string; hardDeadline: string; capped: boolean }> {
    const ttlMs = this.freezer.ttlMs(ttlSeconds);
    const current = await this.store.getSession(groupKey(id));
    if (!current) throw (await this.ended(id, leaseId, 'renew')) ?? notFound(id);
    checkReach(freezeData(current).vms, caller);
    const r = await this.store.renew(groupKey(id), leaseId, ttlMs);
    if (!r.ok) {
      if (r.reason === 'expired' && r.lease) throw leaseExpiredError({ leaseId, endedAt: r.lease.expiresAt, endedBy: 'deadline' }, 'renew', { group: id });
      if (r.reason === 'not-found') throw (await this.ended(id, leaseId, 'renew')) ?? notFound(id);
      throw errors.leaseConflict(`lease ${leaseId} is not the lease of group ${id}`, { extra: { reason: r.reason } });
    }
    this.engine.arm(r.lease);
    return { id, leaseId, fence: r.lease.fence, expiresAt: iso(r.lease.expiresAt), hardDeadline: iso(r.lease.hardDeadline), capped: r.capped };
  }

  async delete(id: string, q: { leaseId?: string; force?: boolean }, caller: Caller): Promise<GroupThawResponse> {
    if (q.force && !caller.admin) throw errors.forbidden('force=true needs the admin scope');
    if (!q.force && !q.leaseId) throw errors.validation('leaseId is required (or force=true, which needs the admin scope)');
    let lease: Lease | undefined;
    try {
      lease = await this.store.getSession(groupKey(id));
    } catch (e) {
      if (!isGatewayError(e) || e.code !== 'STORE_UNAVAILABLE') throw e;
      // the store is down: this process may still know the group (it froze or renewed it)
      lease = this.engine.localLease(groupKey(id));
      if (!lease) throw e;
    }
    if (!lease) {
      const gone = q.leaseId ? await this.ended(id, q.leaseId, 'thaw') : undefined;
      if (gone) throw gone;
      // The store has no record and no tombstone: it lost its data (Redis restarted empty, a
      // failover to a replica behind), while this process, which took or renewed the group, still
      // holds its lease and would thaw it at its deadline. The holder's thaw (or a forced one) goes
      // through now with that lease, as a single VM's does (h10 F5: it was 404 "it has ended:
      // thawed" while its guests stayed frozen until the deadline).
      const local = this.engine.localLease(groupKey(id));
      if (!local || (!q.force && local.leaseId !== q.leaseId)) throw notFound(id);
      this.logger.warn({ group: id, leaseId: local.leaseId }, 'the lease store has no record of a group this process holds (its data was lost?): thawing with the local lease');
      lease = local;
    }
    checkReach(freezeData(lease).vms, caller);
    if (!q.force && lease.leaseId !== q.leaseId) {
      throw errors.leaseConflict(`lease ${q.leaseId} is not the lease of group ${id}`, { extra: { holder: lease.owner, expiresAt: iso(lease.expiresAt) } });
    }
    if (q.force) {
      this.audit.record({ action: 'force-thaw-group', group: id, by: caller.name, holder: lease.owner, leaseId: lease.leaseId, ...requestIdOf(caller) }, 'forced thaw of a freeze group');
    }
    const trigger = q.force ? 'force' : 'caller';
    const res = await this.engine.thawSession(lease, trigger, undefined, trigger, requestIdOf(caller));
    if (!q.force && res.outcomes.every((o) => o.status === 'skipped')) {
      // the group ended between the read above and the thaw (its deadline, a forced thaw)
      const gone = await this.ended(id, lease.leaseId, 'thaw').catch(() => undefined);
      if (gone) throw gone;
    }
    const frozen = freezeData(lease).frozen ?? {};
    const vms = res.outcomes.map((o) =>
      o.status === 'thawed'
        ? o.report
        : o.status === 'skipped'
          ? { vm: o.vm, thawed: 0, frozen: frozen[o.vm] ?? 0, consistent: false, skipped: true, reason: 'NOT_THAWED' as const, detail: `not thawed by this request: the VM is ${o.why === 'superseded' ? 'held by another lease now' : 'no longer under this lease'}` }
          : { vm: o.vm, thawed: 0, frozen: frozen[o.vm] ?? 0, consistent: false, reason: 'THAW_FAILED' as const, detail: `${o.error.code}: ${o.error.message}` },
    );
    const failed = res.outcomes.find((o) => o.status === 'failed');
    if (failed && failed.status === 'failed') {
      // the lease stays, so the retry and the deadline keep trying; say which VMs are still frozen
      throw withExtra(failed.error, { group: id, vms });
    }
    return { id, consistent: vms.every((v) => v.consistent), vms, ...(q.force ? { forced: true } : {}) };
  }

  /** LEASE_EXPIRED if `leaseId` was this group's lease and ended with a reason (its tombstone). */
  private async ended(id: string, leaseId: string, what: 'thaw' | 'renew'): Promise<GatewayError | undefined> {
    const t = await this.store.ended(leaseId);
    return t && t.session === groupKey(id) ? leaseExpiredError(t, what, { group: id }) : undefined;
  }

  private async require(id: string): Promise<Lease> {
    const l = await this.store.getSession(groupKey(id));
    if (!l) throw notFound(id);
    return l;
  }
}

/**
 * The caller may reach every VM: when it named them (a new group) the refusal names those it may
 * not reach; for a group it names by id only (read, renew, thaw), it does not: they are VMs this
 * caller may not see (h10 L5).
 */
function checkReach(vms: string[], caller: Caller, named = false): void {
  const denied = caller.mayReach ? vms.filter((vm) => !caller.mayReach?.(vm)) : [];
  if (denied.length === 0) return;
  if (named) throw errors.forbidden(`${caller.name} may not reach ${denied.join(', ')}`, { extra: { denied } });
  throw errors.forbidden(`freeze group holds ${denied.length === 1 ? 'a VM' : `${denied.length} VMs`} ${caller.name} may not reach`);
}

function notFound(id: string): GatewayError {
  return errors.notFound(
    `freeze group ${id} does not exist: it has ended (thawed by its deadline or a DELETE), or the lease store lost it (Redis restarted without its data) ` +
      'and this node did not take it; the node that did still thaws it by its deadline, and its holder\'s DELETE through that node thaws it now',
  );
}
