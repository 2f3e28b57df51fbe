import { describe, expect, it } from 'vitest';
import { isJsonObject } from '../../src/util/json.js';
import { errorMessage, isObjectLike, isRecord } from '../../src/util/unknown.js';
import { isVmRegistration } from '../../src/store/types.js';

describe('guards for values of unknown type', () => {
  it('isObjectLike: any non-null object, arrays included', () => {
    expect([{}, [], new Date(0), Object.create(null)].map(isObjectLike)).toEqual([true, true, true, true]);
    expect([null, undefined, 0, '', 'x', true, () => 1].map(isObjectLike)).toEqual([false, false, false, false, false, false, false]);
  });

  it('isRecord and isJsonObject: objects that are not arrays', () => {
    expect([{}, { a: 1 }, Object.create(null)].map(isRecord)).toEqual([true, true, true]);
    expect([[], null, undefined, 1, 'x'].map(isRecord)).toEqual([false, false, false, false, false]);
    expect(isJsonObject({ a: [1] })).toBe(true);
    expect([[], null, undefined, 1n, 'x', true].map(isJsonObject)).toEqual([false, false, false, false, false, false]);
  });

  it('errorMessage: the message of an Error, anything else as text', () => {
    expect(errorMessage(new TypeError('boom'))).toBe('boom');
    expect(errorMessage('plain')).toBe('plain');
    expect(errorMessage(42)).toBe('42');
    expect(errorMessage(undefined)).toBe('undefined');
  });

  it('isVmRegistration: what putVm stores, and nothing short of it', () => {
    expect(isVmRegistration({ name: 'a', endpoint: { type: 'unix', path: '/run/a.sock' } })).toBe(true);
    expect(isVmRegistration({ name: 'b', endpoint: { type: 'tcp', host: 'h', port: 1 }, labels: { env: 'prod' } })).toBe(true);
    expect(isVmRegistration({ name: 'c', endpoint: { type: 'tcp', host: 'h' } })).toBe(false);
    expect(isVmRegistration({ name: 'd', endpoint: { type: 'vsock', cid: 3 } })).toBe(false);
    expect(isVmRegistration({ name: 'e', endpoint: { type: 'unix', path: '/x' }, labels: { n: 1 } })).toBe(false);
    expect(isVmRegistration({ endpoint: { type: 'unix', path: '/x' } })).toBe(false);
    expect(isVmRegistration(null)).toBe(false);
  });
});
