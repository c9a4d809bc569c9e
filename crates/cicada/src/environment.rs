//! The environment of a run: what event listeners and tasks can reach (stats, runner, options, host, custom
//! messages, test data).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use cicada_stats::Stats;

use crate::events::Events;
use crate::options::Options;
use crate::runner::RunnerHandle;
use crate::user::arrival::{ArrivalCounters, ArrivalInterval, ArrivalReport};
use crate::user::schedule::{ScheduleLag, ScheduleReport};

/// Everything a run shares: handed to every lifecycle event listener.
pub struct Environment {
    pub(crate) stats: Stats,
    pub(crate) runner: RunnerHandle,
    pub(crate) events: Arc<Events>,
    pub(crate) options: Arc<Options>,
    host: Mutex<String>,
    /// `i32::MIN` means "not set by a listener".
    exit_code_override: AtomicI32,
    /// Paced user types' schedule lateness; one entry per user type.
    schedules: Mutex<Vec<Arc<ScheduleLag>>>,
    /// Arrival-rate types' iteration counts; one entry per arrival-rate type.
    arrivals: Mutex<Vec<Arc<ArrivalCounters>>>,
    /// On a master: its workers' arrival-rate counts summed, and the totals the history took last.
    cluster_arrival: Mutex<Option<(Vec<ArrivalReport>, ArrivalInterval)>>,
    pub(crate) messages: crate::messages::Messages,
    pub(crate) data: crate::data::TestData,
}

impl Environment {
    pub(crate) fn new(
        stats: Stats,
        runner: RunnerHandle,
        events: Arc<Events>,
        options: Arc<Options>,
        host: String,
        (messages, data): (crate::messages::Messages, crate::data::TestData),
    ) -> Self {
        Environment {
            stats,
            runner,
            events,
            options,
            host: Mutex::new(host),
            exit_code_override: AtomicI32::new(i32::MIN),
            schedules: Mutex::new(Vec::new()),
            arrivals: Mutex::new(Vec::new()),
            cluster_arrival: Mutex::new(None),
            messages,
            data,
        }
    }

    /// Custom messages: send to the master, to one worker or to all (Locust's `runner.send_message`).
    pub fn messages(&self) -> &crate::messages::Messages {
        &self.messages
    }

    /// The test data sources registered with [`crate::Cicada::data_source`]: push items, count what was handed out.
    pub fn data(&self) -> &crate::data::TestData {
        &self.data
    }

    /// The run's request statistics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Control of the running test: user count, spawn rate, stop.
    pub fn runner(&self) -> &RunnerHandle {
        &self.runner
    }

    /// The parsed command line and configuration.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The host users send requests to when their type sets none.
    pub fn host(&self) -> String {
        self.host.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_host(&self, host: &str) {
        *self.host.lock().unwrap_or_else(|p| p.into_inner()) = host.to_string();
    }

    /// Set the process exit code (Locust's `environment.process_exit_code`), typically from a `quitting` listener.
    pub fn set_exit_code(&self, code: i32) {
        self.exit_code_override.store(code, Ordering::Relaxed);
    }

    pub(crate) fn register_schedule(&self, schedule: Arc<ScheduleLag>) {
        self.schedules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(schedule);
    }

    /// How late paced tasks started, per paced user type.
    pub fn schedule_reports(&self) -> Vec<ScheduleReport> {
        self.schedules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| s.report())
            .collect()
    }

    pub(crate) fn register_arrival(&self, counters: Arc<ArrivalCounters>) {
        self.arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(counters);
    }

    /// On a master: the arrival-rate counts of the whole cluster (its workers' summed), which the reports, the
    /// history and the metrics read instead of this process's own (a master runs no iterations).
    pub(crate) fn set_cluster_arrival(&self, totals: Vec<ArrivalReport>) {
        let mut cluster = self
            .cluster_arrival
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match cluster.as_mut() {
            Some((reports, _)) => *reports = totals,
            None => *cluster = Some((totals, ArrivalInterval::default())),
        }
    }

    /// Iterations due, started and dropped, per arrival-rate type (empty when the test has none); a cluster's on a
    /// master.
    pub fn arrival_reports(&self) -> Vec<ArrivalReport> {
        if let Some((reports, _)) = &*self
            .cluster_arrival
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            return reports.clone();
        }
        self.arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|a| a.report())
            .collect()
    }

    /// The names of the arrival-rate types.
    pub(crate) fn arrival_type_names(&self) -> Vec<String> {
        self.arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|a| a.user_type().to_string())
            .collect()
    }

    /// Iterations of every arrival-rate type since the last call; `None` when the test has no such type.
    pub(crate) fn take_arrival_interval(&self) -> Option<ArrivalInterval> {
        if let Some((reports, taken)) = &mut *self
            .cluster_arrival
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            let totals = ArrivalInterval {
                started: reports.iter().map(|r| r.started).sum(),
                dropped: reports.iter().map(|r| r.dropped).sum(),
                dropped_by_guard: reports.iter().map(|r| r.dropped_guard).sum(),
            };
            let interval = ArrivalInterval {
                started: totals.started.saturating_sub(taken.started),
                dropped: totals.dropped.saturating_sub(taken.dropped),
                dropped_by_guard: totals
                    .dropped_by_guard
                    .saturating_sub(taken.dropped_by_guard),
            };
            *taken = totals;
            return Some(interval);
        }
        let arrivals = self.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        (!arrivals.is_empty()).then(|| {
            arrivals.iter().map(|a| a.take_interval()).fold(
                ArrivalInterval::default(),
                |sum, one| ArrivalInterval {
                    started: sum.started + one.started,
                    dropped: sum.dropped + one.dropped,
                    dropped_by_guard: sum.dropped_by_guard + one.dropped_by_guard,
                },
            )
        })
    }

    pub(crate) fn exit_code_override(&self) -> Option<i32> {
        match self.exit_code_override.load(Ordering::Relaxed) {
            i32::MIN => None,
            code => Some(code),
        }
    }
}
