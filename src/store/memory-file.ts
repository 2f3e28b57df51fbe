/** The embedded store's state file: the whole state as JSON, written to a temp file and renamed in. */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { errors } from '../errors.js';
import { errorMessage } from '../util/unknown.js';
import type { EndedRecord, Lease, VmRegistration } from './types.js';

export interface Snapshot {
  epoch: string;
  lastFence: number;
  sessions: Lease[];
  locks: Array<[string, { session: string; leaseId: string }]>;
  deadlines: Array<[string, number]>;
  idem: Array<[string, { session: string; leaseId: string; forgetAt: number }]>;
  vms: VmRegistration[];
  /** tombstones, oldest first; absent in files written before they existed */
  ended?: Array<[string, EndedRecord]>;
}

export function writeSnapshot(file: string, snap: Snapshot): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeFileSync(tmp, JSON.stringify(snap), { mode: 0o600 });
    // rename is atomic: a crash leaves the old state or the new one, never half of either
    renameSync(tmp, file);
  } catch (e) {
    throw errors.storeUnavailable(`cannot write the lease state file ${file}: ${errorMessage(e)}`, { cause: e });
  }
}

export function readSnapshot(file: string): Snapshot {
  return JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
}
