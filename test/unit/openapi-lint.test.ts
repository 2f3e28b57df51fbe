/**
 * `redocly lint` (recommended rules) over the committed OpenAPI document: no errors and no
 * warnings (issue 16: a user's own lint of the document must come out clean).
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
  it('passes @redocly/cli lint with no errors and no warnings', async () => {
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
    expect(report.problems.map((p) => `${p.severity} ${p.ruleId}: ${p.message} at ${p.location[0]?.pointer ?? '?'}`)).toEqual([]);
    expect(report.totals).toMatchObject({ errors: 0, warnings: 0 });
  }, 150_000);
});
