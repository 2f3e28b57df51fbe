/**
 * Processors, memory, disks and devices: guest-get/set-vcpus, guest-get/set-memory-blocks,
 * guest-get-memory-block-info, guest-get-disks, guest-get-diskstats, guest-get-cpustats,
 * guest-get-devices. The PATCH bodies are the commands' arguments verbatim (`vcpus`, `mem-blks`).
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type Static } from 'typebox';
import type { JsonValue } from '../../qga/types.js';
import { isJsonObject } from '../../util/json.js';
import { VmParams } from '../schemas/common.js';
import { inline } from '../schemas/component.js';
import {
  GuestCpuStats,
  GuestDeviceInfo,
  GuestDiskInfo,
  GuestDiskStatsInfo,
  GuestLogicalProcessor,
  GuestMemoryBlock,
  GuestMemoryBlockInfo,
  GuestMemoryBlockResponse,
} from '../schemas/qga.js';
import { callAgent, expectInteger, expectList } from './agent-reply.js';
import { operation } from './operation.js';
import { getListRoute, getObjectRoute } from './qga-get.js';

/** The most entries one PATCH may carry: far above any real guest, far below a memory hazard. */
const MAX_ENTRIES = 65_536;

/**
 * The reference's unions define one variant each (cpu stats: linux; device id: pci; disk smart:
 * nvme). An entry of another variant has members no schema describes, so it is not passed on.
 */
function dropUnknownVariant(entry: JsonValue, member: string, type: string): JsonValue {
  if (!isJsonObject(entry)) return entry;
  const variant = entry[member];
  if (!isJsonObject(variant) || variant.type === type) return entry;
  const { [member]: _dropped, ...rest } = entry;
  return rest;
}

export default async function hardwareRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

  // --- vCPUs --------------------------------------------------------------------------------
  getListRoute(fastify, {
    url: '/vms/:vm/vcpus',
    operationId: 'getVcpus',
    tag: 'hardware',
    summary: "The guest's logical processors and whether each is online",
    command: 'guest-get-vcpus',
    key: 'vcpus',
    item: GuestLogicalProcessor,
    listDescription: 'All VCPUs the guest knows about, each exactly once, in no particular order',
  });

  app.patch(
    '/vms/:vm/vcpus',
    operation('hardware', 'setVcpus', {
      summary: 'Bring logical processors online or offline (Linux guests)',
      description:
        'The list is processed in order; `processed` is the length of the initial sublist that succeeded. When it is ' +
        'less than the list length, the guest state changed for those entries only; repeat the call without them ' +
        'to see the error. A failure on the first entry is an error (nothing changed).',
      command: 'guest-set-vcpus',
      params: VmParams,
      body: Type.Object(
        {
          vcpus: Type.Array(inline(GuestLogicalProcessor), {
            maxItems: MAX_ENTRIES,
            description: 'The logical processors to reconfigure: logical-id selects the VCPU, online its requested state',
          }),
        },
        { additionalProperties: false },
      ),
      ok: {
        200: Type.Object({
          processed: Type.Integer({ format: 'int64', description: 'length of the initial sublist that was processed successfully' }),
          complete: Type.Boolean({ description: 'whether every entry was processed' }),
        }),
      },
    }),
    async (request) => {
      const { vm } = request.params;
      const vcpus = request.body.vcpus.map((v) => ({ 'logical-id': v['logical-id'], online: v.online }));
      const n = expectInteger(vm, 'guest-set-vcpus', await callAgent(fastify, request, vm, 'guest-set-vcpus', { vcpus }));
      return { processed: Number(n), complete: Number(n) === vcpus.length };
    },
  );

  // --- memory blocks ------------------------------------------------------------------------
  getListRoute(fastify, {
    url: '/vms/:vm/memory/blocks',
    operationId: 'getMemoryBlocks',
    tag: 'hardware',
    summary: "The guest's memory blocks and whether each is online (Linux guests)",
    command: 'guest-get-memory-blocks',
    key: 'blocks',
    item: GuestMemoryBlock,
    listDescription: 'All memory blocks the guest knows about, each exactly once, in no particular order',
  });

  app.patch(
    '/vms/:vm/memory/blocks',
    operation('hardware', 'setMemoryBlocks', {
      summary: 'Bring memory blocks online or offline (Linux guests)',
      description:
        'One result per entry, in order. An empty result list means the input was empty or an error prevented any ' +
        'change.',
      command: 'guest-set-memory-blocks',
      params: VmParams,
      body: Type.Object(
        {
          'mem-blks': Type.Array(inline(GuestMemoryBlock), {
            maxItems: MAX_ENTRIES,
            description: 'The memory blocks to reconfigure: phys-index selects the block, online its requested state',
          }),
        },
        { additionalProperties: false },
      ),
      ok: { 200: Type.Object({ results: Type.Array(GuestMemoryBlockResponse, { description: 'one result per entry of mem-blks' }) }) },
    }),
    async (request) => {
      const { vm } = request.params;
      const blocks = request.body['mem-blks'].map((b) => ({ 'phys-index': b['phys-index'], online: b.online }));
      const value = await callAgent(fastify, request, vm, 'guest-set-memory-blocks', { 'mem-blks': blocks });
      return { results: expectList<Static<typeof GuestMemoryBlockResponse>>(vm, 'guest-set-memory-blocks', value) };
    },
  );

  getObjectRoute(fastify, {
    url: '/vms/:vm/memory/block-info',
    operationId: 'getMemoryBlockInfo',
    tag: 'hardware',
    summary: 'The size of the guest memory blocks (Linux guests)',
    command: 'guest-get-memory-block-info',
    schema: GuestMemoryBlockInfo,
  });

  // --- disks, CPUs, devices -----------------------------------------------------------------
  getListRoute(fastify, {
    url: '/vms/:vm/disks',
    operationId: 'getDisks',
    tag: 'hardware',
    summary: 'Guest disks and partitions, with dependencies, addresses and NVMe SMART data',
    command: 'guest-get-disks',
    key: 'disks',
    item: GuestDiskInfo,
    listDescription: 'Windows: the physical disks; Linux: all root block devices of non-zero size (including removable, loop, NBD)',
    adjust: (entry) => dropUnknownVariant(entry, 'smart', 'nvme'),
  });

  getListRoute(fastify, {
    url: '/vms/:vm/disks/stats',
    operationId: 'getDiskStats',
    tag: 'hardware',
    summary: 'Guest disk I/O statistics (Linux guests)',
    command: 'guest-get-diskstats',
    key: 'disks',
    item: GuestDiskStatsInfo,
    listDescription: 'List of disk stats of guest',
  });

  getListRoute(fastify, {
    url: '/vms/:vm/cpus/stats',
    operationId: 'getCpuStats',
    tag: 'hardware',
    summary: 'Per-CPU time statistics in milliseconds (Linux guests)',
    command: 'guest-get-cpustats',
    key: 'cpus',
    item: GuestCpuStats,
    listDescription: 'List of CPU stats of guest',
    adjust: (entry) => (isJsonObject(entry) && entry.type === 'linux' ? entry : undefined),
  });

  getListRoute(fastify, {
    url: '/vms/:vm/devices',
    operationId: 'getDevices',
    tag: 'hardware',
    summary: 'Devices and their drivers (Windows guests)',
    command: 'guest-get-devices',
    key: 'devices',
    item: GuestDeviceInfo,
    listDescription: 'List of GuestDeviceInfo',
    adjust: (entry) => dropUnknownVariant(entry, 'id', 'pci'),
  });
}
