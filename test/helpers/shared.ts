/**
 * The project's shared reference material (../shared next to the repo, or QGA_SHARED_DIR):
 * the QGA command reference and the HTTP contract, read by the tests that check code against them.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SHARED_DIR = process.env.QGA_SHARED_DIR ? resolve(process.env.QGA_SHARED_DIR) : resolve(repoRoot, '..', 'shared');

/** ../shared/spec/qemu-ga-ref.txt: the QGA reference (QEMU 10.0, 44 commands). */
export function qgaReference(): string {
  return readFileSync(resolve(SHARED_DIR, 'spec', 'qemu-ga-ref.txt'), 'utf8');
}

/** ../shared/API.md: the normative HTTP contract. */
export function apiContract(): string {
  return readFileSync(resolve(SHARED_DIR, 'API.md'), 'utf8');
}
