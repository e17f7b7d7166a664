// Small DOM helpers shared by the views: element building, keyed lists
// updated in place, and the formatting of times, sizes and statuses.

const SVG_NS = 'http://www.w3.org/2000/svg';

// Builds an element. Attributes starting with "on" are listeners; `text`
// sets textContent; `class` may be an array (falsy entries dropped).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'text') {
      el.textContent = String(v);
    } else if (k === 'class' && Array.isArray(v)) {
      el.setAttribute('class', v.filter(Boolean).join(' '));
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
}

// Keeps the children of `parent` equal to `items` in order, reusing the
// element of each key: an update touches only what changed, so an open
// <details> or a focused button survives a refresh.
export function keyed(parent, items, key, create, update) {
  const existing = new Map();
  for (const child of Array.from(parent.children)) {
    if (child.dataset.key !== undefined) existing.set(child.dataset.key, child);
  }
  let cursor = parent.firstElementChild;
  for (const item of items) {
    const k = String(key(item));
    let el = existing.get(k);
    if (el) {
      existing.delete(k);
      if (update) update(el, item);
    } else {
      el = create(item);
      el.dataset.key = k;
    }
    if (el !== cursor) parent.insertBefore(el, cursor);
    else cursor = cursor.nextElementSibling;
  }
  for (const el of existing.values()) el.remove();
}

// Status classes of the contract: up 2xx, redirect 3xx, error 4xx, down
// 5xx or no answer.
export function classOf(status) {
  const n = Number(status);
  if (n >= 200 && n < 300) return 'up';
  if (n >= 300 && n < 400) return 'redirect';
  if (n >= 400 && n < 500) return 'error';
  return 'down';
}

// The class the server computed, else the status's.
export function rowClass(r) {
  return (r && r.class) || classOf(r && r.status);
}

// Each class has a shape and a word besides its colour, so a reader who
// cannot tell the colours apart still reads the status.
export const CLASS_MARK = { up: '●', redirect: '➜', error: '▲', down: '✖' };

export function badge(status, cls = classOf(status)) {
  const label = status === 0 || status === null || status === undefined
    ? 'no answer' : String(status);
  return h('span', { class: ['badge', `st-${cls}`], 'data-class': cls, title: cls },
    h('span', { class: 'mark', 'aria-hidden': 'true', text: CLASS_MARK[cls] || '?' }),
    h('span', { class: 'word', text: `${cls} ${label}` }));
}

export function updateBadge(el, status, cls = classOf(status)) {
  el.replaceWith(badge(status, cls));
}

export function fmtTime(ms) {
  if (!ms) return '—';
  return new Date(Number(ms)).toLocaleString();
}

export function fmtAgo(ms, now = Date.now()) {
  if (!ms) return '—';
  const s = Math.round((now - Number(ms)) / 1000);
  if (s < 0) return `in ${fmtDuration(-s)}`;
  if (s < 5) return 'just now';
  return `${fmtDuration(s)} ago`;
}

export function fmtDuration(s) {
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

// A <time> that refreshTimes() keeps relative ("3 min ago").
export function ago(ms) {
  return h('time', {
    'data-ts': ms || '',
    datetime: ms ? new Date(Number(ms)).toISOString() : undefined,
    title: fmtTime(ms),
    text: fmtAgo(ms),
  });
}

export function refreshTimes(root = document) {
  const now = Date.now();
  for (const t of root.querySelectorAll('time[data-ts]')) {
    if (t.dataset.ts) t.textContent = fmtAgo(t.dataset.ts, now);
  }
}

const SI = ['', 'k', 'M', 'G', 'T'];

export function fmtSi(v, unit) {
  let i = 0;
  let x = Math.abs(v);
  while (x >= 1000 && i < SI.length - 1) { x /= 1000; i += 1; }
  const digits = x >= 100 || x === 0 ? 0 : x >= 10 ? 1 : 2;
  let num = x.toFixed(digits);
  if (num.includes('.')) num = num.replace(/\.?0+$/, '');
  return `${v < 0 ? '-' : ''}${num} ${SI[i]}${unit}`;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return '—';
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

export function siteLink(site) {
  return h('a', { href: `#/site/${encodeURIComponent(site)}`, class: 'site', text: site });
}

export function nodeLink(node, session) {
  if (!node) return h('span', { class: 'muted', text: '—' });
  if (session && session.role === 'admin') {
    return h('a', { href: `#/node/${encodeURIComponent(node)}`, class: 'node', text: node });
  }
  return h('span', { class: 'node', text: node });
}

export function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', { text: title }), ...children);
}

export function empty(text) {
  return h('p', { class: 'empty', text });
}

// A ring of at most `max` items: pushes drop the oldest, so a page left
// open for a day holds what fits on screen, not a day of events.
export function pushBounded(arr, item, max) {
  arr.push(item);
  if (arr.length > max) arr.splice(0, arr.length - max);
  return arr;
}

export function unshiftBounded(arr, item, max) {
  arr.unshift(item);
  if (arr.length > max) arr.length = max;
  return arr;
}

// Runs `fn` once on the next frame however often it is asked for: a burst
// of events (a node's 200 sites failing in one round) redraws once.
export function coalesce(fn) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      fn();
    });
  };
}
