/**
 * An incremental JSON parser for the agent's big reply lines (a 48 MB guest-file-read is ≈64 MiB
 * of base64 on one line). The decoder feeds it each socket chunk as it arrives, so the work of a
 * big reply is spread over the chunks instead of one long JSON.parse that stalls every other VM,
 * and the raw bytes are not kept: a long string is held as one decoded piece per chunk and joined
 * once at its end.
 *
 * Same results as parseJson (src/util/json.ts): integers beyond 2^53 - 1 become bigint, nesting
 * deeper than `maxDepth` is a SyntaxError (an explicit stack, no recursion: no depth can overflow
 * the call stack), "__proto__" keys (however escaped) become own data properties.
 */
import { StringDecoder } from 'node:string_decoder';
import type { JsonObject, JsonValue } from '../util/json.js';

type Frame = { array: JsonValue[]; obj?: undefined; key?: undefined } | { array?: undefined; obj: JsonObject; key: string | undefined };

const enum S {
  Value, // a value must come (after '[', ',' in an array, ':' or at the start)
  ValueOrClose, // just after '['
  KeyOrClose, // just after '{'
  Key, // after ',' in an object
  Colon,
  AfterValue,
  Str,
  Esc, // after a backslash in a string
  Hex, // collecting the 4 digits of \uXXXX
  Num,
  Lit,
  Done,
}

const NUMBER = /^-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/;
const ESCAPES: Record<number, string> = { 0x22: '"', 0x5c: '\\', 0x2f: '/', 0x62: '\b', 0x66: '\f', 0x6e: '\n', 0x72: '\r', 0x74: '\t' };

/**
 * The 32-bit view of one buffer's aligned bytes, made once per buffer fed (a typed-array view per
 * scan cost more than the scan itself on a base64 reply, where qemu-ga's escaped '/' ends a run
 * every ~64 bytes: a 60 MiB line took 700 ms instead of 400).
 */
class Words {
  private buf: Buffer | undefined;
  private view: Uint32Array = new Uint32Array(0);
  /** the index in buf of view[0] */
  private start = 0;

  of(buf: Buffer): this {
    if (this.buf !== buf) {
      this.buf = buf;
      this.start = (4 - (buf.byteOffset & 3)) & 3;
      const words = buf.length > this.start ? (buf.length - this.start) >> 2 : 0;
      this.view = new Uint32Array(buf.buffer, buf.byteOffset + this.start, words);
    }
    return this;
  }

  /**
   * The end of the run of plain string bytes (not '"', '\\' or a control character) from `i` up
   * to `n`: four bytes per step where the buffer is aligned (the bit tricks tell whether a word
   * holds a byte < 0x20, a '"' or a '\\'), byte by byte around such a word and at the unaligned
   * ends. A multi-MB base64 string is scanned several times faster than byte by byte.
   */
  plainRun(buf: Buffer, i: number, n: number): number {
    let j = i;
    while (j < n && (j < this.start || ((j - this.start) & 3) !== 0)) {
      if (stops(buf[j])) return j;
      j++;
    }
    const view = this.view;
    const end = Math.min(view.length, (n - this.start) >> 2);
    for (let w = (j - this.start) >> 2; w < end; w++) {
      const x = view[w];
      const q = x ^ 0x22222222;
      const e = x ^ 0x5c5c5c5c;
      if ((((x - 0x20202020) & ~x) | ((q - 0x01010101) & ~q) | ((e - 0x01010101) & ~e)) & 0x80808080) break;
      j += 4;
    }
    while (j < n) {
      if (stops(buf[j])) return j;
      j++;
    }
    return j;
  }
}

function stops(b: number): boolean {
  return b === 0x22 || b === 0x5c || b < 0x20;
}

export class StreamingJsonParser {
  private state = S.Value;
  private readonly stack: Frame[] = [];
  private root: JsonValue | undefined;
  /** decoded pieces of the string being read (one per chunk), this chunk's parts, the utf8 decoder */
  private pieces: string[] = [];
  private parts: string[] = [];
  private utf8 = new StringDecoder('utf8');
  private readonly words = new Words();
  private strIsKey = false;
  private hex = '';
  private token = '';
  private literal = '';
  private offset = 0;
  private started = false;

  constructor(private readonly maxDepth: number) {}

  /** Nothing but whitespace so far. */
  get empty(): boolean {
    return !this.started;
  }

  /** Feed bytes; throws SyntaxError at the first byte that cannot continue valid JSON. */
  write(buf: Buffer): void {
    const n = buf.length;
    let i = 0;
    while (i < n) {
      const c = buf[i];
      switch (this.state) {
        case S.Str: {
          // a run of plain characters in one step (the bulk of a base64 reply)
          const j = this.words.of(buf).plainRun(buf, i, n);
          if (j > i) this.parts.push(this.utf8.write(buf.subarray(i, j)));
          if (j === n) {
            i = j;
            continue;
          }
          const b = buf[j];
          if (b < 0x20) this.fail('control character in string', j);
          i = j + 1;
          if (b === 0x5c) this.state = S.Esc;
          else this.endString();
          continue;
        }
        case S.Esc: {
          i++;
          if (c === 0x75) {
            this.hex = '';
            this.state = S.Hex;
            continue;
          }
          const e = ESCAPES[c];
          if (e === undefined) this.fail('invalid escape', i - 1);
          this.parts.push(e);
          this.state = S.Str;
          continue;
        }
        case S.Hex: {
          i++;
          const isHex = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
          if (!isHex) this.fail('invalid \\u escape', i - 1);
          this.hex += String.fromCharCode(c);
          if (this.hex.length === 4) {
            this.parts.push(String.fromCharCode(parseInt(this.hex, 16)));
            this.state = S.Str;
          }
          continue;
        }
        case S.Num: {
          if ((c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2b || c === 0x2e || c === 0x65 || c === 0x45) {
            this.token += String.fromCharCode(c);
            i++;
            continue;
          }
          this.endNumber(i);
          continue; // the same byte again, in the state after the number
        }
        case S.Lit: {
          const want = this.literal.charCodeAt(this.token.length);
          if (c !== want) this.fail('invalid literal', i);
          this.token += String.fromCharCode(c);
          i++;
          if (this.token.length === this.literal.length) {
            this.value(this.literal === 'true' ? true : this.literal === 'false' ? false : null);
          }
          continue;
        }
        default:
          break;
      }
      i++;
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
      this.started = true;
      this.structural(c, i - 1);
    }
    this.offset += n;
    if (this.state === S.Str || this.state === S.Esc || this.state === S.Hex) this.flushChunk();
  }

  /** The whole value; throws SyntaxError if the text ended early. */
  end(): JsonValue {
    if (this.state === S.Num) this.endNumber(0);
    if (this.state !== S.Done) this.fail('unexpected end', 0);
    return this.root as JsonValue;
  }

  private structural(c: number, at: number): void {
    switch (this.state) {
      case S.Done:
        return this.fail('unexpected data after JSON value', at);
      case S.Colon:
        if (c !== 0x3a) this.fail("expected ':'", at);
        this.state = S.Value;
        return;
      case S.KeyOrClose:
      case S.Key:
        if (c === 0x22) return this.startString(true);
        if (c === 0x7d && this.state === S.KeyOrClose) return this.close();
        return this.fail('expected property name', at);
      case S.AfterValue: {
        const top = this.stack[this.stack.length - 1];
        if (c === 0x2c) {
          this.state = top.array ? S.Value : S.Key;
          return;
        }
        if ((c === 0x5d && top.array) || (c === 0x7d && top.obj)) return this.close();
        return this.fail(top.array ? "expected ',' or ']'" : "expected ',' or '}'", at);
      }
      default: // Value, ValueOrClose
        if (c === 0x5d && this.state === S.ValueOrClose) return this.close();
        return this.startValue(c, at);
    }
  }

  private startValue(c: number, at: number): void {
    if (c === 0x7b || c === 0x5b) {
      if (this.stack.length >= this.maxDepth) this.fail(`nesting deeper than ${this.maxDepth} levels`, at);
      this.stack.push(c === 0x5b ? { array: [] } : { obj: {}, key: undefined });
      this.state = c === 0x5b ? S.ValueOrClose : S.KeyOrClose;
      return;
    }
    if (c === 0x22) return this.startString(false);
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      this.token = String.fromCharCode(c);
      this.state = S.Num;
      return;
    }
    const lit = c === 0x74 ? 'true' : c === 0x66 ? 'false' : c === 0x6e ? 'null' : undefined;
    if (!lit) this.fail(`unexpected character ${JSON.stringify(String.fromCharCode(c))}`, at);
    this.literal = lit;
    this.token = lit[0];
    this.state = S.Lit;
  }

  private startString(isKey: boolean): void {
    this.strIsKey = isKey;
    this.pieces = [];
    this.parts = [];
    this.utf8 = new StringDecoder('utf8');
    this.state = S.Str;
  }

  /** the parts of this chunk become one piece, so a long string is one piece per chunk */
  private flushChunk(): void {
    if (this.parts.length > 0) this.pieces.push(this.parts.length === 1 ? this.parts[0] : this.parts.join(''));
    this.parts = [];
  }

  private endString(): void {
    this.parts.push(this.utf8.end());
    this.flushChunk();
    const s = this.pieces.length === 1 ? this.pieces[0] : this.pieces.join('');
    this.pieces = [];
    if (!this.strIsKey) return this.value(s);
    (this.stack[this.stack.length - 1] as { key: string | undefined }).key = s;
    this.state = S.Colon;
  }

  private endNumber(at: number): void {
    const m = NUMBER.exec(this.token);
    if (!m) this.fail('invalid number', at);
    const n = Number(this.token);
    this.value(m[1] === undefined && m[2] === undefined && !Number.isSafeInteger(n) ? BigInt(this.token) : n);
  }

  private close(): void {
    const f = this.stack.pop() as Frame;
    this.value(f.array ?? (f.obj as JsonObject));
  }

  private value(v: JsonValue): void {
    const top = this.stack[this.stack.length - 1];
    if (!top) {
      this.root = v;
      this.state = S.Done;
      return;
    }
    if (top.array) top.array.push(v);
    else {
      const key = top.key as string;
      // a plain assignment to "__proto__" would replace the prototype instead of adding a member
      if (key === '__proto__') Object.defineProperty(top.obj, key, { value: v, enumerable: true, writable: true, configurable: true });
      else top.obj[key] = v;
    }
    this.state = S.AfterValue;
  }

  private fail(what: string, at: number): never {
    throw new SyntaxError(`${what} at position ${this.offset + at} in JSON`);
  }
}
