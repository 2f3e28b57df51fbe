/**
 * The Proxmox VE preset (`registry.presets: [proxmox]`): QEMU serves each running VM's agent on
 * `/var/run/qemu-server/<vmid>.qga`, and the node's own VM configs are `/etc/pve/qemu-server/<vmid>.conf`.
 * Each VM is named by its vmid (one canonical name per socket: globs, leases and metrics use it);
 * its Proxmox name and tags become the labels `pve.name` and `pve.tags`. A VM whose config turns
 * the agent off (`agent: 0`, `agent: enabled=0,…`) is not listed: `qm agent` would refuse it too.
 * A socket whose config cannot be read (the VM is being migrated or destroyed) is listed unlabelled.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MAX_LABEL_VALUE } from '../config/schema.js';

export const PVE_SOCKET_SUFFIX = '.qga';
export const PVE_SOCKET_DIR = '/var/run/qemu-server';
export const PVE_CONFIG_DIR = '/etc/pve/qemu-server';
/** vmids are 100 … 999999999 */
export const PVE_VMID = /^[1-9][0-9]{2,8}$/;
/** a VM config is a few kB; a larger file is not read as one */
const MAX_CONFIG_BYTES = 256 * 1024;
/** label values are at most this long (the API's label schema) */

export interface PveVmConfig {
  name?: string;
  /** tags as Proxmox keeps them, `;`-separated */
  tags?: string;
  /** false only when the config turns the agent off */
  agent: boolean;
}

const OFF = new Set(['0', 'no', 'off', 'false']);

/** The `agent:` property string: `[enabled=]<bool>[,fstrim_cloned_disks=…][,type=…]`. */
function agentEnabled(value: string): boolean {
  for (const part of value.split(',')) {
    const p = part.trim();
    const eq = p.indexOf('=');
    if (eq < 0) return !OFF.has(p.toLowerCase());
    if (p.slice(0, eq).trim() === 'enabled') return !OFF.has(p.slice(eq + 1).trim().toLowerCase());
  }
  return true;
}

/** The current configuration's properties (snapshot sections `[name]` and pending ones are ignored). */
export function parsePveConfig(text: string): PveVmConfig {
  const out: PveVmConfig = { agent: true };
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('[')) break;
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const key = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    if (key === 'name') out.name = value;
    else if (key === 'tags') {
      const tags = value.split(/[;, ]+/).filter((t) => t !== '');
      if (tags.length) out.tags = tags.join(';');
    } else if (key === 'agent') out.agent = agentEnabled(value);
  }
  return out;
}

/** The VM's config, or undefined when it cannot be read. */
export async function readPveConfig(configDir: string, vmid: string): Promise<PveVmConfig | undefined> {
  try {
    const buf = await readFile(join(configDir, `${vmid}.conf`));
    if (buf.length > MAX_CONFIG_BYTES) return undefined;
    return parsePveConfig(buf.toString('utf8'));
  } catch {
    return undefined;
  }
}

export function pveLabels(c: PveVmConfig | undefined): Record<string, string> | undefined {
  if (!c || (c.name === undefined && c.tags === undefined)) return undefined;
  return {
    ...(c.name !== undefined ? { 'pve.name': c.name.slice(0, MAX_LABEL_VALUE) } : {}),
    ...(c.tags !== undefined ? { 'pve.tags': c.tags.slice(0, MAX_LABEL_VALUE) } : {}),
  };
}
