/**
 * The fleet-view fields of a VM object (GET /v1/vms items, GET /v1/vms/{vm}): `agent` (the
 * agent's state, from AgentService.fleetState), `frozen` and `freeze` (the lease that froze it
 * through the gateway, or `owner: "external"` for a freeze nobody here owns) and `capabilities`.
 * Nothing here talks to an agent: a listing of 10,000 VMs costs one lease-store read.
 */
import { Type, type Static } from 'typebox';
import type { ClusterService, RemoteVm } from '../../cluster/directory.js';
import type { ChannelStateName } from '../../cluster/summary.js';
import type { Endpoint } from '../../qga/types.js';
import type { VmSource } from '../../registry/types.js';
import { freezeData } from '../../freeze/types.js';
import { groupOfSession, vmKey, vmOfKey, type Lease } from '../../store/types.js';
import { StringEnum } from '../schemas/component.js';
import type { HttpServices } from '../services.js';

const Iso = (description: string) => Type.String({ format: 'date-time', description });

export const AgentStatus = Type.Object(
  {
    state: StringEnum(['up', 'down', 'unknown'] as const, {
      description: 'up: the agent answered last time; down: the last connect or handshake failed (calls fail fast with 503 until a background retry gets an answer); unknown: not contacted yet',
    }),
    since: Iso('when the state last changed (the gateway start for a VM never contacted)'),
    lastSeen: Type.Optional(Iso('when the agent last answered anything')),
    lastError: Type.Optional(Type.String({ description: 'why the last connect, handshake or call failed' })),
    version: Type.Optional(Type.String({ description: 'the agent version from its guest-info' })),
  },
  { title: 'AgentStatus', description: "What the gateway knows of the VM's guest agent, without asking it" },
);

export const VmFreezeOwner = Type.Object(
  {
    owner: Type.String({ description: 'the token name that holds the freeze lease, or "external": frozen outside the gateway (no lease of ours)' }),
    since: Type.Optional(Iso('frozen through the gateway: when the lease was taken; external: when the gateway first saw the VM frozen')),
    expiresAt: Type.Optional(Iso('frozen through the gateway: when the lease ends and the gateway thaws the VM')),
    group: Type.Optional(Type.String({ description: 'the freeze group the lease belongs to' })),
  },
  { title: 'VmFreezeOwner', description: 'Who froze the VM' },
);

/** Cluster mode's fields of a VM object (spread into VmSummary). */
export const clusterProperties = {
  node: Type.Optional(Type.String({ description: 'cluster mode: the node that serves the VM (GET /v1/nodes)' })),
  conflict: Type.Optional(
    Type.Array(Type.String(), {
      description: 'cluster mode: the other live nodes, besides `node`, that serve a VM of the same name (each serves its own; a third node answers 503 NODE_UNAVAILABLE for it)',
    }),
  ),
};

/** `node` (and `conflict`) of a VM this node has in its registry; nothing outside cluster mode. */
export function clusterFields(services: HttpServices, vm: string): { node?: string; conflict?: string[] } {
  const cluster = services.cluster;
  if (!cluster) return {};
  const loc = cluster.locate(vm);
  switch (loc.kind) {
    case 'local':
      return { node: cluster.selfId, ...(loc.conflict ? { conflict: loc.conflict } : {}) };
    case 'remote':
    case 'gone':
      return { node: loc.node.id };
    case 'conflict': {
      // not served here, 2+ live nodes serve it: the first is `node`, the others its conflict (as in the list)
      const [first, ...others] = loc.nodes;
      return { ...(first !== undefined ? { node: first } : {}), conflict: others };
    }
    default:
      return { node: cluster.selfId };
  }
}

/** The properties every VM object carries (spread into VmSummary). */
export const fleetProperties = {
  agent: AgentStatus,
  frozen: Type.Boolean({ description: 'the guest filesystems are frozen (through a lease of the gateway, or found frozen outside it)' }),
  freeze: Type.Optional(VmFreezeOwner),
  capabilities: Type.Optional(
    Type.Array(Type.String(), { description: 'the commands the agent has enabled (from its guest-info, re-read on every new connection); absent until known' }),
  ),
};

const FleetFields = Type.Object(fleetProperties);
export type FleetFields = Static<typeof FleetFields>;

/** The freeze leases by VM, read once for a whole listing. */
export type FreezeIndex = ReadonlyMap<string, Lease>;

/**
 * Leases of the VMs named (all when `vms` is omitted or long). With the store unreachable the
 * listing still answers: frozen is then what the agent service knows, without the owner.
 */
export async function freezeIndex(services: HttpServices, vms?: readonly string[]): Promise<FreezeIndex> {
  const out = new Map<string, Lease>();
  try {
    if (vms && vms.length <= 8) {
      const leases = await Promise.all(vms.map((vm) => services.store.getByKey(vmKey(vm))));
      vms.forEach((vm, i) => {
        const l = leases[i];
        if (l) out.set(vm, l);
      });
      return out;
    }
    for (const lease of await services.store.listSessions()) {
      for (const key of lease.keys) {
        const vm = vmOfKey(key);
        if (vm !== undefined) out.set(vm, lease);
      }
    }
  } catch {
    // STORE_UNAVAILABLE: no owners this time
  }
  return out;
}

/**
 * The fleet fields of a VM another node serves, from what it published (cluster/summary.ts) and
 * the shared store's leases. A gone node's VMs: agent state unknown since its last heartbeat.
 */
export function remoteFleetFields(vm: RemoteVm, freezes: FreezeIndex, goneSince: string): FleetFields {
  const s = vm.summary;
  const lease = freezes.get(vm.name);
  let freeze: FleetFields['freeze'];
  if (lease) {
    const group = groupOfSession(lease.session);
    freeze = { owner: lease.owner, since: new Date(lease.createdAt).toISOString(), expiresAt: new Date(lease.expiresAt).toISOString(), ...(group !== undefined ? { group } : {}) };
  } else if (s.externalSince !== undefined) {
    freeze = { owner: 'external', since: s.externalSince };
  }
  const frozen = (lease !== undefined && freezeData(lease).state !== 'freezing') || s.frozen;
  const agent: FleetFields['agent'] = vm.alive ? s.agent : { state: 'unknown', since: goneSince, lastError: `node ${vm.node} stopped heartbeating` };
  return { agent, frozen, ...(frozen && freeze ? { freeze } : {}), ...(s.capabilities ? { capabilities: s.capabilities } : {}) };
}

/** A VM object (VmSummary in vms.ts) of a VM another node serves, or served before it went away. */
export interface RemoteVmObject extends FleetFields {
  name: string;
  endpoint?: Endpoint;
  source: VmSource;
  labels?: Record<string, string>;
  channel: { state: ChannelStateName; queued: number; inFlight: number };
  node: string;
  conflict?: string[];
}

/**
 * The VM object of a VM another node publishes (cluster-wide GET /v1/vms items, and GET /v1/vms/{vm}
 * of a gone node's VM): its last published labels, frozen and capabilities; a gone node's VMs with
 * agent state unknown since that node was last seen, channel idle.
 */
export function remoteVmObject(cluster: ClusterService, vm: RemoteVm, view: { endpoints: boolean }, freezes: FreezeIndex): RemoteVmObject {
  const s = vm.summary;
  const lastSeen = cluster.node(vm.node)?.lastSeen ?? 0;
  return {
    name: vm.name,
    ...(view.endpoints && s.endpoint ? { endpoint: s.endpoint } : {}),
    source: s.source,
    ...(s.labels ? { labels: s.labels } : {}),
    channel: { state: vm.alive ? s.channel : 'idle', queued: 0, inFlight: 0 },
    ...remoteFleetFields(vm, freezes, new Date(lastSeen).toISOString()),
    node: vm.node,
    ...(vm.conflict ? { conflict: vm.conflict } : {}),
  };
}

/** The fleet fields of one VM. */
export function fleetFields(services: HttpServices, vm: string, freezes: FreezeIndex): FleetFields {
  const state = services.agent.fleetState(vm);
  const lease = freezes.get(vm);
  const external = lease ? undefined : services.agent.external.get(vm);
  let freeze: FleetFields['freeze'];
  if (lease) {
    const group = groupOfSession(lease.session);
    freeze = {
      owner: lease.owner,
      since: new Date(lease.createdAt).toISOString(),
      expiresAt: new Date(lease.expiresAt).toISOString(),
      ...(group !== undefined ? { group } : {}),
    };
  } else if (external) {
    freeze = { owner: 'external', since: external.since };
  }
  const frozen = (lease !== undefined && freezeData(lease).state !== 'freezing') || external !== undefined || services.agent.isKnownFrozen(vm);
  return {
    agent: state.agent,
    frozen,
    ...(frozen && freeze ? { freeze } : {}),
    ...(state.capabilities ? { capabilities: state.capabilities } : {}),
  };
}
