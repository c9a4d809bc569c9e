// mock-server.mjs — owns a stand-in for cicada's web server, for developing and testing the UI without
// the Rust side. It implements the whole HTTP contract the UI is built against (and so documents it)
// with fake but evolving data: a simulated runner (ready -> spawning -> running -> stopping -> stopped),
// request stats growing with the users, a saturated window of the load generator, logs, CSV downloads
// and the HTML report (dist/report.html with the placeholder filled, as the server does).
//
//   npm run mock                 PORT=8089 npm run mock            MOCK_ROWS=1000 npm run mock
//
// PORT (default 0: any free port) is printed as "mock: http://127.0.0.1:PORT". MOCK_ROWS adds that
// many extra request names (to try the stats table with 1,000 rows). MOCK_SSE=0 answers /events with
// 404 (to try the polling fallback). MOCK_WORKERS=N makes it a cluster master with N fake workers (the
// Workers tab; the last one goes missing 8 s into a run, the first holds spawning while the generator
// is saturated) whose log lines carry their ids. Listens on 127.0.0.1 only.

import { readFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { QUANTILES, aggregateCounters, fillReportTemplate, makeEntry, rng } from './fake-data.mjs';

const DIST = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const MAX_ROWS = 1000;
const HISTORY_EVERY_S = 2;
const SATURATED_FROM_S = 6; // the fake generator is saturated in [6 s, 10 s) of each run
const SATURATED_UNTIL_S = 10;
const USER_TYPES = ['Visitor', 'Shopper'];

const BASE_NAMES = [
  { method: 'GET', name: '/', weight: 4, typicalMs: 1.6, size: 1532 },
  { method: 'GET', name: '/items/[id]', weight: 8, typicalMs: 2.9, size: 412 },
  { method: 'GET', name: '/items', weight: 3, typicalMs: 5.8, size: 8120 },
  { method: 'POST', name: '/cart', weight: 2, typicalMs: 7.5, size: 128 },
  { method: 'GET', name: '/fail', weight: 1, typicalMs: 0.8, size: 21, failRate: 1 },
  // Markup in a name: the UI must show it as text.
  { method: 'GET', name: '/search?q=<b>bold</b>&x="1"', weight: 1, typicalMs: 3.3, size: 300 },
];

/** Seconds from Locust-style run times: "90", "30s", "5m", "1h30m". null when empty, NaN when bad. */
export function parseRunTime(text) {
  const s = String(text ?? '').trim();
  if (!s) return null;
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s);
  const m = /^(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?$/.exec(s);
  if (!m || !(m[1] || m[2] || m[3])) return NaN;
  return Number(m[1] || 0) * 3600 + Number(m[2] || 0) * 60 + Number(m[3] || 0);
}

function csvLine(values) {
  return values
    .map((v) => {
      const s = v === null || v === undefined ? '' : String(v);
      return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
    })
    .join(',');
}

const QUANTILE_LABELS = ['50%', '66%', '75%', '80%', '90%', '95%', '98%', '99%', '99.9%', '99.99%', '100%'];

/** The simulated runner and its statistics. */
class Simulation {
  constructor({ extraRows = 0, seed = 7, workers = 0 } = {}) {
    this.workerIds = Array.from({ length: Math.max(0, Math.min(1000, workers)) }, (_, i) => `mockhost_${4100 + i}_${(0x1f00a + i * 7919).toString(16).padStart(8, '0')}`);
    this.random = rng(seed);
    this.defaultHost = 'http://127.0.0.1:8089';
    this.extraRows = extraRows;
    this.state = 'ready';
    this.users = 0;
    this.target = 0;
    this.spawnRate = 1;
    this.host = this.defaultHost;
    this.runLimit = null;
    this.runSeconds = 0;
    this.userTypes = [...USER_TYPES];
    this.logs = [];
    this.actions = [];
    this.resetStats();
    this.log('INFO', 'Starting web interface (mock)');
  }

  log(level, message, worker = null) {
    this.logs.push({ unix_ms: Date.now(), level, message, worker });
    if (this.logs.length > 500) this.logs.splice(0, this.logs.length - 500);
  }

  resetStats() {
    const names = [...BASE_NAMES];
    for (let i = 0; i < this.extraRows; i += 1) {
      names.push({ method: 'GET', name: `/page/${String(i).padStart(4, '0')}`, weight: 0.05, typicalMs: 2 + (i % 17), size: 100 + i });
    }
    this.counters = names.map((n) => ({
      ...n,
      count: 0,
      failures: 0,
      sumMs: 0,
      minMs: Infinity,
      maxMs: 0,
      sizeSum: 0,
      recent: [], // requests of the last seconds, for current_rps
      recentFails: [],
    }));
    this.statsSeconds = 0;
    this.history = [];
    this.userErrors = [];
  }

  active() {
    return this.state === 'spawning' || this.state === 'running' || this.state === 'stopping';
  }

  saturated() {
    return this.active() && this.runSeconds >= SATURATED_FROM_S && this.runSeconds < SATURATED_UNTIL_S;
  }

  swarm(fields) {
    const users = Number(fields.get('user_count'));
    const rate = Number(fields.get('spawn_rate'));
    if (!Number.isInteger(users) || users < 0) return { success: false, message: 'user_count must be a whole number of at least 0' };
    if (users > 10000000) return { success: false, message: `user_count: ${users} users is more than cicada runs from one process (at most 10000000)` };
    if (!(rate > 0)) return { success: false, message: 'spawn_rate must be more than 0' };
    if (rate > 1000000) return { success: false, message: `spawn_rate: ${rate} users per second is more than cicada starts (at most 1000000)` };
    const runTime = parseRunTime(fields.get('run_time'));
    if (Number.isNaN(runTime)) return { success: false, message: `run_time: cannot read "${fields.get('run_time')}" (use 30s, 5m, 1h30m)` };
    const classes = fields.getAll('user_classes');
    const unknown = classes.filter((c) => !USER_TYPES.includes(c));
    if (unknown.length) return { success: false, message: `unknown user types: ${unknown.join(', ')}` };
    const host = (fields.get('host') || '').trim();
    if (host) this.host = host;
    if (classes.length) this.userTypes = classes;
    this.target = users;
    this.spawnRate = rate;
    if (runTime !== null) this.runLimit = this.runSeconds + runTime;
    if (this.state === 'ready' || this.state === 'stopped') {
      this.resetStats();
      this.actions = [];
      this.runSeconds = 0;
      this.runLimit = runTime;
      this.state = 'spawning';
      this.log('INFO', `Ramping to ${users} users at a rate of ${rate} per second`);
      return { success: true, message: 'Swarming started', host: this.host };
    }
    this.state = 'spawning';
    this.log('INFO', `Changing to ${users} users at a rate of ${rate} per second`);
    return { success: true, message: `Changing the user count to ${users}`, host: this.host };
  }

  stop() {
    if (!this.active()) return { success: true, message: 'No test is running' };
    this.state = 'stopping';
    this.log('INFO', 'Stopping the test');
    return { success: true, message: 'Test stopped' };
  }

  /** One second of simulated time. */
  tick() {
    if (this.state === 'stopping') {
      this.users = 0;
      this.state = 'stopped';
      this.log('INFO', 'All users stopped');
    }
    if (this.state === 'spawning') {
      const step = Math.max(1, Math.round(this.spawnRate));
      if (this.saturated()) {
        // the guard pauses spawning while saturated
      } else if (this.users < this.target) this.users = Math.min(this.target, this.users + step);
      else if (this.users > this.target) this.users = Math.max(this.target, this.users - step);
      if (this.users === this.target) {
        this.state = 'running';
        this.log('INFO', `All users spawned: ${this.users} users`);
      }
    }
    if (!this.active()) {
      for (const c of this.counters) {
        c.recent = [];
        c.recentFails = [];
      }
      return;
    }
    this.runSeconds += 1;
    this.statsSeconds += 1;
    if (this.workerIds.length && this.runSeconds === 2) {
      for (const id of this.workerIds) this.log('INFO', 'worker: attached to master mock (mock)', id);
    }
    if (this.workerIds.length && this.runSeconds === 5) this.log('ERROR', 'user error in view_item: <b>no item</b> (mock)', this.workerIds[0]);
    if (this.runSeconds === SATURATED_FROM_S) this.guardAction('pause_spawning', 'CPU 97% over the limit of 90% (mock)');
    if (this.runSeconds === SATURATED_UNTIL_S) this.guardAction('resume', 'CPU back under the limit (mock)');
    const weights = this.counters.reduce((s, c) => s + c.weight, 0);
    for (const c of this.counters) {
      const expected = (this.users * 3 * c.weight) / weights;
      const n = Math.floor(expected) + (this.random() < expected % 1 ? 1 : 0);
      const slow = this.saturated() ? 5 : 1;
      let fails = 0;
      for (let i = 0; i < n; i += 1) {
        const ms = c.typicalMs * slow * (0.4 + this.random() * 1.4 + (this.random() < 0.02 ? 6 : 0));
        c.sumMs += ms;
        c.minMs = Math.min(c.minMs, ms);
        c.maxMs = Math.max(c.maxMs, ms);
        c.sizeSum += c.size;
        if (this.random() < (c.failRate ?? 0)) fails += 1;
      }
      c.count += n;
      c.failures += fails;
      c.recent.push(n);
      c.recentFails.push(fails);
      if (c.recent.length > 5) c.recent.shift();
      if (c.recentFails.length > 5) c.recentFails.shift();
      c.typicalNow = c.typicalMs * slow;
    }
    if (this.runSeconds === 5) {
      this.userErrors.push({ count: 1, message: 'panic: boom <i>not markup</i>', traceback: 'task checkout at examples/mock.rs:3:5\nuser Shopper', user_type: 'Shopper' });
      this.log('ERROR', 'Shopper: panic: boom <i>not markup</i>');
    } else if (this.userErrors.length && this.runSeconds % 4 === 0) {
      this.userErrors[0].count += 1;
    }
    if (this.runLimit !== null && this.runSeconds >= this.runLimit) {
      this.log('INFO', 'Run time limit reached, stopping');
      this.state = 'stopping';
    }
    if (this.runSeconds % HISTORY_EVERY_S === 0) this.recordHistory();
  }

  guardAction(kind, reason) {
    this.actions.push({ unix_ms: Date.now(), run_seconds: this.runSeconds, kind, users: this.users, users_shed: 0, reason });
    this.log('WARNING', `guard: ${kind}: ${reason}`);
  }

  counterView(c) {
    const sum = (a) => a.reduce((s, v) => s + v, 0);
    return {
      ...c,
      minMs: c.count ? c.minMs : 0,
      typicalMs: c.count ? (c.sumMs / c.count) * 0.85 : c.typicalMs,
      currentTypicalMs: c.typicalNow,
      seconds: this.statsSeconds,
      currentRps: c.recent.length ? sum(c.recent) / c.recent.length : 0,
      currentFailPerS: c.recentFails.length ? sum(c.recentFails) / c.recentFails.length : 0,
    };
  }

  entries() {
    return this.counters.filter((c) => c.count > 0).map((c) => makeEntry(this.counterView(c)));
  }

  total() {
    return makeEntry(aggregateCounters(this.counters.map((c) => this.counterView(c)), this.statsSeconds));
  }

  errors() {
    return this.counters
      .filter((c) => c.failures > 0)
      .map((c) => ({ method: c.method, name: c.name, error: 'HTTP 500 Internal Server Error', occurrences: c.failures }));
  }

  generator() {
    const saturated = this.saturated();
    const cpu = saturated ? 97 + this.random() * 2 : Math.min(85, 6 + this.users * 6 + this.random() * 3);
    return {
      cpu_percent: Math.round(cpu * 10) / 10,
      rss_bytes: 31457280 + this.users * 2097152,
      lag_ms: saturated ? 120 : Math.round((1 + this.random() * 3) * 10) / 10,
      cores_available: 2.0,
      memory_limit_bytes: 25769803776,
      max_cpu_percent: 90,
      max_memory_bytes: 21904333210,
      max_lag_ms: 100,
      mode: 'protect',
      saturated,
      saturated_share: this.runSeconds ? Math.min(this.runSeconds, SATURATED_UNTIL_S) > SATURATED_FROM_S ? (Math.min(this.runSeconds, SATURATED_UNTIL_S) - SATURATED_FROM_S) / this.runSeconds : 0 : 0,
      users_shed: 0,
      spawn_paused_seconds: Math.max(0, Math.min(this.runSeconds, SATURATED_UNTIL_S) - SATURATED_FROM_S),
      stopped_test: null,
      actions: this.actions,
    };
  }

  recordHistory() {
    const total = this.total();
    const pick = (q) => (total.current_percentiles.find((p) => p[0] === q) || [q, null])[1];
    const g = this.generator();
    this.history.push({
      unix_ms: Date.now(),
      user_count: this.users,
      rps: total.current_rps,
      fail_per_s: total.current_fail_per_s,
      p50_ms: pick(0.5),
      p95_ms: pick(0.95),
      avg_ms: total.avg_ms,
      total_requests: total.num_requests,
      total_failures: total.num_failures,
      generator: { saturated: g.saturated, cpu_percent: g.cpu_percent, rss_bytes: g.rss_bytes, lag_ms: g.lag_ms, users_held_back: g.saturated ? this.target - this.users : 0 },
    });
    if (this.history.length > 20000) this.history.shift();
  }

  /** GET /stats/history: at most maxPoints, downsampled by keeping every k-th point (saturated if any was). */
  historyPoints(maxPoints) {
    const max = Math.max(1, Math.min(Number(maxPoints) || 2000, 10000));
    if (this.history.length <= max) return this.history;
    const k = Math.ceil(this.history.length / max);
    const out = [];
    for (let i = 0; i < this.history.length; i += k) {
      const bucket = this.history.slice(i, i + k);
      const last = bucket[bucket.length - 1];
      out.push({ ...last, generator: { ...last.generator, saturated: bucket.some((p) => p.generator.saturated) } });
    }
    return out;
  }

  /** GET /stats/requests, in the server's shape: Locust's keys, cicada's own under `cicada`. */
  snapshot() {
    const entries = this.entries();
    const total = this.total();
    const whole = (ms) => (ms === null || ms === undefined ? 0 : Math.round(ms));
    const pick = (pairs, q) => (pairs.find((p) => p[0] === q) || [q, null])[1];
    const locust = (e, aggregated) => ({
      method: aggregated ? null : e.method,
      name: e.name,
      safe_name: e.name.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;'),
      num_requests: e.num_requests,
      num_failures: e.num_failures,
      avg_response_time: e.avg_ms ?? 0,
      min_response_time: whole(e.min_ms),
      max_response_time: whole(e.max_ms),
      current_rps: e.current_rps,
      current_fail_per_sec: e.current_fail_per_s,
      median_response_time: whole(e.median_ms),
      ninetieth_response_time: whole(pick(e.percentiles, 0.9)),
      ninety_ninth_response_time: whole(pick(e.percentiles, 0.99)),
      avg_content_length: e.avg_content_length,
      total_rps: e.total_rps,
      total_fail_per_sec: e.total_fail_per_s,
      'response_time_percentile_0.95': whole(pick(e.percentiles, 0.95)),
      'response_time_percentile_0.99': whole(pick(e.percentiles, 0.99)),
      min_ms: e.min_ms ?? 0,
      max_ms: e.max_ms ?? 0,
      median_ms: e.median_ms ?? 0,
      percentiles: e.num_requests ? e.percentiles : [],
    });
    const current = (q) => {
      const ms = pick(total.current_percentiles, q);
      return ms === null ? null : Math.round(ms);
    };
    const errors = this.errors();
    return {
      state: this.state,
      user_count: this.users,
      total_rps: total.total_rps,
      total_fail_per_sec: total.total_fail_per_s,
      fail_ratio: total.num_requests ? total.num_failures / total.num_requests : 0,
      current_rps: total.current_rps,
      current_fail_per_sec: total.current_fail_per_s,
      current_response_time_percentiles: { 'response_time_percentile_0.5': current(0.5), 'response_time_percentile_0.95': current(0.95) },
      current_response_time_percentile_1: current(0.5),
      current_response_time_percentile_2: current(0.95),
      stats: [...entries.slice(0, MAX_ROWS).map((e) => locust(e, false)), locust(total, true)],
      errors: errors.slice(0, 100),
      cicada: {
        version: 1,
        target_user_count: this.target,
        spawn_rate: this.spawnRate,
        host: this.host,
        stats_started_unix_ms: Date.now() - this.statsSeconds * 1000,
        stats_seconds: this.statsSeconds,
        user_counts: this.snapshotUserCounts(),
        guard_cap: null,
        rows_omitted: Math.max(0, entries.length - MAX_ROWS),
        errors_omitted: Math.max(0, errors.length - 100),
        exceptions: this.exceptions(),
        exceptions_omitted: 0,
        generator: this.state === 'ready' ? null : this.generator(),
        workers_omitted: 0,
      },
      ...(this.workerIds.length ? { workers: this.workers() } : {}),
    };
  }

  /** A master's `workers` (Locust's keys and cicada's): the users split evenly; the last goes missing 8 s into a run. */
  workers() {
    const n = this.workerIds.length;
    const missingFrom = 8;
    const gone = n > 1 && this.active() && this.runSeconds >= missingFrom;
    const alive = gone ? n - 1 : n;
    return this.workerIds.map((id, i) => {
      const missing = gone && i === n - 1;
      const users = missing ? 0 : Math.floor(this.users / alive) + (i < this.users % alive ? 1 : 0);
      const holding = i === 0 && this.saturated();
      const guard = { phase: holding ? 'holding' : 'normal', over: holding ? [{ limit: 'cpu', value: 97, limit_value: 90, over_by_percent: 7.8 }] : [], users_held_back: 0 };
      return {
        id,
        state: missing ? 'missing' : this.state === 'stopping' ? 'stopping' : this.active() ? (users ? 'running' : 'spawning') : 'ready',
        user_count: users,
        cpu_usage: missing ? 0 : 20 + 5 * i + users * 0.5,
        memory_usage: (40 + users) * 1024 * 1024,
        host: 'mockhost',
        pid: 4100 + i,
        cores: 2,
        last_heard_seconds: missing ? this.runSeconds - missingFrom + 3 : 0.4,
        guard,
        guard_phase: guard.phase,
        guard_over: guard.over.map((b) => b.limit),
        reconnects: 0,
      };
    });
  }

  /** GET /exceptions rows (Locust's keys). */
  exceptions() {
    return this.userErrors.map((e) => ({ count: e.count, msg: e.message, traceback: e.traceback, nodes: 'local', user_type: e.user_type }));
  }

  config() {
    return { version: '0.1.0', api_version: 1, user_types: USER_TYPES, host: this.defaultHost, users: 1, spawn_rate: 1.0, run_time: null, flags: '-u 1 -r 1 (mock)', max_users: 10000000, max_spawn_rate: 1000000 };
  }

  /** GET /tasks: Locust's per_class / total trees (by running users) and cicada's weight-based shares. */
  tasks() {
    const userTypes = [
      { name: 'Visitor', share: 0.75, fixed_count: null, tasks: [{ depth: 0, name: 'index', share: 0.25, total_share: 0.25 }, { depth: 0, name: 'view_item', share: 0.75, total_share: 0.75 }] },
      {
        name: 'Shopper',
        share: 0.25,
        fixed_count: null,
        tasks: [
          { depth: 0, name: 'browse', share: 0.5, total_share: 0.5 },
          { depth: 1, name: 'view_item', share: 0.5, total_share: 0.25 },
          { depth: 1, name: 'list <items>', share: 0.5, total_share: 0.25 },
          { depth: 0, name: 'checkout', share: 0.5, total_share: 0.5 },
        ],
      },
    ];
    const counts = this.snapshotUserCounts();
    const all = Object.values(counts).reduce((a, b) => a + b, 0) || 1;
    const tree = (rows, ratio) => {
      const out = {};
      for (let i = 0; i < rows.length; ) {
        let end = i + 1;
        while (end < rows.length && rows[end].depth > rows[i].depth) end += 1;
        const children = rows.slice(i + 1, end);
        out[rows[i].name] = { ratio: ratio(rows[i]), ...(children.length ? { tasks: tree(children, ratio) } : {}) };
        i = end;
      }
      return out;
    };
    const perClass = {};
    const total = {};
    for (const t of userTypes) {
      const ratio = (counts[t.name] || 0) / all;
      perClass[t.name] = { ratio, tasks: tree(t.tasks, (r) => r.share) };
      total[t.name] = { ratio, tasks: tree(t.tasks, (r) => r.total_share * ratio) };
    }
    return { per_class: perClass, total, cicada: { version: 1, user_types: userTypes } };
  }

  snapshotUserCounts() {
    return Object.fromEntries(this.userTypes.map((t, i) => [t, Math.floor(this.users / this.userTypes.length) + (i < this.users % this.userTypes.length ? 1 : 0)]));
  }

  requestsCsv() {
    const rows = [['Type', 'Name', 'Request Count', 'Failure Count', 'Median Response Time', 'Average Response Time', 'Min Response Time', 'Max Response Time', 'Average Content Size', 'Requests/s', 'Failures/s', ...QUANTILE_LABELS]];
    for (const e of [...this.entries(), this.total()]) {
      rows.push([e.method, e.name, e.num_requests, e.num_failures, e.median_ms ?? 0, e.avg_ms ?? 0, e.min_ms ?? 0, e.max_ms ?? 0, e.avg_content_length, e.total_rps, e.total_fail_per_s, ...QUANTILES.map((q) => (e.percentiles.find((p) => p[0] === q) || [])[1] ?? 'N/A')]);
    }
    return rows.map(csvLine).join('\n') + '\n';
  }

  failuresCsv() {
    return [['Method', 'Name', 'Error', 'Occurrences'], ...this.errors().map((e) => [e.method, e.name, e.error, e.occurrences])].map(csvLine).join('\n') + '\n';
  }

  exceptionsCsv() {
    return [['Count', 'Message', 'Traceback', 'Nodes'], ...this.userErrors.map((e) => [e.count, e.message, e.traceback, 'local'])].map(csvLine).join('\n') + '\n';
  }

  historyCsv() {
    const head = ['Timestamp', 'User Count', 'Type', 'Name', 'Requests/s', 'Failures/s', ...QUANTILE_LABELS, 'Total Request Count', 'Total Failure Count', 'Generator Saturated', 'Generator CPU %'];
    const rows = this.history.map((p) => [Math.floor(p.unix_ms / 1000), p.user_count, '', 'Aggregated', p.rps, p.fail_per_s, p.p50_ms ?? 'N/A', ...Array(QUANTILE_LABELS.length - 1).fill('N/A'), p.total_requests, p.total_failures, p.generator.saturated ? 1 : 0, p.generator.cpu_percent]);
    return [head, ...rows].map(csvLine).join('\n') + '\n';
  }

  report() {
    const now = Date.now();
    const g = this.generator();
    return {
      title: `cicada load test report (mock) against ${this.host}`,
      host: this.host,
      started_unix_ms: now - this.runSeconds * 1000,
      ended_unix_ms: now,
      duration_seconds: this.runSeconds,
      flags: `-u ${this.target} -r ${this.spawnRate} (mock)`,
      stats: { entries: this.entries(), total: this.total(), failures: this.errors(), user_errors: this.userErrors },
      history: this.history,
      generator: {
        mode: 'protect',
        limits: { cores_available: 2, memory_limit_bytes: g.memory_limit_bytes, max_cpu_percent: 90, max_memory_bytes: g.max_memory_bytes, max_lag_ms: 100, cgroup: 'v2' },
        samples: this.runSeconds,
        saturated_samples: Math.round(g.saturated_share * this.runSeconds),
        saturated_share: g.saturated_share,
        peak_cpu_percent: 98.5,
        peak_rss_bytes: g.rss_bytes,
        peak_lag_ms: 120,
        users_shed: 0,
        spawn_paused_seconds: g.spawn_paused_seconds,
        stopped_test: null,
        actions: this.actions,
      },
      schedule: [],
    };
  }
}

function readDist(file) {
  const path = join(DIST, file);
  if (!existsSync(path)) return null;
  return readFileSync(path);
}

/** Starts the mock on 127.0.0.1. Resolves to {url, close, simulation}. */
export function startMockServer({ port = 0, extraRows = 0, sse = true, workers = 0 } = {}) {
  const sim = new Simulation({ extraRows, workers });
  const clients = new Set();
  const timer = setInterval(() => {
    sim.tick();
    const data = JSON.stringify(sim.snapshot());
    for (const res of clients) res.write(`event: snapshot\ndata: ${data}\n\n`);
  }, 1000);

  const send = (res, status, type, body, headers = {}) => {
    res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store', ...headers });
    res.end(body);
  };
  const json = (res, value, status = 200) => send(res, status, 'application/json', JSON.stringify(value));
  const csv = (res, name, text) => send(res, 200, 'text/csv; charset=utf-8', text, { 'Content-Disposition': `attachment; filename="${name}"` });
  const asset = (res, file, type) => {
    const body = readDist(file);
    if (body === null) send(res, 500, 'text/plain', `dist/${file} is missing: run npm run build first\n`);
    else send(res, 200, type, body);
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    const route = `${req.method} ${url.pathname}`;
    const readForm = (handler) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (chunk) => {
        body += chunk;
      });
      req.on('end', () => handler(new URLSearchParams(body)));
    };
    switch (route) {
      case 'GET /':
        return asset(res, 'index.html', 'text/html; charset=utf-8');
      case 'GET /assets/app.js':
        return asset(res, 'app.js', 'text/javascript; charset=utf-8');
      case 'GET /assets/app.css':
        return asset(res, 'app.css', 'text/css; charset=utf-8');
      case 'GET /config':
        return json(res, sim.config());
      case 'GET /stats/requests':
        return json(res, sim.snapshot());
      case 'GET /events':
        if (!sse) return send(res, 404, 'text/plain', 'SSE disabled (MOCK_SSE=0)\n');
        res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', Connection: 'keep-alive' });
        res.write(`retry: 1000\nevent: snapshot\ndata: ${JSON.stringify(sim.snapshot())}\n\n`);
        clients.add(res);
        req.on('close', () => clients.delete(res));
        return undefined;
      case 'GET /stats/history':
        return json(res, { points: sim.historyPoints(url.searchParams.get('max_points')) });
      case 'POST /swarm':
        return readForm((fields) => {
          const result = sim.swarm(fields);
          json(res, result, result.success ? 200 : 400);
        });
      case 'POST /stop':
        return json(res, sim.stop());
      case 'POST /stats/reset':
        sim.resetStats();
        sim.log('INFO', 'Statistics reset');
        return json(res, { success: true, message: 'Statistics reset' });
      case 'GET /swarm':
      case 'GET /stop':
      case 'GET /stats/reset':
        return send(res, 405, 'application/json', JSON.stringify({ success: false, message: `${url.pathname} takes POST only` }), { Allow: 'POST' });
      case 'GET /tasks':
        return json(res, sim.tasks());
      case 'GET /exceptions':
        return json(res, { exceptions: sim.exceptions() });
      case 'GET /logs':
        return json(res, { logs: sim.logs });
      case 'GET /stats/requests/csv':
        return csv(res, 'requests.csv', sim.requestsCsv());
      case 'GET /stats/failures/csv':
        return csv(res, 'failures.csv', sim.failuresCsv());
      case 'GET /exceptions/csv':
        return csv(res, 'exceptions.csv', sim.exceptionsCsv());
      case 'GET /stats/history/csv':
        return csv(res, 'stats_history.csv', sim.historyCsv());
      case 'GET /report.json':
        return send(res, 200, 'application/json', JSON.stringify(sim.report()), { 'Content-Disposition': 'attachment; filename="report.json"' });
      case 'GET /report':
      case 'GET /stats/report': {
        const template = readDist('report.html');
        if (template === null) return send(res, 500, 'text/plain', 'dist/report.html is missing: run npm run build first\n');
        const html = fillReportTemplate(template.toString('utf8'), sim.report());
        const headers = url.searchParams.get('download') ? { 'Content-Disposition': 'attachment; filename="cicada-report.html"' } : {};
        return send(res, 200, 'text/html; charset=utf-8', html, headers);
      }
      default:
        return send(res, 404, 'text/plain', `not found: ${route}\n`);
    }
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const url = `http://127.0.0.1:${server.address().port}`;
      resolve({
        url,
        simulation: sim,
        close: () =>
          new Promise((done) => {
            clearInterval(timer);
            for (const res of clients) res.end();
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

if (import.meta.url === pathToFileURL(process.argv[1] || '').href) {
  const mock = await startMockServer({
    port: Number(process.env.PORT || 0),
    extraRows: Number(process.env.MOCK_ROWS || 0),
    sse: process.env.MOCK_SSE !== '0',
    workers: Number(process.env.MOCK_WORKERS || 0),
  });
  console.log(`mock: ${mock.url}`);
  const stop = async () => {
    await mock.close();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
