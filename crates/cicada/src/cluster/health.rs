//! The cluster's capacity as its master sees it: which workers are over their limits, how many users the cluster
//! holds back because no worker has room, and the marks and actions that puts in the history, the reports and the
//! web UI. The dispatcher writes it; the collector, the web UI and the reports read it. Every part is bounded: the
//! actions keep the first [`MAX_KEPT_ACTIONS`] and count the rest.

use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Cluster actions kept for the reports; later ones are counted in `actions_not_kept`.
pub(crate) const MAX_KEPT_ACTIONS: usize = 1_000;

/// What the master did about its workers' capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClusterActionKind {
    /// A worker's guard went over a limit: it gets no new users, and users it shed go to the others.
    WorkerCapped,
    /// A worker stayed over a limit while others had room: its users move to them, a fifth at a time.
    MovingOff,
    /// A worker's guard is back under its limits: it takes users again (up to where it struggled, for a while).
    WorkerRecovered,
    /// No worker had room for the whole target: the cluster holds the rest back.
    Hold,
    /// The cluster places its whole target again.
    HoldEnded,
    /// A master (re)started and took over a test its workers were already running.
    Adopted,
}

/// One cluster action, for the reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct ClusterAction {
    /// When, Unix milliseconds.
    pub(crate) unix_ms: u64,
    /// Seconds since the master started.
    pub(crate) run_seconds: f64,
    /// What was done.
    pub(crate) kind: ClusterActionKind,
    /// The worker it is about, if one.
    pub(crate) worker: Option<String>,
    /// Users concerned: the worker's users, or the users held back.
    pub(crate) users: u64,
    /// Why, in words.
    pub(crate) reason: String,
}

/// The cluster's capacity over the run, in the JSON and HTML reports (`cluster`) and the web UI.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct ClusterReport {
    /// Users the cluster holds back now (no worker has room for them).
    pub(crate) users_held_back: u64,
    /// Workers over a limit now.
    pub(crate) workers_over_limits: u64,
    /// Seconds the cluster held users back, in all.
    pub(crate) hold_seconds: f64,
    /// Heartbeats in which a worker said its guard marked the second as saturated.
    pub(crate) saturated_worker_seconds: u64,
    /// Actions, oldest first (at most 1,000).
    pub(crate) actions: Vec<ClusterAction>,
    /// Actions beyond those kept.
    pub(crate) actions_not_kept: u64,
}

#[derive(Default)]
struct HealthState {
    report: ClusterReport,
    /// Something marked the interval since the last take.
    marked: bool,
    holding_since: Option<Instant>,
}

/// The shared capacity state of a master.
pub(crate) struct ClusterHealth {
    started: Instant,
    state: Mutex<HealthState>,
}

impl ClusterHealth {
    pub(crate) fn new() -> ClusterHealth {
        ClusterHealth {
            started: Instant::now(),
            state: Mutex::new(HealthState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker's guard marked a second as saturated: the master's interval is marked too.
    pub(crate) fn worker_saturated(&self) {
        let mut state = self.lock();
        state.marked = true;
        state.report.saturated_worker_seconds += 1;
    }

    /// How many users no worker has room for now (0: the whole target is placed); returns whether a hold began
    /// (`Some(true)`) or ended (`Some(false)`).
    pub(crate) fn set_held_back(&self, users: u64) -> Option<bool> {
        let mut state = self.lock();
        state.report.users_held_back = users;
        match (users > 0, state.holding_since) {
            (true, None) => {
                state.holding_since = Some(Instant::now());
                Some(true)
            }
            (false, Some(since)) => {
                state.report.hold_seconds += since.elapsed().as_secs_f64();
                state.holding_since = None;
                Some(false)
            }
            _ => None,
        }
    }

    pub(crate) fn set_workers_over(&self, workers: u64) {
        self.lock().report.workers_over_limits = workers;
    }

    /// Keep an action for the reports.
    pub(crate) fn action(
        &self,
        kind: ClusterActionKind,
        worker: Option<&str>,
        users: u64,
        reason: String,
    ) {
        let action = ClusterAction {
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            run_seconds: self.started.elapsed().as_secs_f64(),
            kind,
            worker: worker.map(str::to_string),
            users,
            reason,
        };
        let mut state = self.lock();
        if state.report.actions.len() < MAX_KEPT_ACTIONS {
            state.report.actions.push(action);
        } else {
            state.report.actions_not_kept += 1;
        }
    }

    /// The interval's marks since the last call: saturated (a worker said so, or the cluster held users back at
    /// some point), and the users held back now.
    pub(crate) fn take_interval(&self) -> (bool, u64) {
        let mut state = self.lock();
        let held = state.report.users_held_back;
        let marked = std::mem::take(&mut state.marked) || held > 0;
        (marked, held)
    }

    /// The report so far; a hold still open counts up to now.
    pub(crate) fn report(&self) -> ClusterReport {
        self.report_with_actions(MAX_KEPT_ACTIONS)
    }

    /// The report with at most the last `max_actions` actions (the web UI polls it).
    pub(crate) fn report_with_actions(&self, max_actions: usize) -> ClusterReport {
        let state = self.lock();
        let mut report = ClusterReport {
            actions: Vec::new(),
            ..state.report.clone()
        };
        let skip = state.report.actions.len().saturating_sub(max_actions);
        report.actions = state.report.actions[skip..].to_vec();
        if let Some(since) = state.holding_since {
            report.hold_seconds += since.elapsed().as_secs_f64();
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_hold_marks_every_interval_and_counts_its_time() {
        let health = ClusterHealth::new();
        assert_eq!(health.take_interval(), (false, 0));
        assert_eq!(health.set_held_back(40), Some(true));
        assert_eq!(health.set_held_back(30), None);
        assert_eq!(health.take_interval(), (true, 30));
        assert_eq!(
            health.take_interval(),
            (true, 30),
            "a hold marks every interval"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(health.set_held_back(0), Some(false));
        assert_eq!(health.take_interval(), (false, 0));
        assert!(health.report().hold_seconds >= 0.02);
    }

    #[test]
    fn a_saturated_worker_marks_one_interval() {
        let health = ClusterHealth::new();
        health.worker_saturated();
        assert_eq!(health.take_interval(), (true, 0));
        assert_eq!(health.take_interval(), (false, 0));
        assert_eq!(health.report().saturated_worker_seconds, 1);
    }

    #[test]
    fn actions_are_bounded() {
        let health = ClusterHealth::new();
        for i in 0..MAX_KEPT_ACTIONS + 5 {
            health.action(ClusterActionKind::Hold, None, i as u64, String::new());
        }
        let report = health.report();
        assert_eq!(report.actions.len(), MAX_KEPT_ACTIONS);
        assert_eq!(report.actions_not_kept, 5);
        assert_eq!(health.report_with_actions(3).actions.len(), 3);
        assert_eq!(health.report_with_actions(3).actions[2].users, 999);
    }
}
