/**
 * `redocly lint` (recommended rules) over the committed OpenAPI document: no errors allowed.
 * Warnings are printed, not failed: the remaining ones are deliberate (QGA types kept as
 * components though a route inlines its request copy; service routes without 4xx responses).
 */
import { execFile } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface LintReport {
  totals: { errors: number; warnings: number };
  problems: Array<{ ruleId: string; severity: string; message: string; location: Array<{ pointer: string }> }>;
}

describe('openapi/openapi.json lint', () => {
  it('passes @redocly/cli lint with no errors', async () => {
    const bin = resolve(ROOT, 'node_modules/.bin/redocly');
    let stdout: string;
    try {
      ({ stdout } = await run(bin, ['lint', 'openapi/openapi.json', '--format=json'], {
        cwd: ROOT,
        timeout: 120_000,
        maxBuffer: 64 * 1024 * 1024,
        env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', NO_COLOR: '1' },
      }));
    } catch (e) {
      // non-zero exit: errors were found; the JSON report is still on stdout
      stdout = (e as { stdout?: string }).stdout ?? '';
      if (!stdout) throw e;
    }
    const report = JSON.parse(stdout.slice(stdout.indexOf('{'))) as LintReport;
    const errors = report.problems.filter((p) => p.severity === 'error');
    for (const w of report.problems.filter((p) => p.severity !== 'error')) {
      process.stdout.write(`[redocly] ${w.ruleId}: ${w.message} at ${w.location[0]?.pointer ?? '?'}\n`);
    }
    expect(errors.map((p) => `${p.ruleId}: ${p.message} at ${p.location[0]?.pointer ?? '?'}`)).toEqual([]);
    expect(report.totals.errors).toBe(0);
  }, 150_000);
});
