/**
 * The fencing of a thaw (thaw.ts): whether a thaw under a lease has become STALE. The store is
 * asked twice: before the thaw is queued, and again when it reaches the wire (the channel's gate:
 * the socket held, nothing else on it), since it may wait for the socket meanwhile (another
 * process holds it) while its lease is ended and the VM frozen under another lease.
 * The rule is the same both times: another lease holds the VM, or the lease has ended → nothing is
 * sent; except a rollback's, which follows a freeze this process has just sent: if the lease ended
 * meanwhile (a deadline thaw ran before the late freeze landed), the guest is frozen under no lease
 * and only this thaw will undo it. The store not answering: sent anyway (an unneeded thaw costs
 * nothing, a missing one leaves a guest frozen).
 */
import { errors, type GatewayError } from '../errors.js';
import { vmKey, type FenceCheck, type Lease, type LeaseStore } from '../store/types.js';
import type { ThawTrigger } from './types.js';

/** how long the check at the wire waits for the store (the VM's line waits meanwhile); past it the thaw goes */
export const GATE_STORE_WAIT_MS = 1_000;

/**
 * Why a thaw is stale by this check, or undefined when it may go (`rollback`: the thaw of a
 * rollback). The one rule of a thaw's fence: here, at the wire, and on the node serving a VM for
 * another node (http/routes/cluster-internal.ts).
 */
export function staleBy(c: FenceCheck | undefined, rollback: boolean): 'ended' | 'superseded' | undefined {
  if (c?.state === 'superseded') return 'superseded';
  if (c?.state === 'ended' && !rollback) return 'ended';
  return undefined;
}

/**
 * The check at the wire (ExecuteOptions.gate): `true` sends the thaw, a LEASE_CONFLICT (reason
 * `fenced`) refuses it. Waits for the store at most `storeWaitMs` (the thaw's own), GATE_STORE_WAIT_MS at most.
 */
export async function fenceAtWire(store: LeaseStore, vm: string, lease: Lease, trigger: ThawTrigger, storeWaitMs?: number): Promise<true | Error> {
  let c: FenceCheck;
  try {
    c = await store.check(vmKey(vm), lease.leaseId, lease.epoch, { timeoutMs: Math.min(storeWaitMs ?? GATE_STORE_WAIT_MS, GATE_STORE_WAIT_MS) });
  } catch {
    return true;
  }
  const stale = staleBy(c, trigger === 'rollback');
  if (stale === undefined) return true;
  return errors.leaseConflict(`lease ${lease.leaseId} ${stale === 'superseded' ? 'no longer holds' : 'has ended on'} VM ${vm}: the fence checked at the wire refused the thaw; nothing was sent`, {
    vm,
    command: 'guest-fsfreeze-thaw',
    extra: { reason: 'fenced', state: stale, leaseId: lease.leaseId },
  });
}

/** a thaw refused at the wire by its fence (here, or by the node serving the VM): why, else undefined */
export function refusedAtWire(err: GatewayError): 'ended' | 'superseded' | undefined {
  if (err.code !== 'LEASE_CONFLICT' || err.extra?.reason !== 'fenced') return undefined;
  const state = err.extra.state;
  return state === 'ended' || state === 'superseded' ? state : undefined;
}
