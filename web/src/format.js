// format.js — owns turning server values into display text: HTML escaping and the formatting of
// counts, rates, milliseconds, bytes, percentages, durations and timestamps. Every string that came
// from the server goes through `esc` before it is put into HTML; numbers go through `toNumber`, so a
// malformed value renders as a dash instead of as markup.

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes a value for use in HTML text or a quoted attribute. null/undefined become "". */
export function esc(value) {
  if (value === null || value === undefined) return '';
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

/** A finite number, or null (for null, undefined, NaN, strings that are not numbers ...). */
export function toNumber(value) {
  if (value === null || value === undefined || value === '') return null;
  const n = typeof value === 'number' ? value : Number(value);
  return Number.isFinite(n) ? n : null;
}

export const DASH = '–';

// One Intl.NumberFormat per precision: creating one per call (toLocaleString with options) costs
// tens of microseconds, which adds up to whole seconds for a 1,000-row table.
const FORMATS = [0, 1, 2, 3].map((d) => new Intl.NumberFormat('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }));

function fixed(n, digits) {
  return FORMATS[digits].format(n);
}

/** 12,345 */
export function fmtInt(value) {
  const n = toNumber(value);
  return n === null ? DASH : fixed(Math.round(n), 0);
}

/** Requests per second and similar rates: 1 decimal. */
export function fmtRate(value) {
  const n = toNumber(value);
  return n === null ? DASH : fixed(n, 1);
}

/** Milliseconds with precision that fits the magnitude: 0.42, 12.3, 1,234. */
export function fmtMs(value) {
  const n = toNumber(value);
  if (n === null) return DASH;
  const a = Math.abs(n);
  return fixed(n, a < 10 ? 2 : a < 100 ? 1 : 0);
}

/** 45.2% (value already in percent). */
export function fmtPercent(value, digits = 1) {
  const n = toNumber(value);
  return n === null ? DASH : `${fixed(n, digits)}%`;
}

/** A share in 0..1 as percent. */
export function fmtShare(value, digits = 1) {
  const n = toNumber(value);
  return n === null ? DASH : `${fixed(n * 100, digits)}%`;
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 31457280 -> "30.0 MiB". */
export function fmtBytes(value) {
  let n = toNumber(value);
  if (n === null) return DASH;
  let unit = 0;
  while (Math.abs(n) >= 1024 && unit < BYTE_UNITS.length - 1) {
    n /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${Math.round(n)} B` : `${fixed(n, 1)} ${BYTE_UNITS[unit]}`;
}

/** Seconds as "12.5s", "3m 05s", "1h 02m 03s". */
export function fmtDuration(value) {
  const n = toNumber(value);
  if (n === null) return DASH;
  if (n < 60) return `${fixed(n, n < 10 && n % 1 !== 0 ? 1 : 0)}s`;
  const total = Math.round(n);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const mm = String(m).padStart(2, '0');
  const ss = String(s).padStart(2, '0');
  return h > 0 ? `${h}h ${mm}m ${ss}s` : `${m}m ${ss}s`;
}

/** Unix milliseconds as local "2025-01-31 14:05:09". */
export function fmtTime(unixMs) {
  const n = toNumber(unixMs);
  if (n === null) return DASH;
  const d = new Date(n);
  const p = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** Unix milliseconds as local "14:05:09". */
export function fmtClock(unixMs) {
  const n = toNumber(unixMs);
  if (n === null) return DASH;
  return fmtTime(n).slice(11);
}

/** A quantile as a column label: 0.5 -> "50%", 0.999 -> "99.9%". */
export function fmtQuantile(q) {
  const n = toNumber(q);
  if (n === null) return '?';
  return `${Number((n * 100).toFixed(4))}%`;
}

/** The value of quantile `q` in a `[[q, ms], ...]` list, or null. */
export function percentile(pairs, q) {
  if (!Array.isArray(pairs)) return null;
  for (const pair of pairs) {
    if (Array.isArray(pair) && Math.abs(Number(pair[0]) - q) < 1e-9) return toNumber(pair[1]);
  }
  return null;
}

/** Sets innerHTML only when it changed, so unchanged panels keep their DOM (and text selection). */
export function setHtml(el, html) {
  if (!el || el.__cicadaHtml === html) return;
  el.__cicadaHtml = html;
  el.innerHTML = html;
}
