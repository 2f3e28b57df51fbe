/**
 * The catalog of every command in the QGA reference (../shared/spec/qemu-ga-ref.txt, QEMU 10.0:
 * 44 commands). The channel reads the timeout class and the resend rule from here, the agent
 * service reads frozen-safety and success-response, routes and auth read the scope. One table, so
 * that "what is special about guest-X" is answered in one place.
 */
import type { CommandSpec, TimeoutClass } from './types.js';

/**
 * Default deadline per timeout class, in milliseconds. The agent is single-threaded: a command
 * that outlives its deadline is still running in the guest and blocks everything behind it, so
 * these are "how long before we give up waiting and resync", not "how long the work may take".
 */
export const DEFAULT_TIMEOUTS: Readonly<Record<TimeoutClass, number>> = {
  // Answered from memory or one syscall (ping, info, get-time, hostname, fsfreeze-status, open,
  // close, seek): 5 s is Proxmox's default and already generous — anything slower means the
  // agent is blocked behind another command or gone.
  fast: 5_000,
  // Walks sysfs/procfs/udev or spawns a helper (interfaces, fsinfo, disks, set-time runs
  // hwclock, set-user-password runs chpasswd): fast on an idle guest, seconds on a loaded one.
  normal: 10_000,
  // Replies that carry bulk data (file-read up to 48 MB → ~64 MiB of base64 at ~20 MB/s,
  // exec-status with up to 2 × 16 MiB of output), memory-block onlining, and the sync fence
  // after shutdown/suspend (the guest may take a while to either answer or drop the channel).
  slow: 60_000,
  // fsfreeze-freeze/-thaw run the guest's fsfreeze hooks (databases flushing and quiescing) and
  // sync every filesystem before FIFREEZE. Five minutes matches KubeVirt's default unfreeze
  // window; a freeze slower than that is useless for a backup anyway.
  freeze: 300_000,
  // fstrim walks every filesystem's free space; on a large thin-provisioned disk this takes
  // minutes. 10 minutes is what Proxmox allows.
  long: 600_000,
};

type Entry = Omit<CommandSpec, 'name'>;

/** Shorthands for the common shapes; every entry still states every field. */
const read = (timeout: TimeoutClass, since: string): Entry => ({
  timeout,
  idempotent: true,
  successResponse: true,
  frozenSafe: false,
  scope: 'read',
  since,
});

const change = (timeout: TimeoutClass, scope: 'write' | 'admin', since: string): Entry => ({
  timeout,
  idempotent: false,
  successResponse: true,
  frozenSafe: false,
  scope,
  since,
  mutating: true,
});

/** The four commands that answer nothing on success and are completed by a sync fence. */
const noReply = (scope: 'write' | 'admin', since: string): Entry => ({
  timeout: 'slow',
  idempotent: false,
  successResponse: false,
  frozenSafe: false,
  scope,
  since,
  mutating: true,
});

const frozenSafeRead = (since: string): Entry => ({ ...read('fast', since), frozenSafe: true });

const table: Record<string, Entry> = {
  // --- channel and agent -------------------------------------------------------------------
  'guest-sync-delimited': frozenSafeRead('1.1'),
  'guest-sync': frozenSafeRead('0.15.0'),
  'guest-ping': frozenSafeRead('0.15.0'),
  'guest-info': frozenSafeRead('0.15.0'),

  // --- time -------------------------------------------------------------------------------
  'guest-get-time': read('fast', '1.5'),
  // Not idempotent: a resent absolute time is stale by however long the first attempt took.
  'guest-set-time': change('normal', 'write', '1.5'),

  // --- power: no reply on success ---------------------------------------------------------
  'guest-shutdown': noReply('write', '0.15.0'),
  'guest-suspend-disk': noReply('write', '1.1'),
  'guest-suspend-ram': noReply('write', '1.1'),
  'guest-suspend-hybrid': noReply('write', '1.1'),

  // --- files: handles are global to the agent, positions advance -----------------------------
  // The whole family is admin: the agent runs as root, so open/read/write reach /etc/shadow.
  // open is not idempotent (a resend leaks a second handle that is never closed), read and
  // write advance the position, seek may be relative (whence=cur), close of a closed handle errors.
  'guest-file-open': change('fast', 'admin', '0.15.0'),
  'guest-file-close': change('fast', 'admin', '0.15.0'),
  // Not resent (the position advances), but it changes nothing in the guest: no audit record.
  'guest-file-read': { ...change('slow', 'admin', '0.15.0'), mutating: false },
  'guest-file-write': change('slow', 'admin', '0.15.0'),
  'guest-file-seek': change('fast', 'admin', '0.15.0'),
  // fflush() twice is the same as once: safe to resend.
  'guest-file-flush': { ...change('normal', 'admin', '0.15.0'), idempotent: true },

  // --- freeze --------------------------------------------------------------------------------
  'guest-fsfreeze-status': frozenSafeRead('0.15.0'),
  // A second freeze fails ("already frozen"): never resent.
  'guest-fsfreeze-freeze': change('freeze', 'write', '0.15.0'),
  'guest-fsfreeze-freeze-list': change('freeze', 'write', '2.2'),
  // Thaw IS resent: thawing thawed filesystems is a no-op that returns 0, and a lost thaw that is
  // not retried leaves the guest frozen — the one outcome a backup system must never cause.
  // (The second reply's count may be 0; the freeze service must not read it as "nothing thawed".)
  'guest-fsfreeze-thaw': { ...change('freeze', 'write', '0.15.0'), idempotent: true, frozenSafe: true },
  // Harmless to repeat, but a timed-out fstrim is most likely still running in the
  // single-threaded agent: a resend would queue a second full trim behind it.
  'guest-fstrim': change('long', 'write', '1.2'),

  // --- network -------------------------------------------------------------------------------
  'guest-network-get-interfaces': read('normal', '1.1'),
  'guest-network-get-route': read('normal', '9.1'),

  // --- processors, memory, devices -----------------------------------------------------------
  'guest-get-vcpus': read('normal', '1.5'),
  'guest-set-vcpus': change('normal', 'write', '1.5'),
  'guest-get-memory-blocks': read('normal', '2.3'),
  // Onlining/offlining memory migrates pages: seconds per block on a busy guest.
  'guest-set-memory-blocks': change('slow', 'write', '2.3'),
  'guest-get-memory-block-info': read('fast', '2.3'),
  'guest-get-cpustats': read('normal', '7.1'),
  'guest-get-load': read('fast', '10.0'),
  'guest-get-devices': read('normal', '5.2'),

  // --- disks and filesystems -----------------------------------------------------------------
  'guest-get-disks': read('normal', '5.2'),
  'guest-get-diskstats': read('normal', '7.1'),
  'guest-get-fsinfo': read('normal', '2.2'),

  // --- identity and users --------------------------------------------------------------------
  'guest-get-host-name': read('fast', '2.10'),
  'guest-get-users': read('fast', '2.10'),
  'guest-get-timezone': read('fast', '2.10'),
  'guest-get-osinfo': read('fast', '2.10'),
  // Credentials grant a login to the guest: admin. Spawns chpasswd (normal).
  'guest-set-user-password': change('normal', 'admin', '2.3'),
  'guest-ssh-get-authorized-keys': read('fast', '5.2'),
  // add is not resent: the reference does not promise that adding a present key is a no-op,
  // and with `reset` a stale resend could overwrite a newer key set.
  'guest-ssh-add-authorized-keys': change('normal', 'admin', '5.2'),
  // The reference: "It's not an error if the key is already missing" — same end state twice.
  'guest-ssh-remove-authorized-keys': { ...change('normal', 'admin', '5.2'), idempotent: true },

  // --- exec ----------------------------------------------------------------------------------
  // Runs anything as root in the guest: admin. Never resent (a second process would run).
  'guest-exec': change('normal', 'admin', '2.5'),
  // Not idempotent: the first reply with exited=true deletes the record in the agent, so a
  // resend after a lost reply gets an error, not the status. Bulk output: slow.
  // It only reads (the agent forgets the finished process): no audit record.
  'guest-exec-status': { ...change('slow', 'admin', '2.5'), mutating: false },
};

export const COMMANDS: Readonly<Record<string, CommandSpec>> = Object.freeze(
  Object.fromEntries(
    Object.entries(table).map(([name, entry]) => [name, Object.freeze({ name, ...entry })]),
  ),
);

/** The six commands a frozen agent still serves (QGA-FACTS: everything else is refused). */
export const FROZEN_SAFE: ReadonlySet<string> = new Set(
  Object.values(COMMANDS)
    .filter((c) => c.frozenSafe)
    .map((c) => c.name),
);

/** Commands with no reply on success (guest-info says success-response: false). */
export const NO_RESPONSE: ReadonlySet<string> = new Set(
  Object.values(COMMANDS)
    .filter((c) => !c.successResponse)
    .map((c) => c.name),
);

/**
 * The commands that change guest state: each one sent to an agent gets one audit start and one
 * completion record (src/agent/audit-commands.ts). A command this catalog does not know (raw
 * passthrough) is treated as mutating too.
 */
export const MUTATING: ReadonlySet<string> = new Set(
  Object.values(COMMANDS)
    .filter((c) => c.mutating === true)
    .map((c) => c.name),
);

export function commandSpec(name: string): CommandSpec | undefined {
  return Object.prototype.hasOwnProperty.call(COMMANDS, name) ? COMMANDS[name] : undefined;
}

/** Syntactic rule for a command name the gateway is willing to forward (raw passthrough). */
export const COMMAND_NAME_PATTERN = '^guest-[a-z0-9-]+$';

/** The class of a command newer than this catalog: it may carry bulk data or do real work in the guest. */
export const UNKNOWN_COMMAND_TIMEOUT: TimeoutClass = 'slow';

/** What a command absent from the catalog is treated as: never resent, has a reply, the catalog's class for unknown commands. */
export function defaultSpec(command: string): CommandSpec {
  return { name: command, timeout: UNKNOWN_COMMAND_TIMEOUT, idempotent: false, successResponse: true, frozenSafe: false, scope: 'admin', since: '0.0', mutating: true };
}

/** The timeout for a command: catalog class, or UNKNOWN_COMMAND_TIMEOUT for one it does not know. */
export function defaultTimeoutMs(name: string): number {
  const spec = commandSpec(name);
  return DEFAULT_TIMEOUTS[spec?.timeout ?? UNKNOWN_COMMAND_TIMEOUT];
}
