/**
 * QGA types of processors, memory blocks and devices: guest-get/set-vcpus,
 * guest-get/set-memory-blocks, guest-get-memory-block-info, guest-get-cpustats (the GuestCpuStats
 * union), guest-get-devices (the GuestDeviceId union). The CPU counters are uint64 in the agent.
 */
import { Type } from 'typebox';
import { component, described, enumComponent, objectComponent } from './component.js';

/** `can-offline` of a VCPU or a memory block: the same member with the same meaning. */
const canOffline = (unit: string) =>
  Type.Optional(
    Type.Boolean({
      description:
        `Whether offlining the ${unit} is possible. Always filled in by the guest agent when returned, and always ` +
        'ignored on input (hence it can be omitted then).',
    }),
  );

export const GuestLogicalProcessor = objectComponent('GuestLogicalProcessor', 'A logical processor (VCPU) of the guest. (since 1.5)', {
  'logical-id': Type.Integer({ format: 'int64', exclusiveMaximum: 2 ** 63, minimum: 0, description: 'Arbitrary guest-specific unique identifier of the VCPU.' }),
  online: Type.Boolean({ description: 'Whether the VCPU is enabled.' }),
  'can-offline': canOffline('VCPU'),
});

export const GuestMemoryBlock = objectComponent('GuestMemoryBlock', 'A memory block of the guest. (since 2.3)', {
  'phys-index': Type.Integer({ format: 'uint64', minimum: 0, exclusiveMaximum: 2 ** 64, description: 'Arbitrary guest-specific unique identifier of the MEMORY BLOCK.' }),
  online: Type.Boolean({ description: 'Whether the MEMORY BLOCK is enabled in guest.' }),
  'can-offline': canOffline('MEMORY BLOCK'),
});

export const GuestMemoryBlockResponseType = enumComponent(
  'GuestMemoryBlockResponseType',
  'Result of a memory block operation: success; not-found (no memoryXXX directory in sysfs); ' +
    'operation-not-supported (old kernels); operation-failed (see error-code). (since 2.3)',
  ['success', 'not-found', 'operation-not-supported', 'operation-failed'],
);

export const GuestMemoryBlockResponse = objectComponent('GuestMemoryBlockResponse', 'Result of reconfiguring one memory block. (since 2.3)', {
  'phys-index': Type.Integer({ format: 'uint64', description: "same with the 'phys-index' member of GuestMemoryBlock." }),
  response: described(GuestMemoryBlockResponseType, 'the result of memory block operation.'),
  'error-code': Type.Optional(
    Type.Integer({
      format: 'int64',
      description: "the error number (errno) when the memory block operation fails; omitted when it succeeds.",
    }),
  ),
});

export const GuestMemoryBlockInfo = objectComponent('GuestMemoryBlockInfo', 'Information relating to guest memory blocks. (since 2.3)', {
  size: Type.Integer({
    format: 'uint64',
    description:
      'the size (in bytes) of the guest memory blocks, which are the minimal units of memory block online/offline ' +
      'operations (also called Logical Memory Hotplug).',
  }),
});

export const GuestCpuStatsType = enumComponent('GuestCpuStatsType', 'Guest operating systems supporting CPU statistics. (since 7.1)', ['linux']);

const ticks = (description: string) => Type.Integer({ format: 'uint64', description });

export const GuestLinuxCpuStats = objectComponent('GuestLinuxCpuStats', 'CPU statistics of Linux, in milliseconds. (since 7.1)', {
  cpu: Type.Integer({ format: 'int64', description: 'CPU index in guest OS' }),
  user: ticks('Time spent in user mode'),
  nice: ticks('Time spent in user mode with low priority (nice)'),
  system: ticks('Time spent in system mode'),
  idle: ticks('Time spent in the idle task'),
  iowait: Type.Optional(ticks('Time waiting for I/O to complete (since Linux 2.5.41)')),
  irq: Type.Optional(ticks('Time servicing interrupts (since Linux 2.6.0-test4)')),
  softirq: Type.Optional(ticks('Time servicing softirqs (since Linux 2.6.0-test4)')),
  steal: Type.Optional(ticks('Stolen time by host (since Linux 2.6.11)')),
  guest: Type.Optional(
    ticks('Time spent running a virtual CPU for guest operating systems under the control of the Linux kernel (since Linux 2.6.24)'),
  ),
  guestnice: Type.Optional(ticks('Time spent running a niced guest (since Linux 2.6.33)')),
});

/** Flat union on `type`; the only variant is linux (see component.ts for why allOf). */
export const GuestCpuStats = component(
  'GuestCpuStats',
  Type.Intersect(
    [Type.Object({ type: described(GuestCpuStatsType, 'guest operating system') }), GuestLinuxCpuStats],
    { description: 'Statistics of one CPU in milliseconds. When type is linux: the members of GuestLinuxCpuStats. (since 7.1)' },
  ),
);

export const GuestDeviceType = enumComponent('GuestDeviceType', 'Device type: pci = PCI device', ['pci']);

export const GuestDeviceIdPCI = objectComponent('GuestDeviceIdPCI', 'PCI device id. (since 5.2)', {
  'vendor-id': Type.Integer({ format: 'int32', description: 'vendor ID' }),
  'device-id': Type.Integer({ format: 'int32', description: 'device ID' }),
});

/** Flat union on `type`; the only variant is pci. */
export const GuestDeviceId = component(
  'GuestDeviceId',
  Type.Intersect([Type.Object({ type: described(GuestDeviceType, 'device type') }), GuestDeviceIdPCI], {
    description: 'Id of the device. When type is pci: the members of GuestDeviceIdPCI. (since 5.2)',
  }),
);

export const GuestDeviceInfo = objectComponent('GuestDeviceInfo', 'A device and its driver (Windows guests). (since 5.2)', {
  'driver-name': Type.String({ description: 'name of the associated driver' }),
  'driver-date': Type.Optional(Type.Integer({ format: 'int64', description: 'driver release date, in nanoseconds since the epoch' })),
  'driver-version': Type.Optional(Type.String({ description: 'driver version' })),
  id: Type.Optional(described(GuestDeviceId, 'device ID')),
});
