/**
 * The QGA schemas against the reference text itself: every Object, Enum and Alternate it defines
 * is a named component; object members carry the reference's names verbatim with the same
 * optionality and JSON type; enum values are the reference's; unions contain their variant.
 */
import { describe, expect, it } from 'vitest';
import { componentSchemas as registered } from '../../src/http/schemas/qga.js';
import { qgaReference } from '../helpers/shared.js';

interface ComponentSchemaLike {
  $id?: string;
  $ref?: string;
  type?: string;
  enum?: string[];
  const?: unknown;
  properties?: Record<string, ComponentSchemaLike>;
  required?: string[];
  items?: ComponentSchemaLike;
  allOf?: ComponentSchemaLike[];
  anyOf?: ComponentSchemaLike[];
  oneOf?: ComponentSchemaLike[];
  additionalProperties?: unknown;
}

const componentSchemas = (): Array<ComponentSchemaLike & { $id: string }> =>
  registered() as unknown as Array<ComponentSchemaLike & { $id: string }>;

const SPEC = qgaReference();

interface Section {
  kind: 'Object' | 'Enum' | 'Alternate';
  name: string;
  body: string;
}

function sections(): Section[] {
  const out: Section[] = [];
  const re = /^\s+(Command|Object|Enum|Alternate) (\w[\w-]*)/gm;
  const heads = [...SPEC.matchAll(re)];
  heads.forEach((m, i) => {
    const end = i + 1 < heads.length ? heads[i + 1].index : SPEC.length;
    if (m[1] !== 'Command') out.push({ kind: m[1] as Section['kind'], name: m[2], body: SPEC.slice(m.index, end) });
  });
  return out;
}

interface Member {
  name: string;
  type: string;
  optional: boolean;
}

function members(body: string): Member[] {
  const out: Member[] = [];
  for (const m of body.matchAll(/•\s+([a-z0-9_-]+)\s+\(([^,)]+)(,\s*optional)?\)\s+--/g)) {
    out.push({ name: m[1], type: m[2].trim(), optional: m[3] !== undefined });
  }
  return out;
}

function enumValues(body: string): string[] {
  return [...body.matchAll(/•\s+([a-z0-9-]+)\s+--/g)].map((m) => m[1]);
}

const byName = new Map(componentSchemas().map((s) => [s.$id, s]));

function resolve(s: ComponentSchemaLike): ComponentSchemaLike {
  if (typeof s.$ref === 'string') {
    const target = byName.get(s.$ref);
    if (!target) throw new Error(`dangling $ref ${s.$ref}`);
    return resolve(target);
  }
  return s;
}

/** Properties and required list of an object schema, flattening allOf (the unions). */
function flatten(s: ComponentSchemaLike): { props: Record<string, ComponentSchemaLike>; required: Set<string> } {
  const r = resolve(s);
  if (Array.isArray(r.allOf)) {
    const props: Record<string, ComponentSchemaLike> = {};
    const required = new Set<string>();
    for (const part of r.allOf) {
      const f = flatten(part);
      Object.assign(props, f.props);
      for (const k of f.required) required.add(k);
    }
    return { props, required };
  }
  return { props: r.properties ?? {}, required: new Set(r.required ?? []) };
}

function jsonTypeOf(refType: string): string {
  if (refType.startsWith('[')) return 'array';
  if (refType === 'int') return 'integer';
  if (refType === 'number') return 'number';
  if (refType === 'string') return 'string';
  if (refType === 'boolean') return 'boolean';
  return `ref:${refType}`;
}

describe('QGA schemas follow the reference', () => {
  const all = sections();

  it('finds the reference types', () => {
    expect(all.filter((s) => s.kind === 'Object').length).toBe(37);
    expect(all.filter((s) => s.kind === 'Enum').length).toBe(8);
    expect(all.filter((s) => s.kind === 'Alternate').map((s) => s.name).sort()).toEqual(
      ['GuestExecCaptureOutput', 'GuestFileWhence'].sort(),
    );
  });

  it('defines every Object, Enum and Alternate as a named component', () => {
    const missing = all.map((s) => s.name).filter((n) => !byName.has(n));
    expect(missing).toEqual([]);
  });

  for (const sec of sections().filter((s) => s.kind === 'Object')) {
    it(`object ${sec.name}: members verbatim, same optionality and type`, () => {
      const { props, required } = flatten(byName.get(sec.name) as ComponentSchemaLike);
      const ms = members(sec.body);
      expect(ms.length, 'members parsed from the reference').toBeGreaterThan(0);
      for (const m of ms) {
        expect(Object.keys(props), `${sec.name}.${m.name}`).toContain(m.name);
        expect(required.has(m.name), `${sec.name}.${m.name} required`).toBe(!m.optional);
        const want = jsonTypeOf(m.type);
        const got = props[m.name];
        if (want.startsWith('ref:')) {
          expect(got.$ref, `${sec.name}.${m.name}`).toBe(want.slice(4));
        } else {
          expect(resolve(got).type, `${sec.name}.${m.name}`).toBe(want);
        }
      }
      // nothing invented: the flattened union may add the variant's members, which the reference names
      const variant = /When type is \w+: The members of (\w+)/.exec(sec.body)?.[1];
      const allowed = new Set([...ms.map((m) => m.name), ...(variant ? members(sections().find((s) => s.name === variant)!.body).map((m) => m.name) : [])]);
      expect(Object.keys(props).filter((k) => !allowed.has(k))).toEqual([]);
    });
  }

  for (const sec of sections().filter((s) => s.kind === 'Enum')) {
    it(`enum ${sec.name}: the reference's values`, () => {
      const s = resolve(byName.get(sec.name) as ComponentSchemaLike);
      expect(s.type).toBe('string');
      expect([...(s.enum ?? [])].sort()).toEqual(enumValues(sec.body).sort());
    });
  }

  it('alternates accept both of their forms', () => {
    const whence = byName.get('GuestFileWhence') as ComponentSchemaLike;
    expect(whence.anyOf?.map((b) => b.type ?? b.$ref)).toEqual(['integer', 'QGASeek']);
    const capture = byName.get('GuestExecCaptureOutput') as ComponentSchemaLike;
    expect(capture.anyOf?.map((b) => b.type ?? b.$ref)).toEqual(['boolean', 'GuestExecCaptureOutputMode']);
  });

  it('no response type uses anyOf/oneOf, const or free-form objects (bigint-safe serialization)', () => {
    const alternates = new Set(['GuestFileWhence', 'GuestExecCaptureOutput']);
    const walk = (s: ComponentSchemaLike, where: string): void => {
      expect(s.oneOf, where).toBeUndefined();
      expect(s.const, where).toBeUndefined();
      if (s.type === 'object') expect(s.properties, `${where} is free-form`).toBeDefined();
      if (s.additionalProperties !== undefined) expect(s.additionalProperties, where).toBe(false);
      for (const [k, p] of Object.entries(s.properties ?? {})) walk(p, `${where}.${k}`);
      if (s.items) walk(s.items, `${where}[]`);
      for (const p of s.allOf ?? []) walk(p, where);
    };
    for (const s of componentSchemas()) {
      if (alternates.has(s.$id)) continue;
      expect(s.anyOf, s.$id).toBeUndefined();
      walk(s, s.$id);
    }
  });
});
