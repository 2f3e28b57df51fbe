/**
 * Named, shared schemas for the QGA types. Each type of the reference is registered once with
 * `app.addSchema({$id: 'GuestIpAddress', ...})` and used everywhere else through a `$ref`, so
 * the OpenAPI document gets one `components/schemas/GuestIpAddress` and openapi-typescript
 * emits `components['schemas']['GuestIpAddress']` instead of a copy per operation.
 *
 * Routes use the value `component()` returns: a `{$ref}` typed (through Type.Unsafe) as the
 * static type of the full schema, so handlers stay type-checked.
 *
 * Serialization rules that shape every schema here (fast-json-stringify writes responses):
 *  - integers are `Type.Integer()`: fjs writes a bigint exactly only for fields typed integer;
 *  - no free-form objects (fjs falls back to JSON.stringify there, which throws on bigint);
 *  - no `anyOf`/`oneOf` in responses: fjs picks the branch by running Ajv on the data, and Ajv
 *    rejects a bigint as "integer", so a union holding a huge counter would fail to serialize.
 *    The reference's unions each define ONE variant, so they are exactly `allOf[base, variant]`;
 *  - enums are `{type: 'string', enum}` and not `const`: fjs writes a `const` from the schema,
 *    not from the data, which would turn an unexpected value into a wrong one.
 *
 * Components are open objects (no `additionalProperties: false`): a newer agent may add members,
 * and the document must not promise clients that none will ever appear. Request bodies are the
 * other way round — unknown members are refused before anything reaches the agent — so routes
 * validate bodies against `inline(...)` copies: dereferenced (the body validator is a separate
 * Ajv instance that does not know the shared schemas) and closed at every level.
 */
import { Type, type Static, type TObject, type TProperties, type TSchema, type TUnsafe } from 'typebox';
import type { FastifyInstance } from 'fastify';
import { isObjectLike } from '../../util/unknown.js';

export interface ComponentSchema {
  $id: string;
  title: string;
  [keyword: string]: unknown;
}

const REGISTRY = new Map<string, ComponentSchema>();

/** Register `schema` as the shared schema `name`; returns a typed `$ref` to it. */
export function component<T extends TSchema>(name: string, schema: T): TUnsafe<Static<T>> {
  if (REGISTRY.has(name)) throw new Error(`schema component ${name} is defined twice`);
  // Object.entries copies the JSON Schema keywords only (TypeBox keeps its markers non-enumerable).
  REGISTRY.set(name, { ...Object.fromEntries(Object.entries(schema)), $id: name, title: name });
  return Type.Unsafe<Static<T>>(Type.Ref(name));
}

/** The common case: a component that is an object of the reference, `Type.Object(properties, { description })`. */
export function objectComponent<P extends TProperties>(name: string, description: string, properties: P): TUnsafe<Static<TObject<P>>> {
  return component(name, Type.Object(properties, { description }));
}

/**
 * A `$ref` to a component with a description for this particular use of it. Spreading the ref
 * copies its one JSON Schema keyword, `$ref` (TypeBox keeps its markers non-enumerable).
 */
export function described<T>(ref: TUnsafe<T>, description: string): TUnsafe<T> {
  return Type.Unsafe<T>({ ...ref, description });
}

/**
 * THE CONVENTION for route schemas (request bodies and response bodies): give each one a name,
 * the name generated clients will use — `components['schemas']['VmList']`:
 *
 *   ok: { 200: named('VmList', Type.Object({ vms: Type.Array(VmSummary) }), 'The VMs the caller may use') }
 *   body: named('RegisterVmRequest', Type.Object({...}, { additionalProperties: false }))
 *
 * It sets the schema's `title` (and `description` when given); the document pass (document.ts)
 * turns every titled schema into a component and the route's inline schema into a `$ref`. A body
 * left unnamed is named after its operation (`<OperationId>Request` / `<OperationId>Response`);
 * one name for two different schemas fails the export. Validation is unchanged: Ajv ignores
 * `title`.
 */
export function named<T extends TSchema>(name: string, schema: T, description?: string): T {
  if (!/^[A-Z][A-Za-z0-9]*$/.test(name)) throw new Error(`schema name ${name} must be PascalCase`);
  // a copy with TypeBox's non-enumerable markers (`~kind`), so it is still the same TypeBox type
  const out = Object.defineProperties({}, Object.getOwnPropertyDescriptors(schema)) as Record<string, unknown>;
  out.title = name;
  if (description !== undefined) out.description = description;
  return out as T;
}

/** A string enum: `{type: 'string', enum: [...]}`, typed as the union of its values. */
export function StringEnum<const V extends readonly string[]>(
  values: V,
  options: { description?: string; default?: V[number] } = {},
): TUnsafe<V[number]> {
  return Type.Unsafe<V[number]>({ type: 'string', enum: [...values], ...options });
}

/** A component that is a string enum: `StringEnum(values, { description })`. */
export function enumComponent<const V extends readonly string[]>(name: string, description: string, values: V): TUnsafe<V[number]> {
  return component(name, StringEnum(values, { description }));
}

/**
 * A request-side copy of a component (or of any schema using components): every `$ref` replaced
 * by the component it names, every object closed with `additionalProperties: false`.
 */
export function inline<T>(schema: TUnsafe<T>): TUnsafe<T> {
  return Type.Unsafe<T>(derefObject({ ...schema }, []));
}

function deref(s: unknown, path: string[]): unknown {
  if (Array.isArray(s)) return s.map((x) => deref(x, path));
  return isObjectLike(s) ? derefObject(s, path) : s;
}

function derefObject(o: Record<string, unknown>, path: string[]): Record<string, unknown> {
  if (typeof o.$ref === 'string') {
    const target = REGISTRY.get(o.$ref);
    if (!target) throw new Error(`unknown schema component ${o.$ref}`);
    if (path.includes(o.$ref)) throw new Error(`recursive schema component ${o.$ref} cannot be inlined`);
    const { $id: _id, ...body } = target;
    const { $ref: _ref, ...siblings } = o;
    return derefObject({ ...body, ...siblings }, [...path, o.$ref]);
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) {
    if (k === 'properties' && v !== null && typeof v === 'object') {
      out[k] = Object.fromEntries(Object.entries(v).map(([name, p]) => [name, deref(p, path)]));
    } else {
      out[k] = deref(v, path);
    }
  }
  if (out.type === 'object' && out.properties !== undefined && out.additionalProperties === undefined) {
    out.additionalProperties = false;
  }
  return out;
}

/** Every registered component, in definition order (dependencies before their users). */
export function componentSchemas(): readonly ComponentSchema[] {
  return [...REGISTRY.values()];
}

/**
 * Add every QGA component to `app` once. Meant for the root instance (app.ts); safe to call from
 * each route plugin as well: a schema already visible in this context is skipped.
 *
 * When a child context adds schemas itself, Fastify rebuilds that context's validator from its
 * DEFAULT builder (coercing Ajv), silently dropping a compiler set with setValidatorCompiler on
 * an ancestor (fastify 5 schema-controller: children keep the original compilersFactory). So the
 * inherited compiler is put back explicitly after adding.
 */
export function registerComponents(app: FastifyInstance): void {
  const missing = componentSchemas().filter((s) => app.getSchema(s.$id) === undefined);
  if (missing.length === 0) return;
  const inherited = app.validatorCompiler;
  for (const s of missing) app.addSchema(s);
  if (inherited) app.setValidatorCompiler(inherited);
}

/**
 * For @fastify/swagger's `refResolver.buildLocalReference`: name shared schemas by their `$id`
 * (`#/components/schemas/GuestIpAddress`) instead of the default `def-N`.
 */
export function buildLocalReference(json: { $id?: unknown }, _baseUri: unknown, _fragment: unknown, i: number): string {
  return typeof json.$id === 'string' && /^[A-Za-z0-9._-]+$/.test(json.$id) ? json.$id : `def-${i}`;
}
