/**
 * Differential check: the same bytes go to the real qemu-ga on this machine (7.2, host-changing
 * commands blocked) and to a simulated 7.2.22 agent with the same commands disabled; the reply
 * streams must be byte-for-byte identical. Covers parser errors, escapes, argument checking,
 * id echo, file handles, exec errors and guest-info's table.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JsonObject } from '../../src/qga/types.js';
import { Simulator, type SimAgent } from '../../sim/index.js';
import { parseJson } from '../../src/util/json.js';
import { BLOCKED_COMMANDS, startQemuGa, type QemuGa } from '../helpers/qemu-ga.js';

let real: QemuGa;
let simDir: string;
let sim: Simulator;
let vm: SimAgent;

beforeAll(async () => {
  real = await startQemuGa();
  simDir = await mkdtemp(path.join(os.tmpdir(), 'sim-diff-'));
  sim = new Simulator({ dir: simDir });
  vm = await sim.addVm({ name: 'diff', version: '7.2.22', disabled: [...BLOCKED_COMMANDS], lacks: ['guest-get-devices'] });
  // the files the script opens live in the real agent's temp dir; give the simulated guest that dir
  vm.state.files.mkdir(real.stateDir);
}, 30_000);

afterAll(async () => {
  await sim?.close();
  await rm(simDir, { recursive: true, force: true });
  await real?.stop();
});

/** Send everything, then a closing sync; return all bytes received before the closing reply. */
function transcript(socketPath: string, parts: (string | Buffer)[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    const end = '\xff{"return": 987654321}\n';
    let got = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no closing sync; got ${JSON.stringify(got.slice(-500))}`));
    }, 10_000);
    sock.on('error', reject);
    sock.on('connect', () => {
      sock.write(Buffer.from([0xff]));
      sock.write('{"execute":"guest-sync-delimited","arguments":{"id":1}}\n');
      for (const p of parts) sock.write(p);
      sock.write(Buffer.from([0xff]));
      sock.write('{"execute":"guest-sync-delimited","arguments":{"id":987654321}}\n');
    });
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      const at = got.indexOf(end);
      if (at >= 0) {
        clearTimeout(timer);
        sock.destroy();
        resolve(got.slice(0, at));
      }
    });
  });
}

const q = (o: JsonObject): string => `${JSON.stringify(o)}\n`;

describe('simulator vs the real qemu-ga', () => {
  it('answers a script of edge cases with identical bytes', async () => {
    const f = path.join(real.stateDir, 'diff.txt');
    const b64 = Buffer.from('written by the differential test\n').toString('base64');
    const script: (string | Buffer)[] = [
      '{"execute": "guest-pi',
      '{"execute":"guest-ping"}',
      '{"execute": tr',
      Buffer.from([0xff]),
      '{"execute": 12',
      Buffer.from([0xff]),
      '{"execute": "guest-ping", "arguments": {"a": [1, {"b": ',
      Buffer.from([0xfe]),
      '{"execute":"guest-ping"}\r\n\t ',
      '{"execute":"guest-ping"}}',
      Buffer.from([0xff]),
      '[1, 2}',
      '}',
      ']',
      '{"execute" "guest-ping"}',
      '{"a": 1, "a": 2}',
      '"str"',
      '123',
      '-x',
      '01',
      '{"execute": nope}',
      '{"execute": "x\\q"}',
      '{"execute": "\\uD800"}',
      '{"execute": "tab\there"}',
      Buffer.from('{"execute": "\xfe"}', 'latin1'),
      Buffer.from('{"execute": "\xc3\x28"}', 'latin1'),
      "{'execute':'guest-ping', 'id': 'single'}",
      q({ execute: 'guest-ping', arguments: [] }),
      q({ execute: 1 }),
      q({ execute: 'guest-ping', foo: 1, id: 7 }),
      q({ arguments: {} }),
      q({ execute: 'guest-ping', arguments: { x: 1 } }),
      '{"execute":"guest-sync","arguments":{"id":18446744073709551615}}',
      '{"execute":"guest-sync","arguments":{"id":9223372036854775807}}',
      '{"execute":"guest-sync","arguments":{"id":1.5}}',
      '{"execute":"guest-sync","arguments":{"id":"x"}}',
      '{"execute":"guest-sync","arguments":{}}',
      '{"execute":"guest-sync","id":"\\u00e9\\ud83d\\ude00\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001","arguments":{"id":-9007199254740993}}',
      '{"execute":"guest-ping","id":[1.5, 1e300, -0.0, 18446744073709551615, 18446744073709551616, true, null, {"b": 1, "a": 2}]}',
      q({ execute: 'no-such-command', id: 'x' }),
      q({ execute: 'guest-fstrim', id: 'blocked' }),
      q({ execute: 'guest-get-devices' }),
      q({ execute: 'guest-file-open', arguments: { path: '/nonexistent/x', mode: 'r' } }),
      q({ execute: 'guest-file-open', arguments: { path: f, mode: 'rw' } }),
      q({ execute: 'guest-file-open', arguments: { path: f, mode: 'w+' } }),
      q({ execute: 'guest-file-write', arguments: { handle: 1000, 'buf-b64': b64 } }),
      q({ execute: 'guest-file-write', arguments: { handle: 1000, 'buf-b64': '!!!' } }),
      q({ execute: 'guest-file-write', arguments: { handle: 1000, 'buf-b64': 'YWJj', count: 4 } }),
      q({ execute: 'guest-file-seek', arguments: { handle: 1000, offset: 0, whence: 'set' } }),
      q({ execute: 'guest-file-read', arguments: { handle: 1000 } }),
      q({ execute: 'guest-file-read', arguments: { handle: 1000 } }),
      q({ execute: 'guest-file-seek', arguments: { handle: 1000, offset: -5, whence: 2 } }),
      q({ execute: 'guest-file-read', arguments: { handle: 1000, count: 3 } }),
      q({ execute: 'guest-file-seek', arguments: { handle: 1000, offset: 0, whence: 'middle' } }),
      q({ execute: 'guest-file-seek', arguments: { handle: 1000, offset: 0, whence: 7 } }),
      q({ execute: 'guest-file-seek', arguments: { handle: 1000, offset: 0, whence: true } }),
      q({ execute: 'guest-file-read', arguments: { handle: 1000, count: 48 * 1024 * 1024 + 1 } }),
      q({ execute: 'guest-file-flush', arguments: { handle: 1000 } }),
      q({ execute: 'guest-file-close', arguments: { handle: 1000 } }),
      q({ execute: 'guest-file-close', arguments: { handle: 1000 } }),
      q({ execute: 'guest-file-open', arguments: { path: f } }),
      q({ execute: 'guest-file-write', arguments: { handle: 1001, 'buf-b64': b64 } }),
      q({ execute: 'guest-file-close', arguments: { handle: 1001 } }),
      q({ execute: 'guest-exec-status', arguments: { pid: 999999 } }),
      q({ execute: 'guest-exec', arguments: { path: '/nonexistent/binary-xyz' } }),
      q({ execute: 'guest-exec', arguments: { path: '/bin/true', 'input-data': 'not base64!' } }),
      q({ execute: 'guest-exec', arguments: { path: '/bin/true', 'capture-output': 'sometimes' } }),
      q({ execute: 'guest-exec', arguments: { path: '/bin/true', 'capture-output': 1 } }),
      q({ execute: 'guest-get-timezone', arguments: { zone: 'x' } }),
      q({ execute: 'guest-file-open', arguments: { path: real.stateDir, mode: 'w' } }),
      q({ execute: 'guest-file-open', arguments: { path: `${real.stateDir}/no/such/dir/file`, mode: 'w' } }),
      q({ execute: 'guest-file-open', arguments: { path: f, mode: 'a+' } }),
      q({ execute: 'guest-file-write', arguments: { handle: 1002, 'buf-b64': 'QUJD' } }),
      q({ execute: 'guest-file-read', arguments: { handle: 1002, count: 0 } }),
      q({ execute: 'guest-file-seek', arguments: { handle: 1002, offset: 3, whence: 'set' } }),
      q({ execute: 'guest-file-read', arguments: { handle: 1002, count: 5 } }),
      q({ execute: 'guest-file-seek', arguments: { handle: 1002, offset: 0, whence: 'cur' } }),
      q({ execute: 'guest-file-seek', arguments: { handle: 1002, offset: 1000, whence: 'end' } }),
      q({ execute: 'guest-file-read', arguments: { handle: 1002, count: -1 } }),
      q({ execute: 'guest-file-close', arguments: { handle: 1002 } }),
      q({ execute: 'guest-ssh-get-authorized-keys', arguments: { username: 'no-such-user-xyz' } }),
      q({ execute: 'guest-set-vcpus', arguments: { vcpus: [{ 'logical-id': 0 }] } }),
      q({ execute: 'guest-sync-delimited', arguments: { id: 5 } }),
    ];
    const [fromReal, fromSim] = await Promise.all([transcript(real.socketPath, script), transcript(vm.endpoint.type === 'unix' ? vm.endpoint.path : '', script)]);
    const realLines = fromReal.split('\n');
    const simLines = fromSim.split('\n');
    const diffs: string[] = [];
    for (let i = 0; i < Math.max(realLines.length, simLines.length); i++) {
      if (simLines[i] !== realLines[i]) diffs.push(`line ${i}\n  real: ${realLines[i]}\n  sim:  ${simLines[i]}`);
    }
    expect(diffs.join('\n')).toBe('');
    expect(realLines.length).toBeGreaterThan(60);
  });

  it('lists the same command table in guest-info (the simulator adds only sim-echo)', async () => {
    const [fromReal, fromSim] = await Promise.all(
      [real.socketPath, (vm.endpoint as { path: string }).path].map((p) => transcript(p, [q({ execute: 'guest-info' })])),
    );
    const table = (text: string): JsonObject[] => {
      const line = text.split('\n').find((l) => l.startsWith('{"return": {"version"')) as string;
      return ((parseJson(line) as JsonObject).return as { supported_commands: JsonObject[] }).supported_commands;
    };
    const realTable = table(fromReal);
    const simTable = table(fromSim).filter((c) => c.name !== 'sim-echo');
    expect(simTable).toEqual(realTable);
    expect(realTable).toHaveLength(42);
  });

  it('reports the same final guest-exec-status for harmless programs', async () => {
    const programs: JsonObject[] = [
      { path: '/bin/echo', arg: ['hello', 'world'], 'capture-output': true },
      { path: '/bin/cat', 'input-data': Buffer.from('stdin works\n').toString('base64'), 'capture-output': true },
      { path: '/bin/sh', arg: ['-c', 'exit 3'], 'capture-output': true },
      { path: '/bin/sh', arg: ['-c', 'echo out; echo err >&2; exit 1'], 'capture-output': true },
      { path: '/bin/false' },
      { path: '/bin/sh', arg: ['-c', 'kill -9 $$'] },
      { path: 'echo', arg: ['found', 'in', 'PATH'], 'capture-output': true },
    ];
    const run = async (socketPath: string): Promise<string[]> => {
      const c = await lineClient(socketPath);
      try {
        const out: string[] = [];
        for (const args of programs) {
          const started = parseJson(await c.call(q({ execute: 'guest-exec', arguments: args }))) as { return: { pid: number } };
          for (;;) {
            const line = await c.call(q({ execute: 'guest-exec-status', arguments: { pid: started.return.pid } }));
            if (!line.includes('"exited": false')) {
              out.push(line);
              break;
            }
            await new Promise((r) => setTimeout(r, 20));
          }
        }
        return out;
      } finally {
        c.close();
      }
    };
    const [fromReal, fromSim] = await Promise.all([run(real.socketPath), run((vm.endpoint as { path: string }).path)]);
    expect(fromSim).toEqual(fromReal);
    expect(fromReal[0]).toContain('"exited": true');
  });
});

/** One request, one reply line, over a connection synced with 0xFF first. */
async function lineClient(socketPath: string): Promise<{ call(req: string): Promise<string>; close(): void }> {
  const sock = net.connect(socketPath);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', reject);
  });
  let buf = '';
  let waiter: (() => void) | undefined;
  sock.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    waiter?.();
  });
  const nextLine = async (): Promise<string> => {
    const deadline = Date.now() + 5000;
    while (!buf.includes('\n')) {
      if (Date.now() > deadline) throw new Error(`no reply; have ${JSON.stringify(buf)}`);
      await new Promise<void>((resolve) => {
        waiter = resolve;
        setTimeout(resolve, 100);
      });
    }
    const i = buf.indexOf('\n');
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    return line;
  };
  sock.write(Buffer.from([0xff]));
  sock.write('{"execute":"guest-sync-delimited","arguments":{"id":4711}}\n');
  while (!(await nextLine()).endsWith('{"return": 4711}'));
  return {
    async call(req) {
      sock.write(req);
      return nextLine();
    },
    close: () => sock.destroy(),
  };
}
