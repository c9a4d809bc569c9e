//! The web UI's routes: pages, live snapshots (JSON and server-sent events), controls and downloads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use cicada_stats::report::csv;
use cicada_stats::{HistoryPoint, StatsSnapshot};
use serde_json::{Value, json};

use super::{WebContext, assets};
use crate::options::parse_duration;
use crate::report;
use crate::runner::{RunnerState, Target};

/// Stats rows sent to the browser at most (the rest is counted in `rows_omitted`).
const MAX_ROWS: usize = 1_000;
/// Failure groups and user errors sent at most.
const MAX_ERRORS: usize = 100;
/// History points sent at most (downsampled beyond).
const MAX_POINTS: usize = 2_000;
/// Guard actions sent with each snapshot at most (the newest).
const MAX_ACTIONS: usize = 50;

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
        .route("/swarm", post(swarm))
        .route("/stop", get(stop).post(stop))
        .route("/stats/reset", get(reset).post(reset))
        .route("/tasks", get(tasks))
        .route("/logs", get(logs))
        .route("/stats/requests/csv", get(requests_csv))
        .route("/stats/failures/csv", get(failures_csv))
        .route("/exceptions/csv", get(exceptions_csv))
        .route("/stats/history/csv", get(history_csv))
        .route("/report.json", get(report_json))
        .route("/report", get(report_html))
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

async fn index() -> Response {
    typed("text/html; charset=utf-8", assets::INDEX_HTML)
}

async fn app_js() -> Response {
    typed("text/javascript; charset=utf-8", assets::APP_JS)
}

async fn app_css() -> Response {
    typed("text/css; charset=utf-8", assets::APP_CSS)
}

async fn config(State(context): Shared) -> Json<Value> {
    let options = context.env.options();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "user_types": context.type_names,
        "host": context.env.host(),
        "users": options.users,
        "spawn_rate": options.spawn_rate,
        "run_time": options.run_time.map(|d| humantime::format_duration(d).to_string()),
        "flags": options.summary(),
    }))
}

/// The live view: what `/stats/requests` returns and `/events` pushes.
pub(super) fn live_snapshot(context: &WebContext) -> Value {
    let env = &context.env;
    let runner = env.runner();
    let snapshot = env.stats().snapshot();
    let rows_omitted = snapshot.entries.len().saturating_sub(MAX_ROWS);
    let user_counts: HashMap<String, u64> = runner.user_counts().into_iter().collect();
    let generator = context.guard.as_ref().and_then(|guard| {
        let usage = guard.latest()?;
        let report = guard.report_with_actions(MAX_ACTIONS);
        Some(json!({
            "cpu_percent": usage.cpu_percent_of_available,
            "rss_bytes": usage.rss_bytes,
            "lag_ms": usage.max_lag.as_secs_f64() * 1e3,
            "cores_available": report.limits.cores_available,
            "memory_limit_bytes": report.limits.memory_limit_bytes,
            "max_cpu_percent": report.limits.max_cpu_percent,
            "max_memory_bytes": report.limits.max_memory_bytes,
            "max_lag_ms": report.limits.max_lag_ms,
            "mode": report.mode,
            "saturated": usage.cpu_percent_of_available > report.limits.max_cpu_percent
                || usage.max_lag.as_secs_f64() * 1e3 > report.limits.max_lag_ms,
            "saturated_share": report.saturated_share,
            "users_shed": report.users_shed,
            "spawn_paused_seconds": report.spawn_paused_seconds,
            "stopped_test": report.stopped_test,
            "actions": report.actions,
        }))
    });
    json!({
        "state": runner.state().as_str(),
        "user_count": runner.user_count(),
        "target_user_count": runner.target_user_count(),
        "spawn_rate": runner.spawn_rate(),
        "host": env.host(),
        "run_seconds": context.started.elapsed().as_secs_f64(),
        "user_counts": user_counts,
        "guard_cap": runner.guard_cap(),
        "stats": &snapshot.entries[..snapshot.entries.len().min(MAX_ROWS)],
        "rows_omitted": rows_omitted,
        "total": snapshot.total,
        "errors": &snapshot.failures[..snapshot.failures.len().min(MAX_ERRORS)],
        "user_errors": &snapshot.user_errors[..snapshot.user_errors.len().min(MAX_ERRORS)],
        "generator": generator,
    })
}

async fn requests(State(context): Shared) -> Json<Value> {
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

/// Keep at most `max` points: the last of each bucket, saturated if any point in it was.
pub(crate) fn downsample(points: Vec<HistoryPoint>, max: usize) -> Vec<HistoryPoint> {
    let max = max.max(2);
    if points.len() <= max {
        return points;
    }
    let bucket = points.len().div_ceil(max);
    points
        .chunks(bucket)
        .map(|chunk| {
            let mut last = chunk[chunk.len() - 1].clone();
            let saturated = chunk
                .iter()
                .any(|p| p.generator.is_some_and(|g| g.saturated));
            if let Some(generator) = last.generator.as_mut() {
                generator.saturated = saturated;
            }
            last
        })
        .collect()
}

async fn history(
    State(context): Shared,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let max = query
        .get("max_points")
        .and_then(|m| m.parse().ok())
        .unwrap_or(MAX_POINTS)
        .min(MAX_POINTS);
    Json(json!({ "points": downsample(context.env.stats().history(), max) }))
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
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "success": false, "message": message.into() })),
    )
        .into_response()
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

async fn swarm(State(context): Shared, Form(form): Form<SwarmForm>) -> Response {
    let env = &context.env;
    let options = env.options();
    let users = match field(&form.user_count, "user_count", |text| {
        text.parse::<u64>()
            .map_err(|_| format!("`{text}` is not a whole number"))
    }) {
        Ok(users) => users.unwrap_or(options.users),
        Err(message) => return refuse(message),
    };
    let spawn_rate = match field(&form.spawn_rate, "spawn_rate", |text| {
        match text.parse::<f64>() {
            Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
            _ => Err(format!("`{text}` is not a positive number")),
        }
    }) {
        Ok(rate) => rate.unwrap_or(options.spawn_rate),
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
        context.clock.set(run_time);
    }
    runner.start_target(Target {
        users,
        spawn_rate,
        user_types,
    });
    Json(json!({
        "success": true,
        "message": format!("{} {users} users at {spawn_rate} per second", if new_test { "Starting" } else { "Changing to" }),
        "host": env.host(),
    }))
    .into_response()
}

async fn stop(State(context): Shared) -> Json<Value> {
    context.clock.set(None);
    context.env.runner().stop();
    Json(json!({ "success": true, "message": "Test stopped" }))
}

async fn reset(State(context): Shared) -> Json<Value> {
    let env = &context.env;
    env.stats().reset();
    env.events
        .fire_env("reset_stats", &env.events.reset_stats, env);
    Json(json!({ "success": true }))
}

async fn tasks(State(context): Shared) -> Json<Value> {
    Json(context.tasks.clone())
}

async fn logs() -> Json<Value> {
    Json(json!({ "logs": crate::logging::recent_lines() }))
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

fn report_data(context: &WebContext) -> Value {
    let env = &context.env;
    let snapshot = snapshot(context);
    let guard = context.guard.as_ref().map(crate::guard::Guard::report);
    report::report_data(&report::ReportInputs {
        snapshot: &snapshot,
        history: downsample(env.stats().history(), MAX_POINTS),
        guard: guard.as_ref(),
        schedules: &env.schedule_reports(),
        host: &env.host(),
        started_unix_ms: context.started_unix_ms,
        duration: context.started.elapsed(),
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
    use cicada_stats::GeneratorSample;

    #[test]
    fn downsampling_keeps_saturation_and_the_bound() {
        let points: Vec<HistoryPoint> = (0..10_000)
            .map(|i| {
                let mut point = HistoryPoint::default();
                point.unix_ms = i;
                point.generator = Some(GeneratorSample {
                    saturated: i == 4_321,
                    ..GeneratorSample::default()
                });
                point
            })
            .collect();
        let kept = downsample(points, 2_000);
        assert!(kept.len() <= 2_000);
        assert_eq!(kept.last().unwrap().unix_ms, 9_999);
        assert_eq!(
            kept.iter()
                .filter(|p| p.generator.unwrap().saturated)
                .count(),
            1
        );
    }
}
