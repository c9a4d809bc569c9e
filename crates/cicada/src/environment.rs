//! The environment of a run: what event listeners and tasks can reach (stats, runner, options, host).

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use cicada_stats::Stats;

use crate::events::Events;
use crate::options::Options;
use crate::runner::RunnerHandle;

/// Everything a run shares: handed to every lifecycle event listener.
pub struct Environment {
    pub(crate) stats: Stats,
    pub(crate) runner: RunnerHandle,
    pub(crate) events: Arc<Events>,
    pub(crate) options: Arc<Options>,
    pub(crate) host: String,
    /// `i32::MIN` means "not set by a listener".
    exit_code_override: AtomicI32,
}

impl Environment {
    pub(crate) fn new(
        stats: Stats,
        runner: RunnerHandle,
        events: Arc<Events>,
        options: Arc<Options>,
        host: String,
    ) -> Self {
        Environment {
            stats,
            runner,
            events,
            options,
            host,
            exit_code_override: AtomicI32::new(i32::MIN),
        }
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
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Set the process exit code (Locust's `environment.process_exit_code`), typically from a `quitting` listener.
    pub fn set_exit_code(&self, code: i32) {
        self.exit_code_override.store(code, Ordering::Relaxed);
    }

    pub(crate) fn exit_code_override(&self) -> Option<i32> {
        match self.exit_code_override.load(Ordering::Relaxed) {
            i32::MIN => None,
            code => Some(code),
        }
    }
}
