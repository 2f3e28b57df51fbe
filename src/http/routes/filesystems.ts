/** Guest filesystems: guest-get-fsinfo and guest-fstrim (freeze/thaw live in the fsfreeze routes). */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type Static } from 'typebox';
import { VmParams } from '../schemas/common.js';
import { GuestFilesystemInfo, GuestFilesystemTrimResponse } from '../schemas/qga.js';
import { Int64 } from '../schemas/scalars.js';
import { callAgent, emptyBodyIsObject, expectObject } from './agent-reply.js';
import { operation } from './operation.js';
import { getListRoute } from './qga-get.js';

const FstrimBody = Type.Object(
  {
    minimum: Type.Optional(
      Int64({
        minimum: 0,
        description:
          'Minimum contiguous free range to discard, in bytes. Free ranges smaller than this may be ignored (a hint the ' +
          'guest may not respect). Larger values finish faster on fragmented filesystems but discard less. Default 0: ' +
          'discard every free block.',
      }),
    ),
  },
  { additionalProperties: false },
);

export default async function filesystemRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

  getListRoute(fastify, {
    url: '/vms/:vm/filesystems',
    operationId: 'getFilesystems',
    tag: 'filesystems',
    summary: 'Mounted guest filesystems: type, usage and the disks below them',
    description: 'The mountpoints listed here may be given to POST /fsfreeze. Network filesystems (CIFS, NFS) are not listed.',
    command: 'guest-get-fsinfo',
    key: 'filesystems',
    item: GuestFilesystemInfo,
    listDescription: 'The filesystems mounted in the guest',
  });

  app.post(
    '/vms/:vm/fstrim',
    operation('filesystems', 'fstrim', {
      summary: 'Discard (trim) unused blocks of every guest filesystem',
      description:
        'Can take minutes on large thin-provisioned disks; the agent serves nothing else meanwhile. The body may be ' +
        'omitted.',
      command: 'guest-fstrim',
      params: VmParams,
      body: FstrimBody,
      ok: { 200: GuestFilesystemTrimResponse },
      preValidation: emptyBodyIsObject,
    }),
    async (request) => {
      const { vm } = request.params;
      const minimum = request.body.minimum;
      const value = await callAgent(fastify, request, vm, 'guest-fstrim', minimum === undefined ? undefined : { minimum });
      return expectObject<Static<typeof GuestFilesystemTrimResponse>>(vm, 'guest-fstrim', value);
    },
  );
}
