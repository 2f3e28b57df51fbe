import { describe, expect, it } from 'vitest';
import { ReplyDecoder, type DecoderEvent } from '../../src/qga/decoder.js';

type Simple =
  | { type: 'message'; value: unknown }
  | { type: 'sentinel' }
  | { type: 'invalid' }
  | { type: 'oversize' }
  | { type: 'discarded'; bytes: number };

/** Events in a form that does not depend on how the stream was chunked. */
function normalize(events: DecoderEvent[]): Simple[] {
  const out: Simple[] = [];
  for (const e of events) {
    const last = out[out.length - 1];
    if (e.type === 'discarded') {
      if (last?.type === 'discarded') last.bytes += e.bytes;
      else out.push({ type: 'discarded', bytes: e.bytes });
    } else if (e.type === 'message') out.push({ type: 'message', value: e.value });
    else out.push({ type: e.type });
  }
  return out;
}

function decode(chunks: Buffer[], maxLineBytes = 1024, setup?: (d: ReplyDecoder) => void): DecoderEvent[] {
  const events: DecoderEvent[] = [];
  const d = new ReplyDecoder({ maxLineBytes, onEvent: (e) => events.push(e) });
  setup?.(d);
  for (const c of chunks) d.push(c);
  return events;
}

const FF = Buffer.from([0xff]);
const b = (s: string): Buffer => Buffer.from(s, 'utf8');

// Stale tail of an old reply, a sentinel, the sync reply, CRLF and blank lines, garbage, a reply
// with a bigint, 0xFF in the middle of a line, a non-object line, and a trailing partial line.
const STREAM = Buffer.concat([
  b('"stale-tail-of-base64xyz"}}\n{"return": {}}\n{"retu'),
  FF,
  b('{"return": 12345}\n'),
  b('\r\n\n   \n'),
  b('{"return": {"a": "\\u00e9"}}\r\n'),
  b('this is not json\n'),
  b('{"return": 1732000000123456789, "id": 7}\n'),
  b('{"return": "torn'),
  FF,
  b('{"error": {"class": "GenericError", "desc": "x"}}\n'),
  b('[1,2]\n'),
  b('{"return": "partial'),
]);

const EXPECTED: Simple[] = [
  { type: 'message', value: { return: {} } },
  { type: 'discarded', bytes: 6 },
  { type: 'sentinel' },
  { type: 'message', value: { return: 12345 } },
  { type: 'message', value: { return: { a: 'é' } } },
  { type: 'invalid' },
  { type: 'message', value: { return: 1732000000123456789n, id: 7 } },
  { type: 'discarded', bytes: 16 },
  { type: 'sentinel' },
  { type: 'message', value: { error: { class: 'GenericError', desc: 'x' } } },
  { type: 'invalid' },
];

describe('ReplyDecoder', () => {
  it('decodes a mixed stream in one chunk', () => {
    const events = decode([STREAM]);
    // The first line is a stale tail: invalid JSON, reported as such (the channel decides).
    expect(normalize(events)).toEqual([{ type: 'invalid' }, ...EXPECTED]);
  });

  it('gives the same result for every split point and byte by byte', () => {
    const whole = normalize(decode([STREAM]));
    for (let i = 0; i <= STREAM.length; i++) {
      expect(normalize(decode([STREAM.subarray(0, i), STREAM.subarray(i)])), `split at ${i}`).toEqual(whole);
    }
    for (let i = 1; i < STREAM.length; i += 7) {
      for (let j = i; j < STREAM.length; j += 11) {
        const parts = [STREAM.subarray(0, i), STREAM.subarray(i, j), STREAM.subarray(j)];
        expect(normalize(decode(parts)), `split at ${i},${j}`).toEqual(whole);
      }
    }
    const bytes = [...STREAM].map((x) => Buffer.from([x]));
    expect(normalize(decode(bytes))).toEqual(whole);
  });

  it('in discardUntilSentinel mode drops everything before the 0xFF, at every split', () => {
    for (let i = 0; i <= STREAM.length; i++) {
      const events = decode([STREAM.subarray(0, i), STREAM.subarray(i)], 1024, (d) => d.discardUntilSentinel());
      const n = normalize(events);
      expect(n[0], `split at ${i}`).toEqual({ type: 'discarded', bytes: STREAM.indexOf(0xff) });
      expect(n.slice(1), `split at ${i}`).toEqual(EXPECTED.slice(2));
    }
  });

  it('switches mode synchronously from inside an event handler', () => {
    const events: DecoderEvent[] = [];
    const d = new ReplyDecoder({
      maxLineBytes: 1024,
      onEvent: (e) => {
        events.push(e);
        // like the channel: an unexpected line triggers a resync
        if (e.type === 'invalid') d.discardUntilSentinel();
      },
    });
    d.push(Buffer.concat([b('garbage\n{"return": 1}\n{"return": 2}\n'), FF, b('{"return": 3}\n')]));
    expect(normalize(events)).toEqual([
      { type: 'invalid' },
      { type: 'discarded', bytes: 28 },
      { type: 'sentinel' },
      { type: 'message', value: { return: 3 } },
    ]);
    expect(d.waitingForSentinel).toBe(false);
  });

  it('drops an oversize line without buffering it and resumes at the next line', () => {
    const big = b(`{"return": "${'A'.repeat(10_000)}"}\n`);
    const stream = Buffer.concat([b('{"return": 1}\n'), big, b('{"return": 2}\n')]);
    for (const size of [1, 100, 999, 4096, stream.length]) {
      const events: DecoderEvent[] = [];
      let maxBuffered = 0;
      const d = new ReplyDecoder({ maxLineBytes: 1000, onEvent: (e) => events.push(e) });
      for (let i = 0; i < stream.length; i += size) {
        d.push(stream.subarray(i, i + size));
        maxBuffered = Math.max(maxBuffered, d.bufferedBytes);
      }
      expect(normalize(events), `chunk ${size}`).toEqual([
        { type: 'message', value: { return: 1 } },
        { type: 'oversize' },
        { type: 'message', value: { return: 2 } },
      ]);
      expect(maxBuffered).toBeLessThanOrEqual(1000);
    }
  });

  it('ends oversize skipping at a sentinel too', () => {
    const stream = Buffer.concat([b(`{"return": "${'A'.repeat(5000)}`), FF, b('{"return": 9}\n')]);
    const events = decode([stream.subarray(0, 2000), stream.subarray(2000)], 1000);
    expect(normalize(events)).toEqual([{ type: 'oversize' }, { type: 'sentinel' }, { type: 'message', value: { return: 9 } }]);
  });

  it('reports a line that arrived whole but is over the cap as oversize', () => {
    const events = decode([b(`{"return": "${'B'.repeat(2000)}"}\n{"return": 1}\n`)], 1000);
    expect(normalize(events)).toEqual([{ type: 'oversize' }, { type: 'message', value: { return: 1 } }]);
  });

  it('keeps bigints exact and reports previews for garbage', () => {
    const events = decode([b('{"return": {"u": 18446744073709551615, "n": -9223372036854775808}}\n\x01\x02garbage\n')]);
    expect(events[0]).toEqual({
      type: 'message',
      value: { return: { u: 18446744073709551615n, n: -(2n ** 63n) } },
      bytes: '{"return": {"u": 18446744073709551615, "n": -9223372036854775808}}'.length,
    });
    expect(events[1]).toMatchObject({ type: 'invalid', preview: '\x01\x02garbage' });
  });

  it('reset() forgets a partial line and the discard mode', () => {
    const events: DecoderEvent[] = [];
    const d = new ReplyDecoder({ maxLineBytes: 100, onEvent: (e) => events.push(e) });
    d.push(b('{"return": '));
    d.discardUntilSentinel();
    d.reset();
    d.push(b('{"return": 5}\n'));
    expect(normalize(events)).toEqual([{ type: 'discarded', bytes: 11 }, { type: 'message', value: { return: 5 } }]);
  });
});
