/**
 * Lossless JSON. Agent replies carry integers above 2^53 (guest-get-time nanoseconds, uint64
 * counters) that JSON.parse silently rounds, so those become `bigint` here and are written back as
 * bare integer literals with every digit intact.
 *
 * Parsing takes the native JSON.parse path, then one walk over the result (which the depth check
 * needs anyway) looks for a number of magnitude ≥ 2^53 that is an integer: every integer literal
 * JSON.parse could have rounded lands there (rounding is monotonic and 2^53 is exact), so only then
 * is the text parsed again by the lossless parser. No regular expression scans the text, and
 * multi-MiB base64 replies never go through a character-by-character parser.
 * Writing takes native JSON.stringify unless the value holds a bigint (it throws on one).
 */

/** A decoded JSON value: integers beyond 2^53 - 1 in magnitude are `bigint`, every other number a `number`. */
export type JsonValue = null | boolean | number | bigint | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/** A JSON object: not null, not a list. */
export function isJsonObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}


/**
 * Deepest nesting of arrays and objects accepted (the agent's own replies nest a handful of
 * levels). Deeper text is a SyntaxError, so no consumer (re-serializing, logging, schema checks)
 * ever meets a value deep enough to overflow its stack.
 */
export const MAX_JSON_DEPTH = 64;

/**
 * Parse JSON text losslessly (see above). Throws SyntaxError for invalid JSON and for nesting
 * deeper than MAX_JSON_DEPTH. Keys such as "__proto__" (however escaped) become own data
 * properties; no prototype is ever replaced.
 */
export function parseJson(text: string): JsonValue {
  // V8's JSON.parse is iterative (any depth parses); depth and rounded integers are checked on the result
  const value: JsonValue = JSON.parse(text);
  if (value === null || typeof value !== 'object') {
    return typeof value === 'number' && mayBeRounded(value) ? new LosslessParser(text).parseDocument() : value;
  }
  const found = scanParsed(value, MAX_JSON_DEPTH);
  if (found === DEEP) throw new SyntaxError(`nesting deeper than ${MAX_JSON_DEPTH} levels in JSON`);
  return found === ROUNDED ? new LosslessParser(text).parseDocument() : value;
}

/** 2^53: a parsed integer at or beyond it may stand for a literal JSON.parse rounded */
const TWO_53 = 2 ** 53;
const mayBeRounded = (n: number): boolean => (n >= TWO_53 || n <= -TWO_53) && Number.isFinite(n);
const OK = 0;
const DEEP = 1;
const ROUNDED = 2;

/** One iterative walk: DEEP if nesting exceeds `max`, else ROUNDED if a number may have been rounded, else OK. */
function scanParsed(root: object, max: number): number {
  let rounded = false;
  // two parallel stacks: no tuple and no Object.values array per container (this runs per reply)
  const objs: object[] = [root];
  const depths: number[] = [1];
  while (objs.length > 0) {
    const obj = objs.pop() as Record<string, unknown>;
    const depth = depths.pop() as number;
    if (depth > max) return DEEP;
    if (Array.isArray(obj)) {
      for (let i = 0; i < obj.length; i++) {
        const item: unknown = obj[i];
        if (typeof item === 'number') rounded ||= mayBeRounded(item);
        else if (item !== null && typeof item === 'object') {
          objs.push(item);
          depths.push(depth + 1);
        }
      }
    } else {
      // JSON.parse makes plain objects: every key is an own enumerable one ("__proto__" included)
      for (const k in obj) {
        const item = obj[k];
        if (typeof item === 'number') rounded ||= mayBeRounded(item);
        else if (item !== null && typeof item === 'object') {
          objs.push(item);
          depths.push(depth + 1);
        }
      }
    }
  }
  return rounded ? ROUNDED : OK;
}

/** True when `value` nests arrays/objects more than `max` levels deep. Iterative: any depth is safe. */
export function jsonDepthExceeds(value: unknown, max: number): boolean {
  if (value === null || typeof value !== 'object') return false;
  const stack: Array<[object, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [obj, depth] = stack.pop() as [object, number];
    if (depth > max) return true;
    const items = Array.isArray(obj) ? obj : Object.values(obj);
    for (const item of items) if (item !== null && typeof item === 'object') stack.push([item as object, depth + 1]);
  }
  return false;
}

const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
const MAX_DEPTH = MAX_JSON_DEPTH;

class LosslessParser {
  private pos = 0;
  private depth = 0;

  constructor(private readonly text: string) {}

  parseDocument(): JsonValue {
    this.skipWs();
    const value = this.parseValue();
    this.skipWs();
    if (this.pos !== this.text.length) this.fail('unexpected data after JSON value');
    return value;
  }

  private fail(what: string): never {
    throw new SyntaxError(`${what} at position ${this.pos} in JSON`);
  }

  private skipWs(): void {
    const t = this.text;
    let p = this.pos;
    for (;;) {
      const c = t.charCodeAt(p);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) p++;
      else break;
    }
    this.pos = p;
  }

  private parseValue(): JsonValue {
    const c = this.text.charCodeAt(this.pos);
    switch (c) {
      case 0x7b: // {
        return this.parseObject();
      case 0x5b: // [
        return this.parseArray();
      case 0x22: // "
        return this.parseString();
      case 0x74: // t
        return this.literal('true', true);
      case 0x66: // f
        return this.literal('false', false);
      case 0x6e: // n
        return this.literal('null', null);
      default:
        if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.parseNumber();
        return this.fail(Number.isNaN(c) ? 'unexpected end' : `unexpected character ${JSON.stringify(this.text[this.pos])}`);
    }
  }

  private literal<T extends JsonValue>(word: string, value: T): T {
    if (!this.text.startsWith(word, this.pos)) this.fail('invalid literal');
    this.pos += word.length;
    return value;
  }

  private parseNumber(): number | bigint {
    NUMBER.lastIndex = this.pos;
    const m = NUMBER.exec(this.text);
    if (!m) return this.fail('invalid number');
    const token = m[0];
    this.pos += token.length;
    // A fraction or exponent means the agent meant a double; only plain integers can be exact.
    if (m[1] === undefined && m[2] === undefined) {
      const n = Number(token);
      if (!Number.isSafeInteger(n)) return BigInt(token);
      return n;
    }
    return Number(token);
  }

  private parseString(): string {
    const t = this.text;
    const start = this.pos; // at the opening quote
    let q = start;
    for (;;) {
      q = t.indexOf('"', q + 1);
      if (q < 0) {
        this.pos = t.length;
        this.fail('unterminated string');
      }
      let backslashes = 0;
      while (t.charCodeAt(q - 1 - backslashes) === 0x5c) backslashes++;
      if (backslashes % 2 === 0) break;
    }
    this.pos = q + 1;
    // The native parser decodes escapes and rejects control characters; it is fast on big strings.
    const value: unknown = JSON.parse(t.slice(start, q + 1));
    return typeof value === 'string' ? value : this.fail('invalid string');
  }

  /** At an opening bracket: steps in; true (and past it) when `close` follows at once. */
  private enter(close: number): boolean {
    if (++this.depth > MAX_DEPTH) this.fail(`nesting deeper than ${MAX_DEPTH} levels`);
    this.pos++;
    this.skipWs();
    return this.leaveAt(close);
  }

  /** After a member: true (and past it) at `close`, false past a comma; anything else fails. */
  private next(close: number, expected: string): boolean {
    this.skipWs();
    if (this.leaveAt(close)) return true;
    if (this.text.charCodeAt(this.pos) !== 0x2c) this.fail(expected);
    this.pos++;
    this.skipWs();
    return false;
  }

  private leaveAt(close: number): boolean {
    if (this.text.charCodeAt(this.pos) !== close) return false;
    this.pos++;
    this.depth--;
    return true;
  }

  private parseArray(): JsonValue[] {
    const out: JsonValue[] = [];
    if (this.enter(0x5d)) return out;
    do out.push(this.parseValue());
    while (!this.next(0x5d, "expected ',' or ']'"));
    return out;
  }

  private parseObject(): JsonObject {
    const out: JsonObject = {};
    if (this.enter(0x7d)) return out;
    do {
      if (this.text.charCodeAt(this.pos) !== 0x22) this.fail('expected property name');
      const key = this.parseString();
      this.skipWs();
      if (this.text.charCodeAt(this.pos) !== 0x3a) this.fail("expected ':'");
      this.pos++;
      this.skipWs();
      const value = this.parseValue();
      // A plain assignment to "__proto__" would replace the prototype instead of adding a member.
      if (key === '__proto__') {
        Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
      } else {
        out[key] = value;
      }
    } while (!this.next(0x7d, "expected ',' or '}'"));
    return out;
  }
}

/**
 * JSON text in which a bigint is a bare integer literal. Otherwise it follows JSON.stringify:
 * toJSON() is honoured, undefined/functions/symbols are skipped in objects and become null in
 * arrays, non-finite numbers become null, and cycles throw a TypeError. Iterative (an explicit
 * stack, no recursion), so no nesting depth can overflow the call stack.
 */
export function stringifyJson(value: unknown): string {
  // the fast path: native, for every value without a bigint (command lines, most replies)
  try {
    return JSON.stringify(value) ?? 'null';
  } catch {
    // a bigint (TypeError), or nesting too deep for the native writer (RangeError); cycles throw again below
    return writeIterative(value) ?? 'null';
  }
}

/** a container being written: its members still to go, and the text written so far */
interface Frame {
  obj: object;
  isArray: boolean;
  keys: readonly string[] | undefined;
  items: readonly unknown[] | undefined;
  next: number;
  parts: string[];
  /** the member key this container is the value of (objects), written once it is complete */
  key: string | undefined;
}

/** A scalar's text, `undefined` when it is skipped (in an object), or the object itself. */
function scalar(value: unknown, inArray: boolean): string | undefined | { obj: object } {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'bigint':
      return value.toString();
    case 'boolean':
      return value ? 'true' : 'false';
    case 'undefined':
    case 'function':
    case 'symbol':
      return inArray ? 'null' : undefined;
    default:
      return value === null ? 'null' : { obj: value as object };
  }
}

function toJsonOf(value: unknown): unknown {
  if (value !== null && typeof value === 'object' && 'toJSON' in value && typeof value.toJSON === 'function') return value.toJSON();
  return value;
}

function writeIterative(root: unknown): string | undefined {
  const ancestors = new Set<object>();
  const stack: Frame[] = [];
  const open = (obj: object, key: string | undefined): void => {
    if (ancestors.has(obj)) throw new TypeError('Converting circular structure to JSON');
    ancestors.add(obj);
    const isArray = Array.isArray(obj);
    stack.push({ obj, isArray, keys: isArray ? undefined : Object.keys(obj), items: isArray ? (obj as unknown[]) : undefined, next: 0, parts: [], key });
  };
  const first = scalar(toJsonOf(root), false);
  if (typeof first !== 'object') return first;
  open(first.obj, undefined);
  for (;;) {
    const f = stack[stack.length - 1];
    const total = f.isArray ? (f.items as unknown[]).length : (f.keys as string[]).length;
    if (f.next < total) {
      const i = f.next++;
      const key = f.isArray ? undefined : (f.keys as string[])[i];
      const raw = f.isArray ? (f.items as unknown[])[i] : Reflect.get(f.obj, key as string);
      const member = scalar(toJsonOf(raw), f.isArray);
      if (typeof member === 'object') {
        open(member.obj, key);
        continue;
      }
      if (member !== undefined) f.parts.push(key === undefined ? member : `${JSON.stringify(key)}:${member}`);
      else if (f.isArray) f.parts.push('null');
      continue;
    }
    stack.pop();
    ancestors.delete(f.obj);
    const text = f.isArray ? `[${f.parts.join(',')}]` : `{${f.parts.join(',')}}`;
    const parent = stack[stack.length - 1];
    if (!parent) return text;
    parent.parts.push(f.key === undefined ? text : `${JSON.stringify(f.key)}:${text}`);
  }
}
