/**
 * Filesystem freeze of one VM as a lease (src/freeze): GET status + lease, POST freeze → 201 with
 * a lease, POST renew, DELETE thaw with the lease (or force + admin). The freeze is deliberately NOT
 * tied to the HTTP request's lifetime: a caller who disconnects mid-freeze still gets an auto-thaw
 * at the lease's expiry, while aborting the freeze midway would leave its outcome unknown.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Caller } from '../../freeze/types.js';
import { canAccessVm } from '../plugins/auth.js';
import { VmParams } from '../schemas/common.js';
import { FreezeBody, FreezeLease, FreezeStatus, IdempotencyHeaders, RenewBody, RenewResult, ThawQuery, ThawReport } from '../schemas/freeze.js';
import { operation } from './operation.js';

export function callerOf(request: FastifyRequest): Caller {
  const p = request.principal;
  return { name: p.name, admin: p.scopes.has('admin'), mayReach: (vm) => canAccessVm(p, vm), requestId: String(request.id) };
}

export default async function fsfreezeRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { freeze } = fastify.services;

  app.get(
    '/vms/:vm/fsfreeze',
    operation('fsfreeze', 'getFsfreezeStatus', {
      summary: "The guest's freeze status (asked now) and the lease it is frozen under",
      command: 'guest-fsfreeze-status',
      params: VmParams,
      ok: { 200: FreezeStatus },
    }),
    async (request) => freeze.status(request.params.vm, callerOf(request)),
  );

  app.post(
    '/vms/:vm/fsfreeze',
    operation('fsfreeze', 'freezeFilesystems', {
      summary: 'Freeze the guest filesystems under a lease that thaws them automatically',
      description:
        'Takes a lease on the VM (409 LEASE_CONFLICT naming holder and expiry if someone holds one; the agent is then not ' +
        'asked), then freezes. The guest is thawed at `expiresAt` unless the lease is renewed — by this gateway process, ' +
        'or, if it is gone, by any other one sharing the lease store. A freeze that fails, times out or loses its ' +
        'connection is followed by a thaw at once. 422 NOTHING_FROZEN: the agent froze no filesystem (mountpoints the ' +
        'guest does not have, or none it can freeze); the VM is left thawed and the lease has ended. With ' +
        '`Idempotency-Key`, a retry returns the same lease (200) without extending it. 503 STORE_UNAVAILABLE: the lease ' +
        'store cannot be reached; nothing was frozen.',
      command: ['guest-fsfreeze-freeze', 'guest-fsfreeze-freeze-list'],
      params: VmParams,
      headers: IdempotencyHeaders,
      body: FreezeBody,
      ok: { 200: FreezeLease, 201: FreezeLease },
      okDescriptions: {
        201: 'frozen under a new lease: thaw it with its leaseId before expiresAt, or the gateway thaws it then',
        200: 'a retry with the Idempotency-Key of an earlier request: that request\'s lease, as it stands (reused: true); nothing was frozen again',
      },
    }),
    async (request, reply) => {
      const { vm } = request.params;
      const r = await freeze.freeze(vm, request.body ?? {}, callerOf(request), request.headers['idempotency-key']);
      return reply.code(r.reused ? 200 : 201).header('location', `/v1/vms/${vm}/fsfreeze`).send(r);
    },
  );

  app.post(
    '/vms/:vm/fsfreeze/renew',
    operation('fsfreeze', 'renewFreezeLease', {
      summary: 'Extend a freeze lease (never past its hard deadline)',
      description:
        '409 LEASE_EXPIRED: the lease has already ended — `endedAt` (ISO time) and `endedBy` (`deadline`, `forced`, ' +
        '`shutdown`) tell when and why; the guest was (or is being) thawed then, so a snapshot taken after `endedAt` may ' +
        'not be consistent. Freeze again for a new lease. 409 LEASE_CONFLICT: a lease id this VM never had.',
      params: VmParams,
      body: RenewBody,
      ok: { 200: RenewResult },
      errors: [400, 401, 403, 404, 409, 503],
    }),
    async (request) => freeze.renew(request.params.vm, request.body.leaseId, request.body.ttlSeconds),
  );

  app.delete(
    '/vms/:vm/fsfreeze',
    operation('fsfreeze', 'thawFilesystems', {
      summary: 'Thaw the guest filesystems with the lease (or force, admin)',
      description:
        'Needs the lease id. A lease that has already ended → 409 LEASE_EXPIRED with `endedAt` (ISO time) and `endedBy` ' +
        '(`deadline`, `forced`, `shutdown`): the guest was thawed then, so a snapshot taken after `endedAt` may not be ' +
        'consistent. A lease id this VM never had (or that its holder already thawed) → 409 LEASE_CONFLICT. Either way ' +
        'nothing is sent to the agent. `force=true` (admin scope, audited) thaws whoever holds it. Works with the lease store ' +
        'down: the thaw is then sent without the lease check (`leaseCheck: unverified`). `consistent: false` means the ' +
        'guest did not stay frozen for the whole lease (e.g. Windows VSS gives up after ~10 s).',
      command: 'guest-fsfreeze-thaw',
      params: VmParams,
      querystring: ThawQuery,
      ok: { 200: ThawReport },
    }),
    async (request) => freeze.thaw(request.params.vm, request.query, callerOf(request)),
  );
}
