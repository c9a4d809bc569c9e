// build.mjs — owns the build of web/dist/ (`npm run build`), which the cicada crate embeds:
//   app.js             src/main.js + uPlot, bundled and minified by esbuild (iife)
//   app.css            uPlot's stylesheet + src/style.css (imported by main.js)
//   index.html         src/index.html as is (the live UI; loads assets/app.js and assets/app.css)
//   report.html        the self-contained HTML report template: app.css and app.js inlined, and
//                      <script id="cicada-data" type="application/json">__CICADA_REPORT_DATA__</script>
//                      whose placeholder the server replaces with the run's JSON
//   report-sample.html report.html filled with made-up data (e2e/fake-data.mjs), for development
// The output is deterministic: same sources and lockfile, same bytes.

import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { REPORT_PLACEHOLDER, fillReportTemplate, sampleReport } from './e2e/fake-data.mjs';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');
const started = performance.now();

function fail(message) {
  console.error(`build: ${message}`);
  process.exit(1);
}

// uPlot is MIT licensed: keep its notice in the bundle (its own header comment is not a legal comment).
const uplotDir = join(root, 'node_modules', 'uplot');
const uplotVersion = JSON.parse(readFileSync(join(uplotDir, 'package.json'), 'utf8')).version;
const uplotCopyright = readFileSync(join(uplotDir, 'LICENSE'), 'utf8')
  .split('\n')
  .find((line) => line.startsWith('Copyright')) || 'Copyright Leon Sorokin';
const notice = `/*! cicada web UI. Includes uPlot ${uplotVersion}, ${uplotCopyright.trim()}, MIT License. */`;

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

await esbuild.build({
  absWorkingDir: root,
  entryPoints: { app: 'src/main.js' },
  outdir: dist,
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  legalComments: 'none',
  banner: { js: notice, css: notice },
  logLevel: 'warning',
});

const js = readFileSync(join(dist, 'app.js'), 'utf8');
const css = readFileSync(join(dist, 'app.css'), 'utf8');
const indexHtml = readFileSync(join(root, 'src', 'index.html'), 'utf8');
writeFileSync(join(dist, 'index.html'), indexHtml);

if (js.includes(REPORT_PLACEHOLDER) || css.includes(REPORT_PLACEHOLDER)) {
  fail(`the bundle must not contain ${REPORT_PLACEHOLDER}: the server replaces it in report.html`);
}

// Inline text must not end its element early: "</script" / "<!--" in JS, "</style" in CSS.
const inlineJs = js.replace(/<\/(script)/gi, '<\\/$1').replace(/<!--/g, '<\\!--');
const inlineCss = css.replace(/<\/(style)/gi, '<\\/$1');

const reportHtml = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cicada load test report</title>
<link rel="icon" href="data:,">
<style>
${inlineCss}
</style>
<script id="cicada-data" type="application/json">${REPORT_PLACEHOLDER}</script>
</head>
<body class="report">
<noscript>This report is drawn by JavaScript; the same data is in report.json and the CSV files.</noscript>
<script>
${inlineJs}
</script>
</body>
</html>
`;

const occurrences = reportHtml.split(REPORT_PLACEHOLDER).length - 1;
if (occurrences !== 1) fail(`report.html holds the placeholder ${occurrences} times, not once`);
const external = reportHtml.match(/(?:src|href)\s*=\s*["']?\s*(?:https?:)?\/\//i);
if (external) fail(`report.html refers to another host: ${external[0]}`);
if (/@import|url\(\s*["']?(?:https?:)?\/\//i.test(inlineCss)) fail('app.css loads something from another host');

writeFileSync(join(dist, 'report.html'), reportHtml);
writeFileSync(join(dist, 'report-sample.html'), fillReportTemplate(reportHtml, sampleReport()));

const kib = (s) => `${(Buffer.byteLength(s) / 1024).toFixed(1)} KiB`;
console.log(
  `build: dist/app.js ${kib(js)}, dist/app.css ${kib(css)}, dist/index.html, dist/report.html ${kib(reportHtml)}, ` +
    `dist/report-sample.html in ${Math.round(performance.now() - started)} ms`,
);
