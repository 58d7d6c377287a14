// Usage: tokens and requests of the account's keys between two days, as a bar chart per day and
// tables by model, key, project and end user. One request per grouping, all at once.

import { h, field, replaceChildren, setFieldError, clearErrors } from '../dom.js';
import { api, query } from '../api.js';
import { showApiError } from '../dialogs.js';
import { tokensPerDayChart, placeholderChart } from '../chart.js';
import { daysBetween, firstOfMonthUtc, formatNumber, todayUtc } from '../format.js';

const TABLES = [
  ['model', 'By model', 'Model'],
  ['key', 'By key', 'Key'],
  ['project', 'By project', 'Project'],
  ['end_user', 'By end user', 'End user'],
];
const NUMBER_COLUMNS = ['Requests', 'Input tokens', 'Output tokens', 'Total tokens'];

export function render(main, ctx) {
  let projects = [];
  const from = field({ label: 'From', id: 'usage-from', type: 'date', value: firstOfMonthUtc(), required: true });
  const to = field({ label: 'To', id: 'usage-to', type: 'date', value: todayUtc(), required: true });
  const project = field({ label: 'Project', id: 'usage-project', kind: 'select', options: [['', 'All projects']] });
  const show = h('button', { type: 'submit', class: 'button primary' }, 'Show');
  const form = h('form', { class: 'filters usage-form', novalidate: true },
    from.wrap, to.wrap, project.wrap, h('div', { class: 'field submit-field' }, show));
  const total = h('p', { id: 'usage-total', class: 'total' }, 'Loading…');
  const chartBox = h('div', { class: 'chart-box' });
  const figure = h('figure', { class: 'chart-figure' }, h('figcaption', {}, 'Tokens per day'), chartBox);

  const tables = TABLES.map(([group, caption, column]) => {
    const captionId = `usage-caption-${group}`;
    const body = h('tbody', {}, messageRow('Loading…'));
    const wrap = h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-labelledby': captionId },
      h('table', { class: 'data' },
        h('caption', { id: captionId }, caption),
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, column),
          NUMBER_COLUMNS.map((c) => h('th', { scope: 'col', class: 'num' }, c)))),
        body));
    return { group, body, wrap };
  });

  const results = h('section', { class: 'page-section' },
    total, figure, h('div', { class: 'usage-tables' }, tables.map((t) => t.wrap)));
  main.append(h('h1', {}, 'Usage'), form, results);
  chartBox.append(placeholderChart(chartBox.clientWidth));

  function messageRow(text) {
    return h('tr', { class: 'message-row' }, h('td', { colspan: 5 }, text));
  }

  function label(group, value) {
    if (group === 'project') {
      if (value === null || value === undefined) return h('span', { class: 'muted' }, 'No project');
      const p = projects.find((x) => x.id === value);
      return p ? p.name : value;
    }
    if (group === 'key') return h('code', {}, value ?? '');
    return value ?? '';
  }

  function fillTable(t, rows) {
    if (!rows.length) {
      replaceChildren(t.body, messageRow('No usage in this range.'));
      return;
    }
    replaceChildren(t.body, rows.map((r) => h('tr', {},
      h('th', { scope: 'row' }, label(t.group, r[t.group])),
      h('td', { class: 'num' }, formatNumber(r.requests)),
      h('td', { class: 'num' }, formatNumber(r.input_tokens)),
      h('td', { class: 'num' }, formatNumber(r.output_tokens)),
      h('td', { class: 'num' }, formatNumber(r.total_tokens)))));
  }

  let request = 0;
  async function load() {
    request += 1;
    const mine = request;
    clearErrors(form);
    results.setAttribute('aria-busy', 'true');
    show.disabled = true;
    const params = { from: from.control.value, to: to.control.value, project_id: project.control.value };
    try {
      const groups = ['day', ...TABLES.map(([group]) => group)];
      const [answers, projectList] = await Promise.all([
        Promise.all(groups.map((group) => api('GET', `/v1/usage${query({ group_by: group, ...params })}`))),
        projects.length ? Promise.resolve(projects) : api('GET', '/v1/projects').then((l) => l.data || []),
      ]);
      if (!ctx.alive() || mine !== request) return;
      projects = projectList;
      fillProjects();
      const [byDay, ...byGroup] = answers;
      const first = byDay.from || params.from;
      const last = byDay.to || params.to;
      const perDay = new Map((byDay.data || []).map((r) => [r.day, Number(r.total_tokens) || 0]));
      const days = daysBetween(first, last).map((day) => ({ day, tokens: perDay.get(day) || 0 }));
      const tokens = (byDay.data || []).reduce((sum, r) => sum + (Number(r.total_tokens) || 0), 0);
      const requests = (byDay.data || []).reduce((sum, r) => sum + (Number(r.requests) || 0), 0);
      total.textContent = `${formatNumber(tokens)} tokens, ${formatNumber(requests)} requests`;
      replaceChildren(chartBox, tokensPerDayChart(days, first, last, chartBox.clientWidth));
      tables.forEach((t, i) => fillTable(t, byGroup[i].data || []));
    } catch (error) {
      if (!ctx.alive() || mine !== request || error.sessionEnded) return;
      showApiError(form, { from: from.control, to: to.control, project_id: project.control }, error);
      total.textContent = 'No usage shown.';
      for (const t of tables) replaceChildren(t.body, messageRow('No usage shown.'));
      replaceChildren(chartBox, placeholderChart(chartBox.clientWidth));
    } finally {
      if (ctx.alive() && mine === request) {
        results.removeAttribute('aria-busy');
        show.disabled = false;
      }
    }
  }

  function fillProjects() {
    const select = project.control;
    const chosen = select.value;
    replaceChildren(select, h('option', { value: '' }, 'All projects'), projects.map((p) => h('option', { value: p.id }, p.name)));
    select.value = chosen;
    if (select.value !== chosen) select.value = '';
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!from.control.value || !to.control.value) {
      const empty = from.control.value ? to.control : from.control;
      clearErrors(form);
      setFieldError(empty, 'Enter a date.');
      empty.focus();
      return;
    }
    if (from.control.value > to.control.value) {
      clearErrors(form);
      setFieldError(to.control, 'Must be on or after the From day.');
      to.control.focus();
      return;
    }
    load();
  });

  load();
}
