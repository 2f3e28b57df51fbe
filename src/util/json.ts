/**
 * Lossless JSON. Agent replies carry integers above 2^53 (guest-get-time nanoseconds, uint64
 * counters) that JSON.parse silently rounds, so those become `bigint` here and are written back as
 * bare integer literals with every digit intact.
 *
 * Parsing takes the native JSON.parse path unless the text holds a run of 16+ digits: only such a
 * run can be an unsafe integer (2^53 - 1 has 16 digits), and multi-MiB base64 replies must not
 * go through a character-by-character parser.
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

const LONG_DIGIT_RUN = /\d{16}/;

export function parseJson(text: string): JsonValue {
  if (!LONG_DIGIT_RUN.test(text)) {
    // no integer here can be unsafe, so what JSON.parse builds is a JsonValue without bigints
    const value: JsonValue = JSON.parse(text);
    return value;
  }
  return new LosslessParser(text).parseDocument();
}

const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
// far below the depth at which the recursive descent would overflow the stack (≈5000)
const MAX_DEPTH = 1_000;

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
    if (++this.depth > MAX_DEPTH) this.fail('nesting too deep');
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
 * arrays, non-finite numbers become null, and cycles throw a TypeError.
 */
export function stringifyJson(value: unknown): string {
  const out = write(value, new Set<object>(), false);
  return out ?? 'null';
}

function write(value: unknown, ancestors: Set<object>, inArray: boolean): string | undefined {
  if (value !== null && typeof value === 'object' && 'toJSON' in value && typeof value.toJSON === 'function') {
    value = value.toJSON();
  }
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
      break;
  }
  // only objects are left (and null, whose typeof is 'object' too)
  if (typeof value !== 'object' || value === null) return 'null';
  const obj: object = value;
  if (ancestors.has(obj)) throw new TypeError('Converting circular structure to JSON');
  ancestors.add(obj);
  let text: string;
  if (Array.isArray(obj)) {
    const parts: string[] = [];
    for (const item of obj) parts.push(write(item, ancestors, true) ?? 'null');
    text = `[${parts.join(',')}]`;
  } else {
    const parts: string[] = [];
    for (const key of Object.keys(obj)) {
      const member = write(Reflect.get(obj, key), ancestors, false);
      if (member !== undefined) parts.push(`${JSON.stringify(key)}:${member}`);
    }
    text = `{${parts.join(',')}}`;
  }
  ancestors.delete(obj);
  return text;
}
