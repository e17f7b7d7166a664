// Alerts: active, acknowledged, resolved (or all), with acknowledge,
// resolve (admin) and silence buttons. The session's role decides which
// buttons show; the server checks again (and the alerter after it).

import * as api from './api.js';
import { h, keyed, ago, fmtTime, siteLink, nodeLink, empty, section } from './dom.js';

const STATES = ['firing', 'acknowledged', 'resolved', 'all'];
const MAX_ALERTS = 500;
const STATE_MARK = { pending: '◔', firing: '✖', acknowledged: '◐', resolved: '✓' };

export const channels = ['alerts'];

export function mount(root, { state: wanted }) {
  const filter = STATES.includes(wanted) ? wanted : 'firing';
  const state = { alerts: [], heartbeats: [], watchdog: [] };
  const list = h('div', { class: 'alert-list', id: 'alerts' });
  const heartbeats = h('ul', { class: 'rows', id: 'heartbeat-checks' });
  const watchdog = h('ul', { class: 'rows', id: 'watchdog' });
  root.append(
    h('h1', { text: 'Alerts' }),
    h('nav', { class: 'ranges', 'aria-label': 'alert state' }, STATES.map((st) => h('a', {
      href: `#/alerts?state=${st}`, class: ['range', st === filter && 'current'],
      'aria-current': st === filter ? 'page' : undefined, text: st === 'firing' ? 'active' : st,
    }))),
    list,
    h('div', { class: 'grid2' },
      section('Heartbeats', heartbeats),
      api.isAdmin() ? section('Watchdog (newest event of each app)', watchdog) : null),
  );

  async function refresh() {
    const data = await api.get(`/ui/api/alerts?state=${filter}`);
    state.alerts = data.alerts.slice(0, MAX_ALERTS);
    state.heartbeats = (data.heartbeats || []).slice(0, MAX_ALERTS);
    state.watchdog = (data.watchdog || []).slice(0, MAX_ALERTS);
    render();
    renderChecks();
  }

  function renderChecks() {
    if (state.heartbeats.length) {
      if (heartbeats.querySelector('.empty')) heartbeats.replaceChildren();
      keyed(heartbeats, state.heartbeats, (r) => r.check_id || r.check, (r) => fillHeartbeat(h('li'), r), fillHeartbeat);
    } else {
      heartbeats.replaceChildren(empty('no heartbeat checks'));
    }
    if (state.watchdog.length) {
      if (watchdog.querySelector('.empty')) watchdog.replaceChildren();
      keyed(watchdog, state.watchdog, (r) => `${r.node}/${r.app}`, (r) => fillWatchdog(h('li'), r), fillWatchdog);
    } else {
      watchdog.replaceChildren(empty('no watchdog events'));
    }
  }

  // Newest first, one row per key, bounded.
  function upsert(arr, row, key) {
    const i = arr.findIndex((x) => key(x) === key(row));
    if (i >= 0) arr.splice(i, 1);
    arr.unshift(row);
    if (arr.length > MAX_ALERTS) arr.length = MAX_ALERTS;
  }

  function render() {
    if (!state.alerts.length) {
      list.replaceChildren(empty(filter === 'firing' ? '✓ no active alerts' : `no ${filter} alerts`));
      return;
    }
    if (list.querySelector('.empty')) list.replaceChildren();
    keyed(list, state.alerts, (a) => a.alert_id, (a) => alertRow(a, refresh), (row, a) => row.fill(a));
  }

  return {
    refresh,
    onEvent(type, data) {
      if (type === 'alert') {
        upsertAlert(state.alerts, data, filter);
        render();
      } else if (type === 'heartbeat') {
        upsert(state.heartbeats, data, (r) => r.check_id || r.check);
        renderChecks();
      } else if (type === 'watchdog') {
        upsert(state.watchdog, data, (r) => `${r.node}/${r.app}`);
        renderChecks();
      }
    },
    unmount() {},
  };
}

function matches(a, filter) {
  if (filter === 'all') return true;
  if (filter === 'firing') return a.state === 'firing' || a.state === 'pending';
  return a.state === filter;
}

// Puts the newest state of an alert into `alerts` (newest first), or
// takes it out when it no longer matches the view's filter.
export function upsertAlert(alerts, a, filter) {
  const i = alerts.findIndex((x) => x.alert_id === a.alert_id);
  if (i >= 0) alerts.splice(i, 1);
  if (matches(a, filter)) {
    alerts.unshift(a);
    if (alerts.length > MAX_ALERTS) alerts.length = MAX_ALERTS;
  }
}

// One alert as an <article> with its buttons; `row.fill(a)` redraws it
// in place after an update.
export function alertRow(a, onChanged) {
  const row = h('article', { class: 'alert' });
  row.fill = (next) => fillAlert(row, next, onChanged);
  row.fill(a);
  return row;
}

function fillAlert(row, a, onChanged) {
  const session = api.currentSession();
  row.dataset.alertId = a.alert_id;
  row.dataset.state = a.state;
  row.dataset.site = a.site || '';
  row.className = `alert sev-${a.severity} state-${a.state}`;
  const msg = h('p', { class: 'action-msg', role: 'status' });
  const act = (label, cls, path, body) => h('button', {
    type: 'button', class: cls, text: label,
    onclick: async (ev) => {
      ev.target.disabled = true;
      msg.textContent = `${label}…`;
      try {
        await api.post(path, body);
        msg.textContent = `${label}: done`;
        await onChanged();
      } catch (err) {
        msg.textContent = `${label} failed: ${err.message}`;
        ev.target.disabled = false;
      }
    },
  });
  const id = encodeURIComponent(a.alert_id);
  const buttons = [];
  if (api.canAct() && a.state === 'firing') buttons.push(act('Acknowledge', 'ack', `/ui/api/alerts/${id}/ack`));
  if (api.isAdmin() && a.state !== 'resolved') buttons.push(act('Resolve', 'resolve', `/ui/api/alerts/${id}/resolve`));
  if (api.canAct() && a.state !== 'resolved') buttons.push(silenceForm(a, msg, onChanged));
  row.replaceChildren(
    h('header', {},
      h('span', { class: ['badge', `state-${a.state}`], text: `${STATE_MARK[a.state] || ''} ${a.state}` }),
      ' ', h('span', { class: ['badge', `sev-${a.severity}`], text: a.severity }),
      ' ', h('strong', { class: 'rule', text: a.rule })),
    h('p', { class: 'summary', text: a.summary || '' }),
    h('p', { class: 'meta' },
      a.site ? ['site ', siteLink(a.site), ' · '] : null,
      a.node ? ['node ', nodeLink(a.node, session), ' · '] : null,
      a.service ? `service ${a.service} · ` : null,
      'since ', ago(a.since_ms), h('span', { class: 'muted', text: ` (${fmtTime(a.since_ms)})` }),
      a.actor ? ` · by ${a.actor}` : null),
    buttons.length ? h('div', { class: 'actions' }, buttons) : null,
    msg,
  );
}

// Silences what this alert matched (its site, else its node, and its
// rule) for the chosen duration.
function silenceForm(a, msg, onChanged) {
  const duration = h('select', { 'aria-label': 'silence for' },
    ['1h', '4h', '24h', '7d'].map((d) => h('option', { value: d, text: d })));
  const comment = h('input', { type: 'text', placeholder: 'why (optional)', 'aria-label': 'comment', maxlength: 200 });
  const form = h('form', {
    class: 'silence',
    onsubmit: async (ev) => {
      ev.preventDefault();
      // The alerter's matcher strings; a user's silence must pin one of
      // its sites (`site=`), which a site alert does.
      const matchers = [`alertname=${a.rule}`];
      if (a.site) matchers.push(`site=${a.site}`);
      else if (a.node) matchers.push(`node=${a.node}`);
      msg.textContent = 'Silencing…';
      try {
        await api.post('/ui/api/silences', { matchers, duration: duration.value, comment: comment.value });
        msg.textContent = `Silenced for ${duration.value}`;
        await onChanged();
      } catch (err) {
        msg.textContent = `Silence failed: ${err.message}`;
      }
    },
  }, h('button', { type: 'submit', class: 'silence-btn', text: 'Silence' }), ' for ', duration, ' ', comment);
  return form;
}

const HB_MARK = { up: '●', grace: '◔', down: '✖', paused: '⏸', new: '○' };

function fillHeartbeat(li, r) {
  const cls = r.status === 'down' ? 'st-down' : r.status === 'grace' ? 'st-error' : r.status === 'up' ? 'st-up' : '';
  li.dataset.check = r.check;
  li.replaceChildren(
    h('span', { class: ['badge', cls], text: `${HB_MARK[r.status] || ''} ${r.status}` }),
    ' ', h('strong', { text: r.check }), ' since ', ago(r.ts_ms),
    r.reason ? h('span', { class: 'muted', text: ` (${r.reason})` }) : '');
  return li;
}

// `exhausted` waits for a person: it reads as down.
function fillWatchdog(li, r) {
  const cls = r.kind === 'exhausted' ? 'st-down' : r.kind === 'recovered' ? 'st-up' : 'st-error';
  li.dataset.app = r.app;
  li.replaceChildren(
    h('span', { class: ['badge', cls], text: `${r.kind === 'exhausted' ? '✖' : r.kind === 'recovered' ? '●' : '▲'} ${r.kind}` }),
    ' ', h('strong', { text: r.app }), ' on ', nodeLink(r.node, api.currentSession()),
    r.attempt ? ` · attempt ${r.attempt}` : '', ' · ', ago(r.ts),
    r.reason ? h('span', { class: 'muted', text: ` (${r.reason})` }) : '');
  return li;
}
