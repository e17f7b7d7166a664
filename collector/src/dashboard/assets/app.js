// The dashboard's entry: session, hash router, header, and the live
// stream feeding the open view. Views are modules with `channels` (what
// they need from the stream) and `mount(root, params, ctx)`, which
// returns { refresh, onEvent, unmount }.

import * as api from './api.js';
import { Live } from './live.js';
import { h, refreshTimes, pushBounded } from './dom.js';
import * as overview from './view-overview.js';
import * as node from './view-node.js';
import * as site from './view-site.js';
import * as alerts from './view-alerts.js';
import * as signin from './view-signin.js';

// The last events, for whoever debugs the page (and the browser tests):
// bounded like everything else the page keeps.
const MAX_DEBUG_EVENTS = 500;
const debug = { events: [], states: [], errors: [], received: 0, resyncs: 0, view: '' };
window.livehead = debug;
// Script errors and Content-Security-Policy violations are kept (a few)
// so a test, or someone in the console, can see what went wrong.
window.addEventListener('error', (ev) => pushBounded(debug.errors, `${ev.message} (${ev.filename}:${ev.lineno})`, 20));
window.addEventListener('unhandledrejection', (ev) => pushBounded(debug.errors, `unhandled: ${ev.reason}`, 20));
document.addEventListener('securitypolicyviolation', (ev) => pushBounded(debug.errors, `CSP: ${ev.violatedDirective} ${ev.blockedURI}`, 20));

const main = document.getElementById('view');
const liveEl = document.getElementById('live-state');
const whoEl = document.getElementById('who');
const signoutEl = document.getElementById('signout');
const navEl = document.getElementById('nav');

let current = null;
let returnTo = '#/';

export function parseHash(hash) {
  const raw = (hash || '').replace(/^#/, '') || '/';
  const [path, query = ''] = raw.split('?');
  const params = Object.fromEntries(new URLSearchParams(query));
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'node' && parts[1]) return { view: node, name: 'node', params: { ...params, node: parts[1] } };
  if (parts[0] === 'site' && parts[1]) return { view: site, name: 'site', params: { ...params, site: parts[1] } };
  if (parts[0] === 'alerts') return { view: alerts, name: 'alerts', params };
  if (parts[0] === 'signin') return { view: signin, name: 'signin', params };
  return { view: overview, name: 'overview', params };
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

const live = new Live({
  onEvent(type, data) {
    debug.received += 1;
    pushBounded(debug.events, { type, site: data.site || null, node: data.node || null, state: data.state || null }, MAX_DEBUG_EVENTS);
    if (current) current.onEvent(type, data);
  },
  onResync(why) {
    debug.resyncs += 1;
    if (current) load(current, why);
  },
  onState(st, wait) {
    pushBounded(debug.states, st, 20);
    liveEl.dataset.state = st;
    liveEl.textContent = {
      live: '● live', connecting: '◌ connecting', idle: '',
      reconnecting: `◌ reconnecting in ${Math.round((wait || 0) / 1000)} s`,
    }[st] || st;
  },
  onError() {
    // A stream refused for an expired session looks like any error:
    // ask the session route, which signs the page out on 401.
    api.loadSession().catch(() => {});
  },
});

function route() {
  const target = parseHash(location.hash);
  const session = api.currentSession();
  if (!session && target.name !== 'signin') {
    returnTo = location.hash && !location.hash.startsWith('#/signin') ? location.hash : '#/';
    go('#/signin');
    return;
  }
  if (session && target.name === 'signin') {
    go(returnTo);
    return;
  }
  if (current) current.unmount();
  main.replaceChildren();
  debug.view = target.name;
  document.body.dataset.view = target.name;
  for (const a of navEl.querySelectorAll('a')) {
    a.classList.toggle('current', a.dataset.view === target.name);
  }
  const view = target.view.mount(main, target.params, { go, signedIn: () => go(returnTo) });
  current = view;
  live.subscribe(target.view.channels);
  load(view, null, target.name);
}

// (Re)fetches the view's JSON; an error stays on screen until a later
// fetch succeeds.
function load(view, why, name) {
  main.setAttribute('aria-busy', 'true');
  view.refresh()
    .then(() => {
      if (current !== view) return;
      if (name) main.dataset.loaded = name;
      const box = main.querySelector('.view-error');
      if (box) box.remove();
    })
    .catch((err) => { if (current === view) showError(err, why); })
    .finally(() => { if (current === view) main.removeAttribute('aria-busy'); });
}

function showError(err, why) {
  if (err.status === 401) return;
  const text = err.status === 404 ? `Not found: ${err.message}`
    : err.status === 403 ? `Not allowed: ${err.message}`
      : `Could not load this view${why ? ` (${why})` : ''}: ${err.message}`;
  let box = main.querySelector('.view-error');
  if (!box) main.prepend(box = h('p', { class: 'view-error', role: 'alert' }));
  box.textContent = text;
}

function renderHeader(session) {
  document.body.dataset.role = session ? session.role : '';
  whoEl.textContent = session ? `${session.name} (${session.role})` : '';
  signoutEl.hidden = !session;
  navEl.hidden = !session;
}

api.onSession((session) => {
  renderHeader(session);
  if (!session) {
    live.stop();
    liveEl.textContent = '';
    if (!location.hash.startsWith('#/signin')) route();
  }
});

signoutEl.addEventListener('click', async () => {
  live.stop();
  try {
    await api.signOut();
  } catch {
    // Signed out on the page whatever the server said.
  }
  returnTo = '#/';
  go('#/signin');
});

window.addEventListener('hashchange', route);
setInterval(() => refreshTimes(main), 15000);

async function boot() {
  try {
    await api.loadSession();
  } catch (err) {
    main.replaceChildren(h('p', { class: 'view-error', role: 'alert', text: `The collector does not answer: ${err.message}` }));
    return;
  }
  renderHeader(api.currentSession());
  route();
}

boot();
