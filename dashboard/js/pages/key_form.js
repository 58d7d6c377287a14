// The Create key and Rotate key dialogs. Both send only what was filled in, show an API error next to
// the field it names (or at the top), and on success close and open the show-once dialog.

import { h, field, uid, setFieldError, clearErrors, showAlert, wholeNumber, listOf, own } from '../dom.js';
import { api } from '../api.js';
import { openDialog, showOnceDialog, messageOf } from '../dialogs.js';

const SCOPES = ['chat', 'embeddings', 'models:read', 'count_tokens'];
const LIMITS = [
  ['requests_per_minute', 'Requests per minute'],
  ['requests_per_day', 'Requests per day'],
  ['concurrent_requests', 'Concurrent requests'],
  ['tokens_per_month', 'Tokens per month'],
];

/** The control an API `field` names: `allowed_origins[0]` → allowed_origins, `limits.x` → that limit. */
function controlFor(controls, name) {
  if (!name) return null;
  const plain = String(name).replace(/\[\d+\]/g, '').replace(/^\./, '');
  return own(controls, plain) || null;
}

/** Shows `error` beside its field (focused) or as an alert at the top of `form`. */
function showError(form, controls, error, after = {}) {
  const control = controlFor(controls, error.field);
  if (control) {
    setFieldError(control, messageOf(error), after[control.id]);
    (control.tagName === 'FIELDSET' ? control.querySelector('input') : control).focus();
  } else {
    showAlert(form, messageOf(error));
  }
}

function numberField(label, name) {
  return field({ label, id: uid(`key-${name}`), type: 'number', min: '0', step: '1', inputmode: 'numeric', wrapClass: 'compact' });
}

/**
 * Opens the Create key dialog; `projects` is a promise of the account's projects. `created()` runs after
 * a key was made (to refresh the list).
 */
export function openCreateKey({ projects, announce, created }) {
  const name = field({ label: 'Name', id: uid('key-name'), required: true, 'aria-required': 'true', autocomplete: 'off', maxlength: null });
  const description = field({ label: 'Description', id: uid('key-description'), kind: 'textarea', rows: '2' });
  const project = field({ label: 'Project', id: uid('key-project'), kind: 'select', options: [['', 'No project']] });
  projects.then((list) => {
    const chosen = project.control.value;
    project.control.append(...list.map((p) => h('option', { value: p.id }, p.name)));
    project.control.value = chosen;
  }).catch(() => {});
  const kind = field({ label: 'Kind', id: uid('key-kind'), kind: 'select', options: [['live', 'Live'], ['publishable', 'Publishable']],
    hint: 'Live: secret, for servers. Publishable: for browser code, only from allowed origins.' });
  const scopeBoxes = SCOPES.map((scope) => {
    const id = uid('scope');
    return { scope, box: h('input', { type: 'checkbox', id, value: scope }), id };
  });
  const scopes = h('fieldset', { class: 'scopes', id: uid('key-scopes') },
    h('legend', {}, 'Scopes'),
    h('p', { class: 'hint' }, 'None checked: the server’s default.'),
    h('div', { class: 'checks' }, scopeBoxes.map(({ scope, box, id }) => h('div', { class: 'check' }, box, h('label', { for: id }, scope)))));
  const providers = field({ label: 'Providers', id: uid('key-providers'), placeholder: 'openai, anthropic', autocomplete: 'off',
    hint: 'Comma separated; empty allows any provider.' });
  const models = field({ label: 'Models', id: uid('key-models'), placeholder: 'gpt-4o-mini, claude-*', autocomplete: 'off',
    hint: 'Comma separated globs; empty allows any model.' });
  const limits = LIMITS.map(([key, label]) => ({ key, ...numberField(label, key) }));
  const expires = field({ label: 'Expires in days', id: uid('key-expires'), type: 'number', min: '1', step: '1', inputmode: 'numeric',
    hint: 'Empty: the key does not expire.' });
  const origins = field({ label: 'Allowed origins', id: uid('key-origins'), kind: 'textarea', rows: '3', spellcheck: 'false',
    placeholder: 'https://app.example.com', hint: 'One origin per line, such as https://app.example.com or https://*.example.com.' });
  origins.wrap.hidden = true;
  kind.control.addEventListener('change', () => {
    origins.wrap.hidden = kind.control.value !== 'publishable';
  });

  // The API names a limit by its member (`limits.requests_per_minute`); `limits` alone, something other than
  // an object there, marks the whole group.
  const limitsGroup = h('fieldset', { class: 'limits', id: uid('key-limits') }, h('legend', {}, 'Limits'),
    h('p', { class: 'hint' }, 'Empty: the server’s default.'),
    h('div', { class: 'grid four' }, limits.map((l) => l.wrap)));

  const controls = {
    limits: limitsGroup,
    name: name.control,
    description: description.control,
    project_id: project.control,
    kind: kind.control,
    scopes,
    providers: providers.control,
    models: models.control,
    expires_in_days: expires.control,
    allowed_origins: origins.control,
  };
  for (const l of limits) controls[`limits.${l.key}`] = l.control;

  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Create key');
  const cancel = h('button', { type: 'button', class: 'button secondary' }, 'Cancel');
  const form = h('form', { class: 'key-form', novalidate: true },
    h('div', { class: 'grid two' }, name.wrap, project.wrap),
    description.wrap,
    h('div', { class: 'grid two' }, kind.wrap, expires.wrap),
    origins.wrap,
    scopes,
    h('div', { class: 'grid two' }, providers.wrap, models.wrap),
    limitsGroup,
    h('div', { class: 'actions' }, cancel, submit));

  const dialog = openDialog({ title: 'Create key', content: [form], className: 'wide' });
  cancel.addEventListener('click', () => dialog.close('cancel'));
  name.control.focus();

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = {};
    const problems = [];
    const text = name.control.value.trim();
    if (!text) problems.push([name.control, 'Enter a name.']);
    body.name = name.control.value;
    if (description.control.value.trim()) body.description = description.control.value;
    if (project.control.value) body.project_id = project.control.value;
    if (kind.control.value !== 'live') body.kind = kind.control.value;
    const chosen = scopeBoxes.filter(({ box }) => box.checked).map(({ scope }) => scope);
    if (chosen.length) body.scopes = chosen;
    const providerList = listOf(providers.control.value);
    if (providerList.length) body.providers = providerList;
    const modelList = listOf(models.control.value);
    if (modelList.length) body.models = modelList;
    const limitValues = {};
    for (const l of limits) {
      const n = wholeNumber(l.control);
      if (Number.isNaN(n)) problems.push([l.control, 'Enter a whole number.']);
      else if (n !== undefined) limitValues[l.key] = n;
    }
    if (Object.keys(limitValues).length) body.limits = limitValues;
    const days = wholeNumber(expires.control);
    if (Number.isNaN(days)) problems.push([expires.control, 'Enter a whole number of days.']);
    else if (days !== undefined) body.expires_in_days = days;
    if (kind.control.value === 'publishable') {
      const originList = listOf(origins.control.value, /\r?\n/);
      if (originList.length) body.allowed_origins = originList;
    }
    if (problems.length) {
      for (const [control, message] of problems) setFieldError(control, message);
      problems[0][0].focus();
      return;
    }

    submit.disabled = true;
    try {
      const answer = await api('POST', '/v1/auth/keys', { body });
      dialog.close('created');
      await dialog.closed;
      created();
      announce('Key created');
      await showOnceDialog(answer, announce);
    } catch (error) {
      submit.disabled = false;
      if (error.sessionEnded || !dialog.dialog.isConnected) return;
      showError(form, controls, error);
    }
  });
}

/** Opens the Rotate key dialog for `key`. `rotated()` runs after the new key was made. */
export function openRotateKey({ key, announce, rotated }) {
  const grace = field({ label: 'Grace period (seconds)', id: uid('rotate-grace'), type: 'number', min: '0', step: '1', inputmode: 'numeric',
    hint: 'How long the old key keeps working. Empty or 0: it stops at once.' });
  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Rotate');
  const cancel = h('button', { type: 'button', class: 'button secondary' }, 'Cancel');
  const form = h('form', { novalidate: true, class: 'stack' },
    h('p', {}, `A new key replaces “${key.name}” (${key.key_prefix}), with the same settings.`),
    grace.wrap,
    h('div', { class: 'actions' }, cancel, submit));
  const dialog = openDialog({ title: 'Rotate key', content: [form] });
  cancel.addEventListener('click', () => dialog.close('cancel'));
  grace.control.focus();

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const seconds = wholeNumber(grace.control);
    if (Number.isNaN(seconds)) {
      setFieldError(grace.control, 'Enter a whole number of seconds.');
      grace.control.focus();
      return;
    }
    submit.disabled = true;
    try {
      const answer = await api('POST', `/v1/auth/keys/${encodeURIComponent(key.id)}/rotate`, {
        body: seconds === undefined ? {} : { grace_seconds: seconds },
      });
      dialog.close('rotated');
      await dialog.closed;
      rotated();
      announce('Key rotated');
      // The old key may be revoked already (no buttons left on its row): focus goes to the new key's.
      const newId = answer.id;
      const selector = `[data-focus-key="${CSS.escape(`${newId}:rename`)}"]`;
      await showOnceDialog(answer, announce, { returnTo: () => document.querySelector(selector) });
    } catch (error) {
      submit.disabled = false;
      if (error.sessionEnded || !dialog.dialog.isConnected) return;
      showError(form, { grace_seconds: grace.control }, error);
    }
  });
}
