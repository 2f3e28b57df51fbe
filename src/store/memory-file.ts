/**
 * The embedded store's state file: the whole state as JSON, written to a temp file and renamed in.
 * StateFile.write() makes the changes of one event-loop turn ONE write at its end
 * (util/turn-end.ts): the file holds every tombstone (up to MemoryStore's maxEndedLeases), so a
 * write can take milliseconds of the event loop (~5 ms with 10,000 measured here), and a backup
 * system freezing and thawing many VMs at once must not pay that once per call.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { errors } from '../errors.js';
import { atTurnEnd } from '../util/turn-end.js';
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

export class StateFile {
  /** the write that will carry the changes made since the last one */
  private pending: { written: Promise<void>; resolve: () => void; reject: (err: unknown) => void } | undefined;

  constructor(
    readonly path: string,
    private readonly snapshot: () => Snapshot,
  ) {}

  /**
   * A change was made: settles once the file holds it (a write at the end of this turn, shared by
   * every change of the turn). Rejects (STORE_UNAVAILABLE) if that write fails.
   */
  write(): Promise<void> {
    if (this.pending === undefined) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const written = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.pending = { written, resolve, reject };
      atTurnEnd(this.writePending, undefined, undefined);
    }
    return this.pending.written;
  }

  /** The pending write, now (at the end of its turn, or when the store closes). */
  readonly writePending = (): void => {
    const w = this.pending;
    if (w === undefined) return;
    this.pending = undefined;
    try {
      writeSnapshot(this.path, this.snapshot());
    } catch (e) {
      w.reject(e);
      return;
    }
    w.resolve();
  };
}
