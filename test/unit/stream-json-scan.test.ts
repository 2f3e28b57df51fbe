/**
 * The streaming parser's word-at-a-time scan of plain string bytes (stream-json.ts plainRun):
 * a quote, a backslash escape or a raw control character at every position of a 4-byte word,
 * in buffers at every alignment and split into pieces of every small size, parses exactly as
 * JSON.parse does (or fails as it does); and the decoder's batching of a long line's pieces
 * (ReplyDecoder feedBatchBytes) gives the same messages at every threshold, batch and split.
 */
import { describe, expect, test } from 'vitest';
import { ReplyDecoder, type DecoderEvent } from '../../src/qga/decoder.js';
import { StreamingJsonParser } from '../../src/qga/stream-json.js';

function parsePieces(text: Buffer, offset: number, piece: number): unknown {
  // the same bytes at `offset` within a larger allocation, so the 32-bit view starts unaligned
  const backing = Buffer.alloc(text.length + 8, 0x41);
  text.copy(backing, offset);
  const buf = backing.subarray(offset, offset + text.length);
  const p = new StreamingJsonParser(64);
  for (let i = 0; i < buf.length; i += piece) p.write(buf.subarray(i, i + piece));
  return p.end();
}

const body = 'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODkrLw==';

describe('plain string runs scanned a word at a time', () => {
  test('an escape at every position, every alignment and piece size: the same value as JSON.parse', () => {
    for (let pos = 0; pos < 12; pos++) {
      for (const esc of ['\\"', '\\\\', '\\/', '\\n', '\\u0041', '\\u00e9']) {
        const text = `{"buf-b64": "${body.slice(0, pos)}${esc}${body.slice(pos)}", "eof": false}`;
        const want = JSON.parse(text);
        for (let offset = 0; offset < 4; offset++) {
          for (const piece of [1, 3, 4, 7, 64, 4096]) {
            expect(parsePieces(Buffer.from(text), offset, piece)).toEqual(want);
          }
        }
      }
    }
  });

  test('a raw control character inside a string fails at every position and alignment', () => {
    for (let pos = 0; pos < 9; pos++) {
      for (const c of [0x00, 0x01, 0x09, 0x0a, 0x1f]) {
        const text = Buffer.from(`{"s": "${body.slice(0, pos)}_${body.slice(pos)}"}`);
        text[7 + pos] = c;
        expect(() => JSON.parse(text.toString('latin1'))).toThrow(SyntaxError);
        for (let offset = 0; offset < 4; offset++) {
          for (const piece of [1, 5, 4096]) {
            expect(() => parsePieces(text, offset, piece)).toThrow(/control character in string/);
          }
        }
      }
    }
  });

  test('bytes just above the stops (0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f) stay plain', () => {
    const text = `{"s": "${' !#[]\x7f'.repeat(9)}"}`;
    for (let offset = 0; offset < 4; offset++) expect(parsePieces(Buffer.from(text), offset, 4096)).toEqual(JSON.parse(text));
  });
});

describe('the decoder holds a long line and feeds it to the parser in batches', () => {
  const value = { return: { count: 3, 'buf-b64': body.repeat(40), eof: false, n: 12345678901234567890n } };
  const line = Buffer.from(`{"return": {"count": 3, "buf-b64": "${body.repeat(40)}", "eof": false, "n": 12345678901234567890}}\n`);

  function decode(streamFromBytes: number, feedBatchBytes: number, piece: number): DecoderEvent[] {
    const events: DecoderEvent[] = [];
    const d = new ReplyDecoder({ maxLineBytes: 1 << 20, streamFromBytes, feedBatchBytes, onEvent: (e) => events.push(e) });
    const stream = Buffer.concat([line, Buffer.from('{"return": 1}\n'), line]);
    for (let i = 0; i < stream.length; i += piece) d.push(stream.subarray(i, i + piece));
    return events;
  }

  test('every threshold, batch size and split: the same messages (lossless), the same as one buffered parse', () => {
    const want = [
      { type: 'message', value, bytes: line.length - 1 },
      { type: 'message', value: { return: 1 }, bytes: 13 },
      { type: 'message', value, bytes: line.length - 1 },
    ];
    for (const streamFromBytes of [1 << 20, 100, 1]) {
      for (const batch of [1, 64, 1000, 1 << 22]) {
        for (const piece of [1, 7, 256, 4096, 1 << 16]) {
          expect(decode(streamFromBytes, batch, piece), `from ${streamFromBytes} batch ${batch} piece ${piece}`).toEqual(want);
        }
      }
    }
  });

  test('a long line that is not JSON is one invalid event whose preview is its start, whatever the batching', () => {
    const bad = Buffer.from(`{"return": "${body.repeat(40)}" oops}\n{"return": 2}\n`);
    for (const batch of [1, 500, 1 << 22]) {
      const events: DecoderEvent[] = [];
      const d = new ReplyDecoder({ maxLineBytes: 1 << 20, streamFromBytes: 100, feedBatchBytes: batch, onEvent: (e) => events.push(e) });
      for (let i = 0; i < bad.length; i += 333) d.push(bad.subarray(i, i + 333));
      expect(events.map((e) => e.type)).toEqual(['invalid', 'message']);
      expect(events[0].type === 'invalid' && events[0].preview).toBe(bad.toString('latin1', 0, 120));
    }
  });
});
