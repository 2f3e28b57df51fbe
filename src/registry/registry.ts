/**
 * Where each VM's agent socket is. Three sources, in order of precedence:
 *  1. `vms:` in the config file (static, cannot be deleted through the API),
 *  2. directory discovery (`registry.directories`: every `<name><suffix>` socket in a folder),
 *  3. API registration (`POST /v1/vms`), kept in the store so every gateway instance sees it.
 * The pool resolves endpoints synchronously from the cache kept here; `lookup()` fills it.
 * Endpoints come from the operator or an admin, never from an ordinary caller's request.
 */
import type { Dirent } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import type { Config, VmEntry } from '../config/schema.js';
import { errors } from '../errors.js';
import type { Endpoint } from '../qga/types.js';

export type VmSource = 'config' | 'directory' | 'api';

export interface VmRecord {
  name: string;
  endpoint: Endpoint;
  source: VmSource;
  labels?: Record<string, string>;
}

/** What the registry needs from the store for API-registered VMs. */
export interface VmRecordStore {
  /** false when a VM of that name already exists */
  putVm(rec: { name: string; endpoint: Endpoint; labels?: Record<string, string> }): Promise<boolean>;
  getVm(name: string): Promise<{ name: string; endpoint: Endpoint; labels?: Record<string, string> } | undefined>;
  deleteVm(name: string): Promise<boolean>;
  listVms(): Promise<Array<{ name: string; endpoint: Endpoint; labels?: Record<string, string> }>>;
}

const VM_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export class VmRegistry {
  private readonly statics = new Map<string, VmRecord>();
  /** directory and API entries seen lately; bounded by what exists, refreshed by lookup() */
  private readonly dynamic = new Map<string, VmRecord>();

  constructor(
    private readonly config: Pick<Config, 'vms' | 'registry'>,
    private readonly store?: VmRecordStore,
  ) {
    for (const vm of config.vms) this.statics.set(vm.name, fromEntry(vm));
  }

  /** Synchronous resolution for the pool; only VMs that lookup() or list() has seen. */
  resolve(name: string): Endpoint | undefined {
    return (this.statics.get(name) ?? this.dynamic.get(name))?.endpoint;
  }

  async lookup(name: string): Promise<VmRecord | undefined> {
    if (!VM_NAME.test(name)) return undefined;
    const s = this.statics.get(name);
    if (s) return s;
    const fromDir = await this.findInDirectories(name);
    if (fromDir) {
      this.dynamic.set(name, fromDir);
      return fromDir;
    }
    if (this.store) {
      const rec = await this.store.getVm(name);
      if (rec) {
        const r: VmRecord = { ...rec, source: 'api' };
        this.dynamic.set(name, r);
        return r;
      }
    }
    this.dynamic.delete(name);
    return undefined;
  }

  async require(name: string): Promise<VmRecord> {
    const rec = await this.lookup(name);
    if (!rec) throw errors.vmNotFound(name);
    return rec;
  }

  async list(): Promise<VmRecord[]> {
    const out = new Map<string, VmRecord>(this.statics);
    for (const dir of this.config.registry.directories) {
      let entries: Dirent[];
      try {
        entries = await readdir(dir.path, { withFileTypes: true });
      } catch {
        continue; // a missing discovery folder is not an error: VMs come and go
      }
      for (const entry of entries) {
        const f = entry.name;
        // only sockets, as lookup() requires: a stray file must not be listed and then 404
        if (!entry.isSocket() || !f.endsWith(dir.suffix)) continue;
        const name = f.slice(0, f.length - dir.suffix.length);
        if (!VM_NAME.test(name) || out.has(name)) continue;
        const rec: VmRecord = { name, endpoint: { type: 'unix', path: join(dir.path, f) }, source: 'directory' };
        out.set(name, rec);
        this.dynamic.set(name, rec);
      }
    }
    if (this.store) {
      for (const rec of await this.store.listVms()) {
        if (out.has(rec.name)) continue;
        const r: VmRecord = { ...rec, source: 'api' };
        out.set(rec.name, r);
        this.dynamic.set(rec.name, r);
      }
    }
    return [...out.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async register(rec: { name: string; endpoint: Endpoint; labels?: Record<string, string> }): Promise<VmRecord> {
    if (!this.config.registry.allowApiRegistration || !this.store) {
      throw errors.forbidden('API registration of VMs is disabled (registry.allowApiRegistration)');
    }
    if (rec.endpoint.type === 'unix') this.checkSocketRoot(rec.endpoint.path);
    if (await this.lookup(rec.name)) {
      throw errors.vmExists(rec.name);
    }
    if (!(await this.store.putVm(rec))) {
      throw errors.vmExists(rec.name);
    }
    const r: VmRecord = { ...rec, source: 'api' };
    this.dynamic.set(rec.name, r);
    return r;
  }

  async deregister(name: string): Promise<void> {
    const rec = await this.require(name);
    if (rec.source !== 'api' || !this.store) {
      throw errors.forbidden(`VM "${name}" comes from the ${rec.source === 'config' ? 'configuration file' : 'socket directory'} and cannot be deleted through the API`, { vm: name });
    }
    await this.store.deleteVm(name);
    this.dynamic.delete(name);
  }

  private async findInDirectories(name: string): Promise<VmRecord | undefined> {
    for (const dir of this.config.registry.directories) {
      const path = join(dir.path, name + dir.suffix);
      try {
        const st = await stat(path);
        if (st.isSocket()) return { name, endpoint: { type: 'unix', path }, source: 'directory' };
      } catch {
        // not there: try the next folder
      }
    }
    return undefined;
  }

  private checkSocketRoot(path: string): void {
    const roots = this.config.registry.allowedSocketRoots;
    if (!path.startsWith('/')) {
      throw errors.validation('endpoint.path must be absolute');
    }
    if (roots.length === 0) return;
    const abs = resolvePath(path);
    if (!roots.some((r) => abs.startsWith(resolvePath(r) + '/'))) {
      throw errors.forbidden(`endpoint.path must be under one of registry.allowedSocketRoots`);
    }
  }
}

function fromEntry(vm: VmEntry): VmRecord {
  return { name: vm.name, endpoint: vm.endpoint, source: 'config', ...(vm.labels ? { labels: vm.labels } : {}) };
}
