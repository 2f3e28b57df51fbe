import { describe, expect, it } from 'vitest';
import { parseJson, stringifyJson } from '../../src/util/json.js';

describe('parseJson', () => {
  it('keeps integers above 2^53 exact as bigint', () => {
    const v = parseJson('{"return": 1732000000123456789}') as { return: bigint };
    expect(v.return).toBe(1732000000123456789n);
    expect(parseJson('18446744073709551615')).toBe(18446744073709551615n);
    expect(parseJson('-9223372036854775808')).toBe(-(2n ** 63n));
    expect(parseJson('[9007199254740993, -9007199254740993]')).toEqual([9007199254740993n, -9007199254740993n]);
  });

  it('keeps safe integers and non-integers as numbers', () => {
    expect(parseJson('9007199254740991')).toBe(Number.MAX_SAFE_INTEGER);
    expect(parseJson('-9007199254740991')).toBe(-Number.MAX_SAFE_INTEGER);
    expect(parseJson('[1234567890123456789.5, 1e300, 12345678901234567890e2, 0.12345678901234567, -0]')).toEqual([
      1234567890123456789.5, 1e300, 12345678901234567890e2, 0.12345678901234567, -0,
    ]);
    expect(Object.is((parseJson('[-0, 1111111111111111111]') as number[])[0], -0)).toBe(true);
  });

  it('parses nesting, escapes and unicode like JSON.parse on the slow path', () => {
    const text =
      '{"a": [1, {"b": "x\\"y\\\\", "c": [true, false, null]}], "d": "\\u00e9\\ud83d\\ude00\\n\\t\\/",' +
      ' "e": {}, "f": [], "g": "ends with backslash \\\\", "h": "\u00fc", "big": 1111111111111111111}';
    const v = parseJson(text) as Record<string, unknown>;
    const expected = JSON.parse(text.replace('1111111111111111111', '0')) as Record<string, unknown>;
    expected.big = 1111111111111111111n;
    expect(v).toEqual(expected);
    expect(v.d).toBe('é😀\n\t/');
  });

  it('adds "__proto__" as an own member instead of replacing the prototype', () => {
    const v = parseJson('{"__proto__": {"x": 1}, "n": 11111111111111111111}') as Record<string, unknown>;
    expect(Object.getPrototypeOf(v)).toBe(Object.prototype);
    expect(Object.keys(v)).toEqual(['__proto__', 'n']);
    expect((v as { x?: number }).x).toBeUndefined();
  });

  it('throws SyntaxError on invalid JSON on both paths', () => {
    const bad = [
      '', '{', '[1,]', '{"a":1,}', '01', '1.', '-', '"abc', '{"a" 1}', '[1 2]', 'tru', 'nul',
      '"\u0001"', '"\\x"', '{"a":1}}', "{'a':1}", 'NaN',
    ];
    for (const b of bad) {
      expect(() => parseJson(b), b).toThrow(SyntaxError);
      expect(() => parseJson(`[11111111111111111111, ${b}]`), b).toThrow(SyntaxError);
    }
  });

  it('parses a large base64 string quickly through the native path', () => {
    const blob = Buffer.alloc(8 * 1024 * 1024, 7).toString('base64');
    const v = parseJson(`{"return": {"count": 8388608, "buf-b64": "${blob}", "eof": false}}`) as {
      return: { 'buf-b64': string };
    };
    expect(v.return['buf-b64'].length).toBe(blob.length);
  });

  it('handles a large string on the slow path too', () => {
    const blob = Buffer.alloc(4 * 1024 * 1024, 3).toString('base64');
    const v = parseJson(`{"return": {"t": 1732000000123456789, "s": "${blob}"}}`) as {
      return: { t: bigint; s: string };
    };
    expect(v.return.t).toBe(1732000000123456789n);
    expect(v.return.s).toBe(blob);
  });
});

describe('stringifyJson', () => {
  it('writes bigints as exact integer literals', () => {
    expect(stringifyJson({ t: 1732000000123456789n, u: 18446744073709551615n, n: -(2n ** 63n) })).toBe(
      '{"t":1732000000123456789,"u":18446744073709551615,"n":-9223372036854775808}',
    );
  });

  it('round-trips through parseJson without losing digits', () => {
    const text = '{"a":[1,2.5,"x\\"y",null,true,{"b":18446744073709551615}],"c":"\\u00e9"}';
    const v = parseJson(text);
    expect(stringifyJson(v)).toBe(JSON.stringify(JSON.parse(text)).replace('18446744073709552000', '18446744073709551615'));
    expect(parseJson(stringifyJson(v))).toEqual(v);
  });

  it('follows JSON.stringify for everything else', () => {
    const date = new Date(0);
    const value = { a: undefined, b: () => 1, c: [undefined, NaN, Infinity], d: date, e: 'é\n', f: { g: null } };
    expect(stringifyJson(value)).toBe(JSON.stringify(value));
    expect(stringifyJson(undefined)).toBe('null');
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => stringifyJson(cyclic)).toThrow(TypeError);
  });
});
