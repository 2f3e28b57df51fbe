/**
 * Property-based fuzz of the reply decoder (issue 12 items 6 and 10): whatever bytes an agent sends,
 * in whatever chunks, no exception escapes push(), the decoder never holds more than its cap (nor
 * more than the shared budget lent it), and every complete valid line is emitted exactly once, in
 * order, whether it was parsed in one go or incrementally (streamFromBytes is made tiny here so
 * the incremental parser runs on most lines).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ReplyDecoder, type DecoderEvent } from '../../src/qga/decoder.js';
import { ReplyBudget } from '../../src/qga/reply-budget.js';
import { parseJson } from '../../src/util/json.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);

interface Harness {
  decoder: ReplyDecoder;
  events: DecoderEvent[];
  budget: ReplyBudget;
  maxHeld: number;
  push(chunk: Buffer): void;
}

function harness(maxLineBytes: number, streamFromBytes: number, budgetBytes = Number.MAX_SAFE_INTEGER): Harness {
  const events: DecoderEvent[] = [];
  const budget = new ReplyBudget(budgetBytes);
  const h: Harness = {
    decoder: new ReplyDecoder({ maxLineBytes, streamFromBytes, budget, onEvent: (e) => events.push(e) }),
    events,
    budget,
    maxHeld: 0,
    push(chunk) {
      h.decoder.push(chunk);
      h.maxHeld = Math.max(h.maxHeld, h.decoder.bufferedBytes);
      // what the decoder holds is exactly what it took from the budget
      expect(budget.used).toBe(h.decoder.bufferedBytes);
    },
  };
  return h;
}

/** cut `buf` at the given (sorted, deduplicated) offsets */
function split(buf: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of [...at, buf.length]) {
    if (c > prev) out.push(buf.subarray(prev, c));
    prev = c;
  }
  return out;
}

const messages = (events: DecoderEvent[]) => events.flatMap((e) => (e.type === 'message' ? [e.value] : []));

/** agent-like reply objects: any keys (unicode, "__proto__" included), any JSON values, big integers */
const replyObject = fc.dictionary(
  fc.oneof(fc.string({ unit: 'binary' }), fc.constantFrom('__proto__', 'constructor', 'prototype', 'return', 'id')),
  fc.oneof(fc.jsonValue({ maxDepth: 4 }), fc.bigInt({ min: 2n ** 53n, max: 2n ** 64n }).map((b) => ({ big: b }))),
  { maxKeys: 6 },
);

/** compact JSON of a value that may hold bigints; "__proto__" keys kept as own members */
function encode(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? `@@${x}@@` : x)).replace(/"@@(\d+)@@"/g, '$1');
}

type Segment = { kind: 'valid'; text: string } | { kind: 'garbage'; text: string } | { kind: 'oversize'; len: number } | { kind: 'torn'; text: string };

const segment: fc.Arbitrary<Segment> = fc.oneof(
  { weight: 5, arbitrary: replyObject.map((o) => ({ kind: 'valid' as const, text: encode(o) })) },
  { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 40 }).filter((s) => !s.includes('\n') && !s.includes('\r')).map((t) => ({ kind: 'garbage' as const, text: `#${t}` })) },
  { weight: 1, arbitrary: fc.integer({ min: 600, max: 3000 }).map((len) => ({ kind: 'oversize' as const, len })) },
  { weight: 1, arbitrary: replyObject.map((o) => ({ kind: 'torn' as const, text: encode(o).slice(0, -1) })) },
);

describe('ReplyDecoder fuzz (fast-check)', () => {
  it('random bytes with 0xFF sprinkled in random chunks: nothing escapes, held bytes stay under the cap and the budget', () => {
    const byte = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 255 }) }, { weight: 1, arbitrary: fc.constantFrom(0x0a, 0xff, 0x7b, 0x7d, 0x22, 0x5c) });
    fc.assert(
      fc.property(
        fc.array(fc.array(byte, { maxLength: 700 }), { maxLength: 30 }),
        fc.integer({ min: 16, max: 512 }),
        fc.integer({ min: 1, max: 600 }),
        fc.boolean(),
        (chunks, cap, streamFrom, waitSentinel) => {
          const h = harness(cap, streamFrom);
          if (waitSentinel) h.decoder.discardUntilSentinel();
          for (const c of chunks) h.push(Buffer.from(c));
          expect(h.maxHeld).toBeLessThanOrEqual(cap);
          for (const m of messages(h.events)) expect(Object.getPrototypeOf(m)).toBe(Object.prototype);
          h.decoder.reset();
          expect(h.budget.used).toBe(0);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('valid lines split anywhere (and parsed whole or incrementally) come out exactly once, in order, equal to parseJson', () => {
    fc.assert(
      fc.property(
        fc.array(replyObject, { minLength: 1, maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        fc.integer({ min: 1, max: 200 }),
        fc.boolean(),
        (objs, cuts, streamFrom, crlf) => {
          const lines = objs.map(encode);
          const h = harness(1 << 20, streamFrom);
          const wire = Buffer.from(lines.map((l) => `${l}${crlf ? '\r\n' : '\n'}`).join(''), 'utf8');
          for (const c of split(wire, cuts)) h.push(c);
          expect(messages(h.events)).toEqual(lines.map((l) => parseJson(l)));
          expect(h.events.filter((e) => e.type === 'invalid' || e.type === 'oversize')).toEqual([]);
          expect(h.decoder.bufferedBytes).toBe(0);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('valid lines among garbage, oversize lines, 0xFF sentinels and torn lines: every valid line exactly once, in order', () => {
    const CAP = 512;
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 14 }), fc.array(fc.nat(), { maxLength: 60 }), fc.integer({ min: 1, max: 400 }), (segs, cuts, streamFrom) => {
        const parts: Buffer[] = [];
        const expected: unknown[] = [];
        let oversize = 0;
        // a torn line longer than the cap is reported oversize, unless its 0xFF came in the same
        // chunk that took it over the cap (then it is simply discarded): depends on the split
        let maybeOversize = 0;
        for (const s of segs) {
          if (s.kind === 'oversize') {
            parts.push(Buffer.from(`{"return": "${'x'.repeat(s.len)}"}\n`));
            oversize++;
          } else if (s.kind === 'torn') {
            parts.push(Buffer.from(s.text, 'utf8'), Buffer.from([0xff])); // a sentinel cuts it
            if (Buffer.byteLength(s.text) > CAP) maybeOversize++;
          } else {
            const b = Buffer.from(`${s.text}\n`, 'utf8');
            // a line over the cap is an oversize line, however valid
            if (s.kind === 'valid' && b.length - 1 > CAP) oversize++;
            else if (s.kind === 'valid') expected.push(parseJson(s.text));
            parts.push(b);
          }
        }
        const h = harness(CAP, streamFrom);
        for (const c of split(Buffer.concat(parts), cuts)) h.push(c);
        expect(messages(h.events)).toEqual(expected);
        const reported = h.events.filter((e) => e.type === 'oversize').length;
        expect(reported).toBeGreaterThanOrEqual(oversize);
        expect(reported).toBeLessThanOrEqual(oversize + maybeOversize);
        expect(h.maxHeld).toBeLessThanOrEqual(CAP);
      }),
      { numRuns: RUNS },
    );
  });

  it('a shared budget: the decoder whose partial line would cross it drops that line (oversize, limit budget) and holds nothing', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 1, max: 300 })), { minLength: 1, maxLength: 30 }), (steps) => {
        const budget = new ReplyBudget(1000);
        const decoders = [0, 1].map(() => {
          const events: DecoderEvent[] = [];
          return { events, d: new ReplyDecoder({ maxLineBytes: 800, budget, onEvent: (e) => events.push(e) }) };
        });
        const skipping = [false, false];
        for (const [which, n] of steps) {
          const i = which ? 1 : 0;
          const { d, events } = decoders[i];
          const before = events.length;
          const heldBefore = d.bufferedBytes;
          const otherHeld = decoders[1 - i].d.bufferedBytes;
          d.push(Buffer.from('y'.repeat(n)));
          const got = events.slice(before);
          if (skipping[i]) expect(got).toEqual([]);
          else if (heldBefore + n > 800) expect(got).toEqual([{ type: 'oversize', bytes: heldBefore + n, limit: 'cap' }]);
          else if (heldBefore + otherHeld + n > 1000) expect(got).toEqual([{ type: 'oversize', bytes: heldBefore + n, limit: 'budget' }]);
          else expect(d.bufferedBytes).toBe(heldBefore + n);
          if (got.length > 0) skipping[i] = true;
          if (skipping[i]) expect(d.bufferedBytes).toBe(0);
          expect(budget.used).toBe(decoders[0].d.bufferedBytes + decoders[1].d.bufferedBytes);
          expect(budget.used).toBeLessThanOrEqual(1000);
        }
      }),
      { numRuns: RUNS },
    );
  });
});
