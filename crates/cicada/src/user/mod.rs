//! Users: the simulated visitors a test is written as.
//!
//! A [`UserType`] describes one kind of visitor (weight or fixed count, host, wait time, `on_start` / `on_stop`,
//! weighted and tagged tasks, nested task sets). Each spawned [`User`] is one lightweight tokio task that owns its
//! HTTP client (connections and cookies), its random number generator and the test author's per-user state `S`.

pub mod arrival;
mod errors;
mod panic;
pub(crate) mod run;
pub mod schedule;
pub mod task;
pub mod wait;

use std::backtrace::Backtrace;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{ClientOptions, HttpClient, RequestBuilder, RequestError};
use crate::environment::Environment;

pub use arrival::{ArrivalRate, ArrivalReport, Stage};
pub use task::{AsyncUserFn, IntoEntry, Order, RatioRow, TagFilter, Task, TaskFn, TaskSet};
pub use wait::{
    WaitContext, WaitTime, between, constant, constant_pacing, constant_throughput, custom_wait,
};

/// What a task returns: `Ok(())`, or a [`TaskError`] (a failed request, your own error, or a control-flow request
/// such as [`stop_user`]).
pub type TaskResult = Result<(), TaskError>;

/// Control flow a task can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Stop this user (it runs `on_stop` and is not replaced).
    StopUser,
    /// Stop the whole test (reports are written as usual).
    StopTest,
    /// Leave the current task set and return to its parent; with `reschedule`, the parent picks its next task at
    /// once instead of waiting first.
    Interrupt {
        /// Skip the parent's wait.
        reschedule: bool,
    },
    /// End this task and pick the next one at once, without waiting.
    Reschedule,
}

/// Why a task ended early.
///
/// Anything that converts into a boxed error converts into it with `?`: every `std::error::Error`, strings, and
/// `anyhow::Error` (whose cause chain is kept). A failed request's [`RequestError`] is recognised and not counted
/// twice: the request is already in the stats as a failure, and the task simply ends there. Every other error is
/// counted as a user error (Locust's "exceptions") with its whole cause chain, and the user goes on with its next
/// task. With `RUST_BACKTRACE=1` (or `RUST_LIB_BACKTRACE=1`) the place where the error entered the task's result is
/// kept too, as a backtrace in the exceptions table.
pub struct TaskError {
    kind: TaskErrorKind,
}

pub(crate) enum TaskErrorKind {
    Flow(Flow),
    Request(Box<RequestError>),
    User(Box<UserError>),
}

/// A task's own error, with where it was raised when backtraces are on.
pub(crate) struct UserError {
    pub(crate) error: Box<dyn std::error::Error + Send + Sync>,
    pub(crate) backtrace: Backtrace,
    /// A traceback the error brought along (a script's own stack), kept instead of the Rust backtrace.
    pub(crate) traceback: Option<String>,
}

impl UserError {
    /// The error and its causes, `outer: inner: root` (anyhow's `{:#}`); a cause whose text the message already
    /// ends with (`#[error("...: {0}")]`) is not repeated.
    pub(crate) fn chain(&self) -> String {
        error_chain(self.error.as_ref())
    }
}

/// Causes followed at most when an error's chain is written out.
const MAX_CHAIN_DEPTH: usize = 16;

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    for _ in 0..MAX_CHAIN_DEPTH {
        let Some(cause) = source else { break };
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl TaskError {
    /// A user error with a message and the traceback of where it was raised, for tasks written in another
    /// language (a script's stack): the exceptions table keeps `traceback` where a Rust task's backtrace would go.
    ///
    /// ```
    /// use cicada::TaskError;
    ///
    /// let error = TaskError::with_traceback("shop.lua:4: out of stock", "stack traceback:\n\tshop.lua:4: in function <shop.lua:2>");
    /// assert_eq!(error.to_string(), "shop.lua:4: out of stock");
    /// ```
    pub fn with_traceback(message: impl fmt::Display, traceback: impl Into<String>) -> Self {
        TaskError {
            kind: TaskErrorKind::User(Box::new(UserError {
                error: message.to_string().into(),
                backtrace: Backtrace::disabled(),
                traceback: Some(traceback.into()),
            })),
        }
    }

    /// A user error with a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self::user(message.to_string().into())
    }

    /// A control-flow request.
    pub fn flow(flow: Flow) -> Self {
        TaskError {
            kind: TaskErrorKind::Flow(flow),
        }
    }

    fn user(error: Box<dyn std::error::Error + Send + Sync>) -> Self {
        TaskError {
            kind: TaskErrorKind::User(Box::new(UserError {
                error,
                // Costs a cached flag check unless RUST_BACKTRACE / RUST_LIB_BACKTRACE asks for backtraces.
                backtrace: Backtrace::capture(),
                traceback: None,
            })),
        }
    }

    pub(crate) fn into_kind(self) -> TaskErrorKind {
        self.kind
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for TaskError {
    fn from(error: E) -> Self {
        let boxed: Box<dyn std::error::Error + Send + Sync> = error.into();
        match boxed.downcast::<RequestError>() {
            Ok(request) => TaskError {
                kind: TaskErrorKind::Request(request),
            },
            Err(other) => Self::user(other),
        }
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TaskErrorKind::Flow(flow) => write!(f, "TaskError::Flow({flow:?})"),
            TaskErrorKind::Request(error) => write!(f, "TaskError::Request({error})"),
            TaskErrorKind::User(error) => write!(f, "TaskError::User({})", error.chain()),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TaskErrorKind::Flow(flow) => write!(f, "{flow:?}"),
            TaskErrorKind::Request(error) => error.fmt(f),
            TaskErrorKind::User(error) => f.write_str(&error.chain()),
        }
    }
}

/// Stop the user running this task: `return stop_user();`
pub fn stop_user() -> TaskResult {
    Err(TaskError::flow(Flow::StopUser))
}

/// Stop the whole test: `return stop_test();`
pub fn stop_test() -> TaskResult {
    Err(TaskError::flow(Flow::StopTest))
}

/// Leave the current task set for its parent (Locust's `self.interrupt(reschedule)`).
pub fn interrupt(reschedule: bool) -> TaskResult {
    Err(TaskError::flow(Flow::Interrupt { reschedule }))
}

/// End this task and start the next one without waiting (Locust's `RescheduleTaskImmediately`).
pub fn reschedule() -> TaskResult {
    Err(TaskError::flow(Flow::Reschedule))
}

/// What every user of one type shares: its definition's runtime parts and the run's environment.
pub(crate) struct UserTypeContext {
    pub(crate) name: Arc<str>,
    pub(crate) env: Arc<Environment>,
    /// Where this type's samples go (shared with its HTTP client).
    pub(crate) recorder: Arc<crate::recording::Recorder>,
    /// Lateness of paced task starts (only for types with a pacing wait time).
    pub(crate) schedule: Option<Arc<schedule::ScheduleLag>>,
    /// Which user errors get a log line (at most one a second for each distinct one).
    pub(crate) error_log: errors::ErrorLog,
}

/// One simulated user: its state, its HTTP client and its place in the run.
///
/// Tasks receive `&mut User<S>`:
///
/// ```
/// use cicada::prelude::*;
///
/// #[derive(Default)]
/// struct Cart {
///     items: Vec<u32>,
/// }
///
/// async fn add_to_cart(user: &mut User<Cart>) -> TaskResult {
///     let id = user.rng().u32(1..=100);
///     user.post("/cart").json(&serde_json::json!({ "item": id })).send().await?;
///     user.state.items.push(id);
///     Ok(())
/// }
/// # let _ = UserType::<Cart>::new("Shopper").task(add_to_cart);
/// ```
pub struct User<S = ()> {
    /// Your own per-user data, created for each user by its type's state factory.
    pub state: S,
    client: HttpClient,
    rng: fastrand::Rng,
    id: u64,
    context: Arc<UserTypeContext>,
    /// The runner's stop requests, for waits that must end when the user is stopped (test data).
    control: Option<Arc<run::UserControl>>,
}

impl<S> User<S> {
    pub(crate) fn new(
        state: S,
        client: HttpClient,
        id: u64,
        context: Arc<UserTypeContext>,
    ) -> Self {
        User {
            state,
            client,
            rng: fastrand::Rng::with_seed(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66),
            id,
            context,
            control: None,
        }
    }

    pub(crate) fn with_control(mut self, control: Arc<run::UserControl>) -> Self {
        self.control = Some(control);
        self
    }

    /// The next item of a test data source registered with [`crate::Cicada::data_source`], decoded into `T`
    /// (JSON items with serde_json, CSV rows by column name). Items come in the source's order, each handed out
    /// once across the whole cluster; a take is a pop from this process's queue, refilled in batches ahead of
    /// need. When the source has run out it follows the source's [`crate::data::WhenExhausted`]: the error stops
    /// this user (`?` passes it on), or the call waits for pushed items (a stopped user stops waiting), or the
    /// source started over. An unknown source or an item that does not decode is a user error.
    ///
    /// ```
    /// use cicada::prelude::*;
    ///
    /// async fn view(user: &mut User) -> TaskResult {
    ///     let id: u64 = user.next_item("item_ids").await?;
    ///     user.get(&format!("/items/{id}")).name("/items/[id]").send().await?;
    ///     Ok(())
    /// }
    /// # let _ = Cicada::new().data_source("item_ids", DataSource::iter(1..=100u64)).user(UserType::<()>::new("V").task(view));
    /// ```
    pub async fn next_item<T: serde::de::DeserializeOwned>(
        &self,
        source: &str,
    ) -> Result<T, TaskError> {
        let control = match &self.control {
            Some(control) => control.clone(),
            None => run::UserControl::new(),
        };
        self.context.env.data.next_item(source, &control).await
    }

    /// This user's HTTP client (connections and cookies are its own).
    pub fn client(&mut self) -> &mut HttpClient {
        &mut self.client
    }

    /// A GET request to `path` (relative to the host, or an absolute URL).
    pub fn get(&mut self, path: &str) -> RequestBuilder<'_> {
        self.client.get(path)
    }

    /// A POST request.
    pub fn post(&mut self, path: &str) -> RequestBuilder<'_> {
        self.client.post(path)
    }

    /// A PUT request.
    pub fn put(&mut self, path: &str) -> RequestBuilder<'_> {
        self.client.put(path)
    }

    /// A PATCH request.
    pub fn patch(&mut self, path: &str) -> RequestBuilder<'_> {
        self.client.patch(path)
    }

    /// A DELETE request.
    pub fn delete(&mut self, path: &str) -> RequestBuilder<'_> {
        self.client.delete(path)
    }

    /// A HEAD request.
    pub fn head(&mut self, path: &str) -> RequestBuilder<'_> {
        self.client.head(path)
    }

    /// A request with any method.
    pub fn request(&mut self, method: http::Method, path: &str) -> RequestBuilder<'_> {
        self.client.request(method, path)
    }

    /// This user's own random number generator (seeded from its id, so runs are reproducible per user).
    pub fn rng(&mut self) -> &mut fastrand::Rng {
        &mut self.rng
    }

    /// A number unique to this user within the run, counting from 1 in spawn order.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The name of this user's type.
    pub fn user_type(&self) -> &str {
        &self.context.name
    }

    /// The run's environment: stats, runner, options.
    pub fn environment(&self) -> &Environment {
        &self.context.env
    }

    /// Record a request made by a custom (non-HTTP) client into the same stats, and fire the `request` event.
    ///
    /// ```
    /// use cicada::prelude::*;
    /// use std::time::{Duration, Instant};
    ///
    /// async fn query(user: &mut User) -> TaskResult {
    ///     let started = Instant::now();
    ///     let outcome: Result<usize, String> = Ok(42); // talk to your system here
    ///     match &outcome {
    ///         Ok(bytes) => user.record("db", "select", started.elapsed(), *bytes as u64, None),
    ///         Err(e) => user.record("db", "select", started.elapsed(), 0, Some(e)),
    ///     }
    ///     Ok(())
    /// }
    /// # let _ = UserType::<()>::new("Db").task(query);
    /// ```
    pub fn record(
        &self,
        request_type: &str,
        name: &str,
        response_time: Duration,
        content_length: u64,
        error: Option<&str>,
    ) {
        self.context.recorder.sample(
            request_type,
            name,
            response_time,
            content_length,
            error,
            Instant::now(),
        );
    }

    /// Time a custom client's call and record it: `Ok` is a success (with its content size from `size`), `Err` a
    /// failure with the error's text. The call's result is returned as is.
    ///
    /// ```
    /// use cicada::prelude::*;
    ///
    /// async fn ping(user: &mut User) -> TaskResult {
    ///     let reply = user
    ///         .measure("kv", "GET key", |r: &String| r.len() as u64, async {
    ///             Ok::<_, std::io::Error>(String::from("value"))
    ///         })
    ///         .await?;
    ///     assert_eq!(reply, "value");
    ///     Ok(())
    /// }
    /// # let _ = UserType::<()>::new("Kv").task(ping);
    /// ```
    pub async fn measure<T, E: fmt::Display>(
        &self,
        request_type: &str,
        name: &str,
        size: impl FnOnce(&T) -> u64,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let outcome = call.await;
        let finished = Instant::now();
        let elapsed = finished.duration_since(started);
        match &outcome {
            Ok(value) => self.context.recorder.sample(
                request_type,
                name,
                elapsed,
                size(value),
                None,
                finished,
            ),
            Err(error) => self.context.recorder.sample(
                request_type,
                name,
                elapsed,
                0,
                Some(&error.to_string()),
                finished,
            ),
        }
        outcome
    }
}

/// One kind of simulated visitor.
///
/// ```
/// use cicada::prelude::*;
///
/// async fn index(user: &mut User) -> TaskResult {
///     user.get("/").send().await?;
///     Ok(())
/// }
///
/// let browser = UserType::<()>::new("Browser")
///     .weight(3)
///     .wait_time(between(1.0, 2.0))
///     .task(index);
/// ```
pub struct UserType<S = ()> {
    pub(crate) name: String,
    pub(crate) weight: u32,
    pub(crate) fixed_count: Option<u64>,
    pub(crate) host: Option<String>,
    pub(crate) wait_time: WaitTime,
    pub(crate) root: TaskSet<S>,
    pub(crate) on_start: Option<task::SharedTaskFn<S>>,
    pub(crate) on_stop: Option<task::SharedTaskFn<S>>,
    pub(crate) new_state: Arc<dyn Fn() -> S + Send + Sync>,
    pub(crate) client: ClientOptions,
    /// Set for an arrival-rate type (the open model); `None` for a looping one.
    pub(crate) arrival: Option<arrival::ArrivalRate>,
    /// A wait time was set (it does not apply to an arrival-rate type: warned about).
    pub(crate) wait_time_set: bool,
}

impl<S: Default + Send + 'static> UserType<S> {
    /// A user type whose users start with `S::default()` as their state.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_state(name, S::default)
    }
}

impl<S: Send + 'static> UserType<S> {
    /// A user type whose users start with the state `new_state` returns.
    pub fn with_state(
        name: impl Into<String>,
        new_state: impl Fn() -> S + Send + Sync + 'static,
    ) -> Self {
        let name = name.into();
        UserType {
            root: TaskSet::random(name.clone()),
            name,
            weight: 1,
            fixed_count: None,
            host: None,
            wait_time: WaitTime::default(),
            on_start: None,
            on_stop: None,
            new_state: Arc::new(new_state),
            client: ClientOptions::default(),
            arrival: None,
            wait_time_set: false,
        }
    }

    /// Share of spawned users relative to other types (default 1).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Spawn exactly this many users of this type, before weighted types get any (Locust's `fixed_count`).
    pub fn fixed_count(mut self, count: u64) -> Self {
        self.fixed_count = Some(count);
        self
    }

    /// The host this type's requests go to, overriding `--host`.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Pause after each task.
    pub fn wait_time(mut self, wait_time: WaitTime) -> Self {
        self.wait_time = wait_time;
        self.wait_time_set = true;
        self
    }

    /// Add a task (an `async fn`), a [`Task`] with weight and tags, or a nested [`TaskSet`].
    pub fn task<M>(mut self, task: impl IntoEntry<S, M>) -> Self {
        self.root = self.root.task(task);
        self
    }

    /// Runs once when each user starts, before its first task (log in here).
    pub fn on_start<F: TaskFn<S>>(mut self, hook: F) -> Self {
        self.on_start = Some(Arc::new(hook));
        self
    }

    /// Runs once when each user stops.
    pub fn on_stop<F: TaskFn<S>>(mut self, hook: F) -> Self {
        self.on_stop = Some(Arc::new(hook));
        self
    }

    /// Tag every task of this type.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.root = self.root.tag(tag);
        self
    }

    /// HTTP client options: timeouts, HTTP/2, TLS, connection sharing, redirects, body cap.
    pub fn client_options(mut self, options: ClientOptions) -> Self {
        self.client = options;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_with_a_traceback_keeps_it_in_place_of_the_backtrace() {
        let error = TaskError::with_traceback("a.lua:3: boom", "stack traceback:\n\ta.lua:3");
        assert_eq!(error.to_string(), "a.lua:3: boom");
        match error.into_kind() {
            TaskErrorKind::User(user) => {
                assert_eq!(user.chain(), "a.lua:3: boom");
                assert_eq!(
                    user.traceback.as_deref(),
                    Some("stack traceback:\n\ta.lua:3")
                );
            }
            _ => panic!("not a user error"),
        }
    }
}
