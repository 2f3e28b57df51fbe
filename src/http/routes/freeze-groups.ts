/**
 * Freeze groups: several VMs frozen together for one consistent multi-VM snapshot, all or nothing,
 * under one lease and one deadline (src/freeze/groups.ts).
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { GroupBody, GroupCreated, GroupParams, GroupRenewResult, GroupStatus, GroupThawReport, IdempotencyHeaders, RenewBody, ThawQuery } from '../schemas/freeze.js';
import { Type } from 'typebox';
import { FreezeEntry, visibleLeases } from './freezes.js';
import { callerOf } from './fsfreeze.js';
import { operation } from './operation.js';

const GroupEntry = Type.Object(
  {
    id: Type.String(),
    vms: FreezeEntry.properties.vms,
    owner: FreezeEntry.properties.owner,
    leaseId: FreezeEntry.properties.leaseId,
    state: FreezeEntry.properties.state,
    frozenAt: FreezeEntry.properties.frozenAt,
    expiresAt: Type.String({ format: 'date-time', description: 'the deadline: the gateway thaws every member then unless renewed' }),
    hardDeadline: Type.String({ format: 'date-time', description: 'renewals never go past this' }),
    expired: Type.Boolean({ description: 'past expiresAt, the thaw not confirmed yet' }),
  },
  { title: 'FreezeGroupEntry' },
);

export default async function freezeGroupRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { groups } = fastify.services.freeze;
  const { services } = fastify;

  app.get(
    '/freeze-groups',
    operation('fsfreeze', 'listFreezeGroups', {
      summary: 'The freeze groups in force (any gateway process), oldest first',
      description:
        'A group is listed when the caller may reach every VM of it (its VM globs). `leaseId` is shown to the group owner and ' +
        'to admin callers only. Nothing is asked of the agents: GET /v1/freeze-groups/{id} asks each member.',
      ok: { 200: Type.Object({ groups: Type.Array(GroupEntry) }, { title: 'FreezeGroupList' }) },
      errors: [401, 403, 503],
    }),
    async (request) => {
      const { entries } = await visibleLeases(services, callerOf(request));
      const list = entries.flatMap((e) =>
        e.group !== undefined && e.expiresAt !== undefined && e.hardDeadline !== undefined
          ? [{ id: e.group, vms: e.vms, owner: e.owner, ...(e.leaseId !== undefined ? { leaseId: e.leaseId } : {}), state: e.state, frozenAt: e.frozenAt, expiresAt: e.expiresAt, hardDeadline: e.hardDeadline, expired: e.expired === true }]
          : [],
      );
      return { groups: list.sort((a, b) => (a.frozenAt < b.frozenAt ? -1 : a.frozenAt > b.frozenAt ? 1 : 0)) };
    },
  );

  app.post(
    '/freeze-groups',
    operation('fsfreeze', 'createFreezeGroup', {
      summary: 'Freeze several VMs together under one lease (all or nothing)',
      description:
        'Every VM must be registered (404 naming the missing ones; nothing frozen). The lease covers all of them ' +
        '(409 LEASE_CONFLICT if any is held). They are frozen in parallel; if any fails, the ones already frozen are ' +
        'thawed and the problem body lists each VM (`vms`); a member that freezes no filesystem fails the group with 422 ' +
        'NOTHING_FROZEN. With `Idempotency-Key`, a retry returns the same group (200).',
      command: ['guest-fsfreeze-freeze', 'guest-fsfreeze-freeze-list', 'guest-fsfreeze-thaw'],
      headers: IdempotencyHeaders,
      body: GroupBody,
      ok: { 200: GroupCreated, 201: GroupCreated },
      okDescriptions: {
        201: 'every member frozen under one new lease: thaw the group with its leaseId before expiresAt, or the gateway thaws it then',
        200: 'a retry with the Idempotency-Key of an earlier request: that request\'s group and lease (reused: true); nothing was frozen again',
      },
    }),
    async (request, reply) => {
      const r = await groups.create(request.body, callerOf(request), request.headers['idempotency-key']);
      return reply.code(r.reused ? 200 : 201).header('location', `/v1/freeze-groups/${r.id}`).send(r);
    },
  );

  app.get(
    '/freeze-groups/:id',
    operation('fsfreeze', 'getFreezeGroup', {
      summary: "A freeze group's lease and each member's freeze status (asked now)",
      command: 'guest-fsfreeze-status',
      params: GroupParams,
      ok: { 200: GroupStatus },
      errors: [400, 401, 403, 404, 503],
    }),
    async (request) => groups.get(request.params.id, callerOf(request)),
  );

  app.post(
    '/freeze-groups/:id/renew',
    operation('fsfreeze', 'renewFreezeGroup', {
      summary: "Extend a freeze group's lease (never past its hard deadline)",
      description:
        "409 LEASE_EXPIRED: the group's lease has already ended — `endedAt` and `endedBy` (`deadline`, `forced`, " +
        '`shutdown`) tell when and why; a snapshot taken after `endedAt` may not be consistent. 404: no such group.',
      params: GroupParams,
      body: RenewBody,
      ok: { 200: GroupRenewResult },
      errors: [400, 401, 403, 404, 409, 503],
    }),
    async (request) => groups.renew(request.params.id, request.body.leaseId, request.body.ttlSeconds, callerOf(request)),
  );

  app.delete(
    '/freeze-groups/:id',
    operation('fsfreeze', 'thawFreezeGroup', {
      summary: 'Thaw every member of a freeze group (with its lease, or force with admin)',
      description:
        "409 LEASE_EXPIRED: the group's lease has already ended (`endedAt`, `endedBy`: `deadline`, `forced`, " +
        '`shutdown`), nothing is sent; a snapshot taken after `endedAt` may not be consistent. 409 LEASE_CONFLICT: ' +
        'another lease id. 404: no such group.',
      command: 'guest-fsfreeze-thaw',
      params: GroupParams,
      querystring: ThawQuery,
      ok: { 200: GroupThawReport },
    }),
    async (request) => groups.delete(request.params.id, request.query, callerOf(request)),
  );
}
