/**
 * Socket discovery: every `<name><suffix>` socket in a `registry.directories` folder is VM `<name>`,
 * and with the Proxmox preset every `<vmid>.qga` socket of the node (proxmox.ts). What is found is
 * kept here, per folder, and kept current three ways: a watch on each folder (and on the Proxmox
 * config folder) rescans it a moment after something changes; a listing first compares each
 * folder's modification time with the one it last scanned and rescans a folder that changed (so a
 * socket is listed as soon as it exists, watch or no watch); and a periodic full rescan
 * (`registry.rescanIntervalMs`) is the safety net for what a watch misses (/etc/pve is a FUSE
 * file system, inotify does not see other nodes' writes).
 *
 * A VM whose socket goes away (the VM stopped, crashed, migrated) or whose Proxmox config turns
 * the agent off while a freeze lease holds it stays registered as it was found (`keepWhile`), as a
 * configured VM does across a reload (freeze/retained-vms.ts): every thaw of that lease (its
 * holder's, the deadline's, a forced one) reaches the guest through the registration, and is
 * retried (503 while the socket is missing) until it gets through. Dropping it at once would leave
 * the guest frozen with nothing to thaw it. Each scan (and probe) asks again; once no lease holds
 * it, it goes.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { RegistrySettings } from './endpoints.js';
import { PVE_CONFIG_DIR, PVE_SOCKET_DIR, PVE_SOCKET_SUFFIX, PVE_VMID, pveLabels, readPveConfig, type PveVmConfig } from './proxmox.js';
import type { VmRecord } from './types.js';

export const VM_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export interface DiscoverySpec {
  path: string;
  suffix: string;
  /** the Proxmox preset: VM configs are read from here */
  pveConfigDir?: string;
}

/** The folders to discover VMs in: `registry.directories`, then the presets'. */
export function discoverySpecs(registry: RegistrySettings): DiscoverySpec[] {
  const out: DiscoverySpec[] = registry.directories.map((d) => ({ path: d.path, suffix: d.suffix }));
  if (registry.presets?.includes('proxmox')) {
    out.push({ path: registry.proxmox?.socketDir ?? PVE_SOCKET_DIR, suffix: PVE_SOCKET_SUFFIX, pveConfigDir: registry.proxmox?.configDir ?? PVE_CONFIG_DIR });
  }
  return out;
}

/** The VM name a file of the folder would be, or undefined. */
export function nameInFolder(spec: DiscoverySpec, file: string): string | undefined {
  if (!file.endsWith(spec.suffix)) return undefined;
  const name = file.slice(0, file.length - spec.suffix.length);
  return (spec.pveConfigDir !== undefined ? PVE_VMID : VM_NAME).test(name) ? name : undefined;
}

/** debounce of watch events: a VM start creates the socket and touches its config together */
const WATCH_SETTLE_MS = 50;
/** Proxmox configs read at once during a scan */
const CONFIG_READS = 32;

interface Folder {
  spec: DiscoverySpec;
  vms: Map<string, VmRecord>;
  /** VMs no longer found, kept for their freeze lease (keepWhile) */
  kept: Set<string>;
  /** the folder's (and config folder's) modification stamp the last scan started from */
  stamp?: string;
  scanning?: Promise<void>;
  again: boolean;
  /** one per watched directory (the socket folder, and the Proxmox config folder) */
  watchers: Map<string, FSWatcher>;
  settle?: NodeJS.Timeout;
}

export interface DiscoveryLogger {
  warn(obj: object, msg: string): void;
  info?(obj: object, msg: string): void;
}

/** why a VM no longer found must stay registered (its freeze lease), or undefined; it does not throw (freeze/retained-vms.ts holdReason) */
export type KeepReason = (vm: string) => Promise<string | undefined>;

export class Discovery {
  private readonly folders: Folder[];
  private timer?: NodeJS.Timeout;
  private running = false;
  private keepReason: KeepReason | undefined;
  private logger: DiscoveryLogger | undefined;

  constructor(
    specs: readonly DiscoverySpec[],
    /** names whose record appeared, changed or went away */
    private readonly onChange: (names: readonly string[]) => void,
  ) {
    this.folders = specs.map((spec) => ({ spec, vms: new Map(), kept: new Set(), again: false, watchers: new Map() }));
  }

  /** Keep a VM no longer found registered while `reason` names why (its freeze lease). */
  keepWhile(reason: KeepReason): void {
    this.keepReason = reason;
  }

  get specs(): DiscoverySpec[] {
    return this.folders.map((f) => f.spec);
  }

  /** The record of a discovered VM as last seen (the first folder that has it wins). */
  get(name: string): VmRecord | undefined {
    for (const f of this.folders) {
      const r = f.vms.get(name);
      if (r) return r;
    }
    return undefined;
  }

  /** Rescan the folders whose modification stamp changed since their last scan. */
  async refresh(): Promise<void> {
    await Promise.all(
      this.folders.map(async (f) => {
        if (f.scanning) await f.scanning;
        if ((await stampOf(f.spec)) !== f.stamp) await this.scan(f);
      }),
    );
  }

  async scanAll(): Promise<void> {
    await Promise.all(this.folders.map((f) => this.scan(f)));
  }

  /**
   * Is `name` a discovered VM right now? Asks the file system (a stat of the socket; the config for
   * a Proxmox VM not seen yet) and updates what is kept.
   */
  async probe(name: string): Promise<VmRecord | undefined> {
    let found: VmRecord | undefined;
    for (const f of this.folders) {
      const file = name + f.spec.suffix;
      if (nameInFolder(f.spec, file) === undefined) continue;
      const path = join(f.spec.path, file);
      const isSocket = await stat(path).then(
        (s) => s.isSocket(),
        () => false,
      );
      let rec: VmRecord | undefined;
      if (isSocket) {
        const known = f.vms.get(name);
        if (known) rec = known;
        else if (f.spec.pveConfigDir === undefined) rec = record(name, path);
        else {
          const c = await readPveConfig(f.spec.pveConfigDir, name);
          if (c?.agent !== false) rec = record(name, path, c);
        }
      }
      const before = f.vms.get(name);
      if (rec) f.kept.delete(name);
      else if (before && (await this.keeps(f, name))) rec = before;
      if (rec) f.vms.set(name, rec);
      else f.vms.delete(name);
      if (before !== rec) this.onChange([name]);
      found ??= rec;
    }
    return found;
  }

  /** Watch the folders and rescan every `intervalMs` (0: never). */
  start(intervalMs: number, logger?: DiscoveryLogger): void {
    this.running = true;
    this.logger = logger;
    for (const f of this.folders) this.watchFolder(f, logger);
    if (intervalMs > 0 && this.folders.length > 0) {
      this.timer = setInterval(() => {
        for (const f of this.folders) {
          // a directory missing until now (no VM started yet, /etc/pve not mounted yet) is watched once it exists
          this.watchFolder(f, logger);
          void this.scan(f);
        }
      }, intervalMs);
      this.timer.unref();
    }
  }

  stop(): void {
    this.running = false;
    clearInterval(this.timer);
    for (const f of this.folders) {
      clearTimeout(f.settle);
      for (const w of f.watchers.values()) w.close();
      f.watchers.clear();
    }
  }

  /** Is a VM of this folder no longer found kept for its freeze lease? Logged when it starts and when it ends. */
  private async keeps(f: Folder, name: string): Promise<boolean> {
    if (this.keepReason === undefined) return false;
    const why = await this.keepReason(name);
    if (why === undefined) {
      if (f.kept.delete(name)) this.logger?.info?.({ vm: name }, 'discovery: the VM kept for its freeze lease is removed now that the lease has ended');
      return false;
    }
    if (!f.kept.has(name)) {
      f.kept.add(name);
      this.logger?.warn(
        { vm: name, why },
        'discovery: a VM whose socket went away (or whose Proxmox config turned its agent off) stays registered until its freeze lease ends, so that its thaw can reach it',
      );
    }
    return true;
  }

  private watchFolder(f: Folder, logger?: DiscoveryLogger): void {
    if (!this.running) return;
    const dirs = [f.spec.path, ...(f.spec.pveConfigDir !== undefined ? [f.spec.pveConfigDir] : [])];
    for (const dir of dirs) {
      if (f.watchers.has(dir)) continue;
      try {
        const w = watch(dir, { persistent: false }, () => {
          clearTimeout(f.settle);
          f.settle = setTimeout(() => void this.scan(f), WATCH_SETTLE_MS);
          f.settle.unref();
        });
        w.on('error', () => {
          // the folder went away: the periodic rescan watches it again once it is back
          w.close();
          if (f.watchers.get(dir) === w) f.watchers.delete(dir);
        });
        f.watchers.set(dir, w);
      } catch (err) {
        // missing (no VM running yet) or not watchable: the periodic rescan covers it
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') logger?.warn({ err, dir }, 'cannot watch a discovery folder; relying on the periodic rescan');
      }
    }
  }

  /** One scan of a folder at a time; a request during a scan runs one more after it. */
  private scan(f: Folder): Promise<void> {
    if (f.scanning) {
      f.again = true;
      return f.scanning;
    }
    const run = (async () => {
      do {
        f.again = false;
        const stamp = await stampOf(f.spec);
        const next = await readFolder(f.spec);
        for (const [name, old] of f.vms) {
          if (next.has(name)) f.kept.delete(name);
          else if (await this.keeps(f, name)) next.set(name, old);
        }
        const changed: string[] = [];
        for (const [name, old] of f.vms) if (!next.has(name)) changed.push(name);
        for (const [name, rec] of next) {
          const old = f.vms.get(name);
          if (old && sameRecord(old, rec)) next.set(name, old);
          else changed.push(name);
        }
        f.vms = next;
        f.stamp = stamp;
        if (changed.length) this.onChange(changed);
      } while (f.again);
    })().finally(() => {
      f.scanning = undefined;
    });
    f.scanning = run;
    return run;
  }
}

function record(name: string, path: string, pve?: PveVmConfig): VmRecord {
  const labels = pveLabels(pve);
  return { name, endpoint: { type: 'unix', path }, source: 'directory', ...(labels ? { labels } : {}) };
}

function sameRecord(a: VmRecord, b: VmRecord): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

async function stampOf(spec: DiscoverySpec): Promise<string> {
  const one = (p: string) =>
    stat(p).then(
      (s) => `${s.ino}:${s.mtimeMs}`,
      () => 'missing',
    );
  return spec.pveConfigDir === undefined ? one(spec.path) : `${await one(spec.path)}|${await one(spec.pveConfigDir)}`;
}

async function readFolder(spec: DiscoverySpec): Promise<Map<string, VmRecord>> {
  const out = new Map<string, VmRecord>();
  let names: string[];
  try {
    // only sockets, as probe() requires: a stray file must not be listed and then 404
    const entries = await readdir(spec.path, { withFileTypes: true });
    names = entries.filter((e) => e.isSocket()).flatMap((e) => nameInFolder(spec, e.name) ?? []);
  } catch {
    return out; // a missing discovery folder is not an error: VMs come and go
  }
  names.sort();
  const configDir = spec.pveConfigDir;
  if (configDir === undefined) {
    for (const name of names) out.set(name, record(name, join(spec.path, name + spec.suffix)));
    return out;
  }
  const configs = new Array<PveVmConfig | undefined>(names.length);
  let next = 0;
  const reader = async (): Promise<void> => {
    while (next < names.length) {
      const i = next++;
      configs[i] = await readPveConfig(configDir, names[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONFIG_READS, names.length) }, reader));
  names.forEach((name, i) => {
    if (configs[i]?.agent !== false) out.set(name, record(name, join(spec.path, name + spec.suffix), configs[i]));
  });
  return out;
}
