/**
 * Every file handle this gateway holds open in an agent, per VM. Agent handles are global,
 * never time out and are never reused, so a handle we forget is leaked for the agent's lifetime.
 * Two owners:
 *  - `transfer`: a streaming download/upload owns it and closes it on every path; it stays listed
 *    here only if that close failed (`closeFailed`), so the reaper can try again;
 *  - `api`: opened through the raw handle routes; closed by the reaper after an idle time.
 */

export type HandleOwner = 'api' | 'transfer';

export interface TrackedHandle {
  vm: string;
  handle: number;
  owner: HandleOwner;
  /** unknown for a handle adopted from the raw routes (opened before a gateway restart, say) */
  path?: string;
  mode?: string;
  openedAt: number;
  lastUsedAt: number;
  /** agent commands in flight on it: the reaper never closes a busy handle */
  busy: number;
  closeFailed: boolean;
  /** when a close first found the VM unregistered (it may come back: a reload, its socket for a while) */
  vmGoneSince?: number;
}

export class HandleRegistry {
  private readonly byVm = new Map<string, Map<number, TrackedHandle>>();

  constructor(private readonly now: () => number = Date.now) {}

  add(vm: string, handle: number, info: { owner: HandleOwner; path?: string; mode?: string }): TrackedHandle {
    let m = this.byVm.get(vm);
    if (!m) this.byVm.set(vm, (m = new Map()));
    const now = this.now();
    const t: TrackedHandle = { vm, handle, ...info, openedAt: now, lastUsedAt: now, busy: 0, closeFailed: false };
    m.set(handle, t);
    return t;
  }

  get(vm: string, handle: number): TrackedHandle | undefined {
    return this.byVm.get(vm)?.get(handle);
  }

  remove(vm: string, handle: number): void {
    const m = this.byVm.get(vm);
    if (!m) return;
    m.delete(handle);
    if (m.size === 0) this.byVm.delete(vm);
  }

  begin(vm: string, handle: number): void {
    const t = this.get(vm, handle);
    if (t) {
      t.busy++;
      t.lastUsedAt = this.now();
    }
  }

  end(vm: string, handle: number): void {
    const t = this.get(vm, handle);
    if (t) {
      if (t.busy > 0) t.busy--;
      t.lastUsedAt = this.now();
    }
  }

  list(vm: string): TrackedHandle[] {
    return [...(this.byVm.get(vm)?.values() ?? [])];
  }

  count(vm: string, owner: HandleOwner): number {
    let n = 0;
    for (const t of this.byVm.get(vm)?.values() ?? []) if (t.owner === owner) n++;
    return n;
  }

  /** Handles the reaper should close now: idle API handles and transfer handles whose close failed. */
  due(idleMs: number): TrackedHandle[] {
    const cutoff = this.now() - idleMs;
    const out: TrackedHandle[] = [];
    for (const m of this.byVm.values()) {
      for (const t of m.values()) {
        if (t.busy > 0) continue;
        if (t.closeFailed || (t.owner === 'api' && t.lastUsedAt <= cutoff)) out.push(t);
      }
    }
    return out;
  }

  get total(): number {
    let n = 0;
    for (const m of this.byVm.values()) n += m.size;
    return n;
  }
}
