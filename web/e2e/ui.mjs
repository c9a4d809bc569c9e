// ui.mjs — owns the end-to-end test of the web UI (`npm run test:e2e`), driven by playwright-core in
// Debian's Chromium. It starts a test from the form, waits for stats and charts, edits the user count,
// stops, downloads the requests CSV and the HTML report, and opens the report with the network off.
//
//   CICADA_UI_URL     the UI of a test binary started in UI mode, no test started yet
//                     (unset: an in-process mock server, e2e/mock-server.mjs, is used)
//   CICADA_ARTIFACTS  where screenshots and downloads go (unset: a new temporary directory)
//   CHROMIUM_PATH     the browser (default /usr/bin/chromium)
//
// Prints one line of JSON summary; exits 0 when every check passed, 1 otherwise. Only 127.0.0.1 /
// localhost (and the report's file:// URL) may be reached: any other request is aborted and fails.

import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { StepFailure, expect, isLocal, launchBrowser, runTest, step, waitInPage } from './harness.mjs';

const TOTAL_LIMIT_MS = 88000;
const CSV_HEADER = 'Type,Name,Request Count,Failure Count';
const EXTERNAL_REF = /(?:src|href)\s*=\s*["']?\s*(?:https?:)?\/\//i;

async function main(summary) {
  let mock = null;
  let base = (process.env.CICADA_UI_URL || '').replace(/\/+$/, '');
  if (!base) {
    const { startMockServer } = await import('./mock-server.mjs');
    mock = await startMockServer();
    base = mock.url;
    summary.target = 'mock';
  } else {
    summary.target = base;
  }
  expect(isLocal(base), `CICADA_UI_URL must be on 127.0.0.1 or localhost, not ${base}`);
  const artifacts = process.env.CICADA_ARTIFACTS || mkdtempSync(join(tmpdir(), 'cicada-e2e-'));
  mkdirSync(artifacts, { recursive: true });
  summary.artifacts = artifacts;
  let browser = null;
  let pageErrors = [];
  let page = null;

  try {
    browser = await launchBrowser();
    const { context, blocked } = browser;
    ({ page, pageErrors } = browser);

    await step('open the UI and start 5 users at 5/s', 15000, async () => {
      await page.goto(`${base}/`, { timeout: 10000 });
      const state = await waitInPage(page, 'no snapshot reached the page (#state has no data-state)', () => { const state = document.querySelector('#state')?.dataset.state; return state && state !== 'connecting' ? state : false; }, null, 8000);
      expect(['ready', 'stopped'].includes(state), `the UI must be fresh (state ready), but the runner is "${state}"`);
      if (state === 'stopped') await page.click('#new-test-button');
      await page.waitForSelector('#start-form', { state: 'visible', timeout: 5000 });
      await waitInPage(page, 'the start form got no defaults from /config', () => document.querySelector('#start-form [name="spawn_rate"]').value !== '', null, 5000);
      // Out of bounds: the server refuses it with a 400, and the UI shows its message; nothing starts.
      await page.fill('#start-form [name="user_count"]', '99999999999999');
      await page.fill('#start-form [name="spawn_rate"]', '5');
      await page.click('#start-form button[type="submit"]');
      const refusal = await waitInPage(
        page,
        'no error message for 99999999999999 users',
        () => {
          const m = document.querySelector('#message');
          return !m.hidden && m.dataset.kind === 'error' ? m.textContent : false;
        },
        null,
        5000,
      );
      expect(/user_count/.test(refusal) && /10000000/.test(refusal), `the refusal does not explain the bound: "${refusal}"`);
      summary.checks.bounded_users = refusal;
      const stillReady = await page.evaluate(() => fetch('/stats/requests').then((r) => r.json()));
      expect(stillReady.state === 'ready' || stillReady.state === 'stopped', `a refused start changed the state to ${stillReady.state}`);
      await page.fill('#start-form [name="user_count"]', '5');
      await page.fill('#start-form [name="spawn_rate"]', '5');
      await page.click('#start-form button[type="submit"]');
      await waitInPage(page, 'the runner did not leave state ready', () => ['spawning', 'running'].includes(document.querySelector('#state').dataset.state), null, 8000);
    });

    await step('stats rows appear and RPS > 0', 30000, async () => {
      const seen = await waitInPage(
        page,
        'no stats row with RPS > 0 in the header',
        () => {
          const rows = document.querySelectorAll('#stats-table tbody tr[data-row="entry"]').length;
          const rps = parseFloat(document.querySelector('#rps').textContent.replace(/,/g, ''));
          return rows > 0 && rps > 0 ? { rows, rps } : false;
        },
        null,
        28000,
      );
      summary.checks.stats_rows = seen.rows;
      summary.checks.header_rps = seen.rps;
      const injected = await page.evaluate(() => document.querySelectorAll('main b, main i, main script, main img').length);
      expect(injected === 0, `server strings were rendered as markup (${injected} injected elements)`);
      summary.checks.escaped = true;
    });

    await step('sorting by # Requests survives updates', 10000, async () => {
      await page.click('#stats-table th[data-sort="num_requests"]');
      await page.waitForTimeout(2200); // at least one snapshot re-renders the table
      const result = await page.evaluate(() => {
        const th = document.querySelector('#stats-table th[data-sort="num_requests"]');
        const rows = [...document.querySelectorAll('#stats-table tbody tr')];
        const counts = rows.filter((r) => r.dataset.row === 'entry').map((r) => Number(r.cells[2].textContent.replace(/,/g, '')));
        return { sort: th.getAttribute('aria-sort'), counts, lastIsTotal: rows.length > 0 && rows[rows.length - 1].dataset.row === 'total' };
      });
      expect(result.sort === 'descending', `header not marked as sorted (aria-sort=${result.sort})`);
      expect(result.counts.every((v, i) => i === 0 || result.counts[i - 1] >= v), `rows not sorted by # Requests: ${result.counts.join(',')}`);
      expect(result.lastIsTotal, 'the Aggregated row is not last');
      summary.checks.sorted = true;
    });

    await step('charts draw uPlot canvases with user data', 25000, async () => {
      await page.click('[data-tab="charts"]');
      const chart = await waitInPage(
        page,
        'the users chart has no point > 0',
        () => {
          const canvases = document.querySelectorAll('#charts canvas').length;
          const users = document.querySelector('#charts [data-chart="users"]');
          const max = users ? Number(users.dataset.max) : 0;
          return canvases >= 3 && max > 0 ? { canvases, points: Number(document.querySelector('#charts').dataset.points), max } : false;
        },
        null,
        23000,
      );
      summary.checks.chart_canvases = chart.canvases;
      summary.checks.chart_points = chart.points;
      summary.checks.chart_max_users = chart.max;
      await page.screenshot({ path: join(artifacts, 'ui-charts.png') });
    });

    await step('edit the user count to 8', 25000, async () => {
      await page.click('#edit-button');
      await page.waitForSelector('#edit-form', { state: 'visible', timeout: 3000 });
      await page.fill('#edit-form [name="user_count"]', '8');
      await page.click('#edit-form button[type="submit"]');
      await waitInPage(
        page,
        '#user-count did not show 8 while running',
        () => document.querySelector('#user-count').textContent.trim() === '8' && document.querySelector('#state').dataset.state === 'running',
        null,
        22000,
      );
      const snapshot = await page.evaluate(() => fetch('/stats/requests').then((r) => r.json()));
      expect(snapshot.user_count === 8, `/stats/requests says user_count ${snapshot.user_count}, not 8`);
      summary.checks.users_after_edit = snapshot.user_count;
    });

    await step('screenshot of the running UI', 10000, async () => {
      await page.click('[data-tab="stats"]');
      await page.waitForTimeout(300);
      await page.screenshot({ path: join(artifacts, 'ui-running.png') });
      summary.checks.screenshot = join(artifacts, 'ui-running.png');
    });

    await step('stop the test', 20000, async () => {
      await page.click('#stop-button');
      await waitInPage(page, 'the state did not become stopped', () => document.querySelector('#state').dataset.state === 'stopped', null, 18000);
      await page.waitForSelector('#new-test-button', { state: 'visible', timeout: 3000 });
      summary.checks.stopped = true;
    });

    let reportPath = null;
    await step('download the requests CSV', 10000, async () => {
      await page.click('[data-tab="downloads"]');
      const [download] = await Promise.all([page.waitForEvent('download', { timeout: 8000 }), page.click('a#download-requests-csv')]);
      const path = join(artifacts, 'requests.csv');
      await download.saveAs(path);
      const header = readFileSync(path, 'utf8').split(/\r?\n/)[0];
      expect(header.startsWith(CSV_HEADER), `the CSV header is "${header.slice(0, 80)}"`);
      summary.checks.csv_header = header.split(',').slice(0, 4).join(',');
      summary.checks.csv_rows = readFileSync(path, 'utf8').trim().split(/\r?\n/).length - 1;
    });

    await step('download the HTML report', 10000, async () => {
      const [download] = await Promise.all([page.waitForEvent('download', { timeout: 8000 }), page.click('a#download-report')]);
      reportPath = join(artifacts, 'report.html');
      await download.saveAs(reportPath);
      const html = readFileSync(reportPath, 'utf8');
      expect(html.includes('Aggregated'), 'the report does not contain "Aggregated"');
      const external = html.match(EXTERNAL_REF);
      expect(!external, `the report refers to another host: ${external && external[0]}`);
      expect(!html.includes('__CICADA_REPORT_DATA__'), 'the report still holds the data placeholder');
      summary.checks.report_bytes = Buffer.byteLength(html);
    });

    await step('open the report offline', 15000, async () => {
      await context.setOffline(true);
      const report = await context.newPage();
      const requests = [];
      report.on('request', (r) => {
        if (!r.url().startsWith('file:') && !r.url().startsWith('data:')) requests.push(r.url());
      });
      report.on('pageerror', (err) => pageErrors.push(`report: ${err.message}`));
      await report.goto(pathToFileURL(reportPath).href, { timeout: 8000 });
      await report.waitForSelector('#stats-table tbody tr[data-row="total"]', { timeout: 8000 });
      const seen = await report.evaluate(() => ({
        rows: document.querySelectorAll('#stats-table tbody tr').length,
        total: document.querySelector('#stats-table tbody tr[data-row="total"]').textContent.includes('Aggregated'),
        canvases: document.querySelectorAll('#charts canvas').length,
      }));
      expect(seen.total, 'the report has no Aggregated row');
      expect(seen.canvases >= 3, `the report drew ${seen.canvases} chart canvases`);
      expect(requests.length === 0, `the report made requests: ${requests.join(', ')}`);
      await report.screenshot({ path: join(artifacts, 'report.png'), fullPage: true });
      await report.close();
      await context.setOffline(false);
      summary.checks.report_rows = seen.rows;
      summary.checks.report_offline = true;
    });

    expect(blocked.length === 0, `requests to other hosts were blocked: ${blocked.join(', ')}`);
    expect(pageErrors.length === 0, `JavaScript errors: ${pageErrors.join(' | ')}`);
    summary.e2e = 'passed';
  } catch (err) {
    summary.error = err instanceof StepFailure ? err.message : `e2e: ${err.message.split('\n')[0]}`;
    if (pageErrors.length) summary.page_errors = pageErrors;
    if (page) await page.screenshot({ path: join(artifacts, 'ui-failure.png') }).catch(() => {});
  } finally {
    if (browser) await browser.close();
    if (mock) await mock.close();
  }
}

runTest(TOTAL_LIMIT_MS, main);
