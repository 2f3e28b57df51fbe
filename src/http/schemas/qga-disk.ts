/**
 * QGA types of disks: addresses (PCI, CCW), bus types, guest-get-disks (GuestDiskInfo with the
 * GuestDiskSmart union) and guest-get-diskstats. The disk counters are uint64 in the agent and
 * can exceed 2^53: every one is Type.Integer so that fast-json-stringify writes the bigint exactly.
 */
import { Type } from 'typebox';
import { component, described, enumComponent, objectComponent } from './component.js';

export const GuestDiskBusType = enumComponent(
  'GuestDiskBusType',
  'Bus type of disks: ide, fdc (floppy), scsi, virtio, xen, usb, uml, sata, sd (SD cards), unknown, and the ' +
    'Windows bus types ieee1394, ssa, fibre, raid, iscsi, sas, mmc, virtual, file-backed-virtual; nvme since 7.1. ' +
    '(since 2.2)',
  [
    'ide',
    'fdc',
    'scsi',
    'virtio',
    'xen',
    'usb',
    'uml',
    'sata',
    'sd',
    'unknown',
    'ieee1394',
    'ssa',
    'fibre',
    'raid',
    'iscsi',
    'sas',
    'mmc',
    'virtual',
    'file-backed-virtual',
    'nvme',
  ],
);

export const GuestPCIAddress = objectComponent('GuestPCIAddress', 'PCI address. (since 2.2)', {
  domain: Type.Integer({ format: 'int64', description: 'domain id' }),
  bus: Type.Integer({ format: 'int64', description: 'bus id' }),
  slot: Type.Integer({ format: 'int64', description: 'slot id' }),
  function: Type.Integer({ format: 'int64', description: 'function id' }),
});

export const GuestCCWAddress = objectComponent('GuestCCWAddress', 'CCW address on s390x. (since 6.0)', {
  cssid: Type.Integer({ format: 'int64', description: 'channel subsystem image id' }),
  ssid: Type.Integer({ format: 'int64', description: 'subchannel set id' }),
  subchno: Type.Integer({ format: 'int64', description: 'subchannel number' }),
  devno: Type.Integer({ format: 'int64', description: 'device number' }),
});

export const GuestDiskAddress = objectComponent('GuestDiskAddress', 'Disk address. (since 2.2)', {
  'pci-controller': described(GuestPCIAddress, "controller's PCI address (fields are set to -1 if invalid)"),
  'bus-type': described(GuestDiskBusType, 'bus type'),
  bus: Type.Integer({ format: 'int64', description: 'bus id' }),
  target: Type.Integer({ format: 'int64', description: 'target id' }),
  unit: Type.Integer({ format: 'int64', description: 'unit id' }),
  serial: Type.Optional(Type.String({ description: 'serial number (since: 3.1)' })),
  dev: Type.Optional(Type.String({ description: 'device node (POSIX) or device UNC (Windows) (since: 3.1)' })),
  'ccw-address': Type.Optional(described(GuestCCWAddress, 'CCW address on s390x (since: 6.0)')),
});

/** The 25 NVMe SMART fields; the *-lo/*-hi pairs are the halves of 128-bit counters (uint64 each). */
const NVME_FIELDS = [
  'critical-warning',
  'temperature',
  'available-spare',
  'available-spare-threshold',
  'percentage-used',
  'data-units-read-lo',
  'data-units-read-hi',
  'data-units-written-lo',
  'data-units-written-hi',
  'host-read-commands-lo',
  'host-read-commands-hi',
  'host-write-commands-lo',
  'host-write-commands-hi',
  'controller-busy-time-lo',
  'controller-busy-time-hi',
  'power-cycles-lo',
  'power-cycles-hi',
  'power-on-hours-lo',
  'power-on-hours-hi',
  'unsafe-shutdowns-lo',
  'unsafe-shutdowns-hi',
  'media-errors-lo',
  'media-errors-hi',
  'number-of-error-log-entries-lo',
  'number-of-error-log-entries-hi',
] as const;

type NvmeField = (typeof NVME_FIELDS)[number];

function nvmeProperties(): Record<NvmeField, ReturnType<typeof Type.Integer>> {
  const props = {} as Record<NvmeField, ReturnType<typeof Type.Integer>>;
  for (const f of NVME_FIELDS) props[f] = Type.Integer({ format: 'uint64' });
  return props;
}

export const GuestNVMeSmart = objectComponent(
  'GuestNVMeSmart',
  'NVMe smart information, based on NVMe specification, section <SMART / Health Information (Log Identifier ' +
    '02h)>. (since 7.1)',
  nvmeProperties(),
);

/**
 * A flat union on `type` (GuestDiskBusType). The reference defines one variant, nvme (the agent
 * reports SMART only for NVMe disks), so this is exactly `{type} ∧ GuestNVMeSmart`; see
 * component.ts for why it is allOf and not oneOf. Routes drop a smart object of another type.
 */
export const GuestDiskSmart = component(
  'GuestDiskSmart',
  Type.Intersect(
    [
      Type.Object({ type: described(GuestDiskBusType, 'disk bus type') }),
      GuestNVMeSmart,
    ],
    { description: 'Disk type related smart information. When type is nvme: the members of GuestNVMeSmart. (since 7.1)' },
  ),
);

export const GuestDiskInfo = objectComponent('GuestDiskInfo', 'A disk or partition of the guest. (since 5.2)', {
  name: Type.String({ description: 'device node (Linux) or device UNC (Windows)' }),
  partition: Type.Boolean({ description: 'whether this is a partition or disk' }),
  dependencies: Type.Optional(
    Type.Array(Type.String(), {
      description:
        'list of device dependencies; e.g. for LVs of the LVM this will hold the list of PVs, for LUKS encrypted ' +
        'volume this will contain the disk where the volume is placed. (Linux)',
    }),
  ),
  address: Type.Optional(described(GuestDiskAddress, 'disk address information (only for non-virtual devices)')),
  alias: Type.Optional(
    Type.String({ description: 'optional alias assigned to the disk, on Linux this is a name assigned by device mapper' }),
  ),
  smart: Type.Optional(described(GuestDiskSmart, 'disk smart information (Since 7.1)')),
});

const stat = (description: string) => Type.Optional(Type.Integer({ format: 'uint64', description }));

export const GuestDiskStats = objectComponent('GuestDiskStats', 'I/O statistics of a disk. (since 7.1)', {
  'read-sectors': stat('sectors read'),
  'read-ios': stat('reads completed successfully'),
  'read-merges': stat('read requests merged'),
  'write-sectors': stat('sectors written'),
  'write-ios': stat('writes completed'),
  'write-merges': stat('write requests merged'),
  'discard-sectors': stat('sectors discarded'),
  'discard-ios': stat('discards completed successfully'),
  'discard-merges': stat('discard requests merged'),
  'flush-ios': stat('flush requests completed successfully'),
  'read-ticks': stat('time spent reading(ms)'),
  'write-ticks': stat('time spent writing(ms)'),
  'discard-ticks': stat('time spent discarding(ms)'),
  'flush-ticks': stat('time spent flushing(ms)'),
  'ios-pgr': stat('number of I/Os currently in flight'),
  'total-ticks': stat('time spent doing I/Os (ms)'),
  'weight-ticks': stat('weighted time spent doing I/Os since the last update of this field(ms)'),
});

export const GuestDiskStatsInfo = objectComponent('GuestDiskStatsInfo', 'A disk and its I/O statistics. (since 7.1)', {
  name: Type.String({ description: 'disk name' }),
  major: Type.Integer({ format: 'uint64', description: 'major device number of disk' }),
  minor: Type.Integer({ format: 'uint64', description: 'minor device number of disk' }),
  stats: described(GuestDiskStats, 'I/O statistics'),
});
