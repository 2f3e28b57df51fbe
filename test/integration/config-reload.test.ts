/**
 * A reload's `needRestart`: the sections that differ from what the process runs with (the
 * configuration it started with, for the sections a reload does not apply), so a change reverted by
 * a later reload asks for no restart.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
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
});
