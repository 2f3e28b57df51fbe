/**
 * vCPUs, memory blocks, disks, filesystems and their statistics. Shapes follow the reference's
 * object definitions member for member; counters grow with time so polls see movement, and a
 * few values (NVMe SMART, driver dates) sit above 2^53 on purpose.
 */
import type { JsonObject, JsonValue } from '../../src/qga/types.js';
import { generic } from '../errors.js';
import type { SimDisk } from '../state.js';
import { list, opt, req, struct } from '../visitor.js';
import type { AgentRuntime, CommandDef } from './types.js';

const started = Date.now();
/** seconds since the simulator module loaded: drives the growing counters */
const uptime = (rt: AgentRuntime): number => Math.max(1, Math.floor((rt.now() - started) / 1000) + 100);

const VCPU = struct('GuestLogicalProcessor', [req('logical-id', 'int'), req('online', 'bool'), opt('can-offline', 'bool')]);
const MEMBLK = struct('GuestMemoryBlock', [req('phys-index', 'uint64'), req('online', 'bool'), opt('can-offline', 'bool')]);

function pciAddress(d: SimDisk): JsonObject {
  return { domain: 0, bus: 0, slot: d.pciSlot, function: 0 };
}

function diskAddress(d: SimDisk): JsonObject {
  return { 'pci-controller': pciAddress(d), 'bus-type': d.busType, bus: 0, target: 0, unit: 0, serial: d.serial, dev: d.name };
}

function nvmeSmart(rt: AgentRuntime): JsonObject {
  const t = uptime(rt);
  const smart: JsonObject = {
    type: 'nvme',
    'critical-warning': 0,
    temperature: 310,
    'available-spare': 100,
    'available-spare-threshold': 10,
    'percentage-used': 1,
  };
  const counters: [string, bigint][] = [
    ['data-units-read', 123_456n + BigInt(t)],
    ['data-units-written', 98_765n + BigInt(t)],
    ['host-read-commands', 9_876_543n + BigInt(t) * 10n],
    ['host-write-commands', 7_654_321n + BigInt(t) * 7n],
    ['controller-busy-time', 42n],
    ['power-cycles', 12n],
    // a 128-bit counter whose low half is above 2^53, as a well-used drive reports
    ['power-on-hours', (1n << 64n) + 9_007_199_254_740_993n],
    ['unsafe-shutdowns', 3n],
    ['media-errors', 0n],
    ['number-of-error-log-entries', 0n],
  ];
  for (const [name, v] of counters) {
    smart[`${name}-lo`] = v & 0xffff_ffff_ffff_ffffn;
    smart[`${name}-hi`] = v >> 64n;
  }
  return normalizeInts(smart) as JsonObject;
}

/** bigint only where a number would lose digits (the JsonValue convention). */
function normalizeInts(v: JsonValue): JsonValue {
  if (typeof v === 'bigint') return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  if (Array.isArray(v)) return v.map(normalizeInts);
  if (v !== null && typeof v === 'object') {
    const o: JsonObject = {};
    for (const [k, x] of Object.entries(v)) o[k] = normalizeInts(x);
    return o;
  }
  return v;
}

function disks(rt: AgentRuntime): JsonValue {
  const out: JsonObject[] = [];
  for (const d of rt.state.disks) {
    const disk: JsonObject = { name: d.name, partition: false, dependencies: [], address: diskAddress(d) };
    if (d.nvme) disk.smart = nvmeSmart(rt);
    out.push(disk);
    for (const fs of rt.state.filesystems) {
      if (fs.dev !== d.name && fs.dev.startsWith(d.name)) {
        out.push({ name: fs.dev, partition: true, dependencies: [d.name], address: diskAddress(d) });
      }
    }
  }
  return out;
}

function diskStats(rt: AgentRuntime): JsonValue {
  const t = uptime(rt);
  return rt.state.disks.map((d, i) => ({
    name: d.name.replace('/dev/', ''),
    major: d.major,
    minor: d.minor,
    stats: {
      'read-sectors': 20_000 * (i + 1) + t * 8,
      'read-ios': 900 + t,
      'read-merges': 12,
      'write-sectors': 15_000 + t * 16,
      'write-ios': 500 + t * 2,
      'write-merges': 30,
      'discard-sectors': 0,
      'discard-ios': 0,
      'discard-merges': 0,
      'flush-ios': 40 + t,
      'read-ticks': 700,
      'write-ticks': 900,
      'discard-ticks': 0,
      'flush-ticks': 50,
      'ios-pgr': 0,
      'total-ticks': 1200 + t,
      'weight-ticks': 1650 + t,
    },
  }));
}

function setVcpus(rt: AgentRuntime, vcpus: Record<string, unknown>[]): number {
  let processed = 0;
  for (const v of vcpus) {
    const id = Number(v['logical-id']);
    const cpu = rt.state.vcpus.find((c) => c.logicalId === id);
    let err: string | undefined;
    if (!cpu) err = `open("/sys/devices/system/cpu/cpu${id}/"): No such file or directory`;
    else if (!v.online && !cpu.canOffline) err = `logical processor #${id} can't be offlined`;
    if (err !== undefined) {
      if (processed === 0) throw generic(err);
      break;
    }
    if (cpu) cpu.online = v.online as boolean;
    processed++;
  }
  return processed;
}

function setMemoryBlocks(rt: AgentRuntime, blocks: Record<string, unknown>[]): JsonValue {
  return blocks.map((b): JsonObject => {
    // exact: a phys-index past 2^53 is a bigint, echoed as given (never rounded to a neighbour's)
    const idx = b['phys-index'] as number | bigint;
    const blk = rt.state.memoryBlocks.find((m) => BigInt(m.physIndex) === BigInt(idx));
    if (!blk) return { 'phys-index': idx, response: 'not-found' };
    if (!b.online && !blk.canOffline) return { 'phys-index': idx, response: 'operation-failed', 'error-code': 16 };
    blk.online = b.online as boolean;
    return { 'phys-index': idx, response: 'success' };
  });
}

export const hardwareCommands: CommandDef[] = [
  {
    name: 'guest-get-vcpus',
    since: '1.5',
    run: (rt) => rt.state.vcpus.map((c) => ({ 'logical-id': c.logicalId, online: c.online, 'can-offline': c.canOffline })),
  },
  {
    name: 'guest-set-vcpus',
    since: '1.5',
    args: [req('vcpus', list(VCPU))],
    run: (rt, args) => setVcpus(rt, args.vcpus as Record<string, unknown>[]),
  },
  {
    name: 'guest-get-disks',
    since: '5.2',
    run: (rt) => disks(rt),
  },
  {
    name: 'guest-get-fsinfo',
    since: '2.2',
    run: (rt) =>
      rt.state.filesystems.map((f) => {
        const disk = rt.state.disks.find((d) => f.dev.startsWith(d.name));
        const o: JsonObject = { name: f.name, mountpoint: f.mountpoint, type: f.type, 'used-bytes': f.usedBytes, 'total-bytes': f.totalBytes };
        if (rt.traits.fsinfoPrivilegedBytes) o['total-bytes-privileged'] = f.totalBytes + Math.floor(f.totalBytes / 20);
        o.disk = disk ? [diskAddress(disk)] : [];
        return o;
      }),
  },
  {
    name: 'guest-get-memory-blocks',
    since: '2.3',
    run: (rt) => rt.state.memoryBlocks.map((m) => ({ 'phys-index': m.physIndex, online: m.online, 'can-offline': m.canOffline })),
  },
  {
    name: 'guest-set-memory-blocks',
    since: '2.3',
    args: [req('mem-blks', list(MEMBLK))],
    run: (rt, args) => setMemoryBlocks(rt, args['mem-blks'] as Record<string, unknown>[]),
  },
  {
    name: 'guest-get-memory-block-info',
    since: '2.3',
    run: (rt) => ({ size: rt.state.memoryBlockSize }),
  },
  {
    name: 'guest-get-devices',
    since: '5.2',
    run: () => [
      {
        'driver-name': 'viostor',
        // nanoseconds since the epoch: above 2^53
        'driver-date': 1_700_006_400_000_000_000n,
        'driver-version': '100.95.104.26200',
        id: { type: 'pci', 'vendor-id': 0x1af4, 'device-id': 0x1001 },
      },
      {
        'driver-name': 'netkvm',
        'driver-date': 1_700_006_400_000_000_000n,
        'driver-version': '100.95.104.26200',
        id: { type: 'pci', 'vendor-id': 0x1af4, 'device-id': 0x1000 },
      },
    ],
  },
  {
    name: 'guest-get-diskstats',
    since: '7.1',
    run: (rt) => diskStats(rt),
  },
  {
    name: 'guest-get-cpustats',
    since: '7.1',
    run(rt) {
      const t = uptime(rt);
      return rt.state.vcpus.map((c, i) => ({
        type: 'linux',
        cpu: c.logicalId,
        user: 6000 + t * (10 + i),
        nice: 0,
        system: 4000 + t * 5,
        idle: 15_000 + t * 80,
        iowait: 12,
        irq: 0,
        softirq: 7,
        steal: 0,
        guest: 0,
        guestnice: 0,
      }));
    },
  },
  {
    name: 'guest-get-load',
    since: '10.0',
    run: (rt) => ({ load1m: rt.state.load[0], load5m: rt.state.load[1], load15m: rt.state.load[2] }),
  },
];
