/**
 * Configured VMs kept registered as they were past a configuration reload that removed them or
 * moved them to another endpoint, while a freeze lease holds them. Every thaw of a lease (its
 * holder's, the deadline's, a forced or a shutdown thaw) reaches the guest through the VM's
 * registration; a reload (SIGHUP) that dropped a frozen VM at once would leave the guest frozen
 * with nothing left to thaw it, and one that moved its endpoint at once would send the thaw to
 * another guest. So a VM removed from `vms:` or moved while
 * the lease store holds a lease on it (or cannot say: the store is down) stays with its last entry,
 * logged once, until a later check finds no lease: then the reload's entry applies. A VM put back
 * as it was meanwhile simply stays.
 *
 * Not covered: a gateway restarted without the VM in its configuration no longer knows its
 * endpoint; its reconciliation logs the lease's VM as no longer registered (an error) and drops it.
 */
import type { VmEntry } from '../config/schema.js';
import type { FreezeLogger } from './types.js';

function sameEndpoint(a: VmEntry | undefined, b: VmEntry): boolean {
  return a !== undefined && JSON.stringify(a.endpoint) === JSON.stringify(b.endpoint);
}

/** what the freeze service tells of a VM's lease (FreezeService.removalBlocker) */
export type RemovalBlocker = (vm: string) => Promise<{ detail: string } | undefined>;

/**
 * Why a VM must stay registered as it is (its freeze lease), or undefined; a store that cannot tell
 * keeps it too (a thaw that cannot reach its guest is the worse mistake). Never throws. For the
 * VMs a reload removes (below) and the discovered ones whose socket goes away (registry/discovery.ts).
 */
export function holdReason(blocker: RemovalBlocker): (vm: string) => Promise<string | undefined> {
  return async (vm) => {
    try {
      return (await blocker(vm))?.detail;
    } catch (err) {
      return `the lease store cannot tell whether VM ${vm} is under a freeze lease (${err instanceof Error ? err.message : String(err)})`;
    }
  };
}

/** what applying a list of `vms:` entries changed (VmRegistry.reloadStatic) */
export interface AppliedVms {
  added: string[];
  removed: string[];
  changed: string[];
}

/**
 * The configured VMs in force: the configuration's `vms:`, plus the entries kept for a lease.
 * Reloads and the periodic checks of the kept ones apply their entries one at a time.
 */
export class RetainedVms {
  private readonly kept = new Map<string, VmEntry>();
  /** the configuration's entries (the last reload's) */
  private configured: readonly VmEntry[];
  /** what is registered now: `configured` with the kept entries in place */
  private applied: readonly VmEntry[];
  private turn: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private readonly why: (vm: string) => Promise<string | undefined>;

  constructor(
    initial: readonly VmEntry[],
    /** register these entries (the registry, and the channels of VMs gone or moved: the composition root) */
    private readonly apply: (entries: VmEntry[]) => Promise<AppliedVms>,
    blocker: RemovalBlocker,
    private readonly logger: FreezeLogger,
  ) {
    this.configured = this.applied = initial;
    this.why = holdReason(blocker);
  }

  /** A reload's `vms:`: what it changed, and the VMs it removed or moved that stay as they were for a lease. */
  reload(next: readonly VmEntry[]): Promise<AppliedVms & { kept: string[] }> {
    return this.inTurn(async () => {
      this.configured = next;
      await this.keepHeld(next);
      return { ...(await this.applyNow()), kept: [...this.kept.keys()] };
    });
  }

  /** Check the kept VMs every `intervalMs`; one whose lease has ended goes as its reload asked. */
  start(intervalMs: number): void {
    this.timer = setInterval(() => {
      if (this.kept.size === 0) return;
      void this.inTurn(() => this.check()).catch((err: unknown) => this.logger.warn({ err }, 'configuration reload: checking the VMs kept for their freeze leases failed'));
    }, intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private inTurn<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.turn.then(fn);
    this.turn = run.catch(() => undefined);
    return run;
  }

  /** Keep the entries registered now that `next` drops or moves while a lease holds them. */
  private async keepHeld(next: readonly VmEntry[]): Promise<void> {
    const wanted = new Map(next.map((vm) => [vm.name, vm] as const));
    // back in the configuration as it is registered: nothing left to keep
    for (const [name, entry] of [...this.kept]) if (sameEndpoint(wanted.get(name), entry)) this.kept.delete(name);
    for (const entry of this.applied) {
      const now = wanted.get(entry.name);
      if (sameEndpoint(now, entry) || this.kept.has(entry.name)) continue;
      const why = await this.why(entry.name);
      if (why === undefined) continue;
      this.kept.set(entry.name, entry);
      this.logger.warn(
        { vm: entry.name, why },
        now === undefined
          ? 'configuration reload: a VM removed from the configuration stays registered until its freeze lease ends, so that its thaw can reach it'
          : 'configuration reload: a VM moved to another endpoint keeps its old one until its freeze lease ends, so that its thaw reaches the guest it froze',
      );
    }
  }

  /** Drop the kept VMs no lease holds any more, and apply the configuration without them. */
  private async check(): Promise<void> {
    let dropped = false;
    for (const name of [...this.kept.keys()]) {
      if ((await this.why(name)) !== undefined) continue;
      this.kept.delete(name);
      dropped = true;
      this.logger.info({ vm: name }, 'configuration reload: the VM kept for its freeze lease is removed now that the lease has ended');
    }
    if (dropped) await this.applyNow();
  }

  private applyNow(): Promise<AppliedVms> {
    const entries = [...this.configured.filter((vm) => !this.kept.has(vm.name)), ...this.kept.values()];
    this.applied = entries;
    return this.apply(entries);
  }

}
