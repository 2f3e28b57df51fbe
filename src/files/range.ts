/**
 * HTTP Range (RFC 9110 §14) for one byte range. A header we cannot or need not honour
 * (not `bytes`, malformed, several ranges) is ignored and the whole file is sent, as the RFC
 * allows; only a well-formed single range outside the file is "unsatisfiable" (416).
 */

export type RangeSpec = { kind: 'from'; start: number; end?: number } | { kind: 'suffix'; length: number };

const SINGLE = /^bytes=(\d*)-(\d*)$/;

export function parseRange(header: string | undefined): RangeSpec | undefined {
  if (!header) return undefined;
  const m = SINGLE.exec(header.trim());
  if (!m) return undefined;
  const [, a, b] = m;
  if (a === '' && b === '') return undefined;
  if (a === '') return { kind: 'suffix', length: Number(b) };
  const start = Number(a);
  if (b === '') return { kind: 'from', start };
  const end = Number(b);
  if (end < start) return undefined;
  return { kind: 'from', start, end };
}

/** Inclusive byte positions within a file of `size` bytes, or 'unsatisfiable'. */
export function resolveRange(spec: RangeSpec, size: number): { start: number; end: number } | 'unsatisfiable' {
  if (spec.kind === 'suffix') {
    if (spec.length === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - spec.length), end: size - 1 };
  }
  if (spec.start >= size) return 'unsatisfiable';
  return { start: spec.start, end: Math.min(spec.end ?? size - 1, size - 1) };
}
