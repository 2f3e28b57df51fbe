/**
 * GET /v1/freezes: every freeze in force, one row per lease (a VM, or a freeze group with its VMs),
 * read from the lease store, so a freeze made by another gateway process is listed too; and the VMs
 * found frozen with no lease of ours (frozen by `qm`, a script, a tool that died), owner "external".
 * GET /v1/freeze-groups (freeze-groups.ts) lists the groups alone.
 *
 * What a caller sees follows its VM globs: a VM freeze when it may reach the VM, a group when it
 * may reach EVERY VM of the group (as GET /v1/freeze-groups/{id} requires). Of a group reaching
 * outside the caller's globs, only the VMs it may see are listed (`partOfGroup: true`), without the
 * group's id or other VMs: a VM of its own frozen by such a group is not hidden from it, and no VM
 * it may not see is named.
 * `leaseId` is shown to the lease's owner and to admin callers only: whoever has it can thaw.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type Static } from 'typebox';
import { freezeData, heldVms, type Caller } from '../../freeze/types.js';
import { leaseView } from '../../freeze/view.js';
import { groupOfSession, vmOfKey, type Lease } from '../../store/types.js';
import type { HttpServices } from '../services.js';
import { callerOf } from './fsfreeze.js';
import { operation } from './operation.js';

export const FreezeEntry = Type.Object(
  {
    vm: Type.Optional(Type.String({ description: 'the VM, for a single-VM freeze' })),
    group: Type.Optional(Type.String({ description: 'the freeze group id, for a group freeze' })),
    vms: Type.Array(Type.String(), { description: 'the VMs the freeze holds' }),
    owner: Type.String({ description: 'the token (principal) name that froze, or "external": frozen outside the gateway' }),
    leaseId: Type.Optional(Type.String({ description: 'shown to the lease owner and to admin callers only' })),
    state: Type.Union([Type.Literal('freezing'), Type.Literal('frozen'), Type.Literal('unknown')], {
      description: 'freezing: the freeze command is under way; unknown: its outcome was lost (held until the deadline or the owner thaws)',
    }),
    frozenAt: Type.String({ format: 'date-time', description: 'when the lease was taken; for an external freeze, when the gateway first saw the VM frozen' }),
    expiresAt: Type.Optional(Type.String({ format: 'date-time', description: 'the deadline: the gateway thaws then unless renewed (absent for external freezes)' })),
    hardDeadline: Type.Optional(Type.String({ format: 'date-time', description: 'renewals never go past this' })),
    expired: Type.Optional(Type.Boolean({ description: 'past expiresAt, the thaw not confirmed yet' })),
    heldHereOnly: Type.Optional(
      Type.Boolean({ description: 'the lease store has no record of this lease (Redis lost its data): the gateway answering holds it and thaws by it at its deadline' }),
    ),
    partOfGroup: Type.Optional(
      Type.Boolean({ description: 'the VMs the caller may see of a freeze group that also holds VMs it may not: listed without the group id or the others' }),
    ),
  },
  { title: 'FreezeEntry' },
);
type FreezeEntryT = Static<typeof FreezeEntry>;

/** A live or expired-unthawed freeze lease of the store as the caller may see it; undefined when it may not. */
export function visibleLease(l: Lease, caller: Caller, now: number): FreezeEntryT | undefined {
  const d = freezeData(l);
  const group = groupOfSession(l.session);
  const vm = vmOfKey(l.session);
  if (group === undefined && vm === undefined) return undefined; // a session of something else than the freeze service
  const reach = caller.mayReach;
  const partial = reach !== undefined && !d.vms.every((x) => reach(x));
  if (partial && group === undefined) return undefined;
  // the VMs the lease still holds (a group lets thawed members go); of a group partly out of reach, those the caller may see
  const vms = group === undefined ? d.vms : partial ? heldVms(l).filter((x) => reach?.(x)) : heldVms(l);
  if (partial && vms.length === 0) return undefined;
  const v = leaseView(l, caller, now);
  return {
    ...(vm !== undefined ? { vm } : {}),
    ...(group !== undefined && !partial ? { group } : {}),
    ...(partial ? { partOfGroup: true } : {}),
    vms,
    owner: v.owner,
    ...(v.leaseId !== undefined ? { leaseId: v.leaseId } : {}),
    state: d.state,
    frozenAt: v.createdAt,
    expiresAt: v.expiresAt,
    hardDeadline: v.hardDeadline,
    expired: v.expired,
  };
}

/** The store's freeze leases the caller may see, in store order. */
export async function visibleLeases(services: Pick<HttpServices, 'store'>, caller: Caller): Promise<{ entries: FreezeEntryT[]; leased: Set<string>; leaseIds: Set<string>; now: number }> {
  const [sessions, now] = await Promise.all([services.store.listSessions(), services.store.now()]);
  const entries: FreezeEntryT[] = [];
  const leased = new Set<string>();
  const leaseIds = new Set<string>();
  for (const l of sessions) {
    leaseIds.add(l.leaseId);
    for (const v of heldVms(l)) leased.add(v);
    const e = visibleLease(l, caller, now);
    if (e) entries.push(e);
  }
  return { entries, leased, leaseIds, now };
}

export async function listFreezes(services: HttpServices, caller: Caller): Promise<FreezeEntryT[]> {
  const { entries: out, leased, leaseIds, now } = await visibleLeases(services, caller);
  // the leases this gateway holds that the store lost (h10 L6): it still thaws by them
  for (const l of await services.freeze.heldOnlyHere(leaseIds)) {
    for (const v of heldVms(l)) leased.add(v);
    const e = visibleLease(l, caller, now);
    if (e) out.push({ ...e, heldHereOnly: true });
  }
  for (const x of services.agent.externalFreezes()) {
    if (leased.has(x.vm) || (caller.mayReach && !caller.mayReach(x.vm))) continue;
    out.push({ vm: x.vm, vms: [x.vm], owner: 'external', state: 'frozen', frozenAt: x.since });
  }
  return out.sort((a, b) => (a.frozenAt < b.frozenAt ? -1 : a.frozenAt > b.frozenAt ? 1 : 0));
}

export default async function freezeListRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { services } = fastify;

  app.get(
    '/freezes',
    operation('fsfreeze', 'listFreezes', {
      summary: 'Every freeze in force: VM and group leases (any gateway process) and VMs frozen outside the gateway',
      description:
        'Oldest first. A group is listed when the caller may reach every VM of it; of one that also holds VMs the caller may not ' +
        'reach, the VMs it may are listed on their own (`partOfGroup`, no group id). `leaseId` is shown to the lease owner ' +
        'and to admin callers only. A VM frozen with no lease of the gateway (qm, a script on the socket, a backup tool ' +
        'that died) is listed with `owner: "external"` and no deadline. Nothing is asked of the agents.',
      ok: { 200: Type.Object({ freezes: Type.Array(FreezeEntry) }, { title: 'FreezeList' }) },
      errors: [401, 403, 503],
    }),
    async (request) => ({ freezes: await listFreezes(services, callerOf(request)) }),
  );
}
