//! The runner: spawns and stops users toward a target count at a spawn rate, and owns the run's state.
//!
//! One task owns every running user. Everything else (the headless driver, a load shape, the web UI, a task that
//! stops the test) talks to it through a cheap, cloneable [`RunnerHandle`] that sends commands and reads published
//! counters. What to start or stop next is decided by a pure [`plan`] along a fixed sequence ([`distribution`]);
//! ramp-down stops the newest first, at the spawn rate in both directions. Stopped users get `--stop-timeout` to
//! finish their task before they are killed. The command loop never waits for users: a stop is begun, and finished
//! by the housekeeping tick once the last user is gone, while commands keep being read.

pub(crate) mod distribution;
pub(crate) mod plan;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::environment::Environment;
use crate::user::arrival::ClusterSplit;
use crate::user::run::{SpawnUser, StopLevel, UserControl};
use plan::{SpawnPlan, Step};

/// The state of a run, as Locust names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum RunnerState {
    /// Nothing started yet.
    Ready = 0,
    /// Moving toward the target user count.
    Spawning = 1,
    /// At the target user count.
    Running = 2,
    /// Stopping every user.
    Stopping = 3,
    /// Every user stopped; a new start is possible.
    Stopped = 4,
    /// The run is over (the process is about to write reports and exit).
    Quitting = 5,
}

impl RunnerState {
    fn from_u8(value: u8) -> RunnerState {
        match value {
            0 => RunnerState::Ready,
            1 => RunnerState::Spawning,
            2 => RunnerState::Running,
            3 => RunnerState::Stopping,
            4 => RunnerState::Stopped,
            _ => RunnerState::Quitting,
        }
    }

    /// Lower-case name ("spawning" ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerState::Ready => "ready",
            RunnerState::Spawning => "spawning",
            RunnerState::Running => "running",
            RunnerState::Stopping => "stopping",
            RunnerState::Stopped => "stopped",
            RunnerState::Quitting => "quitting",
        }
    }
}

/// Where the users of this process come from, as Locust's `environment.runner` class says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerMode {
    /// One process runs the users.
    Local,
    /// A cluster's master: the users run on workers.
    Master,
    /// A cluster's worker: runs its share of the master's users.
    Worker,
}

/// What the runner is asked to reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Users wanted.
    pub users: u64,
    /// Users started (or stopped) per second on the way there.
    pub spawn_rate: f64,
    /// Only these user types (by name); `None` for all.
    pub user_types: Option<Vec<String>>,
}

/// What the runner is asked to do (read by the runner's actor, or by a cluster master's dispatcher in its place).
pub(crate) enum Command {
    /// Start, or change the target.
    Start(Target),
    /// A cluster worker's share: users per type (registration order) and its spawn rate.
    StartShare(Vec<u64>, f64),
    /// Stop every user.
    Stop,
    /// Stop every user and end the run.
    Quit,
    /// The resource guard's cap.
    Guard(GuardCap),
    /// A new `--stop-timeout` (a cluster worker takes its master's).
    StopTimeout(Duration),
    /// A constant rate for the named arrival-rate type from now on (a load shape's).
    ArrivalRate(String, f64),
    /// A cluster worker's part of the arrival-rate types, for the shares that follow.
    ArrivalSplit(ClusterSplit),
}

/// What the resource guard asks of the runner. The guard caps the user count below the target; the cap is lifted
/// when the generator has recovered, and the runner ramps back toward the target at the spawn rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuardCap {
    /// Start no more users: cap at the current count.
    Pause,
    /// Stop this many of the newest users now (they get the stop timeout to finish their task).
    Shed(u64),
    /// Remove the cap.
    Lift,
}

struct RunnerShared {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Sender<u8>,
    user_count: AtomicU64,
    target_users: AtomicU64,
    spawn_rate_bits: AtomicU64,
    /// The guard's cap on users, `u64::MAX` when there is none.
    guard_cap: AtomicU64,
    /// The guard asked to start no more users. Read by the spawn loop itself, so a pause takes effect at the
    /// next user even before the runner gets to the command (a spawn of a million users a second is in batches).
    spawn_hold: AtomicBool,
    /// The guard asked for an emergency stop: abort every user now.
    emergency: AtomicBool,
    emergency_signal: tokio::sync::Notify,
    type_names: Vec<String>,
    counts_by_type: Mutex<Vec<u64>>,
    mode: RunnerMode,
}

/// Control of a run: start, reshape, stop. Cheap to clone; every method returns at once.
///
/// ```no_run
/// # fn demo(env: &cicada::Environment) {
/// let runner = env.runner();
/// runner.start(200, 20.0); // or change a running test's user count and spawn rate
/// runner.stop();
/// # }
/// ```
#[derive(Clone)]
pub struct RunnerHandle {
    shared: Arc<RunnerShared>,
}

impl RunnerHandle {
    /// Start users, or change the target of a running test.
    pub fn start(&self, users: u64, spawn_rate: f64) {
        self.start_target(Target {
            users,
            spawn_rate,
            user_types: None,
        });
    }

    /// Start or change the target, including which user types run.
    pub fn start_target(&self, target: Target) {
        let _ = self.shared.commands.send(Command::Start(target));
    }

    /// Run exactly these users per type (registration order), reached at `spawn_rate`: a cluster worker's share of
    /// the master's target.
    pub(crate) fn start_share(&self, users_by_type: Vec<u64>, spawn_rate: f64) {
        let _ = self
            .shared
            .commands
            .send(Command::StartShare(users_by_type, spawn_rate));
    }

    /// Give stopping users this long to finish their task from now on (a cluster worker takes its master's).
    pub(crate) fn set_stop_timeout(&self, stop_timeout: Duration) {
        let _ = self
            .shared
            .commands
            .send(Command::StopTimeout(stop_timeout));
    }

    /// Give the named arrival-rate type a constant rate (iterations per second) from now on, replacing its
    /// schedule; the iterations due so far stay counted. Ignored for other types and while the type does not run.
    pub fn set_arrival_rate(&self, user_type: &str, per_second: f64) {
        let _ = self
            .shared
            .commands
            .send(Command::ArrivalRate(user_type.to_string(), per_second));
    }

    /// A cluster worker's part of the arrival-rate types (its master's spawn command), for the shares that follow:
    /// with a share above 0, a share starts them, at that part of their rates.
    pub(crate) fn set_arrival_split(&self, split: ClusterSplit) {
        let _ = self.shared.commands.send(Command::ArrivalSplit(split));
    }

    /// The guard holds the generator (paused, shedding or stopped spawning): arrival-rate types start nothing.
    pub(crate) fn spawning_held(&self) -> bool {
        self.shared.spawn_hold.load(Ordering::Relaxed)
    }

    /// Stop every user; the run can be started again.
    pub fn stop(&self) {
        let _ = self.shared.commands.send(Command::Stop);
    }

    /// Stop every user and end the run (reports are written).
    pub fn quit(&self) {
        let _ = self.shared.commands.send(Command::Quit);
    }

    pub(crate) fn guard(&self, cap: GuardCap) {
        self.shared
            .spawn_hold
            .store(cap != GuardCap::Lift, Ordering::Relaxed);
        let _ = self.shared.commands.send(Command::Guard(cap));
    }

    /// Abort every user at once (no stop timeout, no `on_stop`) and end the run: memory is about to run out, and
    /// a finished report beats a graceful ramp-down. Safe to call from any thread.
    pub(crate) fn emergency_stop(&self) {
        self.shared.spawn_hold.store(true, Ordering::Relaxed);
        self.shared.emergency.store(true, Ordering::Relaxed);
        self.shared.emergency_signal.notify_one();
    }

    /// Whether an emergency stop was asked for.
    pub(crate) fn emergency_requested(&self) -> bool {
        self.shared.emergency.load(Ordering::Relaxed)
    }

    /// The resource guard's cap on the user count, if it holds users back.
    pub fn guard_cap(&self) -> Option<u64> {
        match self.shared.guard_cap.load(Ordering::Relaxed) {
            u64::MAX => None,
            cap => Some(cap),
        }
    }

    /// Publish the run's state (a cluster master's dispatcher, standing in for the runner's actor).
    pub(crate) fn publish_state(&self, state: RunnerState) {
        self.shared.state.send_replace(state as u8);
    }

    /// Publish the users running, in all and per type (registration order).
    pub(crate) fn publish_users(&self, total: u64, by_type: &[u64]) {
        self.shared.user_count.store(total, Ordering::Relaxed);
        self.shared
            .counts_by_type
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone_from(&by_type.to_vec());
    }

    /// Publish the target and the spawn rate.
    pub(crate) fn publish_target(&self, users: u64, spawn_rate: f64) {
        self.shared.target_users.store(users, Ordering::Relaxed);
        self.shared
            .spawn_rate_bits
            .store(spawn_rate.to_bits(), Ordering::Relaxed);
    }

    /// The user types' names, in registration order.
    pub(crate) fn type_names(&self) -> &[String] {
        &self.shared.type_names
    }

    /// Local, master or worker.
    pub fn mode(&self) -> RunnerMode {
        self.shared.mode
    }

    /// The current state.
    pub fn state(&self) -> RunnerState {
        RunnerState::from_u8(*self.shared.state.borrow())
    }

    /// Wait until the state satisfies `done`, or `timeout` passes. Returns the last state seen.
    pub async fn wait_for_state(
        &self,
        timeout: Duration,
        mut done: impl FnMut(RunnerState) -> bool,
    ) -> RunnerState {
        let mut receiver = self.shared.state.subscribe();
        let _ = tokio::time::timeout(
            timeout,
            receiver.wait_for(|state| done(RunnerState::from_u8(*state))),
        )
        .await;
        self.state()
    }

    /// Users running now.
    pub fn user_count(&self) -> u64 {
        self.shared.user_count.load(Ordering::Relaxed)
    }

    /// The user count the runner is moving toward.
    pub fn target_user_count(&self) -> u64 {
        self.shared.target_users.load(Ordering::Relaxed)
    }

    /// The current spawn rate.
    pub fn spawn_rate(&self) -> f64 {
        f64::from_bits(self.shared.spawn_rate_bits.load(Ordering::Relaxed))
    }

    /// Running users per user type, in registration order.
    pub fn user_counts(&self) -> Vec<(String, u64)> {
        let counts = self
            .shared
            .counts_by_type
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.shared
            .type_names
            .iter()
            .cloned()
            .zip(counts.iter().copied())
            .collect()
    }
}

/// The receiving side, turned into the runner task by [`Runner::run`].
pub(crate) struct RunnerParts {
    pub(crate) handle: RunnerHandle,
    commands: mpsc::UnboundedReceiver<Command>,
}

impl RunnerParts {
    /// The commands, for a cluster master's dispatcher that stands in for the runner's actor.
    pub(crate) fn into_commands(self) -> mpsc::UnboundedReceiver<Command> {
        self.commands
    }
}

/// Create the handle before the environment exists (the environment holds it).
pub(crate) fn channel(type_names: Vec<String>, mode: RunnerMode) -> RunnerParts {
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (state, _) = watch::channel(RunnerState::Ready as u8);
    let counts = vec![0; type_names.len()];
    RunnerParts {
        handle: RunnerHandle {
            shared: Arc::new(RunnerShared {
                commands: commands_tx,
                state,
                user_count: AtomicU64::new(0),
                target_users: AtomicU64::new(0),
                spawn_rate_bits: AtomicU64::new(0f64.to_bits()),
                guard_cap: AtomicU64::new(u64::MAX),
                spawn_hold: AtomicBool::new(false),
                emergency: AtomicBool::new(false),
                emergency_signal: tokio::sync::Notify::new(),
                type_names,
                counts_by_type: Mutex::new(counts),
                mode,
            }),
        },
        commands,
    }
}

/// A user type as the runner spawns it.
pub(crate) struct RunnableType {
    pub(crate) name: String,
    pub(crate) weight: u32,
    pub(crate) fixed_count: Option<u64>,
    pub(crate) spawner: Arc<dyn SpawnUser>,
}

struct RunningUser {
    type_index: usize,
    control: Arc<UserControl>,
    handle: JoinHandle<()>,
}

struct StoppingUser {
    control: Arc<UserControl>,
    handle: JoinHandle<()>,
    kill_at: Instant,
    abort_at: Instant,
}

/// How long `on_stop` may run after a user was killed before its task is aborted.
const ON_STOP_GRACE: Duration = Duration::from_secs(5);
/// Spawns done in one go before yielding to the rest of the runtime.
const SPAWN_BATCH: u64 = 2_000;
/// How often stopping users are checked: every 250 ms while running, every 20 ms while a stop is under way.
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// Running users are checked for having finished at least this often, even when no end notice came.
const FULL_SCAN_EVERY: Duration = Duration::from_secs(5);
const STOP_POLL: Duration = Duration::from_millis(20);

/// A stop of every user that is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Winding {
    /// No stop under way.
    No,
    /// Every user was told to stop; the test is over once they are gone.
    Stop,
    /// The same, then the run ends.
    Quit,
}

/// The task that owns every user.
pub(crate) struct Runner {
    types: Vec<RunnableType>,
    env: Arc<Environment>,
    stop_timeout: Duration,
    users: Vec<RunningUser>,
    /// Users of this runner whose task ended (see `UserControl::counting_end`), and its value at the last scan.
    users_ended: Arc<AtomicU64>,
    users_ended_seen: u64,
    next_full_scan: Instant,
    stopping: Vec<StoppingUser>,
    plan: SpawnPlan,
    target: Target,
    phase_start: Instant,
    done_in_phase: u64,
    announced_complete: bool,
    next_id: u64,
    /// The resource guard's cap on users.
    cap: Option<u64>,
    winding: Winding,
    /// A start that arrived while a stop was under way: applied once it is done.
    start_after_stop: Option<Pending>,
    /// A cluster worker's share per type, when the master set one (instead of a total split by the sequence).
    share: Option<Vec<u64>>,
    /// The running schedulers of arrival-rate types, by type index (`None` for looping types and stopped ones).
    arrivals: Vec<Option<ArrivalRun>>,
    /// A cluster worker's part of the arrival-rate types; `None` in a single process.
    arrival_split: Option<ClusterSplit>,
}

/// One arrival-rate type's scheduler while it runs: stopped like a user (it stops its instances in turn).
struct ArrivalRun {
    control: Arc<UserControl>,
    handle: JoinHandle<()>,
    rates: watch::Sender<Option<f64>>,
}

/// A start to apply once a stop is done.
enum Pending {
    Target(Target),
    Share(Vec<u64>, f64),
}

impl Runner {
    pub(crate) fn new(
        types: Vec<RunnableType>,
        env: Arc<Environment>,
        stop_timeout: Duration,
    ) -> Self {
        let type_count = types.len();
        Runner {
            types,
            env,
            stop_timeout,
            users: Vec::new(),
            users_ended: Arc::default(),
            users_ended_seen: 0,
            next_full_scan: Instant::now(),
            stopping: Vec::new(),
            plan: SpawnPlan::new(type_count),
            target: Target {
                users: 0,
                spawn_rate: 1.0,
                user_types: None,
            },
            phase_start: Instant::now(),
            done_in_phase: 0,
            announced_complete: true,
            next_id: 1,
            cap: None,
            winding: Winding::No,
            start_after_stop: None,
            share: None,
            arrivals: (0..type_count).map(|_| None).collect(),
            arrival_split: None,
        }
    }

    fn handle(&self) -> &RunnerHandle {
        &self.env.runner
    }

    fn set_state(&self, state: RunnerState) {
        self.handle().shared.state.send_replace(state as u8);
    }

    fn publish_counts(&self) {
        let shared = &self.handle().shared;
        shared
            .user_count
            .store(self.users.len() as u64, Ordering::Relaxed);
        shared
            .counts_by_type
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone_from(&self.plan.alive().to_vec());
    }

    /// Run until a quit command; every user is stopped on the way out.
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared = self.handle().shared.clone();
        loop {
            let next_step = self.next_step_at();
            let winding = self.winding != Winding::No;
            tokio::select! {
                biased;
                _ = shared.emergency_signal.notified() => {
                    self.abort_all();
                    self.set_state(RunnerState::Quitting);
                    return;
                }
                command = commands.recv() => match command {
                    Some(Command::Start(target)) if winding => {
                        self.start_after_stop = Some(Pending::Target(target));
                    }
                    Some(Command::Start(target)) => self.retarget(target),
                    Some(Command::StartShare(counts, rate)) if winding => {
                        self.start_after_stop = Some(Pending::Share(counts, rate));
                    }
                    Some(Command::StartShare(counts, rate)) => self.retarget_share(counts, rate),
                    Some(Command::Stop) => self.begin_stop_all(Winding::Stop),
                    Some(Command::Guard(cap)) => self.apply_guard(cap),
                    Some(Command::StopTimeout(timeout)) => self.stop_timeout = timeout,
                    Some(Command::ArrivalRate(name, rate)) => self.set_arrival_rate(&name, rate),
                    Some(Command::ArrivalSplit(split)) => self.arrival_split = Some(split),
                    Some(Command::Quit) | None => self.begin_stop_all(Winding::Quit),
                },
                _ = sleep_until_opt(next_step), if !winding => self.step().await,
                _ = housekeeping.tick(), if !winding => self.housekeeping(),
                _ = tokio::time::sleep(STOP_POLL), if winding => self.housekeeping(),
            }
            if self.winding != Winding::No && self.stopping.is_empty() && self.finish_stop() {
                return;
            }
        }
    }

    fn retarget(&mut self, target: Target) {
        let state = self.handle().state();
        if matches!(state, RunnerState::Ready | RunnerState::Stopped) {
            self.env
                .events
                .fire_env("test_start", &self.env.events.test_start, &self.env);
            self.plan.forget_retired();
        }
        let selected: Vec<bool> = self
            .types
            .iter()
            .map(|t| {
                target
                    .user_types
                    .as_ref()
                    .is_none_or(|names| names.iter().any(|n| n == &t.name))
            })
            .collect();
        self.run_arrivals(&selected);
        // Arrival-rate types start iterations at their rate; the user count is the looping types'.
        let allowed: Vec<bool> = self
            .types
            .iter()
            .zip(&selected)
            .map(|(t, &selected)| selected && t.spawner.arrival().is_none())
            .collect();
        let specs: Vec<(u32, Option<u64>)> = self
            .types
            .iter()
            .map(|t| (t.weight, t.fixed_count))
            .collect();
        let capacity = self.plan.set_types(&specs, &allowed);
        let mut target = target;
        let only_arrival_types = capacity == 0 && self.arrivals.iter().any(Option::is_some);
        if target.users > capacity {
            if !only_arrival_types {
                tracing::warn!(
                    "only {capacity} users can run: every selected user type has a fixed count"
                );
            }
            target.users = capacity;
        }
        if target.spawn_rate.is_nan() || target.spawn_rate <= 0.0 {
            target.spawn_rate = 1.0;
        }
        self.target = target;
        self.share = None;
        self.replan();
        self.publish_target_and_announce();
    }

    /// Run a cluster worker's share: exactly these users per type.
    fn retarget_share(&mut self, mut counts: Vec<u64>, spawn_rate: f64) {
        let state = self.handle().state();
        if matches!(state, RunnerState::Ready | RunnerState::Stopped) {
            self.env
                .events
                .fire_env("test_start", &self.env.events.test_start, &self.env);
            self.plan.forget_retired();
        }
        counts.resize(self.types.len(), 0);
        let specs: Vec<(u32, Option<u64>)> = self
            .types
            .iter()
            .map(|t| (t.weight, t.fixed_count))
            .collect();
        self.plan.set_types(&specs, &vec![true; self.types.len()]);
        self.target = Target {
            users: counts.iter().sum(),
            spawn_rate: if spawn_rate.is_finite() && spawn_rate > 0.0 {
                spawn_rate
            } else {
                1.0
            },
            user_types: None,
        };
        self.share = Some(counts);
        // A worker runs the arrival-rate types when its master gave it a part of their rates.
        let runs_arrivals = self.arrival_split.is_some_and(|split| split.share > 0.0);
        self.run_arrivals(&vec![runs_arrivals; self.types.len()]);
        self.replan();
        self.publish_target_and_announce();
    }

    /// Start the selected arrival-rate types that do not run yet; stop those no longer selected.
    fn run_arrivals(&mut self, selected: &[bool]) {
        self.stop_arrivals(|index| !selected[index]);
        for (index, runnable) in self.types.iter().enumerate() {
            if !selected[index] || self.arrivals[index].is_some() {
                continue;
            }
            let Some(rate) = runnable.spawner.arrival() else {
                continue;
            };
            tracing::info!(
                "starting arrival-rate type {} ({}, at most {} concurrent iterations)",
                runnable.name,
                rate.describe(),
                rate.max_concurrent
            );
            let control = UserControl::new();
            let (rates, receiver) = watch::channel(None);
            let handle = runnable.spawner.clone().start_arrival(
                index,
                control.clone(),
                receiver,
                self.arrival_split,
            );
            self.arrivals[index] = Some(ArrivalRun {
                control,
                handle,
                rates,
            });
        }
    }

    /// Begin stopping the running arrival-rate types whose index `which` picks (their iterations get the stop
    /// timeout, like users' tasks).
    fn stop_arrivals(&mut self, which: impl Fn(usize) -> bool) {
        for index in 0..self.arrivals.len() {
            if which(index)
                && let Some(run) = self.arrivals[index].take()
            {
                self.begin_stop(run.control, run.handle);
            }
        }
    }

    fn set_arrival_rate(&mut self, name: &str, rate: f64) {
        let Some(index) = self.types.iter().position(|t| t.name == name) else {
            tracing::warn!("no user type {name}: its arrival rate is not set");
            return;
        };
        if let Some(run) = &self.arrivals[index] {
            run.rates.send_if_modified(|current| {
                let changed = *current != Some(rate);
                *current = Some(rate);
                changed
            });
        }
    }

    /// Tell the plan what is wanted now: the share or the target, under the guard's cap.
    fn replan(&mut self) {
        match &self.share {
            Some(counts) if self.cap.is_none() => self.plan.want_counts(counts),
            Some(counts) => {
                // Under the guard's cap, each type keeps its part of the share.
                let total: u64 = counts.iter().sum::<u64>().max(1);
                let cap = self.effective_users();
                let scaled: Vec<u64> = counts
                    .iter()
                    .map(|&c| (u128::from(c) * u128::from(cap) / u128::from(total)) as u64)
                    .collect();
                self.plan.want_counts(&scaled);
            }
            None => self.plan.want(self.effective_users()),
        }
    }

    fn publish_target_and_announce(&mut self) {
        let shared = &self.handle().shared;
        shared
            .target_users
            .store(self.target.users, Ordering::Relaxed);
        shared
            .spawn_rate_bits
            .store(self.target.spawn_rate.to_bits(), Ordering::Relaxed);
        tracing::info!(
            "ramping to {} users at a rate of {:.2} per second{}",
            self.target.users,
            self.target.spawn_rate,
            match self.cap {
                Some(cap) => format!(" (the resource guard holds the count at {cap} for now)"),
                None => String::new(),
            }
        );
        self.phase_start = Instant::now();
        self.done_in_phase = 0;
        self.announced_complete = false;
        self.set_state(RunnerState::Spawning);
    }

    /// Users wanted now: the target, under the guard's cap.
    fn effective_users(&self) -> u64 {
        self.cap
            .map_or(self.target.users, |cap| cap.min(self.target.users))
    }

    fn apply_guard(&mut self, request: GuardCap) {
        if !matches!(
            self.handle().state(),
            RunnerState::Spawning | RunnerState::Running
        ) {
            return;
        }
        let running = self.users.len() as u64;
        self.cap = match request {
            GuardCap::Pause => Some(self.cap.map_or(running, |cap| cap.min(running))),
            GuardCap::Shed(count) => Some(running.saturating_sub(count)),
            GuardCap::Lift => None,
        };
        self.handle()
            .shared
            .guard_cap
            .store(self.cap.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.replan();
        if let GuardCap::Shed(_) = request {
            // Shedding does not wait for the spawn rate: the generator is in trouble now.
            while self.users.len() as u64 > self.effective_users() && self.act_once() {}
            self.publish_counts();
        }
        self.phase_start = Instant::now();
        self.done_in_phase = 0;
        self.announced_complete = false;
        if !self.plan.reconciled() {
            self.set_state(RunnerState::Spawning);
        }
    }

    fn next_step_at(&self) -> Option<Instant> {
        if self.announced_complete {
            return None;
        }
        let rate = self.target.spawn_rate;
        let offset =
            Duration::try_from_secs_f64(self.done_in_phase as f64 / rate).unwrap_or(Duration::MAX);
        Some(
            self.phase_start
                .checked_add(offset)
                .unwrap_or(self.phase_start),
        )
    }

    /// Spawn or stop as many users as the spawn rate allows by now.
    async fn step(&mut self) {
        let elapsed = self.phase_start.elapsed().as_secs_f64();
        let allowed = (elapsed * self.target.spawn_rate).floor() as u64 + 1;
        let mut budget = allowed.saturating_sub(self.done_in_phase).min(SPAWN_BATCH);
        while budget > 0 {
            if !self.act_once() {
                break;
            }
            budget -= 1;
            self.done_in_phase += 1;
        }
        self.publish_counts();
        if self.plan.reconciled() && !self.announced_complete {
            self.announced_complete = true;
            self.set_state(RunnerState::Running);
            let count = self.users.len() as u64;
            if self.effective_users() < self.target.users {
                // Held below the target by the resource guard: the target is not reached, nothing to announce.
                tracing::debug!("holding at the resource guard's cap of {count} users");
            } else {
                tracing::info!("all {count} users spawned");
                self.env.events.fire_spawning_complete(&self.env, count);
            }
        }
        if budget == 0 {
            tokio::task::yield_now().await;
        }
    }

    /// Carry out the plan's next step. False when nothing is left to do.
    fn act_once(&mut self) -> bool {
        let spawning_allowed = !self.handle().shared.spawn_hold.load(Ordering::Relaxed);
        match self.plan.next_step(spawning_allowed) {
            Some(Step::StopSurplus) => {
                let plan = &self.plan;
                let Some(index) = self
                    .users
                    .iter()
                    .rposition(|u| plan.has_surplus(u.type_index))
                else {
                    return false;
                };
                let user = self.users.remove(index);
                self.plan.stopped(user.type_index);
                self.begin_stop(user.control, user.handle);
                true
            }
            Some(Step::Spawn(type_index)) => {
                self.spawn_one(type_index);
                true
            }
            None => false,
        }
    }

    fn spawn_one(&mut self, type_index: usize) {
        let control = UserControl::counting_end(Some(self.users_ended.clone()));
        let id = self.next_id;
        self.next_id += 1;
        let handle = self.types[type_index]
            .spawner
            .clone()
            .spawn(id, control.clone());
        self.users.push(RunningUser {
            type_index,
            control,
            handle,
        });
        self.plan.spawned(type_index);
    }

    fn begin_stop(&mut self, control: Arc<UserControl>, handle: JoinHandle<()>) {
        let now = Instant::now();
        let kill_at = now + self.stop_timeout;
        control.request(if self.stop_timeout.is_zero() {
            StopLevel::Killed
        } else {
            StopLevel::Stopping
        });
        self.stopping.push(StoppingUser {
            control,
            handle,
            kill_at,
            abort_at: kill_at + ON_STOP_GRACE,
        });
    }

    /// Forget finished users, kill users past their stop timeout, abort users stuck in `on_stop`.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        if self.handle().emergency_requested() {
            self.abort_all();
            return;
        }
        self.stopping.retain(|user| {
            if user.handle.is_finished() {
                return false;
            }
            if now >= user.abort_at {
                user.handle.abort();
                return false;
            }
            if now >= user.kill_at {
                user.control.request(StopLevel::Killed);
            }
            true
        });
        let before = self.users.len();
        let mut retired_now = Vec::new();
        // Users end rarely (stop_user, errors); polling every handle four times a second is most of what a
        // million idle users cost. Scan when a user's end notice moved the counter, and every few seconds anyway
        // (a notice comes just before its task is marked finished).
        let ended = self.users_ended.load(Ordering::Acquire);
        if ended == self.users_ended_seen && now < self.next_full_scan {
            return;
        }
        self.users_ended_seen = ended;
        self.next_full_scan = now + FULL_SCAN_EVERY;
        self.users.retain(|user| {
            let finished = user.handle.is_finished();
            if finished {
                retired_now.push(user.type_index);
            }
            !finished
        });
        if self.users.len() != before {
            for type_index in retired_now {
                self.plan.retired(type_index);
            }
            self.publish_counts();
        }
    }

    /// Begin stopping every user: they get the stop timeout to finish, then are killed, then aborted. The command
    /// loop goes on meanwhile; [`finish_stop`](Self::finish_stop) completes the stop once the last one is gone.
    fn begin_stop_all(&mut self, winding: Winding) {
        let state = self.handle().state();
        if self.winding == Winding::No {
            if matches!(state, RunnerState::Ready | RunnerState::Stopped) {
                self.winding = winding;
                return;
            }
            self.set_state(RunnerState::Stopping);
            self.env
                .events
                .fire_env("test_stopping", &self.env.events.test_stopping, &self.env);
            let users = std::mem::take(&mut self.users);
            tracing::info!("stopping {} users", users.len());
            for user in users {
                self.begin_stop(user.control, user.handle);
            }
            self.stop_arrivals(|_| true);
            self.plan.all_stopped();
            self.publish_counts();
        }
        // A quit while a stop is under way turns it into a quit; a stop while quitting changes nothing.
        if winding == Winding::Quit || self.winding == Winding::No {
            self.winding = winding;
        }
    }

    /// Every user is gone: the test is stopped (and, for a quit, the run is over: returns true).
    fn finish_stop(&mut self) -> bool {
        let winding = std::mem::replace(&mut self.winding, Winding::No);
        let state = self.handle().state();
        if !matches!(state, RunnerState::Ready | RunnerState::Stopped) {
            self.announced_complete = true;
            self.target.users = 0;
            // The guard's hold belongs to the test that stopped; the next one starts without it.
            self.cap = None;
            let shared = &self.handle().shared;
            shared.target_users.store(0, Ordering::Relaxed);
            shared.guard_cap.store(u64::MAX, Ordering::Relaxed);
            if !shared.emergency.load(Ordering::Relaxed) {
                shared.spawn_hold.store(false, Ordering::Relaxed);
            }
            self.set_state(RunnerState::Stopped);
            self.env
                .events
                .fire_env("test_stop", &self.env.events.test_stop, &self.env);
        }
        if winding == Winding::Quit {
            self.set_state(RunnerState::Quitting);
            return true;
        }
        match self.start_after_stop.take() {
            Some(Pending::Target(target)) => self.retarget(target),
            Some(Pending::Share(counts, rate)) => self.retarget_share(counts, rate),
            None => {}
        }
        false
    }

    /// The emergency stop: abort every user's task now (dropping its state), running or stopping.
    fn abort_all(&mut self) {
        let state = self.handle().state();
        if !matches!(state, RunnerState::Stopping) {
            self.set_state(RunnerState::Stopping);
            self.env
                .events
                .fire_env("test_stopping", &self.env.events.test_stopping, &self.env);
        }
        let count = self.users.len() + self.stopping.len();
        for user in self.users.drain(..) {
            user.handle.abort();
        }
        for user in self.stopping.drain(..) {
            user.handle.abort();
        }
        for run in self.arrivals.iter_mut().filter_map(Option::take) {
            run.handle.abort();
        }
        self.plan.all_stopped();
        self.publish_counts();
        tracing::warn!("emergency stop: {count} users aborted");
        self.announced_complete = true;
        self.set_state(RunnerState::Stopped);
        self.env
            .events
            .fire_env("test_stop", &self.env.events.test_stop, &self.env);
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Split the runner into its handle and the future that drives it.
pub(crate) fn start(
    parts: RunnerParts,
    types: Vec<RunnableType>,
    env: Arc<Environment>,
    stop_timeout: Duration,
) -> JoinHandle<()> {
    let runner = Runner::new(types, env, stop_timeout);
    tokio::spawn(runner.run(parts.commands))
}
