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

    /// The rate (iterations per second) for the arrival-rate type `user_type` at `run_time`, asked right after each
    /// [`tick`](Self::tick) that returned a target. `Some(rate)` replaces the type's schedule with that constant
    /// rate until the next change (a step once a second; the iterations due so far stay counted); `None` (the
    /// default) leaves the type's own rate alone.
    ///
    /// ```
    /// use cicada::prelude::*;
    /// use std::time::Duration;
    ///
    /// /// Checkout at 10/s for a minute, then 40/s; two browsing users throughout.
    /// struct Rush;
    ///
    /// impl LoadShape for Rush {
    ///     fn tick(&mut self, _run_time: Duration) -> Option<Target> {
    ///         Some(Target { users: 2, spawn_rate: 2.0, user_types: None })
    ///     }
    ///
    ///     fn arrival_rate(&mut self, run_time: Duration, user_type: &str) -> Option<f64> {
    ///         (user_type == "Checkout").then(|| if run_time.as_secs() < 60 { 10.0 } else { 40.0 })
    ///     }
    /// }
    /// ```
    fn arrival_rate(&mut self, run_time: Duration, user_type: &str) -> Option<f64> {
        let _ = (run_time, user_type);
        None
    }
}
