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
import { parseJson } from '../util/json.js';

export type DecoderEvent =
  | { type: 'message'; value: JsonObject; bytes: number }
  /** a 0xFF byte: any partial line before it has been discarded */
  | { type: 'sentinel' }
  /** a complete line that is not JSON, or JSON but not an object */
  | { type: 'invalid'; reason: string; preview: string }
  /** a line went past maxLineBytes; the rest of it up to '\n' or 0xFF is dropped unbuffered */
  | { type: 'oversize'; bytes: number }
  /** bytes thrown away without being parsed: while waiting for a sentinel, or a torn partial line */
  | { type: 'discarded'; bytes: number };

export interface ReplyDecoderOptions {
  maxLineBytes: number;
  onEvent: (event: DecoderEvent) => void;
}

const LF = 0x0a;
const CR = 0x0d;
const SENTINEL = 0xff;
const PREVIEW_CHARS = 120;

type Mode = 'lines' | 'skip-oversize' | 'until-sentinel';

export class ReplyDecoder {
  private readonly maxLineBytes: number;
  private readonly onEvent: (event: DecoderEvent) => void;
  /** the current partial line, as received (concatenated once, when the line completes) */
  private parts: Buffer[] = [];
  private partBytes = 0;
  private mode: Mode = 'lines';

  constructor(opts: ReplyDecoderOptions) {
    this.maxLineBytes = opts.maxLineBytes;
    this.onEvent = opts.onEvent;
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
    this.parts = [];
    this.partBytes = 0;
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
        this.partBytes += ff - pos;
        this.dropPartial();
        pos = ff + 1;
        this.onEvent({ type: 'sentinel' });
        continue;
      }
      if (nl < 0) {
        const rest = chunk.length - pos;
        if (this.partBytes + rest > this.maxLineBytes) {
          const bytes = this.partBytes + rest;
          this.parts = [];
          this.partBytes = 0;
          this.mode = 'skip-oversize';
          this.onEvent({ type: 'oversize', bytes });
          return;
        }
        this.parts.push(chunk.subarray(pos));
        this.partBytes += rest;
        return;
      }
      const piece = chunk.subarray(pos, nl);
      pos = nl + 1;
      const line = this.parts.length === 0 ? piece : Buffer.concat([...this.parts, piece]);
      this.parts = [];
      this.partBytes = 0;
      this.emitLine(line);
    }
  }

  private dropPartial(): void {
    const bytes = this.partBytes;
    this.parts = [];
    this.partBytes = 0;
    if (bytes > 0) this.onEvent({ type: 'discarded', bytes });
  }

  private emitLine(raw: Buffer): void {
    let len = raw.length;
    if (len > 0 && raw[len - 1] === CR) len--;
    if (len > this.maxLineBytes) {
      this.onEvent({ type: 'oversize', bytes: len });
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
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      this.onEvent({ type: 'invalid', reason: 'reply is not a JSON object', preview: text.slice(0, PREVIEW_CHARS) });
      return;
    }
    this.onEvent({ type: 'message', value: value as JsonObject, bytes: len });
  }
}
