/**
 * Schemas of the freeze routes (single VM and freeze groups). Times are ISO 8601 strings; the
 * gateway's own fields are camelCase (`leaseId`, `expiresAt`, `ttlSeconds`), QGA's are verbatim
 * (`mountpoints`).
 */
import { Type } from 'typebox';
import { VmName } from './common.js';

/**
 * 86400 is only a sanity cap (freeze.maxTtlSeconds can be no higher); the configured maximum is
 * checked by the service, and a value past this cap is answered with the configured range too
 * (http/error-handler.ts, `x-max-from`): every out-of-range ttlSeconds gets the same 400.
 */
const TTL = Type.Integer({
  format: 'int32',
  minimum: 1,
  maximum: 86_400,
  // the served document states the configured maximum (schemas/document.ts: servedDocument)
  'x-max-from': 'freeze.maxTtlSeconds',
  description: 'lease length in seconds; default freeze.defaultTtlSeconds, at most freeze.maxTtlSeconds. There is no "never".',
});

const Mountpoints = Type.Array(Type.String({ pattern: '^/', minLength: 1, maxLength: 4096 }), {
  minItems: 1,
  maxItems: 256,
  description: 'absolute mount points to freeze (guest-fsfreeze-freeze-list); absent = every freezable filesystem',
});

const IsoTime = (description: string) => Type.String({ format: 'date-time', description });

export const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 255,
      description: 'a retry with the same key (same caller, same VMs) returns the same lease, not extended, and freezes nothing again',
    }),
  ),
});

export const FreezeBody = Type.Object(
  { mountpoints: Type.Optional(Mountpoints), ttlSeconds: Type.Optional(TTL) },
  { additionalProperties: false, title: 'FreezeRequest' },
);

export const FreezeLease = Type.Object(
  {
    leaseId: Type.String({ description: 'needed to renew and to thaw' }),
    fence: Type.Integer({ format: 'int64', description: 'grows with every lease ever handed out; never goes backwards' }),
    frozen: Type.Integer({ format: 'int64', description: 'number of filesystems frozen (the return of guest-fsfreeze-freeze)' }),
    createdAt: IsoTime('when the lease was taken'),
    expiresAt: IsoTime('the guest is thawed automatically at this time unless renewed'),
    hardDeadline: IsoTime('renewals never extend the lease past this (freeze.maxTotalSeconds)'),
    mountpoints: Type.Optional(Type.Array(Type.String())),
    reused: Type.Boolean({ description: 'true: an idempotent retry answered with the existing lease' }),
  },
  { title: 'FreezeLease' },
);

export const RenewBody = Type.Object(
  { leaseId: Type.String({ minLength: 1, maxLength: 128 }), ttlSeconds: Type.Optional(TTL) },
  { additionalProperties: false, title: 'RenewLeaseRequest' },
);

export const RenewResult = Type.Object(
  {
    leaseId: Type.String(),
    fence: Type.Integer({ format: 'int64' }),
    expiresAt: IsoTime('new expiry'),
    hardDeadline: IsoTime('renewals stop here'),
    capped: Type.Boolean({ description: 'the requested TTL would have passed hardDeadline; expiresAt is hardDeadline' }),
  },
  { title: 'FreezeRenewal' },
);

export const ThawQuery = Type.Object(
  {
    leaseId: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'the lease returned by the freeze (required unless force)' })),
    force: Type.Optional(Type.Boolean({ description: 'thaw whoever holds the lease (admin scope; audited)' })),
  },
  { additionalProperties: false },
);

const ThawFields = {
  thawed: Type.Integer({ format: 'int64', description: 'filesystems thawed by this thaw (the return of guest-fsfreeze-thaw)' }),
  frozen: Type.Integer({ format: 'int64', description: 'filesystems the freeze had frozen' }),
  consistent: Type.Boolean({
    description: 'thawed == frozen: the guest stayed frozen for the whole lease. false e.g. after the Windows VSS 10-second lapse',
  }),
  reason: Type.Optional(
    Type.String({
      enum: ['QUIESCE_TIMEOUT', 'PARTIAL_THAW', 'FREEZE_UNCONFIRMED', 'LEASE_UNVERIFIED', 'NO_LEASE', 'NOT_THAWED', 'THAW_FAILED'],
      description:
        'why consistent is false: QUIESCE_TIMEOUT the thaw failed but the guest is thawed (Windows VSS lapse); PARTIAL_THAW the thaw count differs from the freeze count; ' +
        'FREEZE_UNCONFIRMED the freeze timed out or was still in flight (forced thaw), so when the guest froze is unknown; LEASE_UNVERIFIED the lease store was down; NO_LEASE a forced thaw with no lease held; ' +
        'NOT_THAWED / THAW_FAILED a group member this request did not thaw / whose thaw failed',
    }),
  ),
  detail: Type.Optional(Type.String({ description: 'the reason in words' })),
};

export const ThawReport = Type.Object(
  {
    vm: Type.String(),
    ...ThawFields,
    forced: Type.Optional(Type.Boolean()),
    leaseCheck: Type.Optional(
      Type.String({ enum: ['store', 'local', 'unverified'], description: 'unverified: the lease store was down; the thaw was sent anyway' }),
    ),
  },
  { title: 'ThawReport' },
);

export const LeaseView = Type.Object(
  {
    leaseId: Type.Optional(Type.String({ description: "shown to the lease's owner and to admins only" })),
    owner: Type.String({ description: 'the principal that froze' }),
    fence: Type.Integer({ format: 'int64' }),
    createdAt: IsoTime('when the lease was taken'),
    expiresAt: IsoTime('automatic thaw time'),
    hardDeadline: IsoTime('renewal cap'),
    expired: Type.Boolean({ description: 'the lease has expired and its thaw is due' }),
    group: Type.Optional(Type.String({ description: 'the freeze group the VM belongs to' })),
    mountpoints: Type.Optional(Type.Array(Type.String())),
  },
  { title: 'FreezeLeaseInfo' },
);

export const FreezeStatus = Type.Object(
  {
    status: Type.String({ enum: ['thawed', 'frozen'], description: 'guest-fsfreeze-status, asked now' }),
    lease: Type.Union([LeaseView, Type.Null()], { description: 'the lease the VM is frozen under, if any' }),
    leaseStore: Type.String({
      enum: ['ok', 'unavailable', 'lost'],
      description:
        'unavailable: the store could not be read (`lease` is then the one this gateway holds for the VM, if any); ' +
        'lost: the store has no record of the lease this gateway holds and thaws the VM by (Redis lost its data)',
    }),
  },
  { title: 'FreezeStatus' },
);

export const GroupBody = Type.Object(
  {
    vms: Type.Array(VmName, { minItems: 1, maxItems: 1024, uniqueItems: true, description: 'at most freeze.maxGroupVms (default 64) VMs' }),
    ttlSeconds: Type.Optional(TTL),
    mountpoints: Type.Optional(Mountpoints),
  },
  { additionalProperties: false, title: 'FreezeGroupRequest' },
);

export const GroupParams = Type.Object({ id: Type.String({ pattern: '^[0-9a-f-]{36}$', description: 'freeze group id' }) }, { additionalProperties: false });

export const GroupCreated = Type.Object(
  {
    id: Type.String(),
    leaseId: Type.String(),
    fence: Type.Integer({ format: 'int64' }),
    createdAt: IsoTime('when the lease was taken'),
    expiresAt: IsoTime('every member is thawed at this time unless renewed'),
    hardDeadline: IsoTime('renewal cap'),
    vms: Type.Array(Type.Object({ vm: Type.String(), frozen: Type.Integer({ format: 'int64' }) })),
    reused: Type.Boolean(),
  },
  { title: 'FreezeGroup' },
);

export const GroupStatus = Type.Object(
  {
    id: Type.String(),
    lease: LeaseView,
    vms: Type.Array(
      Type.Object({
        vm: Type.String(),
        status: Type.String({
          enum: ['thawed', 'frozen', 'unknown', 'released'],
          description:
            "guest-fsfreeze-status, asked now; `released`: the member is no longer under the group's lease (thawed while another member's thaw was due, or thawed by force): it may be frozen again by anyone, so the group's snapshot of it is not consistent",
        }),
        error: Type.Optional(Type.Object({ code: Type.String(), detail: Type.String() })),
      }),
    ),
  },
  { title: 'FreezeGroupStatus' },
);

export const GroupRenewResult = Type.Object({ id: Type.String(), ...RenewResult.properties }, { title: 'FreezeGroupRenewal' });

export const GroupThawReport = Type.Object(
  {
    id: Type.String(),
    consistent: Type.Boolean({ description: 'every member stayed frozen for the whole lease' }),
    vms: Type.Array(Type.Object({ vm: Type.String(), ...ThawFields, skipped: Type.Optional(Type.Boolean()) })),
    forced: Type.Optional(Type.Boolean()),
  },
  { title: 'FreezeGroupThawReport' },
);
