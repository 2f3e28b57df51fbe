/**
 * `npm ci` on the Node this runs on prints no EBADENGINE warning (issue 16 item 1): every package
 * the lock file installs accepts this Node version in its `engines.node` (cookie and
 * content-disposition are pinned by package.json `overrides` to releases that accept Node 20).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './bundle.js';

const semver = createRequire(import.meta.url)('semver') as { satisfies(version: string, range: string, options?: { includePrerelease?: boolean }): boolean };

interface LockEntry {
  version?: string;
  engines?: { node?: string } | string[];
  optional?: boolean;
  os?: string[];
  cpu?: string[];
}

describe('package-lock.json', () => {
  it(`every package accepts Node ${process.version} (no EBADENGINE)`, () => {
    const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
    const entries = Object.entries(lock.packages).filter(([name]) => name !== '');
    expect(entries.length).toBeGreaterThan(100);
    const refusing = entries
      .filter(([, p]) => !p.optional || ((!p.os || p.os.includes(process.platform)) && (!p.cpu || p.cpu.includes(process.arch))))
      .map(([name, p]) => ({ name, version: p.version, node: Array.isArray(p.engines) ? undefined : p.engines?.node }))
      .filter((p) => p.node !== undefined && !semver.satisfies(process.version, p.node, { includePrerelease: true }))
      .map((p) => `${p.name}@${p.version} wants node ${p.node}`);
    expect(refusing).toEqual([]);
    // the overrides that keep it so
    expect(lock.packages['node_modules/light-my-request/node_modules/cookie']?.version ?? lock.packages['node_modules/cookie']?.version).toBe('1.1.1');
  });
});
