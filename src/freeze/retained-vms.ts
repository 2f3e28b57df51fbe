/**
 * Configured VMs kept registered as they were past a configuration reload that removed them or
 * moved them to another endpoint, while a freeze lease holds them. Every thaw of a lease (its
 * holder's, the deadline's, a forced or a shutdown thaw) reaches the guest through the VM's
 * registration; a reload (SIGHUP) that dropped a frozen
 * VM at once would leave the guest frozen with nothing left to thaw it, and one that moved its
 * endpoint at once would send the thaw to another guest. So a VM removed from `vms:` or moved while
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

export class RetainedVms {
  private readonly kept = new Map<string, VmEntry>();

  constructor(
    private readonly blocker: RemovalBlocker,
    private readonly logger: FreezeLogger,
  ) {}

  /** names kept now */
  get names(): string[] {
    return [...this.kept.keys()];
  }

  /**
   * The entries a reload applies: `next`, except that an entry of `previous` (what is registered
   * now) that `next` drops, or moves to another endpoint, stays as it is while a lease holds it.
   */
  async entriesFor(previous: readonly VmEntry[], next: readonly VmEntry[]): Promise<VmEntry[]> {
    const wanted = new Map(next.map((vm) => [vm.name, vm] as const));
    // back in the configuration as it is registered: nothing left to keep
    for (const [name, entry] of [...this.kept]) if (sameEndpoint(wanted.get(name), entry)) this.kept.delete(name);
    for (const entry of previous) {
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
    return [...next.filter((vm) => !this.kept.has(vm.name)), ...this.kept.values()];
  }

  /** Drop the kept VMs no lease holds any more; true when one went (the caller applies the entries again). */
  async check(): Promise<boolean> {
    let dropped = false;
    for (const name of [...this.kept.keys()]) {
      if ((await this.why(name)) !== undefined) continue;
      this.kept.delete(name);
      dropped = true;
      this.logger.info({ vm: name }, 'configuration reload: the VM kept for its freeze lease is removed now that the lease has ended');
    }
    return dropped;
  }

  private async why(vm: string): Promise<string | undefined> {
    try {
      return (await this.blocker(vm))?.detail;
    } catch (err) {
      return `the lease store cannot tell whether VM ${vm} is under a freeze lease (${err instanceof Error ? err.message : String(err)})`;
    }
  }
}
