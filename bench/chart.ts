import type { BenchRow } from './row';

/** rdbg's figure as a fraction of the reference's speed: a rate over a rate, or a time under a time. */
export function speedRatio(row: BenchRow): number {
  if (!(row.value > 0) || !(row.reference > 0)) return NaN;
  return /\bus\b|\(ms\)|median/.test(row.metric) ? row.reference / row.value : row.value / row.reference;
}

/** The goal as a fraction of the reference's speed, when it is one (">= 50% of direct"). */
function goalRatio(row: BenchRow): number | undefined {
  const m = /^>= (\d+)% of direct/.exec(row.goal);
  return m ? Number(m[1]) / 100 : undefined;
}

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * A horizontal bar per row: rdbg's speed as a share of the reference's
 * (100% = as fast as without rdbg), with the goal marked where it is a share.
 */
export function ratioChart(rows: BenchRow[], title: string): string {
  const label = 560;
  const width = 360;
  const bar = 16;
  const gap = 8;
  const top = 40;
  const h = top + rows.length * (bar + gap) + 30;
  const x = (r: number): number => label + Math.min(r, 1.2) * (width / 1.2);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${label + width + 60}" height="${h}" font-family="sans-serif" font-size="12">`,
    `<text x="8" y="20" font-size="14">${escape(title)}</text>`,
  ];
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(`<line x1="${x(p)}" y1="${top - 6}" x2="${x(p)}" y2="${h - 24}" stroke="#ddd"/>`);
    parts.push(`<text x="${x(p)}" y="${h - 10}" text-anchor="middle" fill="#666">${p * 100}%</text>`);
  }
  rows.forEach((row, i) => {
    const y = top + i * (bar + gap);
    const r = speedRatio(row);
    const g = goalRatio(row);
    const name = `${row.path}: ${row.metric}`.slice(0, 90);
    parts.push(`<text x="${label - 6}" y="${y + bar - 4}" text-anchor="end">${escape(name)}</text>`);
    if (Number.isFinite(r)) {
      const color = g === undefined ? '#7a8ca3' : r >= g ? '#3a8a4a' : '#c0563f';
      parts.push(`<rect x="${label}" y="${y}" width="${x(r) - label}" height="${bar}" fill="${color}"/>`);
      parts.push(`<text x="${x(r) + 4}" y="${y + bar - 4}">${Math.round(r * 100)}%</text>`);
    }
    if (g !== undefined) parts.push(`<line x1="${x(g)}" y1="${y - 2}" x2="${x(g)}" y2="${y + bar + 2}" stroke="#000" stroke-width="2"/>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
