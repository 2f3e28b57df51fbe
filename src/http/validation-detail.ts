/**
 * Validation details that say what to change (issue 16 item 6), for the error handler: an unknown
 * member names the accepted ones (and the closest, for a typo), a value of none of a union's forms
 * lists the forms in one sentence instead of Ajv's "must match a schema in anyOf" and one message
 * per branch, and long texts are cut to a bounded size.
 */

/** at most this many characters of a text a caller or the agent gave is put in a detail */
export const DETAIL_MAX_CHARS = 1024;

/** `s` with its middle cut out when it is longer than `max` (at most `max` characters; the head and the tail say most) */
export function capText(s: string, max = DETAIL_MAX_CHARS): string {
  if (s.length <= max) return s;
  const mark = (n: number): string => `… [${n} characters left out] …`;
  // the head and the tail around the mark, `max` characters in all
  const keep = Math.floor((max - mark(s.length).length) / 2);
  return `${s.slice(0, keep)}${mark(s.length - 2 * keep)}${s.slice(s.length - keep)}`;
}

/** "is not allowed", with the closest accepted member and the list of them when the schema has one */
export function unknownMemberWords(schema: Record<string, unknown> | undefined, name: string): string {
  const props = schema?.properties;
  const accepted = props !== null && typeof props === 'object' ? Object.keys(props) : [];
  if (accepted.length === 0) return 'is not allowed';
  const close = closest(name, accepted);
  const list = accepted.length > 30 ? `${accepted.slice(0, 30).join(', ')}, …` : accepted.join(', ');
  return `is not allowed${close === undefined ? '' : ` (did you mean ${close}?)`}; accepted: ${list}`;
}

/** The accepted member within a typo's reach of `name` (edit distance ≤ 1/3 of its length, at least 1). */
function closest(name: string, accepted: string[]): string | undefined {
  if (name.length > 64) return undefined;
  const lower = name.toLowerCase();
  let best: string | undefined;
  let bestD = Math.max(1, Math.floor(name.length / 3)) + 1;
  for (const a of accepted) {
    const d = distance(lower, a.toLowerCase());
    if (d < bestD) {
      best = a;
      bestD = d;
    }
  }
  return best;
}

/** Levenshtein distance */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

/**
 * "must be …" for a value that matches none of a union's (anyOf / oneOf) branches: the literal
 * values when every branch is a boolean, enum or const, else each branch's form in words.
 */
export function unionWords(branches: unknown): string {
  const list = Array.isArray(branches) ? (branches as Array<Record<string, unknown>>) : [];
  const literals: unknown[] = [];
  let allLiteral = list.length > 0;
  for (const b of list) {
    if (b.type === 'boolean') literals.push(true, false);
    else if (Array.isArray(b.enum)) literals.push(...(b.enum as unknown[]));
    else if ('const' in b) literals.push(b.const);
    else allLiteral = false;
  }
  if (allLiteral) return `must be one of ${literals.map((x) => JSON.stringify(x)).join(', ')}`;
  return `must be ${list.map(formWords).join(', or ')}`;
}

function formWords(b: Record<string, unknown>): string {
  if (b.type === 'boolean') return 'true or false';
  if (Array.isArray(b.enum)) return `one of ${(b.enum as unknown[]).map((x) => JSON.stringify(x)).join(', ')}`;
  if ('const' in b) return JSON.stringify(b.const);
  const range = (what: string): string => {
    const lo = typeof b.minimum === 'number' ? b.minimum : undefined;
    const hi = typeof b.maximum === 'number' ? b.maximum : undefined;
    if (lo !== undefined && hi !== undefined) return `${what} from ${lo} to ${hi}`;
    if (lo !== undefined) return `${what} ≥ ${lo}`;
    if (hi !== undefined) return `${what} ≤ ${hi}`;
    return what;
  };
  switch (b.type) {
    case 'integer':
      return range('a whole number');
    case 'number':
      return range('a number');
    case 'string':
      return typeof b.pattern === 'string' ? `a string matching ${b.pattern}` : 'a string';
    case 'array':
      return 'an array';
    case 'object':
      return typeof b.title === 'string' ? `an object (${b.title})` : 'an object';
    case 'null':
      return 'null';
    default:
      return typeof b.title === 'string' ? b.title : 'another accepted form';
  }
}
