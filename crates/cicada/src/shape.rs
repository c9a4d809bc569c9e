//! Load shapes: code that decides the user count, spawn rate and user types over time.
//!
//! The runner asks the shape once a second with the time since the test started. Returning a [`Target`] sets the
//! runner's target (only changes are applied); returning `None` ends the test, with reports written as usual.

use std::time::Duration;

pub use crate::runner::Target;

/// A load shape (Locust's `LoadTestShape`).
///
/// ```
/// use cicada::prelude::*;
/// use std::time::Duration;
///
/// /// 10 users for a minute, 50 for the next, then stop.
/// struct Steps;
///
/// impl LoadShape for Steps {
///     fn tick(&mut self, run_time: Duration) -> Option<Target> {
///         let users = match run_time.as_secs() {
///             0..60 => 10,
///             60..120 => 50,
///             _ => return None,
///         };
///         Some(Target { users, spawn_rate: 10.0, user_types: None })
///     }
/// }
/// ```
pub trait LoadShape: Send + 'static {
    /// The target at `run_time` into the test, or `None` to end it.
    fn tick(&mut self, run_time: Duration) -> Option<Target>;
}
