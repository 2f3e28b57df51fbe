/**
 * The registry's index: every known VM name once, in code-unit order (the order `<` gives), kept
 * sorted as names come and go, so that a page of the fleet is a binary search and a slice, never a
 * sort of the whole fleet per request.
 */
export class SortedNames {
  private readonly names: string[] = [];

  get size(): number {
    return this.names.length;
  }

  /** position of `name`, or of where it would go */
  private search(name: string): number {
    let lo = 0;
    let hi = this.names.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.names[mid] < name) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  has(name: string): boolean {
    const i = this.search(name);
    return this.names[i] === name;
  }

  /** false when it was already there */
  add(name: string): boolean {
    const i = this.search(name);
    if (this.names[i] === name) return false;
    this.names.splice(i, 0, name);
    return true;
  }

  /** false when it was not there */
  delete(name: string): boolean {
    const i = this.search(name);
    if (this.names[i] !== name) return false;
    this.names.splice(i, 1);
    return true;
  }

  /** The names after `after` (all of them without it), in order; the index may change meanwhile. */
  *after(after?: string): Generator<string> {
    let i = after === undefined ? 0 : this.search(after);
    if (after !== undefined && this.names[i] === after) i++;
    // re-find the position when the array changed under the iteration (a name added or removed)
    let last: string | undefined;
    while (i < this.names.length) {
      const name = this.names[i];
      if (last !== undefined && !(name > last)) {
        i = this.search(last);
        if (this.names[i] === last) i++;
        continue;
      }
      last = name;
      yield name;
      i++;
    }
  }

  all(): readonly string[] {
    return this.names;
  }
}
