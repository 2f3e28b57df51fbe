/**
 * QGA types of the agent itself and of the guest's identity: guest-info, guest-get-host-name,
 * guest-get-users, guest-get-timezone, guest-get-osinfo, guest-get-load, and the string modes of
 * guest-shutdown and the suspend commands. Names and descriptions follow the reference.
 */
import { Type } from 'typebox';
import { enumComponent, objectComponent } from './component.js';

export const GuestAgentCommandInfo = objectComponent('GuestAgentCommandInfo', 'Information about guest agent commands. (since 1.1.0)', {
  name: Type.String({ description: 'name of the command' }),
  enabled: Type.Boolean({ description: 'whether command is currently enabled by guest admin' }),
  'success-response': Type.Boolean({ description: 'whether command returns a response on success (since 1.7)' }),
});

export const GuestAgentInfo = objectComponent('GuestAgentInfo', 'Information about guest agent. (since 0.15.0)', {
  version: Type.String({ description: 'guest agent version' }),
  supported_commands: Type.Array(GuestAgentCommandInfo, { description: 'Information about guest agent commands' }),
});

export const GuestHostName = objectComponent('GuestHostName', 'The host name of the machine (guest-get-host-name). (since 2.10)', { 'host-name': Type.String({ description: 'Fully qualified domain name of the guest OS' }) });

export const GuestUser = objectComponent('GuestUser', 'A currently active user. (since 2.10)', {
  user: Type.String({ description: 'Username' }),
  domain: Type.Optional(Type.String({ description: 'Logon domain (windows only)' })),
  'login-time': Type.Number({
    description:
      'Time of login of this user on the computer. If multiple instances of the user are logged in, the ' +
      'earliest login time is reported. The value is in fractional seconds since epoch time.',
  }),
});

export const GuestTimezone = objectComponent('GuestTimezone', 'Timezone information of the guest. (since 2.10)', {
  zone: Type.Optional(
    Type.String({
      description: 'Timezone name. These values may differ depending on guest/OS and should only be used for informational purposes.',
    }),
  ),
  offset: Type.Integer({
    format: 'int64',
    description: 'Offset to UTC in seconds, negative numbers for time zones west of GMT, positive numbers for east',
  }),
});

const osField = (posix: string, windows: string) =>
  Type.Optional(Type.String({ description: `POSIX: ${posix}; Windows: ${windows}` }));

export const GuestOSInfo = objectComponent(
  'GuestOSInfo',
  'Guest operating system information. On POSIX the os-release fields are absent when /etc/os-release does not ' +
    'define them. (since 2.10)',
  {
    'kernel-release': osField('release field returned by uname(2)', 'build number of the OS'),
    'kernel-version': osField('version field returned by uname(2)', 'version number of the OS'),
    machine: osField('machine field returned by uname(2)', 'one of x86, x86_64, arm, ia64'),
    id: osField('as defined by os-release(5)', 'contains string "mswindows"'),
    name: osField('as defined by os-release(5)', 'contains string "Microsoft Windows"'),
    'pretty-name': osField('as defined by os-release(5)', 'product name, e.g. "Microsoft Windows 10 Enterprise"'),
    version: osField('as defined by os-release(5)', 'long version string, e.g. "Microsoft Windows Server 2008"'),
    'version-id': osField('as defined by os-release(5)', 'short version identifier, e.g. "7" or "20012r2"'),
    variant: osField('as defined by os-release(5)', 'contains string "server" or "client"'),
    'variant-id': osField('as defined by os-release(5)', 'contains string "server" or "client"'),
  },
);

export const GuestLoadAverage = objectComponent('GuestLoadAverage', 'Statistics about process load information. (since 10.0)', {
  load1m: Type.Number({ description: '1-minute load average' }),
  load5m: Type.Number({ description: '5-minute load average' }),
  load15m: Type.Number({ description: '15-minute load average' }),
});

/** guest-shutdown's `mode` is a plain string in the reference; these are its documented values. */
export const GuestShutdownMode = enumComponent(
  'GuestShutdownMode',
  'guest-shutdown mode: "halt", "powerdown" (the agent\'s default), or "reboot"',
  ['halt', 'powerdown', 'reboot'],
);

/** Gateway enum: which of guest-suspend-disk / -ram / -hybrid to send. */
export const GuestSuspendMode = enumComponent(
  'GuestSuspendMode',
  'disk = guest-suspend-disk (hibernate), ram = guest-suspend-ram (needs wakeup support in QEMU), ' +
    'hybrid = guest-suspend-hybrid (save to disk and suspend to ram; Linux only)',
  ['disk', 'ram', 'hybrid'],
);
