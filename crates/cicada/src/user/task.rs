//! Tasks and task sets: what a user does, with weights, tags and nesting.
//!
//! A task is an `async fn(&mut User<S>) -> TaskResult`. A [`TaskSet`] groups tasks (and other task sets) and picks
//! among them at random by weight or in sequence; a nested set runs until one of its tasks interrupts back to the
//! parent, exactly like Locust's `TaskSet` and `SequentialTaskSet`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{TaskResult, User, WaitTime};

/// A boxed task future borrowing the user it runs on.
pub type TaskFuture<'a> = Pin<Box<dyn Future<Output = TaskResult> + Send + 'a>>;

/// Helper trait that names the future an async function returns for a given borrow of the user.
///
/// It is implemented for every `async fn(&mut User<S>) -> TaskResult`; test authors never name it.
pub trait AsyncUserFn<'a, S: 'a>: Fn(&'a mut User<S>) -> Self::Fut {
    /// The future returned for a borrow of lifetime `'a`.
    type Fut: Future<Output = TaskResult> + Send + 'a;
}

impl<'a, S: 'a, F, Fut> AsyncUserFn<'a, S> for F
where
    F: Fn(&'a mut User<S>) -> Fut,
    Fut: Future<Output = TaskResult> + Send + 'a,
{
    type Fut = Fut;
}

/// Something that can run as a task, `on_start` or `on_stop` of a user of state `S`.
///
/// Implemented for every `async fn(&mut User<S>) -> TaskResult` (and closures of that shape).
pub trait TaskFn<S>: Send + Sync + 'static {
    /// Start the task on `user`.
    fn call<'a>(&'a self, user: &'a mut User<S>) -> TaskFuture<'a>;
}

impl<S, F> TaskFn<S> for F
where
    S: 'static,
    F: for<'a> AsyncUserFn<'a, S> + Send + Sync + 'static,
{
    fn call<'a>(&'a self, user: &'a mut User<S>) -> TaskFuture<'a> {
        Box::pin(self(user))
    }
}

/// A shared, type-erased task function.
pub(crate) type SharedTaskFn<S> = Arc<dyn TaskFn<S>>;

/// The short name of a function item: `my_test::view_item` becomes `view_item`.
pub(crate) fn short_fn_name<F>() -> String {
    let full = std::any::type_name::<F>();
    let trimmed = full.split('<').next().unwrap_or(full);
    trimmed.rsplit("::").next().unwrap_or(trimmed).to_string()
}

/// One task with its weight, tags and display name.
///
/// ```
/// use cicada::prelude::*;
///
/// async fn view_item(user: &mut User) -> TaskResult {
///     user.get("/items/7").name("/items/[id]").send().await?;
///     Ok(())
/// }
///
/// let task = Task::new(view_item).weight(3).tag("browse");
/// # let _ = UserType::<()>::new("Shopper").task(task);
/// ```
pub struct Task<S> {
    pub(crate) name: String,
    pub(crate) weight: u32,
    pub(crate) tags: Vec<String>,
    pub(crate) run: SharedTaskFn<S>,
}

impl<S: 'static> Task<S> {
    /// A task of weight 1 named after the function.
    pub fn new<F: TaskFn<S>>(task: F) -> Self {
        Task {
            name: short_fn_name::<F>(),
            weight: 1,
            tags: Vec::new(),
            run: Arc::new(task),
        }
    }

    /// How often this task is picked relative to its siblings (Locust's `@task(weight)`). A weight of 0 disables it.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Add a tag, for `--tags` / `--exclude-tags` filtering.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// The name shown by `--show-task-ratio`; defaults to the function's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// How a [`TaskSet`] picks its next task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// At random, by weight (Locust's `TaskSet`).
    Random,
    /// In the order they were added, looping (Locust's `SequentialTaskSet`); weights repeat a task.
    Sequential,
}

/// A group of tasks that runs until one of them interrupts back to the parent.
///
/// ```
/// use cicada::prelude::*;
///
/// async fn browse(user: &mut User) -> TaskResult {
///     user.get("/items").send().await?;
///     Ok(())
/// }
/// async fn leave(_user: &mut User) -> TaskResult {
///     interrupt(true)
/// }
///
/// let checkout = TaskSet::sequential("checkout").task(browse).task(leave);
/// # let _ = UserType::<()>::new("Shopper").task(checkout);
/// ```
pub struct TaskSet<S> {
    pub(crate) name: String,
    pub(crate) order: Order,
    pub(crate) weight: u32,
    pub(crate) tags: Vec<String>,
    pub(crate) entries: Vec<Entry<S>>,
    pub(crate) wait_time: Option<WaitTime>,
    pub(crate) on_start: Option<SharedTaskFn<S>>,
    pub(crate) on_stop: Option<SharedTaskFn<S>>,
}

/// A task or a nested task set, as stored in a [`TaskSet`].
#[doc(hidden)]
pub enum Entry<S> {
    /// A task.
    Task(Task<S>),
    /// A nested set.
    Set(TaskSet<S>),
}

impl<S> Entry<S> {
    pub(crate) fn weight(&self) -> u32 {
        match self {
            Entry::Task(task) => task.weight,
            Entry::Set(set) => set.weight,
        }
    }

    pub(crate) fn name(&self) -> &str {
        match self {
            Entry::Task(task) => &task.name,
            Entry::Set(set) => &set.name,
        }
    }

    fn tags(&self) -> &[String] {
        match self {
            Entry::Task(task) => &task.tags,
            Entry::Set(set) => &set.tags,
        }
    }
}

impl<S: 'static> TaskSet<S> {
    /// A task set that picks tasks at random by weight.
    pub fn random(name: impl Into<String>) -> Self {
        Self::with_order(name, Order::Random)
    }

    /// A task set that runs its tasks in order, over and over.
    pub fn sequential(name: impl Into<String>) -> Self {
        Self::with_order(name, Order::Sequential)
    }

    fn with_order(name: impl Into<String>, order: Order) -> Self {
        TaskSet {
            name: name.into(),
            order,
            weight: 1,
            tags: Vec::new(),
            entries: Vec::new(),
            wait_time: None,
            on_start: None,
            on_stop: None,
        }
    }

    /// Add a task, a [`Task`] with options, or a nested [`TaskSet`].
    pub fn task<M>(mut self, task: impl IntoEntry<S, M>) -> Self {
        self.entries.push(task.into_entry());
        self
    }

    /// Weight of this set among its parent's tasks.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Tag the whole set: every task inside carries the tag for `--tags` filtering.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Wait time between this set's tasks; defaults to the user type's.
    pub fn wait_time(mut self, wait_time: WaitTime) -> Self {
        self.wait_time = Some(wait_time);
        self
    }

    /// Runs each time the set is entered.
    pub fn on_start<F: TaskFn<S>>(mut self, hook: F) -> Self {
        self.on_start = Some(Arc::new(hook));
        self
    }

    /// Runs each time the set is left (interrupt or user stop).
    pub fn on_stop<F: TaskFn<S>>(mut self, hook: F) -> Self {
        self.on_stop = Some(Arc::new(hook));
        self
    }
}

impl<S> TaskSet<S> {
    /// Keep only tasks selected by the tag filter. `inherited` are the tags of enclosing sets. Returns false when
    /// nothing runnable is left.
    pub(crate) fn filter_tags(&mut self, filter: &TagFilter, inherited: &[String]) -> bool {
        let mut tags: Vec<String> = inherited.to_vec();
        tags.extend(self.tags.iter().cloned());
        self.entries.retain_mut(|entry| {
            let mut entry_tags = tags.clone();
            entry_tags.extend(entry.tags().iter().cloned());
            match entry {
                Entry::Task(_) => filter.admits(&entry_tags),
                Entry::Set(set) => {
                    if filter.excludes(&entry_tags) {
                        return false;
                    }
                    set.filter_tags(filter, &tags)
                }
            }
        });
        self.entries.iter().any(|entry| entry.weight() > 0)
    }

    /// Rows of `--show-task-ratio`: (depth, name, share within parent, share of the user's time).
    pub(crate) fn ratio_rows(&self, depth: usize, parent_share: f64, rows: &mut Vec<RatioRow>) {
        let total: u64 = self.entries.iter().map(|e| u64::from(e.weight())).sum();
        if total == 0 {
            return;
        }
        for entry in &self.entries {
            let share = f64::from(entry.weight()) / total as f64;
            rows.push(RatioRow {
                depth,
                name: entry.name().to_string(),
                share,
                total_share: share * parent_share,
            });
            if let Entry::Set(set) = entry {
                set.ratio_rows(depth + 1, share * parent_share, rows);
            }
        }
    }
}

/// One row of the task ratio table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RatioRow {
    /// Nesting depth (0 for the user type's own tasks).
    pub depth: usize,
    /// Task or task set name.
    pub name: String,
    /// Share among its siblings.
    pub share: f64,
    /// Share of all the tasks the user runs.
    pub total_share: f64,
}

/// `--tags` / `--exclude-tags`.
#[derive(Debug, Clone, Default)]
pub struct TagFilter {
    /// Run only tasks carrying one of these tags (empty: every task).
    pub include: Vec<String>,
    /// Never run tasks carrying one of these tags.
    pub exclude: Vec<String>,
}

impl TagFilter {
    fn excludes(&self, tags: &[String]) -> bool {
        tags.iter().any(|tag| self.exclude.contains(tag))
    }

    fn admits(&self, tags: &[String]) -> bool {
        if self.excludes(tags) {
            return false;
        }
        self.include.is_empty() || tags.iter().any(|tag| self.include.contains(tag))
    }

    /// True when the filter keeps everything.
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

/// Marker types that let [`TaskSet::task`] and `UserType::task` take functions, tasks and sets alike.
pub mod markers {
    /// A bare `async fn`.
    pub struct IsFn;
    /// A configured [`super::Task`].
    pub struct IsTask;
    /// A nested [`super::TaskSet`].
    pub struct IsSet;
}

/// Anything that can be added as a task: an `async fn`, a [`Task`] or a [`TaskSet`].
pub trait IntoEntry<S, M> {
    /// Convert into a task-set entry.
    #[doc(hidden)]
    fn into_entry(self) -> Entry<S>;
}

impl<S: 'static, F: TaskFn<S>> IntoEntry<S, markers::IsFn> for F {
    fn into_entry(self) -> Entry<S> {
        Entry::Task(Task::new(self))
    }
}

impl<S> IntoEntry<S, markers::IsTask> for Task<S> {
    fn into_entry(self) -> Entry<S> {
        Entry::Task(self)
    }
}

impl<S> IntoEntry<S, markers::IsSet> for TaskSet<S> {
    fn into_entry(self) -> Entry<S> {
        Entry::Set(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn alpha(_user: &mut User) -> TaskResult {
        Ok(())
    }

    async fn beta(_user: &mut User) -> TaskResult {
        Ok(())
    }

    #[test]
    fn fn_names_are_short() {
        let task = Task::<()>::new(alpha);
        assert_eq!(task.name, "alpha");
    }

    #[test]
    fn tag_filter_keeps_included_and_drops_excluded() {
        let mut set = TaskSet::random("root")
            .task(Task::new(alpha).tag("a"))
            .task(Task::new(beta).tag("b"))
            .task(TaskSet::random("nested").tag("a").task(beta));
        let filter = TagFilter {
            include: vec!["a".into()],
            exclude: vec![],
        };
        assert!(set.filter_tags(&filter, &[]));
        let names: Vec<_> = set.entries.iter().map(|e| e.name().to_string()).collect();
        assert_eq!(names, ["alpha", "nested"]);

        let mut set = TaskSet::random("root")
            .task(Task::new(alpha).tag("a"))
            .task(beta);
        let filter = TagFilter {
            include: vec![],
            exclude: vec!["a".into()],
        };
        assert!(set.filter_tags(&filter, &[]));
        assert_eq!(set.entries.len(), 1);
        assert_eq!(set.entries[0].name(), "beta");
    }

    #[test]
    fn ratios_multiply_through_nesting() {
        let set = TaskSet::random("root")
            .task(Task::new(alpha).weight(3))
            .task(TaskSet::random("nested").task(alpha).task(beta));
        let mut rows = Vec::new();
        set.ratio_rows(0, 1.0, &mut rows);
        assert_eq!(rows.len(), 4);
        assert!((rows[0].share - 0.75).abs() < 1e-9);
        assert!((rows[2].total_share - 0.125).abs() < 1e-9);
    }
}
