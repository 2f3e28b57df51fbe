/**
 * Agent bytes → reply messages. No I/O: the channel pushes socket chunks in and reacts to events.
 *
 * Framing facts it relies on (see QGA-FACTS.md): a reply is one line of ASCII JSON ending in '\n';
 * 0xFF never occurs inside a reply, so a 0xFF byte is always the sentinel that
 * guest-sync-delimited puts in front of its reply, and whatever partial line precedes it is the
 * torn tail of something older. Replies can be tens of MiB, so a line longer than the cap is
 * dropped while it streams in rather than buffered.
 */
import type { JsonObject } from './types.js';
import { MAX_JSON_DEPTH, parseJson, type JsonValue } from '../util/json.js';
import type { ReplyBudget } from './reply-budget.js';
import { StreamingJsonParser } from './stream-json.js';

export type DecoderEvent =
  | { type: 'message'; value: JsonObject; bytes: number }
  /** a 0xFF byte: any partial line before it has been discarded */
  | { type: 'sentinel' }
  /** a complete line that is not JSON, or JSON but not an object */
  | { type: 'invalid'; reason: string; preview: string }
  /**
   * a line went past maxLineBytes ('cap') or would have taken the shared budget past its limit
   * ('budget'); the rest of it up to '\n' or 0xFF is dropped unbuffered
   */
  | { type: 'oversize'; bytes: number; limit: 'cap' | 'budget' }
  /** bytes thrown away without being parsed: while waiting for a sentinel, or a torn partial line */
  | { type: 'discarded'; bytes: number };

export interface ReplyDecoderOptions {
  maxLineBytes: number;
  onEvent: (event: DecoderEvent) => void;
  /** shared by all channels: every byte of a partial line is taken from it while held */
  budget?: ReplyBudget;
  /**
   * a line longer than this is parsed incrementally as its chunks arrive (StreamingJsonParser)
   * instead of being buffered and parsed in one go; default 1 MiB
   */
  streamFromBytes?: number;
  /**
   * the pieces of such a line are held as received and fed to the parser once this many are
   * held (and at the line's end): receiving stays a cheap append, so the agent's socket is
   * drained fast (qemu-ga busy-waits while its reply does not fit the socket), and the parse
   * work comes in steps of at most this many bytes; default 256 KiB (4 MiB steps held the event
   * loop longer for no gain: a 60 MiB reply delayed another VM's pings by 66-79 ms against 17-35
   * ms at 256 KiB, and HTTP downloads on qemu-ga ran at the same speed)
   */
  feedBatchBytes?: number;
}

const LF = 0x0a;
const CR = 0x0d;
const SENTINEL = 0xff;
const PREVIEW_CHARS = 120;

type Mode = 'lines' | 'skip-oversize' | 'until-sentinel';

export class ReplyDecoder {
  private readonly maxLineBytes: number;
  private readonly onEvent: (event: DecoderEvent) => void;
  /** the current partial line, as received (concatenated once when the line completes; a long line's are fed to the parser in batches) */
  private parts: Buffer[] = [];
  private partBytes = 0;
  private mode: Mode = 'lines';
  private readonly budget: ReplyBudget | undefined;
  private readonly streamFromBytes: number;
  private readonly feedBatchBytes: number;
  /** bytes in `parts`: held, not yet fed to the parser */
  private heldBytes = 0;
  /** the current line is long: its held bytes go to this parser in batches */
  private stream: StreamingJsonParser | undefined;
  /** the streamed line turned out not to be JSON; the rest of it is dropped, then reported */
  private streamError: Error | undefined;
  private preview = '';

  constructor(opts: ReplyDecoderOptions) {
    this.maxLineBytes = opts.maxLineBytes;
    this.onEvent = opts.onEvent;
    this.budget = opts.budget;
    this.streamFromBytes = opts.streamFromBytes ?? 1024 * 1024;
    this.feedBatchBytes = opts.feedBatchBytes ?? 256 * 1024;
  }

  /**
   * Drop everything up to and including the next 0xFF, then go back to lines (emitting
   * 'sentinel'). The channel switches this on when it starts a resync.
   */
  discardUntilSentinel(): void {
    this.dropPartial();
    this.mode = 'until-sentinel';
  }

  get waitingForSentinel(): boolean {
    return this.mode === 'until-sentinel';
  }

  /** Forget all state (a new connection). */
  reset(): void {
    this.clearPartial();
    this.mode = 'lines';
  }

  get bufferedBytes(): number {
    return this.partBytes;
  }

  push(chunk: Buffer): void {
    let pos = 0;
    // Position of the next 0xFF at or after pos (-1: none left). Found once and reused, so a chunk
    // holding many short lines is scanned once, not once per line.
    let nextFF = chunk.indexOf(SENTINEL);
    // Event handlers may switch the mode synchronously (e.g. start a resync), so the mode is
    // re-read on every step instead of once per chunk.
    while (pos < chunk.length) {
      if (nextFF >= 0 && nextFF < pos) nextFF = chunk.indexOf(SENTINEL, pos);
      if (this.mode === 'until-sentinel') {
        const ff = nextFF;
        const end = ff < 0 ? chunk.length : ff;
        if (end > pos) this.onEvent({ type: 'discarded', bytes: end - pos });
        if (ff < 0) return;
        pos = ff + 1;
        this.mode = 'lines';
        this.onEvent({ type: 'sentinel' });
        continue;
      }
      const nl = chunk.indexOf(LF, pos);
      const ff = nextFF >= 0 && (nl < 0 || nextFF < nl) ? nextFF : -1;
      if (this.mode === 'skip-oversize') {
        const stop = ff >= 0 ? ff : nl;
        if (stop < 0) return;
        pos = stop + 1;
        this.mode = 'lines';
        if (stop === ff) this.onEvent({ type: 'sentinel' });
        continue;
      }
      if (ff >= 0) {
        const torn = this.partBytes + ff - pos;
        this.clearPartial();
        if (torn > 0) this.onEvent({ type: 'discarded', bytes: torn });
        pos = ff + 1;
        this.onEvent({ type: 'sentinel' });
        continue;
      }
      if (nl < 0) {
        const rest = chunk.length - pos;
        const over = this.partBytes + rest > this.maxLineBytes ? 'cap' : this.budget && !this.budget.tryTake(rest) ? 'budget' : undefined;
        if (over) {
          const bytes = this.partBytes + rest;
          this.clearPartial();
          this.mode = 'skip-oversize';
          this.onEvent({ type: 'oversize', bytes, limit: over });
          return;
        }
        this.partBytes += rest;
        this.keep(chunk.subarray(pos));
        return;
      }
      const piece = chunk.subarray(pos, nl);
      pos = nl + 1;
      if (this.stream || this.partBytes > this.streamFromBytes) {
        this.endStream(piece);
        continue;
      }
      const line = this.parts.length === 0 ? piece : Buffer.concat([...this.parts, piece]);
      this.clearPartial();
      this.emitLine(line);
    }
  }

  /** Hold a piece of the current line; a long line's held pieces go to the incremental parser in batches. */
  private keep(piece: Buffer): void {
    this.parts.push(piece);
    this.heldBytes += piece.length;
    if (this.partBytes > this.streamFromBytes && this.heldBytes >= this.feedBatchBytes) this.feedHeld();
  }

  /** Feed the held pieces to the incremental parser (started with the line's first piece). */
  private feedHeld(): void {
    if (!this.stream) {
      this.stream = new StreamingJsonParser(MAX_JSON_DEPTH);
      this.streamError = undefined;
      this.preview = this.parts.length > 0 ? this.parts[0].toString('latin1', 0, PREVIEW_CHARS) : '';
    }
    const held = this.parts;
    this.parts = [];
    this.heldBytes = 0;
    for (const p of held) this.feed(p);
  }

  private feed(piece: Buffer): void {
    if (this.streamError || !this.stream) return;
    try {
      this.stream.write(piece);
    } catch (err) {
      this.streamError = err as Error;
    }
  }

  /** The long line ends with `piece`: its value (or why it is not one) is emitted. */
  private endStream(piece: Buffer): void {
    const len = this.partBytes + piece.length - (piece.length > 0 && piece[piece.length - 1] === CR ? 1 : 0);
    if (len > this.maxLineBytes) {
      this.clearPartial();
      this.onEvent({ type: 'oversize', bytes: len, limit: 'cap' });
      return;
    }
    this.feedHeld();
    const stream = this.stream as StreamingJsonParser;
    const preview = this.preview;
    this.feed(piece);
    let value: JsonValue | undefined;
    let error = this.streamError;
    const empty = stream.empty;
    if (!error && !empty) {
      try {
        value = stream.end();
      } catch (err) {
        error = err as Error;
      }
    }
    this.clearPartial();
    if (error) return this.onEvent({ type: 'invalid', reason: error.message, preview });
    if (!empty) this.emitValue(value as JsonValue, len, preview);
  }

  private dropPartial(): void {
    const bytes = this.partBytes;
    this.clearPartial();
    if (bytes > 0) this.onEvent({ type: 'discarded', bytes });
  }

  /** Forget the partial line and give its bytes back to the budget. */
  private clearPartial(): void {
    this.budget?.release(this.partBytes);
    this.parts = [];
    this.partBytes = 0;
    this.heldBytes = 0;
    this.stream = undefined;
    this.streamError = undefined;
    this.preview = '';
  }

  private emitLine(raw: Buffer): void {
    let len = raw.length;
    if (len > 0 && raw[len - 1] === CR) len--;
    if (len > this.maxLineBytes) {
      this.onEvent({ type: 'oversize', bytes: len, limit: 'cap' });
      return;
    }
    // Agent output is ASCII (everything else \u-escaped), so utf8 decoding is exact.
    const text = raw.toString('utf8', 0, len);
    if (text.trim() === '') return;
    let value: unknown;
    try {
      value = parseJson(text);
    } catch (err) {
      this.onEvent({ type: 'invalid', reason: (err as Error).message, preview: text.slice(0, PREVIEW_CHARS) });
      return;
    }
    this.emitValue(value as JsonValue, len, text.slice(0, PREVIEW_CHARS));
  }

  private emitValue(value: JsonValue, len: number, preview: string): void {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      this.onEvent({ type: 'invalid', reason: 'reply is not a JSON object', preview });
      return;
    }
    this.onEvent({ type: 'message', value: value as JsonObject, bytes: len });
  }
}
