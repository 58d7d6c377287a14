// Modal dialogs on native <dialog> with showModal() (which traps focus and answers Escape). Every
// dialog is made when opened and removed from the DOM when closed; focus goes back to what opened it.

import { h, uid, showAlert, clearErrors, own, setFieldError } from './dom.js';
import { UNREACHABLE } from './api.js';

/** Where focus goes after a dialog closes: the opener, or (when a refresh replaced it) its stand-in. */
function restoreFocus(opener) {
  let target = opener && opener.isConnected ? opener : null;
  const key = opener && opener.dataset ? opener.dataset.focusKey : null;
  if (!target && key) target = document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
  if (!target) target = document.querySelector('main h1');
  if (target) target.focus();
}

/**
 * Opens a dialog titled `title` holding `content` (nodes). Returns { dialog, body, close, closed }:
 * `closed` is a promise settled with the dialog's returnValue once it is closed and removed.
 */
export function openDialog({ title, content = [], className, returnTo }) {
  const opener = document.activeElement;
  const headingId = uid('dialog-title');
  const body = h('div', { class: 'dialog-body' }, content);
  const dialog = h('dialog', { class: ['dialog', className], 'aria-labelledby': headingId },
    h('h2', { id: headingId }, title), body);
  document.body.append(dialog);
  let settle;
  const closed = new Promise((resolve) => { settle = resolve; });
  dialog.addEventListener('close', () => {
    const value = dialog.returnValue;
    // Nothing of what it showed stays behind: values are emptied before the element goes.
    for (const input of dialog.querySelectorAll('input, textarea')) input.value = '';
    dialog.remove();
    const target = returnTo && returnTo();
    if (target) target.focus();
    else restoreFocus(opener);
    settle(value);
  });
  dialog.showModal();
  return { dialog, body, close: (value = '') => dialog.open && dialog.close(value), closed };
}

/** Shows an API failure beside the field of `controls` it names (focused), else as an alert atop `form`. */
export function showApiError(form, controls, error) {
  const control = own(controls, error.field);
  if (control) {
    setFieldError(control, messageOf(error));
    control.focus();
  } else {
    showAlert(form, messageOf(error));
  }
}

/** The message of a failure, never raw JSON. */
export function messageOf(error) {
  if (error && typeof error.message === 'string' && error.message) return error.message;
  return UNREACHABLE;
}

/**
 * Asks to confirm an action. `action` runs when confirmed, with the dialog still open and its buttons
 * busy; if it throws, its message shows in the dialog as an alert and the dialog stays. Resolves true
 * once the action succeeded, false when cancelled.
 */
export function confirmDialog({ title, message, confirmLabel, action, danger = true }) {
  const cancel = h('button', { type: 'button', class: 'button secondary' }, 'Cancel');
  const confirm = h('button', { type: 'submit', class: ['button', danger ? 'danger' : 'primary'] }, confirmLabel);
  const form = h('form', { method: 'dialog', class: 'dialog-form' },
    h('p', { class: 'dialog-message' }, message),
    h('div', { class: 'actions' }, cancel, confirm));
  const { dialog, close, closed } = openDialog({ title, content: [form] });
  let done = false;
  cancel.addEventListener('click', () => close('cancel'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    confirm.disabled = true;
    cancel.disabled = true;
    try {
      await action();
      done = true;
      close('confirm');
    } catch (error) {
      if (!dialog.isConnected) return;
      confirm.disabled = false;
      cancel.disabled = false;
      showAlert(form, messageOf(error));
      confirm.focus();
    }
  });
  cancel.focus();
  return closed.then(() => done);
}

async function copyText(input, announce) {
  try {
    if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
    await navigator.clipboard.writeText(input.value);
    announce('Copied');
    return;
  } catch {
    // Fall back to the selection, which works without the clipboard permission.
  }
  input.focus();
  input.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  announce(ok ? 'Copied' : 'Copy failed: the text is selected, copy it with your keyboard.');
}

function secretRow(label, value, copyLabel, announce) {
  const id = uid('secret');
  const input = h('input', {
    id, type: 'text', readonly: true, class: 'secret', value,
    autocomplete: 'off', spellcheck: 'false', autocapitalize: 'off',
  });
  const copy = h('button', { type: 'button', class: 'button secondary' }, copyLabel);
  copy.addEventListener('click', () => copyText(input, announce));
  input.addEventListener('focus', () => input.select());
  return h('div', { class: 'field secret-field' },
    h('label', { for: id }, label),
    h('div', { class: 'secret-row' }, input, copy));
}

/**
 * Shows a new key once: its secret, a Copy button, the warning, and for a publishable key its signing
 * secret. The values live only in the dialog's inputs, which are emptied and removed on close.
 * Resolves when closed; focus then goes to `returnTo()` when it names an element, else to the opener.
 */
export function showOnceDialog(created, announce, { returnTo } = {}) {
  const content = [
    h('p', { class: 'warning' },
      'This is the only time this key is shown. Copy it now and keep it somewhere safe: it cannot be shown again.'),
    secretRow('Key', created.raw_key, 'Copy', announce),
  ];
  if (created.kind === 'publishable') {
    if (created.signing_secret) {
      content.push(secretRow('Signing secret', created.signing_secret, 'Copy signing secret', announce));
    }
    content.push(h('p', { class: 'note' },
      'The publishable key itself is not secret: browser code sends it, and the API shows it whole on every '
      + 'read of the key (as "key"); the list here shows its prefix. ',
      created.signing_secret
        ? 'The signing secret is secret: it signs identity tokens on your server and is shown only now.'
        : 'This server has no sealing key, so this key has no signing secret for identity tokens.'));
  }
  const done = h('button', { type: 'submit', class: 'button primary' }, 'Done');
  content.push(h('form', { method: 'dialog', class: 'actions' }, done));
  const { dialog, closed } = openDialog({ title: 'Your new key', content, className: 'show-once', returnTo });
  // Emptied the moment it starts to close (Done or Escape), not a task later when it is removed.
  const wipe = () => { for (const input of dialog.querySelectorAll('input')) input.value = ''; };
  done.addEventListener('click', wipe);
  dialog.addEventListener('cancel', wipe);
  done.focus();
  return closed.then(() => undefined);
}
