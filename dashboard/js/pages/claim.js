// Claim a trial key: a key issued to a device without an account moves into this account, with its
// usage so far (POST /v1/auth/keys/claim).

import { h, field, setFieldError, clearErrors } from '../dom.js';
import { api } from '../api.js';
import { showApiError } from '../dialogs.js';

export function render(main, ctx) {
  const trialKey = field({ label: 'Trial key', id: 'claim-trial-key', placeholder: 'tg_trial_…', required: true,
    'aria-required': 'true', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'off' });
  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Claim key');
  const result = h('div', { class: 'result' });
  const form = h('form', { class: 'stack', novalidate: true },
    trialKey.wrap, h('div', { class: 'actions start' }, submit));
  main.append(h('div', { class: 'narrow' },
    h('h1', {}, 'Claim a trial key'),
    h('p', {}, 'An app you used before signing up may have given your device a trial key (it starts with tg_trial_). '
      + 'Claim it here and it moves into your account with its usage so far: it keeps working as one of your keys, '
      + 'counted against your key cap, and your device gets a new trial key next time.'),
    h('section', { class: 'card' }, form, result)));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    result.replaceChildren();
    const value = trialKey.control.value.trim();
    if (!value) {
      setFieldError(trialKey.control, 'Enter the trial key.');
      trialKey.control.focus();
      return;
    }
    submit.disabled = true;
    try {
      const key = await api('POST', '/v1/auth/keys/claim', { body: { trial_key: value } });
      if (!ctx.alive()) return;
      trialKey.control.value = '';
      result.append(
        h('p', { class: 'success' }, 'Claimed: the key ', h('code', {}, key.key_prefix), ' is now in your keys.'),
        h('p', {}, 'See it under ', h('a', { href: '/dashboard/keys' }, 'Keys'), '.'));
      ctx.announce('Key claimed');
    } catch (error) {
      if (!ctx.alive() || error.sessionEnded) return;
      showApiError(form, { trial_key: trialKey.control }, error);
    } finally {
      submit.disabled = false;
    }
  });
}
