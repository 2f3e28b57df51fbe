/** The registry's record types, shared by its parts (registry.ts, discovery.ts, api-vms.ts). */
import type { Endpoint } from '../qga/types.js';

export type VmSource = 'config' | 'directory' | 'api';

export interface VmRecord {
  name: string;
  endpoint: Endpoint;
  source: VmSource;
  labels?: Record<string, string>;
  /** this VM's idle release of its agent socket (overrides agent.idleReleaseMs) */
  idleReleaseMs?: number;
}

/** What the registry needs from the store for API-registered VMs. */
export interface VmRecordStore {
  /** false when a VM of that name already exists */
  putVm(rec: { name: string; endpoint: Endpoint; labels?: Record<string, string> }): Promise<boolean>;
  getVm(name: string): Promise<{ name: string; endpoint: Endpoint; labels?: Record<string, string> } | undefined>;
  deleteVm(name: string): Promise<boolean>;
  listVms(): Promise<Array<{ name: string; endpoint: Endpoint; labels?: Record<string, string> }>>;
}

/**
 * How long a file handle or an exec pid of a VM that left the registry stays tracked: a reload
 * that drops a VM for a moment, or a discovered socket gone for a while, brings the same agent
 * back, which still holds them (h11 F2: forgotten at once, they stayed open or unreaped in the
 * agent). Past this the VM is taken as gone for good.
 */
export const VM_GONE_GRACE_MS = 600_000;
