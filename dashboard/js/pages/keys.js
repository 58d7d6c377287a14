// Keys: the account's keys in a table with client-side filters, and per row rename (inline), rotate,
// disable/enable and revoke. Creating and rotating are in key_form.js; both end in the show-once dialog.

import { h, field, replaceChildren, showAlert, clearAlert } from '../dom.js';
import { api, listAll } from '../api.js';
import { confirmDialog, messageOf } from '../dialogs.js';
import { formatNumber, timeEl, titleCase } from '../format.js';
import { startRename } from '../rename.js';
import { openCreateKey, openRotateKey } from './key_form.js';

const COLUMNS = ['Name', 'Prefix', 'Kind', 'Project', 'Status', 'Created', 'Last used', 'Expires', 'Tokens this month', 'Actions'];
const STATUSES = [['', 'All statuses'], ['active', 'Active'], ['disabled', 'Disabled'], ['revoked', 'Revoked'], ['expired', 'Expired']];

export function render(main, ctx) {
  const state = { keys: null, projects: [], loaded: null };

  const createButton = h('button', { type: 'button', class: 'button primary', 'data-focus-key': 'create-key' }, 'Create key');
  const projectFilter = field({ label: 'Project', id: 'keys-project', kind: 'select', options: [['', 'All projects']] });
  const statusFilter = field({ label: 'Status', id: 'keys-status', kind: 'select', options: STATUSES });
  const search = field({ label: 'Search', id: 'keys-search', type: 'search', placeholder: 'Name or prefix', autocomplete: 'off', spellcheck: 'false' });
  const body = h('tbody', {}, messageRow('Loading…'));
  const table = h('table', { class: 'data keys-table' },
    h('caption', { id: 'keys-caption' }, 'Your keys'),
    h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', { scope: 'col', class: c === 'Tokens this month' ? 'num' : null }, c)))),
    body);
  const tableWrap = h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-labelledby': 'keys-caption' }, table);
  const section = h('section', { class: 'page-section' },
    h('div', { class: 'toolbar' }, createButton),
    h('div', { class: 'filters' }, projectFilter.wrap, statusFilter.wrap, search.wrap),
    tableWrap);
  main.append(h('h1', {}, 'Keys'), section);

  for (const control of [projectFilter.control, statusFilter.control]) control.addEventListener('change', draw);
  search.control.addEventListener('input', draw);

  createButton.addEventListener('click', () => {
    // The projects as soon as the list has them (a click may come before the first load ends).
    const projects = state.keys ? Promise.resolve(state.projects) : state.loaded.then(() => state.projects);
    openCreateKey({ projects, announce: ctx.announce, created: refresh });
  });

  function messageRow(text) {
    return h('tr', { class: 'message-row' }, h('td', { colspan: COLUMNS.length }, text));
  }

  function projectName(id) {
    if (!id) return null;
    const project = state.projects.find((p) => p.id === id);
    return project ? project.name : id;
  }

  function visible() {
    const project = projectFilter.control.value;
    const status = statusFilter.control.value;
    const text = search.control.value.trim().toLowerCase();
    return state.keys.filter((k) => (!project || (project === 'none' ? !k.project_id : k.project_id === project))
      && (!status || k.status === status)
      && (!text || String(k.name || '').toLowerCase().includes(text) || String(k.key_prefix || '').toLowerCase().includes(text)));
  }

  function draw() {
    if (!state.keys) return;
    // A redraw replaces the rows: focus inside them moves to the same control in the new row.
    const active = document.activeElement;
    const focusKey = active && body.contains(active) ? active.dataset.focusKey : null;
    fillRows();
    // The same control in the new row, else (a revoked key has none) the table itself.
    if (focusKey) (body.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`) || tableWrap).focus();
  }

  function fillRows() {
    if (!state.keys.length) {
      replaceChildren(body, messageRow('No keys yet. Create your first key with Create key.'));
      return;
    }
    const rows = visible();
    replaceChildren(body, rows.length ? rows.map(row) : messageRow('No keys match these filters.'));
  }

  function pageError(error) {
    if (error.sessionEnded || !ctx.alive()) return;
    showAlert(section, messageOf(error), { before: section.querySelector('.table-wrap') });
  }

  async function refresh() {
    try {
      const [keys, projects] = await Promise.all([
        listAll('/v1/auth/keys?limit=1000'),
        api('GET', '/v1/projects').then((list) => list.data || []),
      ]);
      if (!ctx.alive()) return;
      state.keys = keys;
      state.projects = projects;
      fillProjects();
      clearAlert(section);
      draw();
    } catch (error) {
      if (!ctx.alive() || error.sessionEnded) return;
      if (!state.keys) replaceChildren(body, messageRow('Keys could not be loaded.'));
      pageError(error);
    }
  }

  function fillProjects() {
    const select = projectFilter.control;
    const chosen = select.value;
    replaceChildren(select, h('option', { value: '' }, 'All projects'),
      state.projects.length ? h('option', { value: 'none' }, 'No project') : null,
      state.projects.map((p) => h('option', { value: p.id }, p.name)));
    select.value = [...select.options].some((o) => o.value === chosen) ? chosen : '';
  }

  function replaceKey(updated) {
    const i = state.keys.findIndex((k) => k.id === updated.id);
    if (i >= 0) state.keys[i] = updated;
    const old = body.querySelector(`tr[data-key-id="${CSS.escape(updated.id)}"]`);
    if (old) old.replaceWith(row(updated));
  }

  function actionButton(key, action, text, onClick) {
    return h('button', {
      type: 'button', class: ['button', 'small', action === 'revoke' ? 'danger-outline' : 'secondary'],
      'data-action': action, 'data-focus-key': `${key.id}:${action}`, onclick: onClick,
    }, text);
  }

  function row(key) {
    const nameCell = h('td', { class: 'name-cell' },
      h('span', { class: 'key-name', title: key.description || null }, key.name || ''));
    const actions = [];
    if (key.status === 'active' || key.status === 'disabled') {
      const rename = actionButton(key, 'rename', 'Rename', () => startRename({
        cell: nameCell,
        name: key.name || '',
        button: rename,
        save: (name) => api('PATCH', `/v1/auth/keys/${encodeURIComponent(key.id)}`, { body: { name } }),
        done: (saved) => {
          if (!saved) return;
          replaceKey(saved);
          ctx.announce('Key renamed');
        },
      }));
      actions.push(rename);
      if (key.status === 'active') {
        actions.push(actionButton(key, 'rotate', 'Rotate', () => openRotateKey({
          key, announce: ctx.announce, rotated: refresh,
        })));
      }
      const enabling = key.status === 'disabled';
      actions.push(actionButton(key, 'toggle', enabling ? 'Enable' : 'Disable', async (event) => {
        const button = event.currentTarget;
        button.disabled = true;
        try {
          const saved = await api('PATCH', `/v1/auth/keys/${encodeURIComponent(key.id)}`, { body: { enabled: enabling } });
          if (!ctx.alive()) return;
          replaceKey(saved);
          ctx.announce(enabling ? 'Key enabled' : 'Key disabled');
          body.querySelector(`[data-focus-key="${CSS.escape(`${key.id}:toggle`)}"]`)?.focus();
          await refresh();
        } catch (error) {
          button.disabled = false;
          pageError(error);
        }
      }));
      actions.push(actionButton(key, 'revoke', 'Revoke', () => confirmDialog({
        title: 'Revoke key',
        message: `Revoke “${key.name}” (${key.key_prefix})? Requests with it are refused at once. This cannot be undone.`,
        confirmLabel: 'Revoke',
        action: async () => {
          await api('DELETE', `/v1/auth/keys/${encodeURIComponent(key.id)}`);
        },
      }).then((revoked) => {
        if (!revoked || !ctx.alive()) return;
        ctx.announce('Key revoked');
        refresh();
      })));
    }
    const usage = key.usage_this_month || {};
    const tokens = (Number(usage.input_tokens) || 0) + (Number(usage.output_tokens) || 0);
    return h('tr', { 'data-key-id': key.id, class: `status-${key.status}` },
      nameCell,
      h('td', {}, h('code', {}, key.key_prefix || '')),
      h('td', {}, titleCase(key.kind)),
      h('td', {}, projectName(key.project_id) || h('span', { class: 'muted' }, '—')),
      h('td', {}, h('span', { class: ['badge', `badge-${key.status}`] }, titleCase(key.status))),
      h('td', {}, key.created_at ? timeEl(key.created_at) : ''),
      h('td', {}, key.last_used_at ? timeEl(key.last_used_at, { rel: true }) : 'never'),
      h('td', {}, expiry(key)),
      h('td', { class: 'num' }, formatNumber(tokens)),
      h('td', { class: 'actions-cell' }, actions.length ? h('div', { class: 'row-actions' }, actions) : null));
  }

  state.loaded = refresh();
}

/** When a key stops working: its expiry, a revocation scheduled by a rotation, or never. */
function expiry(key) {
  if (key.revoked_at) {
    const at = Date.parse(key.revoked_at);
    if (key.status !== 'revoked' && at > Date.now()) return [timeEl(key.revoked_at), h('span', { class: 'sub' }, 'rotated: ends then')];
    return [h('span', { class: 'sub' }, 'revoked '), timeEl(key.revoked_at)];
  }
  if (key.expires_at) return timeEl(key.expires_at);
  return h('span', { class: 'muted' }, 'never');
}
