// Dates (always shown in UTC, as the API counts days and months in UTC) and numbers.

import { h } from './dom.js';

const pad = (n) => String(n).padStart(2, '0');

/** "2026-11-30 17:05 UTC" for an ISO time; "" for none. */
export function formatDate(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`;
}

/** "just now", "5 minutes ago", "in 3 days"; the absolute date past a month. */
export function relative(iso, now = Date.now()) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const seconds = Math.round((d.getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 45) return 'just now';
  const units = [['minute', 60], ['hour', 3600], ['day', 86400]];
  let chosen = null;
  for (const [unit, size] of units) if (abs >= size * 0.75) chosen = [unit, size];
  if (!chosen || abs > 30 * 86400) return formatDate(iso);
  const n = Math.max(1, Math.round(abs / chosen[1]));
  const phrase = `${n} ${chosen[0]}${n === 1 ? '' : 's'}`;
  return seconds < 0 ? `${phrase} ago` : `in ${phrase}`;
}

/** A <time> element with the ISO time kept in datetime and shown readably. */
export function timeEl(iso, { rel = false } = {}) {
  if (rel) return h('time', { datetime: iso, title: formatDate(iso), class: 'nowrap' }, relative(iso));
  // Day and time in two pieces, so a narrow column breaks between them and nowhere else.
  const text = formatDate(iso);
  const cut = text.indexOf(' ');
  if (cut < 0) return h('time', { datetime: iso }, text);
  return h('time', { datetime: iso }, h('span', { class: 'nowrap' }, text.slice(0, cut)), ' ',
    h('span', { class: 'nowrap' }, text.slice(cut + 1)));
}

const numbers = new Intl.NumberFormat('en-US');
/** 1234567 → "1,234,567". */
export function formatNumber(n) {
  return numbers.format(Number(n) || 0);
}

/** YYYY-MM-DD of a Date, in UTC. */
export function isoDay(d) {
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}

export function todayUtc() {
  return isoDay(new Date());
}

export function firstOfMonthUtc() {
  const d = new Date();
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-01`;
}

/** Every YYYY-MM-DD from `from` to `to`, both included (at most `max` days). */
export function daysBetween(from, to, max = 3660) {
  const days = [];
  const start = Date.parse(`${from}T00:00:00Z`);
  const end = Date.parse(`${to}T00:00:00Z`);
  if (Number.isNaN(start) || Number.isNaN(end)) return days;
  for (let t = start; t <= end && days.length < max; t += 86400000) days.push(isoDay(new Date(t)));
  return days;
}

/** "active" → "Active". */
export function titleCase(word) {
  const text = String(word ?? '');
  return text.charAt(0).toUpperCase() + text.slice(1);
}
