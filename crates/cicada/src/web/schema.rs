//! The web API's JSON shapes, defined once: every handler answers with one of these types.
//!
//! Where Locust has the route (`/stats/requests`, `/exceptions`, `/tasks`, the answers of `/swarm` and `/stop`), the
//! keys and value types are Locust's (2.x, with the names Locust 2.17 and older used kept beside the newer ones), so
//! scripts and dashboards written against Locust's UI read cicada's. What cicada adds lives in a `cicada` object with
//! a `version` ([`API_VERSION`]), so that neither side's additions can collide. Each route's table is in
//! docs/web-ui.md. The types are `pub(crate)` so that reports can reuse them.

use std::collections::BTreeMap;

use cicada_stats::{EntryStats, FailureStats, HistoryPoint, StatsSnapshot, UserErrorStats};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::guard::GuardAction;
use crate::logging::LogLine;

/// Version of cicada's own additions (the `cicada` objects); raised when one of them changes incompatibly.
pub(crate) const API_VERSION: u32 = 1;

/// `0.5` and `0.95`: the current percentiles Locust charts (`PERCENTILES_TO_CHART`).
const CHART_QUANTILES: (f64, f64) = (0.5, 0.95);

/// A response time in whole milliseconds, as Locust reports min, max, median and percentiles (half rounds up).
fn whole_ms(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        ms.round() as u64
    } else {
        0
    }
}

/// Locust's `safe_name`: the name with `&`, `<` and `>` escaped for HTML (`html.escape(name, quote=False)`).
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// One row of `stats` in `/stats/requests`: Locust's `StatsEntry.to_dict()` keys (and the 2.17 ones), then cicada's
/// precise response times.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LocustEntry {
    /// Request type; `null` for the Aggregated row, as in Locust.
    pub(crate) method: Option<String>,
    pub(crate) name: String,
    /// The name escaped for HTML (Locust 2.17 and older).
    pub(crate) safe_name: String,
    pub(crate) num_requests: u64,
    pub(crate) num_failures: u64,
    /// Milliseconds.
    pub(crate) avg_response_time: f64,
    /// Whole milliseconds; 0 without requests.
    pub(crate) min_response_time: u64,
    /// Whole milliseconds.
    pub(crate) max_response_time: u64,
    pub(crate) current_rps: f64,
    pub(crate) current_fail_per_sec: f64,
    /// Whole milliseconds.
    pub(crate) median_response_time: u64,
    /// 90th percentile, whole milliseconds (Locust 2.17 and older).
    pub(crate) ninetieth_response_time: u64,
    /// 99th percentile, whole milliseconds (Locust 2.17 and older).
    pub(crate) ninety_ninth_response_time: u64,
    /// Bytes.
    pub(crate) avg_content_length: f64,
    /// Requests over the time since the test started (or the stats were reset).
    pub(crate) total_rps: f64,
    pub(crate) total_fail_per_sec: f64,
    #[serde(rename = "response_time_percentile_0.95")]
    pub(crate) response_time_percentile_95: u64,
    #[serde(rename = "response_time_percentile_0.99")]
    pub(crate) response_time_percentile_99: u64,
    /// cicada: the fastest response time, milliseconds with microsecond precision.
    pub(crate) min_ms: f64,
    /// cicada: the slowest response time, precise.
    pub(crate) max_ms: f64,
    /// cicada: the median, precise.
    pub(crate) median_ms: f64,
    /// cicada: `[quantile, ms]` for every quantile of the stats table (0.5 ... 1.0), precise; empty without requests.
    pub(crate) percentiles: Vec<(f64, f64)>,
}

impl LocustEntry {
    /// The row of `entry`; `aggregated` for the total (its method becomes `null`).
    pub(crate) fn new(entry: &EntryStats, aggregated: bool) -> LocustEntry {
        let percentile = |q: f64| whole_ms(entry.percentile(q).unwrap_or(0.0));
        LocustEntry {
            method: (!aggregated).then(|| entry.method.clone()),
            name: entry.name.clone(),
            safe_name: html_escape(&entry.name),
            num_requests: entry.num_requests,
            num_failures: entry.num_failures,
            avg_response_time: entry.avg_ms,
            min_response_time: whole_ms(entry.min_ms),
            max_response_time: whole_ms(entry.max_ms),
            current_rps: entry.current_rps,
            current_fail_per_sec: entry.current_fail_per_s,
            median_response_time: whole_ms(entry.median_ms),
            ninetieth_response_time: percentile(0.9),
            ninety_ninth_response_time: percentile(0.99),
            avg_content_length: entry.avg_content_length,
            total_rps: entry.total_rps,
            total_fail_per_sec: entry.total_fail_per_s,
            response_time_percentile_95: percentile(0.95),
            response_time_percentile_99: percentile(0.99),
            min_ms: entry.min_ms,
            max_ms: entry.max_ms,
            median_ms: entry.median_ms,
            percentiles: entry.percentiles.clone(),
        }
    }
}

/// One failure group, as Locust's `StatsError.serialize()` (without `first_seen` / `last_seen`, which cicada does not
/// keep).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LocustError {
    pub(crate) method: String,
    pub(crate) name: String,
    pub(crate) error: String,
    pub(crate) occurrences: u64,
}

impl From<&FailureStats> for LocustError {
    fn from(failure: &FailureStats) -> Self {
        LocustError {
            method: failure.method.clone(),
            name: failure.name.clone(),
            error: failure.error.clone(),
            occurrences: failure.occurrences,
        }
    }
}

/// One row of `/exceptions`: Locust's keys, and the user type of the first occurrence.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LocustException {
    pub(crate) count: u64,
    pub(crate) msg: String,
    pub(crate) traceback: String,
    /// Where it happened, comma-separated: always `local` (cicada runs in one process).
    pub(crate) nodes: String,
    /// cicada: the user type of the first occurrence.
    pub(crate) user_type: String,
}

impl From<&UserErrorStats> for LocustException {
    fn from(error: &UserErrorStats) -> Self {
        LocustException {
            count: error.count,
            msg: error.message.clone(),
            traceback: error.traceback.clone(),
            nodes: "local".to_string(),
            user_type: error.user_type.clone(),
        }
    }
}

/// `current_response_time_percentiles` of `/stats/requests`: the aggregated current median and 95th percentile, whole
/// milliseconds, `null` without requests in the current window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CurrentPercentiles {
    #[serde(rename = "response_time_percentile_0.5")]
    pub(crate) p50: Option<u64>,
    #[serde(rename = "response_time_percentile_0.95")]
    pub(crate) p95: Option<u64>,
}

/// `GET /stats/requests` (and each `/events` message).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RequestsReport {
    /// `ready`, `spawning`, `running`, `stopping`, `stopped` or `quitting`.
    pub(crate) state: &'static str,
    /// Users running.
    pub(crate) user_count: u64,
    pub(crate) total_rps: f64,
    pub(crate) total_fail_per_sec: f64,
    pub(crate) fail_ratio: f64,
    pub(crate) current_rps: f64,
    pub(crate) current_fail_per_sec: f64,
    pub(crate) current_response_time_percentiles: CurrentPercentiles,
    /// The current median (Locust 2.17 and older).
    pub(crate) current_response_time_percentile_1: Option<u64>,
    /// The current 95th percentile (Locust 2.17 and older).
    pub(crate) current_response_time_percentile_2: Option<u64>,
    /// At most [`RequestsReport::MAX_ROWS`] rows sorted by name, then the Aggregated row, always last.
    pub(crate) stats: Vec<LocustEntry>,
    /// At most [`RequestsReport::MAX_ERRORS`] failure groups, most frequent first.
    pub(crate) errors: Vec<LocustError>,
    /// A master's workers (Locust's key, only on a master), sorted by id, at most [`RequestsReport::MAX_WORKERS`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) workers: Option<Vec<LocustWorker>>,
    /// A master's workers that are heard from (Locust's key: not missing), all of them, listed or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) worker_count: Option<usize>,
    pub(crate) cicada: LiveExtras,
}

/// One worker of a master, with Locust's keys and cicada's beside them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LocustWorker {
    pub(crate) id: String,
    /// `ready`, `spawning`, `running`, `stopping`, `stopped`, or `missing` while it is not heard from.
    pub(crate) state: &'static str,
    pub(crate) user_count: u64,
    /// Percent of one core.
    pub(crate) cpu_usage: f64,
    /// Resident memory, bytes.
    pub(crate) memory_usage: u64,
    /// The host it runs on, as it says.
    pub(crate) host: String,
    /// Its process id on that host.
    pub(crate) pid: u32,
    pub(crate) cores: u32,
    /// Seconds since anything was heard from it (its last heartbeat, about every second); for a missing worker,
    /// how long it has been silent.
    pub(crate) last_heard_seconds: f64,
    /// Its resource guard's state (phase, limits over now, headroom), as its heartbeats carry it; `null` when they
    /// carry none (its guard is off).
    pub(crate) guard: serde_json::Value,
    /// The guard's phase, read from `guard`: `normal`, `holding`, `stopped` or `emergency`; `null` without one.
    pub(crate) guard_phase: Option<String>,
    /// The limits over now, read from `guard`: `cpu`, `memory`, `lag`.
    pub(crate) guard_over: Vec<String>,
    /// Sessions after its first.
    pub(crate) reconnects: u32,
}

/// Limits a heartbeat's guard state names at most (there are three kinds; more means a malformed state).
const MAX_GUARD_OVER: usize = 8;

impl LocustWorker {
    pub(crate) fn from_info(info: &cicada_cluster::WorkerInfo) -> LocustWorker {
        let missing = info.presence == cicada_cluster::Presence::Missing;
        let guard: serde_json::Value =
            serde_json::from_slice(&info.status.guard_state).unwrap_or(serde_json::Value::Null);
        let guard_phase = guard["phase"].as_str().map(str::to_string);
        let guard_over = guard["over"]
            .as_array()
            .map(|over| {
                over.iter()
                    .filter_map(|breach| breach["limit"].as_str())
                    .take(MAX_GUARD_OVER)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        LocustWorker {
            id: info.id.as_str().to_string(),
            state: if missing {
                "missing"
            } else {
                info.status.state.as_str()
            },
            user_count: info.status.user_count,
            cpu_usage: f64::from(info.status.cpu_percent),
            memory_usage: info.status.memory_bytes,
            host: info.hostname.clone(),
            pid: info.pid,
            cores: info.cores,
            last_heard_seconds: info.silent_for.as_secs_f64(),
            guard,
            guard_phase,
            guard_over,
            reconnects: info.reconnects,
        }
    }
}

impl RequestsReport {
    /// Workers listed at most.
    pub(crate) const MAX_WORKERS: usize = 1_000;

    /// Stats rows sent at most (the rest are counted in `cicada.rows_omitted`; the CSV has them all).
    pub(crate) const MAX_ROWS: usize = 1_000;
    /// Failure groups and exceptions sent at most.
    pub(crate) const MAX_ERRORS: usize = 100;

    /// Locust's part from a snapshot; cicada's part comes from the caller.
    pub(crate) fn new(
        state: &'static str,
        user_count: u64,
        snapshot: &StatsSnapshot,
        cicada: LiveExtras,
        workers: Option<(Vec<LocustWorker>, usize)>,
    ) -> RequestsReport {
        let total = &snapshot.total;
        let current = |q: f64| total.current_percentile(q).map(whole_ms);
        let rows = snapshot.entries.len().min(Self::MAX_ROWS);
        let mut stats: Vec<LocustEntry> = snapshot.entries[..rows]
            .iter()
            .map(|entry| LocustEntry::new(entry, false))
            .collect();
        stats.push(LocustEntry::new(total, true));
        RequestsReport {
            state,
            user_count,
            total_rps: total.total_rps,
            total_fail_per_sec: total.total_fail_per_s,
            fail_ratio: total.fail_ratio(),
            current_rps: total.current_rps,
            current_fail_per_sec: total.current_fail_per_s,
            current_response_time_percentiles: CurrentPercentiles {
                p50: current(CHART_QUANTILES.0),
                p95: current(CHART_QUANTILES.1),
            },
            current_response_time_percentile_1: current(CHART_QUANTILES.0),
            current_response_time_percentile_2: current(CHART_QUANTILES.1),
            stats,
            errors: snapshot
                .failures
                .iter()
                .take(Self::MAX_ERRORS)
                .map(LocustError::from)
                .collect(),
            worker_count: workers.as_ref().map(|(_, connected)| *connected),
            workers: workers.map(|(listed, _)| listed),
            cicada,
        }
    }
}

/// The `cicada` object of `/stats/requests`: what Locust's answer does not carry.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LiveExtras {
    /// [`API_VERSION`].
    pub(crate) version: u32,
    /// Users the runner is heading for.
    pub(crate) target_user_count: u64,
    /// Users started (or stopped) per second.
    pub(crate) spawn_rate: f64,
    pub(crate) host: String,
    /// When the statistics started: the start of the test, or the last reset (Unix milliseconds).
    pub(crate) stats_started_unix_ms: u64,
    /// Seconds from that start to the latest request (the divisor of `total_rps`); 0 before the first request.
    pub(crate) stats_seconds: f64,
    /// Running users per user type.
    pub(crate) user_counts: BTreeMap<String, u64>,
    /// The resource guard's cap on users, when it holds some back.
    pub(crate) guard_cap: Option<u64>,
    /// Arrival-rate types' iterations so far (absent without such types).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) arrival: Vec<crate::user::ArrivalReport>,
    /// Stats rows not sent (over [`RequestsReport::MAX_ROWS`]).
    pub(crate) rows_omitted: usize,
    /// Failure groups not sent (over [`RequestsReport::MAX_ERRORS`]).
    pub(crate) errors_omitted: usize,
    /// User errors (Locust's exceptions), most frequent first, at most [`RequestsReport::MAX_ERRORS`].
    pub(crate) exceptions: Vec<LocustException>,
    /// User-error groups not sent.
    pub(crate) exceptions_omitted: usize,
    /// The load generator's own state; `null` when the resource guard is off or has not sampled yet.
    pub(crate) generator: Option<GeneratorView>,
    /// A master's workers not listed in `workers` (over [`RequestsReport::MAX_WORKERS`]); 0 elsewhere.
    pub(crate) workers_omitted: usize,
    /// A master's view of its workers' capacity (users held back, workers over their limits, the last 20 actions);
    /// `null` elsewhere.
    pub(crate) cluster: Option<crate::cluster::health::ClusterReport>,
}

/// The load generator as the resource guard sees it now.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GeneratorView {
    /// Percent of the CPU available to the process.
    pub(crate) cpu_percent: f64,
    pub(crate) rss_bytes: u64,
    /// Scheduler lag, milliseconds.
    pub(crate) lag_ms: f64,
    pub(crate) cores_available: f64,
    pub(crate) memory_limit_bytes: u64,
    pub(crate) max_cpu_percent: f64,
    pub(crate) max_memory_bytes: u64,
    pub(crate) max_lag_ms: f64,
    /// `protect`, `warn` or `off`.
    pub(crate) mode: String,
    /// CPU, memory or lag over its limit now.
    pub(crate) saturated: bool,
    /// The guard's typed state: phase, the limits over now, headroom, users held back.
    pub(crate) status: crate::guard::GuardStatus,
    /// Times the container's limits changed during the run (the limits above are the latest).
    pub(crate) limit_changes: u64,
    /// Share of the run so far that was saturated, 0 to 1.
    pub(crate) saturated_share: f64,
    pub(crate) users_shed: u64,
    pub(crate) spawn_paused_seconds: f64,
    /// Why the guard stopped the test, if it did.
    pub(crate) stopped_test: Option<String>,
    /// The newest actions, oldest first.
    pub(crate) actions: Vec<GuardAction>,
}

/// `GET /exceptions`: Locust's shape.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ExceptionsReport {
    /// Every user-error group (at most `--max-errors` plus one overflow group), most frequent first.
    pub(crate) exceptions: Vec<LocustException>,
}

/// A JSON object whose keys keep the order given (Locust's `/tasks` lists classes and tasks in definition order).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct OrderedMap<T>(pub(crate) Vec<(String, T)>);

impl<T: Serialize> Serialize for OrderedMap<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// One node of Locust's `/tasks` tree: a user type, task or task set, and its share.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TaskRatio {
    pub(crate) ratio: f64,
    /// The tasks of a user type or task set; absent for a plain task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tasks: Option<OrderedMap<TaskRatio>>,
}

/// A user type's share and its tasks' shares, as cicada computes them from weights (the `cicada` part of `/tasks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct UserTypeShare {
    pub(crate) name: String,
    /// Share of the weighted users (0 for a fixed-count type).
    pub(crate) share: f64,
    pub(crate) fixed_count: Option<u64>,
    /// Depth-first, each task set followed by its tasks.
    pub(crate) tasks: Vec<TaskShare>,
}

/// One task or task set of a user type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskShare {
    /// 0 for the user type's own tasks.
    pub(crate) depth: usize,
    pub(crate) name: String,
    /// Share among its siblings.
    pub(crate) share: f64,
    /// Share of all the tasks the user runs.
    pub(crate) total_share: f64,
}

/// The user types as the test defines them (what `/tasks` is computed from).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskShares {
    pub(crate) user_types: Vec<UserTypeShare>,
}

/// `GET /tasks`: Locust's `per_class` (each task's share within its set) and `total` (each task's share of all
/// running users' tasks), weighted by the users running now as in Locust (all 0 before users run), and the
/// weight-based shares in `cicada`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TasksReport {
    pub(crate) per_class: OrderedMap<TaskRatio>,
    pub(crate) total: OrderedMap<TaskRatio>,
    pub(crate) cicada: TasksExtras,
}

/// The `cicada` object of `/tasks`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TasksExtras {
    pub(crate) version: u32,
    pub(crate) user_types: Vec<UserTypeShare>,
}

impl TasksReport {
    /// Locust's trees from the test's user types and the users running per type.
    pub(crate) fn new(shares: TaskShares, running: &[(String, u64)]) -> TasksReport {
        let all: u64 = running.iter().map(|(_, count)| count).sum();
        let running_share = |name: &str| {
            let count = running
                .iter()
                .find(|(type_name, _)| type_name == name)
                .map_or(0, |(_, count)| *count);
            count as f64 / all.max(1) as f64
        };
        let mut per_class = Vec::with_capacity(shares.user_types.len());
        let mut total = Vec::with_capacity(shares.user_types.len());
        for user_type in &shares.user_types {
            let ratio = running_share(&user_type.name);
            per_class.push((
                user_type.name.clone(),
                TaskRatio {
                    ratio,
                    tasks: Some(task_tree(&user_type.tasks, |task| task.share)),
                },
            ));
            total.push((
                user_type.name.clone(),
                TaskRatio {
                    ratio,
                    tasks: Some(task_tree(&user_type.tasks, |task| task.total_share * ratio)),
                },
            ));
        }
        TasksReport {
            per_class: OrderedMap(per_class),
            total: OrderedMap(total),
            cicada: TasksExtras {
                version: API_VERSION,
                user_types: shares.user_types,
            },
        }
    }
}

/// Nests depth-first rows into Locust's tree: a row followed by deeper rows is a task set holding them. Siblings with
/// the same name (one function registered twice) are one key with their ratios added, as Locust counts them.
fn task_tree(
    rows: &[TaskShare],
    ratio: impl Fn(&TaskShare) -> f64 + Copy,
) -> OrderedMap<TaskRatio> {
    let mut level: OrderedMap<TaskRatio> = OrderedMap(Vec::new());
    let mut index = 0;
    let depth = rows.first().map_or(0, |row| row.depth);
    while index < rows.len() && rows[index].depth >= depth {
        let row = &rows[index];
        let children_end = rows[index + 1..]
            .iter()
            .position(|child| child.depth <= row.depth)
            .map_or(rows.len(), |offset| index + 1 + offset);
        let children = &rows[index + 1..children_end];
        let node = TaskRatio {
            ratio: ratio(row),
            tasks: (!children.is_empty()).then(|| task_tree(children, ratio)),
        };
        match level.0.iter_mut().find(|(name, _)| *name == row.name) {
            Some((_, existing)) => existing.ratio += node.ratio,
            None => level.0.push((row.name.clone(), node)),
        }
        index = children_end;
    }
    level
}

/// `GET /config`: the start form's defaults and the bounds `/swarm` enforces.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConfigReport {
    /// cicada's version.
    pub(crate) version: &'static str,
    /// [`API_VERSION`].
    pub(crate) api_version: u32,
    pub(crate) user_types: Vec<String>,
    pub(crate) host: String,
    pub(crate) users: u64,
    pub(crate) spawn_rate: f64,
    pub(crate) run_time: Option<String>,
    /// The command line's flags that differ from the defaults.
    pub(crate) flags: String,
    /// Most users `/swarm` accepts.
    pub(crate) max_users: u64,
    /// Highest spawn rate `/swarm` accepts, users per second.
    pub(crate) max_spawn_rate: f64,
}

/// `GET /stats/history`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HistoryReport {
    /// Oldest first, downsampled to at most the `max_points` asked for (2,000 at most).
    pub(crate) points: Vec<HistoryPoint>,
}

/// `GET /logs`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LogsReport {
    /// The last log lines (at most 500, this process's and, on a master, its workers' together), oldest first;
    /// a worker's line carries its id in `worker`.
    pub(crate) logs: Vec<LogLine>,
}

/// The answer of `POST /swarm`, `/stop` and `/stats/reset`, and of every refused request: Locust's `success` and
/// `message`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Answer {
    pub(crate) success: bool,
    pub(crate) message: String,
    /// The host the test runs against (`/swarm` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<String>,
}

impl Answer {
    pub(crate) fn ok(message: impl Into<String>) -> Answer {
        Answer {
            success: true,
            message: message.into(),
            host: None,
        }
    }

    pub(crate) fn refused(message: impl Into<String>) -> Answer {
        Answer {
            success: false,
            message: message.into(),
            host: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(depth: usize, name: &str, share: f64, total_share: f64) -> TaskShare {
        TaskShare {
            depth,
            name: name.to_string(),
            share,
            total_share,
        }
    }

    #[test]
    fn names_are_escaped_like_pythons_html_escape_without_quotes() {
        assert_eq!(
            html_escape("/a?b=<i>&c=\"d\""),
            "/a?b=&lt;i&gt;&amp;c=\"d\""
        );
    }

    #[test]
    fn whole_milliseconds_round_half_up_and_never_go_negative() {
        assert_eq!(whole_ms(0.49), 0);
        assert_eq!(whole_ms(0.5), 1);
        assert_eq!(whole_ms(12.7), 13);
        assert_eq!(whole_ms(f64::NAN), 0);
        assert_eq!(whole_ms(-3.0), 0);
    }

    #[test]
    fn an_entry_has_locusts_keys_and_the_aggregated_method_is_null() {
        let entry = EntryStats {
            method: "GET".to_string(),
            name: "/<x>".to_string(),
            num_requests: 10,
            num_failures: 1,
            min_ms: 0.4,
            max_ms: 99.6,
            avg_ms: 12.25,
            median_ms: 10.5,
            percentiles: vec![(0.5, 10.5), (0.9, 40.2), (0.95, 50.0), (0.99, 99.4)],
            ..EntryStats::default()
        };
        let json = serde_json::to_value(LocustEntry::new(&entry, false)).unwrap();
        assert_eq!(json["method"], "GET");
        assert_eq!(json["safe_name"], "/&lt;x&gt;");
        assert_eq!(json["min_response_time"], 0);
        assert_eq!(json["max_response_time"], 100);
        assert_eq!(json["median_response_time"], 11);
        assert_eq!(json["ninetieth_response_time"], 40);
        assert_eq!(json["response_time_percentile_0.95"], 50);
        assert_eq!(json["response_time_percentile_0.99"], 99);
        assert_eq!(json["ninety_ninth_response_time"], 99);
        assert_eq!(json["avg_response_time"], 12.25);
        assert_eq!(json["median_ms"], 10.5);
        let total = serde_json::to_value(LocustEntry::new(&entry, true)).unwrap();
        assert!(total["method"].is_null());
    }

    #[test]
    fn the_report_puts_aggregated_last_and_bounds_rows() {
        let snapshot = StatsSnapshot {
            entries: (0..RequestsReport::MAX_ROWS + 5)
                .map(|i| EntryStats {
                    method: "GET".to_string(),
                    name: format!("/{i:05}"),
                    num_requests: 1,
                    ..EntryStats::default()
                })
                .collect(),
            ..StatsSnapshot::default()
        };
        let extras = LiveExtras {
            version: API_VERSION,
            target_user_count: 0,
            spawn_rate: 1.0,
            host: String::new(),
            stats_started_unix_ms: 0,
            stats_seconds: 0.0,
            user_counts: BTreeMap::new(),
            guard_cap: None,
            arrival: Vec::new(),
            rows_omitted: 5,
            errors_omitted: 0,
            exceptions: Vec::new(),
            exceptions_omitted: 0,
            generator: None,
            workers_omitted: 0,
            cluster: None,
        };
        let report = RequestsReport::new("ready", 0, &snapshot, extras, None);
        assert_eq!(report.stats.len(), RequestsReport::MAX_ROWS + 1);
        assert_eq!(report.stats.last().unwrap().name, "Aggregated");
        assert!(report.stats.last().unwrap().method.is_none());
        let json = serde_json::to_value(&report).unwrap();
        assert!(
            json["current_response_time_percentiles"]["response_time_percentile_0.5"].is_null()
        );
        assert_eq!(json["cicada"]["version"], API_VERSION);
    }

    fn worker_info(
        guard_state: &[u8],
        presence: cicada_cluster::Presence,
    ) -> cicada_cluster::WorkerInfo {
        cicada_cluster::WorkerInfo {
            id: cicada_cluster::WorkerId::new("box_4242_0badcafe"),
            hostname: "box".to_string(),
            version: "0".to_string(),
            pid: 4242,
            cores: 4,
            address: None,
            status: cicada_cluster::WorkerStatus {
                state: cicada_cluster::WorkerState::Running,
                user_count: 12,
                cpu_percent: 37.5,
                memory_bytes: 64 << 20,
                guard_state: bytes::Bytes::copy_from_slice(guard_state),
                run_state: bytes::Bytes::new(),
            },
            presence,
            silent_for: std::time::Duration::from_millis(4_500),
            attached_at: std::time::SystemTime::UNIX_EPOCH,
            reconnects: 1,
            heartbeats: 10,
            deltas_received: 10,
            deltas_lost: 0,
            deltas_dropped_by_worker: 0,
            queued_messages: 0,
        }
    }

    #[test]
    fn a_worker_row_reads_its_guard_phase_and_limits_and_shows_missing() {
        let status = crate::guard::GuardStatus {
            phase: crate::guard::GuardPhase::Holding,
            over: vec![crate::guard::LimitBreach {
                limit: crate::guard::GuardLimitKind::Memory,
                value: 120.0,
                limit_value: 100.0,
                over_by_percent: 20.0,
            }],
            ..crate::guard::GuardStatus::default()
        };
        let bytes = serde_json::to_vec(&status).unwrap();
        let row =
            LocustWorker::from_info(&worker_info(&bytes, cicada_cluster::Presence::Connected));
        assert_eq!(row.state, "running");
        assert_eq!(row.guard_phase.as_deref(), Some("holding"));
        assert_eq!(row.guard_over, ["memory"]);
        assert_eq!(
            row.guard["users_held_back"], 0,
            "the whole state travels too"
        );
        let json = serde_json::to_value(&row).unwrap();
        for key in ["id", "state", "user_count", "cpu_usage", "memory_usage"] {
            assert!(json.get(key).is_some(), "Locust's key {key}: {json}");
        }
        assert_eq!(json["pid"], 4242);
        assert_eq!(json["last_heard_seconds"], 4.5);

        let missing = LocustWorker::from_info(&worker_info(b"", cicada_cluster::Presence::Missing));
        assert_eq!(missing.state, "missing");
        assert!(missing.guard.is_null() && missing.guard_phase.is_none());
        assert!(missing.guard_over.is_empty());
        let garbage = LocustWorker::from_info(&worker_info(
            br#"{"phase": 3, "over": [{"limit": "cpu"}, {"limit": null}, 7]}"#,
            cicada_cluster::Presence::Connected,
        ));
        assert_eq!(garbage.guard_phase, None);
        assert_eq!(
            garbage.guard_over,
            ["cpu"],
            "what does not read is left out"
        );
    }

    #[test]
    fn tasks_nest_like_locusts_and_total_ratios_follow_running_users() {
        let shares = TaskShares {
            user_types: vec![
                UserTypeShare {
                    name: "Visitor".to_string(),
                    share: 0.75,
                    fixed_count: None,
                    tasks: vec![
                        row(0, "index", 0.25, 0.25),
                        row(0, "browse", 0.75, 0.75),
                        row(1, "list", 0.5, 0.375),
                        row(1, "view", 0.5, 0.375),
                    ],
                },
                UserTypeShare {
                    name: "Admin".to_string(),
                    share: 0.25,
                    fixed_count: None,
                    tasks: vec![row(0, "audit", 0.5, 0.5), row(0, "audit", 0.5, 0.5)],
                },
            ],
        };
        let running = [("Visitor".to_string(), 3), ("Admin".to_string(), 1)];
        let report = TasksReport::new(shares, &running);
        let json = serde_json::to_string(&report).unwrap();
        let visitor = json.find("\"Visitor\"").unwrap();
        let admin = json.find("\"Admin\"").unwrap();
        assert!(visitor < admin, "definition order is kept: {json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let per_class = &value["per_class"]["Visitor"];
        assert_eq!(per_class["ratio"], 0.75);
        assert_eq!(per_class["tasks"]["browse"]["ratio"], 0.75);
        assert_eq!(per_class["tasks"]["browse"]["tasks"]["list"]["ratio"], 0.5);
        assert!(per_class["tasks"]["index"].get("tasks").is_none());
        let total = &value["total"]["Visitor"]["tasks"]["browse"]["tasks"]["view"]["ratio"];
        assert!((total.as_f64().unwrap() - 0.375 * 0.75).abs() < 1e-12);
        assert_eq!(value["per_class"]["Admin"]["tasks"]["audit"]["ratio"], 1.0);
        let idle = TasksReport::new(
            TaskShares {
                user_types: report.cicada.user_types.clone(),
            },
            &[],
        );
        assert_eq!(
            idle.per_class.0[0].1.ratio, 0.0,
            "no users run: Locust's ratios are 0"
        );
    }
}
