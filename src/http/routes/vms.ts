/**
 * The VM registry and the agent's own state: list/register/inspect/delete VMs, ping, guest-info
 * and a forced resync. This file is also the pattern every route group follows:
 *   - `export default async function (app)`, registered under /v1 by app.ts;
 *   - route options from operation(tag, operationId, {...}) (operation.ts): TypeBox schemas, summary,
 *     `x-qga-command`, documented problems;
 *   - the agent reached only through `app.services.agent.call(vm, command, args, { signal })`;
 *   - failures thrown as GatewayError; error-handler.ts renders them.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type Static } from 'typebox';
import { EndpointSchema, LabelsSchema, VM_NAME_PATTERN } from '../../config/schema.js';
import { signalOptions } from '../abort.js';
import { canAccessVm, type Principal } from '../plugins/auth.js';
import { VmParams } from '../schemas/common.js';
import { GuestAgentInfo } from '../schemas/qga.js';
import type { RegistrationView, VmRecord } from '../../registry/registry.js';
import type { HttpServices } from '../services.js';
import { operation } from './operation.js';
import { clusterFields, clusterProperties, fleetFields, fleetProperties, freezeIndex, remoteVmObject, type FreezeIndex, type RemoteVmObject } from './vm-fleet.js';
import type { ClusterService, NodeInfo, RemoteVm } from '../../cluster/directory.js';
import { errors } from '../../errors.js';
import { waitRoute } from './vm-wait.js';

const ChannelInfo = Type.Object(
  {
    state: Type.Union(
      [
        Type.Literal('idle'),
        Type.Literal('connecting'),
        Type.Literal('syncing'),
        Type.Literal('ready'),
        Type.Literal('backoff'),
        Type.Literal('closing'),
        Type.Literal('closed'),
      ],
      { description: 'idle: no socket open (released or never used); ready: in sync' },
    ),
    queued: Type.Integer({ format: 'int32', description: 'commands waiting' }),
    inFlight: Type.Integer({ format: 'int32', description: 'commands sent and not answered (0 or 1)' }),
  },
  { title: 'ChannelInfo' },
);

/** A VM as every listing and registration shows it (GET /v1/vms items: vm-list.ts) */
export const VmSummary = Type.Object(
  {
    name: Type.String(),
    endpoint: Type.Optional({ ...EndpointSchema, description: 'the agent socket (a unix socket by its real path); shown to admin callers only' }),
    source: Type.Union([Type.Literal('config'), Type.Literal('directory'), Type.Literal('api')]),
    labels: Type.Optional(LabelsSchema),
    channel: ChannelInfo,
    ...fleetProperties,
    ...clusterProperties,
  },
  { title: 'VmSummary' },
);

const VmDetail = Type.Object(
  {
    ...VmSummary.properties,
  },
  { title: 'VmDetail' },
);

const RegisterBody = Type.Object(
  {
    name: Type.String({ pattern: VM_NAME_PATTERN }),
    endpoint: EndpointSchema,
    labels: Type.Optional(LabelsSchema),
    idleReleaseMs: Type.Optional(
      Type.Integer({ format: 'int32', minimum: 0, maximum: 86_400_000, description: "this VM's idle release of its agent socket in ms (default agent.idleReleaseMs); 0 = keep it" }),
    ),
  },
  { additionalProperties: false },
);

/** What the caller may do with the registry: use the VMs its globs match; see endpoints if admin. */
function viewOf(principal: Principal): RegistrationView & { endpoints: boolean } {
  return { mayUse: (name) => canAccessVm(principal, name), endpoints: principal.scopes.has('admin') };
}

/** One VM object; `freezes` (freezeIndex in vm-fleet.ts, read once per listing) names the freeze owners. */
export function summarize(services: HttpServices, rec: VmRecord, view: { endpoints: boolean }, freezes: FreezeIndex = new Map()): Static<typeof VmSummary> {
  // peek, not channelState: a listing never makes or replaces a channel (nor resolves the endpoint,
  // which in cluster mode refuses a shared VM this node does not own)
  const ch = services.pool.peek(rec.name)?.stats();
  return {
    name: rec.name,
    ...(view.endpoints ? { endpoint: rec.endpoint } : {}),
    source: rec.source,
    ...(rec.labels ? { labels: rec.labels } : {}),
    channel: { state: ch?.state ?? 'idle', queued: ch?.queued ?? 0, inFlight: ch?.inFlight ?? 0 },
    ...fleetFields(services, rec.name, freezes),
    ...clusterFields(services, rec.name),
  };
}

/**
 * The VM object of a VM whose node is gone, from what that node last published (the directory);
 * 503 NODE_UNAVAILABLE when the directory holds no entry of it (a shared VM its gone owner never published).
 */
async function goneVm(services: HttpServices, cluster: ClusterService, vm: string, node: NodeInfo, view: { endpoints: boolean }): Promise<RemoteVmObject> {
  const entry = cluster.remote?.get(vm);
  if (!entry) throw errors.nodeUnavailable(vm, node.id, `node ${node.id}, which serves VM ${vm}, stopped heartbeating (last seen ${new Date(node.lastSeen).toISOString()})`);
  // the node locate() names (a shared VM: its gone owner), shown gone whatever else publishes the name
  const gone: RemoteVm = { name: entry.name, node: node.id, alive: false, summary: entry.summary };
  return remoteVmObject(cluster, gone, view, await freezeIndex(services, [vm]));
}

export default async function vmRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { services } = fastify;
  waitRoute(fastify);

  // GET /vms (paged, filtered) is in vm-list.ts

  app.post(
    '/vms',
    operation('vms', 'registerVm', {
      scope: 'admin',
      summary: 'Register a VM and its agent endpoint (admin)',
      description:
        "An endpoint belongs to one VM: a unix socket (compared by its real path) or host:port another VM holds is refused with 409 ENDPOINT_IN_USE, or with 403 REGISTRATION_DENIED when the caller may not see that VM. A unix socket must resolve, symlinks followed, inside registry.allowedSocketRoots; a TCP endpoint must be listed in registry.allowedTcpEndpoints. Every refusal that involves the endpoint is the same 403 REGISTRATION_DENIED, which says nothing about whether the path exists or the port listens. A token limited by VM globs registers only names inside them. The socket is stored by its real path.",
      body: RegisterBody,
      ok: { 201: VmSummary },
      errors: [400, 401, 403, 409, 503],
    }),
    async (request, reply) => {
      const view = viewOf(request.principal);
      const rec = await services.registry.register(request.body, view);
      services.agent.registered(rec.name);
      request.log.info({ vm: rec.name, by: request.principal.name }, 'VM registered');
      return reply.code(201).header('location', `/v1/vms/${rec.name}`).send(summarize(services, rec, view));
    },
  );

  app.get(
    '/vms/:vm',
    {
      ...operation('vms', 'getVm', {
        summary: 'A VM: channel state, agent state (up, down, unknown; version, capabilities), frozen and by whom (and its endpoint, for admin callers)',
        description:
          "In cluster mode a VM another node serves is forwarded there; a VM whose node is gone (stopped heartbeating) is answered here from the directory, as the cluster-wide list shows it: its `node`, `agent.state` `unknown` since that node was last seen, and the labels and frozen state that node last published. Every other route of such a VM answers 503 NODE_UNAVAILABLE.",
        params: VmParams,
        ok: { 200: VmDetail },
        errors: [400, 401, 403, 404, 503],
      }),
      // a gone node's VM: answered here from the directory (plugins/forward.ts), not 503
      config: { answersGone: true },
    },
    async (request) => {
      const cluster = services.cluster;
      const where = cluster?.locate(request.params.vm);
      if (cluster && where?.kind === 'gone') return goneVm(services, cluster, request.params.vm, where.node, viewOf(request.principal));
      const rec = await services.registry.require(request.params.vm);
      return summarize(services, rec, viewOf(request.principal), await freezeIndex(services, [rec.name]));
    },
  );

  app.delete(
    '/vms/:vm',
    operation('vms', 'deleteVm', {
      scope: 'admin',
      summary: 'Deregister an API-registered VM (admin); its channel is closed',
      description:
        'Refused with 409 while the VM is frozen: LEASE_CONFLICT under a freeze lease (single or group; thaw it first, or wait for its deadline thaw), ' +
        "VM_FROZEN when the gateway knows the guest is frozen outside its leases: its thaw (by lease, deadline or the external-freeze thaw) needs the VM's registration.",
      params: VmParams,
      ok: { 204: Type.Null({ description: 'deleted' }) },
      errors: [400, 401, 403, 404, 503],
      codes: ['LEASE_CONFLICT', 'VM_FROZEN'],
    }),
    async (request, reply) => {
      const vm = request.params.vm;
      const rec = await services.registry.require(vm);
      if (rec.source === 'api') {
        const blocker = await services.freeze.removalBlocker(vm);
        if (blocker) {
          throw errors.leaseConflict(`${blocker.detail}: thaw it first (DELETE /v1/vms/${vm}/fsfreeze with the lease, or the group's), or wait for its deadline thaw; deleting it now would leave the guest frozen with nothing to thaw it`, {
            vm,
            extra: { holder: blocker.holder, expiresAt: blocker.expiresAt },
          });
        }
        if (services.agent.isKnownFrozen(vm)) throw errors.frozenNoDelete(vm);
      }
      await services.agent.deregister(vm, viewOf(request.principal));
      request.log.info({ vm: request.params.vm, by: request.principal.name }, 'VM deregistered');
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/vms/:vm/ping',
    operation('agent', 'pingAgent', {
      summary: 'Ping the guest agent',
      command: 'guest-ping',
      params: VmParams,
      ok: { 200: Type.Object({ ok: Type.Literal(true), rttMs: Type.Number({ description: 'round trip including queue wait' }) }) },
    }),
    async (request) => {
      const t0 = performance.now();
      await services.agent.call(request.params.vm, 'guest-ping', undefined, signalOptions(request));
      return { ok: true as const, rttMs: Math.round((performance.now() - t0) * 1000) / 1000 };
    },
  );

  app.get(
    '/vms/:vm/agent',
    operation('agent', 'getAgentInfo', {
      summary: 'Agent version and the commands it offers (guest-info)',
      command: 'guest-info',
      params: VmParams,
      ok: { 200: GuestAgentInfo },
    }),
    async (request) => {
      const result = await services.agent.call(request.params.vm, 'guest-info', undefined, signalOptions(request));
      return result as Static<typeof GuestAgentInfo>;
    },
  );

  app.post(
    '/vms/:vm/agent/sync',
    operation('agent', 'syncAgent', {
      summary: 'Force a resynchronisation (0xFF + guest-sync-delimited) and report its round trip',
      command: ['guest-sync-delimited', 'guest-sync'],
      params: VmParams,
      ok: { 200: Type.Object({ synced: Type.Literal(true), rttMs: Type.Number() }) },
    }),
    async (request) => {
      const { rttMs } = await services.agent.sync(request.params.vm, signalOptions(request));
      return { synced: true as const, rttMs: Math.round(rttMs * 1000) / 1000 };
    },
  );
}
