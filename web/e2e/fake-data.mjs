// fake-data.mjs — owns made-up data in the shapes of the server's contract, for development only:
// stats entries with Locust's percentiles, a deterministic sample report (build.mjs writes it into
// dist/report-sample.html) and `fillReportTemplate`, which does what the server does to
// dist/report.html. The mock server (mock-server.mjs) builds its evolving data from the same helpers.

/** Quantiles of an Entry's `percentiles`, as the server sends them. */
export const QUANTILES = [0.5, 0.66, 0.75, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999, 0.9999, 1.0];

/** The placeholder in dist/report.html that the server replaces with the report's JSON. */
export const REPORT_PLACEHOLDER = '__CICADA_REPORT_DATA__';

/** A small deterministic PRNG (mulberry32) so the sample report is the same on every build. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const us = (ms) => Math.round(ms * 1000) / 1000;

/** Response-time quantiles for a latency distribution around `typicalMs`, capped by min/max. */
export function fakePercentiles(typicalMs, minMs, maxMs) {
  return QUANTILES.map((q) => {
    if (q >= 1) return [q, us(maxMs)];
    const ms = typicalMs * (0.75 + 0.55 * -Math.log(1 - q));
    return [q, us(Math.min(maxMs, Math.max(minMs, ms)))];
  });
}

/**
 * An Entry from accumulated counters: {method, name, count, failures, sumMs, minMs, maxMs, sizeSum,
 * typicalMs, seconds (run time), currentRps, currentFailPerS, currentTypicalMs}.
 */
export function makeEntry(c) {
  const n = c.count;
  const seconds = Math.max(c.seconds, 1e-9);
  const empty = n === 0;
  const percentiles = empty ? QUANTILES.map((q) => [q, null]) : fakePercentiles(c.typicalMs, c.minMs, c.maxMs);
  const current = empty || !c.currentRps ? QUANTILES.map((q) => [q, null]) : fakePercentiles(c.currentTypicalMs ?? c.typicalMs, c.minMs, c.maxMs);
  return {
    method: c.method,
    name: c.name,
    num_requests: n,
    num_failures: c.failures,
    min_ms: empty ? null : us(c.minMs),
    max_ms: empty ? null : us(c.maxMs),
    avg_ms: empty ? null : us(c.sumMs / n),
    median_ms: empty ? null : percentiles[0][1],
    avg_content_length: empty ? 0 : Math.round((c.sizeSum / n) * 10) / 10,
    total_rps: Math.round((n / seconds) * 100) / 100,
    total_fail_per_s: Math.round((c.failures / seconds) * 100) / 100,
    current_rps: Math.round((c.currentRps || 0) * 100) / 100,
    current_fail_per_s: Math.round((c.currentFailPerS || 0) * 100) / 100,
    percentiles,
    current_percentiles: current,
  };
}

/** Sums counters of several names into the "Aggregated" counters. */
export function aggregateCounters(list, seconds) {
  const total = { method: '', name: 'Aggregated', count: 0, failures: 0, sumMs: 0, minMs: Infinity, maxMs: 0, sizeSum: 0, seconds, currentRps: 0, currentFailPerS: 0 };
  let weighted = 0;
  for (const c of list) {
    total.count += c.count;
    total.failures += c.failures;
    total.sumMs += c.sumMs;
    total.sizeSum += c.sizeSum;
    total.currentRps += c.currentRps || 0;
    total.currentFailPerS += c.currentFailPerS || 0;
    if (c.count > 0) {
      total.minMs = Math.min(total.minMs, c.minMs);
      total.maxMs = Math.max(total.maxMs, c.maxMs);
      weighted += c.typicalMs * c.count;
    }
  }
  if (total.minMs === Infinity) total.minMs = 0;
  total.typicalMs = total.count ? weighted / total.count : 0;
  return total;
}

/**
 * Fills the report template the way the server does: the placeholder becomes the JSON with `<`
 * escaped as \u003c, so no string in the data can close the <script> element.
 */
export function fillReportTemplate(template, data) {
  const json = JSON.stringify(data).replace(/</g, '\\u003c');
  const at = template.indexOf(REPORT_PLACEHOLDER);
  if (at < 0 || template.indexOf(REPORT_PLACEHOLDER, at + 1) >= 0) {
    throw new Error(`the report template must hold ${REPORT_PLACEHOLDER} exactly once`);
  }
  return template.slice(0, at) + json + template.slice(at + REPORT_PLACEHOLDER.length);
}

/** A made-up two-minute run with a saturated window, failures, exceptions and a paced user type. */
export function sampleReport() {
  const random = rng(42);
  const started = Date.UTC(2026, 0, 15, 9, 30, 0);
  const seconds = 120;
  const names = [
    { method: 'GET', name: '/', weight: 4, typicalMs: 1.8, size: 1532 },
    { method: 'GET', name: '/items/[id]', weight: 10, typicalMs: 3.2, size: 412 },
    { method: 'GET', name: '/items', weight: 3, typicalMs: 6.5, size: 8120 },
    { method: 'POST', name: '/login', weight: 1, typicalMs: 12.4, size: 64 },
    { method: 'POST', name: '/cart', weight: 2, typicalMs: 8.9, size: 128 },
    { method: 'GET', name: '/slow?ms=250', weight: 1, typicalMs: 252, size: 2 },
    { method: 'GET', name: '/fail', weight: 1, typicalMs: 0.9, size: 21, failRate: 1 },
    { method: 'GET', name: '/search?q=<script>alert("x")</script>', weight: 1, typicalMs: 4.1, size: 300 },
  ];
  const weights = names.reduce((s, n) => s + n.weight, 0);
  const counters = names.map((n) => {
    const count = Math.round((n.weight / weights) * 48 * seconds * (0.9 + random() * 0.2));
    const failures = Math.round(count * (n.failRate ?? 0.002));
    return {
      method: n.method,
      name: n.name,
      count,
      failures,
      sumMs: count * n.typicalMs * 1.1,
      minMs: n.typicalMs * 0.3,
      maxMs: n.typicalMs * 9 + 20,
      sizeSum: count * n.size,
      typicalMs: n.typicalMs,
      seconds,
      currentRps: 0,
      currentFailPerS: 0,
    };
  });
  const history = [];
  for (let t = 2; t <= seconds; t += 2) {
    const users = Math.min(50, t * 2);
    const saturated = t > 40 && t <= 52;
    const rps = users * 1.1 * (saturated ? 0.7 : 1) * (0.95 + random() * 0.1);
    const p50 = 3.1 * (saturated ? 6 : 1) * (0.9 + random() * 0.2);
    history.push({
      unix_ms: started + t * 1000,
      user_count: saturated ? users - 6 : users,
      rps: us(rps),
      fail_per_s: us(rps * 0.06),
      p50_ms: us(p50),
      p95_ms: us(p50 * 4.2),
      avg_ms: us(p50 * 1.4),
      total_requests: Math.round(rps * t * 0.5),
      total_failures: Math.round(rps * t * 0.03),
      generator: { saturated, cpu_percent: saturated ? 97.5 : 40 + users * 0.6, rss_bytes: 31457280 + users * 1048576, lag_ms: saturated ? 140 : 2.5, users_held_back: saturated ? 6 : 0 },
    });
  }
  const entries = counters.map(makeEntry);
  return {
    title: 'cicada load test report: quickstart against http://127.0.0.1:8080',
    host: 'http://127.0.0.1:8080',
    started_unix_ms: started,
    ended_unix_ms: started + seconds * 1000,
    duration_seconds: seconds,
    flags: '-u 50 -r 2 -t 2m --max-cpu 90 -H http://127.0.0.1:8080',
    stats: {
      entries,
      total: makeEntry(aggregateCounters(counters, seconds)),
      failures: [
        { method: 'GET', name: '/fail', error: 'HTTP 500 Internal Server Error', occurrences: counters[6].failures },
        { method: 'POST', name: '/login', error: 'check failed: no session cookie', occurrences: counters[3].failures },
      ],
      user_errors: [
        { count: 3, message: 'panic: called `Option::unwrap()` on a `None` value', traceback: 'task view_item at examples/quickstart.rs:14:9\nuser Visitor', user_type: 'Visitor' },
      ],
    },
    history,
    generator: {
      mode: 'protect',
      limits: { cores_available: 2, memory_limit_bytes: 25769803776, max_cpu_percent: 90, max_memory_bytes: 21904333210, max_lag_ms: 100, cgroup: 'v2' },
      samples: seconds,
      saturated_samples: 12,
      saturated_share: 0.1,
      peak_cpu_percent: 98.2,
      peak_rss_bytes: 88080384,
      peak_lag_ms: 151.3,
      users_shed: 6,
      spawn_paused_seconds: 12,
      stopped_test: null,
      actions: [
        { unix_ms: started + 40000, run_seconds: 40, kind: 'over_limit', users: 40, users_shed: 0, reason: 'CPU 97.5% over the limit of 90%' },
        { unix_ms: started + 41000, run_seconds: 41, kind: 'pause_spawning', users: 40, users_shed: 0, reason: 'CPU over the limit' },
        { unix_ms: started + 44000, run_seconds: 44, kind: 'shed', users: 34, users_shed: 6, reason: 'CPU over the limit for 3 s' },
        { unix_ms: started + 52000, run_seconds: 52, kind: 'back_under_limits', users: 34, users_shed: 6, reason: 'CPU 61% under the limit' },
        { unix_ms: started + 55000, run_seconds: 55, kind: 'resume', users: 34, users_shed: 6, reason: 'ramping back' },
      ],
    },
    schedule: [{ user_type: 'PacedVisitor', period_ms: 1000, task_starts: 1180, late_starts: 42, p50_late_ms: 0.4, p99_late_ms: 38.5, max_late_ms: 140.2 }],
  };
}
