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

/** Rows as the Markdown table every bench part prints. */
export function markdownTable(rows: BenchRow[], reference = 'reference (no rdbg)'): string {
  const fmt = (n: number): string => (!Number.isFinite(n) ? '-' : n >= 100 ? n.toFixed(0) : n.toFixed(1));
  return [
    `| metric | path | rdbg | ${reference} | rdbg vs reference | goal | met |`,
    '|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.metric} | ${r.path} | ${fmt(r.value)} | ${r.reference ? fmt(r.reference) : '-'} | ${r.vs} | ${r.goal} | ${r.pass ? 'yes' : 'NO'} |`),
  ].join('\n');
}
