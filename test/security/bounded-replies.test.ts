/**
 * Issue 12, item 6 — bounded memory against a hostile or broken guest agent, over HTTP:
 *  - a reply over agent.maxReplyBytes is 502 REPLY_TOO_LARGE, dropped as it streams in (RSS does
 *    not grow by its size), and the next command on the same VM works (the channel resynced);
 *  - one budget (agent.maxBufferedBytes) over all channels' partial lines: the VM whose partial
 *    line crosses it gets REPLY_TOO_LARGE, the other is unaffected;
 *  - 100,000 nested arrays are AGENT_PROTOCOL_ERROR (never a stack overflow), whichever parser
 *    path the line takes (native, lossless for 16+ digit integers, incremental for long lines);
 *  - "__proto__", "constructor", "prototype" keys, escaped or not, pollute nothing.
 * The guest is a scripted agent (it speaks 0xFF, guest-sync-delimited and guest-info like qemu-ga)
 * that streams its big replies from one reused buffer, so this process's RSS measures the gateway.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { buildConfig } from '../../src/config/load.js';
import { StreamingJsonParser } from '../../src/qga/stream-json.js';
import { MAX_JSON_DEPTH, parseJson, stringifyJson } from '../../src/util/json.js';
import { makeApp } from '../helpers/app.js';
import { body, expectProblem, startSim, type SimFleet } from '../integration/routes-support.js';
import { startScriptedAgent, type ScriptedAgent } from '../helpers/scripted-agent.js';

const COMMANDS = ['guest-ping', 'guest-get-osinfo', 'guest-get-host-name', 'guest-get-users'];

const MiB = 1024 * 1024;

/**
 * what a scripted command writes: chunks, awaited one after the other (a promise pauses the
 * reply); `id` is `, "id": N` when the request carried one (qemu-ga >= 4.0 echoes it)
 */

/** a reply line's worth of `n` bytes of 'x', written from one reused 64 KiB buffer */
async function streamPadding(write: (d: Buffer) => Promise<void>, n: number): Promise<void> {
  const block = Buffer.alloc(64 * 1024, 0x78);
  for (let left = n; left > 0; left -= block.length) await write(left >= block.length ? block : block.subarray(0, left));
}

const nested = (depth: number, inner = '0') => `${'['.repeat(depth)}${inner}${']'.repeat(depth)}`;
const post = (app: FastifyInstance, vm: string, command: string) => ({ method: 'POST' as const, url: `/v1/vms/${vm}/qga/${command}`, payload: {} });

async function settledRss(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  for (let i = 0; i < 3; i++) {
    gc?.();
    await new Promise((r) => setTimeout(r, 30));
  }
  return process.memoryUsage().rss;
}

let dir: string;
let a: ScriptedAgent;
let b: ScriptedAgent;
let app: FastifyInstance;
let fleet: SimFleet;
let sim: SimAgent;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'bounded-replies-'));
  a = await startScriptedAgent(dir, 'a', COMMANDS);
  b = await startScriptedAgent(dir, 'b', COMMANDS);
  fleet = await startSim();
  sim = await fleet.add({ name: 'sim1' });
  app = await makeApp({
    vms: [
      { name: 'a', endpoint: { type: 'unix', path: a.socketPath } },
      { name: 'b', endpoint: { type: 'unix', path: b.socketPath } },
      { name: 'sim1', endpoint: sim.endpoint },
    ],
    config: {
      registry: { allowedSocketRoots: [dir, path.dirname(sim.endpoint.type === 'unix' ? sim.endpoint.path : dir)] },
      agent: { idleReleaseMs: 0, maxReplyBytes: 4 * MiB, maxBufferedBytes: 4 * MiB },
      files: { readChunkBytes: 256 * 1024, maxRawReadBytes: 256 * 1024 },
    },
  });
});

afterAll(async () => {
  await app?.close();
  await a?.close();
  await b?.close();
  await fleet?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('reply size caps', () => {
  it('a reply over agent.maxReplyBytes is 502 REPLY_TOO_LARGE and the next command on the VM works (simulator)', async () => {
    sim.setFault({ command: 'guest-get-osinfo', kind: 'oversize', bytes: 6 * MiB, times: 1 });
    const p = await expectProblem(app, post(app, 'sim1', 'guest-get-osinfo'), 502, 'REPLY_TOO_LARGE');
    expect(String(p.detail)).toMatch(/maxReplyBytes/);
    const res = await app.inject(post(app, 'sim1', 'guest-get-host-name'));
    expect(res.statusCode).toBe(200);
    expect(body(res).return).toHaveProperty('host-name');
  });

  it('a 200 MiB reply is dropped as it streams in: RSS does not grow by its size, the VM answers next', async () => {
    await app.inject(post(app, 'a', 'guest-ping')); // channel open, warm
    const before = await settledRss();
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
    a.script('guest-get-osinfo', async (write, id) => {
      await write('{"return": {"padding": "');
      await streamPadding(write, 200 * MiB);
      await write(`"}${id}}\n`);
    });
    try {
      await expectProblem(app, post(app, 'a', 'guest-get-osinfo'), 502, 'REPLY_TOO_LARGE');
    } finally {
      clearInterval(sampler);
    }
    // generous: far below the 200 MiB that buffering the line would cost
    expect((peak - before) / MiB).toBeLessThan(64);
    // the reply's tail may still be on its way: the next command waits behind the resync
    const res = await app.inject(post(app, 'a', 'guest-get-host-name'));
    expect(res.statusCode).toBe(200);
  }, 60_000);

  it('one budget over all channels: the VM whose partial line crosses agent.maxBufferedBytes gets REPLY_TOO_LARGE, the other its reply', async () => {
    let finishA!: () => void;
    const aMayFinish = new Promise<void>((r) => (finishA = r));
    let aHeld!: () => void;
    const aIsHeld = new Promise<void>((r) => (aHeld = r));
    a.script('guest-get-users', async (write, id) => {
      await write('{"return": [{"user": "');
      await streamPadding(write, 2.5 * MiB); // under the 4 MiB cap, most of the 4 MiB budget
      aHeld();
      await aMayFinish;
      await write(`", "login-time": 1.5}]${id}}\n`);
    });
    b.script('guest-get-users', async (write, id) => {
      await write('{"return": [{"user": "');
      await streamPadding(write, 2.5 * MiB); // alone it would fit; with a's 2.5 MiB it does not
      await write(`", "login-time": 1.5}]${id}}\n`);
    });
    const aReply = app.inject(post(app, 'a', 'guest-get-users'));
    await aIsHeld;
    await new Promise((r) => setTimeout(r, 200)); // a's bytes read by the gateway and held
    const p = await expectProblem(app, post(app, 'b', 'guest-get-users'), 502, 'REPLY_TOO_LARGE');
    expect(String(p.detail)).toMatch(/maxBufferedBytes/);
    finishA();
    const ra = await aReply;
    expect(ra.statusCode).toBe(200);
    expect((body(ra).return as Array<{ user: string }>)[0].user.length).toBe(2.5 * MiB);
    // b resynced and works; a second time b's 2.5 MiB line fits (a's bytes were given back)
    b.script('guest-get-users', async (write, id) => {
      await write('{"return": [{"user": "');
      await streamPadding(write, 2.5 * MiB);
      await write(`", "login-time": 1.5}]${id}}\n`);
    });
    const rb = await app.inject(post(app, 'b', 'guest-get-users'));
    expect(rb.statusCode).toBe(200);
  }, 30_000);

  it('refuses at load a config whose files.maxRawReadBytes (or readChunkBytes) could not fit agent.maxReplyBytes, or a budget below it', () => {
    expect(() => buildConfig({ agent: { maxReplyBytes: 4 * MiB }, files: { readChunkBytes: MiB, maxRawReadBytes: 8 * MiB } })).toThrow(/files\.maxRawReadBytes/);
    expect(() => buildConfig({ agent: { maxReplyBytes: 4 * MiB }, files: { readChunkBytes: 4 * MiB, maxRawReadBytes: MiB } })).toThrow(/files\.readChunkBytes/);
    expect(() => buildConfig({ agent: { maxBufferedBytes: 32 * MiB } })).toThrow(/agent\.maxBufferedBytes/);
    const c = buildConfig({});
    expect(c.agent.maxReplyBytes).toBe(64 * MiB);
    expect(c.agent.maxBufferedBytes).toBe(256 * MiB);
  });
});

describe('deep nesting', () => {
  const DEEP = 100_000;
  const cases: Array<[string, string]> = [
    ['native JSON.parse path', `{"return": ${nested(DEEP)}}`],
    ['lossless path (a 16+ digit integer)', `{"return": ${nested(DEEP, '12345678901234567890')}}`],
    ['incremental path (a line over 1 MiB)', `{"pad": "${'x'.repeat(2 * MiB)}", "return": ${nested(DEEP)}}`],
  ];
  for (const [what, line] of cases) {
    it(`100,000 nested arrays are 502 AGENT_PROTOCOL_ERROR, no crash, the VM answers next (${what})`, async () => {
      a.script('guest-get-osinfo', (write, id) => write(`${line.slice(0, -1)}${id}}\n`));
      const p = await expectProblem(app, post(app, 'a', 'guest-get-osinfo'), 502, 'AGENT_PROTOCOL_ERROR');
      expect(String(p.detail)).toMatch(/nesting deeper than 64/);
      expect((await app.inject(post(app, 'a', 'guest-ping'))).statusCode).toBe(200);
    });
  }

  it('nesting up to 64 is answered; parse and re-serialize never throw RangeError at any depth', () => {
    expect(() => parseJson(nested(MAX_JSON_DEPTH))).not.toThrow();
    expect(() => parseJson(nested(MAX_JSON_DEPTH + 1))).toThrow(SyntaxError);
    expect(() => parseJson(nested(DEEP, '12345678901234567890'))).toThrow(SyntaxError);
    const p = new StreamingJsonParser(MAX_JSON_DEPTH);
    expect(() => p.write(Buffer.from(nested(DEEP)))).toThrow(SyntaxError);
    // a deep value from elsewhere (an HTTP body) still serializes: stringifyJson is iterative
    let deep: unknown = 0;
    for (let i = 0; i < DEEP; i++) deep = [deep];
    expect(stringifyJson(deep)).toBe(nested(DEEP));
  });

  it('65 levels through HTTP are refused, 64 answered', async () => {
    a.script('guest-get-osinfo', (write, id) => write(`{"return": ${nested(MAX_JSON_DEPTH)}${id}}\n`));
    await expectProblem(app, post(app, 'a', 'guest-get-osinfo'), 502, 'AGENT_PROTOCOL_ERROR');
    a.script('guest-get-osinfo', (write, id) => write(`{"return": ${nested(MAX_JSON_DEPTH - 1)}${id}}\n`));
    const res = await app.inject(post(app, 'a', 'guest-get-osinfo'));
    expect(res.statusCode).toBe(200);
  });
});

describe('prototype keys from a guest', () => {
  // "__proto__" spelled plainly and with escapes; constructor/prototype likewise
  const HOSTILE =
    '{"__proto__": {"polluted": "plain"}, "\\u005f_proto__": {"polluted": "esc1"}, "\\u005F\\u005Fproto\\u005f\\u005f": {"polluted": "esc2"},' +
    ' "constructor": {"prototype": {"polluted": "ctor"}}, "\\u0063onstructor": {"prototype": {"polluted": "ctor-esc"}}, "prototype": {"polluted": "proto"}, "toString": "x"}';
  const variants: Array<[string, string]> = [
    ['native', `{"return": ${HOSTILE}}`],
    ['lossless', `{"return": ${HOSTILE}, "n": 123456789012345678901}`],
    ['incremental', `{"pad": "${'x'.repeat(2 * MiB)}", "return": ${HOSTILE}}`],
  ];

  function expectClean(v: unknown): void {
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect((Object.prototype as Record<string, unknown>).polluted).toBeUndefined();
    const o = v as Record<string, unknown>;
    expect([Object.prototype, null]).toContain(Object.getPrototypeOf(o));
    expect(o.polluted).toBeUndefined();
    // the keys are ordinary own members with the guest's values
    expect(Object.getOwnPropertyDescriptor(o, '__proto__')?.value).toEqual({ polluted: 'esc2' });
    expect(Object.hasOwn(o, 'constructor')).toBe(true);
  }

  for (const [what, line] of variants) {
    it(`parsing never pollutes a prototype (${what} path)`, () => {
      const viaParse = parseJson(line) as Record<string, unknown>;
      expectClean(viaParse.return);
      const p = new StreamingJsonParser(MAX_JSON_DEPTH);
      p.write(Buffer.from(line));
      expectClean((p.end() as Record<string, unknown>).return);
    });

    it(`through HTTP the keys come back as data and nothing is polluted (${what} path)`, async () => {
      a.script('guest-get-osinfo', (write, id) => write(`${line.slice(0, -1)}${id}}\n`));
      const res = await app.inject(post(app, 'a', 'guest-get-osinfo'));
      expect(res.statusCode).toBe(200);
      const ret = JSON.parse(res.body).return as Record<string, unknown>;
      expectClean(ret);
      expect((ret.constructor as { prototype: unknown }).prototype).toEqual({ polluted: 'ctor-esc' });
    });
  }
});
