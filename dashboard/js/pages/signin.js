// Sign in: an account with email and password (POST /v1/auth/login), or the operator with the
// operator token (checked with GET /v1/accounts?limit=1 before it is kept).

import { h, field, showAlert, clearErrors } from '../dom.js';
import { api } from '../api.js';
import { messageOf } from '../dialogs.js';

/** The operator token never expires by itself; a tab holding it asks for it again after an hour. */
const OPERATOR_SESSION_MS = 60 * 60 * 1000;

function busy(button, on) {
  button.disabled = on;
  button.setAttribute('aria-busy', on ? 'true' : 'false');
}

export function render(main, ctx) {
  const email = field({ label: 'Email', id: 'signin-email', type: 'email', autocomplete: 'username', required: true, spellcheck: 'false' });
  const password = field({ label: 'Password', id: 'signin-password', type: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Sign in');
  const accountForm = h('form', { class: 'stack', novalidate: true },
    email.wrap, password.wrap, h('div', { class: 'actions' }, submit));

  const operatorToken = field({ label: 'Operator token', id: 'operator-token', type: 'password', autocomplete: 'off', required: true });
  const operatorSubmit = h('button', { type: 'submit', class: 'button secondary' }, 'Sign in as operator');
  const operatorForm = h('form', { class: 'stack', novalidate: true },
    operatorToken.wrap, h('div', { class: 'actions' }, operatorSubmit));

  const notice = ctx.notice ? h('p', { class: 'alert', role: 'alert', id: 'session-notice' }, ctx.notice) : null;
  const dropNotice = () => notice && notice.remove();

  accountForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    dropNotice();
    clearErrors(accountForm);
    if (!email.control.value.trim() || !password.control.value) {
      showAlert(accountForm, 'Enter your email and password.');
      (email.control.value.trim() ? password.control : email.control).focus();
      return;
    }
    busy(submit, true);
    try {
      const answer = await api('POST', '/v1/auth/login', {
        token: null,
        body: { email: email.control.value.trim(), password: password.control.value },
      });
      if (!ctx.alive()) return;
      password.control.value = '';
      ctx.startSession({ token: answer.access_token, role: 'account', email: email.control.value.trim(), expires_at: answer.expires_at });
    } catch (error) {
      if (!ctx.alive()) return;
      busy(submit, false);
      showAlert(accountForm, messageOf(error));
      password.control.focus();
      password.control.select();
    }
  });

  operatorForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    dropNotice();
    clearErrors(operatorForm);
    const token = operatorToken.control.value.trim();
    if (!token) {
      showAlert(operatorForm, 'Enter the operator token.');
      operatorToken.control.focus();
      return;
    }
    busy(operatorSubmit, true);
    try {
      await api('GET', '/v1/accounts?limit=1', { token });
      if (!ctx.alive()) return;
      operatorToken.control.value = '';
      const expiresAt = new Date(Date.now() + OPERATOR_SESSION_MS).toISOString();
      ctx.startSession({ token, role: 'operator', email: null, expires_at: expiresAt });
    } catch (error) {
      if (!ctx.alive()) return;
      busy(operatorSubmit, false);
      const wrongToken = error.status === 401 || error.status === 403;
      showAlert(operatorForm, wrongToken ? 'Invalid operator token' : messageOf(error));
      operatorToken.control.focus();
      operatorToken.control.select();
    }
  });

  main.append(h('div', { class: 'narrow' },
    h('h1', { id: 'signin-title' }, 'Sign in'),
    notice,
    h('section', { class: 'card' }, accountForm),
    h('section', { class: 'card' },
      h('h2', { id: 'operator-title' }, 'Operator'),
      h('p', { class: 'hint' }, 'The operator manages accounts and plans with the token set in TOLLGATE_ADMIN_TOKEN.'),
      operatorForm)));
  if (!notice) email.control.focus({ preventScroll: true });
}
