//! Once a second: merge the stats shards, reset them once all users run (`--reset-stats`), append the live history
//! CSV row with the generator's state, keep a history point every [`HISTORY_INTERVAL`] for charts and reports, and
//! print the stats table every [`PRINT_INTERVAL`].

use std::time::{Duration, Instant};

use crate::report::HistoryCsv as HistoryCsvWriter;
use cicada_stats::GeneratorSample;

use super::setup::{RunSetup, unix_now};
use crate::report;
use crate::runner::RunnerState;

/// How often the stats table is printed while running.
const PRINT_INTERVAL: Duration = Duration::from_secs(2);
/// How often a history point is kept (for charts and reports).
const HISTORY_INTERVAL: Duration = Duration::from_secs(2);

/// The collector's state between seconds.
pub(super) struct Collector {
    last_print: Instant,
    last_history: Instant,
    /// When the previous tick took the guard's interval: a marked interval marks the stats from here to now.
    last_tick: Instant,
    reset_done: bool,
    /// The generator's worst state since the last history point.
    generator_since_point: Option<GeneratorSample>,
    print_stats: bool,
    history_csv: Option<HistoryCsvWriter>,
}

impl Collector {
    pub(super) fn new(setup: &mut RunSetup) -> Collector {
        let history_csv = setup.history_csv.take();
        let options = &setup.options;
        Collector {
            history_csv,
            last_print: Instant::now(),
            last_history: Instant::now(),
            last_tick: Instant::now(),
            reset_done: !options.reset_stats,
            generator_since_point: None,
            print_stats: (options.headless && !options.only_summary) || options.print_stats,
        }
    }

    /// One second's collection.
    pub(super) fn tick(&mut self, setup: &RunSetup) {
        let RunSetup {
            stats,
            runner,
            guard,
            env,
            events,
            options,
            ..
        } = setup;
        stats.collect();
        if !self.reset_done && runner.state() == RunnerState::Running {
            self.reset_done = true;
            stats.reset();
            events.fire_env("reset_stats", &events.reset_stats, env);
        }
        let user_count = runner.user_count();
        let held_back = runner
            .guard_cap()
            .map_or(0, |cap| runner.target_user_count().saturating_sub(cap));
        let mut generator = guard.as_ref().map(|g| g.take_interval(held_back));
        if let Some(health) = &setup.cluster_health {
            // A master's interval is marked when a worker's guard marked it, or when the cluster held users back.
            let (marked, cluster_held_back) = health.take_interval();
            let sample = generator.get_or_insert_with(GeneratorSample::default);
            sample.saturated |= marked;
            sample.users_held_back += cluster_held_back;
        }
        add_arrival_interval(&mut generator, env);
        let now = Instant::now();
        if generator.as_ref().is_some_and(|g| g.saturated) {
            stats.mark_saturated(self.last_tick, now);
        }
        self.last_tick = now;
        if let Some(writer) = self.history_csv.as_mut()
            && let Err(error) = writer.append_with_generator(
                &stats.snapshot(),
                user_count,
                unix_now(),
                generator.as_ref(),
            )
        {
            tracing::warn!("writing the history CSV failed: {error}");
        }
        self.generator_since_point = merge_generator(self.generator_since_point, generator);
        if self.last_history.elapsed() >= HISTORY_INTERVAL {
            self.last_history = Instant::now();
            let mut point = stats.history_point(user_count);
            point.generator = self.generator_since_point.take();
            stats.push_history_point(point);
        }
        if self.print_stats && self.last_print.elapsed() >= PRINT_INTERVAL {
            self.last_print = Instant::now();
            let mut text = cicada_stats::report::console::stats_table(&stats.snapshot());
            if let Some(guard) = guard {
                text.push_str(&report::generator_line(guard, held_back));
            }
            if let Some(master) = &setup.cluster {
                let report = setup
                    .cluster_health
                    .as_ref()
                    .map(|h| h.report_with_actions(0))
                    .unwrap_or_default();
                text.push_str(&workers_line(&master.workers(), &report));
            }
            report::print_console(options, &text);
        }
    }

    /// The live history CSV, for its last row and its check at the end.
    pub(super) fn take_history_csv(&mut self) -> Option<HistoryCsvWriter> {
        self.history_csv.take()
    }

    /// The last point while users still run, when the driver says the run is over.
    pub(super) fn last_running_point(&mut self, setup: &RunSetup) {
        setup.stats.collect();
        let mut point = setup.stats.history_point(setup.runner.user_count());
        let mut last = setup.guard.as_ref().map(|g| g.take_interval(0));
        add_arrival_interval(&mut last, &setup.env);
        if last.as_ref().is_some_and(|g| g.saturated) {
            setup.stats.mark_saturated(self.last_tick, Instant::now());
        }
        point.generator = merge_generator(self.generator_since_point.take(), last);
        setup.stats.push_history_point(point);
    }
}

/// Add the arrival-rate types' iterations of the interval to the generator's sample (made when the guard is off).
/// An interval in which the guard's hold dropped iterations is marked saturated, as the guard's marks are.
pub(super) fn add_arrival_interval(
    generator: &mut Option<GeneratorSample>,
    env: &crate::environment::Environment,
) {
    if let Some(arrival) = env.take_arrival_interval() {
        let sample = generator.get_or_insert_with(GeneratorSample::default);
        sample.iterations_started += arrival.started;
        sample.iterations_dropped += arrival.dropped;
        sample.saturated |= arrival.dropped_by_guard > 0;
    }
}

/// A master's console line about its workers.
fn workers_line(
    workers: &[cicada_cluster::WorkerInfo],
    health: &crate::cluster::health::ClusterReport,
) -> String {
    let missing = workers
        .iter()
        .filter(|w| w.presence == cicada_cluster::Presence::Missing)
        .count();
    let users: u64 = workers.iter().map(|w| w.status.user_count).sum();
    let mut line = format!(
        "Workers: {} connected, {missing} missing, {users} users",
        workers.len() - missing
    );
    if missing > 0 {
        let names: Vec<&str> = workers
            .iter()
            .filter(|w| w.presence == cicada_cluster::Presence::Missing)
            .take(5)
            .map(|w| w.id.as_str())
            .collect();
        line.push_str(&format!(" (missing: {})", names.join(", ")));
    }
    if health.workers_over_limits > 0 {
        line.push_str(&format!(
            " | {} over their limits",
            health.workers_over_limits
        ));
    }
    if health.users_held_back > 0 {
        line.push_str(&format!(
            " | {} users held back: no worker has room",
            health.users_held_back
        ));
    }
    line.push('\n');
    line
}

/// Combine the generator's state over two intervals (worst of each).
fn merge_generator(
    a: Option<GeneratorSample>,
    b: Option<GeneratorSample>,
) -> Option<GeneratorSample> {
    match (a, b) {
        (Some(a), Some(b)) => Some(GeneratorSample {
            saturated: a.saturated || b.saturated,
            cpu_percent: max_of(a.cpu_percent, b.cpu_percent),
            rss_bytes: max_of(a.rss_bytes, b.rss_bytes),
            lag_ms: max_of(a.lag_ms, b.lag_ms),
            users_held_back: a.users_held_back.max(b.users_held_back),
            // Counts, not states: two intervals' iterations add up.
            iterations_started: a.iterations_started + b.iterations_started,
            iterations_dropped: a.iterations_dropped + b.iterations_dropped,
        }),
        (a, b) => a.or(b),
    }
}

/// The larger of two measurements, either of which may be missing.
fn max_of<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b > a { b } else { a }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_the_worst_and_a_missing_value_stays_missing() {
        let a = GeneratorSample {
            saturated: false,
            cpu_percent: None,
            rss_bytes: Some(10),
            lag_ms: Some(5.0),
            users_held_back: 3,
            iterations_started: 10,
            iterations_dropped: 2,
        };
        let b = GeneratorSample {
            saturated: true,
            cpu_percent: None,
            rss_bytes: Some(7),
            lag_ms: Some(9.0),
            users_held_back: 1,
            iterations_started: 5,
            iterations_dropped: 0,
        };
        let merged = merge_generator(Some(a), Some(b)).unwrap();
        assert!(merged.saturated);
        assert_eq!(merged.cpu_percent, None, "not measured in either interval");
        assert_eq!(merged.rss_bytes, Some(10));
        assert_eq!(merged.lag_ms, Some(9.0));
        assert_eq!(merged.users_held_back, 3);
        assert_eq!(
            (merged.iterations_started, merged.iterations_dropped),
            (15, 2),
            "iterations add up"
        );
        assert_eq!(merge_generator(None, Some(b)), Some(b));
    }
}
