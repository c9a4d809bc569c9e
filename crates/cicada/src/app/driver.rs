//! What ends or reshapes a test: the run time ([`RunClock`], also set by the web UI's start form), a load shape,
//! SIGINT/SIGTERM, `--autoquit`, a task or the resource guard that stops the test, or (with `--check-abort`) a check
//! that can no longer pass. The driver loops once a second
//! (or sooner, when one of those fires), lets the collector take its second, and returns why the run ended as a
//! [`StopReason`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::collector::Collector;
use super::setup::RunSetup;
use crate::checks::{AbortRule, Check, Measured};
use crate::runner::{RunnerState, Target};
use crate::shape::LoadShape;
use crate::signals::{StopSignal, StopSignals};

/// When the current test should stop (from `--run-time`, or the web UI's start form).
#[derive(Default)]
pub(crate) struct RunClock {
    deadline: Mutex<Option<tokio::time::Instant>>,
}

impl RunClock {
    /// Stop the current test `run_time` from now; `None`: no run time.
    pub(crate) fn set(&self, run_time: Option<Duration>) {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) =
            run_time.map(|d| tokio::time::Instant::now() + d);
    }

    /// When the current test should stop, if it has a run time.
    pub(crate) fn deadline(&self) -> Option<tokio::time::Instant> {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// `--run-time` (headless) ran out.
    RunTime,
    /// SIGINT or SIGTERM.
    Signal(StopSignal),
    /// The resource guard stopped the test.
    Guard,
    /// A task (`stop_test()`) or the API asked the run to end.
    TestAsked,
    /// The load shape returned `None`.
    ShapeEnded,
    /// `--autoquit` seconds after the test stopped in the web UI.
    Autoquit,
    /// A check's abort rule (`abort`, `abort-after`, `--check-abort`) stopped the run.
    CheckAbort,
}

impl StopReason {
    /// How the summary names it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StopReason::RunTime => "run time limit reached",
            StopReason::Signal(signal) => signal.stop_reason(),
            StopReason::Guard => "the resource guard stopped the test",
            StopReason::TestAsked => "the test asked to stop",
            StopReason::ShapeEnded => "the load shape ended",
            StopReason::Autoquit => "--autoquit after the test stopped",
            StopReason::CheckAbort => "a check failed and its abort rule stopped the test",
        }
    }

    /// The signal that ended the run, if one did.
    pub(crate) fn signal(self) -> Option<StopSignal> {
        match self {
            StopReason::Signal(signal) => Some(signal),
            _ => None,
        }
    }
}

/// Drives one run until something ends it.
pub(super) struct Driver<'a> {
    setup: &'a RunSetup,
    shape: Option<Box<dyn LoadShape>>,
    /// When the load shape's clock started: at once when headless, on the start form otherwise.
    shape_started: Option<Instant>,
    last_target: Option<Target>,
    autoquit_at: Option<Instant>,
    /// Per check, since when it has failed without a break (for `abort-after`).
    failing_since: Vec<Option<Instant>>,
}

impl<'a> Driver<'a> {
    /// Start the test when it starts by itself (headless or `--autostart`), and get ready to drive it.
    pub(super) fn new(setup: &'a RunSetup, shape: Option<Box<dyn LoadShape>>) -> Driver<'a> {
        let options = &setup.options;
        let starts_now = options.headless || options.autostart;
        if starts_now {
            setup.web.clock.set(options.run_time);
            if shape.is_none() {
                setup.runner.start(options.users, options.spawn_rate);
            }
        }
        Driver {
            setup,
            shape,
            shape_started: starts_now.then(Instant::now),
            last_target: None,
            autoquit_at: None,
            failing_since: vec![None; options.checks.len()],
        }
    }

    /// Loop until the run ends; the collector takes its second on every tick.
    pub(super) async fn drive(
        mut self,
        signals: &mut StopSignals,
        collector: &mut Collector,
    ) -> StopReason {
        let setup = self.setup;
        let runner = &setup.runner;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = setup.web.clock.deadline();
            tokio::select! {
                _ = tick.tick() => {}
                _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                    setup.web.clock.set(None);
                    if setup.options.headless {
                        tracing::info!("--run-time limit reached, stopping the test");
                        return StopReason::RunTime;
                    }
                    tracing::info!("run time limit reached, stopping the test");
                    runner.stop();
                    continue;
                }
                signal = signals.next() => {
                    tracing::info!(
                        "{}: stopping the test gracefully (send it again to exit at once)",
                        signal.stop_reason()
                    );
                    return StopReason::Signal(signal);
                }
                // The guard's emergency stop (or a task's stop_test) ends the run without waiting for the tick.
                _ = runner.wait_for_state(Duration::from_secs(86_400), |s| s == RunnerState::Quitting) => {}
            }
            if let Some(reason) = self.step() {
                return reason;
            }
            collector.tick(setup);
            if let Some(why) = self.check_that_stops_the_run() {
                tracing::warn!("{why}: stopping the test");
                return StopReason::CheckAbort;
            }
        }
    }

    /// The first check whose abort rule says to stop now, judged on the stats just collected (over the unmarked
    /// seconds when some were marked saturated, as at the end), and why.
    fn check_that_stops_the_run(&mut self) -> Option<String> {
        let options = &self.setup.options;
        let rule = |check: &Check| {
            check
                .abort
                .or((options.check_abort && check.judged_early()).then_some(AbortRule::CannotPass))
        };
        if !options.checks.iter().any(|check| rule(check).is_some()) {
            return None;
        }
        let snapshot = self.setup.stats.snapshot();
        let unmarked = self.setup.stats.unmarked_snapshot();
        let measured = Measured::of(&snapshot, unmarked.as_ref());
        let now = Instant::now();
        for (check, failing_since) in options.checks.iter().zip(&mut self.failing_since) {
            match rule(check) {
                None => {}
                Some(AbortRule::CannotPass) if check.cannot_pass(measured) => {
                    return Some(format!("check `{}` can no longer pass", check.expr));
                }
                Some(AbortRule::CannotPass) => {}
                Some(AbortRule::FailingFor(grace)) => {
                    if !check.fails_now(measured) {
                        *failing_since = None;
                    } else if now.duration_since(*failing_since.get_or_insert(now)) >= grace {
                        return Some(format!(
                            "check `{}` has failed for {}",
                            check.expr,
                            humantime::format_duration(grace)
                        ));
                    }
                }
            }
        }
        None
    }

    /// One second of driving: why the run ends now, if it does.
    fn step(&mut self) -> Option<StopReason> {
        let setup = self.setup;
        let runner = &setup.runner;
        let state = runner.state();
        if state == RunnerState::Quitting {
            return Some(
                if setup
                    .guard
                    .as_ref()
                    .is_some_and(crate::guard::Guard::stopped_test)
                {
                    StopReason::Guard
                } else {
                    StopReason::TestAsked
                },
            );
        }
        if self.shape_started.is_none()
            && !matches!(state, RunnerState::Ready | RunnerState::Stopped)
        {
            self.shape_started = Some(Instant::now());
        }
        if let Some(seconds) = setup.options.autoquit.filter(|_| !setup.options.headless) {
            match (state, self.autoquit_at) {
                (RunnerState::Stopped, None) => {
                    self.autoquit_at = Some(Instant::now() + Duration::from_secs(seconds));
                }
                (RunnerState::Stopped, Some(at)) if Instant::now() >= at => {
                    return Some(StopReason::Autoquit);
                }
                (RunnerState::Stopped, Some(_)) => {}
                _ => self.autoquit_at = None,
            }
        }
        if let (Some(shape), Some(shape_start)) = (self.shape.as_mut(), self.shape_started) {
            match shape.tick(shape_start.elapsed()) {
                Some(target) => {
                    if self.last_target.as_ref() != Some(&target) {
                        runner.start_target(target.clone());
                        self.last_target = Some(target);
                    }
                    // The runner passes on only changes of rate.
                    let run_time = shape_start.elapsed();
                    for name in setup.env.arrival_type_names() {
                        if let Some(rate) = shape.arrival_rate(run_time, &name) {
                            runner.set_arrival_rate(&name, rate);
                        }
                    }
                }
                None => {
                    tracing::info!("the load shape ended the test");
                    return Some(StopReason::ShapeEnded);
                }
            }
        }
        None
    }
}
