/**
 * GET /v1/nodes (issue 17, cluster mode): the gateways of the cluster as this node last read them
 * from Redis (refreshed every cluster.heartbeatIntervalMs): alive ones and those that stopped
 * heartbeating within the last 24 h. The route exists only in cluster mode, as API.md lists it:
 * a single gateway answers it as an unknown route (404 NOT_FOUND), saying why.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { ClusterService, NodeInfo } from '../../cluster/directory.js';
import { errors } from '../../errors.js';
import { named } from '../schemas/component.js';
import { operation } from './operation.js';

export const ClusterNode = named(
  'ClusterNode',
  Type.Object({
    id: Type.String({ description: 'the node id (cluster.id, default the host name)' }),
    url: Type.String({ description: 'where the node is reached (its cluster.advertiseUrl)' }),
    lastSeen: Type.String({ format: 'date-time', description: 'its last heartbeat' }),
    vmCount: Type.Integer({ format: 'int32', minimum: 0, description: 'the VMs it serves' }),
    version: Type.String({ description: 'its gateway version' }),
    alive: Type.Boolean({ description: 'it heartbeated within cluster.heartbeatTtlMs; false: gone, its VMs answer 503 NODE_UNAVAILABLE' }),
    self: Type.Boolean({ description: 'the node that answered' }),
    sameSecret: Type.Optional(
      Type.Boolean({
        description:
          'false: it signs with another cluster secret than the node that answered (their cluster.secretFile differ), so each refuses the other\'s requests (503 NODE_UNAVAILABLE); absent for the node that answered and for a node that publishes no tag of its secret',
      }),
    ),
  }),
  'One gateway of the cluster',
);

export const NodeList = named(
  'NodeList',
  Type.Object({
    items: Type.Array(ClusterNode, { description: 'every node, in id order' }),
    stale: Type.Boolean({ description: 'true while this node cannot read Redis: the list is the last one it read' }),
  }),
  'The gateways of the cluster (cluster mode)',
);

/**
 * Per node, the VMs a caller restricted to some VMs may see (a tenant's token learns nothing of the
 * nodes and VMs it may not see): this node's from its registry, the others' from the directory.
 */
async function visibleCounts(cluster: ClusterService, registry: { list(): Promise<Array<{ name: string }>> }, visible: (vm: string) => boolean): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  const add = (node: string) => counts.set(node, (counts.get(node) ?? 0) + 1);
  for (const rec of await registry.list()) if (visible(rec.name) && cluster.locate(rec.name).kind === 'local') add(cluster.selfId);
  const remote = cluster.remote;
  if (remote !== undefined) {
    for (const name of remote.after()) {
      if (!visible(name)) continue;
      const vm = remote.get(name);
      if (vm !== undefined) add(vm.node);
    }
  }
  return counts;
}

export default async function nodeRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { services } = fastify;

  app.get(
    '/nodes',
    operation('vms', 'listNodes', {
      summary: 'The gateways of the cluster: id, URL, last heartbeat, VM count, version, alive (cluster mode)',
      description:
        'Every node of the cluster as this node last read Redis (every `cluster.heartbeatIntervalMs`): alive ones, and ' +
        'those that stopped heartbeating (`alive: false`) within the last 24 hours. A token restricted to some VMs sees ' +
        'the node that answers and the nodes serving a VM it may see, `vmCount` counting those VMs only. Without cluster ' +
        'mode the route does not exist: 404 NOT_FOUND.',
      ok: { 200: NodeList },
      errors: [401, 403, 404],
    }),
    async (request) => {
      const cluster = services.cluster;
      if (!cluster) throw errors.notFound('no route GET /v1/nodes: cluster mode is off (cluster.enabled)');
      const counts = request.principal.vms === undefined ? undefined : await visibleCounts(cluster, services.registry, request.principal.vms);
      const nodes = counts === undefined ? cluster.nodes() : cluster.nodes().filter((n) => n.id === cluster.selfId || counts.has(n.id));
      const items = nodes.map((n) => ({
        id: n.id,
        url: n.url,
        lastSeen: new Date(n.lastSeen).toISOString(),
        vmCount: counts === undefined ? n.vmCount : (counts.get(n.id) ?? 0),
        version: n.version,
        alive: n.alive,
        self: n.id === cluster.selfId,
        ...sameSecretOf(cluster, n),
      }));
      const stale = cluster.staleSince !== undefined;
      return { items, stale };
    },
  );
}

function sameSecretOf(cluster: ClusterService, n: NodeInfo): { sameSecret?: boolean } {
  const same = cluster.sameSecret?.(n);
  return same === undefined ? {} : { sameSecret: same };
}
