/**
 * Real gateway processes for the multi-process freeze tests: `node --import tsx src/server.ts
 * --config FILE` (one process, so SIGKILL/SIGSTOP hit the server itself, not a wrapper).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface Gateway {
  name: string;
  url: string;
  readonly pid: number;
  readonly exited: boolean;
  /** everything the process printed (pino JSON lines) */
  log(): string;
  signal(sig: NodeJS.Signals): void;
  /** SIGKILL if still running, and wait for the exit */
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const p = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => resolve(p));
    });
  });
}

export async function spawnGateway(name: string, dir: string, config: Record<string, unknown>): Promise<Gateway> {
  const port = await freePort();
  const file = path.join(dir, `${name}.yaml`);
  // no tokens: the anonymous caller must be allowed to freeze (the shipped default is read only)
  await writeFile(file, stringify({ auth: { anonymousScopes: ['read', 'write', 'admin'] }, ...config, server: { host: '127.0.0.1', port } }));
  let out = '';
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts', '--config', file], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, QGA_GATEWAY_CONFIG: '', REDIS_URL: '', QGA_STORE: '' },
  });
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  let exited = false;
  const exit = new Promise<void>((r) => child.once('exit', () => ((exited = true), r())));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited) throw new Error(`gateway ${name} exited during start-up:\n${out}`);
    try {
      const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1_000) });
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`gateway ${name} did not start within 60 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    name,
    url,
    get pid() {
      return child.pid ?? -1;
    },
    get exited() {
      return exited;
    },
    log: () => out,
    signal: (sig) => {
      if (!exited) child.kill(sig);
    },
    async stop() {
      if (!exited) {
        child.kill('SIGCONT');
        child.kill('SIGKILL');
      }
      await exit;
    },
  };
}

export async function call(gw: Gateway, method: string, url: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(gw.url + url, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await r.text();
  return { status: r.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}
