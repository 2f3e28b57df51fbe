/**
 * A byte-for-byte port of QEMU's JSON lexer (qobject/json-lexer.c, QEMU 3.0 and later): the same
 * state table, the same lookahead rule and the same error recovery. Fidelity matters here because
 * clients depend on its quirks: 0xFF is an impossible byte that yields one "stray" error and puts
 * the lexer back at a token boundary, and half a request left by an earlier client turns the next
 * client's first request into garbage ("stray '-p'").
 */

export const Tok = {
  ERROR: 0,
  LCURLY: 100,
  RCURLY: 101,
  LSQUARE: 102,
  RSQUARE: 103,
  COLON: 104,
  COMMA: 105,
  INTEGER: 106,
  FLOAT: 107,
  KEYWORD: 108,
  STRING: 109,
  /** not a QEMU token type: a token cut at the size limit, which the parser rejects */
  OVERSIZE: 120,
} as const;
export type Tok = (typeof Tok)[keyof typeof Tok];

const IN_RECOVERY = 1;
const IN_DQ_STRING_ESCAPE = 2;
const IN_DQ_STRING = 3;
const IN_SQ_STRING_ESCAPE = 4;
const IN_SQ_STRING = 5;
const IN_ZERO = 6;
const IN_EXP_DIGITS = 7;
const IN_EXP_SIGN = 8;
const IN_EXP_E = 9;
const IN_MANTISSA = 10;
const IN_MANTISSA_DIGITS = 11;
const IN_DIGITS = 12;
const IN_SIGN = 13;
const IN_KEYWORD = 14;
const IN_START = 16;
const STATES = 17;
const LOOKAHEAD = 0x80;

/** QEMU's MAX_TOKEN_SIZE: also the agent's effective per-request input cap (64 MiB). */
export const MAX_TOKEN_SIZE = 64 * 1024 * 1024;

const c = (ch: string): number => ch.charCodeAt(0);

function buildTable(): Uint8Array {
  const t = new Uint8Array(STATES * 256); // default 0 = JSON_ERROR, like the C initializer
  const set = (state: number, from: number, to: number, next: number): void => {
    for (let b = from; b <= to; b++) t[state * 256 + b] = next;
  };
  const terminal = (state: number, tok: number): void => set(state, 0, 0xff, tok | LOOKAHEAD);

  set(IN_RECOVERY, 0, 0x1f, IN_START | LOOKAHEAD);
  set(IN_RECOVERY, 0x20, 0xfd, IN_RECOVERY);
  set(IN_RECOVERY, 0xfe, 0xff, IN_START | LOOKAHEAD);
  set(IN_RECOVERY, c('\t'), c('\t'), IN_RECOVERY);
  for (const s of '[]{}:,') set(IN_RECOVERY, c(s), c(s), IN_START | LOOKAHEAD);

  set(IN_DQ_STRING_ESCAPE, 0x20, 0xfd, IN_DQ_STRING);
  set(IN_DQ_STRING, 0x20, 0xfd, IN_DQ_STRING);
  set(IN_DQ_STRING, c('\\'), c('\\'), IN_DQ_STRING_ESCAPE);
  set(IN_DQ_STRING, c('"'), c('"'), Tok.STRING);
  set(IN_SQ_STRING_ESCAPE, 0x20, 0xfd, IN_SQ_STRING);
  set(IN_SQ_STRING, 0x20, 0xfd, IN_SQ_STRING);
  set(IN_SQ_STRING, c('\\'), c('\\'), IN_SQ_STRING_ESCAPE);
  set(IN_SQ_STRING, c("'"), c("'"), Tok.STRING);

  terminal(IN_ZERO, Tok.INTEGER);
  set(IN_ZERO, c('0'), c('9'), Tok.ERROR);
  set(IN_ZERO, c('.'), c('.'), IN_MANTISSA);

  terminal(IN_EXP_DIGITS, Tok.FLOAT);
  set(IN_EXP_DIGITS, c('0'), c('9'), IN_EXP_DIGITS);
  set(IN_EXP_SIGN, c('0'), c('9'), IN_EXP_DIGITS);
  set(IN_EXP_E, c('-'), c('-'), IN_EXP_SIGN);
  set(IN_EXP_E, c('+'), c('+'), IN_EXP_SIGN);
  set(IN_EXP_E, c('0'), c('9'), IN_EXP_DIGITS);

  terminal(IN_MANTISSA_DIGITS, Tok.FLOAT);
  set(IN_MANTISSA_DIGITS, c('0'), c('9'), IN_MANTISSA_DIGITS);
  set(IN_MANTISSA_DIGITS, c('e'), c('e'), IN_EXP_E);
  set(IN_MANTISSA_DIGITS, c('E'), c('E'), IN_EXP_E);
  set(IN_MANTISSA, c('0'), c('9'), IN_MANTISSA_DIGITS);

  terminal(IN_DIGITS, Tok.INTEGER);
  set(IN_DIGITS, c('0'), c('9'), IN_DIGITS);
  set(IN_DIGITS, c('e'), c('e'), IN_EXP_E);
  set(IN_DIGITS, c('E'), c('E'), IN_EXP_E);
  set(IN_DIGITS, c('.'), c('.'), IN_MANTISSA);

  set(IN_SIGN, c('0'), c('0'), IN_ZERO);
  set(IN_SIGN, c('1'), c('9'), IN_DIGITS);

  terminal(IN_KEYWORD, Tok.KEYWORD);
  set(IN_KEYWORD, c('a'), c('z'), IN_KEYWORD);

  set(IN_START, c('"'), c('"'), IN_DQ_STRING);
  set(IN_START, c("'"), c("'"), IN_SQ_STRING);
  set(IN_START, c('0'), c('0'), IN_ZERO);
  set(IN_START, c('1'), c('9'), IN_DIGITS);
  set(IN_START, c('-'), c('-'), IN_SIGN);
  set(IN_START, c('{'), c('{'), Tok.LCURLY);
  set(IN_START, c('}'), c('}'), Tok.RCURLY);
  set(IN_START, c('['), c('['), Tok.LSQUARE);
  set(IN_START, c(']'), c(']'), Tok.RSQUARE);
  set(IN_START, c(','), c(','), Tok.COMMA);
  set(IN_START, c(':'), c(':'), Tok.COLON);
  set(IN_START, c('a'), c('z'), IN_KEYWORD);
  for (const ws of ' \t\r\n') set(IN_START, c(ws), c(ws), IN_START);
  return t;
}

const TABLE = buildTable();

export type TokenSink = (type: Tok, text: Buffer) => void;

export class JsonLexer {
  private state = IN_START;
  /** pieces of the current token that arrived in earlier chunks */
  private carry: Buffer[] = [];
  private carryLen = 0;

  constructor(
    private readonly sink: TokenSink,
    private readonly maxTokenSize = MAX_TOKEN_SIZE,
  ) {}

  feed(chunk: Buffer): void {
    let state = this.state;
    // the current token is carry + chunk[start, i)
    let start = 0;
    const n = chunk.length;
    for (let i = 0; i < n; i++) {
      if (state === IN_DQ_STRING) {
        // fast path through the body of a long string (base64 payloads): bytes that keep the
        // state, stopping before the byte that would push the token over the size limit
        const limit = Math.min(n, start + this.maxTokenSize - this.carryLen);
        while (i < limit) {
          const b = chunk[i];
          if (b < 0x20 || b > 0xfd || b === 0x22 || b === 0x5c) break;
          i++;
        }
        if (i >= n) break;
      }
      const ch = chunk[i];
      let consumed = false;
      while (!consumed) {
        const next = TABLE[state * 256 + ch];
        consumed = (next & LOOKAHEAD) === 0;
        const newState = next & ~LOOKAHEAD;
        const end = consumed ? i + 1 : i;
        if (newState >= Tok.LCURLY) {
          this.sink(newState as Tok, this.take(chunk, start, end));
          start = end;
          state = IN_START;
        } else if (newState === IN_START) {
          this.drop();
          start = end;
          state = IN_START;
        } else if (newState === Tok.ERROR) {
          this.sink(Tok.ERROR, this.take(chunk, start, end));
          start = end;
          state = IN_RECOVERY;
        } else if (newState === IN_RECOVERY) {
          this.drop();
          start = end;
          state = IN_RECOVERY;
        } else {
          state = newState;
        }
      }
      if (this.carryLen + (i + 1 - start) > this.maxTokenSize) {
        // QEMU hands the over-long token to the streamer with the lexer state as its type
        this.sink(Tok.OVERSIZE, this.take(chunk, start, i + 1));
        start = i + 1;
        state = IN_START;
      }
    }
    if (start < n) {
      this.carry.push(Buffer.from(chunk.subarray(start, n)));
      this.carryLen += n - start;
    }
    this.state = state;
  }

  private take(chunk: Buffer, start: number, end: number): Buffer {
    const piece = chunk.subarray(start, end);
    if (this.carryLen === 0) return piece;
    const whole = Buffer.concat([...this.carry, piece]);
    this.drop();
    return whole;
  }

  private drop(): void {
    if (this.carryLen !== 0 || this.carry.length !== 0) {
      this.carry = [];
      this.carryLen = 0;
    }
  }
}
