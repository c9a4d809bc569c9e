//! The master's dispatcher: it stands in for the runner's actor on a master (same commands, same published state),
//! but runs no user. It owns the target for the whole cluster and places it on the connected workers by capacity
//! ([`place`]: weighted by cores; a worker whose guard is over a limit gets no new users and the users it sheds go
//! to workers with room; a worker that recovers takes users back at the spawn rate, up to where it struggled for
//! [`CEILING_HOLD`]; what nobody has room for is held back, marked and reported through [`ClusterHealth`]). It
//! sends each worker its share with a spawn rate that adds up to the cluster's, and places again whenever a worker
//! comes, goes missing, comes back, leaves or changes its guard state. It merges every worker's statistics deltas
//! into the master's statistics, so the console, the reports and the web UI are those of one process. A master
//! that restarts adopts the test its reconnecting workers run (their shares, their statistics epoch) instead of
//! starting it again. A stop waits until every connected worker said its users stopped and its last delta was sent
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

use super::health::{ClusterActionKind, ClusterHealth};
use super::placement::{Room, Slot, place};
use super::{SpawnSettings, WorkerRunState, decode_delta};
use crate::environment::Environment;
use crate::events::ClusterEvent;
use crate::guard::{GuardPhase, GuardStatus};
use crate::runner::plan::type_counts;
use crate::runner::{Command, RunnerState, Target};

/// How long a stop waits for workers beyond `--stop-timeout` (their last delta, their `Stopped` marker).
const STOP_MARGIN: Duration = Duration::from_secs(10);
/// How long a quitting master waits for its workers to take the quit and leave.
const LEAVE_WAIT: Duration = Duration::from_secs(5);
/// How long a worker that recovered from a limit is given at most the users it struggled with, before it is offered
/// its full share again (at the spawn rate).
pub(crate) const CEILING_HOLD: Duration = Duration::from_secs(30);
/// How often the users of a worker that stays over a limit are cut, and by how much, while other workers have room.
const MOVE_OFF_EVERY: Duration = Duration::from_secs(2);
const MOVE_OFF_SHARE: f64 = 0.2;
/// How long a master that adopted a running worker waits for the others to reconnect before it places users again:
/// placing while half of them are back would move users for nothing.
const ADOPT_GRACE: Duration = Duration::from_secs(5);

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
    /// Its guard holds it: it gets no new users.
    capped: bool,
    /// Its guard says a limit is over now (not only paused): its measurements are not trusted.
    over: bool,
    /// While it stays over a limit: the users it is left, cut by a fifth every [`MOVE_OFF_EVERY`], and when the
    /// next cut is due.
    moving_off: Option<(u64, Instant)>,
    /// Where it struggled, and until when it gets no more than that.
    ceiling: Option<(u64, Instant)>,
    /// Its arrival-rate types' counts so far (its latest heartbeat's).
    arrival: Vec<crate::user::ArrivalReport>,
}

impl WorkerView {
    fn new(cores: u32, status: WorkerStatus) -> WorkerView {
        WorkerView {
            connected: true,
            cores,
            status,
            share: Vec::new(),
            stopped: false,
            epoch: None,
            capped: false,
            over: false,
            moving_off: None,
            ceiling: None,
            arrival: Vec::new(),
        }
    }

    /// How much this worker may run now.
    fn room(&self, now: Instant) -> Room {
        if self.capped {
            let kept = self.moving_off.map_or(u64::MAX, |(kept, _)| kept);
            Room::Capped(self.status.user_count.min(kept))
        } else {
            match self.ceiling {
                Some((ceiling, until)) if now < until => Room::Ceiling(ceiling),
                _ => Room::Free,
            }
        }
    }
}

/// Adds one worker's arrival-rate counts into the cluster's, type by type: counts and rates add up (each worker runs
/// its part of the rate), the busiest moment and the scheduler's time are the largest of any worker's.
fn add_arrival(
    totals: &mut Vec<crate::user::ArrivalReport>,
    worker: &[crate::user::ArrivalReport],
) {
    for report in worker {
        match totals.iter_mut().find(|t| t.user_type == report.user_type) {
            Some(total) => {
                total.rate_per_s += report.rate_per_s;
                total.max_concurrent += report.max_concurrent;
                total.due += report.due;
                total.started += report.started;
                total.completed += report.completed;
                total.dropped += report.dropped;
                total.dropped_max_concurrent += report.dropped_max_concurrent;
                total.dropped_guard += report.dropped_guard;
                total.dropped_late += report.dropped_late;
                total.peak_concurrent += report.peak_concurrent;
                total.instances_created += report.instances_created;
                total.instances_retired += report.instances_retired;
                total.active_s = total.active_s.max(report.active_s);
            }
            None => totals.push(report.clone()),
        }
    }
}

/// A guard state that holds a worker's users: over a limit, shedding, or stopped.
fn holds_users(guard: &GuardStatus) -> bool {
    !matches!(guard.phase, GuardPhase::Normal)
}

/// The limits a guard is over, in words.
fn limits_over(guard: &GuardStatus) -> String {
    if guard.over.is_empty() {
        return format!("its guard is {:?}", guard.phase).to_lowercase();
    }
    let limits: Vec<String> = guard
        .over
        .iter()
        .map(|breach| {
            format!("{:?} over by {:.0}%", breach.limit, breach.over_by_percent).to_lowercase()
        })
        .collect();
    limits.join(", ")
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
    health: Arc<ClusterHealth>,
    /// A worker's room changed: place again at the next tick (not after every heartbeat: a master of 1,000
    /// workers gets 1,000 of them a second).
    place_again: bool,
    /// No spawn command went out yet: a running worker that attaches now is adopted (a restarted master).
    adoptable: bool,
    /// Until when placing waits for adopted workers' peers to reconnect.
    adopting_until: Option<Instant>,
    /// The test has arrival-rate types: their rates are split over the workers present when a test starts.
    has_arrival_types: bool,
    /// Each worker's part of the arrival-rate types' rates in the current test (by cores); a worker that joins
    /// later runs none (its part would come on top of the others').
    arrival_shares: BTreeMap<WorkerId, f64>,
    /// A test started: split the arrival rates at the next placing.
    split_arrivals: bool,
    /// The arrival-rate counts of workers that left, per type: they stay in the cluster's totals.
    departed_arrival: Vec<crate::user::ArrivalReport>,
}

impl Dispatcher {
    pub(crate) fn new(
        env: Arc<Environment>,
        master: MasterHandle,
        specs: Vec<(u32, Option<u64>)>,
        has_arrival_types: bool,
        stop_timeout: Duration,
        health: Arc<ClusterHealth>,
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
            health,
            place_again: false,
            adoptable: true,
            adopting_until: None,
            has_arrival_types,
            arrival_shares: BTreeMap::new(),
            split_arrivals: false,
            departed_arrival: Vec::new(),
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
                    Some(
                        Command::Guard(_)
                        | Command::StartShare(..)
                        | Command::StopTimeout(_)
                        | Command::ArrivalRate(..)
                        | Command::ArrivalSplit(_),
                    ) => {}
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
            self.arrival_shares.clear();
            self.split_arrivals = self.has_arrival_types;
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

    /// Place the target on the connected workers by their room and send each its share (unchanged shares are not
    /// sent). Users no worker has room for are held back and marked.
    fn dispatch(&mut self) {
        self.place_again = false;
        if !matches!(self.phase, Phase::Spawning | Phase::Running) {
            return;
        }
        if self
            .adopting_until
            .is_some_and(|until| Instant::now() < until)
        {
            // Adopted workers keep their shares until the others had time to come back.
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
        let now = Instant::now();
        let slots: Vec<Slot> = ids
            .iter()
            .map(|id| {
                let view = &self.workers[id];
                Slot {
                    weight: u64::from(view.cores.max(1)),
                    current: view.share.clone(),
                    room: view.room(now),
                }
            })
            .collect();
        let total_weight: u64 = slots.iter().map(|s| s.weight).sum();
        if self.split_arrivals {
            self.split_arrivals = false;
            for (id, slot) in ids.iter().zip(&slots) {
                self.arrival_shares
                    .insert(id.clone(), slot.weight as f64 / total_weight as f64);
            }
            tracing::info!(
                "cluster: the arrival-rate types' rates are split over {} workers by their cores",
                ids.len()
            );
        }
        let placement = place(&type_counts(&specs, self.target.users), &slots);
        self.hold(placement.unplaced);
        let epoch = self.env.stats.epoch();
        let mut changed = false;
        for ((id, counts), slot) in ids.iter().zip(placement.shares).zip(&slots) {
            let view = self.workers.get_mut(id).expect("listed");
            if view.share == counts
                && view.epoch == Some(epoch)
                && view.status.state != WorkerState::Stopped
            {
                continue;
            }
            let spawn = Spawn {
                users_by_type: names.iter().cloned().zip(counts.iter().copied()).collect(),
                spawn_rate: self.target.spawn_rate * slot.weight as f64 / total_weight as f64,
                host: Some(self.env.host().to_string()).filter(|h| !h.is_empty()),
                settings: SpawnSettings {
                    epoch,
                    stop_timeout_ms: u64::try_from(self.stop_timeout.as_millis())
                        .unwrap_or(u64::MAX),
                    cluster_users: self.target.users,
                    cluster_spawn_rate: self.target.spawn_rate,
                    arrival_share: self.arrival_shares.get(id).copied().unwrap_or(0.0),
                    arrival_rate: self.env.options.arrival_rate,
                    max_concurrent: self.env.options.max_concurrent,
                }
                .encode(),
            };
            match self.master.send(id.as_str(), ClusterCommand::Spawn(spawn)) {
                Ok(_) => {
                    view.share = counts;
                    view.epoch = Some(epoch);
                    view.stopped = false;
                    changed = true;
                    self.adoptable = false;
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

    /// Say when the cluster starts or stops holding users back for want of room.
    fn hold(&self, unplaced: u64) {
        match self.health.set_held_back(unplaced) {
            Some(true) => {
                tracing::warn!(
                    "cluster: no worker has room for {unplaced} of the {} users: spawning them is paused until a worker recovers",
                    self.target.users
                );
                self.health.action(
                    ClusterActionKind::Hold,
                    None,
                    unplaced,
                    "every worker is over a limit or at its ceiling".into(),
                );
            }
            Some(false) => {
                tracing::info!("cluster: workers have room again; placing every user");
                self.health.action(
                    ClusterActionKind::HoldEnded,
                    None,
                    0,
                    "workers have room again".into(),
                );
            }
            None => {}
        }
    }

    /// A worker's heartbeat: note its guard state, and place again when its room changed.
    fn on_heartbeat(&mut self, worker: &WorkerId, status: WorkerStatus) {
        let guard: Option<GuardStatus> = serde_json::from_slice(&status.guard_state).ok();
        let run = WorkerRunState::decode(&status.run_state);
        // A worker that runs no users measures nothing: its saturation does not taint the cluster's numbers.
        if run.as_ref().is_some_and(|r| r.saturated) && status.user_count > 0 {
            self.health.worker_saturated();
        }
        let Some(view) = self.workers.get_mut(worker) else {
            return;
        };
        view.connected = true;
        if let Some(run) = &run {
            view.arrival.clone_from(&run.arrival);
        }
        let now_capped = guard.as_ref().is_some_and(holds_users);
        let now_over = guard.as_ref().is_some_and(|g| !g.over.is_empty())
            || run.as_ref().is_some_and(|r| r.saturated);
        let share: u64 = view.share.iter().sum();
        if now_capped && !view.capped {
            let reason = guard.as_ref().map(limits_over).unwrap_or_default();
            tracing::warn!(
                "cluster: worker {} is over its limits ({reason}) at {} users: it gets no new users, and users it sheds go to the others",
                worker.as_str(),
                status.user_count
            );
            self.health.action(
                ClusterActionKind::WorkerCapped,
                Some(worker.as_str()),
                status.user_count,
                reason,
            );
            view.ceiling = None;
            self.place_again = true;
        } else if !now_capped && view.capped {
            let ceiling = view.status.user_count;
            tracing::info!(
                "cluster: worker {} is back under its limits: it takes users again, up to {ceiling} for {} s",
                worker.as_str(),
                CEILING_HOLD.as_secs()
            );
            self.health.action(
                ClusterActionKind::WorkerRecovered,
                Some(worker.as_str()),
                status.user_count,
                format!(
                    "back under its limits; at most {ceiling} users for {} s",
                    CEILING_HOLD.as_secs()
                ),
            );
            view.ceiling = Some((ceiling, Instant::now() + CEILING_HOLD));
            self.place_again = true;
        } else if now_capped && status.user_count < share {
            // It shed users (or its spawning was paused short of its share): they go to the others.
            self.place_again = true;
        }
        view.capped = now_capped;
        view.over = now_capped && now_over;
        if !view.capped {
            view.moving_off = None;
        }
        view.status = status;
    }

    /// A worker that attached already running users of this test, to a master that has sent no spawn command yet:
    /// the master restarted. Take the test over where it is (its target, its statistics epoch, the worker's share),
    /// so that no user is restarted and the deltas the worker kept while the master was away count.
    fn adopt(&mut self, worker: &WorkerId, run: &WorkerRunState, users: u64) {
        let view = self.workers.get_mut(worker).expect("inserted");
        view.share = run.share.clone();
        view.epoch = Some(run.epoch);
        if self.adopting_until.is_none() {
            if self.env.stats.epoch() != run.epoch {
                self.env.stats.reset_to_epoch(run.epoch);
            }
            self.adopting_until = Some(Instant::now() + ADOPT_GRACE);
            if matches!(self.phase, Phase::Idle) {
                self.target.users = run.settings.cluster_users;
                if run.settings.cluster_spawn_rate.is_finite()
                    && run.settings.cluster_spawn_rate > 0.0
                {
                    self.target.spawn_rate = run.settings.cluster_spawn_rate;
                }
                self.env
                    .events
                    .fire_env("test_start", &self.env.events.test_start, &self.env);
                self.phase = Phase::Spawning;
                self.runner()
                    .publish_target(self.target.users, self.target.spawn_rate);
                self.runner().publish_state(RunnerState::Spawning);
            }
        }
        tracing::info!(
            "cluster: adopting worker {}, which runs {users} users of this test (a test of {} users): the run goes on",
            worker.as_str(),
            run.settings.cluster_users
        );
        self.health.action(
            ClusterActionKind::Adopted,
            Some(worker.as_str()),
            users,
            format!(
                "the worker was running {users} users when this master started; statistics epoch {}",
                run.epoch
            ),
        );
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
                let run = WorkerRunState::decode(&info.status.run_state);
                let users = info.status.user_count;
                let running = matches!(
                    info.status.state,
                    WorkerState::Spawning | WorkerState::Running
                );
                let mut view = WorkerView::new(info.cores, WorkerStatus::default());
                view.connected = info.presence == Presence::Connected;
                self.workers.insert(info.id.clone(), view);
                self.on_heartbeat(&info.id, info.status);
                self.fire(ClusterEvent::WorkerConnected {
                    worker: info.id.as_str(),
                });
                match run {
                    Some(run)
                        if self.adoptable
                            && running
                            && run.share.iter().sum::<u64>() > 0
                            && run.share.len() == self.specs.len()
                            && !matches!(
                                self.phase,
                                Phase::Stopping { .. } | Phase::Leaving { .. }
                            ) =>
                    {
                        self.adopt(&info.id, &run, users)
                    }
                    _ => self.dispatch(),
                }
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
                if let Some(view) = self.workers.remove(&worker) {
                    add_arrival(&mut self.departed_arrival, &view.arrival);
                }
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
                self.on_heartbeat(&worker, status);
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
            // Into the master's log output and the web UI's Logs tab, tagged with the worker.
            MasterEvent::Log {
                worker,
                level,
                text,
            } => crate::logging::worker_line(worker.as_str(), level, &text),
        }
    }

    /// Publish the cluster's counts and move between phases; true when the run is over (quit done).
    fn on_tick(&mut self) -> bool {
        if self.has_arrival_types {
            let mut totals = self.departed_arrival.clone();
            for view in self.workers.values() {
                add_arrival(&mut totals, &view.arrival);
            }
            self.env.set_cluster_arrival(totals);
        }
        // The master's statistics were reset (`--reset-stats`, the web UI): the workers follow to its new epoch, or
        // every delta they send from now on would be refused as another test's.
        let epoch = self.env.stats.epoch();
        let now = Instant::now();
        if self.adopting_until.is_some_and(|until| now >= until) {
            self.adopting_until = None;
            self.place_again = true;
        }
        let mut over = 0;
        // A worker that stays over a limit, not only paused, measures badly: while another worker has room its
        // users move there, a fifth at a time (the guard of a single process cannot do that; a cluster can).
        let room_elsewhere = self.connected().any(|(_, w)| !w.capped);
        for (id, view) in self.workers.iter_mut().filter(|(_, w)| w.connected) {
            over += u64::from(view.capped);
            if view.over && room_elsewhere {
                let due = view.moving_off.is_none_or(|(_, next)| now >= next);
                if due {
                    let running = view.status.user_count;
                    let kept = view
                        .moving_off
                        .map_or(running, |(kept, _)| kept.min(running));
                    let cut = ((kept as f64 * MOVE_OFF_SHARE).ceil() as u64).min(kept);
                    if cut > 0 {
                        if view.moving_off.is_none() {
                            tracing::warn!(
                                "cluster: worker {id} stays over its limits with {running} users: moving them to \
                                 workers with room, a fifth every {} s",
                                MOVE_OFF_EVERY.as_secs()
                            );
                            self.health.action(
                                ClusterActionKind::MovingOff,
                                Some(id.as_str()),
                                running,
                                "over its limits while other workers have room".into(),
                            );
                        }
                        view.moving_off = Some((kept - cut, now + MOVE_OFF_EVERY));
                        self.place_again = true;
                    }
                }
            }
            if view.ceiling.is_some_and(|(_, until)| now >= until) {
                view.ceiling = None;
                self.place_again = true;
            }
            if view.epoch.is_some_and(|e| e != epoch) {
                self.place_again = true;
            }
        }
        self.health.set_workers_over(over);
        if self.place_again {
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
    test_source: Option<cicada_cluster::TestSource>,
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
        test_source,
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
