// Inline rename, shared by the keys and projects tables: the name cell becomes an input labelled
// "Name"; Enter saves through `save(name)` (which returns after the API answered), Escape puts the old
// name back. An error stays beside the input. Focus goes back to the Rename button either way.

import { h, uid, setFieldError, clearFieldError } from './dom.js';
import { messageOf } from './dialogs.js';

/**
 * Starts renaming in `cell`, whose current text is `name`. `done(saved)` is called after the cell is
 * back to text: with the API's answer when saved, with null when cancelled. `button` is the Rename
 * button (its stand-in after a re-render is found by its data-focus-key).
 */
export function startRename({ cell, name, save, done, button }) {
  const existing = cell.querySelector('input');
  if (existing) {
    existing.focus();
    return;
  }
  const before = [...cell.childNodes];
  const hintId = uid('rename-hint');
  const input = h('input', {
    type: 'text', 'aria-label': 'Name', class: 'inline-input', value: name,
    'aria-describedby': hintId, autocomplete: 'off', spellcheck: 'false',
  });
  input.id = uid('rename');
  const hint = h('span', { class: 'hint visually-hidden', id: hintId }, 'Enter saves, Escape cancels.');
  cell.replaceChildren(input, hint);
  input.focus();
  input.select();

  const backToButton = () => {
    const key = button.dataset.focusKey;
    const target = button.isConnected ? button : (key && document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`));
    if (target) target.focus();
  };
  let saving = false;
  input.addEventListener('keydown', async (event) => {
    if (event.key === 'Escape') {
      event.preventDefault();
      event.stopPropagation();
      if (saving) return;
      cell.replaceChildren(...before);
      done(null);
      backToButton();
    } else if (event.key === 'Enter') {
      event.preventDefault();
      if (saving) return;
      saving = true;
      input.setAttribute('aria-busy', 'true');
      try {
        const saved = await save(input.value);
        done(saved);
        backToButton();
      } catch (error) {
        saving = false;
        input.removeAttribute('aria-busy');
        if (!input.isConnected) return;
        clearFieldError(input);
        setFieldError(input, messageOf(error), hint);
        input.focus();
      }
    }
  });
}
