/**
 * Small helpers shared by the QGA route groups: calling the agent with the request's abort
 * signal, and checking the SHAPE of a reply before wrapping it (a list where a list is expected,
 * an object where an object is). A reply of the wrong shape is the agent's fault, reported as
 * 502 AGENT_PROTOCOL_ERROR rather than passed on for the client to trip over.
 */
import type { FastifyInstance, FastifyRequest, preValidationHookHandler } from 'fastify';
import { GatewayError, errors } from '../../errors.js';
import type { JsonObject, JsonValue } from '../../qga/types.js';
import { signalOptions } from '../abort.js';

export function callAgent(
  app: FastifyInstance,
  request: FastifyRequest,
  vm: string,
  command: string,
  args?: JsonObject,
): Promise<JsonValue> {
  return app.services.agent.call(vm, command, args, signalOptions(request));
}

function shapeError(vm: string, command: string, want: string, got: JsonValue): GatewayError {
  const kind = got === null ? 'null' : Array.isArray(got) ? 'a list' : typeof got;
  return errors.unexpectedReply(vm, command, `${kind} where ${want} was expected`);
}

/**
 * The shape checks behind expectList/expectObject. They check the shape only: the element or
 * member types are the caller's claim, backed by the reference (the route's response schema
 * names the QGA type), which is what the type parameter states.
 */
function isListOf<T>(value: JsonValue): value is JsonValue & T[] {
  return Array.isArray(value);
}

function isObjectOf<T>(value: JsonValue): value is JsonValue & T {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** The reply as a list; the element type is the caller's claim, backed by the reference. */
export function expectList<T>(vm: string, command: string, value: JsonValue): T[] {
  if (!isListOf<T>(value)) throw shapeError(vm, command, 'a list', value);
  return value;
}

export function expectObject<T>(vm: string, command: string, value: JsonValue): T {
  if (!isObjectOf<T>(value)) throw shapeError(vm, command, 'an object', value);
  return value;
}

export function expectInteger(vm: string, command: string, value: JsonValue): number | bigint {
  if (typeof value === 'bigint' || (typeof value === 'number' && Number.isInteger(value))) return value;
  throw shapeError(vm, command, 'an integer', value);
}

export function expectString(vm: string, command: string, value: JsonValue): string {
  if (typeof value !== 'string') throw shapeError(vm, command, 'a string', value);
  return value;
}

/**
 * For POST routes whose body is entirely optional: a request with no body at all is validated as
 * `{}`, so `curl -X POST …/shutdown` works without `-d '{}'`.
 */
export const emptyBodyIsObject: preValidationHookHandler = (request, _reply, done) => {
  // only a missing body means "no arguments"; a JSON null is not an object and fails validation
  if (request.body === undefined) request.body = {};
  done();
};
