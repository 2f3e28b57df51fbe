/**
 * Where each VM's agent socket is. Three sources, in order of precedence:
 *  1. `vms:` in the config file (static, cannot be deleted through the API),
 *  2. directory discovery (`registry.directories`: every `<name><suffix>` socket in a folder),
 *  3. API registration (`POST /v1/vms`), kept in the store so every gateway instance sees it.
 * The pool resolves endpoints synchronously from the cache kept here; `lookup()` fills it.
 * Endpoints come from the operator or an admin, never from an ordinary caller's request.
 *
 * Registration keeps the registry honest (issue 12, registry integrity): an endpoint belongs to one
 * VM (a unix socket compared by its real path, a TCP endpoint by host:port), a unix socket must
 * resolve inside `registry.allowedSocketRoots` and a TCP endpoint be listed in
 * `registry.allowedTcpEndpoints`. Every refusal that involves the endpoint is the same
 * REGISTRATION_DENIED, and the work done is the same whatever the reason (who else claims an
 * endpoint: endpoint-claims.ts), so registration tells
 * nobody whether a path exists, a port listens or a VM they may not see holds the endpoint. The
 * caller's view of the fleet comes in as a predicate (RegistrationView): this layer knows no
 * principals.
 */
import { isAbsolute } from 'node:path';
import type { VmEntry } from '../config/schema.js';
import { errors } from '../errors.js';
import type { Endpoint } from '../qga/types.js';
import { ApiVms } from './api-vms.js';
import { Discovery, VM_NAME, discoverySpecs, type KeepReason } from './discovery.js';
import { EndpointClaims, type PublishedElsewhere } from './endpoint-claims.js';
import { admissibleEndpoint, type RegistryConfig } from './endpoints.js';
import { SortedNames } from './sorted-names.js';
import type { VmRecord, VmRecordStore } from './types.js';

export { socketRootsOf } from './endpoints.js';

export type { VmRecord, VmRecordStore, VmSource } from './types.js';

/** What the caller may see, handed in by the layer that knows the caller. */
export interface RegistrationView {
  /** whether the caller may use VM `name`: register or delete it, or be told that it exists */
  mayUse(name: string): boolean;
}

/** One page of the fleet in name order: the VMs after `after` that `match` accepts. */
export interface PageRequest {
  after?: string;
  limit: number;
  match?: (rec: VmRecord) => boolean;
}

export interface Page {
  items: VmRecord[];
  /** more matching VMs follow the last item */
  more: boolean;
}

export interface RegistryLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** The operator's own view (tests, tools): every VM. */
const EVERY_VM: RegistrationView = { mayUse: () => true };

export class VmRegistry {
  private readonly statics = new Map<string, VmRecord>();
  /** API-registered VMs as last read from the store or registered here */
  private readonly api: ApiVms;
  /** every VM name of every source, sorted: what listings page through */
  private readonly index = new SortedNames();
  private readonly discovery: Discovery;
  /** who else claims an endpoint (registration, and in a cluster which API VMs this node serves) */
  private readonly claims: EndpointClaims;
  /** registrations one at a time, so two cannot both find an endpoint free */
  private registering: Promise<unknown> = Promise.resolve();
  /** the `vms:` entries now in force (reloadStatic replaces them) */
  private staticEntries: readonly VmEntry[];
  private readonly listeners = new Set<(name: string) => void>();
  /** names warned of as coming from two sources (noteShadow) */
  private readonly shadowed = new Set<string>();
  private logger: RegistryLogger | undefined;

  constructor(
    private readonly config: RegistryConfig,
    private readonly store?: VmRecordStore,
  ) {
    this.staticEntries = config.vms;
    for (const vm of config.vms) this.statics.set(vm.name, fromEntry(vm));
    for (const name of this.statics.keys()) this.index.add(name);
    this.api = new ApiVms(store, (name) => this.touch(name));
    this.discovery = new Discovery(discoverySpecs(config.registry), (names) => {
      for (const name of names) this.touch(name);
    });
    this.claims = new EndpointClaims(this.discovery);
  }

  /**
   * A discovered VM no longer found (socket gone, Proxmox agent turned off) stays registered while
   * `reason` names why: its freeze lease, whose thaw must reach it (discovery.ts).
   */
  keepWhile(reason: KeepReason): void {
    this.discovery.keepWhile(reason);
  }

  /**
   * Cluster mode: a registration is also refused for an endpoint another node publishes a VM at
   * (the VMs other nodes serve are not in this registry): ENDPOINT_IN_USE naming that VM when the
   * caller may see it, else REGISTRATION_DENIED.
   */
  checkEndpointsElsewhere(lookup: PublishedElsewhere): void {
    this.claims.checkElsewhere(lookup);
  }

  /** how many VMs are known now (every source) */
  get size(): number {
    return this.index.size;
  }

  /**
   * The first scan of the discovery folders and of the store's API-registered VMs, then the
   * watches and the periodic rescan. Logs the count found.
   */
  async start(logger?: RegistryLogger): Promise<void> {
    this.logger = logger;
    await this.discovery.scanAll();
    await this.api.refresh(true).catch((err: unknown) => logger?.warn({ err }, 'registry: API-registered VMs not read at start; retried at the next listing'));
    this.discovery.start(this.config.registry.rescanIntervalMs ?? 30_000, logger);
    logger?.info({ vms: this.size, folders: this.discovery.specs.map((s) => s.path) }, 'registry: VMs found');
  }

  stop(): void {
    this.discovery.stop();
  }

  /**
   * Replace the statically configured VMs (config reload, SIGHUP). Returns the names whose
   * endpoint went away or changed: their open channels must be closed by the caller (the pool).
   * A VM that stays with the same endpoint keeps its channel.
   */
  reloadStatic(vms: readonly VmEntry[]): { added: string[]; removed: string[]; changed: string[] } {
    const next = new Map(vms.map((vm) => [vm.name, fromEntry(vm)] as const));
    const added: string[] = [];
    const removed: string[] = [];
    const changed: string[] = [];
    for (const [name, old] of this.statics) {
      const now = next.get(name);
      if (!now) removed.push(name);
      else if (JSON.stringify(now.endpoint) !== JSON.stringify(old.endpoint)) changed.push(name);
    }
    for (const name of next.keys()) if (!this.statics.has(name)) added.push(name);
    this.statics.clear();
    for (const [name, rec] of next) this.statics.set(name, rec);
    for (const name of [...added, ...removed]) this.touch(name);
    this.staticEntries = [...vms];
    return { added, removed, changed };
  }

  /** Synchronous resolution for the pool; only VMs that a scan, lookup() or list() has seen. */
  /** the VM's own idle release setting, if it has one (sync: read when its channel is made) */
  idleReleaseOf(name: string): number | undefined {
    return this.record(name)?.idleReleaseMs;
  }

  resolve(name: string): Endpoint | undefined {
    return this.record(name)?.endpoint;
  }

  async lookup(name: string): Promise<VmRecord | undefined> {
    if (!VM_NAME.test(name)) return undefined;
    const s = this.statics.get(name);
    if (s) return s;
    const found = await this.discovery.probe(name);
    if (found) return found;
    if (this.store) {
      const rec = await this.store.getVm(name);
      if (rec) {
        const r: VmRecord = { ...rec, source: 'api' };
        this.api.seen(name, r);
        return r;
      }
    }
    this.api.seen(name, undefined);
    return undefined;
  }

  /**
   * Whether `name` is one of the configured (`vms:`) VMs: for those, lookup() and require() answer
   * from memory, so a caller may skip awaiting them (issue 14: two promise hops per agent call).
   */
  isStatic(name: string): boolean {
    return this.statics.has(name);
  }

  async require(name: string): Promise<VmRecord> {
    const rec = await this.lookup(name);
    if (!rec) throw errors.vmNotFound(name);
    return rec;
  }

  /** Every VM, in name order. */
  async list(): Promise<VmRecord[]> {
    await this.refresh();
    return this.index.all().flatMap((name) => this.record(name) ?? []);
  }

  /**
   * A page of the fleet in name order, from the sorted index: the folders that changed since they
   * were last scanned are rescanned first, and the store's API-registered VMs re-read when older
   * than a second; nothing is sorted per request.
   */
  async page(req: PageRequest): Promise<Page> {
    await this.refresh();
    const items: VmRecord[] = [];
    for (const name of this.index.after(req.after)) {
      const rec = this.record(name);
      if (!rec || (req.match && !req.match(rec))) continue;
      if (items.length >= req.limit) return { items, more: true };
      items.push(rec);
    }
    return { items, more: false };
  }

  private record(name: string): VmRecord | undefined {
    return this.statics.get(name) ?? this.discovery.get(name) ?? this.api.get(name);
  }

  /**
   * Hear of every VM whose record appeared, changed or went away (a discovered socket created or
   * removed, an API registration, a config reload): the agent probe retries a returning VM at once.
   */
  onChange(fn: (name: string) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Keep the index in step with the sources after `name` changed in one of them. */
  private touch(name: string): void {
    if (this.record(name)) this.index.add(name);
    else this.index.delete(name);
    this.noteShadow(name);
    for (const fn of this.listeners) fn(name);
  }

  /**
   * One name from two sources (a `vms:` entry and a discovered socket, or a discovered socket and
   * an API-registered VM): the first of config, discovery, API is the VM; the other is not reachable
   * under that name. Warned once per name while it lasts (no VM is dropped silently).
   */
  private noteShadow(name: string): void {
    const sources = [this.statics.has(name) && 'config', this.discovery.get(name) && 'discovery', this.api.get(name) && 'api'].filter((x): x is string => typeof x === 'string');
    if (sources.length < 2) {
      this.shadowed.delete(name);
      return;
    }
    if (this.shadowed.has(name)) return;
    if (this.shadowed.size >= 10_000) this.shadowed.clear();
    this.shadowed.add(name);
    const [wins, ...hidden] = sources;
    this.logger?.warn({ vm: name, wins, hidden }, `registry: VM name ${name} comes from ${sources.join(' and ')}; the ${wins} one is used, the other is not reachable under this name: rename one`);
  }

  private async refresh(): Promise<void> {
    await Promise.all([this.discovery.refresh(), this.api.refresh(false)]);
  }

  /**
   * Register a VM through the API. Refused: with FORBIDDEN when API registration is off; with
   * REGISTRATION_DENIED when `view` may not use the name, when the endpoint is outside the allowed
   * roots or endpoints (or missing), or when a VM `view` may not see holds it; with ENDPOINT_IN_USE
   * when a VM it may see holds it; with VM_EXISTS for a taken name. A unix socket is stored by its
   * real path, which is what was checked.
   */
  async register(rec: { name: string; endpoint: Endpoint; labels?: Record<string, string>; idleReleaseMs?: number }, view: RegistrationView = EVERY_VM): Promise<VmRecord> {
    const store = this.store;
    if (!this.config.registry.allowApiRegistration || !store) {
      throw errors.forbidden('API registration of VMs is disabled (registry.allowApiRegistration)');
    }
    if (rec.endpoint.type === 'unix' && !isAbsolute(rec.endpoint.path)) {
      throw errors.validation('endpoint.path must be absolute');
    }
    if (!view.mayUse(rec.name)) throw errors.nameOutsideGlobs(rec.name);
    const run = this.registering.then(() => this.registerNow(rec, view, store));
    this.registering = run.catch(() => undefined);
    return run;
  }

  private async registerNow(
    rec: { name: string; endpoint: Endpoint; labels?: Record<string, string>; idleReleaseMs?: number },
    view: RegistrationView,
    store: VmRecordStore,
  ): Promise<VmRecord> {
    // Both always run, whatever the outcome: a refusal for a path outside the roots costs what a
    // refusal for a taken endpoint costs.
    const [endpoint, holders] = await Promise.all([admissibleEndpoint(rec.endpoint, { vms: this.staticEntries, registry: this.config.registry }), this.endpointHolders()]);
    if (!endpoint) throw errors.registrationDenied(rec.name);
    if (await this.lookup(rec.name)) throw errors.vmExists(rec.name);
    const holder = await this.claims.claimant(endpoint, rec.name, holders);
    if (holder !== undefined) throw view.mayUse(holder) ? errors.endpointInUse(rec.name, holder) : errors.registrationDenied(rec.name);
    const stored = { ...rec, endpoint };
    if (!(await store.putVm(stored))) throw errors.vmExists(rec.name);
    const r: VmRecord = { ...stored, source: 'api' };
    this.api.changed(rec.name, r);
    return r;
  }

  /**
   * Deregister an API-registered VM. The HTTP layer refuses names outside the caller's globs
   * before this runs; `view` holds the registry to the same rule for any other caller.
   */
  async deregister(name: string, view: RegistrationView = EVERY_VM): Promise<void> {
    if (!view.mayUse(name)) throw errors.forbidden(`VM "${name}" is outside this caller's VM globs`, { vm: name });
    const rec = await this.require(name);
    if (rec.source !== 'api' || !this.store) {
      throw errors.forbidden(`VM "${name}" comes from the ${rec.source === 'config' ? 'configuration file' : 'socket directory'} and cannot be deleted through the API`, { vm: name });
    }
    await this.store.deleteVm(name);
    this.api.changed(name, undefined);
  }

  /**
   * Cluster mode: of these records, the API-registered VMs this node may serve (EndpointClaims.servable:
   * admissible here, and no VM of another name here, in a discovery folder or on another node
   * claims the endpoint).
   */
  async servableApiVms(recs: readonly VmRecord[]): Promise<Set<string>> {
    const api = recs.filter((r) => r.source === 'api');
    if (api.length === 0) return new Set();
    const own = (await this.list()).filter((r) => r.source !== 'api');
    return this.claims.servable(api, own, { vms: this.staticEntries, registry: this.config.registry }, this.logger);
  }

  /** Every known VM by the key of its endpoint (unix sockets by real path). */
  private async endpointHolders(): Promise<Map<string, string>> {
    // what other gateway processes registered up to now, not up to a second ago
    await this.api.refresh(true);
    return this.claims.holders(await this.list());
  }
}

function fromEntry(vm: VmEntry): VmRecord {
  return {
    name: vm.name, endpoint: vm.endpoint, source: 'config', ...(vm.labels ? { labels: vm.labels } : {}),
    ...(vm.idleReleaseMs !== undefined ? { idleReleaseMs: vm.idleReleaseMs } : {}),
  };
}
