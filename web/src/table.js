// table.js — owns the request statistics tables: the sortable stats table with Locust's columns
// (one innerHTML write per update, one delegated click listener on the header, the sort kept across
// updates, the Aggregated row always last) and the static response-time percentile table.

import { esc, fmtInt, fmtMs, fmtQuantile, fmtRate, percentile, toNumber } from './format.js';

const text = (v) => (v === null || v === undefined ? '' : String(v));

/**
 * The first of `keys` that `entry` carries as a number. Rows come in two shapes: Locust's (the live
 * /stats/requests: `median_response_time`, `current_fail_per_sec`, ..., with cicada's precise `*_ms`
 * beside the whole milliseconds) and the stats snapshot's (the report: `median_ms`, `current_fail_per_s`).
 */
function num(entry, ...keys) {
  for (const key of keys) {
    const n = toNumber(entry[key]);
    if (n !== null) return n;
  }
  return null;
}

/** A percentile: the precise `[[q, ms]]` list when there is one, else Locust's whole-ms key. */
function quantile(entry, q, ...keys) {
  const precise = percentile(entry.percentiles, q);
  return precise !== null ? precise : num(entry, ...keys);
}

/** The stats table's columns: label, how to read the value, how to format it, text or number. */
export const STATS_COLUMNS = [
  { key: 'method', label: 'Type', get: (e) => text(e.method), kind: 'text' },
  { key: 'name', label: 'Name', get: (e) => text(e.name), kind: 'text' },
  { key: 'num_requests', label: '# Requests', get: (e) => toNumber(e.num_requests), fmt: fmtInt },
  { key: 'num_failures', label: '# Fails', get: (e) => toNumber(e.num_failures), fmt: fmtInt },
  { key: 'median_ms', label: 'Median (ms)', get: (e) => num(e, 'median_ms', 'median_response_time'), fmt: fmtMs },
  { key: 'p90', label: '90%ile (ms)', get: (e) => quantile(e, 0.9, 'ninetieth_response_time'), fmt: fmtMs },
  { key: 'p99', label: '99%ile (ms)', get: (e) => quantile(e, 0.99, 'response_time_percentile_0.99', 'ninety_ninth_response_time'), fmt: fmtMs },
  { key: 'avg_ms', label: 'Average (ms)', get: (e) => num(e, 'avg_ms', 'avg_response_time'), fmt: fmtMs },
  { key: 'min_ms', label: 'Min (ms)', get: (e) => num(e, 'min_ms', 'min_response_time'), fmt: fmtMs },
  { key: 'max_ms', label: 'Max (ms)', get: (e) => num(e, 'max_ms', 'max_response_time'), fmt: fmtMs },
  { key: 'avg_content_length', label: 'Average size (bytes)', get: (e) => toNumber(e.avg_content_length), fmt: fmtInt },
  { key: 'current_rps', label: 'Current RPS', get: (e) => toNumber(e.current_rps), fmt: fmtRate },
  { key: 'current_fail_per_s', label: 'Current failures/s', get: (e) => num(e, 'current_fail_per_s', 'current_fail_per_sec'), fmt: fmtRate },
];

/** The report's variant: whole-run rates instead of the current ones. */
export const REPORT_COLUMNS = [
  ...STATS_COLUMNS.slice(0, -2),
  { key: 'total_rps', label: 'RPS', get: (e) => toNumber(e.total_rps), fmt: fmtRate },
  { key: 'total_fail_per_s', label: 'Failures/s', get: (e) => num(e, 'total_fail_per_s', 'total_fail_per_sec'), fmt: fmtRate },
];

function cell(column, entry) {
  const value = column.get(entry);
  if (column.kind === 'text') {
    return column.key === 'name'
      ? `<td class="name" title="${esc(value)}">${esc(value)}</td>`
      : `<td class="type">${esc(value)}</td>`;
  }
  const cls = column.key === 'num_failures' && value > 0 ? 'num fail' : 'num';
  return `<td class="${cls}">${column.fmt(value)}</td>`;
}

function rowHtml(columns, entry, kind, rowIndex) {
  let html = `<tr data-row="${kind}" aria-rowindex="${rowIndex}">`;
  for (const column of columns) html += cell(column, entry);
  return `${html}</tr>`;
}

/** Compares two sort keys; null sorts below every number, text compares by code point. */
function compare(a, b) {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  return a < b ? -1 : 1;
}

/** Above this many rows a windowed table keeps only the rows in view (plus OVERSCAN) in the DOM. */
export const WINDOW_THRESHOLD = 150;
const OVERSCAN = 15;
const DEFAULT_ROW_PX = 33;

/**
 * A stats table bound to a <table> element. `update(entries, total)` re-renders the body with one
 * innerHTML write; clicking a header sorts by that column (again: reverses), and the choice is kept
 * across updates. The Aggregated row is always last.
 *
 * With `windowed` (the live UI) and more than WINDOW_THRESHOLD rows, the table's `.table-wrap`
 * parent becomes a scroll box and only the rows in view are rendered between two spacer rows, so an
 * update costs the same for 1,000 rows as for 50 (laying out 13,000 cells every second does not).
 */
export class StatsTable {
  constructor(table, { sort = null, columns = STATS_COLUMNS, windowed = false } = {}) {
    this.table = table;
    this.columns = columns;
    this.byKey = new Map(columns.map((c) => [c.key, c]));
    this.sort = sort; // {key, dir: 1 | -1} or null for the server's order
    this.entries = [];
    this.total = null;
    this.rows = []; // [entry, kind] in display order
    this.wrap = windowed && table.parentElement && table.parentElement.classList.contains('table-wrap') ? table.parentElement : null;
    this.rowPx = 0;
    // Live: fixed layout with a <colgroup>, so columns keep their widths while the numbers change
    // every second (and rows keep one height, which the window needs). The report lays out by content.
    table.classList.toggle('fixed-layout', windowed);
    table.innerHTML = `<colgroup>${columns.map((c) => `<col class="col-${c.kind === 'text' ? c.key : 'num'}">`).join('')}</colgroup><thead><tr>${columns.map(
      (c) =>
        `<th scope="col" class="${c.kind === 'text' ? 'text' : 'num'}" data-sort="${c.key}"><button type="button">${esc(c.label)}</button></th>`,
    ).join('')}</tr></thead><tbody></tbody>`;
    this.thead = table.tHead;
    this.tbody = table.tBodies[0];
    this.thead.addEventListener('click', (event) => {
      const th = event.target.closest('th[data-sort]');
      if (!th) return;
      const key = th.dataset.sort;
      const column = this.byKey.get(key);
      if (this.sort && this.sort.key === key) this.sort = { key, dir: -this.sort.dir };
      else this.sort = { key, dir: column.kind === 'text' ? 1 : -1 };
      this.render();
    });
    if (this.wrap) {
      let queued = false;
      this.wrap.addEventListener('scroll', () => {
        if (queued) return;
        queued = true;
        requestAnimationFrame(() => {
          queued = false;
          this.renderBody();
        });
      });
    }
    this.renderHeader();
  }

  update(entries, total) {
    this.entries = Array.isArray(entries) ? entries : [];
    this.total = total || null;
    this.render();
  }

  sorted() {
    if (!this.sort) return this.entries;
    const column = this.byKey.get(this.sort.key);
    if (!column) return this.entries;
    const dir = this.sort.dir;
    const keyed = this.entries.map((entry, index) => ({ entry, index, key: column.get(entry) }));
    keyed.sort((a, b) => compare(a.key, b.key) * dir || a.index - b.index);
    return keyed.map((k) => k.entry);
  }

  renderHeader() {
    for (const th of this.thead.rows[0].cells) {
      const active = this.sort && this.sort.key === th.dataset.sort;
      if (active) th.setAttribute('aria-sort', this.sort.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
  }

  render() {
    this.renderHeader();
    this.rows = this.sorted().map((entry) => [entry, 'entry']);
    if (this.total) this.rows.push([{ ...this.total, name: this.total.name || 'Aggregated' }, 'total']);
    this.renderBody();
  }

  renderBody() {
    const rows = this.rows;
    const span = this.columns.length;
    if (rows.length === 0) {
      this.tbody.innerHTML = `<tr data-row="empty"><td colspan="${span}" class="empty">No requests yet</td></tr>`;
      return;
    }
    const windowed = Boolean(this.wrap) && rows.length > WINDOW_THRESHOLD;
    if (this.wrap) this.wrap.classList.toggle('windowed', windowed);
    this.table.setAttribute('aria-rowcount', String(rows.length + 1));
    let first = 0;
    let last = rows.length;
    if (windowed) {
      const rowPx = this.rowPx || DEFAULT_ROW_PX;
      const view = this.wrap.clientHeight || 800;
      first = Math.max(0, Math.floor(this.wrap.scrollTop / rowPx) - OVERSCAN);
      last = Math.min(rows.length, Math.ceil((this.wrap.scrollTop + view) / rowPx) + OVERSCAN);
    }
    const parts = [];
    const spacer = (n) => `<tr data-row="spacer" aria-hidden="true"><td colspan="${span}" style="height:${n * (this.rowPx || DEFAULT_ROW_PX)}px"></td></tr>`;
    if (first > 0) parts.push(spacer(first));
    for (let i = first; i < last; i += 1) parts.push(rowHtml(this.columns, rows[i][0], rows[i][1], i + 2));
    if (last < rows.length) parts.push(spacer(rows.length - last));
    this.tbody.innerHTML = parts.join('');
    if (windowed && !this.rowPx) {
      // Measure the real row height once, then lay the window out again with it.
      const row = this.tbody.querySelector('tr[data-row="entry"]');
      const height = row ? row.getBoundingClientRect().height : 0;
      if (height > 0) {
        this.rowPx = height;
        this.renderBody();
      }
    }
  }
}

/** The response-time percentile table (report): one column per quantile the data carries. */
export function percentileTableHtml(entries, total, id = 'percentile-table') {
  const rows = [...(Array.isArray(entries) ? entries : [])];
  if (total) rows.push({ ...total, name: total.name || 'Aggregated' });
  const source = total || rows[0];
  const quantiles = source && Array.isArray(source.percentiles) ? source.percentiles.map((p) => Number(p[0])) : [];
  if (rows.length === 0 || quantiles.length === 0) return '<p class="empty">No response times recorded.</p>';
  const head = `<tr><th scope="col" class="text">Type</th><th scope="col" class="text">Name</th>${quantiles
    .map((q) => `<th scope="col" class="num">${esc(fmtQuantile(q))}</th>`)
    .join('')}</tr>`;
  const body = rows
    .map((e, i) => {
      const kind = total && i === rows.length - 1 ? 'total' : 'entry';
      const cells = quantiles.map((q) => `<td class="num">${fmtMs(percentile(e.percentiles, q))}</td>`).join('');
      return `<tr data-row="${kind}"><td class="type">${esc(e.method)}</td><td class="name" title="${esc(e.name)}">${esc(e.name)}</td>${cells}</tr>`;
    })
    .join('');
  return `<table id="${esc(id)}" class="data"><thead>${head}</thead><tbody>${body}</tbody></table>`;
}
