/** A small SVG line chart: one polyline per series, axes with ticks, a legend. No dependencies. */

export interface Series {
  name: string;
  points: { x: number; y: number }[];
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf'];

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Round tick steps (1, 2, 5 times a power of ten) giving about `count` ticks over [0, max]. */
function ticks(max: number, count: number): number[] {
  if (!(max > 0)) return [0];
  const raw = max / count;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) out.push(Number(v.toFixed(10)));
  return out;
}

export function lineChartSvg(series: Series[], opts: ChartOptions): string {
  const W = opts.width ?? 760;
  const H = opts.height ?? 420;
  const left = 64;
  const right = 180;
  const top = 40;
  const bottom = 52;
  const all = series.flatMap((s) => s.points);
  const xs = ticks(Math.max(1e-9, ...all.map((p) => p.x)), 8);
  // The y axis starts at 0 so that a flat line looks flat, not like noise blown up.
  const ys = ticks(Math.max(1e-9, ...all.map((p) => p.y)) * 1.1, 6);
  const xMax = xs[xs.length - 1] || 1;
  const yMax = ys[ys.length - 1] || 1;
  const px = (x: number): number => left + (x / xMax) * (W - left - right);
  const py = (y: number): number => H - bottom - (y / yMax) * (H - top - bottom);
  const f = (n: number): string => n.toFixed(1);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2 - right / 2}" y="22" text-anchor="middle" font-size="15">${esc(opts.title)}</text>`);
  for (const y of ys) {
    out.push(`<line x1="${left}" y1="${f(py(y))}" x2="${W - right}" y2="${f(py(y))}" stroke="#ddd"/>`);
    out.push(`<text x="${left - 6}" y="${f(py(y) + 4)}" text-anchor="end">${y}</text>`);
  }
  for (const x of xs) {
    out.push(`<line x1="${f(px(x))}" y1="${H - bottom}" x2="${f(px(x))}" y2="${H - bottom + 5}" stroke="#333"/>`);
    out.push(`<text x="${f(px(x))}" y="${H - bottom + 18}" text-anchor="middle">${x}</text>`);
  }
  out.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${H - bottom}" stroke="#333"/>`);
  out.push(`<line x1="${left}" y1="${H - bottom}" x2="${W - right}" y2="${H - bottom}" stroke="#333"/>`);
  out.push(`<text x="${(left + W - right) / 2}" y="${H - 12}" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  out.push(`<text transform="translate(16 ${(top + H - bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(opts.yLabel)}</text>`);
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.points.map((p) => `${f(px(p.x))},${f(py(p.y))}`).join(' ');
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts}"/>`);
    const ly = top + 10 + i * 20;
    out.push(`<line x1="${W - right + 16}" y1="${ly}" x2="${W - right + 40}" y2="${ly}" stroke="${color}" stroke-width="3"/>`);
    out.push(`<text x="${W - right + 46}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
