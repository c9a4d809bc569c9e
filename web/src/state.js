// state.js — owns the live UI's client-side model (config, latest snapshot, bounded chart history,
// UI choices such as the open tab) and the pure derivations the views read from it: which controls
// show in which runner state, and the figures in the header. No DOM access here.

import { toNumber } from './format.js';

/** Chart history kept client-side, at most (the server already downsamples to max_points). */
export const MAX_HISTORY_POINTS = 3000;
/** Asked of /stats/history. */
export const HISTORY_REQUEST_POINTS = 2000;

export const TABS = ['stats', 'charts', 'failures', 'exceptions', 'ratio', 'downloads', 'logs', 'resource', 'workers'];

/** Runner states in which users are running and can be edited or stopped. */
const ACTIVE_STATES = new Set(['spawning', 'running']);

export function createModel(initialTab = 'stats') {
  return {
    config: null, // GET /config
    snapshot: null, // latest /stats/requests or SSE snapshot
    history: [], // /stats/history points, oldest first
    tab: TABS.includes(initialTab) ? initialTab : 'stats',
    newTestOpen: false, // "New test" clicked after a stop
    editOpen: false, // the edit form is shown
    logs: null, // latest GET /logs
    logFilter: '', // the Logs tab's source: '' (all), 'own', or 'w:' + a worker id
    connection: 'connecting', // live | polling | offline | connecting
  };
}

/** Stores history points, keeping only the newest MAX_HISTORY_POINTS. */
export function setHistory(model, points) {
  const list = Array.isArray(points) ? points.filter((p) => p && typeof p === 'object') : [];
  model.history = list.length > MAX_HISTORY_POINTS ? list.slice(list.length - MAX_HISTORY_POINTS) : list;
}

/** Records a new snapshot; closes the "new test" form once a test is running again. */
export function setSnapshot(model, snapshot) {
  const previous = model.snapshot ? model.snapshot.state : null;
  model.snapshot = snapshot;
  if (snapshot.state !== previous && ACTIVE_STATES.has(snapshot.state)) model.newTestOpen = false;
  if (!ACTIVE_STATES.has(snapshot.state)) model.editOpen = false;
}

/** Which controls are visible for the current state. */
export function controls(model) {
  const state = model.snapshot ? model.snapshot.state : null;
  const active = ACTIVE_STATES.has(state);
  return {
    startForm: state === 'ready' || (state === 'stopped' && model.newTestOpen),
    cancelStart: state === 'stopped' && model.newTestOpen,
    edit: active,
    editForm: active && model.editOpen,
    stop: active,
    reset: state !== null && state !== 'ready' && state !== 'quitting',
    newTest: state === 'stopped' && !model.newTestOpen,
  };
}

/**
 * A /stats/requests snapshot's parts in the shape the views read: Locust's `stats` split into the
 * request rows and the Aggregated row (always last), and cicada's own figures (`snapshot.cicada`).
 */
export function snapshotParts(snapshot) {
  const stats = snapshot && Array.isArray(snapshot.stats) ? snapshot.stats : [];
  const last = stats.length > 0 ? stats[stats.length - 1] : null;
  const hasTotal = Boolean(last && last.name === 'Aggregated' && (last.method === null || last.method === undefined || last.method === ''));
  const cicada = (snapshot && snapshot.cicada) || {};
  return {
    entries: hasTotal ? stats.slice(0, -1) : stats,
    total: hasTotal ? last : null,
    errors: snapshot && Array.isArray(snapshot.errors) ? snapshot.errors : [],
    exceptions: Array.isArray(cicada.exceptions) ? cicada.exceptions : [],
    rowsOmitted: toNumber(cicada.rows_omitted) || 0,
    generator: cicada.generator || null,
    // Only a master has workers (Locust's `workers` key); null elsewhere.
    workers: snapshot && Array.isArray(snapshot.workers) ? snapshot.workers : null,
    workersOmitted: toNumber(cicada.workers_omitted) || 0,
    // A master's view of its workers' capacity: users held back, workers over their limits, the last actions.
    cluster: cicada.cluster || null,
    host: cicada.host ?? null,
    targetUsers: toNumber(cicada.target_user_count),
    spawnRate: toNumber(cicada.spawn_rate),
  };
}

/** The header's figures from a snapshot (numbers or null). */
export function headerFigures(snapshot) {
  const parts = snapshotParts(snapshot);
  const generator = parts.generator;
  const failRatio = snapshot ? toNumber(snapshot.fail_ratio) : null;
  return {
    state: snapshot ? String(snapshot.state || 'unknown') : 'connecting',
    host: snapshot ? parts.host : null,
    users: snapshot ? toNumber(snapshot.user_count) : null,
    targetUsers: snapshot ? parts.targetUsers : null,
    rps: snapshot ? toNumber(snapshot.current_rps) : null,
    failRatio: failRatio === null ? 0 : failRatio * 100,
    generator: generator
      ? {
          cpu: toNumber(generator.cpu_percent),
          rss: toNumber(generator.rss_bytes),
          saturated: generator.saturated === true,
        }
      : null,
  };
}
