// report.js — owns report mode: reading the run's JSON that the server put into
// <script id="cicada-data" type="application/json"> of the self-contained report page, and rendering
// the static report from it (run metadata, stats and percentile tables, charts with the saturated
// windows shaded, failures, exceptions, the resource guard's summary and actions, schedule lateness, arrival-rate
// iterations, and
// the checks (--check) with their measured values).
// The report makes no request: everything it shows is in the page.

import { Charts, SATURATED_CAPTION } from './charts.js';
import { esc, fmtDuration, fmtInt, fmtPercent, fmtRate, fmtShare, fmtTime, toNumber } from './format.js';
import { arrivalHtml, exceptionsHtml, failuresHtml, guardReportHtml, scheduleHtml } from './panels.js';
import { REPORT_COLUMNS, StatsTable, percentileTableHtml } from './table.js';

export const DATA_ELEMENT_ID = 'cicada-data';

/**
 * What the page is: `{mode: "live"}` without a data element, `{mode: "template"}` while the element
 * still holds the server's placeholder (anything that is not a JSON object), `{mode: "report", data}`
 * with the run's data, or `{mode: "invalid", error}` when the JSON does not parse.
 */
export function readReportData(doc) {
  const node = doc.getElementById(DATA_ELEMENT_ID);
  if (!node) return { mode: 'live' };
  const text = node.textContent.trim();
  if (!text.startsWith('{')) return { mode: 'template' };
  try {
    const data = JSON.parse(text);
    return data && typeof data === 'object' ? { mode: 'report', data } : { mode: 'invalid', error: 'not an object' };
  } catch (err) {
    return { mode: 'invalid', error: err.message };
  }
}

function section(id, title, body) {
  return `<section id="${id}" class="report-section"><h2>${esc(title)}</h2>${body}</section>`;
}

function summaryHtml(data) {
  const total = (data.stats && data.stats.total) || {};
  const requests = toNumber(total.num_requests) || 0;
  const failures = toNumber(total.num_failures) || 0;
  const rows = [
    ['Host', esc(data.host || '–')],
    ['Started', esc(fmtTime(data.started_unix_ms))],
    ['Ended', esc(fmtTime(data.ended_unix_ms))],
    ['Duration', esc(fmtDuration(data.duration_seconds))],
    ['Requests', fmtInt(requests)],
    ['Failures', `${fmtInt(failures)} (${fmtPercent(requests > 0 ? (failures / requests) * 100 : 0)})`],
    ['Average RPS', fmtRate(total.total_rps)],
  ];
  const flags = data.flags ? `<p class="flags"><span class="muted">Command line:</span> <code>${esc(data.flags)}</code></p>` : '';
  return `<dl class="facts">${rows.map(([k, v]) => `<div><dt>${esc(k)}</dt><dd>${v}</dd></div>`).join('')}</dl>${flags}`;
}

function saturationBanner(generator) {
  const share = generator ? toNumber(generator.saturated_share) || 0 : 0;
  if (share <= 0) return '';
  return `<p class="alert warn">The load generator was saturated during ${fmtShare(share)} of this run (${esc(
    SATURATED_CAPTION,
  )}). See <a href="#generator">Load generator</a>.</p>`;
}

/** The checks table: each check, pass or fail, measured against expected (in the check's unit). */
function checksHtml(checks) {
  const results = checks && Array.isArray(checks.results) ? checks.results : [];
  const value = (number, unit) => {
    const n = toNumber(number);
    if (n === null) return 'not measured';
    return unit === 'ratio' ? n.toFixed(4) : `${n.toFixed(1)} ${unit}`;
  };
  const rows = results
    .map(
      (c) => `<tr class="${c.passed ? '' : 'fail'}"><td><code>${esc(c.expr)}</code></td>` +
        `<td>${c.passed ? 'pass' : '<strong>FAIL</strong>'}</td><td>${esc(value(c.measured, c.unit))}</td>` +
        `<td>${esc(c.op)} ${esc(value(c.threshold, c.unit))}</td><td>${esc(c.note || '')}</td></tr>`,
    )
    .join('');
  const note = checks && checks.note ? `<p class="alert warn">${esc(checks.note)}</p>` : '';
  return `${note}<div class="table-wrap"><table class="data checks"><thead><tr><th>Check</th><th>Result</th>` +
    `<th>Measured</th><th>Expected</th><th>Note</th></tr></thead><tbody>${rows}</tbody></table></div>`;
}

const NAV = [
  ['checks', 'Checks'],
  ['stats', 'Statistics'],
  ['percentiles', 'Percentiles'],
  ['charts-section', 'Charts'],
  ['failures', 'Failures'],
  ['exceptions', 'Exceptions'],
  ['generator', 'Load generator'],
  ['schedule', 'Schedule'],
  ['arrival', 'Arrival rates'],
];

/** Renders the report for `data` into `root` (the page body). */
export function renderReport(root, data) {
  const stats = data.stats || {};
  const schedule = Array.isArray(data.schedule) ? data.schedule : [];
  const arrival = Array.isArray(data.arrival) ? data.arrival : [];
  const hasChecks = Boolean(data.checks && Array.isArray(data.checks.results) && data.checks.results.length);
  const title = data.title || 'cicada load test report';
  root.ownerDocument.title = title;
  root.classList.add('report');
  root.innerHTML = `
<header class="report-header">
  <h1>${esc(title)}</h1>
  <p class="muted">Load test report by cicada</p>
  <nav class="report-nav">${NAV.filter(([id]) => (id !== 'schedule' || schedule.length) && (id !== 'arrival' || arrival.length) && (id !== 'checks' || hasChecks))
    .map(([id, label]) => `<a href="#${id}">${esc(label)}</a>`)
    .join('')}</nav>
</header>
<main>
  ${saturationBanner(data.generator)}
  <section id="summary" class="report-section">${summaryHtml(data)}</section>
  ${hasChecks ? section('checks', 'Checks', checksHtml(data.checks)) : ''}
  ${section('stats', 'Request statistics', '<div class="table-wrap"><table id="stats-table" class="data stats"></table></div>')}
  ${section('percentiles', 'Response time percentiles (ms)', `<div class="table-wrap">${percentileTableHtml(stats.entries, stats.total)}</div>`)}
  ${section('charts-section', 'Charts', '<div id="charts"></div>')}
  ${section('failures', 'Failures', failuresHtml(stats.failures))}
  ${section('exceptions', 'Exceptions', exceptionsHtml(stats.user_errors))}
  ${section('generator', 'Load generator', guardReportHtml(data.generator))}
  ${schedule.length ? section('schedule', 'Schedule lateness of paced users', scheduleHtml(schedule)) : ''}
  ${arrival.length ? section('arrival', 'Arrival-rate user types: iterations due, started and dropped', arrivalHtml(arrival)) : ''}
</main>
<footer class="muted">Generated ${esc(fmtTime(data.ended_unix_ms))} by cicada.</footer>`;
  new StatsTable(root.querySelector('#stats-table'), { columns: REPORT_COLUMNS }).update(stats.entries, stats.total);
  new Charts(root.querySelector('#charts'), { height: 220, arrival: arrival.length > 0 }).setPoints(data.history);
}

/** What the bare template or a broken report shows instead. */
export function renderReportProblem(root, message) {
  root.classList.add('report');
  root.innerHTML = `<main><p class="alert bad">${esc(message)}</p></main>`;
}
