/**
 * The fleet view's bookkeeping without sockets: AgentStates (state, since, lastSeen, capabilities
 * kept across a frozen guest-info), ExternalFreezes (a freeze with no lease of ours, decided only
 * by the latest status read; the store unable to tell decides nothing) and the address filter of
 * GET /wait?for=ip.
 */
import { describe, expect, it } from 'vitest';
import { ExternalFreezes } from '../../src/agent/state-external.js';
import { AgentStates, type StateChange } from '../../src/agent/state.js';
import { addressFilter, addressesOf } from '../../src/agent/wait.js';
import type { AgentInfo, JsonValue } from '../../src/qga/types.js';

function info(version: string, enabled: Record<string, boolean>): AgentInfo {
  return {
    version,
    versionTuple: [10, 0, 0],
    commands: new Map(Object.entries(enabled).map(([k, v]) => [k, { enabled: v, successResponse: true }])),
    echoesId: true,
    raw: {},
  };
}

describe('AgentStates', () => {
  it('unknown → up → down → up, each change heard once with since moving; lastSeen only on answers', () => {
    let now = 1_000;
    const s = new AgentStates(() => now);
    const heard: StateChange[] = [];
    s.onChange((c) => heard.push(c));
    expect(s.view('a')).toEqual({ agent: { state: 'unknown', since: new Date(1_000).toISOString() } });
    now = 2_000;
    s.answered('a', info('10.0.0', { 'guest-ping': true, 'guest-exec': true, 'guest-file-open': false }));
    now = 2_500;
    s.answered('a');
    expect(s.view('a')).toEqual({
      agent: { state: 'up', since: new Date(2_000).toISOString(), lastSeen: new Date(2_500).toISOString(), version: '10.0.0' },
      capabilities: ['guest-exec', 'guest-ping'],
    });
    now = 3_000;
    s.failed('a', 'ENOENT');
    s.failed('a', 'ENOENT again');
    expect(s.view('a').agent).toMatchObject({ state: 'down', since: new Date(3_000).toISOString(), lastError: 'ENOENT again', lastSeen: new Date(2_500).toISOString() });
    now = 4_000;
    s.answered('a');
    expect(heard).toEqual([
      { vm: 'a', state: 'up', prev: 'unknown' },
      { vm: 'a', state: 'down', prev: 'up' },
      { vm: 'a', state: 'up', prev: 'down' },
    ]);
    s.forget('a');
    expect(heard.at(-1)).toEqual({ vm: 'a', state: 'unknown', prev: 'up' });
    expect(s.view('a').agent.state).toBe('unknown');
  });

  it('a guest-info read while frozen does not replace the capabilities (most commands show disabled then)', () => {
    const s = new AgentStates();
    s.answered('a', info('10.0.0', { 'guest-exec': true, 'guest-ping': true }));
    s.answered('a', info('10.0.0', { 'guest-exec': false, 'guest-ping': true }), true);
    expect(s.view('a').capabilities).toEqual(['guest-exec', 'guest-ping']);
    s.answered('a', info('10.1.0', { 'guest-exec': false, 'guest-ping': true }));
    expect(s.view('a').capabilities).toEqual(['guest-ping']);
    expect(s.view('a').agent.version).toBe('10.1.0');
  });
});

describe('ExternalFreezes', () => {
  const quiet = { warn: () => undefined, info: () => undefined };

  it('frozen with no lease of ours: external, since the first sighting, warned once', async () => {
    const warned: unknown[] = [];
    let now = 5_000;
    const x = new ExternalFreezes(async () => false, { warn: (o: unknown) => warned.push(o), info: () => undefined } as never, () => now);
    await x.observed('v', 'frozen');
    now = 9_000;
    await x.observed('v', 'frozen');
    expect(x.list()).toEqual([{ vm: 'v', since: new Date(5_000).toISOString() }]);
    expect(warned.length).toBe(1);
    await x.observed('v', 'thawed');
    expect(x.list()).toEqual([]);
  });

  it('a lease of ours, or a store that cannot tell, makes it not external', async () => {
    const ours = new ExternalFreezes(async () => true, quiet as never);
    await ours.observed('v', 'frozen');
    expect(ours.list()).toEqual([]);
    const unknown = new ExternalFreezes(async () => undefined, quiet as never);
    await unknown.observed('v', 'frozen');
    expect(unknown.list()).toEqual([]);
    const failing = new ExternalFreezes(async () => {
      throw new Error('store down');
    }, quiet as never);
    await failing.observed('v', 'frozen');
    expect(failing.list()).toEqual([]);
  });

  it('a slow lease lookup does not undo a newer status read or the gateway\'s own freeze', async () => {
    let release: (v: boolean) => void = () => undefined;
    const x = new ExternalFreezes(() => new Promise<boolean>((r) => (release = r)), quiet as never);
    const first = x.observed('v', 'frozen');
    await x.observed('v', 'thawed');
    release(false);
    await first;
    expect(x.list()).toEqual([]);
    const second = x.observed('v', 'frozen');
    x.cleared('v'); // the gateway froze it itself meanwhile
    release(false);
    await second;
    expect(x.list()).toEqual([]);
  });
});

describe('GET /wait?for=ip address filter', () => {
  const reply: JsonValue = [
    { name: 'lo', 'ip-addresses': [{ 'ip-address': '127.0.0.1', 'ip-address-type': 'ipv4', prefix: 8 }, { 'ip-address': '::1', 'ip-address-type': 'ipv6', prefix: 128 }] },
    { name: 'eth0', 'ip-addresses': [{ 'ip-address': '10.0.0.5', 'ip-address-type': 'ipv4', prefix: 24 }, { 'ip-address': 'fe80::1', 'ip-address-type': 'ipv6', prefix: 64 }, { 'ip-address': '2001:db8::5', 'ip-address-type': 'ipv6', prefix: 64 }] },
    { name: 'docker0', 'ip-addresses': [{ 'ip-address': '172.17.0.1', 'ip-address-type': 'ipv4', prefix: 16 }] },
    { name: 'veth12ab', 'ip-addresses': [{ 'ip-address': '169.254.3.4', 'ip-address-type': 'ipv4', prefix: 16 }] },
    { name: 'noaddr' },
  ];
  const pick = (f: Parameters<typeof addressFilter>[0]) => addressesOf(reply).filter(addressFilter(f)).map((a) => a['ip-address']);

  it('family, scope=global and exclude globs; loopback never passes (every running guest has it: it is not the network)', () => {
    expect(addressesOf(reply)).toHaveLength(7);
    expect(pick({})).toEqual(['10.0.0.5', 'fe80::1', '2001:db8::5', '172.17.0.1', '169.254.3.4']);
    expect(pick({ scope: 'global' })).toEqual(['10.0.0.5', '2001:db8::5', '172.17.0.1']);
    expect(pick({ family: 'ipv4', scope: 'global', exclude: ['docker*', 'veth*'] })).toEqual(['10.0.0.5']);
    expect(pick({ family: 'ipv6', scope: 'global' })).toEqual(['2001:db8::5']);
    expect(pick({ exclude: ['*'] })).toEqual([]);
  });
});
