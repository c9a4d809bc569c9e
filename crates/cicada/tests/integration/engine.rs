//! The engine end to end: counts, weights, waits, ramping, stop timeout, tags, shapes, events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cicada::prelude::*;

use crate::common::{DemoTarget, run_test};

async fn fast(user: &mut User) -> TaskResult {
    user.get("/fast").send().await?;
    Ok(())
}

async fn item(user: &mut User) -> TaskResult {
    user.get("/items/1").name("/items/[id]").send().await?;
    Ok(())
}

#[test]
fn the_server_saw_exactly_what_was_reported() {
    let target = DemoTarget::start();
    let test = Cicada::new().user(UserType::<()>::new("Fast").task(fast));
    // A stop timeout lets every in-flight request finish, so the counts must match exactly.
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "20",
            "-r",
            "200",
            "-t",
            "2s",
            "-s",
            "5",
        ],
    );
    assert_eq!(run.exit_code, 0);
    let reported = run.requests("GET", "/fast");
    assert!(reported > 0, "no request was made");
    assert_eq!(run.total_requests(), reported);
    assert_eq!(
        target.counters().total(),
        reported,
        "server count vs reported count"
    );
    assert_eq!(run.total_failures(), 0);
}

#[test]
fn without_stop_timeout_only_in_flight_requests_go_missing() {
    let target = DemoTarget::start();
    let test = Cicada::new().user(UserType::<()>::new("Fast").task(fast));
    let run = run_test(
        test,
        &["-H", &target.url(), "-u", "10", "-r", "100", "-t", "1s"],
    );
    let reported = run.total_requests();
    let cut_off = run.report["stats"]["requests_cut_off"].as_u64().unwrap();
    let seen = target.counters().total();
    // Each of the 10 users had at most one request in flight at the stop: it is counted as cut off, not lost.
    assert!(cut_off <= 10, "{cut_off} cut off");
    assert!(
        seen >= reported && seen <= reported + cut_off,
        "seen {seen}, reported {reported}, cut off {cut_off}"
    );
}

#[test]
fn task_weights_hold_within_tolerance() {
    let target = DemoTarget::start();
    let test = Cicada::new().user(
        UserType::<()>::new("Mixed")
            .task(Task::new(fast).weight(3))
            .task(item),
    );
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "10",
            "-r",
            "100",
            "-t",
            "2s",
            "-s",
            "2",
        ],
    );
    let heavy = run.requests("GET", "/fast") as f64;
    let light = run.requests("GET", "/items/[id]") as f64;
    let share = heavy / (heavy + light);
    assert!(
        heavy + light > 1_000.0,
        "too few samples: {}",
        heavy + light
    );
    assert!(
        (share - 0.75).abs() < 0.03,
        "share of the weight-3 task: {share:.3}"
    );
}

#[test]
fn wait_times_are_honoured() {
    let target = DemoTarget::start();
    let test = Cicada::new().user(
        UserType::<()>::new("Patient")
            .wait_time(constant(0.25))
            .task(fast),
    );
    let run = run_test(
        test,
        &["-H", &target.url(), "-u", "4", "-r", "100", "-t", "2s"],
    );
    // 4 users, a request then 250 ms of waiting: about 8 tasks each in 2 s, never more than 9.
    let requests = run.total_requests();
    assert!((24..=36).contains(&requests), "{requests} requests");

    let target = DemoTarget::start();
    let test = Cicada::new().user(
        UserType::<()>::new("Paced")
            .wait_time(constant_throughput(5.0))
            .task(fast),
    );
    let run = run_test(
        test,
        &["-H", &target.url(), "-u", "2", "-r", "100", "-t", "2s"],
    );
    let requests = run.total_requests();
    assert!(
        (16..=22).contains(&requests),
        "{requests} requests at 5 tasks/s for 2 users over 2 s"
    );
}

/// Records the per-type user counts each time spawning completes.
struct Ramp {
    stages: Vec<(u64, u64)>,
}

impl LoadShape for Ramp {
    fn tick(&mut self, run_time: Duration) -> Option<Target> {
        let users = self
            .stages
            .iter()
            .find(|(until, _)| run_time.as_secs() < *until)
            .map(|(_, users)| *users)?;
        Some(cicada::Target {
            users,
            spawn_rate: 100.0,
            user_types: None,
        })
    }
}

#[test]
fn ramp_up_and_down_keeps_the_mix_and_stops_newest_first() {
    let target = DemoTarget::start();
    type CountsByType = Vec<(String, u64)>;
    let seen: Arc<Mutex<Vec<CountsByType>>> = Arc::default();
    let record = seen.clone();
    let test = Cicada::new()
        .user(
            UserType::<()>::new("A")
                .weight(3)
                .wait_time(constant(0.05))
                .task(fast),
        )
        .user(
            UserType::<()>::new("B")
                .weight(1)
                .wait_time(constant(0.05))
                .task(item),
        )
        .user(
            UserType::<()>::new("Admin")
                .fixed_count(1)
                .wait_time(constant(0.05))
                .task(fast),
        )
        .shape(Ramp {
            stages: vec![(2, 9), (4, 5), (6, 13)],
        })
        .on_spawning_complete(move |env, _count| {
            record.lock().unwrap().push(env.runner().user_counts());
        });
    let run = run_test(test, &["-H", &target.url()]);
    assert_eq!(run.exit_code, 0);
    let seen = seen.lock().unwrap().clone();
    let as_counts =
        |counts: &Vec<(String, u64)>| counts.iter().map(|(_, c)| *c).collect::<Vec<_>>();
    let stages: Vec<Vec<u64>> = seen.iter().map(as_counts).collect();
    // Fixed count first, then A A B A ...: 9 users = 1 admin + 6 A + 2 B; 5 = 1 + 3 + 1; 13 = 1 + 9 + 3.
    assert_eq!(
        stages,
        vec![vec![6, 2, 1], vec![3, 1, 1], vec![9, 3, 1]],
        "{seen:?}"
    );
}

async fn two_step(user: &mut User) -> TaskResult {
    user.get("/fast").send().await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    user.get("/items/1").name("/items/[id]").send().await?;
    Ok(())
}

#[test]
fn stop_timeout_lets_tasks_finish() {
    let target = DemoTarget::start();
    let test = Cicada::new().user(UserType::<()>::new("Steps").task(two_step));
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "5",
            "-r",
            "100",
            "-t",
            "1s",
            "-s",
            "3",
        ],
    );
    assert_eq!(
        run.requests("GET", "/fast"),
        run.requests("GET", "/items/[id]")
    );

    let target = DemoTarget::start();
    let test = Cicada::new().user(UserType::<()>::new("Steps").task(two_step));
    let run = run_test(
        test,
        &["-H", &target.url(), "-u", "5", "-r", "100", "-t", "1s"],
    );
    assert_eq!(
        run.requests("GET", "/fast"),
        run.requests("GET", "/items/[id]") + 5,
        "without a stop timeout every user is killed between its two requests"
    );
}

#[test]
fn tags_select_and_exclude_tasks() {
    let target = DemoTarget::start();
    let build = || {
        Cicada::new().user(
            UserType::<()>::new("Tagged")
                .task(Task::new(fast).tag("quick"))
                .task(Task::new(item).tag("items")),
        )
    };
    let run_with = |extra: &[&str]| {
        let mut args = vec![
            "-H",
            target.url().leak() as &str,
            "-u",
            "2",
            "-r",
            "100",
            "-t",
            "1s",
        ];
        args.extend_from_slice(extra);
        run_test(build(), &args)
    };
    let only_quick = run_with(&["-T", "quick"]);
    assert!(only_quick.requests("GET", "/fast") > 0);
    assert_eq!(only_quick.requests("GET", "/items/[id]"), 0);
    let no_quick = run_with(&["-E", "quick"]);
    assert_eq!(no_quick.requests("GET", "/fast"), 0);
    assert!(no_quick.requests("GET", "/items/[id]") > 0);
}

async fn enter_checkout(user: &mut User) -> TaskResult {
    user.get("/items").send().await?;
    Ok(())
}

async fn leave(_user: &mut User) -> TaskResult {
    interrupt(false)
}

#[test]
fn sequential_sets_run_in_order_and_interrupt_to_the_parent() {
    let target = DemoTarget::start();
    let order = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = order.clone();
    let set = TaskSet::sequential("checkout")
        .task(enter_checkout)
        .task(item)
        .task(Task::new(item).weight(2))
        .task(leave);
    let test = Cicada::new()
        .user(UserType::<()>::new("Shopper").task(set))
        .on_request(move |request| record.lock().unwrap().push(request.name.to_string()));
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "1",
            "-r",
            "1",
            "-t",
            "1s",
            "-s",
            "2",
        ],
    );
    assert_eq!(run.exit_code, 0);
    let order = order.lock().unwrap();
    assert!(order.len() >= 8, "{order:?}");
    for chunk in order.chunks(4).filter(|c| c.len() == 4) {
        assert_eq!(
            chunk,
            ["/items", "/items/[id]", "/items/[id]", "/items/[id]"]
        );
    }
}

async fn stop_after_three(user: &mut User<u32>) -> TaskResult {
    user.get("/fast").send().await?;
    user.state += 1;
    if user.state == 3 {
        return stop_user();
    }
    Ok(())
}

#[test]
fn a_task_can_stop_its_user_and_the_whole_test() {
    let target = DemoTarget::start();
    let test = Cicada::new().user(UserType::<u32>::new("Short").task(stop_after_three));
    let run = run_test(
        test,
        &["-H", &target.url(), "-u", "4", "-r", "100", "-t", "2s"],
    );
    assert_eq!(
        run.total_requests(),
        12,
        "each of 4 users stops itself after 3 requests and is not respawned"
    );

    async fn end_test(user: &mut User) -> TaskResult {
        user.get("/fast").send().await?;
        stop_test()
    }
    let target = DemoTarget::start();
    let test = Cicada::new().user(UserType::<()>::new("Ender").task(end_test));
    let started = std::time::Instant::now();
    let run = run_test(
        test,
        &["-H", &target.url(), "-u", "1", "-r", "1", "-t", "30s"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stop_test ended the run early"
    );
    assert!(run.total_requests() >= 1);
}

#[test]
fn lifecycle_events_fire_in_order() {
    let target = DemoTarget::start();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let requests = Arc::new(AtomicU64::new(0));
    let push = |name: &'static str| {
        let log = log.clone();
        move |_env: &Environment| log.lock().unwrap().push(name.to_string())
    };
    let counted = requests.clone();
    let quit_log = log.clone();
    let test = Cicada::new()
        .user(
            UserType::<()>::new("U")
                .wait_time(constant(0.05))
                .task(fast),
        )
        .on_init(push("init"))
        .on_test_start(push("test_start"))
        .on_test_stopping(push("test_stopping"))
        .on_test_stop(push("test_stop"))
        .on_quitting(|env| env.set_exit_code(7))
        .on_quit(move |code| quit_log.lock().unwrap().push(format!("quit {code}")))
        .on_request(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "2",
            "-r",
            "100",
            "-t",
            "1s",
            "-s",
            "1",
        ],
    );
    assert_eq!(run.exit_code, 7, "a quitting listener sets the exit code");
    assert_eq!(
        *log.lock().unwrap(),
        ["init", "test_start", "test_stopping", "test_stop", "quit 7"]
    );
    assert_eq!(requests.load(Ordering::Relaxed), run.total_requests());
}

#[test]
fn custom_clients_record_into_the_same_stats() {
    async fn custom(user: &mut User) -> TaskResult {
        user.record("grpc", "Hello", Duration::from_millis(3), 12, None);
        user.record(
            "grpc",
            "Hello",
            Duration::from_millis(5),
            0,
            Some("UNAVAILABLE"),
        );
        let _ = user
            .measure("kv", "get", |v: &u32| u64::from(*v), async {
                Ok::<u32, std::io::Error>(9)
            })
            .await?;
        stop_user()
    }
    let test = Cicada::new().user(
        UserType::<()>::new("Custom")
            .host("http://127.0.0.1:9")
            .task(custom),
    );
    let run = run_test(test, &["-u", "3", "-r", "100", "-t", "1s"]);
    assert_eq!(run.requests("grpc", "Hello"), 6);
    assert_eq!(run.failures("grpc", "Hello"), 3);
    assert_eq!(run.requests("kv", "get"), 3);
    assert_eq!(run.exit_code, 1, "a failed request means exit code 1");
    let groups = run.failure_groups();
    assert_eq!(
        groups,
        vec![("grpc".into(), "Hello".into(), "UNAVAILABLE".into(), 3)]
    );
}

#[test]
fn names_over_the_cap_go_to_one_overflow_entry() {
    async fn unique(user: &mut User) -> TaskResult {
        let n = user.rng().u64(..);
        user.record(
            "GET",
            &format!("/unique/{n}"),
            Duration::from_micros(100),
            0,
            None,
        );
        Ok(())
    }
    let test = Cicada::new().user(
        UserType::<()>::new("Flood")
            .host("http://127.0.0.1:9")
            .task(unique),
    );
    let run = run_test(
        test,
        &["-u", "2", "-r", "100", "-t", "1s", "--max-names", "50"],
    );
    let entries = run.report["stats"]["entries"].as_array().unwrap();
    assert!(entries.len() <= 51, "{} entries", entries.len());
    let counted: u64 = entries
        .iter()
        .map(|e| e["num_requests"].as_u64().unwrap())
        .sum();
    assert_eq!(
        counted,
        run.total_requests(),
        "every sample is counted somewhere"
    );
    assert!(run.total_requests() > 1000);
}

#[test]
fn paced_users_report_how_late_their_tasks_started() {
    async fn slow(user: &mut User) -> TaskResult {
        user.get("/slow?ms=250").name("/slow").send().await?;
        Ok(())
    }
    async fn quick(user: &mut User) -> TaskResult {
        user.get("/fast").send().await?;
        Ok(())
    }
    let target = DemoTarget::start();
    // A 100 ms pacing that a 250 ms page cannot keep, and one that it can.
    let test = Cicada::new()
        .user(
            UserType::<()>::new("Overrun")
                .wait_time(constant_pacing(0.1))
                .task(slow),
        )
        .user(
            UserType::<()>::new("OnTime")
                .wait_time(constant_pacing(0.1))
                .task(quick),
        );
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "2",
            "-r",
            "100",
            "-t",
            "2s",
            "-s",
            "1",
        ],
    );
    let schedule = run.report["schedule"].as_array().unwrap();
    let of = |name: &str| {
        schedule
            .iter()
            .find(|s| s["user_type"] == name)
            .unwrap()
            .clone()
    };
    let overrun = of("Overrun");
    assert!(overrun["task_starts"].as_u64().unwrap() >= 4, "{overrun}");
    assert_eq!(
        overrun["late_starts"], overrun["task_starts"],
        "every start after the first slow task is late"
    );
    assert!(
        overrun["p50_late_ms"].as_f64().unwrap() > 100.0,
        "{overrun}"
    );
    let on_time = of("OnTime");
    assert!(on_time["task_starts"].as_u64().unwrap() >= 10, "{on_time}");
    // On time, give or take the scheduling noise of a loaded test machine: a late start here is a few ms late, never
    // a pacing period.
    let late = on_time["late_starts"].as_u64().unwrap();
    assert!(
        late * 4 <= on_time["task_starts"].as_u64().unwrap(),
        "{on_time}"
    );
    assert!(on_time["max_late_ms"].as_f64().unwrap() < 50.0, "{on_time}");
}
