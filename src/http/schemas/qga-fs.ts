/** QGA types of filesystems: freeze status, guest-fstrim results, guest-get-fsinfo. */
import { Type } from 'typebox';
import { enumComponent, objectComponent } from './component.js';
import { GuestDiskAddress } from './qga-disk.js';

export const GuestFsfreezeStatus = enumComponent(
  'GuestFsfreezeStatus',
  'Filesystem freeze state: thawed = filesystems thawed/unfrozen, frozen = all non-network guest filesystems frozen. (since 0.15.0)',
  ['thawed', 'frozen'],
);

export const GuestFilesystemTrimResult = objectComponent('GuestFilesystemTrimResult', 'Result of trimming one path. (since 2.4)', {
  path: Type.String({ description: 'path that was trimmed' }),
  error: Type.Optional(Type.String({ description: 'an error message when trim failed' })),
  trimmed: Type.Optional(Type.Integer({ format: 'int64', description: 'bytes trimmed for this path' })),
  minimum: Type.Optional(Type.Integer({ format: 'int64', description: 'reported effective minimum for this path' })),
});

export const GuestFilesystemTrimResponse = objectComponent('GuestFilesystemTrimResponse', 'The status of all trimmed paths. (since 2.4)', {
  paths: Type.Array(GuestFilesystemTrimResult, { description: 'list of GuestFilesystemTrimResult per path that was trimmed' }),
});

export const GuestFilesystemInfo = objectComponent(
  'GuestFilesystemInfo',
  'A mounted filesystem. The mountpoints may be given to guest-fsfreeze-freeze-list; network filesystems (CIFS, ' +
    'NFS) are not listed. (since 2.2)',
  {
    name: Type.String({ description: 'disk name' }),
    mountpoint: Type.String({ description: 'mount point path' }),
    type: Type.String({ description: 'file system type string' }),
    'used-bytes': Type.Optional(Type.Integer({ format: 'uint64', description: 'file system used bytes (since 3.0)' })),
    'total-bytes': Type.Optional(
      Type.Integer({ format: 'uint64', description: 'filesystem capacity in bytes for unprivileged users (since 3.0)' }),
    ),
    'total-bytes-privileged': Type.Optional(
      Type.Integer({ format: 'uint64', description: 'filesystem capacity in bytes for privileged users (since 9.1)' }),
    ),
    disk: Type.Array(GuestDiskAddress, {
      description: 'an array of disk hardware information that the volume lies on, which may be empty if the disk type is not supported',
    }),
  },
);
