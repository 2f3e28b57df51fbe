/**
 * The API-registered VMs as this process knows them: read from the store (where every gateway
 * process registers them) at most once a second when a listing asks, and changed at once by the
 * registrations and deletions made here. A store read that started before a local change does not
 * undo it; a failed read keeps what was read before.
 */
import { performance } from 'node:perf_hooks';
import type { VmRecord, VmRecordStore } from './types.js';

/** re-read from the store at most this often */
export const API_REFRESH_MS = 1_000;

export class ApiVms {
  private readonly vms = new Map<string, VmRecord>();
  private reading?: Promise<void>;
  private readAt = -Infinity;
  private loaded = false;
  /** local registrations and deletions by sequence number */
  private seq = 0;
  private readonly touched = new Map<string, number>();

  constructor(
    private readonly store: VmRecordStore | undefined,
    /** a name whose record appeared, changed or went away */
    private readonly onChange: (name: string) => void,
  ) {}

  get(name: string): VmRecord | undefined {
    return this.vms.get(name);
  }

  /** What a lookup found in the store (or did not). */
  seen(name: string, rec: VmRecord | undefined): void {
    const had = this.vms.has(name);
    if (rec) this.vms.set(name, rec);
    else this.vms.delete(name);
    if (rec || had) this.onChange(name);
  }

  /** A registration (rec) or deletion (undefined) made by this process. */
  changed(name: string, rec: VmRecord | undefined): void {
    this.touched.set(name, ++this.seq);
    this.seen(name, rec);
  }

  /** Re-read the store when the last read is older than API_REFRESH_MS (or `force`). */
  refresh(force: boolean): Promise<void> {
    const store = this.store;
    if (!store) return Promise.resolve();
    if (this.reading) return this.reading;
    if (!force && performance.now() - this.readAt < API_REFRESH_MS) return Promise.resolve();
    const from = this.seq;
    const newer = (name: string): boolean => (this.touched.get(name) ?? -1) > from;
    const read = (async () => {
      try {
        const recs = await store.listVms();
        const present = new Set<string>();
        for (const rec of recs) {
          present.add(rec.name);
          if (newer(rec.name)) continue;
          const r: VmRecord = { ...rec, source: 'api' };
          const old = this.vms.get(rec.name);
          if (!old || JSON.stringify(old) !== JSON.stringify(r)) this.seen(rec.name, r);
        }
        for (const name of [...this.vms.keys()]) if (!present.has(name) && !newer(name)) this.seen(name, undefined);
        for (const [name, at] of this.touched) if (at <= from) this.touched.delete(name);
        this.readAt = performance.now();
        this.loaded = true;
      } catch (err) {
        // the store is unreachable: keep listing what was read before; the next listing tries again
        if (!this.loaded) throw err;
      } finally {
        this.reading = undefined;
      }
    })();
    this.reading = read;
    return read;
  }
}
