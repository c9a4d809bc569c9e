//! cicada: load tests written as Rust code, in Locust's model.
//!
//! A test registers [`UserType`]s: kinds of simulated visitors, each with weighted tasks (`async fn`s taking
//! `&mut User`), a wait time between tasks, `on_start` / `on_stop` hooks, tags and nested task sets. [`Cicada::run`]
//! turns the test into a command-line program with Locust's flags that spawns the users, records every request into
//! lock-free per-thread stats, prints Locust's tables, and writes CSV and JSON reports.
//!
//! ```no_run
//! use cicada::prelude::*;
//!
//! async fn index(user: &mut User) -> TaskResult {
//!     user.get("/").send().await?;
//!     Ok(())
//! }
//!
//! async fn view_item(user: &mut User) -> TaskResult {
//!     let id = user.rng().u32(1..=10_000);
//!     user.get(&format!("/items/{id}")).name("/items/[id]").send().await?;
//!     Ok(())
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     Cicada::new()
//!         .user(
//!             UserType::<()>::new("Visitor")
//!                 .wait_time(between(1.0, 2.0))
//!                 .task(index)
//!                 .task(Task::new(view_item).weight(3)),
//!         )
//!         .run()
//! }
//! ```
//!
//! The module tree follows the architecture: [`user`] (user types, tasks, wait times), [`client`] (the per-user
//! HTTP client), [`runner`] (spawning and stopping users), [`stats`] (request statistics), [`events`] (hooks),
//! [`shape`] (load shapes), [`options`] (command line), [`report`] (end-of-run reports), [`messages`] (custom
//! messages between master and workers) and [`data`] (test data handed out across a cluster, CSV files).

#![deny(missing_docs)]

mod app;
mod assets;
pub mod checks;
pub mod client;
mod cluster;
pub mod data;
mod environment;
pub mod events;
pub mod guard;
mod logging;
pub mod messages;
mod metrics;
pub mod options;
mod recording;
pub mod report;
pub mod runner;
pub mod shape;
mod signals;
pub mod user;
mod web;

/// The generator's self-monitoring (re-exported from the `cicada-monitor` crate).
pub use cicada_monitor as monitor;
/// Request statistics (re-exported from the `cicada-stats` crate).
pub use cicada_stats as stats;
/// The async runtime users run on, for sleeps, timeouts and custom clients (`cicada::tokio::time::sleep`).
pub use tokio;

pub use app::{Cicada, EXIT_GUARD_STOPPED, EXIT_USAGE, FetchSourceError, fetch_test_source};
pub use checks::EXIT_CHECK_FAILED;
pub use client::{ClientOptions, HttpClient, HttpVersion, RequestBuilder, RequestError, Response};
pub use environment::Environment;
pub use runner::{RunnerHandle, RunnerState, Target};
pub use shape::LoadShape;
pub use user::{Task, TaskError, TaskResult, TaskSet, User, UserType};
pub use web::WebError;

/// Everything a test file needs: `use cicada::prelude::*;`
pub mod prelude {
    pub use crate::client::{ClientOptions, HttpVersion, RequestError, Response};
    pub use crate::data::{CsvCycle, DataSource, WhenExhausted};
    pub use crate::events::{RequestEvent, UserErrorEvent};
    pub use crate::messages::{Message, MessageError, MessageSource};
    pub use crate::runner::{RunnerState, Target};
    pub use crate::shape::LoadShape;
    pub use crate::user::{
        ArrivalRate, Flow, Stage, Task, TaskError, TaskResult, TaskSet, User, UserType, WaitTime,
        between, constant, constant_pacing, constant_throughput, custom_wait, interrupt,
        reschedule, stop_test, stop_user,
    };
    pub use crate::{Cicada, Environment};
}
