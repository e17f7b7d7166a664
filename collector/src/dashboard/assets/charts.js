// Hand-written SVG charts: a line chart with time and value axes, and a
// status strip. Colours come from CSS classes (light and dark themes);
// each line also has its own dash pattern and each status its own fill
// pattern, so nothing relies on colour alone.

import { s, clear, fmtSi, CLASS_MARK } from './dom.js';

const DEFAULT_W = 640;
const H = 220;
const M = { top: 12, right: 14, bottom: 30, left: 70 };

// Draws at the holder's own width, so text is the same size in a narrow
// and a wide chart.
function widthOf(holder) {
  const w = Math.round(holder.getBoundingClientRect().width);
  return w >= 240 ? w : DEFAULT_W;
}

const RANGE_MS = { '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3 };

export function rangeMs(range) {
  return RANGE_MS[range] || RANGE_MS['1h'];
}

// "Nice" tick values covering [0, max]: 1, 2 or 5 times a power of ten.
export function niceTicks(max, count = 4) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((st) => st >= raw);
  const ticks = [];
  for (let v = 0; v <= max + step * 0.001; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < max) ticks.push(ticks[ticks.length - 1] + step);
  return ticks;
}

function timeLabel(ms, range) {
  const d = new Date(ms);
  const hm = `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
  if (range === '7d') return `${d.toLocaleDateString(undefined, { weekday: 'short' })} ${hm}`;
  return hm;
}

// Splits a series where a gap is longer than three usual steps, so a
// node that stopped reporting shows a break, not a straight line.
function segments(points) {
  if (points.length < 2) return [points];
  const steps = [];
  for (let i = 1; i < points.length; i += 1) steps.push(points[i][0] - points[i - 1][0]);
  const usual = steps.slice().sort((a, b) => a - b)[Math.floor(steps.length / 2)] || 1;
  const out = [[points[0]]];
  for (let i = 1; i < points.length; i += 1) {
    if (points[i][0] - points[i - 1][0] > usual * 3) out.push([]);
    out[out.length - 1].push(points[i]);
  }
  return out;
}

// Draws (or redraws, in the same element) a line chart into `holder`.
// opts: { title, unit ('%', 'B/s', 'ms', ''), max (fixed top, e.g. 100),
//   range ('1h'|'24h'|'7d'), now (ms), series: [{ name, points: [[ts, v]] }] }
export function lineChart(holder, opts) {
  const W = widthOf(holder);
  const now = opts.now || Date.now();
  const from = now - rangeMs(opts.range);
  const values = opts.series.flatMap((se) => se.points.map((p) => p[1])).filter((v) => v !== null && Number.isFinite(v));
  const top = opts.max || Math.max(...values, 0) * 1.1 || 1;
  const ticks = niceTicks(top);
  const yMax = ticks[ticks.length - 1];
  const iw = W - M.left - M.right;
  const ih = H - M.top - M.bottom;
  const x = (t) => M.left + ((t - from) / (now - from)) * iw;
  const y = (v) => M.top + ih - (v / yMax) * ih;
  const fmt = (v) => (opts.unit === '%' ? `${v} %` : fmtSi(v, opts.unit || ''));

  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H}`,
    class: 'chart',
    role: 'img',
    'aria-label': `${opts.title} over ${opts.range}, in ${opts.unit || 'units'}`,
  });
  const grid = s('g', { class: 'grid' });
  for (const v of ticks) {
    grid.append(s('line', { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
    grid.append(s('text', { x: M.left - 6, y: y(v) + 4, class: 'ylabel', 'text-anchor': 'end', text: fmt(v) }));
  }
  const xticks = 6;
  for (let i = 0; i <= xticks; i += 1) {
    const t = from + ((now - from) * i) / xticks;
    grid.append(s('line', { x1: x(t), x2: x(t), y1: M.top + ih, y2: M.top + ih + 4, class: 'tick' }));
    grid.append(s('text', {
      x: x(t), y: H - 10, class: 'xlabel', 'text-anchor': i === 0 ? 'start' : i === xticks ? 'end' : 'middle',
      text: timeLabel(t, opts.range),
    }));
  }
  grid.append(s('line', { x1: M.left, x2: M.left, y1: M.top, y2: M.top + ih, class: 'axis' }));
  grid.append(s('line', { x1: M.left, x2: W - M.right, y1: M.top + ih, y2: M.top + ih, class: 'axis' }));
  svg.append(grid);

  opts.series.forEach((se, i) => {
    const pts = se.points.filter((p) => p[0] >= from && p[1] !== null && Number.isFinite(p[1]));
    const d = segments(pts)
      .filter((seg) => seg.length)
      .map((seg) => seg.map((p, j) => `${j ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(''))
      .join('');
    svg.append(s('path', { d: d || 'M0,0', class: `line line-${i}`, fill: 'none' }));
    if (pts.length === 1) {
      svg.append(s('circle', { cx: x(pts[0][0]), cy: y(pts[0][1]), r: 3, class: `dot line-${i}` }));
    }
  });
  if (!values.length) {
    svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'nodata', text: 'no samples in this range' }));
  }

  const legend = s('svg', { class: 'legend', viewBox: `0 0 ${W} 18`, 'aria-hidden': 'true' });
  let lx = M.left;
  opts.series.forEach((se, i) => {
    const last = [...se.points].reverse().find((p) => p[1] !== null);
    legend.append(s('line', { x1: lx, x2: lx + 24, y1: 9, y2: 9, class: `line line-${i}` }));
    const label = `${se.name}${last ? `: ${fmt(Math.round(last[1] * 10) / 10)}` : ''}`;
    legend.append(s('text', { x: lx + 30, y: 13, text: label }));
    lx += 40 + label.length * 7;
  });

  clear(holder);
  holder.append(s('title', { text: opts.title }), svg, legend);
}

// A status strip: one cell per probe (at most 200), oldest on the left,
// each with its class's colour and fill pattern and a tooltip.
export function strip(holder, cells) {
  const W = widthOf(holder);
  const n = Math.max(cells.length, 1);
  const w = W / Math.max(n, 50);
  const svg = s('svg', {
    viewBox: `0 0 ${W} 40`, class: 'strip', role: 'img',
    'aria-label': `last ${cells.length} probes: ${summary(cells)}`,
  });
  svg.append(patterns());
  cells.forEach((c, i) => {
    const rect = s('rect', {
      x: (i * w).toFixed(2), y: 4, width: Math.max(w - 1, 1).toFixed(2), height: 28,
      class: `cell st-${c.class}`, 'data-class': c.class,
    });
    rect.append(s('title', { text: `${new Date(c.ts_ms).toLocaleString()}: ${CLASS_MARK[c.class] || ''} ${c.class} ${c.status || 'no answer'}` }));
    svg.append(rect);
  });
  clear(holder);
  holder.append(svg);
}

function summary(cells) {
  const counts = {};
  for (const c of cells) counts[c.class] = (counts[c.class] || 0) + 1;
  return Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(', ') || 'none';
}

// Down cells are hatched, error cells dotted, redirects striped
// horizontally: readable in greyscale and by colour-blind readers.
function patterns() {
  const defs = s('defs');
  const mk = (id, ...shapes) => defs.append(s('pattern', { id, width: 6, height: 6, patternUnits: 'userSpaceOnUse' }, ...shapes));
  mk('pat-down', s('rect', { width: 6, height: 6, class: 'pbg-down' }), s('path', { d: 'M0,6 L6,0', class: 'pfg' }));
  mk('pat-error', s('rect', { width: 6, height: 6, class: 'pbg-error' }), s('circle', { cx: 3, cy: 3, r: 1.2, class: 'pfg-dot' }));
  mk('pat-redirect', s('rect', { width: 6, height: 6, class: 'pbg-redirect' }), s('path', { d: 'M0,3 L6,3', class: 'pfg' }));
  return defs;
}

// A live value joins the series at the server's resolution (the range cut
// in `slots` buckets): into the last point (a running mean) when it falls
// in that point's bucket, else as a new point. So a page open for a day
// keeps the same span on screen, not the last 200 probes. `counts` maps a
// series to the number of values in its last point.
export function addLivePoint(points, ts, v, range, slots, counts, key = '') {
  const width = rangeMs(range) / slots;
  const last = points[points.length - 1];
  if (last && ts < last[0] + width && ts >= last[0]) {
    const n = counts.get(key) || 1;
    last[1] = (last[1] * n + v) / (n + 1);
    counts.set(key, n + 1);
  } else {
    points.push([ts, v]);
    counts.set(key, 1);
    if (points.length > slots) points.splice(0, points.length - slots);
  }
  const from = Date.now() - rangeMs(range);
  while (points.length && points[0][0] < from) points.shift();
}

const WORSE = { up: 0, redirect: 1, error: 2, down: 3 };

// The same for the status strip: a bucket shows its worst probe.
export function addLiveCell(cells, cell, range, slots) {
  const width = rangeMs(range) / slots;
  const last = cells[cells.length - 1];
  if (last && cell.ts_ms < last.ts_ms + width && cell.ts_ms >= last.ts_ms) {
    if ((WORSE[cell.class] || 0) > (WORSE[last.class] || 0)) {
      last.class = cell.class;
      last.status = cell.status;
    }
  } else {
    cells.push(cell);
    if (cells.length > slots) cells.splice(0, cells.length - slots);
  }
}
