// Building DOM nodes from values, always as text: no HTML parsing anywhere in the dashboard.
// h(tag, attrs, ...children): attrs set attributes (booleans as presence), `on*` functions become
// listeners, `class` may be an array; children are nodes, strings (text), arrays, or null/false (skipped).

const SVG_NS = 'http://www.w3.org/2000/svg';

function apply(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === 'class') {
      el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (name === 'dataset') {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    } else if (name === 'value' || name === 'checked' || name === 'selected') {
      el[name] = value;
    } else if (value === true) {
      el.setAttribute(name, '');
    } else {
      el.setAttribute(name, String(value));
    }
  }
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** An HTML element. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** Replaces every child of `el`. */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

let counter = 0;
/** A document-unique id with a readable stem. */
export function uid(stem) {
  counter += 1;
  return `${stem}-${counter}`;
}

// ------------------------------------------------------------------ forms

/**
 * A labelled control in a wrapper: { wrap, control }. `kind` is input (default), select or textarea;
 * `options` for a select are [value, text] pairs; `hint` adds a described-by hint.
 */
export function field({ label, id, kind = 'input', options = [], hint, wrapClass, ...attrs }) {
  const controlId = id || uid('f');
  const hintId = hint ? `${controlId}-hint` : null;
  let control;
  if (kind === 'select') {
    control = h('select', { id: controlId, ...attrs },
      options.map(([value, text]) => h('option', { value }, text)));
  } else {
    control = h(kind, { id: controlId, 'aria-describedby': hintId, ...attrs });
  }
  const wrap = h('div', { class: ['field', wrapClass] },
    h('label', { for: controlId }, label),
    control,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null);
  return { wrap, control };
}

function describedBy(el) {
  return (el.getAttribute('aria-describedby') || '').split(/\s+/).filter(Boolean);
}

/**
 * Shows `message` right after `control` (or after `after` when given): aria-invalid, aria-describedby.
 * For a fieldset the message follows the fieldset and the group is described by it.
 */
export function setFieldError(control, message, after) {
  clearFieldError(control);
  const errorId = `${control.id || (control.id = uid('c'))}-error`;
  const error = h('p', { class: 'field-error', id: errorId }, message);
  (after || control).after(error);
  if (control.tagName !== 'FIELDSET') control.setAttribute('aria-invalid', 'true');
  // The error first: it is what a screen reader should say before any hint.
  control.setAttribute('aria-describedby', [errorId, ...describedBy(control)].join(' '));
  return error;
}

export function clearFieldError(control) {
  if (!control.id) return;
  const errorId = `${control.id}-error`;
  document.getElementById(errorId)?.remove();
  control.removeAttribute('aria-invalid');
  const rest = describedBy(control).filter((id) => id !== errorId);
  if (rest.length) control.setAttribute('aria-describedby', rest.join(' '));
  else control.removeAttribute('aria-describedby');
}

/** Removes every field error and the alert inside `root`. */
export function clearErrors(root) {
  for (const el of root.querySelectorAll('[aria-invalid], fieldset[aria-describedby]')) clearFieldError(el);
  clearAlert(root);
}

/** A role="alert" message at the top of `root` (a form, a dialog, a page section). */
export function showAlert(root, message, { before } = {}) {
  clearAlert(root);
  const alert = h('p', { class: 'alert', role: 'alert', 'data-alert': '' }, message);
  if (before) before.before(alert);
  else root.prepend(alert);
  alert.scrollIntoView({ block: 'nearest' });
  return alert;
}

export function clearAlert(root) {
  for (const el of root.querySelectorAll('[data-alert]')) el.remove();
}

/**
 * A whole number from a number input: undefined when empty, NaN when not a whole number (the
 * browser gives "" for text it cannot read, with validity.badInput).
 */
export function wholeNumber(input) {
  if (input.validity && input.validity.badInput) return NaN;
  const text = input.value.trim();
  if (text === '') return undefined;
  const n = Number(text);
  return Number.isInteger(n) ? n : NaN;
}

/** Comma- or newline-separated text as a list of its non-empty trimmed parts. */
export function listOf(text, separator = /,/) {
  return text.split(separator).map((part) => part.trim()).filter(Boolean);
}

/** `map[key]` when `map` has it as its own member (never a prototype's: API field names are data). */
export function own(map, key) {
  return key != null && Object.hasOwn(map, key) ? map[key] : undefined;
}
