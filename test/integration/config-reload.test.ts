/**
 * A reload's `needRestart`: the sections that differ from what the process runs with (the
 * configuration it started with, for the sections a reload does not apply), so a change reverted by
 * a later reload asks for no restart.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { Simulator } from '../../sim/index.js';
import { buildApp } from '../../src/app.js';
import { testConfig } from '../helpers/app.js';

describe('configuration reload: what needs a restart', () => {
  it('names the sections changed against the running configuration; a reverted change needs none', async () => {
    const base = testConfig();
    const app = await buildApp({ config: base, logger: pino({ level: 'silent' }), env: {} });
    await app.ready();
    try {
      const changed = { ...base, agent: { ...base.agent, syncTimeoutMs: base.agent.syncTimeoutMs + 1 } };
      expect((await app.reloadConfig(changed)).needRestart).toEqual(['agent']);
      // asked again: still different from what runs
      expect((await app.reloadConfig(changed)).needRestart).toEqual(['agent']);
      // reverted: what runs again
      expect((await app.reloadConfig(base)).needRestart).toEqual([]);
      // a reloadable section (log) never needs one
      expect((await app.reloadConfig({ ...base, log: { ...base.log, level: 'debug' } })).needRestart).toEqual([]);
    } finally {
      await app.close();
    }
  });

  it("applies a VM entry's changed idleReleaseMs to its open channel (it was read only when the channel was made)", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'qga-reload-'));
    const sim = new Simulator({ dir });
    const agent = await sim.addVm({ name: 'idle1' });
    const entry = { name: 'idle1', endpoint: agent.endpoint };
    const base = testConfig({ vms: [{ ...entry, idleReleaseMs: 0 }] });
    const app = await buildApp({ config: base, logger: pino({ level: 'silent' }), env: {} });
    await app.ready();
    const held = () => app.services.pool.peek('idle1')?.holdsSocket === true;
    try {
      expect((await app.inject({ method: 'GET', url: '/v1/vms/idle1/ping' })).statusCode).toBe(200);
      await new Promise((r) => setTimeout(r, 300));
      expect(held()).toBe(true); // 0: kept
      const summary = await app.reloadConfig({ ...base, vms: [{ ...entry, idleReleaseMs: 100 }] });
      expect(summary.changed).toEqual([]);
      expect((await app.inject({ method: 'GET', url: '/v1/vms/idle1/ping' })).statusCode).toBe(200);
      const t0 = performance.now();
      while (held()) {
        if (performance.now() - t0 > 2_000) throw new Error('the socket was not let go after the new idle release');
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      await app.close();
      await sim.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
