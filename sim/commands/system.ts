/**
 * Guest identity and administration: freeze/thaw, fstrim, shutdown/suspend, passwords, ssh keys,
 * host name, users, time zone, OS info. Freeze state lives in GuestState, so it survives an agent
 * reconnect or restart like the real isfrozen marker file.
 */
import type { JsonObject } from '../../src/qga/types.js';
import { generic } from '../errors.js';
import { list, opt, req } from '../visitor.js';
import { decodeBase64 } from './files.js';
import type { AgentRuntime, CommandDef } from './types.js';

function frozenMounts(rt: AgentRuntime, wanted: string[] | undefined): number {
  const mounts = rt.state.filesystems.map((f) => f.mountpoint);
  const n = wanted === undefined ? mounts.length : mounts.filter((m) => wanted.includes(m)).length;
  // the real agent marks itself frozen first and undoes it when nothing could be frozen
  rt.setFrozen(n > 0);
  rt.state.frozenCount = n;
  return n;
}

const fsCommands: CommandDef[] = [
  {
    name: 'guest-fsfreeze-status',
    since: '0.15.0',
    run: (rt) => (rt.state.frozen ? 'frozen' : 'thawed'),
  },
  {
    name: 'guest-fsfreeze-freeze',
    since: '0.15.0',
    run: (rt) => frozenMounts(rt, undefined),
  },
  {
    name: 'guest-fsfreeze-freeze-list',
    since: '2.2',
    args: [opt('mountpoints', list('str'))],
    run: (rt, args) => frozenMounts(rt, args.mountpoints as string[] | undefined),
  },
  {
    name: 'guest-fsfreeze-thaw',
    since: '0.15.0',
    run(rt) {
      const n = rt.state.frozen ? rt.state.frozenCount || rt.state.filesystems.length : 0;
      rt.setFrozen(false);
      rt.state.frozenCount = 0;
      return n;
    },
  },
  {
    name: 'guest-fstrim',
    since: '1.2',
    args: [opt('minimum', 'int')],
    run(rt, args) {
      const minimum = args.minimum === undefined ? 0 : Number(args.minimum);
      rt.state.trims.push({ minimum, at: rt.now() });
      return {
        paths: rt.state.filesystems.map((f) => ({ path: f.mountpoint, trimmed: f.totalBytes - f.usedBytes, minimum })),
      };
    },
  },
];

const powerCommands: CommandDef[] = [
  {
    name: 'guest-shutdown',
    since: '0.15.0',
    args: [opt('mode', 'str')],
    successResponse: false,
    run(rt, args) {
      const mode = (args.mode as string | undefined) ?? 'powerdown';
      if (!['halt', 'powerdown', 'reboot'].includes(mode)) throw generic("Parameter 'mode' expects halt|powerdown|reboot");
      rt.state.powerRequests.push({ command: 'guest-shutdown', mode, at: rt.now() });
      rt.shutdown(mode);
      return undefined;
    },
  },
  ...['guest-suspend-disk', 'guest-suspend-ram', 'guest-suspend-hybrid'].map(
    (name): CommandDef => ({
      name,
      since: '1.1',
      successResponse: false,
      run(rt) {
        rt.state.powerRequests.push({ command: name, at: rt.now() });
        return undefined;
      },
    }),
  ),
];

function home(rt: AgentRuntime, username: string): string {
  const dir = rt.state.accounts.get(username);
  // getpwnam() leaves errno at 0 for an unknown user, so glib reports strerror(0)
  if (dir === undefined) throw generic(`failed to lookup user '${username}': Success`);
  return dir;
}

function checkKeys(keys: string[]): void {
  for (const k of keys) {
    if (k.startsWith('#') || k.includes('\n')) throw generic(`invalid OpenSSH public key: '${k}'`);
  }
}

function readKeys(rt: AgentRuntime, path: string): string[] | undefined {
  const data = rt.state.files.read(path);
  return data === undefined ? undefined : data.toString('utf8').split('\n');
}

function writeKeys(rt: AgentRuntime, path: string, keys: string[]): void {
  rt.state.files.setRegular(path, Buffer.from(keys.join('\n')));
}

const accountCommands: CommandDef[] = [
  {
    name: 'guest-set-user-password',
    since: '2.3',
    args: [req('username', 'str'), req('password', 'str'), req('crypted', 'bool')],
    run(rt, args) {
      const username = args.username as string;
      const raw = decodeBase64(args.password as string);
      if (raw.includes(0x0a)) throw generic('forbidden characters in raw password');
      if (username.includes('\n') || username.includes(':')) throw generic('forbidden characters in username');
      if (!rt.state.accounts.has(username)) throw generic('child process has failed to set user password');
      rt.state.passwordChanges.push({ username, crypted: args.crypted as boolean, at: rt.now() });
      return undefined;
    },
  },
  {
    name: 'guest-ssh-get-authorized-keys',
    since: '5.2',
    args: [req('username', 'str')],
    run(rt, args) {
      const path = `${home(rt, args.username as string)}/.ssh/authorized_keys`;
      const lines = readKeys(rt, path);
      if (!lines) throw generic(`failed to read '${path}': Failed to open file \u201c${path}\u201d: No such file or directory`);
      // QAPI_LIST_PREPEND in the real agent: the list comes back reversed
      return { keys: lines.map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')).reverse() };
    },
  },
  {
    name: 'guest-ssh-add-authorized-keys',
    since: '5.2',
    args: [req('username', 'str'), req('keys', list('str')), opt('reset', 'bool')],
    run(rt, args) {
      const keys = args.keys as string[];
      checkKeys(keys);
      const dir = `${home(rt, args.username as string)}/.ssh`;
      const existing = args.reset === true ? undefined : readKeys(rt, `${dir}/authorized_keys`);
      if (!existing) rt.state.files.mkdir(dir);
      const all = existing ?? [];
      for (const k of keys) if (!all.includes(k)) all.push(k);
      writeKeys(rt, `${dir}/authorized_keys`, all);
      return undefined;
    },
  },
  {
    name: 'guest-ssh-remove-authorized-keys',
    since: '5.2',
    args: [req('username', 'str'), req('keys', list('str'))],
    run(rt, args) {
      const keys = args.keys as string[];
      checkKeys(keys);
      const path = `${home(rt, args.username as string)}/.ssh/authorized_keys`;
      const lines = readKeys(rt, path);
      if (lines) writeKeys(rt, path, lines.filter((l) => !keys.includes(l)));
      return undefined;
    },
  },
];

const identityCommands: CommandDef[] = [
  {
    name: 'guest-get-host-name',
    since: '2.10',
    run: (rt) => ({ 'host-name': rt.state.hostname }),
  },
  {
    name: 'guest-get-users',
    since: '2.10',
    run: (rt) =>
      rt.state.users.map((u) => {
        const o: JsonObject = { user: u.user };
        if (u.domain !== undefined) o.domain = u.domain;
        o['login-time'] = u.loginTime;
        return o;
      }),
  },
  {
    name: 'guest-get-timezone',
    since: '2.10',
    run: (rt) => ({ zone: rt.state.timezone.zone, offset: rt.state.timezone.offset }),
  },
  {
    name: 'guest-get-osinfo',
    since: '2.10',
    run: (rt) => ({ ...rt.state.osinfo }),
  },
];

export const systemCommands = { fsCommands, powerCommands, accountCommands, identityCommands };
