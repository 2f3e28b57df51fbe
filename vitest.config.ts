import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/**
 * The suite's longest files (each 20 s or more on 2 cores, measured in a full run), started first:
 * CI runs a clean clone, so vitest has no durations cached and would order by file size, which put
 * the bench smoke (a small file, one long test) last, alone on one worker at the end of the run.
 * Longest first keeps both workers busy to the end. The rest keep vitest's own order.
 */
const LONG_FIRST = [
  'test/faults/freeze.test.ts',
  'test/bench/smoke.test.ts',
  'test/e2e/freeze-processes.test.ts',
  'test/integration/files-sim.test.ts',
  'test/cli/freeze-run.test.ts',
  'test/security/http-limits.test.ts',
  'test/cli/cli.test.ts',
  'test/faults/store.test.ts',
  'test/integration/cluster-freeze.test.ts',
  'test/e2e/cluster.test.ts',
];

class LongFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification) => {
      const i = LONG_FIRST.findIndex((p) => f.moduleId.endsWith(p));
      return i === -1 ? LONG_FIRST.length : i;
    };
    const base = await super.sort(files);
    return base.map((f, i) => ({ f, i, r: rank(f) })).sort((a, b) => a.r - b.r || a.i - b.i).map((x) => x.f);
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    teardownTimeout: 20_000,
    reporters: ['default', './test/summary-reporter.ts'],
    sequence: { sequencer: LongFirst },
  },
});
