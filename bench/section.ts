/** What a benchmark section hands to bench/run.ts. */
export interface BenchSection {
  /** the section heading in bench/report.md */
  title: string;
  /** the section body, markdown (tables, notes on method) */
  markdown: string;
  /** the issue-14 targets this section measured, for the summary table at the top of the report */
  checks?: Check[];
}

export interface Check {
  /** issue 14 item, e.g. "1" */
  item: string;
  what: string;
  /** the measured figure, formatted */
  value: string;
  /** the target, formatted (e.g. "≥ 0.5") */
  target: string;
  /** undefined: reported, no target (or could not be measured) */
  pass?: boolean;
}

export const check = (item: string, what: string, value: number, op: '≥' | '≤' | '<', limit: number, fmt: (x: number) => string = (x) => x.toFixed(2)): Check => ({
  item,
  what,
  value: Number.isFinite(value) ? fmt(value) : 'n/a',
  target: `${op} ${fmt(limit)}`,
  pass: Number.isFinite(value) ? (op === '≥' ? value >= limit : op === '≤' ? value <= limit : value < limit) : undefined,
});
