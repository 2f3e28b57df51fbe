/**
 * Wire fidelity of the QGA simulator, checked with raw sockets the way the real qemu-ga was
 * checked on the VM rig (shared/vm/quirks-transcript.txt): framing, the shared parser, one client
 * at a time, stale replies, id echo by version, frozen and disabled commands, strict order.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Endpoint, JsonObject, JsonValue } from '../../src/qga/types.js';
import { Simulator, type SimAgent, type SimVmOptions } from '../../sim/index.js';
import { parseJson } from '../../src/util/json.js';

const FF = Buffer.from([0xff]);
const STRAY_FF = '{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}';

/** A bare client: bytes in, bytes out, nothing clever. */
class Raw {
  private buf = Buffer.alloc(0);
  private wakers: (() => void)[] = [];
  ended = false;

  constructor(readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    const end = (): void => {
      this.ended = true;
      this.wake();
    };
    sock.on('end', end);
    sock.on('close', end);
    sock.on('error', () => undefined);
  }

  static connect(ep: Endpoint): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const s = ep.type === 'unix' ? net.connect(ep.path) : net.connect(ep.port, ep.host);
      s.once('connect', () => resolve(new Raw(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    for (const w of this.wakers.splice(0)) w();
  }

  send(x: string | Buffer | JsonObject): void {
    this.sock.write(typeof x === 'string' || Buffer.isBuffer(x) ? x : `${JSON.stringify(x)}\n`);
  }

  async until(pred: () => boolean, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      if (this.ended && !pred()) throw new Error(`connection ended; have ${JSON.stringify(this.buf.toString('latin1'))}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; have ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wakers.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Next line as latin1 text, without its newline. */
  async line(ms?: number): Promise<string> {
    await this.until(() => this.buf.includes(0x0a), ms);
    const i = this.buf.indexOf(0x0a);
    const text = this.buf.subarray(0, i).toString('latin1');
    this.buf = this.buf.subarray(i + 1);
    return text;
  }

  async json(ms?: number): Promise<JsonValue> {
    const l = await this.line(ms);
    return parseJson(l.startsWith('\xff') ? l.slice(1) : l);
  }

  async bytes(n: number): Promise<Buffer> {
    await this.until(() => this.buf.length >= n);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Everything received so far (consumed). */
  drain(): Buffer {
    const out = this.buf;
    this.buf = Buffer.alloc(0);
    return out;
  }

  get received(): number {
    return this.buf.length;
  }

  /** 0xFF + guest-sync-delimited, skipping whatever comes before the sentinel. */
  async sync(id = Math.floor(Math.random() * 1e9)): Promise<Buffer> {
    this.send(FF);
    this.send({ execute: 'guest-sync-delimited', arguments: { id } });
    for (;;) {
      await this.until(() => this.buf.includes(0xff));
      const skipped = this.buf.subarray(0, this.buf.indexOf(0xff));
      this.buf = this.buf.subarray(skipped.length);
      const reply = (await this.json()) as JsonObject;
      if (reply.return === id) return skipped;
    }
  }

  async call(execute: string, args?: JsonObject): Promise<JsonObject> {
    this.send(args === undefined ? { execute } : { execute, arguments: args });
    return (await this.json()) as JsonObject;
  }

  close(): Promise<void> {
    if (this.sock.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      this.sock.once('close', () => resolve());
      this.sock.end();
      setTimeout(() => this.sock.destroy(), 200).unref();
    });
  }
}

let dir: string;
let sim: Simulator;
let clients: Raw[];

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'sim-proto-'));
  sim = new Simulator({ dir });
  clients = [];
});

afterEach(async () => {
  for (const c of clients) c.sock.destroy();
  await sim.close();
  await rm(dir, { recursive: true, force: true });
});

let vmCounter = 0;
async function vmWith(opts: Partial<SimVmOptions> = {}): Promise<SimAgent> {
  return sim.addVm({ name: `vm${++vmCounter}`, ...opts });
}

async function connect(vm: SimAgent): Promise<Raw> {
  const c = await Raw.connect(vm.endpoint);
  clients.push(c);
  return c;
}

/** Nothing arrives within `ms` (a negative check, not a speed check). */
async function silence(c: Raw, ms = 300): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
  expect(c.received).toBe(0);
}

describe('framing', () => {
  it('answers a lone 0xFF with one error line without id, and sync-delimited with the sentinel', async () => {
    const c = await connect(await vmWith());
    c.send(FF);
    expect(await c.line()).toBe(STRAY_FF);
    c.send('{"execute":"guest-sync-delimited","arguments":{"id":1234}}\n');
    const reply = await c.bytes('\xff{"return": 1234}\n'.length);
    expect(reply.toString('latin1')).toBe('\xff{"return": 1234}\n');
    c.send('{"execute":"guest-sync","arguments":{"id":77}}');
    expect(await c.line()).toBe('{"return": 77}');
  });

  it('echoes a sync id above 2^53 digit for digit, and rejects one above int64 like QEMU', async () => {
    const c = await connect(await vmWith());
    c.send('{"execute":"guest-sync","arguments":{"id":9223372036854775807}}');
    expect(await c.line()).toBe('{"return": 9223372036854775807}');
    c.send('{"execute":"guest-sync-delimited","arguments":{"id":-9007199254740993}}');
    expect(await c.line()).toBe('\xff{"return": -9007199254740993}');
    c.send('{"execute":"guest-sync","arguments":{"id":18446744073709551615}}');
    expect(await c.line()).toBe(
      '{"error": {"class": "GenericError", "desc": "Invalid parameter type for \'id\', expected: integer"}}',
    );
  });

  it('writes QEMU-style ASCII-only JSON (\\uXXXX for everything >= 0x7F) ending in a newline', async () => {
    const vm = await vmWith({ hostname: 'h\u00e9te-\ud83d\ude00' });
    const c = await connect(vm);
    c.send({ execute: 'guest-get-host-name', id: 'caf\u00e9' });
    const line = await c.line();
    expect(line).toBe('{"return": {"host-name": "h\\u00E9te-\\uD83D\\uDE00"}, "id": "caf\\u00E9"}');
    expect([...Buffer.from(line, 'latin1')].every((b) => b < 0x7f)).toBe(true);
  });

  it('splits requests by brace depth, honouring strings and escapes, with or without newlines', async () => {
    const c = await connect(await vmWith());
    c.send('{"execute":"sim-echo","arguments":{"marker":"a}{\\"b"}}{"execute":"sim-echo",');
    c.send(' "arguments" : { "marker" : "\\u00e9}" } }');
    expect(await c.json()).toEqual({ return: { marker: 'a}{"b' } });
    expect(await c.json()).toEqual({ return: { marker: '\u00e9}' } });
    c.send("{'execute':'guest-ping'}"); // QEMU's single-quote extension
    expect(await c.line()).toBe('{"return": {}}');
  });

  it('turns malformed JSON into GenericError lines with QEMU texts and no id', async () => {
    const c = await connect(await vmWith());
    c.send('{"execute" "guest-ping", "id": 1}');
    expect(await c.line()).toBe('{"error": {"class": "GenericError", "desc": "JSON parse error, missing : in object pair"}}');
    c.send('[1, 2}');
    expect(await c.line()).toBe('{"error": {"class": "GenericError", "desc": "JSON parse error, expected separator in list"}}');
    c.send('}');
    expect(await c.line()).toBe('{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}');
    c.send('{"execute": nope}');
    expect(await c.line()).toBe('{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword \'nope\'"}}');
    c.send('"just a string"');
    expect(await c.line()).toBe('{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}');
    c.send('{"execute":"guest-ping"}');
    expect(await c.line()).toBe('{"return": {}}');
  });
});

describe('request checking', () => {
  it('rejects unknown top-level members and arguments, and missing or mistyped arguments', async () => {
    const c = await connect(await vmWith());
    c.send({ execute: 'guest-ping', id: 5, extra: true });
    expect(await c.line()).toBe('{"id": 5, "error": {"class": "GenericError", "desc": "QMP input member \'extra\' is unexpected"}}');
    c.send({ execute: 'guest-ping', arguments: { x: 1 } });
    expect(await c.line()).toBe('{"error": {"class": "GenericError", "desc": "Parameter \'x\' is unexpected"}}');
    c.send({ execute: 'guest-file-open', arguments: {} });
    expect(await c.line()).toBe('{"error": {"class": "GenericError", "desc": "Parameter \'path\' is missing"}}');
    c.send({ execute: 'guest-file-read', arguments: { handle: 'one' } });
    expect((await c.json()) as JsonObject).toEqual({
      error: { class: 'GenericError', desc: "Invalid parameter type for 'handle', expected: integer" },
    });
    c.send({ execute: 'guest-set-vcpus', arguments: { vcpus: [{ 'logical-id': 0 }] } });
    expect(((await c.json()) as { error: JsonObject }).error.desc).toBe("Parameter 'vcpus[0].online' is missing");
    c.send({ arguments: {} });
    expect(((await c.json()) as { error: JsonObject }).error.desc).toBe("QMP input lacks member 'execute'");
  });

  it('echoes the request id from 4.0 on (success and error), not on 2.12, and 2.5 refuses it', async () => {
    const modern = await connect(await vmWith({ version: '7.2.22' }));
    expect(await modern.call('guest-ping')).toEqual({ return: {} });
    modern.send({ execute: 'guest-ping', id: 'req-1' });
    expect(await modern.line()).toBe('{"return": {}, "id": "req-1"}');
    modern.send({ execute: 'no-such-command', id: 'req-3' });
    expect(await modern.line()).toBe(
      '{"id": "req-3", "error": {"class": "CommandNotFound", "desc": "The command no-such-command has not been found"}}',
    );

    const v212 = await connect(await vmWith({ version: '2.12.0' }));
    v212.send({ execute: 'guest-ping', id: 'req-1' });
    expect(await v212.line()).toBe('{"return": {}}');

    const v25 = await connect(await vmWith({ version: '2.5.0' }));
    v25.send({ execute: 'guest-ping', id: 'req-1' });
    expect(await v25.line()).toBe(
      '{"error": {"class": "GenericError", "desc": "QMP input object member \'id\' is unexpected"}}',
    );
    v25.send({ execute: 'guest-ping' });
    expect(await v25.line()).toBe('{"return": {}}');
  });

  it('names disabled and unknown commands like the real agent, and lists every command in guest-info', async () => {
    const vm = await vmWith({ version: '7.2.22', disabled: ['guest-fstrim'], lacks: ['guest-get-devices'] });
    const c = await connect(vm);
    expect(await c.call('guest-fstrim')).toEqual({ error: { class: 'CommandNotFound', desc: 'Command guest-fstrim has been disabled' } });
    expect(await c.call('guest-get-devices')).toEqual({ error: { class: 'CommandNotFound', desc: 'Command guest-get-devices has been disabled' } });
    expect(await c.call('guest-get-load')).toEqual({ error: { class: 'CommandNotFound', desc: 'The command guest-get-load has not been found' } });
    const info = (await c.call('guest-info')).return as { version: string; supported_commands: JsonObject[] };
    expect(info.version).toBe('7.2.22');
    const byName = new Map(info.supported_commands.map((x) => [x.name as string, x]));
    // 7.2 has the 42 commands of the reference that predate 9.1, plus the simulator's sim-echo
    expect(byName.size).toBe(43);
    expect(byName.get('guest-fstrim')).toEqual({ name: 'guest-fstrim', enabled: false, 'success-response': true });
    expect(byName.get('guest-get-devices')?.enabled).toBe(false);
    expect(byName.get('guest-shutdown')).toEqual({ name: 'guest-shutdown', enabled: true, 'success-response': false });
    for (const s of ['guest-suspend-disk', 'guest-suspend-ram', 'guest-suspend-hybrid']) {
      expect(byName.get(s)?.['success-response']).toBe(false);
    }
    expect(byName.get('sim-echo')?.enabled).toBe(true);

    const v10 = await connect(await vmWith({ version: '10.0.0', disabled: ['guest-fstrim'], lacks: ['guest-get-devices'] }));
    expect(((await v10.call('guest-fstrim')).error as JsonObject).desc).toBe(
      'Command guest-fstrim has been disabled: the command is not allowed',
    );
    expect(((await v10.call('guest-get-devices')).error as JsonObject).desc).toBe('The command guest-get-devices has not been found');
    const info10 = (await v10.call('guest-info')).return as { supported_commands: JsonObject[] };
    const names10 = info10.supported_commands.map((x) => x.name);
    expect(names10).toHaveLength(44); // 44 reference commands - guest-get-devices + sim-echo
    expect(names10).not.toContain('guest-get-devices');
  });
});

describe('one client at a time, one parser for all', () => {
  it('leaves a second client unread until the first leaves, then serves its buffered bytes', async () => {
    const vm = await vmWith();
    const a = await connect(vm);
    await a.sync();
    const b = await connect(vm);
    b.send(FF);
    b.send('{"execute":"guest-sync-delimited","arguments":{"id":4242}}\n');
    await silence(b);
    expect(await a.call('guest-ping')).toEqual({ return: {} });
    expect(vm.stats.waitingClients).toBe(1);
    await a.close();
    expect(await b.line()).toBe(STRAY_FF);
    expect(await b.line()).toBe('\xff{"return": 4242}');
    expect(vm.stats.connections).toBe(2);
  });

  it('keeps half a request across clients: it poisons the next plain request, 0xFF clears it', async () => {
    const vm = await vmWith();
    const a = await connect(vm);
    a.send('{"execute": "guest-pi');
    await new Promise((r) => setTimeout(r, 50));
    await a.close();
    const b = await connect(vm);
    b.send('{"execute":"guest-ping"}');
    expect(await b.line()).toBe('{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'-p\'"}}');
    expect(await b.line()).toBe('{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}');
    b.send('{"execute":"guest-ping"}');
    expect(await b.line()).toBe('{"return": {}}');

    b.send('{"execute": "guest-sync", "argu');
    await b.close();
    const c = await connect(vm);
    c.send(Buffer.concat([FF, Buffer.from('{"execute":"guest-ping"}')]));
    expect(await c.line()).toBe('{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\"argu\\uFFFD\'"}}');
    expect(await c.line()).toBe('{"return": {}}');
  });

  it('delivers replies of a client that left to the next client, whole and first', async () => {
    const vm = await vmWith();
    const a = await connect(vm);
    a.send({ execute: 'sim-echo', arguments: { marker: 'for-A', delayMs: 150 } });
    a.send({ execute: 'guest-ping' });
    await a.close();
    const b = await connect(vm);
    const stale = await b.sync();
    expect(stale.toString('latin1')).toBe(`{"return": {"marker": "for-A"}}\n{"return": {}}\n${STRAY_FF}\n`);
  });

  it('holds replies produced while nobody is connected, and a big one arrives whole', async () => {
    const vm = await vmWith();
    vm.addVirtualFile('/data/big.bin', 1024 * 1024, 7);
    const a = await connect(vm);
    const h = (await a.call('guest-file-open', { path: '/data/big.bin' })).return as number;
    // the read finishes after A has gone, like a slow read on a real guest
    vm.setFault({ command: 'guest-file-read', kind: 'delay', ms: 100, times: 1 });
    a.send({ execute: 'guest-file-read', arguments: { handle: h, count: 1024 * 1024 } });
    await a.close();
    await new Promise((r) => setTimeout(r, 250));
    expect(vm.stats.pendingOutputBytes).toBeGreaterThan(1_300_000);
    const b = await connect(vm);
    const stale = (await b.sync()).toString('latin1').split('\n');
    const read = parseJson(stale[0]) as { return: { count: number; 'buf-b64': string; eof: boolean } };
    expect(read.return.count).toBe(1024 * 1024);
    expect(Buffer.from(read.return['buf-b64'], 'base64').equals(vm.readFile('/data/big.bin') as Buffer)).toBe(true);
    // the handle belongs to the agent, not to A's connection
    expect(await b.call('guest-file-close', { handle: h })).toEqual({ return: {} });
  });

  it('drop-mid-reply: the first half goes to the client that is cut off, the tail to the next one', async () => {
    const vm = await vmWith();
    const a = await connect(vm);
    await a.sync();
    vm.setFault({ command: 'guest-file-write', kind: 'drop-mid-reply', times: 1 });
    const h = (await a.call('guest-file-open', { path: '/tmp/w.txt', mode: 'w' })).return as number;
    a.send({ execute: 'guest-file-write', arguments: { handle: h, 'buf-b64': Buffer.from('written').toString('base64') } });
    await a.until(() => a.ended);
    const head = a.drain().toString('latin1');
    const full = '{"return": {"count": 7, "eof": false}}\n';
    expect(head).toBe(full.slice(0, Math.floor(full.length / 2)));
    expect(vm.readFile('/tmp/w.txt')?.toString()).toBe('written'); // the write happened
    const b = await connect(vm);
    const tail = (await b.sync()).toString('latin1');
    expect(tail).toBe(`${full.slice(Math.floor(full.length / 2))}${STRAY_FF}\n`);
  });
});

describe('freeze, order, power', () => {
  it('allows only six commands while frozen; a second freeze is refused; frozen survives kill/restart', async () => {
    const vm = await vmWith({ version: '7.2.22' });
    let c = await connect(vm);
    expect(await c.call('guest-fsfreeze-freeze')).toEqual({ return: 2 });
    expect(await c.call('guest-fsfreeze-status')).toEqual({ return: 'frozen' });
    expect(await c.call('guest-file-open', { path: '/data/x', mode: 'w' })).toEqual({
      error: { class: 'CommandNotFound', desc: 'Command guest-file-open has been disabled: the agent is in frozen state' },
    });
    expect(((await c.call('guest-fsfreeze-freeze')).error as JsonObject).class).toBe('CommandNotFound');
    for (const ok of ['guest-ping', 'guest-info']) expect(await c.call(ok)).toHaveProperty('return');
    expect(await c.call('guest-sync', { id: 1 })).toEqual({ return: 1 });
    const info = (await c.call('guest-info')).return as { supported_commands: JsonObject[] };
    const enabled = info.supported_commands.filter((x) => x.enabled).map((x) => x.name).sort();
    expect(enabled).toEqual(['guest-fsfreeze-status', 'guest-fsfreeze-thaw', 'guest-info', 'guest-ping', 'guest-sync', 'guest-sync-delimited']);

    await vm.kill();
    await c.until(() => c.ended);
    await vm.restart();
    c = await connect(vm);
    expect(await c.call('guest-fsfreeze-status')).toEqual({ return: 'frozen' });
    expect(await c.call('guest-fsfreeze-thaw')).toEqual({ return: 2 });
    expect(await c.call('guest-file-open', { path: '/data/x', mode: 'w' })).toHaveProperty('return');

    const v91 = await connect(await vmWith({ version: '9.1.0', frozen: true }));
    expect(((await v91.call('guest-exec', { path: '/bin/true' })).error as JsonObject).desc).toBe(
      'Command guest-exec has been disabled: the command is not allowed',
    );
  });

  it('runs commands one at a time in order: a delayed command holds back the sync behind it', async () => {
    const vm = await vmWith();
    vm.setFault({ command: 'guest-get-osinfo', kind: 'delay', ms: 200 });
    const c = await connect(vm);
    c.send({ execute: 'guest-get-osinfo', id: 'slow' });
    c.send({ execute: 'guest-sync', arguments: { id: 5 }, id: 'sync' });
    c.send({ execute: 'guest-ping', id: 'ping' });
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push(((await c.json()) as JsonObject).id);
    expect(ids).toEqual(['slow', 'sync', 'ping']);
    expect(vm.stats.maxConcurrentCommands).toBe(3);
  });

  it('guest-shutdown sends nothing and the VM goes away; restart() boots it again', async () => {
    const vm = await vmWith();
    const c = await connect(vm);
    const h = (await c.call('guest-file-open', { path: '/tmp/keep', mode: 'w' })).return as number;
    expect(h).toBe(1000);
    c.send({ execute: 'guest-shutdown', arguments: { mode: 'powerdown' } });
    await c.until(() => c.ended);
    expect(c.drain().length).toBe(0);
    expect(vm.state.powerRequests).toMatchObject([{ command: 'guest-shutdown', mode: 'powerdown' }]);
    await expect(Raw.connect(vm.endpoint)).rejects.toThrow();
    await vm.restart();
    const d = await connect(vm);
    await d.sync();
    expect(vm.stats.openHandles).toBe(0); // a fresh agent process
    expect(vm.readFile('/tmp/keep')?.length).toBe(0); // the disk survived
    expect(await d.call('guest-file-open', { path: '/tmp/keep' })).toEqual({ return: 1000 });
  });

  it('a reboot keeps the host connection; requests sent meanwhile are answered after boot', async () => {
    const vm = await vmWith({ rebootMs: 150 });
    const c = await connect(vm);
    c.send({ execute: 'guest-shutdown', arguments: { mode: 'reboot' } });
    c.send({ execute: 'guest-sync', arguments: { id: 9 } });
    expect(await c.line()).toBe('{"return": 9}');
  });

  it('serves TCP endpoints the same way', async () => {
    const vm = await vmWith({ tcp: true });
    expect(vm.endpoint).toMatchObject({ type: 'tcp', host: '127.0.0.1' });
    const c = await connect(vm);
    await c.sync(31);
    expect(await c.call('guest-ping')).toEqual({ return: {} });
    const port = (vm.endpoint as { port: number }).port;
    await vm.kill();
    await vm.restart();
    expect((vm.endpoint as { port: number }).port).toBe(port);
    const d = await connect(vm);
    expect(await d.call('guest-ping')).toEqual({ return: {} });
  });
});
