/**
 * QEMU's JSON parser (qobject/json-parser.c) over the tokens of one message: same grammar
 * extensions (single-quoted strings), same integer classes and the same error texts, which the
 * agent sends back as "JSON parse error, <text>".
 */
import { isAscii } from 'node:buffer';
import { Tok } from './lexer.js';
import type { QObj } from './qobject.js';

export interface Token {
  type: Tok;
  text: Buffer;
}

export class JsonParseError extends Error {}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;

const utf8 = new TextDecoder('utf-8', { fatal: true });
const NONCHAR_BMP = /[\uFDD0-\uFDEF\uFFFE\uFFFF]/;
const NONCHAR_ASTRAL = /[\uD83F\uD87F\uD8BF\uD8FF\uD93F\uD97F\uD9BF\uD9FF\uDA3F\uDA7F\uDABF\uDAFF\uDB3F\uDB7F\uDBBF\uDBFF][\uDFFE\uDFFF]/;

function fail(msg: string): never {
  throw new JsonParseError(`JSON parse error, ${msg}`);
}

/** What QEMU's mod_utf8_encode accepts. */
function validCodepoint(cp: number): boolean {
  if (cp < 0 || cp > 0x10ffff) return false;
  if ((cp & 0xfffff800) === 0xd800) return false;
  if ((cp & 0xfffe) === 0xfffe) return false;
  return !(cp >= 0xfdd0 && cp <= 0xfdef);
}

function hex4(buf: Buffer, at: number, end: number): number {
  let cp = 0;
  for (let k = 0; k < 4; k++) {
    if (at + k >= end) return -1;
    const d = buf[at + k];
    let v: number;
    if (d >= 0x30 && d <= 0x39) v = d - 0x30;
    else if (d >= 0x61 && d <= 0x66) v = d - 0x57;
    else if (d >= 0x41 && d <= 0x46) v = d - 0x37;
    else return -1;
    cp = (cp << 4) | v;
  }
  return cp;
}

function decodeRun(buf: Buffer, from: number, to: number): string {
  const run = buf.subarray(from, to);
  if (isAscii(run)) return run.toString('latin1');
  let s: string;
  try {
    s = utf8.decode(run);
  } catch {
    fail('invalid UTF-8 sequence in string');
  }
  if (NONCHAR_BMP.test(s) || NONCHAR_ASTRAL.test(s)) fail('invalid UTF-8 sequence in string');
  return s;
}

export function parseStringToken(buf: Buffer): string {
  const end = buf.length - 1; // the lexer guarantees the closing quote
  let i = 1;
  const parts: string[] = [];
  while (i < end) {
    const bs = buf.indexOf(0x5c, i);
    const runEnd = bs === -1 || bs >= end ? end : bs;
    if (runEnd > i) parts.push(decodeRun(buf, i, runEnd));
    i = runEnd;
    if (i >= end) break;
    const beg = i;
    const e = buf[i + 1];
    i += 2;
    switch (e) {
      case 0x22: parts.push('"'); break;
      case 0x27: parts.push("'"); break;
      case 0x5c: parts.push('\\'); break;
      case 0x2f: parts.push('/'); break;
      case 0x62: parts.push('\b'); break;
      case 0x66: parts.push('\f'); break;
      case 0x6e: parts.push('\n'); break;
      case 0x72: parts.push('\r'); break;
      case 0x74: parts.push('\t'); break;
      case 0x75: {
        let cp = hex4(buf, i, end);
        i += 4;
        if (cp >= 0xd800 && cp <= 0xdbff && buf[i] === 0x5c && buf[i + 1] === 0x75) {
          const trailing = hex4(buf, i + 2, end);
          if (trailing >= 0xdc00 && trailing <= 0xdfff) {
            cp = 0x10000 + ((cp & 0x3ff) << 10) + (trailing & 0x3ff);
            i += 6;
          } else {
            cp = -1;
          }
        }
        if (!validCodepoint(cp)) {
          fail(`${buf.subarray(beg, Math.min(i, buf.length)).toString('latin1')} is not a valid Unicode character`);
        }
        parts.push(String.fromCodePoint(cp));
        break;
      }
      default:
        fail('invalid escape sequence in string');
    }
  }
  return parts.join('');
}

function parseNumber(tok: Token): QObj {
  const text = tok.text.toString('latin1');
  if (tok.type === Tok.INTEGER) {
    const v = BigInt(text);
    if (v >= INT64_MIN && v <= INT64_MAX) return { t: 'int', v };
    if (v >= 0n && v <= UINT64_MAX && text[0] !== '-') return { t: 'int', v };
  }
  return { t: 'float', v: Number(text) };
}

class TokenParser {
  private pos = 0;
  constructor(private readonly tokens: Token[]) {}

  private peek(): Token | undefined {
    return this.tokens[this.pos];
  }

  private pop(): Token | undefined {
    return this.tokens[this.pos++];
  }

  value(): QObj {
    const tok = this.peek();
    if (!tok) fail('premature EOI');
    switch (tok.type) {
      case Tok.LCURLY:
        return this.object();
      case Tok.LSQUARE:
        return this.array();
      case Tok.INTEGER:
      case Tok.FLOAT:
        this.pop();
        return parseNumber(tok);
      case Tok.STRING:
        this.pop();
        return { t: 'str', v: parseStringToken(tok.text) };
      case Tok.KEYWORD: {
        this.pop();
        const word = tok.text.toString('latin1');
        if (word === 'true') return { t: 'bool', v: true };
        if (word === 'false') return { t: 'bool', v: false };
        if (word === 'null') return { t: 'null' };
        return fail(`invalid keyword '${word}'`);
      }
      default:
        return fail('expecting value');
    }
  }

  private pair(dict: Map<string, QObj>): void {
    if (!this.peek()) fail('premature EOI');
    const key = this.value();
    if (key.t !== 'str') fail('key is not a string in object');
    const colon = this.pop();
    if (!colon) fail('premature EOI');
    if (colon.type !== Tok.COLON) fail('missing : in object pair');
    const value = this.value();
    if (dict.has(key.v)) fail('duplicate key');
    dict.set(key.v, value);
  }

  private object(): QObj {
    this.pop();
    const dict = new Map<string, QObj>();
    const peek = this.peek();
    if (!peek) fail('premature EOI');
    if (peek.type === Tok.RCURLY) {
      this.pop();
      return { t: 'dict', v: dict };
    }
    this.pair(dict);
    for (;;) {
      const tok = this.pop();
      if (!tok) fail('premature EOI');
      if (tok.type === Tok.RCURLY) return { t: 'dict', v: dict };
      if (tok.type !== Tok.COMMA) fail('expected separator in dict');
      this.pair(dict);
    }
  }

  private array(): QObj {
    this.pop();
    const list: QObj[] = [];
    const peek = this.peek();
    if (!peek) fail('premature EOI');
    if (peek.type === Tok.RSQUARE) {
      this.pop();
      return { t: 'list', v: list };
    }
    list.push(this.value());
    for (;;) {
      const tok = this.pop();
      if (!tok) fail('premature EOI');
      if (tok.type === Tok.RSQUARE) return { t: 'list', v: list };
      if (tok.type !== Tok.COMMA) fail('expected separator in list');
      list.push(this.value());
    }
  }
}

/** Parse one message's tokens; throws JsonParseError with the agent's error text. */
export function parseTokens(tokens: Token[]): QObj {
  return new TokenParser(tokens).value();
}
