#!/usr/bin/env node
// `npm start`'s prestart: compiles src/ into dist/ only when dist/ is missing or older than a
// source (src/**/*.ts, tsconfig*.json, package.json), so starting a built gateway costs no build.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** newest mtime (ms) of the files under dir whose names match re; 0 when none */
function newest(dir, re) {
  let max = 0;
  if (!existsSync(dir)) return 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) max = Math.max(max, newest(p, re));
    else if (re.test(e.name)) max = Math.max(max, statSync(p).mtimeMs);
  }
  return max;
}

const sources = Math.max(
  newest(join(root, 'src'), /\.ts$/),
  ...['tsconfig.json', 'tsconfig.build.json', 'package.json'].map((f) => (existsSync(join(root, f)) ? statSync(join(root, f)).mtimeMs : 0)),
);
const built = existsSync(join(root, 'dist', 'cli.js')) ? newest(join(root, 'dist'), /\.js$/) : 0;
if (built >= sources) {
  process.stderr.write('dist/ is up to date\n');
} else {
  process.stderr.write(built === 0 ? 'dist/ missing: building\n' : 'sources changed since the last build: building\n');
  try {
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: root, stdio: 'inherit' });
  } catch (e) {
    // tsc has said what is wrong above; no stack trace of this script on top of it
    process.stderr.write(`build failed (npm run build exited ${e.status ?? e.code ?? 'abnormally'}): not starting\n`);
    process.exit(1);
  }
}
