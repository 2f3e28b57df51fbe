/**
 * The simulated agent's command table, in the order of the QAPI schema (qga/qapi-schema.json),
 * which is the order QEMU registers them; guest-info lists them reversed, as the real one does.
 * sim-echo is the simulator's own test command and comes last.
 */
import { coreCommands, simEcho } from './core.js';
import { execCommands } from './exec.js';
import { fileCommands } from './files.js';
import { hardwareCommands } from './hardware.js';
import { networkCommands } from './network.js';
import { systemCommands } from './system.js';
import type { CommandDef } from './types.js';

const ORDER = [
  'guest-sync-delimited', 'guest-sync', 'guest-ping', 'guest-get-time', 'guest-set-time', 'guest-info',
  'guest-shutdown', 'guest-file-open', 'guest-file-close', 'guest-file-read', 'guest-file-write',
  'guest-file-seek', 'guest-file-flush', 'guest-fsfreeze-status', 'guest-fsfreeze-freeze',
  'guest-fsfreeze-freeze-list', 'guest-fsfreeze-thaw', 'guest-fstrim', 'guest-suspend-disk',
  'guest-suspend-ram', 'guest-suspend-hybrid', 'guest-network-get-interfaces', 'guest-get-vcpus',
  'guest-set-vcpus', 'guest-get-disks', 'guest-get-fsinfo', 'guest-set-user-password',
  'guest-get-memory-blocks', 'guest-set-memory-blocks', 'guest-get-memory-block-info',
  'guest-exec-status', 'guest-exec', 'guest-get-host-name', 'guest-get-users', 'guest-get-timezone',
  'guest-get-osinfo', 'guest-get-devices', 'guest-ssh-get-authorized-keys',
  'guest-ssh-add-authorized-keys', 'guest-ssh-remove-authorized-keys', 'guest-get-diskstats',
  'guest-get-cpustats', 'guest-get-load', 'guest-network-get-route',
];

const all: CommandDef[] = [
  ...coreCommands,
  ...fileCommands,
  ...execCommands,
  ...hardwareCommands,
  ...networkCommands,
  ...systemCommands.fsCommands,
  ...systemCommands.powerCommands,
  ...systemCommands.accountCommands,
  ...systemCommands.identityCommands,
];

const byName = new Map(all.map((c) => [c.name, c]));

function ordered(): CommandDef[] {
  const out = ORDER.map((name) => {
    const c = byName.get(name);
    if (!c) throw new Error(`simulator: no handler for ${name}`);
    return c;
  });
  if (out.length !== all.length) throw new Error('simulator: command table and schema order disagree');
  return [...out, simEcho];
}

/** All 44 reference commands plus sim-echo, in registration order. */
export const COMMANDS: readonly CommandDef[] = ordered();

/** The six commands the agent still runs while filesystems are frozen. */
export const FROZEN_ALLOWED = new Set([
  'guest-ping',
  'guest-info',
  'guest-sync',
  'guest-sync-delimited',
  'guest-fsfreeze-status',
  'guest-fsfreeze-thaw',
]);

export type { AgentRuntime, CommandDef, CommandInfo, ProcessState } from './types.js';
export { newProcessState } from './types.js';
