/**
 * The simulator CLI as the demo and benchmarks run it: N VMs, a ready line, a `vms:` config block
 * the gateway accepts, working sockets, and a clean stop on SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';

let child: ChildProcess | undefined;
let dir: string | undefined;

afterEach(async () => {
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  child = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

function ping(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath);
    let got = '';
    s.on('error', reject);
    s.on('connect', () => s.write('{"execute":"guest-get-host-name"}\n'));
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\n')) {
        s.destroy();
        resolve(got.trim());
      }
    });
  });
}

describe('sim CLI', () => {
  it('starts N VMs, prints a loadable vms: block, serves them, and stops cleanly on SIGTERM', async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'sim-cli-'));
    const sockDir = path.join(dir, 'socks');
    const proc = spawn(process.execPath, ['--import', 'tsx', 'sim/cli.ts', '--vms', '12', '--dir', sockDir], {
      cwd: path.resolve(__dirname, '../..'),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    let out = '';
    let err = '';
    proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const deadline = Date.now() + 20_000;
    while (!err.includes('qga-sim ready')) {
      if (proc.exitCode !== null) throw new Error(`cli exited: ${err}`);
      if (Date.now() > deadline) throw new Error(`no ready line: ${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const config = parse(out) as { vms: { name: string; endpoint: { type: string; path: string } }[] };
    expect(config.vms).toHaveLength(12);
    expect(config.vms[0]).toEqual({ name: 'vm001', endpoint: { type: 'unix', path: path.join(sockDir, 'vm001.sock') } });
    expect(config.vms[11].name).toBe('vm012');
    expect(await ping(config.vms[6].endpoint.path)).toBe('{"return": {"host-name": "vm007"}}');

    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    proc.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(existsSync(config.vms[0].endpoint.path)).toBe(false);
  });
});
