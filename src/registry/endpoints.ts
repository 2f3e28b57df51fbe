/**
 * Which endpoints API registration may use, and how endpoints are compared: a unix socket by the
 * real path the kernel would connect to (found without touching the socket), a TCP endpoint by
 * host:port. Used by VmRegistry (registry.ts).
 */
import { readlink, realpath } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve as resolvePath } from 'node:path';
import { DEFAULT_SOCKET_ROOTS, type Config, type VmEntry } from '../config/schema.js';
import type { Endpoint } from '../qga/types.js';
import { PVE_SOCKET_DIR } from './proxmox.js';

/**
 * The registry settings this layer reads. The discovery settings added later (presets, proxmox,
 * rescanIntervalMs) are optional here, so a registry can be built from a hand-made section.
 */
export type RegistrySettings = Omit<Config['registry'], 'presets' | 'proxmox' | 'rescanIntervalMs'> & Partial<Pick<Config['registry'], 'presets' | 'proxmox' | 'rescanIntervalMs'>>;
export interface RegistryConfig {
  vms: readonly VmEntry[];
  registry: RegistrySettings;
}

/** as the kernel's own limit on symlinks followed in one path (ELOOP) */
const MAX_SYMLINKS = 40;

/**
 * The roots API-registered unix sockets must resolve into: `registry.allowedSocketRoots` when
 * set, else the hypervisors' own directories plus the directories of the `vms:` sockets, of
 * `registry.directories` and of the Proxmox preset's sockets. Not yet resolved (realpath) and
 * possibly missing.
 */
export function socketRootsOf(config: RegistryConfig): string[] {
  const set = config.registry.allowedSocketRoots;
  if (set) return [...set];
  const roots = new Set<string>(DEFAULT_SOCKET_ROOTS);
  for (const vm of config.vms) if (vm.endpoint.type === 'unix') roots.add(dirname(resolvePath(vm.endpoint.path)));
  for (const dir of config.registry.directories) roots.add(resolvePath(dir.path));
  if (config.registry.presets?.includes('proxmox')) roots.add(resolvePath(config.registry.proxmox?.socketDir ?? PVE_SOCKET_DIR));
  return [...roots];
}

/**
 * The real path a unix socket path names, found without touching the socket: the real path of its
 * directory (symlinks and `..` resolved as the kernel resolves them when it connects) joined with
 * its last component; where that component is itself a symlink, the same again for the link's
 * target. `admit(dir)` is asked about each directory before anything in it is read, so nothing is
 * read in a directory it refuses; undefined when a directory is refused or missing, or the path
 * does not end in a name.
 */
export async function canonicalSocketPath(path: string, admit: (realDir: string) => boolean = () => true): Promise<string | undefined> {
  let p = path;
  for (let links = 0; links <= MAX_SYMLINKS; links++) {
    const name = basename(p);
    if (!isAbsolute(p) || p.endsWith('/') || name === '' || name === '.' || name === '..') return undefined;
    let dir: string;
    try {
      dir = await realpath(dirname(p));
    } catch {
      return undefined; // missing, not a directory, no permission: all the same answer
    }
    if (!admit(dir)) return undefined;
    const full = join(dir, name);
    let target: string;
    try {
      target = await readlink(full);
    } catch (e) {
      // not a symlink (EINVAL), or nothing there yet (ENOENT): this is the path connect() will use;
      // anything else is no answer — a path with a NUL among them, which readlink refuses and the
      // kernel's connect() would cut short at the NUL (another VM's socket)
      const code = e instanceof Error && 'code' in e ? e.code : undefined;
      if (code === 'EINVAL' || code === 'ENOENT') return full;
      return undefined;
    }
    // not normalised: `..` after a symlinked directory must go where the kernel goes
    p = isAbsolute(target) ? target : `${dir === '/' ? '' : dir}/${target}`;
  }
  return undefined;
}

function isInside(path: string, root: string): boolean {
  return root === '/' || path.startsWith(root + '/');
}

/** `host:port` as compared by the allowlist and the one-VM-per-endpoint rule */
function tcpKey(host: string, port: number | '*'): string {
  const h = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  return `${h.toLowerCase()}:${port}`;
}

/** A `host:port` or `host:*` entry of registry.allowedTcpEndpoints, as a key. */
function allowedTcpKey(entry: string): string {
  const at = entry.lastIndexOf(':');
  const port = entry.slice(at + 1);
  return tcpKey(entry.slice(0, at), port === '*' ? '*' : Number(port));
}

/**
 * The endpoint as it will be stored (a unix socket by its real path), or undefined when it may
 * not be registered. A unix path is resolved directory by directory, and nothing is read in a
 * directory outside the roots, so a path that does not exist and one that exists outside the
 * roots are refused by the same steps; the socket itself is never connected to nor stat'ed.
 */
export async function admissibleEndpoint(endpoint: Endpoint, config: RegistryConfig): Promise<Endpoint | undefined> {
  if (endpoint.type === 'tcp') {
    const allowed = new Set(config.registry.allowedTcpEndpoints.map(allowedTcpKey));
    const ok = allowed.has(tcpKey(endpoint.host, endpoint.port)) || allowed.has(tcpKey(endpoint.host, '*'));
    return ok ? endpoint : undefined;
  }
  const roots: string[] = [];
  for (const root of socketRootsOf(config)) {
    const real = await realpath(root).catch(() => undefined);
    if (real !== undefined) roots.push(real);
  }
  const path = await canonicalSocketPath(endpoint.path, (dir) => roots.some((root) => dir === root || isInside(dir, root)));
  return path === undefined ? undefined : { type: 'unix', path };
}

export function endpointKey(e: Endpoint): string {
  return e.type === 'unix' ? `unix:${e.path}` : `tcp:${tcpKey(e.host, e.port)}`;
}
