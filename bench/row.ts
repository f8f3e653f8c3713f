/** One figure of `make bench`: rdbg beside its reference, measured in the same run. */
export interface BenchRow {
  metric: string;
  path: string;
  value: number;
  reference: number;
  vs: string;
  goal: string;
  pass: boolean;
}
