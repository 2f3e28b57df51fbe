/**
 * The simulated guest: everything a command can read or change, kept in memory and exposed as
 * `vm.state` so tests can set it up and check effects. Passwords are never stored, only the fact
 * that one was set.
 */
import { VirtualFs } from './vfs.js';

export interface SimFilesystem {
  name: string;
  mountpoint: string;
  type: string;
  totalBytes: number;
  usedBytes: number;
  /** dev node of the disk it lies on, e.g. /dev/vda */
  dev: string;
}

export interface SimDisk {
  name: string;
  busType: string;
  serial: string;
  pciSlot: number;
  major: number;
  minor: number;
  /** report NVMe SMART data for this disk */
  nvme?: boolean;
}

export interface GuestState {
  /** filesystems frozen (survives an agent restart, cleared by a guest reboot) */
  frozen: boolean;
  /** filesystems the last freeze froze (what thaw reports) */
  frozenCount: number;
  hostname: string;
  /** guest clock minus host clock, nanoseconds (guest-set-time changes it) */
  timeOffsetNs: bigint;
  timezone: { zone: string; offset: number };
  osinfo: Record<string, string>;
  /** logged-in users (guest-get-users); loginTime in seconds since the epoch */
  users: { user: string; domain?: string; loginTime: number }[];
  /** accounts that exist (ssh keys, passwords): name -> home directory */
  accounts: Map<string, string>;
  vcpus: { logicalId: number; online: boolean; canOffline: boolean }[];
  memoryBlocks: { physIndex: number; online: boolean; canOffline: boolean }[];
  memoryBlockSize: number;
  filesystems: SimFilesystem[];
  disks: SimDisk[];
  files: VirtualFs;
  /** guest-set-user-password calls: who and how, never the password */
  passwordChanges: { username: string; crypted: boolean; at: number }[];
  /** guest-shutdown and guest-suspend-* requests */
  powerRequests: { command: string; mode?: string; at: number }[];
  /** guest-fstrim calls */
  trims: { minimum?: number; at: number }[];
  /** load averages reported by guest-get-load */
  load: [number, number, number];
  /** interfaces reported after lo and eth0 by guest-network-get-interfaces (tests add addresses as a guest would get them) */
  extraInterfaces: { name: string; addresses: { ip: string; type: 'ipv4' | 'ipv6'; prefix: number }[] }[];
}

export function defaultGuestState(hostname: string): GuestState {
  const files = new VirtualFs();
  for (const d of ['/root', '/home/admin', '/tmp', '/data', '/etc', '/var/log']) files.mkdir(d);
  files.setRegular('/etc/hostname', Buffer.from(`${hostname}\n`));
  files.setRegular('/data/hello.txt', Buffer.from('hello from the simulated guest\n'));
  files.setRegular('/etc/os-release', Buffer.from('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'));
  const now = Date.now() / 1000;
  return {
    frozen: false,
    frozenCount: 0,
    hostname,
    timeOffsetNs: 0n,
    timezone: { zone: 'UTC', offset: 0 },
    osinfo: {
      'kernel-release': '6.1.0-28-amd64',
      'kernel-version': '#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)',
      machine: 'x86_64',
      id: 'debian',
      name: 'Debian GNU/Linux',
      'pretty-name': 'Debian GNU/Linux 12 (bookworm)',
      version: '12 (bookworm)',
      'version-id': '12',
      variant: 'qga simulator',
      'variant-id': 'qga-sim',
    },
    users: [{ user: 'admin', loginTime: Math.floor(now - 3600) + 0.25 }],
    accounts: new Map([
      ['root', '/root'],
      ['admin', '/home/admin'],
    ]),
    vcpus: [
      { logicalId: 0, online: true, canOffline: false },
      { logicalId: 1, online: true, canOffline: true },
    ],
    memoryBlocks: [0, 1, 2, 3].map((i) => ({ physIndex: i, online: true, canOffline: i !== 0 })),
    memoryBlockSize: 134217728,
    filesystems: [
      { name: 'vda1', mountpoint: '/', type: 'ext4', totalBytes: 10_464_022_528, usedBytes: 2_147_483_648, dev: '/dev/vda1' },
      { name: 'nvme0n1', mountpoint: '/data', type: 'xfs', totalBytes: 107_321_753_600, usedBytes: 52_428_800, dev: '/dev/nvme0n1' },
    ],
    disks: [
      { name: '/dev/vda', busType: 'virtio', serial: `sim-root-${hostname}`, pciSlot: 4, major: 254, minor: 0 },
      { name: '/dev/nvme0n1', busType: 'nvme', serial: `sim-nvme-${hostname}`, pciSlot: 5, major: 259, minor: 0, nvme: true },
    ],
    files,
    passwordChanges: [],
    powerRequests: [],
    trims: [],
    load: [0.25, 0.1, 0.05],
    extraInterfaces: [],
  };
}
