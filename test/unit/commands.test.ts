import { describe, expect, it } from 'vitest';
import {
  COMMANDS,
  DEFAULT_TIMEOUTS,
  FROZEN_SAFE,
  NO_RESPONSE,
  commandSpec,
  defaultTimeoutMs,
} from '../../src/qga/commands.js';
import { qgaReference } from '../helpers/shared.js';

const SPEC = qgaReference();

/** Every "Command guest-x (Since: v)" heading of the reference, in order. */
function specCommands(): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of SPEC.matchAll(/Command (guest-[a-z0-9-]+) \(Since: ([0-9.]+)\)/g)) {
    out.set(m[1], m[2]);
  }
  return out;
}

describe('command catalog', () => {
  it('has exactly the 44 commands of the reference, with their Since versions', () => {
    const fromSpec = specCommands();
    expect(fromSpec.size).toBe(44);
    expect(Object.keys(COMMANDS).sort()).toEqual([...fromSpec.keys()].sort());
    for (const [name, since] of fromSpec) {
      expect(COMMANDS[name].since, name).toBe(since);
      expect(COMMANDS[name].name).toBe(name);
    }
  });

  it('frozen-safe is exactly the six commands a frozen agent serves', () => {
    expect([...FROZEN_SAFE].sort()).toEqual(
      [
        'guest-fsfreeze-status',
        'guest-fsfreeze-thaw',
        'guest-info',
        'guest-ping',
        'guest-sync',
        'guest-sync-delimited',
      ].sort(),
    );
  });

  it('the no-response set is shutdown and the three suspends', () => {
    expect([...NO_RESPONSE].sort()).toEqual(
      ['guest-shutdown', 'guest-suspend-disk', 'guest-suspend-hybrid', 'guest-suspend-ram'].sort(),
    );
    // the reference says so in the text of each of them, and of no other command
    const sections = SPEC.split(/\n\s+(?=Command guest-|Object |Enum |Alternate )/);
    for (const s of sections) {
      const m = /^Command (guest-[a-z0-9-]+)/.exec(s);
      if (!m) continue;
      const says = /does\s+NOT\s+return\s+a\s+response\s+on\s+success/.test(s);
      expect(says, m[1]).toBe(NO_RESPONSE.has(m[1]));
    }
  });

  it('marks the commands that change things as non-idempotent', () => {
    for (const name of [
      'guest-exec',
      'guest-exec-status',
      'guest-file-open',
      'guest-file-read',
      'guest-file-write',
      'guest-file-seek',
      'guest-set-time',
      'guest-set-vcpus',
      'guest-set-memory-blocks',
      'guest-set-user-password',
      'guest-fsfreeze-freeze',
      'guest-fsfreeze-freeze-list',
      'guest-shutdown',
      'guest-suspend-ram',
    ]) {
      expect(COMMANDS[name].idempotent, name).toBe(false);
    }
    for (const c of Object.values(COMMANDS)) {
      if (/^guest-(get-|network-get-|ping|info|sync)/.test(c.name)) expect(c.idempotent, c.name).toBe(true);
      if (c.scope === 'read') expect(c.idempotent, c.name).toBe(true);
    }
  });

  it('gives the slow operations long timeouts', () => {
    expect(DEFAULT_TIMEOUTS.fast).toBeLessThan(DEFAULT_TIMEOUTS.normal);
    expect(DEFAULT_TIMEOUTS.normal).toBeLessThan(DEFAULT_TIMEOUTS.slow);
    expect(DEFAULT_TIMEOUTS.slow).toBeLessThan(DEFAULT_TIMEOUTS.freeze);
    expect(DEFAULT_TIMEOUTS.freeze).toBeLessThanOrEqual(DEFAULT_TIMEOUTS.long);
    expect(COMMANDS['guest-fstrim'].timeout).toBe('long');
    expect(COMMANDS['guest-fsfreeze-freeze'].timeout).toBe('freeze');
    expect(COMMANDS['guest-file-read'].timeout).toBe('slow');
    expect(COMMANDS['guest-exec-status'].timeout).toBe('slow');
    expect(defaultTimeoutMs('guest-ping')).toBe(DEFAULT_TIMEOUTS.fast);
    expect(defaultTimeoutMs('guest-from-the-future')).toBe(DEFAULT_TIMEOUTS.slow);
  });

  it('commandSpec looks up by own name only', () => {
    expect(commandSpec('guest-ping')?.name).toBe('guest-ping');
    expect(commandSpec('toString')).toBeUndefined();
    expect(commandSpec('guest-nope')).toBeUndefined();
  });
});
