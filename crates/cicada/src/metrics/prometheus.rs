//! A [`MetricsView`] in Prometheus' text exposition format (version 0.0.4), the body of `GET /metrics`.
//!
//! Written with the `prometheus` crate's data model and text encoder (TiKV's, the other well-kept Rust client): the
//! families are built from the view at each scrape, so nothing is registered and nothing is counted twice.
//! `prometheus-client` was the first choice, but it has no summary type, and the response times are a summary: the
//! stats keep exact percentiles of a sliding window (what a Prometheus summary's quantiles are), not bucket counts.
//! Names follow Prometheus' conventions: a `cicada_` prefix, base units (seconds, bytes, ratios), `_total` on
//! counters.

use ::prometheus::proto::{
    Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary,
};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{GUARD_STATES, MetricsView, RUN_STATES, SUMMARY_QUANTILES};

/// The text format's content type.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The scrape's HTTP answer.
pub(crate) fn response(view: &MetricsView) -> Response {
    match encode(view) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {error}\n"),
        )
            .into_response(),
    }
}

/// The view as Prometheus text.
pub(crate) fn encode(view: &MetricsView) -> Result<String, ::prometheus::Error> {
    let families = families(view);
    ::prometheus::TextEncoder::new().encode_to_string(&families)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_string());
            pair.set_value((*value).to_string());
            pair
        })
        .collect()
}

fn counter(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut metric = Metric::from_label(labels(pairs));
    let mut counter = Counter::default();
    counter.set_value(value);
    metric.set_counter(counter);
    metric
}

fn gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut metric = Metric::from_label(labels(pairs));
    let mut gauge = Gauge::default();
    gauge.set_value(value);
    metric.set_gauge(gauge);
    metric
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// Every family of the view; families without a series (no requests yet, no guard) are left out, as the text
/// format asks.
pub(crate) fn families(view: &MetricsView) -> Vec<MetricFamily> {
    let snapshot = &view.snapshot;
    let mut requests = Vec::with_capacity(snapshot.entries.len());
    let mut failures = Vec::with_capacity(snapshot.entries.len());
    let mut response_times = Vec::with_capacity(snapshot.entries.len());
    for entry in &snapshot.entries {
        let pairs = [
            ("method", entry.method.as_str()),
            ("name", entry.name.as_str()),
        ];
        requests.push(counter(&pairs, entry.num_requests as f64));
        failures.push(counter(&pairs, entry.num_failures as f64));
        let mut summary = Summary::default();
        summary.set_sample_count(entry.num_requests);
        summary.set_sample_sum(entry.avg_ms * entry.num_requests as f64 / 1e3);
        summary.set_quantile(
            SUMMARY_QUANTILES
                .iter()
                .map(|&q| {
                    let mut quantile = Quantile::default();
                    quantile.set_quantile(q);
                    // An empty window has no quantiles: NaN, as Prometheus' own summaries say it.
                    quantile.set_value(entry.current_percentile(q).map_or(f64::NAN, |ms| ms / 1e3));
                    quantile
                })
                .collect(),
        );
        let mut metric = Metric::from_label(labels(&pairs));
        metric.set_summary(summary);
        response_times.push(metric);
    }
    let mut families = Vec::new();
    let mut push = |name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>| {
        if !metrics.is_empty() {
            families.push(family(name, help, kind, metrics));
        }
    };
    push(
        "cicada_requests_total",
        "Requests recorded per (method, name), failures included.",
        MetricType::COUNTER,
        requests,
    );
    push(
        "cicada_failures_total",
        "Failed requests per (method, name).",
        MetricType::COUNTER,
        failures,
    );
    push(
        "cicada_response_time_seconds",
        "Response times per (method, name): quantiles over the stats' current window, sum and count over the run.",
        MetricType::SUMMARY,
        response_times,
    );
    push(
        "cicada_current_rps",
        "Requests per second over the stats' current window, all names together.",
        MetricType::GAUGE,
        vec![gauge(&[], snapshot.total.current_rps)],
    );
    push(
        "cicada_current_failures_per_second",
        "Failures per second over the stats' current window, all names together.",
        MetricType::GAUGE,
        vec![gauge(&[], snapshot.total.current_fail_per_s)],
    );
    push(
        "cicada_requests_cut_off_total",
        "Requests cut short by a stop (not counted as requests or failures).",
        MetricType::COUNTER,
        vec![counter(&[], snapshot.requests_cut_off as f64)],
    );
    push(
        "cicada_samples_over_name_cap_total",
        "Samples recorded in the overflow entry because --max-names names were already taken.",
        MetricType::COUNTER,
        vec![counter(&[], snapshot.overflow.samples_over_name_cap as f64)],
    );
    push(
        "cicada_users",
        "Running users.",
        MetricType::GAUGE,
        vec![gauge(&[], view.users as f64)],
    );
    push(
        "cicada_target_users",
        "The user count the run is heading for.",
        MetricType::GAUGE,
        vec![gauge(&[], view.target_users as f64)],
    );
    push(
        "cicada_users_by_type",
        "Running users per user type.",
        MetricType::GAUGE,
        view.users_by_type
            .iter()
            .map(|(user_type, users)| gauge(&[("user_type", user_type)], *users as f64))
            .collect(),
    );
    push(
        "cicada_run_state",
        "The runner's state: 1 for the current one, 0 for the others.",
        MetricType::GAUGE,
        RUN_STATES
            .iter()
            .map(|state| {
                gauge(
                    &[("state", state)],
                    f64::from(u8::from(*state == view.run_state)),
                )
            })
            .collect(),
    );
    if !view.arrival.is_empty() {
        push_arrival(&mut push, &view.arrival);
    }
    if let Some(workers) = view.workers {
        push(
            "cicada_workers",
            "Connected workers (on a master).",
            MetricType::GAUGE,
            vec![gauge(&[], workers as f64)],
        );
    }
    if let Some(generator) = &view.generator {
        push_generator(&mut push, generator);
    }
    families
}

/// The arrival-rate types' families: iterations started and dropped (by reason) and the target rate.
fn push_arrival(
    push: &mut impl FnMut(&str, &str, MetricType, Vec<Metric>),
    arrival: &[crate::user::ArrivalReport],
) {
    push(
        "cicada_iterations_started_total",
        "Iterations an arrival-rate type started.",
        MetricType::COUNTER,
        arrival
            .iter()
            .map(|a| counter(&[("user_type", &a.user_type)], a.started as f64))
            .collect(),
    );
    push(
        "cicada_iterations_dropped_total",
        "Iterations an arrival-rate type could not start when due, by reason: max_concurrent (every instance \
         busy), guard (the resource guard held the generator), late (the scheduler woke more than a period late).",
        MetricType::COUNTER,
        arrival
            .iter()
            .flat_map(|a| {
                a.dropped_by_reason().map(|(reason, dropped)| {
                    counter(
                        &[("user_type", &a.user_type), ("reason", reason)],
                        dropped as f64,
                    )
                })
            })
            .collect(),
    );
    push(
        "cicada_arrival_rate",
        "The iterations per second an arrival-rate type is asked to start now.",
        MetricType::GAUGE,
        arrival
            .iter()
            .map(|a| gauge(&[("user_type", &a.user_type)], a.rate_per_s))
            .collect(),
    );
}

fn push_generator(
    push: &mut impl FnMut(&str, &str, MetricType, Vec<Metric>),
    generator: &super::GeneratorView,
) {
    push(
        "cicada_guard_state",
        "The resource guard's phase: 1 for the current one, 0 for the others.",
        MetricType::GAUGE,
        GUARD_STATES
            .iter()
            .map(|(phase, name)| {
                gauge(
                    &[("state", name)],
                    f64::from(u8::from(*phase == generator.phase)),
                )
            })
            .collect(),
    );
    push(
        "cicada_generator_saturated",
        "1 while the generator is over a limit (CPU, memory or scheduler lag): latencies then are not to be trusted.",
        MetricType::GAUGE,
        vec![gauge(&[], f64::from(u8::from(generator.saturated)))],
    );
    push(
        "cicada_generator_saturated_samples_total",
        "The guard's samples (about one a second) in which the generator was saturated.",
        MetricType::COUNTER,
        vec![counter(&[], generator.saturated_samples as f64)],
    );
    push(
        "cicada_generator_users_held_back",
        "Users the guard holds back (the target minus its cap).",
        MetricType::GAUGE,
        vec![gauge(&[], generator.users_held_back as f64)],
    );
    push(
        "cicada_generator_memory_limit_bytes",
        "The memory limit in force: the container's, else the machine's.",
        MetricType::GAUGE,
        vec![gauge(&[], generator.memory_limit_bytes as f64)],
    );
    push(
        "cicada_generator_max_memory_bytes",
        "The guard's memory bar (--max-memory, resolved).",
        MetricType::GAUGE,
        vec![gauge(&[], generator.max_memory_bytes as f64)],
    );
    if let Some(cpu) = generator.cpu_ratio {
        push(
            "cicada_generator_cpu_ratio",
            "The generator's CPU as a share of the CPU available to it (cores and quota), 0 to 1.",
            MetricType::GAUGE,
            vec![gauge(&[], cpu)],
        );
    }
    if let Some(memory) = generator.memory_bytes {
        push(
            "cicada_generator_memory_bytes",
            "The generator's memory counted against the limit (RSS, or the container's working set when larger).",
            MetricType::GAUGE,
            vec![gauge(&[], memory as f64)],
        );
    }
    if let Some(lag) = generator.lag_seconds {
        push(
            "cicada_generator_lag_seconds",
            "The worst scheduler (event-loop) lag since the guard's previous sample.",
            MetricType::GAUGE,
            vec![gauge(&[], lag)],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::GuardPhase;
    use crate::metrics::GeneratorView;
    use cicada_stats::{EntryStats, StatsSnapshot};

    pub(crate) fn view_with(entries: Vec<EntryStats>) -> MetricsView {
        MetricsView {
            snapshot: StatsSnapshot {
                entries,
                ..StatsSnapshot::default()
            },
            run_state: "running",
            users: 3,
            target_users: 5,
            users_by_type: vec![("Visitor".into(), 2), ("Buyer".into(), 1)],
            generator: Some(GeneratorView {
                phase: GuardPhase::Holding,
                cpu_ratio: Some(0.5),
                memory_bytes: Some(1 << 20),
                lag_seconds: Some(0.002),
                ..GeneratorView::default()
            }),
            workers: None,
            arrival: Vec::new(),
            host: "http://127.0.0.1:1".into(),
        }
    }

    fn entry(name: &str, requests: u64, failures: u64) -> EntryStats {
        EntryStats {
            method: "GET".into(),
            name: name.into(),
            num_requests: requests,
            num_failures: failures,
            avg_ms: 20.0,
            current_percentiles: vec![(0.5, 10.0), (0.9, 30.0), (0.95, 40.0), (0.99, 50.0)],
            ..EntryStats::default()
        }
    }

    fn sample<'a>(
        scrape: &'a prometheus_parse::Scrape,
        name: &str,
        label: Option<(&str, &str)>,
    ) -> &'a prometheus_parse::Sample {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("no {name} {label:?}"))
    }

    #[test]
    fn the_text_parses_and_says_what_the_view_holds() {
        let mut view = view_with(vec![entry("/a \"quoted\"\nname", 10, 2), entry("/b", 4, 0)]);
        view.arrival = vec![crate::user::ArrivalReport {
            user_type: "Checkout".into(),
            rate_per_s: 20.0,
            max_concurrent: 5,
            due: 100,
            started: 90,
            completed: 88,
            dropped: 10,
            dropped_max_concurrent: 7,
            dropped_guard: 2,
            dropped_late: 1,
            peak_concurrent: 5,
            instances_created: 5,
            instances_retired: 0,
            active_s: 5.0,
        }];
        let text = encode(&view).unwrap();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let requests = sample(&scrape, "cicada_requests_total", Some(("name", "/b")));
        assert_eq!(requests.value, prometheus_parse::Value::Counter(4.0));
        // A name with quotes and a newline is escaped, as the format asks (the test parser does not unescape).
        assert!(
            text.contains(r#"cicada_failures_total{method="GET",name="/a \"quoted\"\nname"} 2"#),
            "{text}"
        );
        let summary = sample(
            &scrape,
            "cicada_response_time_seconds",
            Some(("name", "/b")),
        );
        match &summary.value {
            prometheus_parse::Value::Summary(quantiles) => {
                let p95 = quantiles.iter().find(|q| q.quantile == 0.95).unwrap();
                assert!((p95.count - 0.040).abs() < 1e-9, "{quantiles:?}");
            }
            other => panic!("not a summary: {other:?}"),
        }
        let sum = sample(
            &scrape,
            "cicada_response_time_seconds_sum",
            Some(("name", "/b")),
        );
        assert!(
            matches!(sum.value, prometheus_parse::Value::Untyped(v) if (v - 0.08).abs() < 1e-9),
            "{sum:?}"
        );
        let by_type = sample(
            &scrape,
            "cicada_users_by_type",
            Some(("user_type", "Visitor")),
        );
        assert_eq!(by_type.value, prometheus_parse::Value::Gauge(2.0));
        let holding = sample(&scrape, "cicada_guard_state", Some(("state", "holding")));
        assert_eq!(holding.value, prometheus_parse::Value::Gauge(1.0));
        let normal = sample(&scrape, "cicada_guard_state", Some(("state", "normal")));
        assert_eq!(normal.value, prometheus_parse::Value::Gauge(0.0));
        let running = sample(&scrape, "cicada_run_state", Some(("state", "running")));
        assert_eq!(running.value, prometheus_parse::Value::Gauge(1.0));
        let started = sample(&scrape, "cicada_iterations_started_total", None);
        assert_eq!(started.value, prometheus_parse::Value::Counter(90.0));
        let dropped = sample(
            &scrape,
            "cicada_iterations_dropped_total",
            Some(("reason", "max_concurrent")),
        );
        assert_eq!(dropped.value, prometheus_parse::Value::Counter(7.0));
        let rate = sample(
            &scrape,
            "cicada_arrival_rate",
            Some(("user_type", "Checkout")),
        );
        assert_eq!(rate.value, prometheus_parse::Value::Gauge(20.0));
        let cpu = sample(&scrape, "cicada_generator_cpu_ratio", None);
        assert_eq!(cpu.value, prometheus_parse::Value::Gauge(0.5));
        assert!(text.contains("# TYPE cicada_response_time_seconds summary"));
        assert!(
            !text.contains("cicada_workers"),
            "only a master has workers"
        );
    }

    #[test]
    fn an_empty_run_still_encodes() {
        let mut view = view_with(Vec::new());
        view.generator = None;
        view.workers = Some(2);
        let text = encode(&view).unwrap();
        assert!(!text.contains("cicada_requests_total"));
        assert!(text.contains("cicada_workers 2"));
        assert!(!text.contains("cicada_guard_state"));
    }
}
