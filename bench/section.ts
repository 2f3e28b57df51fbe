/** What a benchmark section (bench/<name>.ts, default export) hands to bench/run.ts. */
export interface BenchSection {
  /** the section heading in bench/report.md */
  title: string;
  /** the section body, markdown (tables, notes on method) */
  markdown: string;
}
