/**
 * VM name globs (`*` any run of characters, `?` one character, everything else literal), matched
 * without regular expressions in O(name × glob) time at worst. A regex built from a glob with many
 * stars backtracks polynomially in their number: with picomatch, `*a*a*a*a*a` against a
 * 128-character name took 2 s and 20 stars did not finish in a minute (measured), so a token's
 * globs could stall the event loop. The greedy two-pointer walk below remembers only the last
 * star, which is enough for `*` (a later star can absorb anything an earlier one could).
 */
export function globMatch(glob: string, name: string): boolean {
  let g = 0;
  let n = 0;
  let star = -1;
  let resume = 0;
  while (n < name.length) {
    const c = glob[g];
    if (c === '*') {
      star = g++;
      resume = n;
    } else if (g < glob.length && (c === '?' || c === name[n])) {
      g++;
      n++;
    } else if (star >= 0) {
      g = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (glob[g] === '*') g++;
  return g === glob.length;
}

/** One matcher for a list of globs: true when any matches. */
export function globMatcher(globs: readonly string[]): (name: string) => boolean {
  return (name) => globs.some((g) => globMatch(g, name));
}
