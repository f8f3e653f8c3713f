/** A series' drift over a window: how much a least-squares line rises across it, against its mean. */

export interface Point {
  /** minutes since the start */
  x: number;
  y: number;
}

/**
 * Least-squares slope over the points with x in [end - window, end], times the
 * window's length, over the mean of those points: 0.05 means the fitted line
 * climbs 5% of the mean across the window. NaN with fewer than 3 points.
 */
export function relativeTrend(points: Point[], windowMinutes: number): { trend: number; slope: number; mean: number; n: number } {
  if (points.length === 0) return { trend: NaN, slope: NaN, mean: NaN, n: 0 };
  const end = points[points.length - 1].x;
  const win = points.filter((p) => p.x >= end - windowMinutes);
  const n = win.length;
  const mean = win.reduce((s, p) => s + p.y, 0) / n;
  if (n < 3) return { trend: NaN, slope: NaN, mean, n };
  const mx = win.reduce((s, p) => s + p.x, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (const p of win) {
    sxy += (p.x - mx) * (p.y - mean);
    sxx += (p.x - mx) ** 2;
  }
  const slope = sxx === 0 ? 0 : sxy / sxx;
  const span = win[n - 1].x - win[0].x;
  return { trend: (slope * span) / mean, slope, mean, n };
}
