/**
 * Argument checking the way QEMU's QObject input visitor does it (qapi/qobject-input-visitor.c),
 * with its exact messages: members visited in schema order ("Parameter 'x' missing", "Invalid
 * parameter type for 'x', expected: integer"), then leftovers ("Parameter 'x' is unexpected").
 * Nested names read like QEMU's: "vcpus[0].online".
 */
import { QgaError } from './errors.js';
import { intToJson, type QObj } from './qobject.js';

export interface EnumSpec {
  kind: 'enum';
  name: string;
  values: readonly string[];
}

export interface Member {
  name: string;
  type: TypeSpec;
  optional?: boolean;
}

export type TypeSpec =
  | 'str'
  | 'int'
  /** QAPI uint64: 0..2^64-1, and (as QEMU keeps for compatibility) any int64, a negative one wrapped */
  | 'uint64'
  | 'bool'
  | 'number'
  | { kind: 'list'; of: TypeSpec }
  | { kind: 'struct'; name: string; members: readonly Member[] }
  | EnumSpec
  | { kind: 'alternate'; name: string; int?: boolean; bool?: boolean; enum?: EnumSpec };

export type ArgValue = string | number | bigint | boolean | ArgValue[] | ArgStruct;
export interface ArgStruct {
  [member: string]: ArgValue | undefined;
}

type Path = (string | number)[];

function fullName(path: Path): string {
  let s = '';
  for (const seg of path) s += typeof seg === 'number' ? `[${seg}]` : s === '' ? seg : `.${seg}`;
  return s;
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;

function badType(path: Path, expected: string): never {
  throw new QgaError('GenericError', `Invalid parameter type for '${fullName(path)}', expected: ${expected}`);
}

function visitInt(o: QObj, path: Path): number | bigint {
  if (o.t !== 'int' || o.v < INT64_MIN || o.v > INT64_MAX) badType(path, 'integer');
  return intToJson(o.v);
}

/**
 * qobject_input_type_uint64: a uint64 as such, else an int64 taken as its two's complement (QEMU
 * accepts negative values "for backward compatibility"); anything else names the type `uint64`.
 */
function visitUint64(o: QObj, path: Path): number | bigint {
  if (o.t !== 'int' || o.v < INT64_MIN || o.v > UINT64_MAX) badType(path, 'uint64');
  return intToJson(o.v < 0n ? o.v + 2n ** 64n : o.v);
}

function visitEnum(spec: EnumSpec, o: QObj, path: Path): string {
  if (o.t !== 'str') badType(path, 'string');
  if (!spec.values.includes(o.v)) {
    throw new QgaError('GenericError', `Parameter '${String(path[path.length - 1])}' does not accept value '${o.v}'`);
  }
  return o.v;
}

function visit(type: TypeSpec, o: QObj, path: Path): ArgValue {
  if (type === 'str') {
    if (o.t !== 'str') badType(path, 'string');
    return o.v;
  }
  if (type === 'int') return visitInt(o, path);
  if (type === 'uint64') return visitUint64(o, path);
  if (type === 'bool') {
    if (o.t !== 'bool') badType(path, 'boolean');
    return o.v;
  }
  if (type === 'number') {
    if (o.t === 'int') return Number(o.v);
    if (o.t !== 'float') badType(path, 'number');
    return o.v;
  }
  switch (type.kind) {
    case 'list':
      if (o.t !== 'list') badType(path, 'array');
      return o.v.map((item, i) => visit(type.of, item, [...path, i]));
    case 'struct':
      if (o.t !== 'dict') badType(path, 'object');
      return visitStruct(type.members, o.v, path);
    case 'enum':
      return visitEnum(type, o, path);
    case 'alternate': {
      if ((o.t === 'int' || o.t === 'float') && type.int) return visitInt(o, path);
      if (o.t === 'bool' && type.bool) return o.v;
      if (o.t === 'str' && type.enum) return visitEnum(type.enum, o, path);
      // QEMU's generated alternate visitor names the member, not the full path
      throw new QgaError(
        'GenericError',
        `Invalid parameter type for '${String(path[path.length - 1])}', expected: ${type.name}`,
      );
    }
  }
}

export function visitStruct(members: readonly Member[], dict: Map<string, QObj>, path: Path = []): ArgStruct {
  const out: ArgStruct = {};
  for (const m of members) {
    const o = dict.get(m.name);
    if (o === undefined) {
      if (m.optional) continue;
      throw new QgaError('GenericError', `Parameter '${fullName([...path, m.name])}' is missing`);
    }
    out[m.name] = visit(m.type, o, [...path, m.name]);
  }
  for (const key of dict.keys()) {
    if (!members.some((m) => m.name === key)) {
      throw new QgaError('GenericError', `Parameter '${fullName([...path, key])}' is unexpected`);
    }
  }
  return out;
}

// small constructors so command tables read like the QAPI schema
export const list = (of: TypeSpec): TypeSpec => ({ kind: 'list', of });
export const enumOf = (name: string, values: readonly string[]): EnumSpec => ({ kind: 'enum', name, values });
export const struct = (name: string, members: readonly Member[]): TypeSpec => ({ kind: 'struct', name, members });
export const req = (name: string, type: TypeSpec): Member => ({ name, type });
export const opt = (name: string, type: TypeSpec): Member => ({ name, type, optional: true });
