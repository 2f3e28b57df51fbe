/**
 * `npm start`'s prestart (scripts/build-if-stale.mjs): builds when dist/ is missing or older than
 * a source, and not when it is current — run in a scratch package whose `build` script only counts.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from './bundle.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'qga-stale-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('scripts/build-if-stale.mjs', () => {
  it('builds a missing or stale dist/ and leaves a current one alone', () => {
    mkdirSync(path.join(dir, 'scripts'));
    mkdirSync(path.join(dir, 'src', 'cli'), { recursive: true });
    copyFileSync(path.join(ROOT, 'scripts', 'build-if-stale.mjs'), path.join(dir, 'scripts', 'build-if-stale.mjs'));
    const build = "const fs=require('fs');fs.mkdirSync('dist',{recursive:true});fs.writeFileSync('dist/cli.js','');fs.appendFileSync('builds','x')";
    writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'scratch', private: true, scripts: { build: `node -e "${build}"` } }));
    const src = path.join(dir, 'src', 'cli', 'main.ts');
    writeFileSync(src, 'export {};\n');
    const t0 = Date.now() / 1000 - 1000;
    utimesSync(path.join(dir, 'package.json'), t0, t0);
    utimesSync(src, t0, t0);
    const prestart = () => execFileSync(process.execPath, ['scripts/build-if-stale.mjs'], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const builds = () => (existsSync(path.join(dir, 'builds')) ? readFileSync(path.join(dir, 'builds'), 'utf8').length : 0);

    prestart();
    expect(builds()).toBe(1); // dist/ missing
    prestart();
    prestart();
    expect(builds()).toBe(1); // current: no build
    // an edit after the last build (both in the past, so the new build is newer than the edit)
    utimesSync(path.join(dir, 'dist', 'cli.js'), t0 + 100, t0 + 100);
    utimesSync(src, t0 + 200, t0 + 200);
    prestart();
    expect(builds()).toBe(2); // a source newer than dist/
    prestart();
    expect(builds()).toBe(2);
  });
});
