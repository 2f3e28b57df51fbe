import { describe, expect, test } from 'vitest';
import { parseRange, resolveRange } from '../../src/files/range.js';

describe('HTTP Range for one byte range', () => {
  test('parses the three single-range forms', () => {
    expect(parseRange('bytes=0-99')).toEqual({ kind: 'from', start: 0, end: 99 });
    expect(parseRange('bytes=100-')).toEqual({ kind: 'from', start: 100 });
    expect(parseRange('bytes=-20')).toEqual({ kind: 'suffix', length: 20 });
    expect(parseRange(' bytes=5-5 ')).toEqual({ kind: 'from', start: 5, end: 5 });
  });

  test('ignores what it cannot honour (the whole file is sent)', () => {
    for (const h of [undefined, '', 'bytes=', 'bytes=-', 'items=0-1', 'bytes=0-1,4-5', 'bytes=9-3', 'bytes=a-b']) {
      expect(parseRange(h)).toBeUndefined();
    }
  });

  test('resolves against the size: clamps the end, 416 past the end or on an empty file', () => {
    expect(resolveRange({ kind: 'from', start: 10, end: 5000 }, 100)).toEqual({ start: 10, end: 99 });
    expect(resolveRange({ kind: 'from', start: 99 }, 100)).toEqual({ start: 99, end: 99 });
    expect(resolveRange({ kind: 'from', start: 100 }, 100)).toBe('unsatisfiable');
    expect(resolveRange({ kind: 'suffix', length: 500 }, 100)).toEqual({ start: 0, end: 99 });
    expect(resolveRange({ kind: 'suffix', length: 0 }, 100)).toBe('unsatisfiable');
    expect(resolveRange({ kind: 'suffix', length: 5 }, 0)).toBe('unsatisfiable');
    expect(resolveRange({ kind: 'from', start: 0 }, 0)).toBe('unsatisfiable');
  });
});
