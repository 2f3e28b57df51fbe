/**
 * The two shapes of read-only QGA route: GET a QGA object verbatim, or GET a QGA list wrapped in
 * an object named for what it holds (`{"interfaces": [...]}`, API.md: lists are never sent bare,
 * which leaves room to add fields later). Both check the reply's shape (agent-reply.ts).
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type TSchema } from 'typebox';
import type { JsonObject, JsonValue } from '../../qga/types.js';
import { VmParams } from '../schemas/common.js';
import { callAgent, expectList, expectObject } from './agent-reply.js';
import { operation } from './operation.js';

interface GetRoute {
  url: string;
  operationId: string;
  tag: string;
  summary: string;
  description?: string;
  command: string;
}

export interface ObjectRoute extends GetRoute {
  schema: TSchema;
}

export interface ListRoute extends GetRoute {
  /** the member of the response object that holds the list */
  key: string;
  item: TSchema;
  listDescription: string;
  /** adjust an entry before sending, or drop it (undefined): e.g. variants the reference does not define */
  adjust?: (entry: JsonValue) => JsonValue | undefined;
}

function routeOptions(r: GetRoute, response: TSchema) {
  const { summary, description, command } = r;
  return operation(r.tag, r.operationId, { summary, description, command, params: VmParams, ok: { 200: response } });
}

export function getObjectRoute(fastify: FastifyInstance, r: ObjectRoute): void {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  app.get(r.url, routeOptions(r, r.schema), async (request) => {
    const { vm } = request.params;
    return expectObject<JsonObject>(vm, r.command, await callAgent(fastify, request, vm, r.command));
  });
}

export function getListRoute(fastify: FastifyInstance, r: ListRoute): void {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const response = Type.Object(
    { [r.key]: Type.Array(r.item, { description: r.listDescription }) },
    { description: `${r.command}, wrapped` },
  );
  app.get(r.url, routeOptions(r, response), async (request) => {
    const { vm } = request.params;
    const list = expectList<JsonValue>(vm, r.command, await callAgent(fastify, request, vm, r.command));
    const adjust = r.adjust;
    return { [r.key]: adjust ? list.map((e) => adjust(e)).filter((e) => e !== undefined) : list };
  });
}
