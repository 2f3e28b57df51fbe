/**
 * Randomized: many channels, many callers, random per-call timeouts and random agent delays, some
 * longer than the timeout so late replies keep arriving. Every reply carries the caller's unique
 * marker; no caller may ever receive another caller's reply. Half the agents are old (no id echo),
 * so the guarantee has to come from resync, not from ids. The seed is printed for replay
 * (QGA_SEED=<n>).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { Channel } from '../../src/qga/channel.js';
import type { JsonObject, TimeoutClass } from '../../src/qga/types.js';
import { Simulator } from '../../sim/index.js';
import { prng } from '../helpers/scripted-agent.js';

const VMS = 16;
const WORKERS_PER_VM = 3;
const TOTAL = 10_000;
const TIMEOUTS: Record<TimeoutClass, number> = { fast: 1000, normal: 1000, slow: 1000, freeze: 1000, long: 1000 };


let dir: string;
let sim: Simulator;
const channels: Channel[] = [];

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'interleave-'));
  sim = new Simulator({ dir });
});

afterAll(async () => {
  for (const ch of channels) ch.destroy();
  await sim?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('interleavings', () => {
  it(`no caller ever receives another caller's reply (${TOTAL} commands)`, { timeout: 120_000 }, async () => {
    const seed = process.env.QGA_SEED ? Number(process.env.QGA_SEED) : Math.floor(Math.random() * 2 ** 31);
    console.log(`interleavings seed: ${seed} (replay with QGA_SEED=${seed})`);
    const rand = prng(seed);

    for (let i = 0; i < VMS; i++) {
      const vm = await sim.addVm({ name: `ivm${i}`, version: i % 2 === 0 ? '10.0.0' : '2.12.0', disabled: [] });
      channels.push(
        new Channel({
          vm: `ivm${i}`,
          endpoint: vm.endpoint,
          catalog: () => undefined,
          timeouts: TIMEOUTS,
          syncTimeoutMs: 2000,
          backoff: { initialMs: 5, maxMs: 50 },
          idleReleaseMs: rand() < 0.25 ? 20 : 0,
        }),
      );
    }

    let issued = 0;
    const tally = { ok: 0, timeout: 0, unavailable: 0, aborted: 0, other: 0 };
    const wrong: string[] = [];

    const worker = async (ch: Channel, w: number): Promise<void> => {
      while (issued < TOTAL) {
        const n = issued++;
        const marker = `${ch.vm}/${w}/${n}`;
        // mostly quick; one in eight slower than a typical timeout, so its reply arrives late
        const delayMs = rand() < 0.125 ? 10 + Math.floor(rand() * 30) : Math.floor(rand() * 3);
        // a third of the callers are impatient (their timeouts produce the late replies); the rest
        // wait long enough to succeed even on a loaded machine
        const timeoutMs = rand() < 0.33 ? 5 + Math.floor(rand() * 40) : 2000;
        // one in twenty callers walks away early (waiting or in flight)
        const ac = new AbortController();
        const abortTimer = rand() < 0.05 ? setTimeout(() => ac.abort(), Math.floor(rand() * 20)) : undefined;
        try {
          const reply = (await ch.execute('sim-echo', { marker, delayMs }, { timeoutMs, signal: ac.signal })) as JsonObject;
          if (reply.marker === marker) tally.ok++;
          else wrong.push(`${marker} got ${JSON.stringify(reply)}`);
        } catch (err) {
          if (err instanceof GatewayError && err.code === 'AGENT_TIMEOUT') tally.timeout++;
          else if (err instanceof GatewayError && err.code === 'AGENT_UNAVAILABLE') tally.unavailable++;
          else if (err instanceof Error && err.name === 'AbortError') tally.aborted++;
          else {
            tally.other++;
            wrong.push(`${marker} failed: ${String(err)}`);
          }
        } finally {
          clearTimeout(abortTimer);
        }
      }
    };

    await Promise.all(channels.flatMap((ch) => Array.from({ length: WORKERS_PER_VM }, (_, w) => worker(ch, w))));
    console.log(`interleavings: ${JSON.stringify(tally)}`);

    expect(wrong).toEqual([]);
    expect(tally.ok + tally.timeout + tally.unavailable + tally.aborted).toBe(TOTAL);
    // the run must actually exercise both paths
    expect(tally.ok).toBeGreaterThan(TOTAL / 4);
    expect(tally.timeout).toBeGreaterThan(50);
    expect(tally.aborted).toBeGreaterThan(10);
    // and the channels must all still work
    const final = await Promise.all(channels.map((ch) => ch.execute('sim-echo', { marker: `final-${ch.vm}`, delayMs: 0 })));
    expect(final.map((r) => (r as JsonObject).marker)).toEqual(channels.map((ch) => `final-${ch.vm}`));
  });
});
