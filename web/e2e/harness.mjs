// harness.mjs — owns what the browser tests (ui.mjs, workers.mjs) share: launching Debian's Chromium
// through playwright-core with every request off 127.0.0.1 / localhost blocked, named steps with their
// own time limits, in-page waits with readable failures, and the one-line JSON summary with its exit code.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const started = Date.now();
export const log = (line) => process.stderr.write(`[e2e ${((Date.now() - started) / 1000).toFixed(1)}s] ${line}\n`);

export class StepFailure extends Error {}

/** Runs one step with its own time limit; a failure names the step. */
export async function step(name, timeoutMs, fn) {
  const t0 = Date.now();
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs / 1000} s`)), timeoutMs);
      }),
    ]);
  } catch (err) {
    throw new StepFailure(`step "${name}" failed: ${err.message.split('\n')[0]}`);
  } finally {
    clearTimeout(timer);
  }
  log(`ok: ${name} (${Date.now() - t0} ms)`);
}

export function expect(condition, message) {
  if (!condition) throw new Error(message);
}

/** Waits for `fn(arg)` in the page to be truthy, with a readable message on timeout. */
export async function waitInPage(page, what, fn, arg, timeout) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout, polling: 250 })).jsonValue();
  } catch (err) {
    throw new Error(`${what} (${err.message.split('\n')[0]})`);
  }
}

export const isLocal = (url) => {
  const u = new URL(url);
  if (u.protocol === 'file:' || u.protocol === 'data:' || u.protocol === 'about:' || u.protocol === 'blob:') return true;
  return u.hostname === '127.0.0.1' || u.hostname === 'localhost' || u.hostname === '[::1]';
};

/**
 * Chromium with a fresh profile; requests to any other host are aborted and listed in `blocked`,
 * JavaScript errors of the page in `pageErrors`. `close()` ends the browser and removes the profile.
 */
export async function launchBrowser() {
  const userDataDir = mkdtempSync(join(tmpdir(), 'cicada-e2e-chromium-'));
  const blocked = [];
  const pageErrors = [];
  let context = null;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      acceptDownloads: true,
      viewport: { width: 1400, height: 900 },
    });
  } catch (err) {
    rmSync(userDataDir, { recursive: true, force: true });
    throw err;
  }
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (isLocal(url)) return route.continue();
    blocked.push(url);
    return route.abort('blockedbyclient');
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (err) => pageErrors.push(`ui: ${err.message}`));
  return {
    context,
    page,
    blocked,
    pageErrors,
    async close() {
      await context.close().catch(() => {});
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs `main(summary)` under a watchdog of `limitMs`; prints the summary as one line of JSON and exits
 * 0 when `main` set `summary.e2e = 'passed'`, 1 otherwise.
 */
export function runTest(limitMs, main) {
  const summary = { e2e: 'failed', target: null, checks: {} };
  const finish = (code) => {
    summary.seconds = Math.round((Date.now() - started) / 100) / 10;
    console.log(JSON.stringify(summary));
    process.exit(code);
  };
  const watchdog = setTimeout(() => {
    summary.error = `the e2e test took longer than ${limitMs / 1000} s`;
    finish(1);
  }, limitMs);
  main(summary).then(
    () => {
      clearTimeout(watchdog);
      finish(summary.e2e === 'passed' ? 0 : 1);
    },
    (err) => {
      clearTimeout(watchdog);
      summary.error = err instanceof StepFailure ? err.message : `e2e: ${err.message.split('\n')[0]}`;
      finish(1);
    },
  );
}
