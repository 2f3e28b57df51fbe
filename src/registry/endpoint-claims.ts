/**
 * Who else claims an endpoint: the rule that an endpoint belongs to one VM (issue 12), applied where
 * a VM is registered (VmRegistry.register) and, in cluster mode, where a node decides which of the
 * API-registered VMs it serves (servable). A claimant is a VM of another name that:
 *  - this registry knows at that endpoint (a unix socket compared by its real path, TCP by host:port);
 *  - a discovery folder would name from that socket, present or not (`<dir>/<name><suffix>` is VM
 *    `<name>` as soon as the socket appears);
 *  - another cluster node publishes at that endpoint (its VMs are not in this registry:
 *    checkElsewhere hands the cluster directory's lookup in).
 */
import { realpath } from 'node:fs/promises';
import { basename, dirname, resolve as resolvePath } from 'node:path';
import type { Endpoint } from '../qga/types.js';
import { nameInFolder, type Discovery } from './discovery.js';
import { admissibleEndpoint, canonicalSocketPath, endpointKey, type RegistryConfig } from './endpoints.js';
import type { VmRecord } from './types.js';

/** the VM (and node) another cluster node publishes at an endpoint, other than VM `except` */
export type PublishedElsewhere = (endpoint: Endpoint, except?: string) => { vm: string; node: string } | undefined;

interface Logger {
  warn(obj: object, msg: string): void;
}

export class EndpointClaims {
  private elsewhere?: PublishedElsewhere;
  private servableCalls = 0;
  /** socket path → its real path, for servable() */
  private readonly realPaths = new Map<string, string>();
  /** warned once per pair: an API registration this node will not serve, being one of its own VMs' sockets */
  private readonly aliases = new Set<string>();

  constructor(private readonly discovery: Discovery) {}

  /** Cluster mode: the endpoints other nodes publish VMs at count as claimed too. */
  checkElsewhere(lookup: PublishedElsewhere): void {
    this.elsewhere = lookup;
  }

  /** An endpoint's key, a unix socket by its real path (resolved through `cache` when given). */
  async keyOf(e: Endpoint, cache?: Map<string, string>): Promise<string> {
    if (e.type === 'tcp') return endpointKey(e);
    let real = cache?.get(e.path);
    if (real === undefined) {
      real = (await canonicalSocketPath(e.path)) ?? resolvePath(e.path);
      cache?.set(e.path, real);
    }
    return endpointKey({ type: 'unix', path: real });
  }

  /** Every record by the key of its endpoint (the first record of a key holds it). */
  async holders(records: readonly VmRecord[], cache?: Map<string, string>): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const rec of records) {
      const key = await this.keyOf(rec.endpoint, cache);
      if (!out.has(key)) out.set(key, rec.name);
    }
    return out;
  }

  /** The VM of another name than `name` that claims `endpoint` (an admitted one: its key is its own), given the holders here. */
  async claimant(endpoint: Endpoint, name: string, holders: ReadonlyMap<string, string>): Promise<string | undefined> {
    return holders.get(endpointKey(endpoint)) ?? (await this.discoveryClaim(endpoint, name)) ?? this.elsewhere?.(endpoint, name)?.vm;
  }

  /**
   * Cluster mode: of the API-registered VMs `api` (every node reads them from the store), the names
   * this node may serve, `own` being its configured and discovered VMs. A registration was checked
   * by the node it entered, against that node's roots and VMs only; the node that would serve it
   * checks again, against its own: the endpoint must be admissible here (a unix socket's real path
   * inside this node's roots, a TCP endpoint in its allowedTcpEndpoints) and claimed by no VM of
   * another name. Otherwise a token limited to some VMs could register, through another node, a
   * second name for a VM served here, outside its globs and beside that VM's freeze lease.
   */
  async servable(api: readonly VmRecord[], own: readonly VmRecord[], settings: RegistryConfig, logger?: Logger): Promise<Set<string>> {
    const out = new Set<string>();
    if (api.length === 0) return out;
    // the cluster asks every heartbeat round: its own sockets' real paths are kept for a while
    // (a fleet of thousands is not resolved every few seconds), looked up again every 20th call
    if (++this.servableCalls % 20 === 0 || this.realPaths.size > 4 * own.length + 64) this.realPaths.clear();
    const holders = await this.holders(own, this.realPaths);
    for (const rec of api) {
      const here = await admissibleEndpoint(rec.endpoint, settings);
      if (here === undefined) continue;
      if (rec.endpoint.type === 'unix' && here.type === 'unix' && here.path !== rec.endpoint.path) continue;
      const holder = await this.claimant(here, rec.name, holders);
      if (holder !== undefined) {
        this.noteAlias(rec.name, holder, logger);
        continue;
      }
      out.add(rec.name);
    }
    return out;
  }

  private noteAlias(name: string, holder: string, logger?: Logger): void {
    const key = `${name}\n${holder}`;
    if (this.aliases.has(key)) return;
    if (this.aliases.size >= 1024) this.aliases.clear();
    this.aliases.add(key);
    logger?.warn({ vm: name, holder }, `registry: the API-registered VM ${name} uses the endpoint of VM ${holder}; this node does not serve it (registered through a node that did not know ${holder})`);
  }

  /** The discovery folder VM a unix socket would be, present or not, when it is not `registering`. */
  private async discoveryClaim(endpoint: Endpoint, registering: string): Promise<string | undefined> {
    if (endpoint.type !== 'unix') return undefined;
    const file = basename(endpoint.path);
    for (const spec of this.discovery.specs) {
      const real = await realpath(spec.path).catch(() => undefined);
      if (real === undefined || dirname(endpoint.path) !== real) continue;
      const name = nameInFolder(spec, file);
      if (name !== undefined && name !== registering) return name;
    }
    return undefined;
  }
}
