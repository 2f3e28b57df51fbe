/** How a lease is shown over HTTP. */
import { groupOfSession, type Lease } from '../store/types.js';
import { freezeData, iso, type Caller } from './types.js';

export interface LeaseView {
  /** shown to the lease's owner and to admins only: whoever has it can thaw */
  leaseId?: string;
  owner: string;
  fence: number;
  createdAt: string;
  expiresAt: string;
  hardDeadline: string;
  expired: boolean;
  group?: string;
  mountpoints?: string[];
}

export function leaseView(l: Lease, caller: Caller, now = Date.now()): LeaseView {
  const d = freezeData(l);
  const group = groupOfSession(l.session);
  return {
    ...(l.owner === caller.name || caller.admin ? { leaseId: l.leaseId } : {}),
    owner: l.owner,
    fence: l.fence,
    createdAt: iso(l.createdAt),
    expiresAt: iso(l.expiresAt),
    hardDeadline: iso(l.hardDeadline),
    expired: l.expiresAt <= now,
    ...(group !== undefined ? { group } : {}),
    ...(d.mountpoints ? { mountpoints: d.mountpoints } : {}),
  };
}
