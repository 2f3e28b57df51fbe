/**
 * test/FAULTS.md indexes every case of ../shared/FAULTS.md: one row per ID, naming a test file
 * that exists and a test that is in it. (Whether that test asserts its case is for a reader; this
 * keeps the index from pointing at nothing.)
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SHARED_DIR } from '../helpers/shared.js';

const ROOT = resolve(__dirname, '../..');
const index = readFileSync(resolve(ROOT, 'test/FAULTS.md'), 'utf8');

function ids(text: string): string[] {
  return [...text.matchAll(/^\| ([A-E]\d{1,2}) \|/gm)].map((m) => m[1]);
}

describe('test/FAULTS.md', () => {
  it('has exactly one row for every case of ../shared/FAULTS.md', () => {
    const want = ids(readFileSync(resolve(SHARED_DIR, 'FAULTS.md'), 'utf8'));
    expect(want.length).toBe(45);
    const have = ids(index);
    expect([...have].sort()).toEqual([...want].sort());
  });

  it('every row names test files that exist and a test title found in one of them', () => {
    for (const line of index.split('\n')) {
      const m = /^\| ([A-E]\d{1,2}) \| ([^|]+) \| ([^|]+) \|/.exec(line);
      if (!m) continue;
      const files = m[2].split(';').map((f) => f.trim());
      for (const f of files) expect(existsSync(resolve(ROOT, f)), `${m[1]}: ${f}`).toBe(true);
      // the test title is the last segment after "›" or ">"; its beginning must occur in a named file
      const title = m[3].split(/ [›>] /).pop()!.replace(/[`*]/g, '').trim();
      const probe = title.split('…')[0].trim().slice(0, 20);
      expect(probe.length, `${m[1]}: no test title`).toBeGreaterThanOrEqual(8);
      const found = files.some((f) => readFileSync(resolve(ROOT, f), 'utf8').includes(probe));
      expect(found, `${m[1]}: "${probe}" not found in ${files.join(', ')}`).toBe(true);
    }
  });
});
