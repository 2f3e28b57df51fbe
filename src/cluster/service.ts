/**
 * The cluster part of a gateway (issue 17): every cluster.heartbeatIntervalMs, one round of
 *   1. ownership (ownership.ts): renew/claim the leases of VMs reachable from several nodes;
 *   2. heartbeat (membership.ts): this node's keys and the changes of its VM hash, one MULTI;
 *   3. read the member index and the heartbeats, and re-read the VM hashes whose rev moved, into the
 *      Directory (directory.ts), which answers locate() synchronously.
 * A round that fails (Redis unreachable) keeps the last directory, marked stale (logged once per
 * transition, gauge qga_cluster_directory_stale); the next round recovers by itself. Which nodes
 * are alive, across outages too, is liveness.ts's. VM names served by two live nodes are logged
 * once per transition.
 */
import { access } from 'node:fs/promises';
import type { Registry as MetricsRegistry } from 'prom-client';
import type { Logger } from 'pino';
import { errors } from '../errors.js';
import type { Endpoint } from '../qga/types.js';
import type { VmRecord } from '../registry/types.js';
import type { RedisClient } from '../store/redis-connect.js';
import { errorMessage } from '../util/unknown.js';
import { Directory, type ClusterService, type LocalClaim, type NodeInfo, type RemoteVms, type VmLocation } from './directory.js';
import { Liveness } from './liveness.js';
import { Membership } from './membership.js';
import { registerClusterMetrics } from './metrics.js';
import { Ownership } from './ownership.js';
import { summarize, type SummarySource, type VmEntrySummary } from './summary.js';

/** the code of the start-up refusal of a cluster.id another live process heartbeats as */
export const CLUSTER_ID_IN_USE = 'CLUSTER_ID_IN_USE';

export interface ClusterSettings {
  id: string;
  advertiseUrl: string;
  heartbeatTtlMs: number;
  heartbeatIntervalMs: number;
}

/** What the cluster part reads of the registry (sync resolve, async list). */
export interface ClusterRegistry {
  resolve(vm: string): Endpoint | undefined;
  list(): Promise<VmRecord[]>;
  /** of these records, the API-registered ones this node may serve (VmRegistry.servableApiVms) */
  servableApiVms(recs: readonly VmRecord[]): Promise<Set<string>>;
}

export interface ClusterNodeOptions {
  settings: ClusterSettings;
  client: RedisClient;
  keyPrefix: string;
  registry: ClusterRegistry;
  summaries: SummarySource;
  /** close a VM's channel (ownership lost) */
  release(vm: string): Promise<void>;
  version: string;
  logger: Pick<Logger, 'info' | 'warn' | 'error'>;
  metrics?: MetricsRegistry;
  /** hop.ts secretTag of this node's cluster secret, published with its heartbeat */
  secretTag?: string;
}

/** every this many rounds, the owner of every shared VM is read again, live owner or not */
const RECHECK_EVERY = 10;

export class ClusterNode implements ClusterService {
  readonly selfId: string;
  readonly selfUrl: string;
  private readonly directory: Directory;
  private readonly membership: Membership;
  private readonly ownership: Ownership;
  /** VMs of the last round: shared ones (lease-decided) and their records */
  private shared = new Set<string>();
  /**
   * The shared VMs of this node that other nodes publish at another endpoint (another guest), with
   * those nodes: derived once per round, after the directory's refresh (locate() runs per request).
   */
  private mismatched = new Map<string, string[]>();
  private served = new Set<string>();
  private lastBeat = Date.now();
  private rounds = 0;
  private staleAt: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private readonly conflicts = new Map<string, string>();
  private readonly liveness: Liveness;

  constructor(private readonly opts: ClusterNodeOptions) {
    const s = opts.settings;
    this.selfId = s.id;
    this.selfUrl = s.advertiseUrl.replace(/\/+$/, '');
    this.membership = new Membership(opts.client, opts.keyPrefix, s.id, s.heartbeatTtlMs);
    this.liveness = new Liveness(s.heartbeatTtlMs, opts.logger);
    // one line per batch of VMs (a node owning 10,000 TCP VMs says so in one line, not 10,000)
    const lostLog = batchLog((vms, why) => opts.logger.warn({ vms: vms.slice(0, 20), count: vms.length, why }, 'cluster: this node no longer owns these VMs; their channels are closed'));
    const gainedLog = batchLog((vms) => opts.logger.info({ vms: vms.slice(0, 20), count: vms.length }, 'cluster: this node owns these VMs now'));
    this.ownership = new Ownership(opts.client, opts.keyPrefix, s.id, s.heartbeatTtlMs, {
      lost: (vm, why) => {
        lostLog(vm, why);
        void opts.release(vm).catch(() => undefined);
      },
      gained: (vm) => gainedLog(vm, ''),
    });
    this.directory = new Directory(s.id, () => this.selfInfo(), (vm) => this.localClaim(vm));
    if (opts.metrics) {
      registerClusterMetrics(opts.metrics, {
        conflicts: () => this.conflicts.size,
        nodes: () => this.nodes(),
        stale: () => this.staleAt !== undefined,
        owned: () => this.ownership.ownedCount,
      });
    }
  }

  get remote(): RemoteVms {
    return this.directory;
  }

  /** the directory could not be refreshed since this epoch ms (undefined: fresh) */
  get staleSince(): number | undefined {
    return this.staleAt;
  }

  locate(vm: string): VmLocation {
    return this.directory.locate(vm);
  }

  /** a VM another node publishes at `endpoint` (registration checks it: Directory.publishedAt) */
  publishedAt(endpoint: Endpoint, except?: string): { vm: string; node: string } | undefined {
    return this.directory.publishedAt(endpoint, except);
  }

  nodes(): NodeInfo[] {
    return this.directory.nodes();
  }

  node(id: string): NodeInfo | undefined {
    return this.directory.node(id);
  }

  /**
   * The node a freeze lease of `vm` is bound to (AgentFence.node): the node serving it now, when only
   * that node reaches it (a unix socket of its host); none for a VM several nodes reach (a TCP
   * endpoint, an API registration: whichever node owns it reaches the same guest) or one not served.
   */
  pinFor(vm: string): string | undefined {
    const at = this.directory.locate(vm);
    if (at.kind === 'local') {
      const endpoint = this.opts.registry.resolve(vm);
      return endpoint !== undefined && !this.isShared(vm, endpoint) ? this.selfId : undefined;
    }
    if (at.kind !== 'remote') return undefined;
    const s = this.directory.get(vm)?.summary;
    return s !== undefined && s.endpoint?.type === 'unix' && s.source !== 'api' ? at.node.id : undefined;
  }

  private selfInfo(): NodeInfo {
    return { id: this.selfId, url: this.selfUrl, lastSeen: this.lastBeat, vmCount: this.served.size, version: this.opts.version, alive: true };
  }

  /** reachable from several nodes: a TCP endpoint, or an API registration (every node reads those) */
  private isShared(vm: string, endpoint: Endpoint): boolean {
    return endpoint.type === 'tcp' || this.shared.has(vm);
  }

  private localClaim(vm: string): LocalClaim {
    const endpoint = this.opts.registry.resolve(vm);
    if (!endpoint) return undefined;
    if (!this.isShared(vm, endpoint)) return { kind: 'serve' };
    // a name other nodes publish at another endpoint is another guest: never served through one
    // node or the other as if it were the same (a conflict, 503 here), never claimed
    const mismatch = this.mismatched.get(vm);
    if (mismatch !== undefined) return { kind: 'mismatch', nodes: mismatch };
    if (this.ownership.owns(vm)) return { kind: 'serve' };
    return { kind: 'shared', owner: this.ownership.ownerOf(vm) };
  }

  /** this node serves `vm` (in its registry, and its owner when it is reachable from several nodes) */
  serves(vm: string): boolean {
    return this.localClaim(vm)?.kind === 'serve';
  }

  /**
   * The pool's guard: a VM reachable from several nodes is connected only by its owner. Throws
   * NODE_UNAVAILABLE (naming the owner, if known) for one this node does not own.
   */
  assertMayConnect(vm: string, endpoint: Endpoint): void {
    if (!this.isShared(vm, endpoint) || this.ownership.owns(vm)) return;
    const owner = this.ownership.ownerOf(vm);
    // Redis not answering: no node can renew or take the lease (fencing), the outage is the reason
    const why =
      this.staleAt !== undefined
        ? `VM ${vm} is reachable from several nodes, and no node may connect to it while its ownership lease cannot be renewed: Redis has not answered since ${new Date(this.staleAt).toISOString()}`
        : owner
          ? `VM ${vm} is reachable from several nodes and node ${owner} holds its ownership lease`
          : `VM ${vm} is reachable from several nodes and no live node holds its ownership lease yet`;
    throw errors.nodeUnavailable(vm, owner ?? 'none', why);
  }

  /** the first round (before serving; bounded by the store's command timeout), then one every interval */
  async start(): Promise<void> {
    this.stopped = false;
    await this.refuseDuplicateId();
    await this.round();
    this.schedule();
  }

  /**
   * Another live process heartbeating as this node's id, at another URL, is refused before this
   * one claims or publishes anything: two nodes of one id would split the cluster's view (each
   * overwriting the other's VMs) and both connect the VMs several nodes reach. The same URL is
   * this node before a restart (a crash leaves its heartbeat until its TTL). Redis unreachable:
   * nothing to compare, the node starts as it would.
   */
  private async refuseDuplicateId(): Promise<void> {
    const other = await this.membership.current().catch(() => undefined);
    if (other === undefined || other.url === this.selfUrl) return;
    const ttl = this.opts.settings.heartbeatTtlMs;
    throw Object.assign(
      new Error(
        `cluster.id "${this.selfId}" is in use: another process heartbeats as node ${this.selfId} at ${other.url} (last ${new Date(other.lastSeen).toISOString()}). ` +
          `Each node needs its own cluster.id (default: the host name; cloned hosts share it). If that was this node before a restart with another ` +
          `cluster.advertiseUrl, start it again after cluster.heartbeatTtlMs (${ttl} ms)`,
      ),
      // `serve` says it as it is, not as a failure to listen (cli/serve.ts)
      { code: CLUSTER_ID_IN_USE },
    );
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.round().finally(() => {
        this.running = undefined;
        this.schedule();
      });
    }, this.opts.settings.heartbeatIntervalMs);
    this.timer.unref();
  }

  /**
   * A stop begins (SIGTERM, before the drain of the requests in flight): no more rounds, and the
   * heartbeat goes at once, so the others route around this node while it drains instead of
   * sending it requests it refuses. What it owns is not released here: its channels may still be
   * serving a request in flight; the ownership leases run out by their TTL (or stop() releases
   * them), as after a crash.
   */
  async leave(): Promise<void> {
    if (this.stopped || this.rounds === 0) return;
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    try {
      await this.membership.leave();
    } catch (err) {
      this.opts.logger.warn({ err: errorMessage(err) }, 'cluster: leaving the member index failed; the others see this node gone after its TTL');
    }
  }

  /** A clean stop: no more rounds, leases released, heartbeat deleted (the others see it gone at once). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    // refused at start (refuseDuplicateId): nothing of this process's to release or leave
    if (this.rounds === 0) return;
    try {
      await this.ownership.releaseAll();
      await this.membership.leave();
    } catch (err) {
      this.opts.logger.warn({ err: errorMessage(err) }, 'cluster: leaving the member index failed; the others see this node gone after its TTL');
    }
  }

  /** One round; never throws. */
  async round(): Promise<void> {
    const first = this.rounds === 0;
    this.rounds++;
    try {
      const records = await this.opts.registry.list();
      const shared = new Set<string>();
      const candidates = new Set<string>();
      // an API registration is claimed only by a node whose own registry settings admit it and
      // where it is not the socket of one of that node's own VMs (VmRegistry.servableApiVms)
      const servable = await this.opts.registry.servableApiVms(records);
      await Promise.all(
        records.map(async (rec) => {
          if (rec.source !== 'api' && rec.endpoint.type !== 'tcp') return;
          shared.add(rec.name);
          if (rec.source === 'api' && !servable.has(rec.name)) return;
          // an API-registered unix socket is claimed only by a node where that socket exists
          if (rec.endpoint.type === 'unix' && !(await access(rec.endpoint.path).then(() => true, () => false))) return;
          // published elsewhere at another endpoint (localClaim: a conflict): not ours to claim
          if (this.mismatched.has(rec.name)) return;
          candidates.add(rec.name);
        }),
      );
      this.shared = shared;
      await this.ownership.round(candidates, (id) => this.directory.node(id)?.alive === true, first || this.rounds % RECHECK_EVERY === 0);
      // stop() came while this round waited on Redis: no heartbeat after the node left
      if (this.stopped) return;
      const summaries = new Map<string, VmEntrySummary>();
      for (const rec of records) {
        if (shared.has(rec.name) && !this.ownership.owns(rec.name)) continue;
        summaries.set(rec.name, summarize(rec, this.opts.summaries));
      }
      const now = Date.now();
      await this.membership.heartbeat({ url: this.selfUrl, version: this.opts.version, lastSeen: now, ...(this.opts.secretTag !== undefined ? { secretTag: this.opts.secretTag } : {}) }, summaries);
      if (this.staleAt !== undefined) this.liveness.recovered();
      this.lastBeat = now;
      this.served = new Set(summaries.keys());
      await this.refresh();
      const mismatched = new Map<string, string[]>();
      for (const rec of records) {
        if (!shared.has(rec.name)) continue;
        const nodes = this.directory.endpointMismatch(rec.name, rec.endpoint);
        if (nodes.length > 0) mismatched.set(rec.name, nodes);
      }
      this.mismatched = mismatched;
      if (this.staleAt !== undefined) this.opts.logger.info({ staleMs: Date.now() - this.staleAt }, 'cluster: Redis answers again; directory refreshed');
      this.staleAt = undefined;
    } catch (err) {
      if (this.staleAt === undefined) {
        this.staleAt = Date.now();
        this.liveness.outage();
        this.opts.logger.warn({ err: errorMessage(err) }, 'cluster: heartbeat or directory read failed; serving from the last directory until Redis answers');
      }
    }
  }

  private async refresh(): Promise<void> {
    const members = (await this.membership.members()).filter((m) => m.info.id !== this.selfId);
    // every read first, then the directory changes at once: locate() never sees half a refresh
    const reads = await Promise.all(
      members.map(async (m) => {
        const cached = this.directory.record(m.info.id);
        return { m, vms: !cached || cached.rev !== m.rev ? await this.membership.vmsOf(m.info.id) : undefined };
      }),
    );
    const seen = new Set<string>();
    const now = performance.now();
    for (const { m, vms } of reads) {
      seen.add(m.info.id);
      const info = this.liveness.read(m.info, this.directory.record(m.info.id)?.info.alive === true, now);
      // an empty hash of a node that says it serves VMs: Redis lost the hash and the node has not
      // written it again yet; keep what was read before and read it again next time
      if (vms && vms.size === 0 && info.vmCount > 0 && this.directory.record(info.id)) this.directory.upsert(info, '');
      else this.directory.upsert(info, m.rev, vms);
      this.liveness.note(info);
      this.checkSecret(info);
    }
    // a node missing from the member index (Redis restarted empty and it has not heartbeated since)
    for (const id of this.directory.ids()) {
      if (seen.has(id)) continue;
      const rec = this.directory.record(id);
      const fate = rec ? this.liveness.missing(id, rec.info.alive, now) : 'forget';
      if (fate === 'forget') {
        this.directory.remove(id);
        this.liveness.forget(id);
      } else if (rec && fate === 'gone') {
        this.directory.upsert({ ...rec.info, alive: false }, rec.rev);
        this.liveness.note({ ...rec.info, alive: false });
      }
    }
    this.logConflicts();
  }

  /** the forwarding's hook: it cuts what it still waits for from a gone node */
  onNodeGone(fn: (node: NodeInfo) => void): () => void {
    return this.liveness.onGone(fn);
  }

  /** Whether `node` signs with this node's cluster secret (by the tags they publish); undefined when it cannot be told. */
  sameSecret(node: NodeInfo): boolean | undefined {
    const mine = this.opts.secretTag;
    return mine === undefined || node.secretTag === undefined || node.id === this.selfId ? undefined : node.secretTag === mine;
  }

  /** the nodes told of as signing with another secret (once each until that changes) */
  private readonly otherSecret = new Set<string>();
  private checkSecret(info: NodeInfo): void {
    if (!info.alive) return;
    const same = this.sameSecret(info);
    if (same !== false) {
      this.otherSecret.delete(info.id);
      return;
    }
    if (this.otherSecret.has(info.id)) return;
    this.otherSecret.add(info.id);
    this.opts.logger.error(
      { node: info.id, url: info.url },
      `cluster: node ${info.id} signs with another cluster secret than this node (their cluster.secretFile differ): each refuses the other's requests, so requests for its VMs through this node (and for this node's through it) answer 503 NODE_UNAVAILABLE; give every node the same secret`,
    );
  }

  /** the freeze's hook: the thaws waiting for a node that was gone are sent again now it is back */
  onNodeBack(fn: (node: NodeInfo) => void): () => void {
    return this.liveness.onBack(fn);
  }

  private logConflicts(): void {
    const now = new Map<string, string>();
    for (const vm of this.served) {
      const others = this.directory.liveClaimers(vm);
      if (others.length > 0) now.set(vm, others.join(','));
    }
    // one line per round for the conflicts that started (and one for those that ended), the first 20 named
    const started = [...now].filter(([vm, nodes]) => this.conflicts.get(vm) !== nodes).map(([vm, nodes]) => ({ vm, nodes: [this.selfId, ...nodes.split(',')] }));
    const ended = [...this.conflicts.keys()].filter((vm) => !now.has(vm));
    if (started.length > 0) this.opts.logger.warn({ conflicts: started.slice(0, 20), count: started.length }, 'cluster: VM names served by several nodes (conflict); each serves its own');
    if (ended.length > 0) this.opts.logger.info({ vms: ended.slice(0, 20), count: ended.length }, 'cluster: VM name conflicts resolved');
    this.conflicts.clear();
    for (const [vm, nodes] of now) this.conflicts.set(vm, nodes);
  }
}

/** Collects (vm, why) pairs within one tick and hands them over grouped by `why`, once. */
function batchLog(emit: (vms: string[], why: string) => void): (vm: string, why: string) => void {
  let pending: Map<string, string[]> | undefined;
  return (vm, why) => {
    if (!pending) {
      const batch = (pending = new Map());
      setImmediate(() => {
        pending = undefined;
        for (const [w, vms] of batch) emit(vms, w);
      });
    }
    const list = pending.get(why);
    if (list) list.push(vm);
    else pending.set(why, [vm]);
  };
}
