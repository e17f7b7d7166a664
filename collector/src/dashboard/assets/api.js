// The dashboard's JSON routes (docs/dashboard.md): the session and its
// CSRF token live here, in memory only (the cookie is HttpOnly).

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let session = null;
const listeners = new Set();

export function currentSession() {
  return session;
}

// Called with the new session (or null) whenever it changes.
export function onSession(fn) {
  listeners.add(fn);
}

function setSession(next) {
  session = next;
  for (const fn of listeners) fn(session);
}

async function request(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && session && session.csrf) headers['X-CSRF-Token'] = session.csrf;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (err) {
    throw new ApiError(0, `the collector cannot be reached (${err.message})`);
  }
  let json = null;
  try {
    json = await res.json();
  } catch {
    json = null;
  }
  if (!res.ok || !json || json.ok === false) {
    const message = (json && json.error) || `${method} ${path}: HTTP ${res.status}`;
    // An expired or revoked session: every view falls back to sign-in.
    if (res.status === 401 && !path.endsWith('/session')) setSession(null);
    throw new ApiError(res.status, message);
  }
  return json;
}

export const get = (path) => request('GET', path);
export const post = (path, body = {}) => request('POST', path, body);

export async function loadSession() {
  try {
    setSession(await get('/ui/api/session'));
  } catch (err) {
    if (err.status === 401) setSession(null);
    else throw err;
  }
  return session;
}

export async function signIn(token) {
  const s = await request('POST', '/ui/api/session', { token });
  setSession(s);
  return s;
}

export async function signOut() {
  try {
    await post('/ui/api/session/signout');
  } finally {
    setSession(null);
  }
}

export function isAdmin() {
  return !!session && session.role === 'admin';
}

// Users act on their sites (acknowledge, silence); readonly only reads.
export function canAct() {
  return !!session && (session.role === 'admin' || session.role === 'user');
}
