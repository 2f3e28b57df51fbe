/**
 * `npm run sim -- --vms 100 --dir /tmp/qga-sim [--tcp] [--version 10.0.0]`
 *
 * Starts N simulated VMs (vm001..vmNNN), prints a ready line on stderr and, on stdout, a `vms:`
 * block the gateway's config loader accepts. Runs until SIGINT/SIGTERM, then closes every socket.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { Endpoint } from '../src/qga/types.js';
import { Simulator } from './simulator.js';

const USAGE = `usage: sim --vms N --dir DIR [--tcp] [--version X.Y.Z] [--prefix vm] [--time-scale 1]
           [--disable cmd,cmd] [--lacks cmd,cmd] [--config-out FILE]`;

function yamlEndpoint(ep: Endpoint): string {
  // JSON strings are valid YAML flow scalars, so paths with odd characters stay safe
  return ep.type === 'unix'
    ? `{ type: unix, path: ${JSON.stringify(ep.path)} }`
    : `{ type: tcp, host: ${ep.host}, port: ${ep.port} }`;
}

function list(v: string | undefined): string[] | undefined {
  return v ? v.split(',').map((s) => s.trim()).filter(Boolean) : undefined;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      vms: { type: 'string', default: '10' },
      dir: { type: 'string' },
      tcp: { type: 'boolean', default: false },
      version: { type: 'string', default: '10.0.0' },
      prefix: { type: 'string', default: 'vm' },
      'time-scale': { type: 'string', default: '1' },
      disable: { type: 'string' },
      lacks: { type: 'string' },
      'config-out': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const count = Number(values.vms);
  if (!values.dir || !Number.isInteger(count) || count < 1 || count > 100_000) {
    process.stderr.write(`${USAGE}\n`);
    process.exitCode = 2;
    return;
  }
  const dir = resolve(values.dir);
  mkdirSync(dir, { recursive: true });
  const sim = new Simulator({ dir, version: values.version, timeScale: Number(values['time-scale']) });
  const width = Math.max(3, String(count).length);
  const lines = ['vms:'];
  for (let i = 1; i <= count; i++) {
    const name = `${values.prefix}${String(i).padStart(width, '0')}`;
    const vm = await sim.addVm({ name, tcp: values.tcp, disabled: list(values.disable), lacks: list(values.lacks) });
    lines.push(`  - name: ${name}`, `    endpoint: ${yamlEndpoint(vm.endpoint)}`);
  }
  const snippet = `${lines.join('\n')}\n`;
  if (values['config-out']) writeFileSync(values['config-out'], snippet);
  process.stdout.write(snippet);
  process.stderr.write(
    `qga-sim ready: ${count} VMs (qemu-ga ${values.version}, ${values.tcp ? 'tcp 127.0.0.1' : `unix sockets in ${dir}`}); Ctrl-C stops\n`,
  );

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`qga-sim: ${signal}, closing\n`);
    sim.close().then(
      () => process.exit(0),
      (e: unknown) => {
        process.stderr.write(`qga-sim: close failed: ${String(e)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

main().catch((e: unknown) => {
  process.stderr.write(`qga-sim: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
