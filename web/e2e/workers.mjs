// workers.mjs — owns the end-to-end test of a cluster master's UI: the Workers tab and the workers'
// forwarded log lines. Driven by playwright-core in Debian's Chromium (see harness.mjs), against the UI
// of a master that already runs a test on its workers (`--master --autostart`):
//
//   1. the Workers tab lists every worker, running, with its users adding up to the master's count,
//      its host and pid, CPU, memory, guard and last heartbeat;
//   2. the Logs tab shows lines each worker logged (`worker: attached to master`), with the worker in
//      the Source column, and its Source list shows one worker's lines, or the master's own;
//   3. a worker killed with SIGKILL (by its pid, CICADA_KILL_PID) is shown as missing: its row dimmed,
//      with how long it has been silent, while the others keep running.
//
//   CICADA_UI_URL          the master's UI (unset: the mock server with MOCK_WORKERS=2 semantics, whose
//                          last worker goes missing by itself)
//   CICADA_EXPECT_WORKERS  how many workers the tab must list (default 2)
//   CICADA_KILL_PID        the pid of one of those workers, for this test to kill (real runs only)
//   CICADA_ARTIFACTS       where screenshots go (unset: a new temporary directory)
//
// Prints one line of JSON summary; exits 0 when every check passed, 1 otherwise. Only 127.0.0.1 /
// localhost may be reached.

import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StepFailure, expect, isLocal, launchBrowser, runTest, step, waitInPage } from './harness.mjs';

const TOTAL_LIMIT_MS = 80000;

/** The Workers tab's rows as the page shows them. */
function readWorkerRows() {
  return [...document.querySelectorAll('#workers-table tbody tr')].map((tr) => {
    const cells = [...tr.cells].map((td) => td.textContent.trim());
    const pid = /pid (\d+)/.exec(cells[1] || '');
    return {
      id: tr.dataset.worker,
      state: tr.dataset.state,
      dimmed: tr.classList.contains('missing'),
      opacity: Number(getComputedStyle(tr.cells[3]).opacity),
      pid: pid ? Number(pid[1]) : null,
      stateText: cells[2],
      users: Number((cells[3] || '').replace(/,/g, '')),
      cpu: cells[4],
      memory: cells[5],
      guard: cells[6],
      heartbeat: cells[7],
    };
  });
}

async function main(summary) {
  let mock = null;
  let base = (process.env.CICADA_UI_URL || '').replace(/\/+$/, '');
  const expected = Number(process.env.CICADA_EXPECT_WORKERS || 2);
  const killPid = process.env.CICADA_KILL_PID ? Number(process.env.CICADA_KILL_PID) : null;
  if (!base) {
    const { startMockServer } = await import('./mock-server.mjs');
    mock = await startMockServer({ workers: expected });
    base = mock.url;
    summary.target = 'mock';
  } else {
    summary.target = base;
    expect(Number.isInteger(killPid) && killPid > 1, 'CICADA_KILL_PID must name the pid of one of the workers');
  }
  expect(isLocal(base), `CICADA_UI_URL must be on 127.0.0.1 or localhost, not ${base}`);
  const artifacts = process.env.CICADA_ARTIFACTS || mkdtempSync(join(tmpdir(), 'cicada-e2e-'));
  mkdirSync(artifacts, { recursive: true });
  summary.artifacts = artifacts;
  let browser = null;
  let page = null;
  let pageErrors = [];

  try {
    browser = await launchBrowser();
    const { blocked } = browser;
    ({ page, pageErrors } = browser);

    await step('open the master UI with its test running', 20000, async () => {
      await page.goto(`${base}/`, { timeout: 10000 });
      await page.evaluate(`window.readWorkerRows = ${readWorkerRows.toString()}`);
      if (mock) {
        await page.waitForSelector('#start-form', { state: 'visible', timeout: 8000 });
        await page.fill('#start-form [name="user_count"]', '4');
        await page.fill('#start-form [name="spawn_rate"]', '4');
        await page.click('#start-form button[type="submit"]');
      }
      await waitInPage(page, 'the runner is not running', () => document.querySelector('#state')?.dataset.state === 'running', null, 18000);
      await waitInPage(page, 'the Workers tab is not shown', () => !document.querySelector('[data-tab="workers"]').hidden, null, 3000);
    });

    let rows = [];
    await step(`the Workers tab lists ${expected} running workers with their users`, 20000, async () => {
      await page.click('[data-tab="workers"]');
      const seen = await waitInPage(
        page,
        `the Workers tab did not list ${expected} running workers whose users add up to the header's`,
        (want) => {
          const rows = window.readWorkerRows();
          const users = Number(document.querySelector('#user-count').textContent.replace(/,/g, ''));
          const running = rows.filter((r) => r.state === 'running' && r.users > 0);
          const sum = rows.reduce((s, r) => s + r.users, 0);
          return rows.length === want && running.length === want && users > 0 && sum === users ? { rows, users } : false;
        },
        expected,
        18000,
      );
      rows = seen.rows;
      for (const r of rows) {
        expect(r.pid !== null, `worker ${r.id} shows no pid: ${JSON.stringify(r)}`);
        expect(/%$/.test(r.cpu) && /(B|KiB|MiB|GiB)$/.test(r.memory), `worker ${r.id} shows no CPU or memory: ${JSON.stringify(r)}`);
        expect(/ago$/.test(r.heartbeat), `worker ${r.id} shows no last heartbeat: ${JSON.stringify(r)}`);
        expect(r.guard.length > 0, `worker ${r.id} has an empty guard cell`);
        expect(!r.dimmed, `running worker ${r.id} is dimmed`);
      }
      if (killPid !== null) expect(rows.some((r) => r.pid === killPid), `no worker row has pid ${killPid}: ${rows.map((r) => r.pid).join(', ')}`);
      summary.checks.workers = rows.map((r) => ({ id: r.id, pid: r.pid, users: r.users, guard: r.guard }));
      summary.checks.users = seen.users;
      await page.screenshot({ path: join(artifacts, 'workers.png') });
    });

    await step("the Logs tab shows each worker's forwarded lines and filters by worker", 20000, async () => {
      await page.click('[data-tab="logs"]');
      const ids = rows.map((r) => r.id);
      const seen = await waitInPage(
        page,
        'no "attached to master" line of every worker, with the worker as its source',
        (ids) => {
          const trs = [...document.querySelectorAll('#logs-table tbody tr')];
          const found = ids.map((id) =>
            trs.find((tr) => tr.dataset.worker === id && tr.textContent.includes('attached to master') && tr.textContent.includes(id)),
          );
          return !document.querySelector('#logs-controls').hidden && found.every(Boolean) ? { lines: trs.length } : false;
        },
        ids,
        18000,
      );
      summary.checks.log_lines = seen.lines;
      await page.screenshot({ path: join(artifacts, 'logs.png') });
      await page.selectOption('#logs-source', `w:${ids[0]}`);
      const one = await waitInPage(
        page,
        `choosing worker ${ids[0]} did not keep only its lines`,
        (id) => {
          const trs = [...document.querySelectorAll('#logs-table tbody tr')];
          return trs.length > 0 && trs.every((tr) => tr.dataset.worker === id) ? trs.length : false;
        },
        ids[0],
        5000,
      );
      await page.selectOption('#logs-source', 'own');
      const own = await waitInPage(
        page,
        "choosing Master did not keep only the master's own lines",
        () => {
          const trs = [...document.querySelectorAll('#logs-table tbody tr')];
          return trs.length > 0 && trs.every((tr) => tr.dataset.worker === '') ? trs.length : false;
        },
        null,
        5000,
      );
      await page.selectOption('#logs-source', '');
      summary.checks.log_lines_of_one_worker = one;
      summary.checks.log_lines_of_the_master = own;
    });

    await step('a worker killed with SIGKILL is shown as missing', 25000, async () => {
      let gone = rows[rows.length - 1];
      if (killPid !== null) {
        gone = rows.find((r) => r.pid === killPid);
        process.kill(killPid, 'SIGKILL');
      }
      await page.click('[data-tab="workers"]');
      const seen = await waitInPage(
        page,
        `worker ${gone.id} was not shown as missing, dimmed, with the others running`,
        (id) => {
          const rows = window.readWorkerRows();
          const row = rows.find((r) => r.id === id);
          const others = rows.filter((r) => r.id !== id);
          const badge = document.querySelector('[data-count="workers"]').textContent;
          return row && row.state === 'missing' && row.dimmed && row.opacity < 1 && /missing for/.test(row.stateText) && /missing/.test(badge) && others.every((r) => r.state === 'running' || r.state === 'spawning')
            ? { row, badge }
            : false;
        },
        gone.id,
        22000,
      );
      summary.checks.missing = { id: gone.id, state: seen.row.stateText, badge: seen.badge };
      await page.screenshot({ path: join(artifacts, 'workers-missing.png') });
    });

    expect(blocked.length === 0, `requests to other hosts were blocked: ${blocked.join(', ')}`);
    expect(pageErrors.length === 0, `JavaScript errors: ${pageErrors.join(' | ')}`);
    summary.e2e = 'passed';
  } catch (err) {
    summary.error = err instanceof StepFailure ? err.message : `e2e: ${err.message.split('\n')[0]}`;
    if (pageErrors.length) summary.page_errors = pageErrors;
    if (page) await page.screenshot({ path: join(artifacts, 'workers-failure.png') }).catch(() => {});
  } finally {
    if (browser) await browser.close();
    if (mock) await mock.close();
  }
}

runTest(TOTAL_LIMIT_MS, main);
