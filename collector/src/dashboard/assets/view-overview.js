// Fleet overview: counts by status, failing sites grouped by node (one
// expandable row per node), recent transitions, cross-domain redirects,
// certificates expiring soon, late heartbeats, alert counts. Site events
// update it in place; a throttled refetch reconciles the counts.

import * as api from './api.js';
import {
  h, keyed, badge, rowClass, coalesce, ago, fmtMs, fmtTime, siteLink, nodeLink, section, empty, unshiftBounded,
} from './dom.js';

const MAX_TRANSITIONS = 50;
const MAX_SITES_PER_NODE = 50;
const RECONCILE_MS = 5000;
const OPEN_UP_TO = 5;

export const channels = ['site', 'alerts'];

export function mount(root) {
  const session = api.currentSession();
  const state = { data: null, known: new Map(), reconcile: null };
  const el = {
    counts: h('div', { class: 'counts', id: 'counts' }),
    failing: h('div', { class: 'failing', id: 'failing' }),
    transitions: h('ol', { class: 'rows', id: 'transitions' }),
    cross: h('ul', { class: 'rows', id: 'cross-domain' }),
    certs: h('ul', { class: 'rows', id: 'certs' }),
    heartbeats: h('ul', { class: 'rows', id: 'heartbeats' }),
    alerts: h('p', { class: 'alert-counts', id: 'alert-counts' }),
  };
  root.append(
    h('h1', { text: 'Fleet overview' }),
    el.counts,
    h('div', { class: 'grid2' },
      section('Failing now, by node', el.failing),
      h('div', {},
        section('Alerts', el.alerts),
        section('Recent transitions', el.transitions))),
    h('div', { class: 'grid3' },
      section('Cross-domain redirects', el.cross),
      section('Certificates expiring within 14 days', el.certs),
      section('Heartbeats late or down', el.heartbeats)),
  );

  async function refresh() {
    const data = await api.get('/ui/api/overview');
    state.data = data;
    // What the page believed failing and the server no longer lists is
    // forgotten: its next probe then says its class.
    const listed = new Set();
    for (const g of data.failing) {
      for (const r of g.sites) {
        listed.add(r.site);
        state.known.set(r.site, rowClass(r));
      }
    }
    for (const [site, cls] of state.known) {
      if (isFailing(cls) && !listed.has(site)) state.known.delete(site);
    }
    render();
  }

  const renderSoon = coalesce(() => render());

  function render() {
    const d = state.data;
    renderCounts(el.counts, d.counts);
    renderFailing(el.failing, d.failing, session);
    renderTransitions(el.transitions, d.transitions);
    keyed(el.cross, d.cross_domain, (r) => r.site, (r) => h('li', {},
      siteLink(r.site), ' → ', h('span', { class: 'location', text: r.location || '' }), ' ', ago(r.ts_ms)));
    if (!d.cross_domain.length) el.cross.replaceChildren(empty('none'));
    keyed(el.certs, d.certs_expiring, (r) => r.site, (r) => h('li', {},
      siteLink(r.site), ' ', h('span', { class: ['trust', `trust-${r.cert_trust}`], text: r.cert_trust || '' }),
      ' expires ', ago(r.cert_expiry_ms), h('span', { class: 'muted', text: ` (${fmtTime(r.cert_expiry_ms)})` })));
    if (!d.certs_expiring.length) el.certs.replaceChildren(empty('none'));
    keyed(el.heartbeats, d.heartbeats, (r) => r.check_id || r.check, (r) => h('li', {},
      h('span', { class: ['badge', `hb-${r.status}`], text: `${r.status === 'down' ? '✖' : '◔'} ${r.status}` }),
      ' ', h('strong', { text: r.check }), ' since ', ago(r.ts_ms),
      r.reason ? h('span', { class: 'muted', text: ` (${r.reason})` }) : null));
    if (!d.heartbeats.length) el.heartbeats.replaceChildren(empty('none late'));
    const a = d.alerts || { firing: 0, acknowledged: 0 };
    el.alerts.replaceChildren(
      h('a', { href: '#/alerts?state=firing', class: ['big', a.firing ? 'st-down' : ''], text: `${a.firing} firing` }),
      ' · ',
      h('a', { href: '#/alerts?state=acknowledged', class: 'big', text: `${a.acknowledged} acknowledged` }),
    );
  }

  // A probe whose class differs from what the page shows moves the site
  // in or out of its node's group now; the throttled refetch then brings
  // the counts of sites the page had no class for.
  function onSite(row) {
    const d = state.data;
    if (!d) return;
    const cls = rowClass(row);
    const before = state.known.get(row.site);
    state.known.set(row.site, cls);
    let changed = false;
    let group = d.failing.find((g) => g.node === row.node);
    const listed = group ? group.sites.findIndex((r) => r.site === row.site) : -1;
    if (isFailing(cls) && listed >= 0) {
      group.sites[listed] = row;
      changed = before !== cls;
    } else if (isFailing(cls)) {
      // A site the page has no class for may be one of the failing sites
      // past the first 50: counted already.
      const counted = isFailing(before) || (before === undefined && group && group.count > group.sites.length);
      if (!group) {
        group = { node: row.node, count: 0, sites: [] };
        d.failing.push(group);
      }
      if (!counted) group.count += 1;
      if (group.sites.length < MAX_SITES_PER_NODE) group.sites.unshift(row);
      changed = !counted || group.sites[0] === row;
    } else if (listed >= 0) {
      group.sites.splice(listed, 1);
      group.count = Math.max(0, group.count - 1);
      if (!group.count) d.failing.splice(d.failing.indexOf(group), 1);
      changed = true;
    }
    if (before && before !== cls) {
      d.counts[before] = Math.max(0, (d.counts[before] || 0) - 1);
      d.counts[cls] = (d.counts[cls] || 0) + 1;
      unshiftBounded(d.transitions, { site: row.site, node: row.node, from: before, to: cls, ts_ms: row.ts_ms }, MAX_TRANSITIONS);
      changed = true;
    }
    if (changed) {
      renderSoon();
      scheduleReconcile();
    }
  }

  function scheduleReconcile() {
    if (state.reconcile) return;
    state.reconcile = setTimeout(() => {
      state.reconcile = null;
      refresh().catch(() => {});
    }, RECONCILE_MS);
  }

  return {
    refresh,
    onEvent(type, data) {
      if (type === 'site') onSite(data);
      else if (type === 'alert' || type === 'heartbeat') scheduleReconcile();
    },
    unmount() {
      clearTimeout(state.reconcile);
    },
  };
}

function isFailing(cls) {
  return cls === 'down' || cls === 'error';
}

function renderCounts(holder, c) {
  const items = ['down', 'error', 'redirect', 'up'].map((k) => ({ k, n: c[k] || 0 }));
  keyed(holder, [...items, { k: 'total', n: c.total || 0 }], (i) => i.k,
    (i) => h('div', { class: ['count', `st-${i.k}`], 'data-class': i.k },
      h('span', { class: 'n' }), h('span', { class: 'label' })),
    () => {});
  for (const child of holder.children) {
    const i = items.find((x) => x.k === child.dataset.key) || { k: 'total', n: c.total || 0 };
    child.querySelector('.n').textContent = String(i.n);
    child.querySelector('.label').textContent = i.k === 'total' ? 'sites' : `${markOf(i.k)} ${i.k}`;
  }
}

function markOf(k) {
  return { up: '●', redirect: '➜', error: '▲', down: '✖' }[k] || '';
}

function renderFailing(holder, groups, session) {
  const sorted = groups.slice().sort((a, b) => b.count - a.count || a.node.localeCompare(b.node));
  if (!sorted.length) {
    holder.replaceChildren(empty('✓ nothing is failing'));
    return;
  }
  if (holder.querySelector('.empty')) holder.replaceChildren();
  keyed(holder, sorted, (g) => g.node,
    (g) => {
      // A few failing sites show at once; a node with many is one row.
      const det = h('details', { class: 'node-group', 'data-node': g.node, open: g.count <= OPEN_UP_TO },
        h('summary', {}, h('span', { class: 'node-name' }), ' ', h('span', { class: 'badge st-down count-badge' })),
        h('table', { class: 'sites' }, h('tbody')));
      det.querySelector('.node-name').append(nodeLink(g.node, session));
      return det;
    },
    () => {});
  for (const det of holder.children) {
    const g = sorted.find((x) => x.node === det.dataset.key);
    det.querySelector('.count-badge').textContent = `✖ ${g.count} failing`;
    const more = g.count > g.sites.length ? g.count - g.sites.length : 0;
    const tbody = det.querySelector('tbody');
    keyed(tbody, g.sites, (r) => r.site, (r) => siteRow(r), (tr, r) => fillSiteRow(tr, r));
    let note = det.querySelector('.more');
    if (more && !note) det.append(note = h('p', { class: 'more muted' }));
    if (note) note.textContent = more ? `and ${more} more (first ${g.sites.length} shown)` : '';
  }
}

export function siteRow(r) {
  const tr = h('tr', { 'data-site': r.site });
  fillSiteRow(tr, r);
  return tr;
}

export function fillSiteRow(tr, r) {
  tr.dataset.class = rowClass(r);
  tr.replaceChildren(
    h('td', {}, badge(r.status, rowClass(r))),
    h('td', {}, siteLink(r.site)),
    h('td', { class: 'error-text', text: r.error || (r.location ? `→ ${r.location}` : '') }),
    h('td', { class: 'num', text: fmtMs(r.latency_ms) }),
    h('td', {}, ago(r.ts_ms)),
  );
}

function renderTransitions(holder, list) {
  if (!list.length) {
    holder.replaceChildren(empty('no transitions yet'));
    return;
  }
  if (holder.querySelector('.empty')) holder.replaceChildren();
  keyed(holder, list, (t) => `${t.site}@${t.ts_ms}@${t.to}`, (t) => h('li', { 'data-site': t.site },
    siteLink(t.site), ' ', badgeOfClass(t.from), ' → ', badgeOfClass(t.to), ' ', ago(t.ts_ms)));
}

// A transition names classes ("down") or statuses (503): both read alike.
function badgeOfClass(v) {
  if (v !== null && v !== '' && !Number.isNaN(Number(v))) return badge(Number(v));
  const cls = v || 'down';
  return h('span', { class: ['badge', `st-${cls}`], 'data-class': cls, text: `${markOf(cls)} ${cls}` });
}
