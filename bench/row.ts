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

/** A ratio as extra percent, signed: 1.21 -> "+21%", 0.84 -> "-16%". */
export function signedPercent(ratio: number): string {
  return `${ratio >= 1 ? '+' : ''}${Math.round((ratio - 1) * 100)}%`;
}
