/**
 * What a thaw reports of one VM (thaw.ts): how many filesystems it thawed against how many the
 * lease froze, and when they differ, why the snapshot taken under the lease may not be consistent.
 */
import type { VmThawReport } from './types.js';

export function thawReport(vm: string, thawed: number, frozen: number): VmThawReport {
  if (thawed === frozen) return { vm, thawed, frozen, consistent: true };
  return {
    vm,
    thawed,
    frozen,
    consistent: false,
    reason: 'PARTIAL_THAW',
    detail:
      thawed < frozen
        ? `only ${thawed} of the ${frozen} frozen filesystems were still frozen: the guest thawed (part of) them before this thaw (another tool, the guest itself, or Windows VSS giving up after ~10 s)`
        : `${thawed} filesystems were thawed but this lease had frozen ${frozen}: something else froze the guest too`,
  };
}

/**
 * The thaw of a lease whose freeze did not answer: how many filesystems it froze, and when, is
 * unknown. `inFlight`: a forced thaw that came while that freeze was still running (it is answered
 * as failed, never 201); else the freeze timed out.
 */
export function unconfirmedReport(vm: string, thawed: number, inFlight = false, stopped = false): VmThawReport {
  return {
    vm,
    thawed,
    frozen: thawed,
    consistent: false,
    reason: 'FREEZE_UNCONFIRMED',
    detail: inFlight
      ? "this lease's freeze was still in flight: it is answered 409 LEASE_CONFLICT (ended by this forced thaw) and its guest left thawed, so no snapshot is taken under it"
      : stopped
        ? "this lease's freeze never completed (the gateway that took it stopped mid-way): whether and when the guest froze is unknown, so a snapshot taken under this lease may not be consistent"
        : 'the freeze did not answer within its timeout: whether and when the guest froze is unknown, so a snapshot taken under this lease may not be consistent',
  };
}

/** A thaw that failed but whose guest is thawed (Windows VSS ends a freeze on its own after ~10 s). */
export function quiesceTimeoutReport(vm: string, frozen: number, why: string): VmThawReport {
  return {
    vm,
    thawed: 0,
    frozen,
    consistent: false,
    reason: 'QUIESCE_TIMEOUT',
    detail: `the thaw failed but the guest is thawed (Windows VSS ends a freeze on its own after ~10 s): ${why}`,
  };
}
