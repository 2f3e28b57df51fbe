/**
 * The bench cannot rot: `npm run bench -- --smoke` (bench/run.ts at minimal sizes: the gateway
 * process, autocannon, the raw-socket and hello-world children, the CPU profile, the storm, scale
 * with paging and churn, the group freeze) runs to the end and writes its report. Asserts that it
 * ran and what the report contains, never a time or a speed.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';

const REPO = path.resolve(import.meta.dirname, '../..');

it('npm run bench -- --smoke exits 0 and writes a report with every smoke section and its targets', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-smoke-'));
  const report = path.join(dir, 'report.md');
  try {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'bench/run.ts'), '--smoke'], {
      cwd: REPO,
      env: { ...process.env, BENCH_REPORT: report },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    expect(code, err).toBe(0);
    const text = await readFile(report, 'utf8');
    expect(text).toContain('# qga-gateway benchmark report (issue 14)');
    expect(text).toContain('Mode: SMOKE');
    expect(text).toMatch(/Node v\d+\.\d+\.\d+/);
    expect(text).not.toContain('FAILED');
    for (const title of ['HTTP GET /v1/vms/{vm}/ping: gateway vs hello-world vs raw (simulator)', 'CPU profile of the gateway', 'Storm:', 'Scale:', 'Freeze group of 8 VMs']) {
      expect(text).toContain(`## ${title}`);
    }
    // the summary lists the targets of the smoke's sections, each with a verdict column
    for (const what of ['simulator: HTTP ping c=64 / hello-world', 'storm: other VMs ok/s / no storm', 'churn over 200 VMs', 'group freeze of 8']) {
      expect(text).toMatch(new RegExp(`\\| [0-9]+ \\| ${what.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}[^\\n]*\\| (PASS|MISS|—) \\|`));
    }
    // the profile table has ten ranked functions
    expect(text).toMatch(/\| 10 \| `[^`]+` \|/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}, 240_000);
