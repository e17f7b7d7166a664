// Sign-in with a role token (admin, user or readonly): the server answers
// with a session cookie; the token itself is not kept by the page.

import * as api from './api.js';
import { h } from './dom.js';

export const channels = [];

export function mount(root, _params, { signedIn }) {
  const token = h('input', {
    type: 'password', id: 'token', name: 'token', autocomplete: 'current-password',
    required: true, 'aria-describedby': 'signin-help',
  });
  const msg = h('p', { class: 'action-msg', id: 'signin-error', role: 'alert' });
  const form = h('form', {
    class: 'card signin', id: 'signin-form',
    onsubmit: async (ev) => {
      ev.preventDefault();
      msg.textContent = '';
      const button = form.querySelector('button');
      button.disabled = true;
      try {
        await api.signIn(token.value.trim());
        token.value = '';
        // Back to the view that asked for a session (a shared link).
        signedIn();
      } catch (err) {
        msg.textContent = err.status === 401
          ? 'This token is not a role token of this collector.'
          : `Sign-in failed: ${err.message}`;
      } finally {
        button.disabled = false;
      }
    },
  },
  h('h1', { text: 'Sign in to livehead' }),
  h('label', { for: 'token', text: 'Role token' }),
  token,
  h('p', { id: 'signin-help', class: 'muted', text: 'An API token with the admin, user or readonly role (not a push token).' }),
  h('button', { type: 'submit', id: 'signin-submit', text: 'Sign in' }),
  msg);
  root.append(form);
  token.focus();
  return { refresh: async () => {}, onEvent() {}, unmount() {} };
}
