/**
 * QEMU's JSON message splitter (qobject/json-streamer.c): counts braces and brackets over the
 * lexer's tokens and hands a complete top-level value to the parser. One instance lives as long as
 * the simulated agent process, exactly like the real one, so it is never reset on disconnect.
 */
import { JsonLexer, MAX_TOKEN_SIZE, Tok } from './lexer.js';
import { JsonParseError, parseTokens, type Token } from './parser.js';
import type { QObj } from './qobject.js';

const MAX_TOKEN_COUNT = 2 * 1024 * 1024;
const MAX_NESTING = 1024;

export type StreamEvent = { ok: true; value: QObj } | { ok: false; desc: string };

/** The bytes of a token as C sees them (cut at NUL), decoded leniently like QEMU's JSON writer. */
function cString(buf: Buffer): string {
  const nul = buf.indexOf(0);
  return (nul === -1 ? buf : buf.subarray(0, nul)).toString('utf8');
}

export class JsonStreamer {
  private readonly lexer: JsonLexer;
  private tokens: Token[] = [];
  private tokenSize = 0;
  private braces = 0;
  private brackets = 0;

  constructor(
    private readonly emit: (ev: StreamEvent) => void,
    private readonly maxSize = MAX_TOKEN_SIZE,
  ) {
    this.lexer = new JsonLexer((type, text) => this.onToken(type, text), maxSize);
  }

  feed(chunk: Buffer): void {
    this.lexer.feed(chunk);
  }

  /** Bytes held for an incomplete message (for input back-pressure). */
  get bufferedBytes(): number {
    return this.tokenSize;
  }

  private onToken(type: Tok, text: Buffer): void {
    switch (type) {
      case Tok.LCURLY: this.braces++; break;
      case Tok.RCURLY: this.braces--; break;
      case Tok.LSQUARE: this.brackets++; break;
      case Tok.RSQUARE: this.brackets--; break;
      case Tok.ERROR:
        this.finish({ ok: false, desc: `JSON parse error, stray '${cString(text)}'` });
        return;
      default:
        break;
    }
    if (this.tokenSize + text.length + 1 > this.maxSize) {
      this.finish({ ok: false, desc: 'JSON token size limit exceeded' });
      return;
    }
    if (this.tokens.length + 1 > MAX_TOKEN_COUNT) {
      this.finish({ ok: false, desc: 'JSON token count limit exceeded' });
      return;
    }
    if (this.braces + this.brackets > MAX_NESTING) {
      this.finish({ ok: false, desc: 'JSON nesting depth limit exceeded' });
      return;
    }
    this.tokens.push({ type, text });
    this.tokenSize += text.length;
    if ((this.braces > 0 || this.brackets > 0) && this.braces >= 0 && this.brackets >= 0) return;
    let ev: StreamEvent;
    try {
      ev = { ok: true, value: parseTokens(this.tokens) };
    } catch (e) {
      if (!(e instanceof JsonParseError)) throw e;
      ev = { ok: false, desc: e.message };
    }
    this.finish(ev);
  }

  private finish(ev: StreamEvent): void {
    this.braces = 0;
    this.brackets = 0;
    this.tokens = [];
    this.tokenSize = 0;
    this.emit(ev);
  }
}
