/**
 * Cluster mode's view of where every VM is served (issue 17). The interfaces at the top are the
 * contract the forwarding (F) and cluster-freeze (G) code is written against; `Directory` below is
 * the in-memory cache behind them, filled by membership.ts from Redis every heartbeat interval, so
 * that `locate()` is synchronous and never waits on Redis.
 *
 * locate(vm), in order:
 *   1. this node serves it (its own unix socket, or a VM reachable from several nodes whose
 *      ownership lease it holds) → local, with `conflict` naming the other LIVE nodes that also
 *      publish the name;
 *   2. it is a VM reachable from several nodes (ownership.ts) owned by another node → remote at the
 *      owner while that node is alive, gone when it stopped heartbeating (until a live node claims it);
 *   3. otherwise what the other nodes publish: one live node → remote, two or more → conflict,
 *      only nodes that stopped heartbeating → gone (the one seen last), nobody → unknown.
 */
import type { VmEntrySummary } from './summary.js';
import { resolve as resolvePath } from 'node:path';
import type { Endpoint } from '../qga/types.js';
import { endpointKey } from '../registry/endpoints.js';
import { SortedNames } from '../registry/sorted-names.js';

export interface NodeInfo {
  id: string;
  url: string;
  lastSeen: number /* ms epoch */;
  vmCount: number;
  version: string;
  alive: boolean;
  /** the tag of the cluster secret it signs with (hop.ts secretTag), when it publishes one */
  secretTag?: string;
}

export type VmLocation =
  | { kind: 'local'; conflict?: string[] } // served here (conflict: other live nodes that also claim the name)
  | { kind: 'remote'; node: NodeInfo } // served by another live node: forward
  | { kind: 'gone'; node: NodeInfo } // its node stopped heartbeating: 503 NODE_UNAVAILABLE at once
  | { kind: 'conflict'; nodes: string[] } // not local, claimed by 2+ live nodes: 503 NODE_UNAVAILABLE naming them
  | { kind: 'unknown' }; // nobody serves it: handled locally (404 VM_NOT_FOUND as today)

export interface ClusterService {
  readonly selfId: string;
  readonly selfUrl: string;
  locate(vm: string): VmLocation; // synchronous, from the local cache (refreshed every heartbeat)
  nodes(): NodeInfo[];
  node(id: string): NodeInfo | undefined;
  /**
   * The other nodes' VMs, for the cluster-wide GET /v1/vms (M's routes). Optional so that a test's
   * fake ClusterService needs only the five members above.
   */
  readonly remote?: RemoteVms;
  /** since when (ms epoch) Redis could not be read: the directory is the last one read (undefined: fresh) */
  readonly staleSince?: number;
  /** hear of every node that stops heartbeating (once per transition); returns the unsubscribe */
  onNodeGone?(fn: (node: NodeInfo) => void): () => void;
  /** whether a node signs with this node's cluster secret; undefined when it cannot be told */
  sameSecret?(node: NodeInfo): boolean | undefined;
  /** a stop begins: stop heartbeating and leave the member index now (the drain follows) */
  leave?(): Promise<void>;
}

/** One VM another node publishes, as the cluster-wide listing shows it. */
export interface RemoteVm {
  name: string;
  /** the node that serves it (the first live one in a conflict, else the one seen last) */
  node: string;
  /** that node is alive (a gone node's VMs list with agent state unknown) */
  alive: boolean;
  /** the OTHER live nodes that also publish it, besides `node` (present when 2+ live nodes do) */
  conflict?: string[];
  summary: VmEntrySummary;
}

export interface RemoteVms {
  /** names another node publishes, after `after`, in name order (the cache may change meanwhile) */
  after(after?: string): Iterable<string>;
  get(vm: string): RemoteVm | undefined;
}

/** How this node itself stands to a VM name (sync: from the registry and the ownership cache). */
export type LocalClaim =
  /** this node serves it */
  | { kind: 'serve' }
  /** reachable from several nodes, owned by another node (`owner`), or by nobody known yet */
  | { kind: 'shared'; owner?: string }
  /** reachable from several nodes, but other nodes (`nodes`) publish that name at another endpoint: another guest */
  | { kind: 'mismatch'; nodes: string[] }
  /** not in this node's registry */
  | undefined;

/** One other node as last read from Redis. */
export interface NodeRecord {
  info: NodeInfo;
  /** changes whenever the node's VM hash changes (incarnation:counter) */
  rev: string;
  vms: ReadonlyMap<string, VmEntrySummary>;
}

export class Directory implements RemoteVms {
  private readonly others = new Map<string, NodeRecord>();
  /** endpoint key → the other nodes' VMs published there (publishedAt); undefined until asked after a change */
  private byEndpoint?: Map<string, Array<{ vm: string; node: string }>>;
  /** vm → the other nodes that publish it */
  private readonly claimers = new Map<string, Set<string>>();
  private readonly names = new SortedNames();

  constructor(
    readonly selfId: string,
    private readonly self: () => NodeInfo,
    private readonly local: (vm: string) => LocalClaim,
  ) {}

  /** the record last read for node `id` (not this node) */
  record(id: string): NodeRecord | undefined {
    return this.others.get(id);
  }

  /**
   * Replace what is known of another node (its VM map only when `vms` is given; `rev` is kept as
   * given either way: '' makes the next refresh read the VM map again).
   */
  upsert(info: NodeInfo, rev: string, vms?: ReadonlyMap<string, VmEntrySummary>): void {
    if (info.id === this.selfId) return;
    const old = this.others.get(info.id);
    const next = vms ?? old?.vms ?? new Map<string, VmEntrySummary>();
    if (old && old.vms !== next) for (const vm of old.vms.keys()) if (!next.has(vm)) this.unclaim(vm, info.id);
    if (!old || old.vms !== next) {
      for (const vm of next.keys()) this.claim(vm, info.id);
      this.byEndpoint = undefined;
    }
    this.others.set(info.id, { info, rev, vms: next });
  }

  /** Forget a node (pruned from the member index). */
  remove(id: string): void {
    const old = this.others.get(id);
    if (!old) return;
    for (const vm of old.vms.keys()) this.unclaim(vm, id);
    this.others.delete(id);
    this.byEndpoint = undefined;
  }

  ids(): string[] {
    return [...this.others.keys()];
  }

  private claim(vm: string, id: string): void {
    let set = this.claimers.get(vm);
    if (!set) this.claimers.set(vm, (set = new Set()));
    set.add(id);
    this.names.add(vm);
  }

  private unclaim(vm: string, id: string): void {
    const set = this.claimers.get(vm);
    if (!set) return;
    set.delete(id);
    if (set.size === 0) {
      this.claimers.delete(vm);
      this.names.delete(vm);
    }
  }

  nodes(): NodeInfo[] {
    return [this.self(), ...[...this.others.values()].map((r) => r.info)].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  node(id: string): NodeInfo | undefined {
    return id === this.selfId ? this.self() : this.others.get(id)?.info;
  }

  /** the other LIVE nodes that publish `vm`, sorted */
  liveClaimers(vm: string): string[] {
    const set = this.claimers.get(vm);
    if (!set) return [];
    return [...set].filter((id) => this.others.get(id)?.info.alive).sort();
  }

  locate(vm: string): VmLocation {
    const claim = this.local(vm);
    if (claim?.kind === 'mismatch') return { kind: 'conflict', nodes: [this.selfId, ...claim.nodes].sort() };
    if (claim?.kind === 'serve') {
      const conflict = this.liveClaimers(vm);
      return conflict.length > 0 ? { kind: 'local', conflict } : { kind: 'local' };
    }
    if (claim?.kind === 'shared' && claim.owner !== undefined && claim.owner !== this.selfId) {
      const owner = this.others.get(claim.owner)?.info;
      if (owner) return owner.alive ? { kind: 'remote', node: owner } : { kind: 'gone', node: owner };
    }
    const set = this.claimers.get(vm);
    if (!set || set.size === 0) return { kind: 'unknown' };
    const live = this.liveClaimers(vm);
    const first = live[0];
    if (first !== undefined && live.length === 1) {
      const info = this.others.get(first)?.info;
      if (info) return { kind: 'remote', node: info };
    }
    if (live.length >= 2) return { kind: 'conflict', nodes: live };
    const last = this.lastSeenOf(set);
    return last ? { kind: 'gone', node: last } : { kind: 'unknown' };
  }

  /** the other nodes (alive or gone) whose last published entry for `vm` has an endpoint unlike `endpoint` */
  endpointMismatch(vm: string, endpoint: unknown): string[] {
    const set = this.claimers.get(vm);
    if (!set) return [];
    const mine = JSON.stringify(endpoint);
    return [...set].filter((id) => {
      const e = this.others.get(id)?.vms.get(vm)?.endpoint;
      return e !== undefined && JSON.stringify(e) !== mine;
    });
  }

  /**
   * A VM (other than `except`) another node (alive or gone) publishes at this endpoint, and that node: a unix socket by
   * its path, a TCP endpoint by host and port. Registration asks (VmRegistry): the VMs other nodes
   * serve are not in this node's registry.
   */
  publishedAt(endpoint: Endpoint, except?: string): { vm: string; node: string } | undefined {
    // the cluster asks once per API registration per heartbeat round: an index, made again only
    // after a node's VM map changed, rather than a walk of every node's VMs per question
    if (this.byEndpoint === undefined) {
      const index = new Map<string, Array<{ vm: string; node: string }>>();
      for (const [node, rec] of this.others) {
        for (const [vm, s] of rec.vms) {
          if (s.endpoint === undefined) continue;
          const key = endpointKey(normalized(s.endpoint));
          const at = index.get(key);
          if (at) at.push({ vm, node });
          else index.set(key, [{ vm, node }]);
        }
      }
      this.byEndpoint = index;
    }
    return this.byEndpoint.get(endpointKey(normalized(endpoint)))?.find((p) => p.vm !== except);
  }

  private lastSeenOf(ids: Iterable<string>): NodeInfo | undefined {
    let best: NodeInfo | undefined;
    for (const id of ids) {
      const info = this.others.get(id)?.info;
      if (info && (!best || info.lastSeen > best.lastSeen)) best = info;
    }
    return best;
  }

  after(after?: string): Iterable<string> {
    return this.names.after(after);
  }

  get(vm: string): RemoteVm | undefined {
    const set = this.claimers.get(vm);
    if (!set || set.size === 0) return undefined;
    const live = this.liveClaimers(vm);
    const id = live[0] ?? this.lastSeenOf(set)?.id;
    const rec = id === undefined ? undefined : this.others.get(id);
    const summary = rec?.vms.get(vm);
    if (!rec || !summary) return undefined;
    // conflict: the other live claimers besides `node` (as a serving node shows it: locate's local.conflict)
    return { name: vm, node: rec.info.id, alive: rec.info.alive, ...(live.length >= 2 ? { conflict: live.filter((n) => n !== rec.info.id) } : {}), summary };
  }
}

/** a unix path as written elsewhere, made absolute and without `.`/`..` (another host's: never resolved here) */
function normalized(e: Endpoint): Endpoint {
  return e.type === 'unix' ? { type: 'unix', path: resolvePath(e.path) } : e;
}
