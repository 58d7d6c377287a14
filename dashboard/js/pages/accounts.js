// Accounts (operator only): the plans, every account with inline edit of plan and key cap, disable and
// enable, and a form to create an account.

import { h, field, uid, replaceChildren, setFieldError, clearErrors, clearFieldError, showAlert, clearAlert, wholeNumber, own } from '../dom.js';
import { api, listAll } from '../api.js';
import { confirmDialog, messageOf, showApiError } from '../dialogs.js';
import { formatNumber, timeEl } from '../format.js';

const COLUMNS = ['Email', 'Plan', 'Key cap', 'Status', 'Created', 'Actions'];

export function render(main, ctx) {
  let plans = null; // [{name, tokens_per_month}]; null until known
  let accounts = null;

  const plansBody = h('tbody', {}, messageRow('Loading…', 2));
  const accountsBody = h('tbody', {}, messageRow('Loading…', COLUMNS.length));
  const plansSection = h('section', { class: 'page-section' },
    h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-labelledby': 'plans-caption' },
      h('table', { class: 'data' },
        h('caption', { id: 'plans-caption' }, 'Plans'),
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col', class: 'num' }, 'Tokens per month'))),
        plansBody)));
  const accountsSection = h('section', { class: 'page-section' },
    h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-labelledby': 'accounts-caption' },
      h('table', { class: 'data' },
        h('caption', { id: 'accounts-caption' }, 'Accounts'),
        h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', { scope: 'col' }, c)))),
        accountsBody)));

  const email = field({ label: 'Email', id: 'account-email', type: 'email', autocomplete: 'off', required: true, 'aria-required': 'true', spellcheck: 'false' });
  const password = field({ label: 'Password', id: 'account-password', type: 'password', autocomplete: 'new-password', required: true, 'aria-required': 'true' });
  const plan = field({ label: 'Plan', id: 'account-plan', kind: 'select', options: [['default', 'default']] });
  const keyCap = field({ label: 'Key cap', id: 'account-key-cap', type: 'number', min: '0', step: '1', inputmode: 'numeric',
    hint: 'Active keys the account may hold. Empty: the default (10).' });
  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Create account');
  const form = h('form', { class: 'stack', novalidate: true },
    h('div', { class: 'grid two' }, email.wrap, password.wrap, plan.wrap, keyCap.wrap),
    h('div', { class: 'actions start' }, submit));

  main.append(h('h1', {}, 'Accounts'), plansSection, accountsSection,
    h('section', { class: 'card' }, h('h2', { id: 'create-account-title' }, 'Create account'), form));

  function messageRow(text, span) {
    return h('tr', { class: 'message-row' }, h('td', { colspan: span }, text));
  }

  /** Plan names to offer: the plans, else those the accounts use (the list of plans may be unavailable). */
  function planNames(current) {
    const names = new Set(plans ? plans.map((p) => p.name) : ['default']);
    if (!plans && accounts) for (const a of accounts) if (a.plan) names.add(a.plan);
    if (current) names.add(current);
    return [...names];
  }

  function fillPlanSelect(select, chosen) {
    replaceChildren(select, planNames(chosen).map((name) => h('option', { value: name }, name)));
    select.value = chosen && planNames(chosen).includes(chosen) ? chosen : (planNames().includes('default') ? 'default' : select.value);
  }

  async function loadPlans() {
    try {
      const list = await api('GET', '/v1/plans');
      if (!ctx.alive()) return;
      plans = list.data || [];
      replaceChildren(plansBody, plans.length
        ? plans.map((p) => h('tr', {}, h('td', {}, p.name),
          h('td', { class: 'num' }, p.tokens_per_month === null || p.tokens_per_month === undefined ? 'unlimited' : formatNumber(p.tokens_per_month))))
        : messageRow('No plans.', 2));
    } catch (error) {
      if (!ctx.alive() || error.sessionEnded) return;
      replaceChildren(plansBody, messageRow(`Plans could not be loaded: ${messageOf(error)}`, 2));
    }
    fillPlanSelect(plan.control, plan.control.value || 'default');
  }

  async function loadAccounts() {
    try {
      const list = await listAll('/v1/accounts?limit=1000');
      if (!ctx.alive()) return;
      accounts = list;
      clearAlert(accountsSection);
      drawAccounts();
      if (!plans) fillPlanSelect(plan.control, plan.control.value || 'default');
    } catch (error) {
      if (!ctx.alive() || error.sessionEnded) return;
      if (!accounts) replaceChildren(accountsBody, messageRow('Accounts could not be loaded.', COLUMNS.length));
      showAlert(accountsSection, messageOf(error));
    }
  }

  function drawAccounts() {
    const active = document.activeElement;
    const focusKey = active && accountsBody.contains(active) ? active.dataset.focusKey : null;
    replaceChildren(accountsBody, accounts.length ? accounts.map(row) : messageRow('No accounts yet.', COLUMNS.length));
    if (focusKey) accountsBody.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`)?.focus();
  }

  function replaceAccount(updated, focusAction) {
    const i = accounts.findIndex((a) => a.id === updated.id);
    if (i >= 0) accounts[i] = updated;
    const old = accountsBody.querySelector(`tr[data-account-id="${CSS.escape(updated.id)}"]`);
    const fresh = row(updated);
    if (old) old.replaceWith(fresh);
    if (focusAction) fresh.querySelector(`[data-action="${focusAction}"]`)?.focus();
  }

  function button(account, action, text, onClick, kind = 'secondary') {
    return h('button', { type: 'button', class: ['button', 'small', kind], 'data-action': action,
      'data-focus-key': `${account.id}:${action}`, onclick: onClick }, text);
  }

  function row(account) {
    const tr = h('tr', { 'data-account-id': account.id });
    const planCell = h('td', {}, account.plan ?? '');
    const capCell = h('td', {}, account.key_cap === null || account.key_cap === undefined ? '' : formatNumber(account.key_cap));
    const actionsCell = h('td', { class: 'actions-cell' });
    const edit = button(account, 'edit', 'Edit', () => startEdit());
    const setDisabled = async (disabled) => {
      const saved = await api('PATCH', `/v1/accounts/${encodeURIComponent(account.id)}`, { body: { disabled } });
      if (!ctx.alive()) return;
      replaceAccount(saved, 'toggle');
      ctx.announce(saved.disabled ? 'Account disabled' : 'Account enabled');
    };
    const toggle = button(account, 'toggle', account.disabled ? 'Enable' : 'Disable', async () => {
      if (!account.disabled) {
        // Every key of the account stops at once: asked first, naming the account.
        await confirmDialog({
          title: 'Disable account',
          message: `Disable ${account.email ?? account.id}? It can no longer sign in, its access tokens end and `
            + 'its service keys are refused at once. Enable it again to undo.',
          confirmLabel: 'Disable',
          action: () => setDisabled(true),
        });
        return;
      }
      toggle.disabled = true;
      try {
        await setDisabled(false);
      } catch (error) {
        toggle.disabled = false;
        if (!ctx.alive() || error.sessionEnded) return;
        showAlert(accountsSection, messageOf(error));
      }
    }, account.disabled ? 'secondary' : 'danger-outline');
    actionsCell.append(h('div', { class: 'row-actions' }, edit, toggle));

    function startEdit() {
      const planSelect = h('select', { 'aria-label': 'Plan', id: uid('edit-plan') });
      fillPlanSelect(planSelect, account.plan);
      const capInput = h('input', { type: 'number', min: '0', step: '1', inputmode: 'numeric', 'aria-label': 'Key cap',
        id: uid('edit-cap'), class: 'inline-input narrow-input', value: account.key_cap ?? '' });
      const save = h('button', { type: 'button', class: 'button small primary' }, 'Save');
      const cancel = h('button', { type: 'button', class: 'button small secondary' }, 'Cancel');
      planCell.replaceChildren(planSelect);
      capCell.replaceChildren(capInput);
      actionsCell.replaceChildren(h('div', { class: 'row-actions' }, save, cancel));
      const stop = () => replaceAccount(account, 'edit');
      cancel.addEventListener('click', stop);
      for (const control of [planSelect, capInput, save, cancel]) {
        control.addEventListener('keydown', (event) => {
          if (event.key === 'Escape') {
            event.preventDefault();
            stop();
          } else if (event.key === 'Enter' && control === capInput) {
            event.preventDefault();
            commit();
          }
        });
      }
      save.addEventListener('click', commit);
      planSelect.focus();

      async function commit() {
        for (const control of [planSelect, capInput]) clearFieldError(control);
        const cap = wholeNumber(capInput);
        if (Number.isNaN(cap)) {
          setFieldError(capInput, 'Enter a whole number.');
          capInput.focus();
          return;
        }
        const payload = { plan: planSelect.value };
        if (cap !== undefined) payload.key_cap = cap;
        save.disabled = true;
        try {
          const saved = await api('PATCH', `/v1/accounts/${encodeURIComponent(account.id)}`, { body: payload });
          if (!ctx.alive()) return;
          replaceAccount(saved, 'edit');
          ctx.announce('Account saved');
        } catch (error) {
          save.disabled = false;
          if (!ctx.alive() || error.sessionEnded || !tr.isConnected) return;
          const control = own({ plan: planSelect, key_cap: capInput }, error.field) || planSelect;
          setFieldError(control, messageOf(error));
          control.focus();
        }
      }
    }

    tr.append(
      // Accounts without an email are tollgate's own (`default` for keys made without one, `trial`).
      h('td', {}, account.email ?? h('span', { class: 'muted' }, `${account.id} (built in)`)),
      planCell,
      capCell,
      h('td', {}, h('span', { class: ['badge', account.disabled ? 'badge-disabled' : 'badge-active'] }, account.disabled ? 'Disabled' : 'Active')),
      h('td', { class: 'nowrap' }, account.created_at && account.email ? timeEl(account.created_at) : '—'),
      actionsCell);
    return tr;
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const problems = [];
    if (!email.control.value.trim()) problems.push([email.control, 'Enter an email address.']);
    if (!password.control.value) problems.push([password.control, 'Enter a password.']);
    const cap = wholeNumber(keyCap.control);
    if (Number.isNaN(cap)) problems.push([keyCap.control, 'Enter a whole number.']);
    if (problems.length) {
      for (const [control, message] of problems) setFieldError(control, message);
      problems[0][0].focus();
      return;
    }
    const payload = { email: email.control.value.trim(), password: password.control.value };
    if (plan.control.value) payload.plan = plan.control.value;
    if (cap !== undefined) payload.key_cap = cap;
    submit.disabled = true;
    try {
      await api('POST', '/v1/accounts', { body: payload });
      if (!ctx.alive()) return;
      email.control.value = '';
      password.control.value = '';
      keyCap.control.value = '';
      ctx.announce('Account created');
      await loadAccounts();
    } catch (error) {
      if (!ctx.alive() || error.sessionEnded) return;
      showApiError(form, { email: email.control, password: password.control, plan: plan.control, key_cap: keyCap.control }, error);
    } finally {
      submit.disabled = false;
    }
  });

  loadPlans();
  loadAccounts();
}
