// charts.js — owns the uPlot charts built from history points (total requests/s and failures/s,
// response times p50/p95, number of users) and the shading of the time windows whose history point
// says the load generator was saturated. Charts are created lazily once their container has a width
// (a hidden tab has none) and follow its size with a ResizeObserver. A run with arrival-rate user types
// adds a chart of the iterations started and dropped per history interval (ARRIVAL_CHART).

import uPlot from 'uplot';
import { esc, fmtInt, fmtMs, fmtRate, toNumber } from './format.js';

const CHARTS = [
  {
    id: 'rps',
    title: 'Total requests per second',
    series: [
      { key: 'rps', label: 'RPS', stroke: '#2f9e5b', fmt: fmtRate },
      { key: 'fail_per_s', label: 'Failures/s', stroke: '#d64545', fmt: fmtRate },
    ],
  },
  {
    id: 'response-times',
    title: 'Response times (ms)',
    series: [
      { key: 'p50_ms', label: 'Median (p50)', stroke: '#3a72c4', fmt: fmtMs },
      { key: 'p95_ms', label: '95th percentile', stroke: '#9650c0', fmt: fmtMs },
    ],
  },
  {
    id: 'users',
    title: 'Number of users',
    series: [{ key: 'user_count', label: 'Users', stroke: '#d9891a', fmt: fmtInt }],
  },
];

/** Iterations of arrival-rate types per history interval, read from each point's `generator`. */
export const ARRIVAL_CHART = {
  id: 'arrival',
  title: 'Arrival-rate iterations per interval',
  series: [
    { key: 'iterations_started', label: 'Started', stroke: '#2f9e5b', fmt: fmtInt, generator: true },
    { key: 'iterations_dropped', label: 'Dropped', stroke: '#d64545', fmt: fmtInt, generator: true },
  ],
};

export const SATURATED_CAPTION = 'generator saturated: latencies unreliable';
const SHADE = 'rgba(232, 140, 20, 0.2)';
const DEFAULT_STEP_S = 2;

/** History points as columns: x in unix seconds (ascending), one array per series key. */
export function toColumns(points) {
  const list = (Array.isArray(points) ? points : [])
    .filter((p) => p && toNumber(p.unix_ms) !== null)
    .sort((a, b) => a.unix_ms - b.unix_ms);
  const columns = { x: list.map((p) => p.unix_ms / 1000), saturated: list.map((p) => Boolean(p.generator && p.generator.saturated === true)) };
  for (const chart of [...CHARTS, ARRIVAL_CHART]) {
    for (const s of chart.series) {
      columns[s.key] = list.map((p) => toNumber(s.generator ? p.generator && p.generator[s.key] : p[s.key]));
    }
  }
  return columns;
}

/**
 * Time ranges [from, to] (unix seconds) to shade: each saturated point covers the interval since
 * the point before it (a history point describes the interval that ends at it); touching ranges merge.
 */
export function saturatedRanges(columns) {
  const { x, saturated } = columns;
  const ranges = [];
  for (let i = 0; i < x.length; i += 1) {
    if (!saturated[i]) continue;
    const from = i > 0 ? x[i - 1] : x[i] - DEFAULT_STEP_S;
    const last = ranges[ranges.length - 1];
    if (last && from <= last[1]) last[1] = x[i];
    else ranges.push([from, x[i]]);
  }
  return ranges;
}

/** A uPlot plugin drawing the saturated windows under the series (hooks.drawClear). */
function shadingPlugin(getRanges) {
  return {
    hooks: {
      drawClear: [
        (u) => {
          const ranges = getRanges();
          if (!ranges.length) return;
          const { ctx, bbox } = u;
          ctx.save();
          ctx.beginPath();
          ctx.rect(bbox.left, bbox.top, bbox.width, bbox.height);
          ctx.clip();
          ctx.fillStyle = SHADE;
          for (const [from, to] of ranges) {
            const x0 = u.valToPos(from, 'x', true);
            const x1 = u.valToPos(to, 'x', true);
            ctx.fillRect(Math.min(x0, x1), bbox.top, Math.max(Math.abs(x1 - x0), 2), bbox.height);
          }
          ctx.restore();
        },
      ],
    },
  };
}

const nonNegative = (u, min, max) => [0, max > 0 ? max * 1.1 : 1];

/**
 * The three charts inside `container`. `setPoints(points)` replaces the data; the container gets
 * `data-points` and each chart figure `data-points` / `data-max` (largest value of its first series)
 * so tests can check the charts hold data.
 */
export class Charts {
  constructor(container, { height = 240, arrival = false } = {}) {
    this.charts = arrival ? [...CHARTS, ARRIVAL_CHART] : CHARTS;
    this.container = container;
    this.height = height;
    this.plots = [];
    this.columns = toColumns([]);
    this.ranges = [];
    container.classList.add('charts');
    container.innerHTML = `${this.charts.map(
      (c) => `<figure class="chart" data-chart="${c.id}"><div class="chart-plot"></div></figure>`,
    ).join('')}<p class="chart-caption"><span class="swatch" aria-hidden="true"></span>Shaded: ${esc(
      SATURATED_CAPTION,
    )} (the load generator ran out of CPU, memory or scheduler time, so it measured its own delays too). <span class="saturated-count"></span></p>`;
    this.figures = [...container.querySelectorAll('figure.chart')];
    this.countEl = container.querySelector('.saturated-count');
    if (typeof ResizeObserver !== 'undefined') {
      this.observer = new ResizeObserver(() => this.resize());
      this.observer.observe(container);
    }
  }

  /** The plot width: the content width of a chart figure (0 while the tab is hidden). */
  width() {
    const plot = this.figures[0].querySelector('.chart-plot');
    return Math.floor(plot.clientWidth);
  }

  setPoints(points) {
    this.columns = toColumns(points);
    this.ranges = saturatedRanges(this.columns);
    this.container.dataset.points = String(this.columns.x.length);
    this.container.dataset.saturatedWindows = String(this.ranges.length);
    this.countEl.textContent = this.ranges.length
      ? `${this.ranges.length} saturated window${this.ranges.length === 1 ? '' : 's'} in this history.`
      : 'No saturated window in this history.';
    this.charts.forEach((chart, i) => {
      const values = this.columns[chart.series[0].key].filter((v) => v !== null);
      this.figures[i].dataset.points = String(values.length);
      this.figures[i].dataset.max = String(values.length ? Math.max(...values) : 0);
    });
    if (this.plots.length) this.plots.forEach((plot, i) => plot.setData(this.dataFor(this.charts[i])));
    else this.create();
  }

  dataFor(chart) {
    return [this.columns.x, ...chart.series.map((s) => this.columns[s.key])];
  }

  create() {
    const width = this.width();
    if (width <= 0 || this.plots.length) return;
    const getRanges = () => this.ranges;
    this.plots = this.charts.map((chart, i) => {
      const options = {
        title: chart.title,
        width,
        height: this.height,
        plugins: [shadingPlugin(getRanges)],
        scales: { x: { time: true }, y: { range: nonNegative } },
        axes: [{}, { size: 64 }],
        cursor: { drag: { x: true, y: false } },
        series: [
          {},
          ...chart.series.map((s) => ({
            label: s.label,
            stroke: s.stroke,
            width: 2,
            points: { show: false },
            value: (u, v) => (v === null || v === undefined ? '–' : s.fmt(v)),
          })),
        ],
      };
      return new uPlot(options, this.dataFor(chart), this.figures[i].querySelector('.chart-plot'));
    });
  }

  resize() {
    const width = this.width();
    if (width <= 0) return;
    if (!this.plots.length) {
      this.create();
      return;
    }
    for (const plot of this.plots) {
      if (plot.width !== width) plot.setSize({ width, height: this.height });
    }
  }

  destroy() {
    if (this.observer) this.observer.disconnect();
    for (const plot of this.plots) plot.destroy();
    this.plots = [];
  }
}
