// A site: its last probe, a status strip, latency over time, redirects,
// certificate and alerts. Probes and alert transitions arrive live.

import * as api from './api.js';
import { lineChart, strip, addLivePoint, addLiveCell } from './charts.js';
import {
  h, badge, rowClass, ago, fmtMs, fmtTime, section, empty, nodeLink, unshiftBounded, keyed,
} from './dom.js';
import { rangePicker } from './view-node.js';
import { alertRow, upsertAlert } from './view-alerts.js';

const MAX_STRIP = 200;
const MAX_POINTS = 200;
const MAX_REDIRECTS = 50;

export const channels = ['site', 'alerts'];

export function mount(root, { site, range }) {
  const session = api.currentSession();
  const state = { data: null, range: ['1h', '24h', '7d'].includes(range) ? range : '1h', counts: new Map() };
  const el = {
    last: h('div', { class: 'last', id: 'site-last' }),
    strip: h('div', { class: 'strip-holder', id: 'site-strip' }),
    latency: h('div', { class: 'chart-holder', id: 'site-latency' }),
    redirects: h('ul', { class: 'rows', id: 'site-redirects' }),
    cert: h('div', { id: 'site-cert' }),
    alerts: h('div', { class: 'alert-list', id: 'site-alerts' }),
  };
  root.append(
    h('h1', {}, 'Site ', h('span', { class: 'mono', id: 'site-name', text: site })),
    rangePicker(`#/site/${encodeURIComponent(site)}`, state.range),
    el.last,
    section('Status history (oldest left)', el.strip),
    section('Latency (ms)', el.latency),
    h('div', { class: 'grid3' },
      section('Redirects', el.redirects),
      section('Certificate', el.cert),
      section('Alerts', el.alerts)),
  );

  async function refresh() {
    state.data = await api.get(`/ui/api/site/${encodeURIComponent(site)}?range=${state.range}`);
    state.counts.clear();
    render();
  }

  function render() {
    const d = state.data;
    const r = d.last || {};
    el.last.replaceChildren(
      h('div', { class: ['big-status', `st-${rowClass(r)}`], 'data-class': rowClass(r) }, badge(r.status, rowClass(r))),
      h('dl', { class: 'facts' },
        h('dt', { text: 'node' }), h('dd', {}, nodeLink(r.node, session)),
        h('dt', { text: 'latency' }), h('dd', { text: fmtMs(r.latency_ms) }),
        h('dt', { text: 'probed' }), h('dd', {}, ago(r.ts_ms)),
        r.error ? [h('dt', { text: 'error' }), h('dd', { class: 'error-text', text: r.error })] : null,
        r.location ? [h('dt', { text: 'location' }), h('dd', { class: 'location', text: `${r.location}${r.cross_domain ? ' (other domain)' : ''}` })] : null,
        r.content ? [h('dt', { text: 'content' }), h('dd', { text: r.content })] : null),
    );
    strip(el.strip, d.strip);
    lineChart(el.latency, {
      title: 'Latency', unit: 'ms', range: state.range,
      series: [{ name: 'latency', points: d.latency }],
    });
    if (d.redirects.length) {
      keyed(el.redirects, d.redirects, (x) => `${x.ts_ms}${x.location}`, (x) => h('li', {},
        ago(x.ts_ms), ' → ', h('span', { class: 'location', text: x.location }),
        x.cross_domain ? h('span', { class: 'badge st-redirect', text: '➜ other domain' }) : null));
    } else {
      el.redirects.replaceChildren(empty('no redirects'));
    }
    const c = d.cert || {};
    el.cert.replaceChildren(c.expiry_ms || c.trust
      ? h('dl', { class: 'facts' },
        h('dt', { text: 'trust' }), h('dd', {}, h('span', { class: ['trust', `trust-${c.trust}`], text: c.trust || '—' })),
        h('dt', { text: 'expires' }), h('dd', {}, ago(c.expiry_ms), h('span', { class: 'muted', text: ` (${fmtTime(c.expiry_ms)})` })),
        c.error ? [h('dt', { text: 'error' }), h('dd', { class: 'error-text', text: c.error })] : null)
      : empty('no certificate (plain http)'));
    renderAlerts();
  }

  function renderAlerts() {
    const list = state.data.alerts;
    if (!list.length) {
      el.alerts.replaceChildren(empty('no alerts'));
      return;
    }
    if (el.alerts.querySelector('.empty')) el.alerts.replaceChildren();
    keyed(el.alerts, list, (a) => a.alert_id, (a) => alertRow(a, refresh), (row, a) => row.fill(a));
  }

  function onSite(row) {
    if (row.site !== site || !state.data) return;
    const d = state.data;
    const cls = rowClass(row);
    d.last = row;
    addLiveCell(d.strip, { ts_ms: row.ts_ms, status: row.status, class: cls }, state.range, MAX_STRIP);
    if (row.latency_ms !== null && row.latency_ms !== undefined) {
      addLivePoint(d.latency, row.ts_ms, row.latency_ms, state.range, MAX_POINTS, state.counts);
    }
    if (row.location && (!d.redirects[0] || d.redirects[0].location !== row.location)) {
      unshiftBounded(d.redirects, { ts_ms: row.ts_ms, location: row.location, cross_domain: row.cross_domain }, MAX_REDIRECTS);
    }
    render();
  }

  return {
    refresh,
    onEvent(type, data) {
      if (type === 'site') onSite(data);
      else if (type === 'alert' && data.site === site && state.data) {
        upsertAlert(state.data.alerts, data, 'all');
        renderAlerts();
      }
    },
    unmount() {},
  };
}
