import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load.js';
import { AuthTokens } from '../../src/http/plugins/auth.js';

const A = 'token-a-0123456789abcdef';
const B = 'token-b-0123456789abcdef';
const config = (tokens: Array<{ name: string; token: string }>) => buildConfig({ auth: { tokens: tokens.map((t) => ({ ...t, scopes: ['read'] })) } });

describe('AuthTokens.find keeps the principals of matched tokens until a reload', () => {
  it('the same principal on a repeat; unknown tokens stay unknown; a reload drops a removed token and renames a kept one', () => {
    const auth = new AuthTokens(config([{ name: 'alice', token: A }, { name: 'bob', token: B }]));
    const first = auth.find(A);
    expect(first?.name).toBe('alice');
    expect(auth.find(A)).toBe(first);
    expect(auth.find(B)?.name).toBe('bob');
    expect(auth.find('token-x-0123456789abcdef')).toBeUndefined();
    expect(auth.find('token-x-0123456789abcdef')).toBeUndefined();
    // SIGHUP: A is gone, B now belongs to carol
    auth.reload(config([{ name: 'carol', token: B }]));
    expect(auth.find(A)).toBeUndefined();
    expect(auth.find(B)?.name).toBe('carol');
  });

  it('holds at most 256 tokens: the oldest goes, and is still found (through the digest) afterwards', () => {
    const tokens = Array.from({ length: 300 }, (_, i) => ({ name: `t${i}`, token: `token-${String(i).padStart(4, '0')}-0123456789abcdef` }));
    const auth = new AuthTokens(config(tokens));
    for (const t of tokens) expect(auth.find(t.token)?.name).toBe(t.name);
    const recent = (auth as unknown as { recent: Map<string, unknown> }).recent;
    expect(recent.size).toBe(256);
    expect(recent.has(tokens[0].token)).toBe(false);
    expect(auth.find(tokens[0].token)?.name).toBe('t0');
  });
});
