// panels.js — owns the HTML of the smaller views shared by the live UI and the report: failures,
// exceptions (user errors), the current task ratio, logs (with the worker that forwarded a line, and
// the choice of source), a master's workers, the load generator (resource guard) panel and its
// actions, the schedule lateness table and the arrival-rate types table. Each function takes server data and returns an
// HTML string in which every server string is escaped.

import { DASH, esc, fmtBytes, fmtClock, fmtDuration, fmtInt, fmtMs, fmtPercent, fmtShare, toNumber } from './format.js';

/**
 * A table from column specs `{label, num?, cell(row) -> html}`; `empty` when there are no rows.
 * `rowAttrs(row)` may return attributes for a row's `<tr>` (already escaped, with a leading space).
 */
export function dataTable(columns, rows, { id = '', empty = 'Nothing yet.', cls = '', rowAttrs = null } = {}) {
  const list = Array.isArray(rows) ? rows : [];
  if (list.length === 0) return `<p class="empty">${esc(empty)}</p>`;
  const head = columns.map((c) => `<th scope="col" class="${c.num ? 'num' : 'text'}">${esc(c.label)}</th>`).join('');
  const body = list
    .map((row) => `<tr${rowAttrs ? rowAttrs(row) : ''}>${columns.map((c) => `<td class="${c.num ? 'num' : c.cls || ''}">${c.cell(row)}</td>`).join('')}</tr>`)
    .join('');
  return `<table${id ? ` id="${esc(id)}"` : ''} class="data ${esc(cls)}"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

/** Renders a value of unknown shape (string, number, object) as escaped text. */
function anyText(value) {
  if (value === null || value === undefined) return DASH;
  if (typeof value === 'object') return esc(JSON.stringify(value));
  return esc(value);
}

export function failuresHtml(errors) {
  return dataTable(
    [
      { label: '# Occurrences', num: true, cell: (e) => fmtInt(e.occurrences) },
      { label: 'Method', cell: (e) => esc(e.method) },
      { label: 'Name', cls: 'name', cell: (e) => esc(e.name) },
      { label: 'Error', cls: 'msg', cell: (e) => esc(e.error) },
    ],
    errors,
    { id: 'failures-table', empty: 'No failures.' },
  );
}

export function exceptionsHtml(userErrors) {
  return dataTable(
    [
      { label: 'Count', num: true, cell: (e) => fmtInt(e.count) },
      { label: 'User type', cell: (e) => esc(e.user_type) },
      // Locust's /exceptions calls it `msg`; the report's user errors `message`.
      { label: 'Message', cls: 'msg', cell: (e) => esc(e.msg ?? e.message) },
      { label: 'Traceback', cls: 'traceback', cell: (e) => (e.traceback ? `<pre>${esc(e.traceback)}</pre>` : DASH) },
    ],
    userErrors,
    { id: 'exceptions-table', empty: 'No exceptions.' },
  );
}

/**
 * GET /tasks: each user type's share by weight and of the users running now (Locust's `per_class`
 * ratio), and its tasks, indented by nesting depth (cicada's `cicada.user_types`).
 */
export function ratioHtml(tasks) {
  const cicada = (tasks && tasks.cicada) || {};
  const types = Array.isArray(cicada.user_types) ? cicada.user_types : [];
  const running = (tasks && tasks.per_class) || {};
  if (types.length === 0) return '<p class="empty">No user types.</p>';
  return types
    .map((type) => {
      const fixed = toNumber(type.fixed_count);
      const share = fixed !== null ? `fixed count ${fmtInt(fixed)}` : `${fmtShare(type.share)} of users`;
      const now = running[type.name] ? toNumber(running[type.name].ratio) : null;
      const nowText = now !== null ? ` · ${fmtShare(now)} of the users running now` : '';
      const rows = (Array.isArray(type.tasks) ? type.tasks : [])
        .map((t) => {
          const depth = Math.max(0, Math.min(20, Math.round(toNumber(t.depth) || 0)));
          return `<tr><td class="task" style="padding-left:${0.6 + depth * 1.4}em">${esc(t.name)}</td><td class="num">${fmtShare(
            t.share,
          )}</td><td class="num">${fmtShare(t.total_share)}</td></tr>`;
        })
        .join('');
      return `<section class="ratio-type card"><h3>${esc(type.name)} <small>${share}${nowText}</small></h3>${
        rows
          ? `<table class="data"><thead><tr><th class="text">Task</th><th class="num">Share in its set</th><th class="num">Share of the user type</th></tr></thead><tbody>${rows}</tbody></table>`
          : '<p class="empty">No tasks.</p>'
      }</section>`;
    })
    .join('');
}

/** The log filter's value for this process's own lines (a worker's is `w:` and its id). */
export const OWN_LINES = 'own';

/** Whether a log line passes the filter: '' (all), OWN_LINES, or `w:` + a worker id. */
export function logLineShown(line, filter) {
  if (!filter) return true;
  const worker = line && typeof line.worker === 'string' ? line.worker : null;
  if (filter === OWN_LINES) return worker === null;
  return filter.startsWith('w:') && worker === filter.slice(2);
}

/**
 * GET /logs, newest first, keeping the lines `filter` shows (see logLineShown). With `sourceColumn`
 * (a cluster master), a Source column says which worker forwarded each line, or "master".
 */
export function logsHtml(logs, { filter = '', sourceColumn = false } = {}) {
  const all = logs && Array.isArray(logs.logs) ? logs.logs : [];
  const lines = all.filter((l) => logLineShown(l, filter)).reverse();
  const columns = [
    { label: 'Time', cell: (l) => esc(fmtClock(l.unix_ms)) },
    { label: 'Level', cell: (l) => `<span class="level level-${esc(String(l.level || '').toLowerCase())}">${esc(l.level)}</span>` },
  ];
  if (sourceColumn) {
    columns.push({
      label: 'Source',
      cls: 'source',
      cell: (l) => (typeof l.worker === 'string' ? esc(l.worker) : '<span class="muted">master</span>'),
    });
  }
  columns.push({ label: 'Message', cls: 'msg', cell: (l) => esc(l.message) });
  return dataTable(columns, lines, {
    id: 'logs-table',
    empty: filter ? 'No log lines from this source among the last 500.' : 'No log lines.',
    rowAttrs: (l) => (typeof l.worker === 'string' ? ` data-worker="${esc(l.worker)}"` : ' data-worker=""'),
  });
}

/** The worker ids that log lines name, in order of first appearance (at most 500: the ring's size). */
export function logWorkers(logs) {
  const seen = new Set();
  for (const line of logs && Array.isArray(logs.logs) ? logs.logs : []) {
    if (line && typeof line.worker === 'string') seen.add(line.worker);
  }
  return [...seen];
}

const ACTION_LABELS = {
  pause_spawning: 'paused spawning',
  shed: 'shed users',
  resume: 'resumed',
  stop_test: 'stopped the test',
  over_limit: 'over a limit',
  back_under_limits: 'back under limits',
  cpu_warning: 'CPU warning',
  emergency: 'emergency stop',
  limits_changed: 'limits changed',
};

const PHASE_TEXT = {
  holding: 'The guard holds spawning back until usage is under the low-water marks.',
  stopped: 'The guard stopped the test.',
  emergency: 'Emergency stop: every user was aborted before memory ran out.',
};

/** What is over now, from the guard's typed status. */
function overText(status) {
  const over = (status && status.over) || [];
  if (!over.length) return '';
  const parts = over.map((b) => `${esc(b.limit)} ${fmtPercent(b.over_by_percent, 0)} over`);
  return ` Over now: ${parts.join(', ')}.`;
}

/** The guard's actions, in order. */
export function actionsHtml(actions) {
  return dataTable(
    [
      { label: 'Run time', num: true, cell: (a) => esc(fmtDuration(a.run_seconds)) },
      { label: 'Action', cell: (a) => `<span class="action action-${esc(a.kind)}">${esc(ACTION_LABELS[a.kind] || a.kind)}</span>` },
      { label: 'Users', num: true, cell: (a) => fmtInt(a.users) },
      { label: 'Users shed', num: true, cell: (a) => fmtInt(a.users_shed) },
      { label: 'Reason', cls: 'msg', cell: (a) => esc(a.reason) },
    ],
    actions,
    { id: 'guard-actions', empty: 'The guard took no action.' },
  );
}

/** A figure with an optional bar: value against a limit. */
function gauge(label, valueText, fraction, limitText, warn = false) {
  const f = toNumber(fraction);
  const bar =
    f === null
      ? ''
      : `<div class="bar${warn || f >= 1 ? ' warn' : ''}"><span style="width:${Math.max(0, Math.min(100, f * 100)).toFixed(1)}%"></span></div>`;
  return `<div class="gauge"><div class="gauge-label">${esc(label)}</div><div class="gauge-value">${valueText}</div>${bar}<div class="gauge-limit">${limitText}</div></div>`;
}

function ratio(value, limit) {
  const v = toNumber(value);
  const l = toNumber(limit);
  return v === null || !l ? null : v / l;
}

function facts(pairs) {
  return `<dl class="facts">${pairs.map(([k, v]) => `<div><dt>${esc(k)}</dt><dd>${v}</dd></div>`).join('')}</dl>`;
}

/** The live generator panel (snapshot.cicada.generator). */
export function generatorHtml(generator) {
  if (!generator) {
    return '<p class="empty">No generator figures: the resource guard is off (<code>--guard off</code>) or has not sampled yet.</p>';
  }
  const g = generator;
  const saturated = g.saturated === true;
  const phase = g.status && PHASE_TEXT[g.status.phase] ? ` ${esc(PHASE_TEXT[g.status.phase])}` : '';
  const status = saturated
    ? `<p class="alert warn">The load generator is saturated now: response times measured in this window are unreliable.${overText(g.status)}${phase}</p>`
    : `<p class="alert ok">The load generator is within its limits.${phase}</p>`;
  const gauges = [
    gauge('CPU', fmtPercent(g.cpu_percent), ratio(g.cpu_percent, g.max_cpu_percent), `limit ${fmtPercent(g.max_cpu_percent, 0)} of ${esc(toNumber(g.cores_available) ?? DASH)} cores`, saturated),
    gauge('Memory (RSS)', esc(fmtBytes(g.rss_bytes)), ratio(g.rss_bytes, g.max_memory_bytes), `limit ${esc(fmtBytes(g.max_memory_bytes))} of ${esc(fmtBytes(g.memory_limit_bytes))}`),
    gauge('Scheduler lag', `${fmtMs(g.lag_ms)} ms`, ratio(g.lag_ms, g.max_lag_ms), `limit ${fmtMs(g.max_lag_ms)} ms`),
  ].join('');
  const stopped = g.stopped_test ? `<p class="alert bad">The guard stopped the test: ${anyText(g.stopped_test)}</p>` : '';
  return `${status}${stopped}<div class="gauges">${gauges}</div>${facts([
    ['Guard mode', esc(g.mode)],
    ['Cores available', esc(toNumber(g.cores_available) ?? DASH)],
    ['Saturated share of the run', fmtShare(g.saturated_share)],
    ['Users held back', fmtInt(g.status ? g.status.users_held_back : 0)],
    ['Limit changes', fmtInt(g.limit_changes)],
    ['Users shed', fmtInt(g.users_shed)],
    ['Spawning paused', esc(fmtDuration(g.spawn_paused_seconds))],
  ])}<h3>Guard actions</h3>${actionsHtml(g.actions)}`;
}

const GUARD_PHASES = { normal: 'normal', holding: 'holding spawning', stopped: 'stopped the test', emergency: 'emergency stop' };

/** A worker's guard: its phase, and the limits over now (warned); a dash when its guard is off. */
function workerGuardHtml(w) {
  const phase = typeof w.guard_phase === 'string' ? w.guard_phase : null;
  const over = Array.isArray(w.guard_over) ? w.guard_over.filter((l) => typeof l === 'string') : [];
  if (phase === null && over.length === 0) return DASH;
  const phaseText = `<span class="guard-phase guard-${esc(phase || 'unknown')}">${esc(GUARD_PHASES[phase] || phase || 'unknown')}</span>`;
  return over.length ? `${phaseText} · <span class="guard-over">over ${over.map(esc).join(', ')}</span>` : phaseText;
}

/** Seconds as "0.8 s ago" / "12 s ago" / "3m 05s ago". */
function agoText(seconds) {
  const n = toNumber(seconds);
  if (n === null) return DASH;
  return n < 10 ? `${n.toFixed(1)} s ago` : `${fmtDuration(Math.round(n))} ago`;
}

/**
 * A master's workers: id, host and pid, state, users, CPU, memory, guard (phase, limits over), last
 * heartbeat, reconnects. A missing worker's row is dimmed and says for how long it has been silent.
 */
export function workersHtml(workers, omitted = 0, cluster = null) {
  if (!workers) return '<p class="empty">This process is not a cluster master.</p>';
  const heldBack = cluster ? toNumber(cluster.users_held_back) || 0 : 0;
  const over = cluster ? toNumber(cluster.workers_over_limits) || 0 : 0;
  const capacity = heldBack || over
    ? `<p id="cluster-capacity" class="${heldBack ? 'alert warn' : 'muted'}">${
        over ? `${fmtInt(over)} worker${over === 1 ? ' is' : 's are'} over their limits: they get no new users, and the users they shed run on workers with room.` : ''
      }${
        heldBack ? ` <strong>${fmtInt(heldBack)} users are held back: no worker has room for them.</strong> Spawning them waits until a worker recovers; these seconds are marked as saturated.` : ''
      }</p>`
    : '';
  const missing = workers.filter((w) => w.state === 'missing').length;
  const users = workers.reduce((sum, w) => sum + (w.state === 'missing' ? 0 : toNumber(w.user_count) || 0), 0);
  const summary = workers.length
    ? `<p id="workers-summary" class="muted">${fmtInt(workers.length)} worker${workers.length === 1 ? '' : 's'}${
        missing ? `, <strong class="missing-count">${fmtInt(missing)} missing</strong>` : ''
      }; ${fmtInt(users)} users on the connected ones.${
        toNumber(omitted) ? ` ${fmtInt(omitted)} more workers are not listed (the table holds at most 1,000).` : ''
      }</p>`
    : '';
  const table = dataTable(
    [
      { label: 'Worker', cls: 'worker-id', cell: (w) => esc(w.id) },
      { label: 'Host', cell: (w) => `${esc(w.host)}${toNumber(w.pid) !== null ? ` <span class="muted">pid ${esc(w.pid)}</span>` : ''}` },
      {
        label: 'State',
        cls: 'worker-state',
        cell: (w) =>
          w.state === 'missing'
            ? `<span class="state-missing">missing</span> <span class="muted">for ${esc(fmtDuration(Math.round(toNumber(w.last_heard_seconds) || 0)))}</span>`
            : esc(w.state),
      },
      { label: 'Users', num: true, cell: (w) => fmtInt(w.user_count) },
      { label: 'CPU', num: true, cell: (w) => fmtPercent(w.cpu_usage) },
      // 0 until the worker's guard has sampled (or with its guard off): not measured, not empty.
      { label: 'Memory', num: true, cell: (w) => (toNumber(w.memory_usage) ? esc(fmtBytes(w.memory_usage)) : DASH) },
      { label: 'Guard', cls: 'worker-guard', cell: workerGuardHtml },
      { label: 'Last heartbeat', num: true, cell: (w) => esc(agoText(w.last_heard_seconds)) },
      { label: 'Reconnects', num: true, cell: (w) => fmtInt(w.reconnects) },
    ],
    workers,
    {
      id: 'workers-table',
      empty: 'No worker is connected yet.',
      rowAttrs: (w) => ` data-worker="${esc(w.id)}" data-state="${esc(w.state)}"${w.state === 'missing' ? ' class="missing"' : ''}`,
    },
  );
  return summary + capacity + table;
}

/** The report's generator section (the guard's full report). */
export function guardReportHtml(report) {
  if (!report) return '<p class="empty">The resource guard was off for this run.</p>';
  const limits = report.limits || {};
  const share = toNumber(report.saturated_share) || 0;
  const verdict =
    share > 0
      ? `<p class="alert warn">The load generator was saturated during ${fmtShare(share)} of the run: response times measured in those windows (shaded in the charts) are unreliable.</p>`
      : '<p class="alert ok">The load generator stayed within its limits for the whole run.</p>';
  const stopped = report.stopped_test ? `<p class="alert bad">The guard stopped the test: ${anyText(report.stopped_test)}</p>` : '';
  return `${verdict}${stopped}${facts([
    ['Guard mode', esc(report.mode)],
    ['Samples', `${fmtInt(report.samples)} (${fmtInt(report.saturated_samples)} saturated)`],
    ['Saturated share', fmtShare(share)],
    ['Peak CPU', `${fmtPercent(report.peak_cpu_percent)} (limit ${fmtPercent(limits.max_cpu_percent, 0)})`],
    ['Peak memory (RSS)', `${esc(fmtBytes(report.peak_rss_bytes))} (limit ${esc(fmtBytes(limits.max_memory_bytes))})`],
    ['Peak scheduler lag', `${fmtMs(report.peak_lag_ms)} ms (limit ${fmtMs(limits.max_lag_ms)} ms)`],
    ['Cores available', esc(toNumber(limits.cores_available) ?? DASH)],
    ['Memory limit', esc(fmtBytes(limits.memory_limit_bytes))],
    ['cgroup', anyText(limits.cgroup)],
    ['Limit changes', fmtInt(report.limit_changes)],
    ['Guard CPU', `${fmtPercent(report.guard_cpu_percent, 2)} of a core`],
    ['Users shed', fmtInt(report.users_shed)],
    ['Spawning paused', esc(fmtDuration(report.spawn_paused_seconds))],
  ])}<h3>Guard actions</h3>${actionsHtml(report.actions)}`;
}

/** Paced users: how late task starts were against their schedule (coordinated omission). */
export function scheduleHtml(schedule) {
  return dataTable(
    [
      { label: 'User type', cell: (s) => esc(s.user_type) },
      { label: 'Period (ms)', num: true, cell: (s) => fmtMs(s.period_ms) },
      { label: 'Task starts', num: true, cell: (s) => fmtInt(s.task_starts) },
      { label: 'Late starts', num: true, cell: (s) => fmtInt(s.late_starts) },
      { label: 'p50 late (ms)', num: true, cell: (s) => fmtMs(s.p50_late_ms) },
      { label: 'p99 late (ms)', num: true, cell: (s) => fmtMs(s.p99_late_ms) },
      { label: 'Max late (ms)', num: true, cell: (s) => fmtMs(s.max_late_ms) },
    ],
    schedule,
    { id: 'schedule-table', empty: 'No paced users in this run.' },
  );
}

/** Arrival-rate user types: iterations due, started, completed and dropped (with why), per type. */
export function arrivalHtml(arrival) {
  return dataTable(
    [
      { label: 'User type', cell: (a) => esc(a.user_type) },
      { label: 'Rate (/s)', num: true, cell: (a) => esc(String(a.rate_per_s)) },
      { label: 'Due', num: true, cell: (a) => fmtInt(a.due) },
      { label: 'Started', num: true, cell: (a) => fmtInt(a.started) },
      { label: 'Completed', num: true, cell: (a) => fmtInt(a.completed) },
      { label: 'Dropped', num: true, cell: (a) => fmtInt(a.dropped) },
      { label: 'Bound full', num: true, cell: (a) => fmtInt(a.dropped_max_concurrent) },
      { label: 'Guard held', num: true, cell: (a) => fmtInt(a.dropped_guard) },
      { label: 'Late', num: true, cell: (a) => fmtInt(a.dropped_late) },
      { label: 'Max concurrent', num: true, cell: (a) => fmtInt(a.max_concurrent) },
      { label: 'Peak concurrent', num: true, cell: (a) => fmtInt(a.peak_concurrent) },
    ],
    arrival,
    { id: 'arrival-table', empty: 'No arrival-rate user types in this run.' },
  );
}
