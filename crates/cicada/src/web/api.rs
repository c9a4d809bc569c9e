//! The web UI's routes: pages, live snapshots (JSON and server-sent events), controls and downloads. Every JSON
//! answer is one of [`super::schema`]'s types.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use cicada_stats::StatsSnapshot;
use cicada_stats::report::csv;

use super::WebContext;
use super::schema::{
    API_VERSION, Answer, ConfigReport, ExceptionsReport, GeneratorView, HistoryReport, LiveExtras,
    LocustException, LogsReport, RequestsReport, TaskShares, TasksReport,
};
use crate::options::parse_duration;
use crate::report::{self, downsample};
use crate::runner::{RunnerState, Target};

/// History points sent at most (downsampled beyond).
const MAX_POINTS: usize = 2_000;
/// Guard actions sent with each snapshot at most (the newest).
const MAX_ACTIONS: usize = 50;
/// Most users `POST /swarm` accepts: far above what one generator can run, low enough that a typo is caught.
pub(super) const MAX_USERS: u64 = 10_000_000;
/// Highest spawn rate `POST /swarm` accepts, users per second.
pub(super) const MAX_SPAWN_RATE: f64 = 1_000_000.0;

type Shared = State<Arc<WebContext>>;

pub(super) fn routes(context: Arc<WebContext>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/config", get(config))
        .route("/stats/requests", get(requests))
        .route("/events", get(events))
        .route("/stats/history", get(history))
        .route("/swarm", post(swarm).fallback(post_only))
        .route("/stop", post(stop).fallback(post_only))
        .route("/stats/reset", post(reset).fallback(post_only))
        .route("/tasks", get(tasks))
        .route("/exceptions", get(exceptions))
        .route("/logs", get(logs))
        .route("/stats/requests/csv", get(requests_csv))
        .route("/stats/failures/csv", get(failures_csv))
        .route("/exceptions/csv", get(exceptions_csv))
        .route("/stats/history/csv", get(history_csv))
        .route("/report.json", get(report_json))
        .route("/report", get(report_html))
        .route("/stats/report", get(report_html))
        .route("/metrics", get(metrics))
        .with_state(context)
}

fn typed(content_type: &'static str, body: impl Into<axum::body::Body>) -> Response {
    let mut response = Response::new(body.into());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn download(content_type: &'static str, filename: &str, body: Vec<u8>) -> Response {
    let mut response = typed(content_type, body);
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// Controls change state, so they take POST only, as in Locust (a GET could come from a link or an image tag).
async fn post_only(uri: Uri) -> Response {
    let mut response = (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(Answer::refused(format!(
            "{} takes POST only (as in Locust): it changes the test's state",
            uri.path()
        ))),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

async fn index() -> Response {
    typed("text/html; charset=utf-8", crate::assets::INDEX_HTML)
}

async fn app_js() -> Response {
    typed("text/javascript; charset=utf-8", crate::assets::APP_JS)
}

async fn app_css() -> Response {
    typed("text/css; charset=utf-8", crate::assets::APP_CSS)
}

async fn config(State(context): Shared) -> Json<ConfigReport> {
    let options = context.env.options();
    Json(ConfigReport {
        version: env!("CARGO_PKG_VERSION"),
        api_version: API_VERSION,
        user_types: context.type_names.clone(),
        host: context.env.host(),
        users: options.users,
        spawn_rate: options.spawn_rate,
        run_time: options
            .run_time
            .map(|d| humantime::format_duration(d).to_string()),
        flags: options.summary(),
        max_users: MAX_USERS,
        max_spawn_rate: MAX_SPAWN_RATE,
    })
}

/// The load generator's state now, with the guard's newest actions.
fn generator_view(context: &WebContext) -> Option<GeneratorView> {
    let guard = context.guard.as_ref()?;
    let usage = guard.latest()?;
    let report = guard.report_with_actions(MAX_ACTIONS);
    let lag_ms = usage.max_lag.as_secs_f64() * 1e3;
    Some(GeneratorView {
        cpu_percent: usage.cpu_percent_of_available,
        rss_bytes: usage.rss_bytes,
        lag_ms,
        cores_available: report.limits.cores_available,
        memory_limit_bytes: report.limits.memory_limit_bytes,
        max_cpu_percent: report.limits.max_cpu_percent,
        max_memory_bytes: report.limits.max_memory_bytes,
        max_lag_ms: report.limits.max_lag_ms,
        saturated: !report.status.over.is_empty(),
        status: report.status,
        limit_changes: report.limit_changes,
        mode: report.mode,
        saturated_share: report.saturated_share,
        users_shed: report.users_shed,
        spawn_paused_seconds: report.spawn_paused_seconds,
        stopped_test: report.stopped_test,
        actions: report.actions,
    })
}

/// The live view: what `/stats/requests` returns and `/events` pushes.
pub(super) fn live_snapshot(context: &WebContext) -> RequestsReport {
    let env = &context.env;
    let runner = env.runner();
    let snapshot = env.stats().snapshot();
    let max_errors = RequestsReport::MAX_ERRORS;
    let mut extras = LiveExtras {
        version: API_VERSION,
        target_user_count: runner.target_user_count(),
        spawn_rate: runner.spawn_rate(),
        host: env.host(),
        stats_started_unix_ms: snapshot.start_unix_ms,
        stats_seconds: snapshot.duration,
        user_counts: runner.user_counts().into_iter().collect(),
        guard_cap: runner.guard_cap(),
        arrival: env.arrival_reports(),
        rows_omitted: snapshot
            .entries
            .len()
            .saturating_sub(RequestsReport::MAX_ROWS),
        errors_omitted: snapshot.failures.len().saturating_sub(max_errors),
        exceptions: snapshot
            .user_errors
            .iter()
            .take(max_errors)
            .map(LocustException::from)
            .collect(),
        exceptions_omitted: snapshot.user_errors.len().saturating_sub(max_errors),
        generator: generator_view(context),
        workers_omitted: 0,
        cluster: context
            .cluster_health
            .as_ref()
            .map(|health| health.report_with_actions(20)),
    };
    let workers = context.cluster.as_ref().map(|master| {
        let all = master.workers();
        extras.workers_omitted = all.len().saturating_sub(RequestsReport::MAX_WORKERS);
        let connected = all
            .iter()
            .filter(|w| w.presence == cicada_cluster::Presence::Connected)
            .count();
        let listed = all
            .iter()
            .take(RequestsReport::MAX_WORKERS)
            .map(super::schema::LocustWorker::from_info)
            .collect();
        (listed, connected)
    });
    RequestsReport::new(
        runner.state().as_str(),
        runner.user_count(),
        &snapshot,
        extras,
        workers,
    )
}

/// Prometheus' scrape: the run read now (docs/metrics.md).
async fn metrics(State(context): Shared) -> Response {
    crate::metrics::prometheus::response(&crate::metrics::MetricsSource::of_web(&context).read())
}

async fn requests(State(context): Shared) -> Json<RequestsReport> {
    Json(live_snapshot(&context))
}

async fn events(
    State(context): Shared,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold((context, true), |(context, first)| async move {
        if !first {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let event = Event::default()
            .event("snapshot")
            .json_data(live_snapshot(&context))
            .unwrap_or_else(|_| Event::default().comment("snapshot failed"));
        Some((Ok(event), (context, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn history(
    State(context): Shared,
    Query(query): Query<HashMap<String, String>>,
) -> Json<HistoryReport> {
    let max = query
        .get("max_points")
        .and_then(|m| m.parse().ok())
        .unwrap_or(MAX_POINTS)
        .min(MAX_POINTS);
    Json(HistoryReport {
        points: downsample(context.env.stats().history(), max),
    })
}

#[derive(serde::Deserialize)]
struct SwarmForm {
    user_count: Option<String>,
    spawn_rate: Option<String>,
    host: Option<String>,
    run_time: Option<String>,
    /// Comma-separated or repeated; the form encoding repeats it, which serde_urlencoded keeps as the last value,
    /// so the UI sends a comma-separated list.
    user_classes: Option<String>,
}

fn refuse(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(Answer::refused(message))).into_response()
}

/// A form field: `None` when absent or blank, else parsed; errors name the field.
fn field<T>(
    value: &Option<String>,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    match value.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(text) => parse(text)
            .map(Some)
            .map_err(|message| format!("{name}: {message}")),
    }
}

/// A user count between 0 and [`MAX_USERS`].
fn user_count(users: u64) -> Result<u64, String> {
    if users > MAX_USERS {
        return Err(format!(
            "{users} users is more than cicada runs from one process (at most {MAX_USERS})"
        ));
    }
    Ok(users)
}

/// A spawn rate above 0 and at most [`MAX_SPAWN_RATE`].
fn spawn_rate(rate: f64) -> Result<f64, String> {
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!(
            "{rate} is not a number of users per second above 0"
        ));
    }
    if rate > MAX_SPAWN_RATE {
        return Err(format!(
            "{rate} users per second is more than cicada starts (at most {MAX_SPAWN_RATE})"
        ));
    }
    Ok(rate)
}

async fn swarm(State(context): Shared, Form(form): Form<SwarmForm>) -> Response {
    let env = &context.env;
    let options = env.options();
    // Absent fields fall back to the command line's -u / -r, which have no upper bound: both are held to the limits.
    let users = field(&form.user_count, "user_count", |text| {
        text.parse::<u64>()
            .map_err(|_| format!("`{text}` is not a whole number of users (0 or more)"))
    })
    .and_then(|users| {
        user_count(users.unwrap_or(options.users))
            .map_err(|message| format!("user_count: {message}"))
    });
    let users = match users {
        Ok(users) => users,
        Err(message) => return refuse(message),
    };
    let rate = field(&form.spawn_rate, "spawn_rate", |text| {
        text.parse::<f64>()
            .map_err(|_| format!("`{text}` is not a number of users per second"))
    })
    .and_then(|rate| {
        spawn_rate(rate.unwrap_or(options.spawn_rate))
            .map_err(|message| format!("spawn_rate: {message}"))
    });
    let spawn_rate = match rate {
        Ok(rate) => rate,
        Err(message) => return refuse(message),
    };
    let run_time = match field(&form.run_time, "run_time", parse_duration) {
        Ok(run_time) => run_time.or(options.run_time),
        Err(message) => return refuse(message),
    };
    let user_types: Option<Vec<String>> = form
        .user_classes
        .as_deref()
        .map(|list| {
            list.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|list| !list.is_empty());
    if let Some(unknown) = user_types
        .iter()
        .flatten()
        .find(|name| !context.type_names.contains(name))
    {
        return refuse(format!("unknown user type `{unknown}`"));
    }
    let runner = env.runner();
    let new_test = matches!(runner.state(), RunnerState::Ready | RunnerState::Stopped);
    if let Some(host) = form
        .host
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        && host != env.host()
    {
        if !new_test {
            return refuse("the host can change only between tests: stop the test first");
        }
        for spawner in &context.spawners {
            if let Err(error) = spawner.set_host(host) {
                return refuse(error.to_string());
            }
        }
        env.set_host(host);
    }
    if new_test {
        // As Locust does: a new test starts with empty statistics, so its rates are over its own time, not over the
        // time the UI sat idle or a previous test ran.
        env.stats().reset();
        context.clock.set(run_time);
    }
    runner.start_target(Target {
        users,
        spawn_rate,
        user_types,
    });
    Json(Answer {
        success: true,
        message: format!(
            "{} {users} users at {spawn_rate} per second",
            if new_test { "Starting" } else { "Changing to" }
        ),
        host: Some(env.host()),
    })
    .into_response()
}

async fn stop(State(context): Shared) -> Json<Answer> {
    context.clock.set(None);
    context.env.runner().stop();
    Json(Answer::ok("Test stopped"))
}

async fn reset(State(context): Shared) -> Json<Answer> {
    let env = &context.env;
    env.stats().reset();
    env.events
        .fire_env("reset_stats", &env.events.reset_stats, env);
    Json(Answer::ok("Statistics reset"))
}

async fn tasks(State(context): Shared) -> Response {
    match serde_json::from_value::<TaskShares>(context.tasks.clone()) {
        Ok(shares) => Json(TasksReport::new(
            shares,
            &context.env.runner().user_counts(),
        ))
        .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(Answer::refused(format!(
                "the task ratios cannot be read: {error}"
            ))),
        )
            .into_response(),
    }
}

async fn exceptions(State(context): Shared) -> Json<ExceptionsReport> {
    Json(ExceptionsReport {
        exceptions: snapshot(&context)
            .user_errors
            .iter()
            .map(LocustException::from)
            .collect(),
    })
}

async fn logs() -> Json<LogsReport> {
    Json(LogsReport {
        logs: crate::logging::recent_lines(),
    })
}

/// A CSV file made by one of the stats crate's writers.
fn csv_download(
    filename: &str,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), cicada_stats::report::ReportError>,
) -> Response {
    let mut out = Vec::new();
    match write(&mut out) {
        Ok(()) => download("text/csv; charset=utf-8", filename, out),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

fn snapshot(context: &WebContext) -> StatsSnapshot {
    context.env.stats().snapshot()
}

async fn requests_csv(State(context): Shared) -> Response {
    let snapshot = snapshot(&context);
    csv_download("cicada_stats.csv", |out| {
        csv::write_stats_to(out, &snapshot)
    })
}

async fn failures_csv(State(context): Shared) -> Response {
    let snapshot = snapshot(&context);
    csv_download("cicada_failures.csv", |out| {
        csv::write_failures_to(out, &snapshot)
    })
}

async fn exceptions_csv(State(context): Shared) -> Response {
    let snapshot = snapshot(&context);
    csv_download("cicada_exceptions.csv", |out| {
        csv::write_exceptions_to(out, &snapshot)
    })
}

async fn history_csv(State(context): Shared) -> Response {
    let mut text = String::from(
        "Timestamp,User Count,Requests/s,Failures/s,50%,95%,Total Average Response Time,Total Request Count,\
         Total Failure Count,Generator Saturated,Generator CPU %,Generator RSS MB,Generator Lag ms\n",
    );
    for point in context.env.stats().history() {
        let generator = point
            .generator
            .map_or_else(|| ",,,".to_string(), |g| g.csv_cells()[..4].join(","));
        text.push_str(&format!(
            "{},{},{:.6},{:.6},{:.3},{:.3},{:.3},{},{},{generator}\n",
            point.unix_ms / 1000,
            point.user_count,
            point.rps,
            point.fail_per_s,
            point.p50_ms,
            point.p95_ms,
            point.avg_ms,
            point.total_requests,
            point.total_failures,
        ));
    }
    download(
        "text/csv; charset=utf-8",
        "cicada_stats_history.csv",
        text.into_bytes(),
    )
}

/// The report of the current test: from the start of its statistics (the test's start or the last reset) to its latest
/// request (or now, before the first).
fn report_data(context: &WebContext) -> serde_json::Value {
    let env = &context.env;
    let snapshot = snapshot(context);
    let now_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let ended_unix_ms = snapshot.last_request_unix_ms.unwrap_or(now_unix_ms);
    let guard = context.guard.as_ref().map(crate::guard::Guard::report);
    let cluster = context
        .cluster_health
        .as_ref()
        .map(|health| health.report());
    report::report_data(&report::ReportInputs {
        snapshot: &snapshot,
        history: downsample(env.stats().history(), MAX_POINTS),
        guard: guard.as_ref(),
        cluster: cluster.as_ref(),
        schedules: &env.schedule_reports(),
        arrival: &env.arrival_reports(),
        host: &env.host(),
        started_unix_ms: snapshot.start_unix_ms,
        duration: Duration::from_millis(ended_unix_ms.saturating_sub(snapshot.start_unix_ms)),
        flags: &env.options().summary(),
    })
}

async fn report_json(State(context): Shared) -> Response {
    let body = serde_json::to_vec_pretty(&report_data(&context)).unwrap_or_default();
    download("application/json", "cicada_report.json", body)
}

async fn report_html(
    State(context): Shared,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let html = report::html_report(&report_data(&context));
    if query.contains_key("download") {
        download(
            "text/html; charset=utf-8",
            "cicada_report.html",
            html.into_bytes(),
        )
    } else {
        typed("text/html; charset=utf-8", html)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crate::user::run::UserKind;

    async fn index(_user: &mut User) -> TaskResult {
        Ok(())
    }

    #[test]
    fn the_tests_task_ratios_read_as_the_tasks_routes_input() {
        let types: Vec<Box<dyn UserKind>> = vec![
            Box::new(
                UserType::<()>::new("Visitor")
                    .weight(3)
                    .task(index)
                    .task(TaskSet::random("browse").task(index).task(index)),
            ),
            Box::new(UserType::<()>::new("Admin").task(index)),
        ];
        let shares: TaskShares = serde_json::from_value(report::tasks_json(&types))
            .expect("tasks_json reads as TaskShares");
        assert_eq!(shares.user_types.len(), 2);
        assert_eq!(shares.user_types[0].share, 0.75);
        let report = TasksReport::new(shares, &[("Admin".to_string(), 2)]);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["per_class"]["Admin"]["ratio"], 1.0);
        assert_eq!(json["per_class"]["Visitor"]["ratio"], 0.0);
        assert!(
            json["per_class"]["Visitor"]["tasks"]["browse"]["tasks"].is_object(),
            "{json:#}"
        );
    }
}
