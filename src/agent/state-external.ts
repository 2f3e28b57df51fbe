/**
 * Freezes nobody owns: a VM whose agent says "frozen" while the lease store holds no lease of ours
 * for it (frozen by `qm guest cmd`, a script on the raw socket, a backup tool that died). Every
 * guest-fsfreeze-status reply goes through observed(): the probe's and the callers' alike.
 *
 * Such a VM is shown `frozen: true` with `freeze.owner: "external"` and `since` (when we first saw
 * it frozen that way), counted in qga_vm_frozen, listed by GET /v1/freezes, and logged at warn
 * once per episode. It stops being external when a status read says thawed, or when the gateway
 * itself freezes or thaws it. Entries are bounded by the registered VMs (forget() on removal).
 */
import type { Logger } from 'pino';

export interface ExternalFreeze {
  vm: string;
  /** ISO time the gateway first saw the VM frozen with no lease of its own */
  since: string;
}

/** true: a lease of ours holds the VM; false: none; undefined: cannot tell (store down) */
export type LeaseLookup = (vm: string) => Promise<boolean | undefined>;

export class ExternalFreezes {
  private readonly frozen = new Map<string, number>();
  /** per VM, the number of the latest observation, so a slow lease lookup cannot undo a newer one */
  private readonly seq = new Map<string, number>();
  private next = 0;
  private readonly listeners = new Set<() => void>();

  constructor(
    private readonly hasLease: LeaseLookup | undefined,
    private readonly logger?: Pick<Logger, 'warn' | 'info'>,
    private readonly clock: () => number = Date.now,
  ) {}

  /** A guest-fsfreeze-status reply for `vm`. Resolves once it is accounted for (never rejects). */
  async observed(vm: string, status: unknown): Promise<void> {
    const n = ++this.next;
    this.seq.set(vm, n);
    if (status !== 'frozen') return this.clear(vm, 'thawed');
    if (this.frozen.has(vm) || !this.hasLease) return;
    let held: boolean | undefined;
    try {
      held = await this.hasLease(vm);
    } catch {
      held = undefined;
    }
    if (this.seq.get(vm) !== n) return;
    if (held === false) this.mark(vm);
    else if (held === true) this.clear(vm, 'ours');
  }

  /** The gateway froze or thawed the VM itself: whatever it was, it is ours (or thawed) now. */
  cleared(vm: string): void {
    this.seq.set(vm, ++this.next);
    this.clear(vm, 'ours');
  }

  get(vm: string): ExternalFreeze | undefined {
    const at = this.frozen.get(vm);
    return at === undefined ? undefined : { vm, since: new Date(at).toISOString() };
  }

  list(): ExternalFreeze[] {
    return [...this.frozen.keys()].sort().map((vm) => this.get(vm) as ExternalFreeze);
  }

  /** since when (ms since 1970) the VM has been frozen externally */
  sinceMs(vm: string): number | undefined {
    return this.frozen.get(vm);
  }

  forget(vm: string): void {
    this.seq.delete(vm);
    if (this.frozen.delete(vm)) this.emit();
  }

  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private mark(vm: string): void {
    const since = this.clock();
    this.frozen.set(vm, since);
    this.logger?.warn(
      { vm, since: new Date(since).toISOString() },
      'VM is frozen with no lease of this gateway (frozen outside it: qm, a script on the agent socket, a backup tool); it stays frozen until someone thaws it',
    );
    this.emit();
  }

  private clear(vm: string, why: 'thawed' | 'ours'): void {
    const since = this.frozen.get(vm);
    if (since === undefined) return;
    this.frozen.delete(vm);
    this.logger?.info({ vm, frozenSince: new Date(since).toISOString(), why }, 'VM no longer frozen outside the gateway');
    this.emit();
  }

  private emit(): void {
    for (const fn of this.listeners) fn();
  }
}
