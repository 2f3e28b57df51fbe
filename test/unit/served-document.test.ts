/**
 * schemas/document.ts servedDocument: the maxima that come from the configuration in force are
 * written into the served document, and a default is never left above such a maximum.
 */
import { describe, expect, it } from 'vitest';
import { servedDocument } from '../../src/http/schemas/document.js';

describe('servedDocument', () => {
  it('writes the configured maximum where x-max-from names a setting, lowers a default above it, and leaves the rest alone', () => {
    const doc = {
      a: { type: 'integer', maximum: 3600, default: 30, 'x-max-from': 'agent.waitMaxSeconds' },
      b: { type: 'integer', maximum: 3600, default: 5, 'x-max-from': 'exec.maxWaitSeconds' },
      c: { type: 'integer', maximum: 10, default: 30 },
      d: [{ type: 'integer', 'x-max-from': 'missing.setting', maximum: 7 }],
    };
    const out = servedDocument(doc, { agent: { waitMaxSeconds: 10 }, exec: { maxWaitSeconds: 60 } });
    expect(out).toEqual({
      a: { type: 'integer', maximum: 10, default: 10, 'x-max-from': 'agent.waitMaxSeconds' },
      b: { type: 'integer', maximum: 60, default: 5, 'x-max-from': 'exec.maxWaitSeconds' },
      c: { type: 'integer', maximum: 10, default: 30 },
      d: [{ type: 'integer', 'x-max-from': 'missing.setting', maximum: 7 }],
    });
    // a copy: the document given is not changed
    expect(doc.a.maximum).toBe(3600);
  });
});
