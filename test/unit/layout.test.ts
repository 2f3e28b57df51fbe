/**
 * Repository layout: the QGA simulator lives in the top-level `sim/`, beside the product, and the
 * product never depends on it. `sim/` may import (types) from `src/`; nothing under `src/` may
 * import from `sim/`, or the simulator would end up in `dist/` and the Docker image.
 *
 * Imports are read with TypeScript's own pre-processor (static, type-only, re-exports, dynamic
 * `import()` and `require()`; comments ignored), and relative specifiers are resolved, so
 * `../../sim/index.js`, `../../sim` and `../../../sim/x.js` are all caught.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SOURCE_FILE = /\.(?:[cm]?ts|tsx|[cm]?js|jsx)$/;

interface SimImport {
  file: string;
  specifier: string;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(full));
    else if (entry.isFile() && SOURCE_FILE.test(entry.name)) out.push(full);
  }
  return out;
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** does this specifier, written in `file`, name the simulator under `root`? */
function namesSimulator(root: string, file: string, specifier: string): boolean {
  // any specifier with a `sim` path segment: `../sim/x.js`, `../../sim`, `sim/cli` (an alias), `src/sim/...`
  if (/(^|\/)sim(\/|$)/.test(specifier)) return true;
  // and whatever resolves into <root>/sim, however it is spelled
  const simDir = path.join(root, 'sim');
  if (specifier.startsWith('.')) return isInside(path.resolve(path.dirname(file), specifier), simDir);
  if (path.isAbsolute(specifier)) return isInside(specifier, simDir);
  return false;
}

/** every import under `<root>/src` that names the simulator; also returns how many files were read */
function simImportsInSrc(root: string): { files: number; offenders: SimImport[] } {
  const files = sourceFiles(path.join(root, 'src'));
  const offenders: SimImport[] = [];
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    const { importedFiles } = ts.preProcessFile(text, true, true);
    for (const { fileName } of importedFiles) {
      if (namesSimulator(root, file, fileName)) {
        offenders.push({ file: path.relative(root, file), specifier: fileName });
      }
    }
  }
  return { files: files.length, offenders };
}

describe('layout: the simulator beside the product', () => {
  it('has the simulator in sim/ and no src/sim', () => {
    expect(existsSync(path.join(REPO, 'sim', 'cli.ts'))).toBe(true);
    expect(existsSync(path.join(REPO, 'src', 'sim'))).toBe(false);
  });

  it('no file under src/ imports from the simulator', () => {
    const { files, offenders } = simImportsInSrc(REPO);
    expect(files).toBeGreaterThan(10); // the scan really read the product's sources
    expect(offenders).toEqual([]);
  });

  it('the scan catches every way of importing the simulator (and ignores look-alikes)', () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'layout-'));
    try {
      mkdirSync(path.join(root, 'src', 'deep', 'er'), { recursive: true });
      mkdirSync(path.join(root, 'sim'), { recursive: true });
      writeFileSync(path.join(root, 'sim', 'index.ts'), 'export const x = 1;\n');
      writeFileSync(
        path.join(root, 'src', 'a.ts'),
        [
          "import { Simulator } from '../sim/index.js';",
          "import type { SimAgent } from '../sim/agent.js';",
          "export * from '../sim';",
          "import {",
          "  a,",
          "  b,",
          "} from '../sim/commands/index.js';",
          "// import { nope } from '../sim/in-a-comment.js';",
          "import { simple } from './simple.js';",
          "import { ok } from './qga/sim-like.js';",
        ].join('\n'),
      );
      writeFileSync(
        path.join(root, 'src', 'deep', 'er', 'b.ts'),
        [
          "const m = await import('../../../sim/cli.js');",
          "import '../../../sim/side-effect.js';",
          "import { y } from '../../sim/not-the-simulator.js';", // src/sim: caught by the specifier
          "import { z } from 'some-package';",
        ].join('\n'),
      );
      const { files, offenders } = simImportsInSrc(root);
      expect(files).toBe(2);
      expect(offenders).toEqual([
        { file: path.join('src', 'a.ts'), specifier: '../sim/index.js' },
        { file: path.join('src', 'a.ts'), specifier: '../sim/agent.js' },
        { file: path.join('src', 'a.ts'), specifier: '../sim' },
        { file: path.join('src', 'a.ts'), specifier: '../sim/commands/index.js' },
        { file: path.join('src', 'deep', 'er', 'b.ts'), specifier: '../../../sim/cli.js' },
        { file: path.join('src', 'deep', 'er', 'b.ts'), specifier: '../../../sim/side-effect.js' },
        { file: path.join('src', 'deep', 'er', 'b.ts'), specifier: '../../sim/not-the-simulator.js' },
      ]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
