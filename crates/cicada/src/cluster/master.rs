//! The master's dispatcher: it stands in for the runner's actor on a master (same commands, same published state),
//! but runs no user. It owns the target for the whole cluster and splits it across the connected workers
//! ([`split_across`], weighted by each worker's cores), sends each its share with a spawn rate that adds up to the
//! cluster's, and splits again whenever a worker comes, goes missing, comes back or leaves. It merges every
//! worker's statistics deltas into the master's statistics, so the console, the reports and the web UI are those
//! of one process. A stop waits until every connected worker said its users stopped and its last delta was sent
//! (bounded by `--stop-timeout` plus a margin), so that counts are complete.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cicada_cluster::{
    Command as ClusterCommand, MasterEvent, MasterHandle, Presence, Spawn, WorkerId, WorkerState,
    WorkerStatus,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{SpawnSettings, decode_delta};
use crate::environment::Environment;
use crate::events::ClusterEvent;
use crate::runner::plan::split_across;
use crate::runner::{Command, RunnerState, Target};

/// How long a stop waits for workers beyond `--stop-timeout` (their last delta, their `Stopped` marker).
const STOP_MARGIN: Duration = Duration::from_secs(10);
/// How long a quitting master waits for its workers to take the quit and leave.
const LEAVE_WAIT: Duration = Duration::from_secs(5);

/// What the master knows of one worker.
#[derive(Debug, Clone)]
struct WorkerView {
    connected: bool,
    cores: u32,
    status: WorkerStatus,
    /// Its share of the current target, per user type.
    share: Vec<u64>,
    /// It said its users stopped since the last stop command.
    stopped: bool,
    /// The statistics epoch its last spawn command carried.
    epoch: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Idle,
    Spawning,
    Running,
    Stopping {
        until: Instant,
        quit: bool,
    },
    /// Quit was sent; waiting (bounded) for the workers to leave, so none is left waiting for a master that is gone.
    Leaving {
        until: Instant,
    },
}

/// The dispatcher.
pub(crate) struct Dispatcher {
    env: Arc<Environment>,
    master: MasterHandle,
    /// `(weight, fixed count)` per user type, registration order.
    specs: Vec<(u32, Option<u64>)>,
    target: Target,
    workers: BTreeMap<WorkerId, WorkerView>,
    phase: Phase,
    stop_timeout: Duration,
}

impl Dispatcher {
    pub(crate) fn new(
        env: Arc<Environment>,
        master: MasterHandle,
        specs: Vec<(u32, Option<u64>)>,
        stop_timeout: Duration,
    ) -> Dispatcher {
        Dispatcher {
            env,
            master,
            specs,
            target: Target {
                users: 0,
                spawn_rate: 1.0,
                user_types: None,
            },
            workers: BTreeMap::new(),
            phase: Phase::Idle,
            stop_timeout,
        }
    }

    /// Run until a quit is done; returns when every worker was told to quit.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::Receiver<MasterEvent>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The phases and the published counts move on the timer, not after each event: a master of 1,000
            // workers gets 2,000 heartbeats and deltas a second, and a pass over every worker after each of them
            // would grow with the square of the workers.
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Start(target)) => self.start(target),
                    Some(Command::Stop) => self.stop(false),
                    Some(Command::Quit) | None => self.stop(true),
                    // A master runs no users: its guard warns and marks, there is nothing to shed here.
                    Some(Command::Guard(_) | Command::StartShare(..) | Command::StopTimeout(_)) => {}
                },
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => self.stop(true),
                },
                _ = tick.tick() => {
                    if self.on_tick() {
                        return;
                    }
                }
            }
        }
    }

    fn runner(&self) -> &crate::runner::RunnerHandle {
        &self.env.runner
    }

    fn start(&mut self, mut target: Target) {
        if matches!(
            self.phase,
            Phase::Stopping { quit: true, .. } | Phase::Leaving { .. }
        ) {
            return;
        }
        if matches!(self.phase, Phase::Idle) {
            self.env
                .events
                .fire_env("test_start", &self.env.events.test_start, &self.env);
        }
        if !target.spawn_rate.is_finite() || target.spawn_rate <= 0.0 {
            target.spawn_rate = 1.0;
        }
        tracing::info!(
            "cluster: ramping to {} users at {:.2} per second over {} workers",
            target.users,
            target.spawn_rate,
            self.connected().count()
        );
        self.target = target;
        self.phase = Phase::Spawning;
        self.runner()
            .publish_target(self.target.users, self.target.spawn_rate);
        self.runner().publish_state(RunnerState::Spawning);
        self.dispatch();
    }

    fn connected(&self) -> impl Iterator<Item = (&WorkerId, &WorkerView)> {
        self.workers.iter().filter(|(_, w)| w.connected)
    }

    /// Split the target across the connected workers and send each its share (unchanged shares are not sent).
    fn dispatch(&mut self) {
        if !matches!(self.phase, Phase::Spawning | Phase::Running) {
            return;
        }
        let names = self.runner().type_names().to_vec();
        let specs: Vec<(u32, Option<u64>)> = self
            .specs
            .iter()
            .zip(&names)
            .map(|(spec, name)| {
                let allowed = self
                    .target
                    .user_types
                    .as_ref()
                    .is_none_or(|wanted| wanted.iter().any(|w| w == name));
                if allowed { *spec } else { (0, Some(0)) }
            })
            .collect();
        let ids: Vec<WorkerId> = self.connected().map(|(id, _)| id.clone()).collect();
        if ids.is_empty() {
            tracing::warn!("cluster: no worker is connected; the users wait for one");
            return;
        }
        let shares: Vec<u64> = ids
            .iter()
            .map(|id| u64::from(self.workers[id].cores.max(1)))
            .collect();
        let total_share: u64 = shares.iter().sum();
        let split = split_across(&specs, self.target.users, &shares);
        let epoch = self.env.stats.epoch();
        let mut changed = false;
        for ((id, counts), share) in ids.iter().zip(split).zip(&shares) {
            let view = self.workers.get_mut(id).expect("listed");
            if view.share == counts
                && view.epoch == Some(epoch)
                && view.status.state != WorkerState::Stopped
            {
                continue;
            }
            let spawn = Spawn {
                users_by_type: names.iter().cloned().zip(counts.iter().copied()).collect(),
                spawn_rate: self.target.spawn_rate * *share as f64 / total_share as f64,
                host: Some(self.env.host().to_string()).filter(|h| !h.is_empty()),
                settings: SpawnSettings {
                    epoch,
                    stop_timeout_ms: u64::try_from(self.stop_timeout.as_millis())
                        .unwrap_or(u64::MAX),
                }
                .encode(),
            };
            match self.master.send(id.as_str(), ClusterCommand::Spawn(spawn)) {
                Ok(_) => {
                    view.share = counts;
                    view.epoch = Some(epoch);
                    view.stopped = false;
                    changed = true;
                }
                Err(error) => {
                    tracing::warn!("cluster: cannot send worker {id:?} its share: {error}")
                }
            }
        }
        if changed && self.phase == Phase::Running {
            self.phase = Phase::Spawning;
            self.runner().publish_state(RunnerState::Spawning);
        }
    }

    fn stop(&mut self, quit: bool) {
        match self.phase {
            Phase::Spawning | Phase::Running => {
                self.env.events.fire_env(
                    "test_stopping",
                    &self.env.events.test_stopping,
                    &self.env,
                );
                self.master.broadcast(&ClusterCommand::Stop);
                for view in self.workers.values_mut() {
                    view.stopped = !view.connected;
                    view.share.iter_mut().for_each(|c| *c = 0);
                }
                self.phase = Phase::Stopping {
                    until: Instant::now() + self.stop_timeout + STOP_MARGIN,
                    quit,
                };
                self.runner().publish_state(RunnerState::Stopping);
            }
            Phase::Stopping { until, quit: was } => {
                self.phase = Phase::Stopping {
                    until,
                    quit: was || quit,
                };
            }
            Phase::Idle if quit => {
                self.master.broadcast(&ClusterCommand::Quit);
                self.phase = Phase::Leaving {
                    until: Instant::now() + LEAVE_WAIT,
                };
            }
            Phase::Idle | Phase::Leaving { .. } => {}
        }
    }

    fn fire(&self, event: ClusterEvent<'_>) {
        self.env.events.fire_cluster(&self.env, &event);
    }

    fn on_event(&mut self, event: MasterEvent) {
        // Custom messages and the test data distributor: routed to their module, never waited for here.
        crate::messages::on_master_event(&self.env, &event);
        match event {
            MasterEvent::WorkerConnected(info) => {
                tracing::info!(
                    "cluster: worker {} connected from {} ({} cores)",
                    info.id.as_str(),
                    info.hostname,
                    info.cores
                );
                self.workers.insert(
                    info.id.clone(),
                    WorkerView {
                        connected: info.presence == Presence::Connected,
                        cores: info.cores,
                        status: info.status,
                        share: Vec::new(),
                        stopped: false,
                        epoch: None,
                    },
                );
                self.fire(ClusterEvent::WorkerConnected {
                    worker: info.id.as_str(),
                });
                self.dispatch();
            }
            MasterEvent::WorkerMissing { worker } => {
                self.fire(ClusterEvent::WorkerMissing {
                    worker: worker.as_str(),
                });
                tracing::warn!(
                    "cluster: worker {} is missing (silent for 3 s): its users go to the others",
                    worker.as_str()
                );
                if let Some(view) = self.workers.get_mut(&worker) {
                    view.connected = false;
                    view.stopped = true;
                    view.share.clear();
                }
                self.dispatch();
            }
            MasterEvent::WorkerBack { worker } => {
                tracing::info!("cluster: worker {} is back", worker.as_str());
                self.fire(ClusterEvent::WorkerBack {
                    worker: worker.as_str(),
                });
                if let Some(view) = self.workers.get_mut(&worker) {
                    view.connected = true;
                    // Its old share was given to the others; it gets a new one.
                    view.share.clear();
                    view.stopped = false;
                }
                self.dispatch();
            }
            MasterEvent::WorkerGone { worker, reason } => {
                tracing::info!("cluster: worker {} left ({reason:?})", worker.as_str());
                self.fire(ClusterEvent::WorkerGone {
                    worker: worker.as_str(),
                });
                self.workers.remove(&worker);
                self.dispatch();
            }
            MasterEvent::WorkerRefused {
                worker,
                hostname,
                address,
                refusal,
            } => tracing::warn!(
                "cluster: refused worker {worker:?} of {hostname:?} from {address:?}: {refusal}"
            ),
            MasterEvent::Heartbeat { worker, status } => {
                self.fire(ClusterEvent::HeartbeatReceived {
                    worker: worker.as_str(),
                    user_count: status.user_count,
                });
                if let Some(view) = self.workers.get_mut(&worker) {
                    view.connected = true;
                    view.status = status;
                }
            }
            MasterEvent::StatsDelta {
                worker,
                payload,
                lost_before,
                ..
            } => {
                if lost_before > 0 {
                    tracing::warn!(
                        "cluster: worker {} lost {lost_before} statistics deltas (its buffer overflowed while the master was away)",
                        worker.as_str()
                    );
                }
                match decode_delta(&payload) {
                    Ok(delta) => {
                        self.fire(ClusterEvent::WorkerReport {
                            worker: worker.as_str(),
                            requests: delta.num_requests(),
                        });
                        if let Err(error) = self.env.stats.merge_delta(&delta) {
                            // A delta of an earlier test (before the master's reset): not this test's.
                            tracing::debug!(
                                "cluster: delta of worker {} not merged: {error}",
                                worker.as_str()
                            );
                        }
                    }
                    Err(error) => tracing::warn!(
                        "cluster: worker {} sent statistics that do not decode: {error}",
                        worker.as_str()
                    ),
                }
            }
            MasterEvent::WorkerStopped { worker, .. } => {
                if let Some(view) = self.workers.get_mut(&worker) {
                    view.stopped = true;
                }
            }
            MasterEvent::Custom { .. } => {}
            MasterEvent::Log {
                worker,
                level,
                text,
            } => tracing::info!("worker {} ({level:?}): {text}", worker.as_str()),
        }
    }

    /// Publish the cluster's counts and move between phases; true when the run is over (quit done).
    fn on_tick(&mut self) -> bool {
        // The master's statistics were reset (`--reset-stats`, the web UI): the workers follow to its new epoch, or
        // every delta they send from now on would be refused as another test's.
        let epoch = self.env.stats.epoch();
        if self
            .connected()
            .any(|(_, w)| w.epoch.is_some_and(|e| e != epoch))
        {
            self.dispatch();
        }
        let connected: Vec<&WorkerView> = self.connected().map(|(_, w)| w).collect();
        let users: u64 = connected.iter().map(|w| w.status.user_count).sum();
        let mut by_type = vec![0u64; self.specs.len()];
        for view in &connected {
            for (total, count) in by_type.iter_mut().zip(&view.share) {
                *total += count;
            }
        }
        self.runner().publish_users(users, &by_type);
        match self.phase {
            Phase::Spawning => {
                let all_there = !connected.is_empty()
                    && connected.iter().all(|w| {
                        w.status.state == WorkerState::Running
                            && w.status.user_count == w.share.iter().sum::<u64>()
                    })
                    && users == self.target.users;
                if all_there {
                    self.phase = Phase::Running;
                    self.runner().publish_state(RunnerState::Running);
                    tracing::info!("cluster: all {users} users spawned");
                    self.env.events.fire_spawning_complete(&self.env, users);
                }
            }
            Phase::Stopping { until, quit } => {
                let done = self.workers.values().all(|w| w.stopped || !w.connected);
                if done || Instant::now() >= until {
                    if !done {
                        tracing::warn!(
                            "cluster: some workers did not report their users stopped in time; their last seconds may be missing"
                        );
                    }
                    self.phase = Phase::Idle;
                    self.target.users = 0;
                    self.runner().publish_target(0, self.target.spawn_rate);
                    self.runner().publish_state(RunnerState::Stopped);
                    self.env
                        .events
                        .fire_env("test_stop", &self.env.events.test_stop, &self.env);
                    if quit {
                        self.master.broadcast(&ClusterCommand::Quit);
                        self.phase = Phase::Leaving {
                            until: Instant::now() + LEAVE_WAIT,
                        };
                    }
                }
            }
            Phase::Leaving { until } => {
                if self.workers.values().all(|w| !w.connected) || Instant::now() >= until {
                    self.runner().publish_state(RunnerState::Quitting);
                    return true;
                }
            }
            Phase::Idle | Phase::Running => {}
        }
        false
    }
}

/// Start the master's cluster port; `None` with the error printed when it cannot.
pub(crate) async fn start_server(
    options: &crate::options::Options,
    identity: cicada_cluster::TestIdentity,
) -> Result<(MasterHandle, mpsc::Receiver<MasterEvent>), String> {
    let tls = match (&options.cluster_tls_cert, &options.cluster_tls_key) {
        (Some(cert), Some(key)) => Some(
            cicada_cluster::MasterTls::from_files(cert, key, options.cluster_tls_ca.as_deref())
                .map_err(|error| {
                    format!("--cluster-tls-cert/--cluster-tls-key/--cluster-tls-ca: {error}")
                })?,
        ),
        _ => None,
    };
    let config = cicada_cluster::MasterConfig {
        tls,
        bind_host: options.master_bind_host.to_string(),
        bind_port: options.master_bind_port,
        version: super::VERSION.to_string(),
        test: identity,
        token: options
            .cluster_token
            .as_deref()
            .and_then(cicada_cluster::Token::new),
        ..cicada_cluster::MasterConfig::default()
    };
    let (handle, events) = cicada_cluster::MasterServer::start(config)
        .await
        .map_err(|error| error.to_string())?;
    tracing::info!(
        "cluster: master listening for workers on {}",
        handle.local_addr()
    );
    Ok((handle, events))
}
