/**
 * The gateway's logger (src/http/logger.ts): its writes are asynchronous, so the lines still in
 * its buffer must be written out when the process ends: by process.exit() (the shutdown path), by
 * an uncaught exception (a crash), and by flushLogs(). Each case runs in a child process whose
 * stdout is a pipe, as under systemd or Docker. And when the output is pretty.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { createLogger, flushLogs, redactSecrets, wantsPretty } from '../../src/http/logger.js';

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

  it('to a regular file (one synchronous write per event-loop turn): process.exit() right after logging loses nothing', { timeout: 30_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'logger-test-'));
    try {
      const file = path.join(dir, 'out.log');
      const script = `
        import { openSync } from 'node:fs';
        import { createLogger } from './src/http/logger.ts';
        const log = createLogger({ level: 'info', pretty: false }, { fd: openSync(${JSON.stringify(file)}, 'w'), isTTY: false });
        setTimeout(() => {
          for (let i = 0; i < ${LINES}; i++) log.info({ i, pad: 'x'.repeat(100) }, 'line');
          setImmediate(() => {
            for (let i = 0; i < ${LINES}; i++) log.info({ i, pad: 'x'.repeat(100) }, 'line');
            process.exit(0);
          });
        }, 10);
      `;
      const code = await new Promise<number | null>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, stdio: 'ignore' });
        child.on('close', resolve);
      });
      expect(code).toBe(0);
      expect(count(await readFile(file, 'utf8'))).toBe(2 * LINES);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('log.pretty: auto follows the terminal, true/false force it', () => {
    expect(wantsPretty({ level: 'info', pretty: 'auto' }, true)).toBe(true);
    expect(wantsPretty({ level: 'info', pretty: 'auto' }, false)).toBe(false);
    expect(wantsPretty({ level: 'info', pretty: true }, false)).toBe(true);
    expect(wantsPretty({ level: 'info', pretty: false }, true)).toBe(false);
  });

  it('secrets are censored (password of any field, authorization headers), the caller\'s objects untouched', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'logger-test-'));
    try {
      const file = path.join(dir, 'out.log');
      const fh = await open(file, 'w');
      const log = createLogger({ level: 'info', pretty: false }, { fd: fh.fd, isTTY: false });
      const given = { user: { name: 'u', password: 'hunter2' }, headers: { authorization: 'Bearer abc', host: 'h' }, req: { headers: { authorization: 'Bearer def' } }, n: 1, s: 'password' };
      log.info(given, 'with secrets');
      log.info({ vm: 'a', status: 200 }, 'plain');
      await flushLogs(log);
      await fh.close();
      const lines = (await readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines).toHaveLength(2);
      expect(lines[0]).toMatchObject({ msg: 'with secrets', user: { name: 'u', password: '[redacted]' }, headers: { authorization: '[redacted]', host: 'h' }, n: 1, s: 'password' });
      expect(JSON.stringify(lines[0])).not.toMatch(/hunter2|Bearer/);
      expect(lines[1]).toMatchObject({ msg: 'plain', vm: 'a', status: 200 });
      expect(given.user.password).toBe('hunter2');
      expect(given.headers.authorization).toBe('Bearer abc');
      const plain = { a: 1, b: { c: 2 } };
      expect(redactSecrets(plain)).toBe(plain);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
