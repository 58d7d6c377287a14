// Projects: the account's projects with their key counts, inline rename, delete (refused while the
// project holds active keys), and a form to create one.

import { h, field, replaceChildren, setFieldError, clearErrors, showAlert, clearAlert, wholeNumber, own } from '../dom.js';
import { api } from '../api.js';
import { confirmDialog, messageOf, showApiError } from '../dialogs.js';
import { formatNumber, timeEl } from '../format.js';
import { startRename } from '../rename.js';

const COLUMNS = ['Name', 'Keys', 'Created', 'Actions'];

export function render(main, ctx) {
  let projects = null;
  const body = h('tbody', {}, messageRow('Loading…'));
  const tableWrap = h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-labelledby': 'projects-caption' },
    h('table', { class: 'data' },
      h('caption', { id: 'projects-caption' }, 'Your projects'),
      h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', { scope: 'col' }, c)))),
      body));
  const listSection = h('section', { class: 'page-section' }, tableWrap);

  const name = field({ label: 'Name', id: 'project-name', required: true, 'aria-required': 'true', autocomplete: 'off' });
  const keyCap = field({ label: 'Key cap', id: 'project-key-cap', type: 'number', min: '1', step: '1', inputmode: 'numeric',
    hint: 'How many active keys the project may hold. Empty: the default (5).' });
  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Create project');
  const form = h('form', { class: 'stack', novalidate: true },
    h('div', { class: 'grid two' }, name.wrap, keyCap.wrap),
    h('div', { class: 'actions start' }, submit));
  main.append(h('h1', {}, 'Projects'), listSection,
    h('section', { class: 'card' }, h('h2', { id: 'create-project-title' }, 'Create project'), form));

  function messageRow(text) {
    return h('tr', { class: 'message-row' }, h('td', { colspan: COLUMNS.length }, text));
  }

  function pageError(error) {
    if (error.sessionEnded || !ctx.alive()) return;
    showAlert(listSection, messageOf(error));
  }

  function draw() {
    const active = document.activeElement;
    const focusKey = active && body.contains(active) ? active.dataset.focusKey : null;
    if (!projects.length) {
      replaceChildren(body, messageRow('No projects yet. Create one to group keys under their own cap.'));
    } else {
      replaceChildren(body, projects.map(row));
    }
    if (focusKey) (body.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`) || tableWrap).focus();
  }

  async function refresh() {
    try {
      const list = await api('GET', '/v1/projects');
      if (!ctx.alive()) return;
      projects = list.data || [];
      clearAlert(listSection);
      draw();
    } catch (error) {
      if (!ctx.alive() || error.sessionEnded) return;
      if (!projects) replaceChildren(body, messageRow('Projects could not be loaded.'));
      pageError(error);
    }
  }

  function button(project, action, text, onClick) {
    return h('button', {
      type: 'button', class: ['button', 'small', action === 'delete' ? 'danger-outline' : 'secondary'],
      'data-action': action, 'data-focus-key': `${project.id}:${action}`, onclick: onClick,
    }, text);
  }

  function row(project) {
    const nameCell = h('td', {}, project.name);
    const rename = button(project, 'rename', 'Rename', () => startRename({
      cell: nameCell,
      name: project.name,
      button: rename,
      save: (newName) => api('PATCH', `/v1/projects/${encodeURIComponent(project.id)}`, { body: { name: newName } }),
      done: (saved) => {
        if (!saved) return;
        const i = projects.findIndex((p) => p.id === saved.id);
        if (i >= 0) projects[i] = saved;
        nameCell.closest('tr')?.replaceWith(row(saved));
        ctx.announce('Project renamed');
      },
    }));
    const remove = button(project, 'delete', 'Delete', () => confirmDialog({
      title: 'Delete project',
      message: `Delete “${project.name}”? Its revoked and expired keys keep their usage under it. A project that holds active keys cannot be deleted.`,
      confirmLabel: 'Delete',
      action: () => api('DELETE', `/v1/projects/${encodeURIComponent(project.id)}`),
    }).then((deleted) => {
      if (!deleted || !ctx.alive()) return;
      ctx.announce('Project deleted');
      refresh();
    }));
    return h('tr', { 'data-project-id': project.id },
      nameCell,
      h('td', {}, `${formatNumber(project.active_keys)} of ${formatNumber(project.key_cap)}`),
      h('td', { class: 'nowrap' }, project.created_at ? timeEl(project.created_at) : ''),
      h('td', { class: 'actions-cell' }, h('div', { class: 'row-actions' }, rename, remove)));
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const cap = wholeNumber(keyCap.control);
    if (!name.control.value.trim()) {
      setFieldError(name.control, 'Enter a name.');
      name.control.focus();
      return;
    }
    if (Number.isNaN(cap)) {
      setFieldError(keyCap.control, 'Enter a whole number.');
      keyCap.control.focus();
      return;
    }
    const payload = { name: name.control.value };
    if (cap !== undefined) payload.key_cap = cap;
    submit.disabled = true;
    try {
      await api('POST', '/v1/projects', { body: payload });
      if (!ctx.alive()) return;
      name.control.value = '';
      keyCap.control.value = '';
      ctx.announce('Project created');
      await refresh();
    } catch (error) {
      if (!ctx.alive() || error.sessionEnded) return;
      showApiError(form, { name: name.control, key_cap: keyCap.control }, error);
    } finally {
      submit.disabled = false;
    }
  });

  refresh();
}
