// A node (admin only): host charts over 1 h / 24 h / 7 d, its pods, its
// sites and its services. Server samples extend the charts live; site
// probes update the site rows in place.

import * as api from './api.js';
import { lineChart, addLivePoint } from './charts.js';
import { h, keyed, section, empty, rowClass, coalesce } from './dom.js';
import { siteRow, fillSiteRow } from './view-overview.js';

export const RANGES = ['1h', '24h', '7d'];
const MAX_POINTS = 200;

// Which series go on which chart, with their unit.
const CHARTS = [
  { title: 'CPU busy', unit: '%', max: 100, series: [['cpu_busy_pct', 'CPU busy']] },
  { title: 'Memory used', unit: '%', max: 100, series: [['mem_used_pct', 'memory used']] },
  { title: 'Disk used', unit: '%', max: 100, series: [['disk_used_pct', 'disk used (fullest)']] },
  { title: 'Network', unit: 'B/s', series: [['net_rx_bps', 'received'], ['net_tx_bps', 'sent']] },
  {
    title: 'Pressure (PSI, some, 10 s)', unit: '%', max: 100,
    series: [['psi_cpu_some', 'CPU'], ['psi_memory_some', 'memory'], ['psi_io_some', 'I/O']],
  },
];

export const channels = ['server', 'site'];

export function mount(root, { node, range }) {
  const state = {
    data: null, range: RANGES.includes(range) ? range : '1h', sites: new Map(), draw: null, counts: new Map(),
  };
  const holders = CHARTS.map((c) => h('figure', { class: 'chart-box', 'data-chart': c.title },
    h('figcaption', { text: `${c.title} (${c.unit})` }), h('div', { class: 'chart-holder' })));
  const el = {
    sites: h('tbody'),
    pods: h('div', { class: 'table-wrap' }),
    services: h('div', { class: 'table-wrap' }),
  };
  root.append(
    h('h1', {}, 'Node ', h('span', { class: 'mono', id: 'node-name', text: node })),
    rangePicker(`#/node/${encodeURIComponent(node)}`, state.range),
    h('div', { class: 'charts' }, holders),
    h('div', { class: 'grid2' },
      section('Sites', h('table', { class: 'sites', id: 'node-sites' }, el.sites)),
      h('div', {}, section('Services', el.services), section('Pods', el.pods))),
  );

  function draw() {
    state.draw = null;
    const series = state.data.series || {};
    CHARTS.forEach((c, i) => {
      lineChart(holders[i].querySelector('.chart-holder'), {
        title: c.title, unit: c.unit, max: c.max, range: state.range,
        series: c.series
          .filter(([key], j) => j === 0 || series[key])
          .map(([key, name]) => ({ name, points: series[key] || [] })),
      });
    });
  }

  async function refresh() {
    state.data = await api.get(`/ui/api/node/${encodeURIComponent(node)}?range=${state.range}`);
    state.sites = new Map(state.data.sites.map((r) => [r.site, r]));
    state.counts.clear();
    draw();
    renderSites();
    el.services.replaceChildren(table(state.data.services, ['unit', 'site', 'active_state', 'sub_state', 'memory_bytes', 'cpu_usage_ns'], 'no services reported'));
    el.pods.replaceChildren(table(state.data.pods, ['pod', 'cgroup', 'memory_bytes', 'cpu_usage_ns', 'pids'], 'no pods reported'));
  }

  const renderSitesSoon = coalesce(() => renderSites());

  function renderSites() {
    const rows = [...state.sites.values()].sort((a, b) => rank(a) - rank(b) || a.site.localeCompare(b.site));
    if (!rows.length) {
      el.sites.replaceChildren(h('tr', {}, h('td', { text: 'no sites' })));
      return;
    }
    keyed(el.sites, rows, (r) => r.site, siteRow, fillSiteRow);
  }

  function onServer(sample) {
    if (sample.node !== node || !state.data) return;
    const series = state.data.series || (state.data.series = {});
    for (const [key, v] of Object.entries(sample)) {
      if (key === 'node' || key === 'ts_ms' || typeof v !== 'number') continue;
      const pts = series[key] || (series[key] = []);
      addLivePoint(pts, sample.ts_ms, v, state.range, MAX_POINTS, state.counts, key);
    }
    // Samples come every few seconds per node: one redraw per second at most.
    if (!state.draw) state.draw = setTimeout(draw, 1000);
  }

  function onSite(row) {
    if (row.node !== node || !state.data) return;
    state.sites.set(row.site, row);
    renderSitesSoon();
  }

  return {
    refresh,
    onEvent(type, data) {
      if (type === 'server') onServer(data);
      else if (type === 'site') onSite(data);
    },
    unmount() {
      clearTimeout(state.draw);
    },
  };
}

function rank(r) {
  return { down: 0, error: 1, redirect: 2, up: 3 }[rowClass(r)];
}

export function rangePicker(base, current) {
  return h('nav', { class: 'ranges', 'aria-label': 'time range' },
    RANGES.map((r) => h('a', {
      href: `${base}?range=${r}`, class: ['range', r === current && 'current'],
      'aria-current': r === current ? 'page' : undefined, text: r,
    })));
}

// A table of whatever columns of `cols` the rows have (pods and services
// carry the sampler's fields; absent ones are left out).
function table(rows, cols, none) {
  if (!rows || !rows.length) return empty(none);
  const present = cols.filter((c) => rows.some((r) => r[c] !== undefined && r[c] !== null));
  const shown = present.length ? present : Object.keys(rows[0]).slice(0, 6);
  return h('table', { class: 'plain' },
    h('thead', {}, h('tr', {}, shown.map((c) => h('th', { text: c.replace(/_/g, ' ') })))),
    h('tbody', {}, rows.map((r) => h('tr', { class: r.active_state === 'failed' ? 'st-down' : undefined },
      shown.map((c) => h('td', { text: cell(r[c], c) }))))));
}

function cell(v, col) {
  if (v === undefined || v === null) return '—';
  if (typeof v === 'number' && col.endsWith('_bytes')) return `${(v / 1048576).toFixed(1)} MiB`;
  if (col === 'active_state' && v === 'failed') return `✖ ${v}`;
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}
