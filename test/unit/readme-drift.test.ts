/**
 * README's tables held to the source. The metrics table: exactly the qga_* metrics registered.
 *
 * The configuration table says each key's default: held here to what the schema fills in
 * (loadConfig with no file and an empty environment), so that a default changed in
 * src/config/schema.ts cannot leave the README behind. Compared: every cell that states a value
 * (a number, with KiB/MiB/GiB; true/false; a `quoted` string; a [list]) and every cell that says
 * there is none (`none`, `unset`: no value, or an empty list). Cells that describe a computed default
 * in words (the host name, the hypervisors' folders…) are not compared; the test counts how many
 * it did compare, so it cannot pass by comparing nothing.
 */
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { README_PATH } from '../../scripts/export-openapi.js';
import { loadConfig } from '../../src/config/load.js';

const SECTIONS = ['server', 'auth', 'cluster', 'limits', 'agent', 'store', 'registry', 'freeze', 'log', 'metrics', 'files', 'exec'];
const UNITS: Record<string, number> = { KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };

type Parsed = { kind: 'value'; value: unknown } | { kind: 'none' } | { kind: 'words' };

/** one default as README writes it */
function parseDefault(cell: string): Parsed {
  const s = cell.trim();
  if (/^(none|unset)\b/.test(s)) return { kind: 'none' };
  let m = /^(\d+)(?: (KiB|MiB|GiB))?(?: \(.*\))?$/.exec(s);
  if (m) return { kind: 'value', value: Number(m[1]) * (m[2] ? UNITS[m[2]] : 1) };
  if (s === 'true' || s === 'false') return { kind: 'value', value: s === 'true' };
  m = /^`\[(.*)\]`$/.exec(s) ?? /^\[(.*)\]$/.exec(s);
  if (m) return { kind: 'value', value: m[1].trim() === '' ? [] : m[1].split(',').map((x) => x.trim()) };
  m = /^`([^`<>]*)`$/.exec(s);
  if (m) return { kind: 'value', value: /^\d+$/.test(m[1]) ? Number(m[1]) : m[1] };
  return { kind: 'words' };
}

/** the key cell's keys: `a.b` / `c` (a sibling of a.b) / `a.d`, or `a.b`, `a.c` */
function parseKeys(cell: string): string[] | undefined {
  const names = [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]);
  if (names.length === 0 || !SECTIONS.includes(names[0].split('.')[0])) return undefined;
  const prefix = names[0].split('.').slice(0, -1).join('.');
  return names.map((n) => (n.includes('.') ? n : `${prefix}.${n}`));
}

function valueAt(config: unknown, key: string): unknown {
  let v = config;
  for (const part of key.replace(/\[\]$/, '').split('.')) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[part] : undefined;
  return v;
}

it("README's configuration table gives the defaults the schema fills in", () => {
  const config = loadConfig(undefined, {});
  const readme = readFileSync(README_PATH, 'utf8');
  let compared = 0;
  const wrong: string[] = [];
  for (const line of readme.split('\n')) {
    const cells = /^\| (.+?) \| (.+?) \| .* \|$/.exec(line);
    if (!cells) continue;
    const keys = parseKeys(cells[1]);
    if (!keys) continue;
    // several keys: their defaults one per key, split as the keys are (" / " or ", ")
    // (one `none`/`unset` for several keys is each one's)
    const split = keys.length === 1 ? [cells[2]] : cells[2].split(cells[2].includes(' / ') ? ' / ' : ', ');
    const defaults = split.length === 1 && parseDefault(split[0]).kind === 'none' ? keys.map(() => split[0]) : split;
    if (defaults.length !== keys.length) {
      if (keys.every((k) => !k.includes('{'))) wrong.push(`${cells[1]}: ${keys.length} keys, ${defaults.length} defaults (${cells[2]})`);
      continue;
    }
    keys.forEach((key, i) => {
      const said = parseDefault(defaults[i]);
      const actual = valueAt(config, key);
      if (said.kind === 'words') return;
      compared++;
      if (said.kind === 'none') {
        const empty = actual === undefined || (Array.isArray(actual) && actual.length === 0);
        if (!empty) wrong.push(`${key}: README says ${defaults[i].trim()}, the schema fills in ${JSON.stringify(actual)}`);
        return;
      }
      if (JSON.stringify(actual) !== JSON.stringify(said.value)) wrong.push(`${key}: README says ${defaults[i].trim()}, the schema fills in ${JSON.stringify(actual)}`);
    });
  }
  expect(wrong).toEqual([]);
  // 83 when written: most rows state a value
  expect(compared).toBeGreaterThan(60);
});

it("README's metrics table names exactly the qga_* metrics the source registers", () => {
  const readme = readFileSync(README_PATH, 'utf8');
  const inTable = new Set([...readme.matchAll(/^\| `(qga_[a-z_]+)` \|/gm)].map((m) => m[1]));
  const inSource = new Set<string>();
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(dir, e.name));
      else if (e.name.endsWith('.ts')) for (const m of readFileSync(path.join(dir, e.name), 'utf8').matchAll(/['"](qga_[a-z_]+)['"]/g)) inSource.add(m[1]);
    }
  };
  walk(path.resolve(import.meta.dirname, '../../src'));
  expect(inSource.size).toBeGreaterThan(15);
  // qga_agent_down exists only with metrics.perVmLabels false: the qga_agent_up row says so
  const documented = (name: string) => inTable.has(name) || (name === 'qga_agent_down' && readme.includes('`qga_agent_down` counts those down'));
  expect([...inSource].filter((n) => !documented(n)), 'registered, not in README').toEqual([]);
  expect([...inTable].filter((n) => !inSource.has(n)), 'in README, not registered').toEqual([]);
});
