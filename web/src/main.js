// main.js — owns the bundle's entry point: it pulls in the styles (uPlot's and ours, which esbuild
// writes to app.css) and decides the page's mode: a static report when the page carries the run's
// data (<script id="cicada-data">), otherwise the live UI of a running test.

import 'uplot/dist/uPlot.min.css';
import './style.css';
import { startLive } from './live.js';
import { readReportData, renderReport, renderReportProblem } from './report.js';

function main() {
  const page = readReportData(document);
  if (page.mode === 'live') startLive(document);
  else if (page.mode === 'report') renderReport(document.body, page.data);
  else if (page.mode === 'template') renderReportProblem(document.body, 'This is the report template: the server fills in the data of a run.');
  else renderReportProblem(document.body, `The report data could not be read: ${page.error}`);
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', main);
else main();
