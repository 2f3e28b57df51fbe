/**
 * A command line whose argument is a Base64Text is built as a Buffer (the base64 copied once):
 * its bytes must equal the text line stringify gave before, for every shape of arguments, and on
 * the wire through AgentConnection (request and fence).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { AgentConnection, type WireListener } from '../../src/qga/connection.js';
import { Base64Text, commandData, commandLine, syncLine } from '../../src/qga/command-line.js';
import type { JsonObject, JsonValue } from '../../src/qga/types.js';
import { stringifyJson } from '../../src/util/json.js';

const b64 = (bytes: Buffer) => Base64Text.encode(bytes);
const asArg = (t: Base64Text) => t as unknown as JsonValue;
/** what the line was before: the whole command object through stringifyJson, with the string in place of the Base64Text */
const before = (command: string, args: Record<string, unknown>, id: number | undefined, tail = '') =>
  Buffer.from(`${stringifyJson(id === undefined ? { execute: command, arguments: args } : { execute: command, arguments: args, id })}\n${tail}`);

const bytes = (d: string | Buffer) => (typeof d === 'string' ? Buffer.from(d) : d);

describe('commandData', () => {
  const chunk = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 131) & 0xff));
  const cases: Array<[string, Record<string, unknown>]> = [
    ['handle, data', { handle: 1000, 'buf-b64': b64(chunk) }],
    ['handle, data, count', { handle: 7, 'buf-b64': b64(chunk), count: 12 }],
    ['data first', { 'buf-b64': b64(chunk), handle: 0 }],
    ['empty data', { handle: 1, 'buf-b64': b64(Buffer.alloc(0)) }],
    ['1 and 2 bytes (padding)', { a: b64(Buffer.from([0xfb])), b: b64(Buffer.from([0xff, 0xfe])) }],
    ['two Base64Texts side by side', { x: b64(chunk), y: b64(chunk.subarray(1)) }],
    ['unicode, escapes, nested, bigint, null, negative zero', { 'ключ "q"\n': 'wert ✓ \u2028 \ud800', n: { deep: [1, 'a', null, { k: 2n ** 64n }] }, z: null, m: -0, big: 2n ** 60n, 'buf-b64': b64(chunk), t: true }],
    ['integer-like keys come first, as in JSON.stringify', { handle: 3, 'buf-b64': b64(chunk), 10: 'ten', 2: 'two' }],
  ];
  for (const [name, args] of cases) {
    test(`${name}: the same bytes as the text line, with and without id, with a fence tail`, () => {
      for (const id of [undefined, 1, 9007199254740991]) {
        const d = commandData('guest-file-write', args as JsonObject, id);
        expect(Buffer.isBuffer(d)).toBe(true);
        expect(bytes(d).equals(before('guest-file-write', args, id))).toBe(true);
        const tail = syncLine(123456789012345);
        expect(bytes(commandData('guest-file-write', args as JsonObject, id, tail)).equals(before('guest-file-write', args, id, tail))).toBe(true);
      }
    });
  }

  test('members that JSON.stringify skips or converts take the text path (still the same bytes)', () => {
    const withToJson = { toJSON: () => 'replaced' };
    const list: Array<Record<string, unknown>> = [
      { handle: 1, 'buf-b64': b64(chunk), skipped: undefined },
      { handle: 1, 'buf-b64': b64(chunk), f: () => 1 },
      { handle: 1, 'buf-b64': b64(chunk), d: withToJson },
      { handle: 1, 'buf-b64': b64(chunk), date: new Date(0) },
    ];
    for (const args of list) {
      const d = commandData('guest-file-write', args as JsonObject, 5);
      expect(typeof d).toBe('string');
      expect(bytes(d).equals(before('guest-file-write', args, 5))).toBe(true);
    }
    const inherits = Object.assign(Object.create({ inherited: 1 }) as object, { 'buf-b64': b64(chunk) });
    expect(typeof commandData('guest-file-write', inherits as JsonObject, 5)).toBe('string');
  });

  test('without a Base64Text the text line is unchanged', () => {
    expect(commandData('guest-ping', undefined, undefined)).toBe('{"execute":"guest-ping"}\n');
    expect(commandData('guest-file-write', { handle: 1, 'buf-b64': 'QUJD' }, 4)).toBe(commandLine('guest-file-write', { handle: 1, 'buf-b64': 'QUJD' }, 4));
    expect(commandData('guest-file-open', { path: '/tmp/ä', mode: 'w' }, undefined, 'T')).toBe('{"execute":"guest-file-open","arguments":{"path":"/tmp/ä","mode":"w"}}\nT');
  });

  test('Base64Text serializes as its string anywhere else, and only encode makes one', () => {
    const t = b64(Buffer.from('hello'));
    expect(t.text).toBe('aGVsbG8=');
    expect(t.length).toBe(8);
    expect(JSON.stringify({ a: t })).toBe('{"a":"aGVsbG8="}');
    expect(stringifyJson({ a: t, n: 2n ** 64n })).toBe('{"a":"aGVsbG8=","n":18446744073709551616}');
    expect(Buffer.from(t as unknown as string, 'base64').toString()).toBe('hello');
    expect(Base64Text.encode(Buffer.from('xhello'), 1, 6).text).toBe('aGVsbG8=');
  });
});

describe('on the wire (AgentConnection)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cmdline-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** The bytes a fresh connection writes for `run`, up to its `lines`-th newline. */
  async function capture(name: string, lines: number, run: (conn: AgentConnection) => void): Promise<Buffer> {
    const path = join(dir, name);
    let got = Buffer.alloc(0);
    let done!: () => void;
    const arrived = new Promise<void>((r) => (done = r));
    const newlines = () => got.reduce((n, b) => (b === 0x0a ? n + 1 : n), 0);
    const server = net.createServer((s) =>
      s.on('data', (c: Buffer) => {
        got = Buffer.concat([got, c]);
        if (newlines() >= lines) done();
      }),
    );
    await new Promise<void>((r) => server.listen(path, r));
    const conn = await new Promise<AgentConnection>((resolve, reject) => {
      const listener: WireListener = {
        onWireOpen: (c) => resolve(c),
        onWireAnswer: () => undefined,
        onWireViolation: () => undefined,
        onWireClose: (_c, err) => reject(err),
        onWireStale: () => undefined,
        onWireStray: () => undefined,
      };
      new AgentConnection({ type: 'unix', path }, 1 << 20, listener);
    });
    try {
      run(conn);
      await arrived;
      return got;
    } finally {
      conn.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    }
  }

  const data = Buffer.from(Array.from({ length: 1 << 20 }, (_, i) => (i * 7919) & 0xff));

  test('request with a 1 MiB Base64Text and an id: the bytes stringify gave', async () => {
    let id = 0;
    const got = await capture('req.sock', 1, (conn) => {
      id = conn.request('guest-file-write', { handle: 1000, 'buf-b64': asArg(b64(data)) }, true) as number;
    });
    expect(id).toBeGreaterThan(0);
    const exp = before('guest-file-write', { handle: 1000, 'buf-b64': data.toString('base64') }, id);
    expect(got.length).toBe(exp.length);
    expect(got.equals(exp)).toBe(true);
  });

  test('fence with a Base64Text: the command, then guest-sync-delimited, byte for byte', async () => {
    const got = await capture('fence.sock', 2, (conn) => {
      expect(conn.fence('guest-file-write', { handle: 2, 'buf-b64': asArg(b64(data.subarray(0, 5))), count: 5 }, false)).toBeUndefined();
    });
    const line = before('guest-file-write', { handle: 2, 'buf-b64': data.subarray(0, 5).toString('base64'), count: 5 }, undefined);
    expect(got.subarray(0, line.length).equals(line)).toBe(true);
    expect(got.subarray(line.length).toString()).toMatch(/^\{"execute":"guest-sync-delimited","arguments":\{"id":[1-9]\d*\}\}\n$/);
  });
});
