// The tokens-per-day bar chart: inline SVG built node by node, scaled to its container by its viewBox.

import { s } from './dom.js';
import { formatNumber } from './format.js';

const PAD = { left: 64, right: 12, top: 16, bottom: 28 };

/**
 * The drawing's size for a container `width` px wide: about one user unit per pixel, so labels keep
 * their size; flatter on wide screens, taller on narrow ones. The viewBox then scales it to the width.
 */
function size(width) {
  const w = Math.round(Math.min(960, Math.max(320, width || 960)));
  return { w, h: Math.round(w < 600 ? w * 0.55 : Math.max(220, w * 0.27)) };
}

function frame(label, width) {
  const { w, h } = size(width);
  const svg = s('svg', {
    class: 'chart',
    role: 'img',
    'aria-label': label,
    viewBox: `0 0 ${w} ${h}`,
    width: '100%',
    preserveAspectRatio: 'xMidYMid meet',
    focusable: 'false',
  });
  return { svg, w, h };
}

function axis(svg, w, h) {
  const y0 = h - PAD.bottom;
  svg.append(s('line', { class: 'axis', x1: PAD.left, y1: y0, x2: w - PAD.right, y2: y0 }));
  svg.append(s('line', { class: 'axis', x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: y0 }));
}

/** The empty frame shown while data loads (same size as the chart, so nothing moves). */
export function placeholderChart(width) {
  const { svg, w, h } = frame('Tokens per day: loading', width);
  axis(svg, w, h);
  return svg;
}

/**
 * The chart of `days` ([{day: "YYYY-MM-DD", tokens}], every day of the range, zeros included)
 * from `from` to `to`, for a container `width` px wide.
 */
export function tokensPerDayChart(days, from, to, width) {
  const total = days.reduce((sum, d) => sum + d.tokens, 0);
  const { svg, w: WIDTH, h: HEIGHT } = frame(`Tokens per day, ${from} to ${to}: ${formatNumber(total)} tokens`, width);
  const max = days.reduce((m, d) => Math.max(m, d.tokens), 0);
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const slot = days.length ? plotW / days.length : plotW;
  const gap = slot > 6 ? Math.min(slot * 0.2, 6) : 0;
  const y0 = HEIGHT - PAD.bottom;

  svg.append(s('line', { class: 'grid', x1: PAD.left, y1: PAD.top, x2: WIDTH - PAD.right, y2: PAD.top }));
  const bars = s('g', { class: 'bars' });
  days.forEach((d, i) => {
    const height = max > 0 ? (d.tokens / max) * plotH : 0;
    bars.append(s('rect', {
      x: (PAD.left + i * slot + gap / 2).toFixed(2),
      y: (y0 - height).toFixed(2),
      width: Math.max(slot - gap, 0.5).toFixed(2),
      height: height.toFixed(2),
      'data-day': d.day,
      'data-tokens': d.tokens,
    }, s('title', {}, `${d.day}: ${formatNumber(d.tokens)} tokens`)));
  });
  svg.append(bars);
  axis(svg, WIDTH, HEIGHT);

  if (max > 0) svg.append(s('text', { class: 'label', x: PAD.left - 8, y: PAD.top + 4, 'text-anchor': 'end' }, formatNumber(max)));
  svg.append(s('text', { class: 'label', x: PAD.left - 8, y: y0, 'text-anchor': 'end' }, '0'));
  if (days.length) {
    const first = days[0].day;
    const last = days[days.length - 1].day;
    svg.append(s('text', { class: 'label', x: PAD.left, y: HEIGHT - 8, 'text-anchor': 'start' }, first));
    if (last !== first) {
      svg.append(s('text', { class: 'label', x: WIDTH - PAD.right, y: HEIGHT - 8, 'text-anchor': 'end' }, last));
    }
  }
  return svg;
}
