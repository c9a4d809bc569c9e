//! A worker's run: the runner takes its share of the users from the master's spawn commands, every second the
//! statistics recorded since the last second go to the master as a delta (with a heartbeat that carries the
//! runner's state, the process's CPU and memory, and the guard's state), and a stop or quit from the master stops
//! the users and flushes the last delta before saying so. Without a master the worker keeps its users and its
//! deltas (the session reconnects, bounded buffer), and after `--master-timeout` it stops and exits with
//! [`super::EXIT_MASTER_LOST`]. A worker writes no report: the master does.

use std::time::Duration;

use cicada_cluster::{
    Command as ClusterCommand, WorkerConfig, WorkerEvent, WorkerHandle, WorkerState, WorkerStatus,
};

use super::{EXIT_MASTER_LOST, SpawnSettings, WorkerRunState, encode_delta};
use crate::app::EXIT_USAGE;
use crate::runner::RunnerState;

/// How long a quitting worker waits for the master to take its last delta.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Start the worker's session with its master.
pub(crate) fn connect(
    options: &crate::options::Options,
    identity: cicada_cluster::TestIdentity,
) -> Result<(WorkerHandle, tokio::sync::mpsc::Receiver<WorkerEvent>), String> {
    cicada_cluster::WorkerClient::start(config(options, identity)?)
        .map_err(|error| error.to_string())
}

/// The session's settings from the command line: the master's address, the token, TLS, `--master-timeout`.
pub(crate) fn config(
    options: &crate::options::Options,
    identity: cicada_cluster::TestIdentity,
) -> Result<WorkerConfig, String> {
    let tls = match &options.cluster_tls_ca {
        Some(ca) => {
            let client = options
                .cluster_tls_cert
                .as_deref()
                .zip(options.cluster_tls_key.as_deref());
            Some(
                cicada_cluster::WorkerTls::from_files(ca, client).map_err(|error| {
                    format!("--cluster-tls-ca/--cluster-tls-cert/--cluster-tls-key: {error}")
                })?,
            )
        }
        None => None,
    };
    let config = WorkerConfig {
        tls,
        master_host: options.master_host.clone(),
        master_port: options.master_port,
        version: super::VERSION.to_string(),
        test: identity,
        token: options
            .cluster_token
            .as_deref()
            .and_then(cicada_cluster::Token::new),
        master_lost_after: options.master_timeout,
        ..WorkerConfig::default()
    };
    Ok(config)
}

/// What the worker's loop needs from the run.
pub(crate) struct WorkerRun<'a> {
    pub(crate) env: &'a std::sync::Arc<crate::environment::Environment>,
    pub(crate) spawners: &'a [std::sync::Arc<dyn crate::user::run::SpawnUser>],
    pub(crate) guard: Option<&'a crate::guard::Guard>,
    pub(crate) signals: &'a mut crate::signals::StopSignals,
    pub(crate) handle: WorkerHandle,
    pub(crate) events: tokio::sync::mpsc::Receiver<WorkerEvent>,
}

impl WorkerRun<'_> {
    /// Serve the master until it says quit (exit code 0), refuses this worker (2), or is lost (3), or a signal
    /// asks this worker to leave (its users stop, its last delta is sent).
    pub(crate) async fn run(mut self) -> i32 {
        let runner = self.env.runner.clone();
        // This worker's log lines go to the master for as long as this run lasts.
        let _forwarding = super::forward_logs::attach(&self.handle);
        // The first take starts the tracking of per-second data: from here on every delta is complete.
        let _ = self.env.stats.take_delta();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop_pending = false;
        let mut host = String::new();
        let mut run_state = WorkerRunState::default();
        let code = loop {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(WorkerEvent::Command { command, .. }) => match command {
                        ClusterCommand::Spawn(spawn) => {
                            let settings = SpawnSettings::decode(&spawn.settings);
                            runner.set_stop_timeout(Duration::from_millis(settings.stop_timeout_ms));
                            if self.env.stats.epoch() != settings.epoch {
                                // A new test on the master: this worker's counts start afresh, at its epoch.
                                self.send_delta();
                                self.env.stats.reset_to_epoch(settings.epoch);
                            }
                            if let Some(new_host) = spawn.host.filter(|h| *h != host) {
                                for spawner in self.spawners {
                                    if let Err(error) = spawner.set_host(&new_host) {
                                        tracing::error!("worker: the master's host {new_host:?}: {error}");
                                    }
                                }
                                host = new_host;
                            }
                            let counts: Vec<u64> = runner
                                .type_names()
                                .iter()
                                .map(|name| spawn.users_by_type.get(name).copied().unwrap_or(0))
                                .collect();
                            run_state.share = counts.clone();
                            run_state.settings = settings;
                            runner.set_arrival_split(crate::user::arrival::ClusterSplit {
                                share: settings.arrival_share,
                                rate: settings.arrival_rate,
                                max_concurrent: settings.max_concurrent,
                            });
                            runner.start_share(counts, spawn.spawn_rate);
                            // The master hears at once what this worker now runs (it may restart and adopt it).
                            self.send_status(&mut run_state, false);
                        }
                        ClusterCommand::Stop => {
                            run_state.share.iter_mut().for_each(|c| *c = 0);
                            runner.stop();
                            stop_pending = true;
                        }
                        ClusterCommand::Quit => break 0,
                    },
                    Some(WorkerEvent::Connected { master_id, resumed, .. }) => {
                        tracing::info!("worker: attached to master {master_id}{}", if resumed { " (resumed)" } else { "" });
                    }
                    Some(WorkerEvent::Disconnected { reason }) => {
                        tracing::warn!("worker: lost the master ({reason}); keeping the users and reconnecting");
                    }
                    // Handed to its handler's own task (or, for test data, to the users' queue): never waited for.
                    Some(WorkerEvent::Custom { kind, payload }) => {
                        self.env.messages.deliver(crate::messages::MessageSource::Master, kind, payload);
                    }
                    Some(WorkerEvent::Refused(refusal)) => {
                        eprintln!("error: the master refused this worker: {refusal}");
                        break i32::from(EXIT_USAGE);
                    }
                    Some(WorkerEvent::MasterLost { without_master_for }) => {
                        eprintln!(
                            "error: no master for {}: stopping the users and exiting (--master-timeout)",
                            humantime::format_duration(Duration::from_secs(without_master_for.as_secs()))
                        );
                        break EXIT_MASTER_LOST;
                    }
                    None => break EXIT_MASTER_LOST,
                },
                signal = self.signals.next() => {
                    tracing::info!("{}: the worker stops its users and leaves", signal.stop_reason());
                    break 0;
                }
                _ = tick.tick() => {
                    if runner.state() == RunnerState::Quitting {
                        // Only this worker's guard quits its runner: it cannot run users here any more. It leaves,
                        // so that the master places its share on the others.
                        let reason = self
                            .guard
                            .and_then(|g| g.report_with_actions(0).stopped_test)
                            .unwrap_or_else(|| "its runner stopped".into());
                        eprintln!(
                            "error: the resource guard stopped this worker ({reason}): it leaves the cluster, and \
                             the master moves its users to the other workers"
                        );
                        break crate::app::EXIT_GUARD_STOPPED;
                    }
                    self.send_delta();
                    self.send_status(&mut run_state, true);
                    if stop_pending && matches!(runner.state(), RunnerState::Stopped | RunnerState::Ready) {
                        stop_pending = false;
                        // Every thread's last samples, before the master hears that this worker stopped.
                        self.env.stats.collect_final(Duration::from_secs(3));
                        self.send_delta();
                        self.handle.stopped();
                    }
                }
            }
        };
        runner.quit();
        let _ = runner
            .wait_for_state(Duration::from_secs(3_600), |s| s == RunnerState::Quitting)
            .await;
        self.env.stats.collect_final(Duration::from_secs(3));
        self.send_delta();
        self.handle.stopped();
        let report = self.handle.shutdown(FLUSH_TIMEOUT).await;
        if !report.flushed && code == 0 {
            tracing::warn!(
                "worker: {} statistics deltas did not reach the master before the worker left",
                report.unacknowledged
            );
        }
        code
    }

    fn send_delta(&self) {
        let delta = self.env.stats.take_delta();
        if delta.is_empty() {
            return;
        }
        if let Some(bytes) = encode_delta(&delta) {
            match self.handle.send_delta(bytes) {
                Ok(_) => self.env.events.fire_cluster(
                    self.env,
                    &crate::events::ClusterEvent::ReportToMaster {
                        requests: delta.num_requests(),
                    },
                ),
                Err(error) => {
                    tracing::warn!("worker: a statistics delta could not be queued: {error}");
                }
            }
        }
    }

    /// Set the status the next heartbeats carry; `tick`: once a second, when the guard's marks are taken.
    fn send_status(&self, run_state: &mut WorkerRunState, tick: bool) {
        let runner = &self.env.runner;
        let state = match runner.state() {
            RunnerState::Ready => WorkerState::Ready,
            RunnerState::Spawning => WorkerState::Spawning,
            RunnerState::Running => WorkerState::Running,
            RunnerState::Stopping => WorkerState::Stopping,
            RunnerState::Stopped | RunnerState::Quitting => WorkerState::Stopped,
        };
        let usage = self.guard.and_then(crate::guard::Guard::latest);
        // A worker runs no collector: its guard's interval marks are taken here, once a second, for the master.
        let held_back = runner
            .guard_cap()
            .map_or(0, |cap| runner.target_user_count().saturating_sub(cap));
        if tick {
            let marked = self
                .guard
                .is_some_and(|g| g.take_interval(held_back).saturated);
            // A mark stays for two ticks: heartbeats go out on their own one-second clock, and a mark set and
            // cleared between two of them would never reach the master. The master may mark one second more.
            run_state.saturated_ticks = if marked {
                2
            } else {
                run_state.saturated_ticks.saturating_sub(1)
            };
            run_state.saturated = run_state.saturated_ticks > 0;
        }
        run_state.epoch = self.env.stats.epoch();
        run_state.arrival = self.env.arrival_reports();
        let guard_state = self
            .guard
            .map(|g| serde_json::to_vec(&g.report_with_actions(0).status).unwrap_or_default())
            .unwrap_or_default();
        self.env.events.fire_cluster(
            self.env,
            &crate::events::ClusterEvent::HeartbeatSent {
                user_count: runner.user_count(),
            },
        );
        self.handle.set_status(WorkerStatus {
            state,
            user_count: runner.user_count(),
            cpu_percent: usage.as_ref().map_or(0.0, |u| u.cpu_percent_of_core as f32),
            memory_bytes: usage.as_ref().map_or(0, |u| u.rss_bytes),
            guard_state: guard_state.into(),
            run_state: run_state.encode(),
        });
    }
}
