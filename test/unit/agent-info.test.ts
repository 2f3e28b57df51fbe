/**
 * parseAgentInfo (src/qga/agent-info.ts): identical guest-info answers share one frozen AgentInfo
 * (memory per idle channel, issue 14); any difference in version, command name, enabled or
 * success-response gives its own.
 */
import { describe, expect, it } from 'vitest';
import { MAX_AGENT_COMMANDS, parseAgentInfo } from '../../src/qga/agent-info.js';
import type { JsonObject } from '../../src/qga/types.js';

const answer = (version: string, flags: Array<[string, boolean, boolean]>): JsonObject => ({
  version,
  supported_commands: flags.map(([name, enabled, success]) => ({ name, enabled, 'success-response': success })),
});

describe('parseAgentInfo', () => {
  it('identical answers share one frozen AgentInfo; a difference in any flag, name or version does not', () => {
    const base: Array<[string, boolean, boolean]> = [['guest-ping', true, true], ['guest-shutdown', true, false], ['guest-exec', false, true]];
    const a = parseAgentInfo(answer('8.2.0', base));
    const b = parseAgentInfo(answer('8.2.0', base.map(([n, e, s]) => [n, e, s])));
    expect(b).toBe(a);
    expect(Object.isFrozen(a)).toBe(true);
    expect(a.version).toBe('8.2.0');
    expect(a.echoesId).toBe(true);
    expect([...a.commands]).toEqual([
      ['guest-ping', { enabled: true, successResponse: true }],
      ['guest-shutdown', { enabled: true, successResponse: false }],
      ['guest-exec', { enabled: false, successResponse: true }],
    ]);
    const others = [
      answer('8.2.1', base),
      answer('8.2.0', [['guest-ping', true, true], ['guest-shutdown', true, false], ['guest-exec', true, true]]),
      answer('8.2.0', [['guest-ping', true, true], ['guest-shutdown', true, true], ['guest-exec', false, true]]),
      answer('8.2.0', [['guest-pin', true, true], ['gguest-shutdown', true, false], ['guest-exec', false, true]]),
    ].map(parseAgentInfo);
    for (const o of others) expect(o).not.toBe(a);
    expect(new Set(others).size).toBe(others.length);
    expect(parseAgentInfo(answer('3.1.0', base)).echoesId).toBe(false);
  });

  it('a hostile guest-info is not copied whole: malformed names dropped, at most MAX_AGENT_COMMANDS kept, a version not short and printable is unknown', () => {
    const many = Array.from({ length: 300_000 }, (_, i) => ({ name: `guest-${String(i).padStart(7, '0')}`, enabled: true }));
    const evil = parseAgentInfo({
      version: `<script>alert(1)</script>${'v'.repeat(1024)}`,
      supported_commands: [{ name: 'guest-ping', enabled: true }, { name: 'guest-x-<img src=x onerror=alert(1)>', enabled: true }, { name: '', enabled: true }, { name: 42 }, ...many],
    });
    expect(evil.version).toBe('unknown');
    expect(evil.commands.size).toBe(MAX_AGENT_COMMANDS);
    expect(evil.commands.has('guest-ping')).toBe(true);
    expect([...evil.commands.keys()].every((n) => /^guest-[a-z0-9-]+$/.test(n))).toBe(true);
    expect(parseAgentInfo({ version: '8.2.2\n', supported_commands: [] }).version).toBe('unknown');
    expect(parseAgentInfo({ version: '107.0.2 (virtio-win)', supported_commands: [] }).version).toBe('107.0.2 (virtio-win)');
  });
});
