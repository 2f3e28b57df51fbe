/**
 * The gateway's logger (src/http/logger.ts): its writes are asynchronous, so the lines still in
 * its buffer must be written out when the process ends: by process.exit() (the shutdown path), by
 * an uncaught exception (a crash), and by flushLogs(). Each case runs in a child process whose
 * stdout is a pipe, as under systemd or Docker. And when the output is pretty.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { wantsPretty } from '../../src/http/logger.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const LINES = 5_000;

function run(ending: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = `
    import { createLogger, flushLogs } from './src/http/logger.ts';
    const log = createLogger({ level: 'info', pretty: false }, { isTTY: false });
    setTimeout(async () => {
      for (let i = 0; i < ${LINES}; i++) log.info({ i, pad: 'x'.repeat(100) }, 'line');
      ${ending}
    }, 10);
  `;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function count(stdout: string): number {
  return stdout.split('\n').filter((l) => l.includes('"msg":"line"')).length;
}

describe('logger: asynchronous writes, nothing lost at the end', () => {
  it('process.exit() right after logging: every line is written', { timeout: 30_000 }, async () => {
    const r = await run('process.exit(0);');
    expect(r.code).toBe(0);
    expect(count(r.stdout)).toBe(LINES);
  });

  it('a crash (uncaught exception) right after logging: every line is written', { timeout: 30_000 }, async () => {
    const r = await run("throw new Error('crash after logging');");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('crash after logging');
    expect(count(r.stdout)).toBe(LINES);
  });

  it('flushLogs() resolves once the buffer is written (then a hard exit loses nothing)', { timeout: 30_000 }, async () => {
    // process.reallyExit skips the exit handlers: only what flushLogs wrote is there
    const r = await run('await flushLogs(log); process.reallyExit(0);');
    expect(r.code).toBe(0);
    expect(count(r.stdout)).toBe(LINES);
  });

  it('log.pretty: auto follows the terminal, true/false force it', () => {
    expect(wantsPretty({ level: 'info', pretty: 'auto' }, true)).toBe(true);
    expect(wantsPretty({ level: 'info', pretty: 'auto' }, false)).toBe(false);
    expect(wantsPretty({ level: 'info', pretty: true }, false)).toBe(true);
    expect(wantsPretty({ level: 'info', pretty: false }, true)).toBe(false);
  });
});
