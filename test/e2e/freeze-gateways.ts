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
  /** resolves with the exit code (null when killed by a signal) */
  readonly exit: Promise<number | null>;
  /** the config file it was started with, and its state directory (QGA_GATEWAY_STATE_DIR) */
  readonly configFile: string;
  readonly stateDir: string;
  /** rewrite the config file (as at spawn: same port), e.g. before a SIGHUP */
  writeConfig(config: Record<string, unknown>): Promise<void>;
}

export interface SpawnOptions {
  /**
   * The gateway's state directory (QGA_GATEWAY_STATE_DIR), where the embedded store keeps its
   * leases when the config names no freeze.stateFile. Default: `<dir>/<name>.state`, one per
   * gateway, so that no two gateways (tests, parallel workers) ever share the default state file.
   */
  stateDir?: string;
}

function configText(config: Record<string, unknown>, port: number): string {
  // no tokens: the anonymous caller must be allowed to freeze (the shipped default is read only)
  return stringify({ auth: { anonymousScopes: ['read', 'write', 'admin'] }, ...config, server: { host: '127.0.0.1', ...(config.server ?? {}), port } });
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

export async function spawnGateway(name: string, dir: string, config: Record<string, unknown>, opts: SpawnOptions = {}): Promise<Gateway> {
  const port = await freePort();
  const file = path.join(dir, `${name}.yaml`);
  const stateDir = opts.stateDir ?? path.join(dir, `${name}.state`);
  await writeFile(file, configText(config, port));
  let out = '';
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts', '--config', file], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, QGA_GATEWAY_CONFIG: '', REDIS_URL: '', QGA_STORE: '', QGA_GATEWAY_STATE_DIR: stateDir, STATE_DIRECTORY: '' },
  });
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  let exited = false;
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => ((exited = true), r(code))));
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
    exit,
    configFile: file,
    stateDir,
    writeConfig: (c) => writeFile(file, configText(c, port)),
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
