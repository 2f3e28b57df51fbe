/**
 * What the gateway says once at start about a configuration that works but loses something:
 * agent.maxReplyBytes below the largest guest-exec-status reply.
 */
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { buildApp, LARGEST_EXEC_STATUS_REPLY } from '../../src/app.js';
import { buildConfig } from '../../src/config/load.js';

async function startLines(agent: Record<string, unknown>, files: Record<string, unknown> = {}): Promise<Array<Record<string, unknown>>> {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  const app = await buildApp({ config: buildConfig({ agent, files }, {}, 'startup-warnings'), logger, env: {} });
  await app.close();
  return lines;
}

describe('start-up warnings', () => {
  it('agent.maxReplyBytes below the largest exec-status reply is said once; the default is not', async () => {
    // 16 MiB: enough for the file reads (refused otherwise), not for 2 × 16 MiB of exec output
    const small = await startLines({ maxReplyBytes: 16 * 1024 * 1024 }, { readChunkBytes: 1024 * 1024, maxRawReadBytes: 1024 * 1024 });
    const said = small.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('agent.maxReplyBytes is below the largest guest-exec-status reply'));
    expect(said).toHaveLength(1);
    expect(said[0]).toMatchObject({ level: 40, maxReplyBytes: 16 * 1024 * 1024, largestExecStatus: LARGEST_EXEC_STATUS_REPLY });
    const dflt = await startLines({});
    expect(dflt.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('agent.maxReplyBytes'))).toEqual([]);
  });
});
