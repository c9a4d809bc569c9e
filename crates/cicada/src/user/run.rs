//! The life of one user: `on_start`, the task loop with its waits, nested sets, control flow, `on_stop`.
//!
//! A user is one tokio task. The runner talks to it through a [`UserControl`]: "stopping" lets the current task
//! finish (the user leaves at its next wait or task boundary), "killed" drops whatever it is doing. Either way
//! `on_stop` runs afterwards.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::arrival::{ArrivalCounters, ArrivalParts, ArrivalRate};
use super::errors::{ErrorLog, trimmed_backtrace};
use super::panic::CatchPanic;
use super::schedule::ScheduleLag;
use super::task::{Entry, Order, RatioRow, TagFilter, TaskFn, TaskSet};
use super::{Flow, TaskErrorKind, User, UserType, UserTypeContext, WaitTime};
use crate::client::{ClientError, ClientShared, HttpClient};
use crate::environment::Environment;
use crate::events::UserErrorEvent;

/// How far a user has been asked to stop. Levels only ever go up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum StopLevel {
    Running = 0,
    /// Finish the current task, then leave.
    Stopping = 1,
    /// Leave now.
    Killed = 2,
}

/// The runner's handle on one user.
pub(crate) struct UserControl {
    level: AtomicU8,
    changed: Notify,
    /// Counts users whose task ended (returned, panicked or was aborted), shared by the runner's users, so that
    /// the runner looks for finished users only when some have ended instead of polling every handle.
    ended: Option<Arc<AtomicU64>>,
}

impl UserControl {
    pub(crate) fn new() -> Arc<Self> {
        Self::counting_end(None)
    }

    /// A control whose user adds one to `ended` when its task ends, however it ends.
    pub(crate) fn counting_end(ended: Option<Arc<AtomicU64>>) -> Arc<Self> {
        Arc::new(UserControl {
            level: AtomicU8::new(StopLevel::Running as u8),
            changed: Notify::new(),
            ended,
        })
    }

    pub(crate) fn request(&self, level: StopLevel) {
        self.level.fetch_max(level as u8, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    fn at_least(&self, level: StopLevel) -> bool {
        self.level.load(Ordering::Acquire) >= level as u8
    }

    /// Resolves once the level reaches `level`.
    pub(crate) async fn reached(&self, level: StopLevel) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Register before checking, so a request between the check and the await is not missed.
            changed.as_mut().enable();
            if self.at_least(level) {
                return;
            }
            changed.await;
        }
    }
}

/// A user type with its state type erased, as the runner sees it before the run.
pub(crate) trait UserKind: Send + Sync {
    fn name(&self) -> &str;
    fn weight(&self) -> u32;
    fn fixed_count(&self) -> Option<u64>;
    fn host(&self) -> Option<&str>;
    /// Apply `--tags` / `--exclude-tags`; false when no task is left.
    fn filter_tags(&mut self, filter: &TagFilter) -> bool;
    fn ratio_rows(&self) -> Vec<RatioRow>;
    /// The arrival rate of an arrival-rate type (as defined, before the command line's overrides).
    fn arrival(&self) -> Option<&ArrivalRate>;
    /// Bind to a run: build the client configuration and return what spawns users.
    fn activate(
        self: Box<Self>,
        env: Arc<Environment>,
        host: &str,
    ) -> Result<Arc<dyn SpawnUser>, ClientError>;
}

/// A user type bound to a run.
pub(crate) trait SpawnUser: Send + Sync {
    fn spawn(self: Arc<Self>, id: u64, control: Arc<UserControl>) -> JoinHandle<()>;
    /// Send users spawned from now on to `host` (types with a host of their own keep it).
    fn set_host(&self, host: &str) -> Result<(), ClientError>;
    /// An arrival-rate type's rate, with the command line's overrides; `None` for a looping type.
    fn arrival(&self) -> Option<&ArrivalRate>;
    /// Start an arrival-rate type's scheduler and pool (a looping type's returns at once). It runs until `control`
    /// stops it; `rates` carries constant rates that replace its schedule from when they arrive; `split` is a
    /// cluster worker's part of the rate.
    fn start_arrival(
        self: Arc<Self>,
        type_index: usize,
        control: Arc<UserControl>,
        rates: tokio::sync::watch::Receiver<Option<f64>>,
        split: Option<super::arrival::ClusterSplit>,
    ) -> JoinHandle<()>;
}

impl<S: Send + 'static> UserKind for UserType<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn weight(&self) -> u32 {
        self.weight
    }

    fn fixed_count(&self) -> Option<u64> {
        self.fixed_count
    }

    fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    fn filter_tags(&mut self, filter: &TagFilter) -> bool {
        filter.is_empty() || self.root.filter_tags(filter, &[])
    }

    fn ratio_rows(&self) -> Vec<RatioRow> {
        let mut rows = Vec::new();
        self.root.ratio_rows(0, 1.0, &mut rows);
        rows
    }

    fn arrival(&self) -> Option<&ArrivalRate> {
        self.arrival.as_ref()
    }

    fn activate(
        self: Box<Self>,
        env: Arc<Environment>,
        host: &str,
    ) -> Result<Arc<dyn SpawnUser>, ClientError> {
        let own_host = self.host.is_some();
        let host = self.host.clone().unwrap_or_else(|| host.to_string());
        let arrival = self.arrival.clone().map(|rate| {
            if self.wait_time_set {
                tracing::warn!(
                    "user type {}: wait times do not apply to an arrival-rate type (its iterations start at the rate)",
                    self.name
                );
            }
            let options = &env.options;
            let rate = rate.overridden(options.arrival_rate, options.max_concurrent);
            let counters = Arc::new(ArrivalCounters::new(&self.name));
            env.register_arrival(counters.clone());
            (rate, counters)
        });
        let schedule = self.wait_time.pacing_period().map(|period| {
            let lag = Arc::new(ScheduleLag::new(&self.name, period));
            env.register_schedule(lag.clone());
            lag
        });
        let name: Arc<str> = Arc::from(self.name.as_str());
        let recorder = Arc::new(crate::recording::Recorder {
            name: name.clone(),
            env: env.clone(),
        });
        let context = Arc::new(UserTypeContext {
            name,
            env,
            recorder: recorder.clone(),
            schedule,
            error_log: ErrorLog::new(),
        });
        let client = ClientShared::new(&host, own_host, &self.client, recorder)?;
        Ok(Arc::new(ActiveUserType {
            definition: *self,
            context,
            client,
            arrival,
        }))
    }
}

/// A user type bound to a run: what its users (or an arrival-rate type's instances) are made from.
pub(crate) struct ActiveUserType<S> {
    pub(super) definition: UserType<S>,
    pub(super) context: Arc<UserTypeContext>,
    client: Arc<ClientShared>,
    /// An arrival-rate type's rate (with the command line's overrides) and counters.
    arrival: Option<(ArrivalRate, Arc<ArrivalCounters>)>,
}

impl<S: Send + 'static> ActiveUserType<S> {
    /// A new user (or pooled instance) of this type.
    pub(super) fn new_user(&self, id: u64, control: Arc<UserControl>) -> User<S> {
        User::new(
            (self.definition.new_state)(),
            HttpClient::new(self.client.clone()),
            id,
            self.context.clone(),
        )
        .with_control(control)
    }
}

impl<S: Send + 'static> SpawnUser for ActiveUserType<S> {
    fn spawn(self: Arc<Self>, id: u64, control: Arc<UserControl>) -> JoinHandle<()> {
        tokio::spawn(run_user(self, id, control))
    }

    fn set_host(&self, host: &str) -> Result<(), ClientError> {
        self.client.set_host(host)
    }

    fn arrival(&self) -> Option<&ArrivalRate> {
        self.arrival.as_ref().map(|(rate, _)| rate)
    }

    fn start_arrival(
        self: Arc<Self>,
        type_index: usize,
        control: Arc<UserControl>,
        rates: tokio::sync::watch::Receiver<Option<f64>>,
        split: Option<super::arrival::ClusterSplit>,
    ) -> JoinHandle<()> {
        let Some((rate, counters)) = self.arrival.clone() else {
            return tokio::spawn(async {});
        };
        let rate = match split {
            Some(split) => split.apply(rate),
            None => rate,
        };
        let parts = ArrivalParts {
            active: self,
            rate,
            counters,
            type_index,
        };
        tokio::spawn(super::arrival::run_arrival(parts, control, rates))
    }
}

/// How a user (or one of its task sets) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exit {
    /// Asked to stop by the runner (graceful or killed).
    Stopped,
    StopUser,
    StopTest,
    Interrupted {
        reschedule: bool,
    },
}

/// What one task asked for.
pub(super) enum Step {
    Continue,
    Reschedule,
    Exit(Exit),
}

/// Adds one to the user's end counter when dropped: at the end of `run_user`, or when its task is aborted.
struct EndNotice(Arc<UserControl>);

impl Drop for EndNotice {
    fn drop(&mut self) {
        if let Some(ended) = &self.0.ended {
            ended.fetch_add(1, Ordering::Release);
        }
    }
}

async fn run_user<S: Send + 'static>(
    active: Arc<ActiveUserType<S>>,
    id: u64,
    control: Arc<UserControl>,
) {
    let _end_notice = EndNotice(control.clone());
    let definition = &active.definition;
    let mut user = active.new_user(id, control.clone());
    let exit = {
        let main = async {
            if let Some(hook) = &definition.on_start
                && let Step::Exit(exit @ (Exit::StopUser | Exit::StopTest)) =
                    run_task(&mut user, hook.as_ref(), "on_start").await
            {
                return exit;
            }
            run_set(&mut user, &definition.root, &definition.wait_time, &control).await
        };
        tokio::select! {
            biased;
            _ = control.reached(StopLevel::Killed) => Exit::Stopped,
            exit = main => exit,
        }
    };
    if let Some(hook) = &definition.on_stop {
        run_task(&mut user, hook.as_ref(), "on_stop").await;
    }
    if exit == Exit::StopTest {
        tracing::info!(
            "user {} ({}) asked to stop the test",
            id,
            active.context.name
        );
        active.context.env.runner.quit();
    }
}

type SetFuture<'a> = Pin<Box<dyn Future<Output = Exit> + Send + 'a>>;

/// Run a task set until it is interrupted, its user stops, or the runner stops the user.
fn run_set<'a, S: Send + 'static>(
    user: &'a mut User<S>,
    set: &'a TaskSet<S>,
    inherited_wait: &'a WaitTime,
    control: &'a UserControl,
) -> SetFuture<'a> {
    Box::pin(async move {
        let wait = set.wait_time.as_ref().unwrap_or(inherited_wait);
        if let Some(hook) = &set.on_start
            && let Step::Exit(exit) = run_task(user, hook.as_ref(), "on_start").await
        {
            return exit;
        }
        let total_weight: u64 = set.entries.iter().map(|e| u64::from(e.weight())).sum();
        let mut sequence = SequenceCursor::default();
        let pacing = wait.pacing_period();
        // Only pacing and custom wait times need to know when a task started and how long it took.
        let timed = wait.uses_task_time();
        // When the next task should start, for paced wait times.
        let mut due: Option<Instant> = None;
        let exit = loop {
            if control.at_least(StopLevel::Stopping) {
                break Exit::Stopped;
            }
            let Some(entry) = (match set.order {
                Order::Random => pick_weighted(&set.entries, total_weight, user.rng()),
                Order::Sequential => sequence.next(&set.entries),
            }) else {
                tracing::warn!("task set {:?} has no task with a weight above 0", set.name);
                control.reached(StopLevel::Stopping).await;
                break Exit::Stopped;
            };
            let started = timed.then(Instant::now);
            if let (Some(started), Some(due), Some(period), Some(lag)) =
                (started, due, pacing, &user.context.schedule)
            {
                lag.record(started.saturating_duration_since(due), period);
            }
            let step = match entry {
                Entry::Task(task) => run_task(user, task.run.as_ref(), &task.name).await,
                Entry::Set(nested) => match run_set(user, nested, wait, control).await {
                    Exit::Interrupted { reschedule: true } => Step::Reschedule,
                    Exit::Interrupted { reschedule: false } => Step::Continue,
                    other => Step::Exit(other),
                },
            };
            match step {
                Step::Continue => {}
                Step::Reschedule => continue,
                Step::Exit(exit) => break exit,
            }
            let task_elapsed = started.map_or(Duration::ZERO, |started| started.elapsed());
            let pause = wait.next_wait(task_elapsed, user.rng());
            due = started
                .zip(pacing)
                .map(|(started, period)| started + period);
            if pause >= RELEASE_BUFFERS_PAUSE {
                user.client().release_idle_buffers();
            }
            if !pause_unless_stopped(pause, pacing.is_none(), control).await {
                break Exit::Stopped;
            }
        };
        if let Some(hook) = &set.on_stop {
            run_task(user, hook.as_ref(), "on_stop").await;
        }
        exit
    })
}

/// A user about to pause this long frees its idle connections' buffers first: remaking them costs one allocation
/// per task, which at one task per such pause is nothing, while an idle user's memory is what lets a generator hold
/// many of them.
const RELEASE_BUFFERS_PAUSE: Duration = Duration::from_millis(200);

/// Wait `pause`, or less if the runner asks the user to stop. Returns false when stopped. A `think` time ends on
/// the shared wake-up grid ([`super::wait::think_deadline`]); a pacing pause ends exactly.
async fn pause_unless_stopped(pause: Duration, think: bool, control: &UserControl) -> bool {
    if pause.is_zero() {
        // A task that never awaited anything pending would otherwise spin without yielding to the runtime.
        tokio::task::consume_budget().await;
        return !control.at_least(StopLevel::Stopping);
    }
    tokio::select! {
        biased;
        _ = control.reached(StopLevel::Stopping) => false,
        _ = sleep_for(pause, think) => true,
    }
}

fn sleep_for(pause: Duration, think: bool) -> tokio::time::Sleep {
    if think {
        // The runtime's clock, which tests may pause.
        let now = tokio::time::Instant::now().into_std();
        tokio::time::sleep_until(super::wait::think_deadline(now, pause).into())
    } else {
        tokio::time::sleep(pause)
    }
}

pub(super) fn pick_weighted<'s, S>(
    entries: &'s [Entry<S>],
    total_weight: u64,
    rng: &mut fastrand::Rng,
) -> Option<&'s Entry<S>> {
    if total_weight == 0 {
        return None;
    }
    let mut ticket = rng.u64(0..total_weight);
    for entry in entries {
        let weight = u64::from(entry.weight());
        if ticket < weight {
            return Some(entry);
        }
        ticket -= weight;
    }
    None
}

/// Position in a sequential set; a task of weight `n` runs `n` times in a row.
#[derive(Default)]
struct SequenceCursor {
    index: usize,
    repeat: u32,
}

impl SequenceCursor {
    fn next<'s, S>(&mut self, entries: &'s [Entry<S>]) -> Option<&'s Entry<S>> {
        for _ in 0..=entries.len() {
            let entry = entries.get(self.index)?;
            if self.repeat < entry.weight() {
                self.repeat += 1;
                return Some(entry);
            }
            self.repeat = 0;
            self.index = (self.index + 1) % entries.len();
        }
        None
    }
}

/// Run one task (or hook), turning errors and panics into user errors and flow requests into steps.
pub(super) async fn run_task<S: Send + 'static>(
    user: &mut User<S>,
    task: &dyn TaskFn<S>,
    label: &str,
) -> Step {
    let outcome = CatchPanic::new(task.call(user)).await;
    let (message, mut location, backtrace) = match outcome {
        Ok(Ok(())) => return Step::Continue,
        Ok(Err(error)) => match error.into_kind() {
            TaskErrorKind::Flow(Flow::StopUser) => return Step::Exit(Exit::StopUser),
            TaskErrorKind::Flow(Flow::StopTest) => return Step::Exit(Exit::StopTest),
            TaskErrorKind::Flow(Flow::Interrupt { reschedule }) => {
                return Step::Exit(Exit::Interrupted { reschedule });
            }
            TaskErrorKind::Flow(Flow::Reschedule) => return Step::Reschedule,
            // Already counted as a failed request; the task just ends there.
            TaskErrorKind::Request(_) => return Step::Continue,
            TaskErrorKind::User(error) => (
                error.chain(),
                format!("task {label}"),
                error
                    .traceback
                    .clone()
                    .or_else(|| trimmed_backtrace(&error.backtrace)),
            ),
        },
        Err(panic) => (
            format!("panic: {}", panic.message),
            format!("task {label} at {}", panic.location),
            panic.backtrace.as_ref().and_then(trimmed_backtrace),
        ),
    };
    let context = &user.context;
    if let Some(suppressed) = context.error_log.admit(&message, &location, Instant::now()) {
        if suppressed > 0 {
            tracing::error!(
                user_type = %context.name,
                "user error in {location}: {message} ({suppressed} more like it since the last report were not logged)"
            );
        } else {
            tracing::error!(user_type = %context.name, "user error in {location}: {message}");
        }
    }
    if let Some(backtrace) = backtrace {
        location.push('\n');
        location.push_str(&backtrace);
    }
    context
        .env
        .stats
        .record_user_error(&context.name, &message, &location);
    context.env.events.fire_user_error(&UserErrorEvent {
        user_type: &context.name,
        message: &message,
        location: &location,
    });
    Step::Continue
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::{Task, TaskResult};

    async fn noop(_user: &mut User) -> TaskResult {
        Ok(())
    }

    #[test]
    fn sequence_repeats_by_weight_and_loops() {
        let set = TaskSet::<()>::sequential("s")
            .task(Task::new(noop).name("a").weight(2))
            .task(Task::new(noop).name("b"))
            .task(Task::new(noop).name("skipped").weight(0))
            .task(Task::new(noop).name("c"));
        let mut cursor = SequenceCursor::default();
        let names: Vec<_> = (0..9)
            .map(|_| cursor.next(&set.entries).unwrap().name().to_string())
            .collect();
        assert_eq!(names, ["a", "a", "b", "c", "a", "a", "b", "c", "a"]);
    }

    #[test]
    fn weighted_pick_follows_weights() {
        let set = TaskSet::<()>::random("r")
            .task(Task::new(noop).name("heavy").weight(3))
            .task(Task::new(noop).name("light"));
        let mut rng = fastrand::Rng::with_seed(3);
        let heavy = (0..10_000)
            .filter(|_| pick_weighted(&set.entries, 4, &mut rng).unwrap().name() == "heavy")
            .count();
        assert!((7_200..7_800).contains(&heavy), "{heavy}");
        assert!(pick_weighted(&set.entries, 0, &mut rng).is_none());
    }

    #[tokio::test]
    async fn control_wakes_waiters() {
        let control = UserControl::new();
        let waiter = {
            let control = control.clone();
            tokio::spawn(async move { control.reached(StopLevel::Stopping).await })
        };
        tokio::task::yield_now().await;
        control.request(StopLevel::Killed);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(!pause_unless_stopped(Duration::from_secs(60), true, &control).await);
    }
}
