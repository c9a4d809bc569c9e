// live.js — owns the live UI of a running load test: it wires the page shell (src/index.html) to the
// server — the header figures, the start and edit forms, the Stop / Reset / New test buttons, the tabs,
// the timers that refresh the open tab (history for the charts, logs, the task ratio), and the Logs
// tab's choice of source on a cluster master (all, the master's own lines, or one worker's). Rendering
// of tables and panels is delegated to table.js, charts.js and panels.js.

import { getJson, postForm, streamSnapshots } from './api.js';
import { Charts } from './charts.js';
import { esc, fmtBytes, fmtInt, fmtPercent, fmtRate, setHtml } from './format.js';
import { OWN_LINES, exceptionsHtml, failuresHtml, generatorHtml, logWorkers, logsHtml, ratioHtml, workersHtml } from './panels.js';
import { HISTORY_REQUEST_POINTS, TABS, controls, createModel, headerFigures, setHistory, setSnapshot, snapshotParts } from './state.js';
import { StatsTable } from './table.js';

const HISTORY_EVERY_MS = 5000;
const LOGS_EVERY_MS = 3000;
const CONFIG_RETRY_MS = 2000;
const MESSAGE_MS = 6000;

export function startLive(doc = document) {
  const $ = (id) => doc.getElementById(id);
  const model = createModel(decodeURIComponent(location.hash.slice(1)));
  const el = {
    version: $('version'),
    state: $('state'),
    host: $('host'),
    users: $('user-count'),
    targetUsers: $('target-user-count'),
    rps: $('rps'),
    failRatio: $('fail-ratio'),
    generator: $('generator'),
    generatorMetric: $('generator-metric'),
    connection: $('connection'),
    editButton: $('edit-button'),
    stopButton: $('stop-button'),
    resetButton: $('reset-button'),
    newTestButton: $('new-test-button'),
    editForm: $('edit-form'),
    startPanel: $('start-panel'),
    startForm: $('start-form'),
    startCancel: $('start-cancel'),
    userTypes: $('user-types'),
    flags: $('config-flags'),
    message: $('message'),
    rowsOmitted: $('rows-omitted'),
    failures: $('failures'),
    exceptions: $('exceptions'),
    ratio: $('ratio'),
    logs: $('logs'),
    logsControls: $('logs-controls'),
    logsSource: $('logs-source'),
    resource: $('resource'),
    workers: $('workers'),
    tabs: doc.querySelector('nav.tabs'),
  };
  const statsTable = new StatsTable($('stats-table'), { windowed: true });
  const charts = new Charts($('charts'));
  const timing = { history: 0, logs: 0, historyIdle: false };

  // ---- messages -------------------------------------------------------------------------------

  let messageTimer = null;
  function showMessage(text, kind = 'info') {
    clearTimeout(messageTimer);
    el.message.textContent = text;
    el.message.dataset.kind = kind;
    el.message.hidden = false;
    if (kind !== 'error') messageTimer = setTimeout(() => (el.message.hidden = true), MESSAGE_MS);
  }

  // ---- rendering ------------------------------------------------------------------------------

  function renderHeader() {
    const f = headerFigures(model.snapshot);
    el.state.textContent = f.state;
    el.state.dataset.state = f.state;
    el.host.textContent = f.host || '–';
    el.host.title = f.host || '';
    el.users.textContent = fmtInt(f.users);
    el.targetUsers.textContent = fmtInt(f.targetUsers);
    el.rps.textContent = fmtRate(f.rps);
    el.failRatio.textContent = fmtPercent(f.failRatio);
    if (f.generator) {
      el.generator.textContent = `CPU ${fmtPercent(f.generator.cpu)} · ${fmtBytes(f.generator.rss)}`;
    } else {
      el.generator.textContent = '–';
    }
    const saturated = Boolean(f.generator && f.generator.saturated);
    el.generatorMetric.classList.toggle('warn', saturated);
    el.generatorMetric.title = saturated
      ? 'The load generator is saturated: latencies are unreliable'
      : f.generator
        ? 'CPU and memory (RSS) of the load generator'
        : 'No generator figures: the resource guard is off or has not sampled yet';
    doc.title = `cicada · ${f.state}`;
  }

  function renderControls() {
    const c = controls(model);
    el.startPanel.hidden = !c.startForm;
    el.startCancel.hidden = !c.cancelStart;
    el.editButton.hidden = !c.edit;
    el.editForm.hidden = !c.editForm;
    el.stopButton.hidden = !c.stop;
    el.resetButton.hidden = !c.reset;
    el.newTestButton.hidden = !c.newTest;
  }

  function renderCounts() {
    const parts = snapshotParts(model.snapshot);
    const counts = { failures: parts.errors.length, exceptions: parts.exceptions.length };
    for (const [key, n] of Object.entries(counts)) {
      const badge = el.tabs.querySelector(`[data-count="${key}"]`);
      badge.textContent = n > 0 ? fmtInt(n) : '';
    }
    const saturated = Boolean(parts.generator && parts.generator.saturated);
    el.tabs.querySelector('[data-count="resource"]').textContent = saturated ? '!' : '';
    const workersTab = el.tabs.querySelector('[data-tab="workers"]');
    workersTab.hidden = parts.workers === null;
    if (parts.workers !== null) {
      const missing = parts.workers.filter((w) => w.state === 'missing').length;
      const badge = el.tabs.querySelector('[data-count="workers"]');
      badge.textContent = `${fmtInt(parts.workers.length)}${missing ? ` (${fmtInt(missing)} missing)` : ''}`;
      badge.classList.toggle('neutral', missing === 0);
    }
  }

  /** Renders the open tab from the latest snapshot (tabs fed by other endpoints load themselves). */
  function renderPanel() {
    const s = model.snapshot;
    if (!s) return;
    const parts = snapshotParts(s);
    switch (model.tab) {
      case 'stats': {
        statsTable.update(parts.entries, parts.total);
        const omitted = parts.rowsOmitted;
        el.rowsOmitted.hidden = omitted <= 0;
        el.rowsOmitted.textContent = omitted > 0 ? `${fmtInt(omitted)} more request names are not shown (the table holds at most 1,000 rows; the CSV has them all).` : '';
        break;
      }
      case 'failures':
        setHtml(el.failures, failuresHtml(parts.errors));
        break;
      case 'exceptions':
        setHtml(el.exceptions, exceptionsHtml(parts.exceptions));
        break;
      case 'resource':
        setHtml(el.resource, generatorHtml(parts.generator));
        break;
      case 'workers':
        setHtml(el.workers, workersHtml(parts.workers, parts.workersOmitted, parts.cluster));
        break;
      default:
        break;
    }
  }

  function render() {
    renderHeader();
    renderControls();
    renderCounts();
    renderPanel();
  }

  // Snapshots render on the next animation frame: several arriving together render once, and a
  // page in a background tab (no frames) does no work until it is shown again.
  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      render();
    });
  }

  // ---- data loading ---------------------------------------------------------------------------

  async function loadConfig() {
    try {
      model.config = await getJson('config');
    } catch {
      setTimeout(loadConfig, CONFIG_RETRY_MS);
      return;
    }
    const config = model.config;
    el.version.textContent = config.version ? `v${config.version}` : '';
    const form = el.startForm.elements;
    form.user_count.value = config.users ?? 1;
    form.spawn_rate.value = config.spawn_rate ?? 1;
    form.host.value = config.host || '';
    form.run_time.value = config.run_time || '';
    const types = Array.isArray(config.user_types) ? config.user_types : [];
    el.userTypes.hidden = types.length === 0;
    setHtml(
      el.userTypes.querySelector('.choices'),
      types.map((t) => `<label class="choice"><input type="checkbox" name="user_classes" value="${esc(t)}" checked> ${esc(t)}</label>`).join(''),
    );
    el.flags.textContent = config.flags ? `Command line: ${config.flags}` : '';
  }

  async function loadHistory() {
    timing.history = Date.now();
    try {
      const data = await getJson(`stats/history?max_points=${HISTORY_REQUEST_POINTS}`);
      setHistory(model, data.points);
      charts.setPoints(model.history);
      const state = model.snapshot && model.snapshot.state;
      timing.historyIdle = state === 'ready' || state === 'stopped';
    } catch {
      // keep the last history; the next tick retries
    }
  }

  /**
   * The Logs tab from the latest /logs: on a cluster master (or once a line names a worker), the
   * source column and the source list (every worker the lines or the snapshot name).
   */
  function renderLogs() {
    const workers = snapshotParts(model.snapshot).workers;
    const ids = new Set(logWorkers(model.logs));
    for (const w of workers || []) if (typeof w.id === 'string') ids.add(w.id);
    const cluster = workers !== null || ids.size > 0;
    el.logsControls.hidden = !cluster;
    if (cluster) {
      const wanted = ['', OWN_LINES, ...[...ids].sort().map((id) => `w:${id}`)];
      if (!wanted.includes(model.logFilter)) wanted.push(model.logFilter);
      const have = [...el.logsSource.options].map((o) => o.value);
      if (have.join('\n') !== wanted.join('\n')) {
        setHtml(
          el.logsSource,
          wanted
            .map((value) => {
              const label = value === '' ? 'All' : value === OWN_LINES ? 'Master' : `Worker ${value.slice(2)}`;
              return `<option value="${esc(value)}">${esc(label)}</option>`;
            })
            .join(''),
        );
      }
      el.logsSource.value = model.logFilter;
    }
    if (model.logs) setHtml(el.logs, logsHtml(model.logs, { filter: cluster ? model.logFilter : '', sourceColumn: cluster }));
  }

  async function loadLogs() {
    timing.logs = Date.now();
    try {
      model.logs = await getJson('logs');
      renderLogs();
    } catch (err) {
      setHtml(el.logs, `<p class="empty">Could not load the logs: ${esc(err.message)}</p>`);
    }
  }

  el.logsSource.addEventListener('change', () => {
    model.logFilter = el.logsSource.value;
    renderLogs();
  });

  async function loadTasks() {
    try {
      setHtml(el.ratio, ratioHtml(await getJson('tasks')));
    } catch (err) {
      setHtml(el.ratio, `<p class="empty">Could not load the task ratio: ${esc(err.message)}</p>`);
    }
  }

  function tick() {
    const now = Date.now();
    const state = model.snapshot && model.snapshot.state;
    if (state && state !== 'ready' && state !== 'stopped') timing.historyIdle = false;
    if (model.tab === 'charts' && !timing.historyIdle && now - timing.history >= HISTORY_EVERY_MS) loadHistory();
    if (model.tab === 'logs' && now - timing.logs >= LOGS_EVERY_MS) loadLogs();
  }

  // ---- tabs -----------------------------------------------------------------------------------

  function selectTab(name) {
    model.tab = TABS.includes(name) ? name : 'stats';
    for (const button of el.tabs.querySelectorAll('[data-tab]')) {
      const active = button.dataset.tab === model.tab;
      button.setAttribute('aria-selected', String(active));
      button.classList.toggle('active', active);
    }
    for (const panel of doc.querySelectorAll('[data-panel]')) panel.hidden = panel.dataset.panel !== model.tab;
    history.replaceState(null, '', `#${model.tab}`);
    if (model.tab === 'charts') {
      charts.resize();
      loadHistory();
    } else if (model.tab === 'logs') {
      loadLogs();
    } else if (model.tab === 'ratio') {
      loadTasks();
    }
    renderPanel();
  }

  el.tabs.addEventListener('click', (event) => {
    const button = event.target.closest('[data-tab]');
    if (button) selectTab(button.dataset.tab);
  });

  // ---- actions --------------------------------------------------------------------------------

  async function post(button, path, fields, onSuccess) {
    button.disabled = true;
    try {
      const result = await postForm(path, fields);
      if (result.success) {
        if (result.message) showMessage(result.message);
        if (onSuccess) onSuccess(result);
      } else {
        showMessage(result.message || `${path} failed`, 'error');
      }
      stream.refresh();
      return result;
    } finally {
      button.disabled = false;
    }
  }

  el.startForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const form = el.startForm.elements;
    const checked = [...el.startForm.querySelectorAll('input[name="user_classes"]:checked')].map((i) => i.value);
    if (!el.userTypes.hidden && checked.length === 0) {
      showMessage('Choose at least one user type.', 'error');
      return;
    }
    const fields = {
      user_count: form.user_count.value,
      spawn_rate: form.spawn_rate.value,
      host: form.host.value,
      run_time: form.run_time.value,
      user_classes: checked,
    };
    post(el.startForm.querySelector('button[type="submit"]'), 'swarm', fields, () => {
      model.newTestOpen = false;
      timing.historyIdle = false;
      renderControls();
    });
  });

  el.startCancel.addEventListener('click', () => {
    model.newTestOpen = false;
    renderControls();
  });

  el.newTestButton.addEventListener('click', () => {
    model.newTestOpen = true;
    renderControls();
    el.startForm.elements.user_count.focus();
  });

  el.editButton.addEventListener('click', () => {
    model.editOpen = !model.editOpen;
    if (model.editOpen && model.snapshot) {
      const parts = snapshotParts(model.snapshot);
      el.editForm.elements.user_count.value = parts.targetUsers ?? model.snapshot.user_count ?? '';
      el.editForm.elements.spawn_rate.value = parts.spawnRate ?? '';
    }
    renderControls();
    if (model.editOpen) el.editForm.elements.user_count.focus();
  });

  $('edit-cancel').addEventListener('click', () => {
    model.editOpen = false;
    renderControls();
  });

  el.editForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const form = el.editForm.elements;
    const fields = { user_count: form.user_count.value, spawn_rate: form.spawn_rate.value };
    post(el.editForm.querySelector('button[type="submit"]'), 'swarm', fields, () => {
      model.editOpen = false;
      renderControls();
    });
  });

  el.stopButton.addEventListener('click', () => post(el.stopButton, 'stop', {}));

  el.resetButton.addEventListener('click', () =>
    post(el.resetButton, 'stats/reset', {}, () => {
      showMessage('Statistics reset.');
      timing.historyIdle = false;
      loadHistory();
    }),
  );

  // ---- start ----------------------------------------------------------------------------------

  const stream = streamSnapshots({
    onSnapshot(snapshot) {
      setSnapshot(model, snapshot);
      scheduleRender();
    },
    onConnection(kind) {
      if (el.connection.dataset.connection === kind) return;
      model.connection = kind;
      el.connection.dataset.connection = kind;
      el.connection.textContent = kind === 'offline' ? 'disconnected' : kind;
      doc.body.classList.toggle('offline', kind === 'offline');
    },
  });

  selectTab(model.tab);
  render();
  loadConfig();
  loadHistory();
  setInterval(tick, 1000);
}
