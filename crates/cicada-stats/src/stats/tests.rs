//! Behaviour of [`Stats`] end to end: threads, flush triggers, caps, reset, window math,
//! history.

use std::fmt::Write as _;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::{OTHER_ERRORS, PERCENTILES};

const FINAL_TIMEOUT: Duration = Duration::from_secs(10);

fn sample<'a>(
    method: &'a str,
    name: &'a str,
    micros: u64,
    error: Option<&'a str>,
    finished_at: Instant,
) -> Sample<'a> {
    Sample {
        method,
        name,
        response_time: Duration::from_micros(micros),
        content_length: 100,
        error,
        finished_at,
    }
}

/// The value Locust/HDR report at `quantile`: the `ceil(q·n)`-th smallest sample.
fn exact_quantile(sorted: &[u64], quantile: f64) -> u64 {
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

fn assert_within_one_percent(reported_ms: f64, exact_micros: u64, what: &str) {
    let exact_ms = exact_micros as f64 / 1_000.0;
    assert!(
        (reported_ms - exact_ms).abs() <= exact_ms * 0.01,
        "{what}: reported {reported_ms} ms, exact {exact_ms} ms"
    );
}

fn assert_percentiles(entry: &crate::EntryStats, values: &mut [u64]) {
    values.sort_unstable();
    assert_eq!(entry.percentiles.len(), PERCENTILES.len());
    for &(quantile, ms) in &entry.percentiles {
        assert_within_one_percent(
            ms,
            exact_quantile(values, quantile),
            &format!("p{quantile}"),
        );
    }
    assert_eq!(entry.max_ms, *values.last().unwrap() as f64 / 1_000.0);
    assert_eq!(entry.min_ms, values[0] as f64 / 1_000.0);
}

#[test]
fn threads_record_concurrently() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 25_000;
    let stats = Stats::default();
    let names = ["/a", "/b", "/c", "/d", "/e"];
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let stats = stats.clone();
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let error = (i % 100 == 0).then_some("HTTP 500");
                    let name = names[(i % 5) as usize];
                    stats.record(&sample("GET", name, i % 1_000 + 1, error, Instant::now()));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert!(stats.collect_final(FINAL_TIMEOUT));
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.total.num_requests, THREADS * PER_THREAD);
    assert_eq!(snapshot.total.num_failures, THREADS * PER_THREAD / 100);
    assert_eq!(snapshot.entries.len(), 5);
    for entry in &snapshot.entries {
        assert_eq!(entry.num_requests, THREADS * PER_THREAD / 5);
        assert_eq!(entry.avg_content_length, 100.0);
    }
    // Every failure happened on i % 100 == 0, hence i % 5 == 0: all on "/a".
    assert_eq!(snapshot.failures.len(), 1);
    assert_eq!(snapshot.failures[0].occurrences, THREADS * PER_THREAD / 100);
    assert_eq!(snapshot.failures[0].name, "/a");

    let mut all: Vec<u64> = (0..THREADS)
        .flat_map(|_| (0..PER_THREAD).map(|i| i % 1_000 + 1))
        .collect();
    assert_percentiles(&snapshot.total, &mut all);
    let exact_avg_ms = all.iter().sum::<u64>() as f64 / all.len() as f64 / 1_000.0;
    assert!((snapshot.total.avg_ms - exact_avg_ms).abs() < 1e-9);
}

#[test]
fn percentiles_are_within_one_percent_on_known_distributions() {
    let start = Instant::now();
    let uniform: Vec<u64> = (1..=100_000).collect();
    // Exponential with a floor, from a fixed linear congruential generator.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let exponential: Vec<u64> = (0..50_000)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let uniform_01 = ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            50 + (-uniform_01.ln() * 2_000.0) as u64
        })
        .collect();
    for (name, values) in [("uniform", uniform), ("exponential", exponential)] {
        let stats = Stats::default();
        for &micros in &values {
            stats.record(&sample("GET", name, micros, None, start));
        }
        assert!(stats.collect_final(FINAL_TIMEOUT));
        let snapshot = stats.snapshot();
        let entry = snapshot.entry("GET", name).unwrap();
        let mut sorted = values.clone();
        assert_percentiles(entry, &mut sorted);
        assert_eq!(entry.median_ms, entry.percentile(0.5).unwrap());
    }
}

#[test]
fn a_million_unique_names_stay_within_the_name_cap() {
    const CAP: usize = 1_000;
    const UNIQUE: u64 = 1_000_000;
    let stats = Stats::new(StatsConfig {
        max_names: CAP,
        ..StatsConfig::default()
    });
    let finished_at = Instant::now();
    let mut name = String::new();
    for i in 0..UNIQUE {
        name.clear();
        write!(name, "/user/{i}").unwrap();
        stats.record(&sample("GET", &name, 10, None, finished_at));
    }
    let sizes = stats.thread_shard_sizes().unwrap();
    assert_eq!(sizes.names, CAP, "the shard map stops growing at the cap");

    // Another thread that meets only unknown names after the cap does not grow either, and
    // still resolves a registered name through the frozen registry.
    let other = stats.clone();
    let other_sizes = thread::spawn(move || {
        let mut name = String::new();
        for i in UNIQUE..UNIQUE + 10_000 {
            name.clear();
            write!(name, "/user/{i}").unwrap();
            other.record(&sample("GET", &name, 10, None, finished_at));
        }
        let before_known = other.thread_shard_sizes().unwrap();
        other.record(&sample("GET", "/user/7", 10, None, finished_at));
        (before_known, other.thread_shard_sizes().unwrap())
    })
    .join()
    .unwrap();
    assert_eq!(other_sizes.0.names, 0);
    assert_eq!(other_sizes.1.names, 1);

    assert!(stats.collect_final(FINAL_TIMEOUT));
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.entries.len(), CAP + 1);
    let overflow = snapshot.entry("", crate::OVERFLOW_NAME).unwrap();
    let over_cap = UNIQUE + 10_000 - CAP as u64;
    assert_eq!(overflow.num_requests, over_cap);
    assert_eq!(snapshot.overflow.samples_over_name_cap, over_cap);
    assert!(snapshot.overflow.names_at_cap);
    assert_eq!(snapshot.entry("GET", "/user/7").unwrap().num_requests, 2);
    assert_eq!(snapshot.total.num_requests, UNIQUE + 10_001);
}

#[test]
fn failure_groups_past_the_cap_go_to_other_errors() {
    let stats = Stats::new(StatsConfig {
        max_errors: 3,
        ..StatsConfig::default()
    });
    let now = Instant::now();
    for _ in 0..2 {
        for error in 0..10 {
            let error = format!("error {error}");
            stats.record(&sample("GET", "/a", 10, Some(&error), now));
        }
    }
    stats.record(&sample("POST", "/b", 10, Some("late"), now));
    assert_eq!(stats.thread_shard_sizes().unwrap().failure_groups, 3);
    assert!(stats.collect_final(FINAL_TIMEOUT));
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.total.num_failures, 21);
    assert!(snapshot.overflow.errors_at_cap);
    assert_eq!(snapshot.overflow.failures_over_error_cap, 15);
    let occurrences: Vec<(&str, &str, u64)> = snapshot
        .failures
        .iter()
        .map(|failure| (&*failure.name, &*failure.error, failure.occurrences))
        .collect();
    assert_eq!(
        occurrences,
        [
            ("/a", OTHER_ERRORS, 14),
            ("/a", "error 0", 2),
            ("/a", "error 1", 2),
            ("/a", "error 2", 2),
            ("/b", OTHER_ERRORS, 1),
        ]
    );
}

#[test]
fn user_errors_are_capped() {
    let stats = Stats::new(StatsConfig {
        max_user_errors: 2,
        ..StatsConfig::default()
    });
    for message in ["a", "b", "c", "a", "d"] {
        stats.record_user_error("Shopper", message, "here");
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.user_errors.len(), 3);
    assert_eq!(snapshot.user_errors[0].count, 2);
    assert_eq!(snapshot.user_errors[2].message, crate::OTHER_USER_ERRORS);
    assert_eq!(snapshot.overflow.user_errors_over_cap, 2);
}

/// A thread that records on command and reports back, so tests control when its shard
/// holds samples.
struct Recorder {
    commands: mpsc::Sender<Option<Instant>>,
    done: mpsc::Receiver<()>,
    handle: thread::JoinHandle<()>,
}

impl Recorder {
    fn spawn(stats: &Stats) -> Recorder {
        let stats = stats.clone();
        let (commands, command_rx) = mpsc::channel::<Option<Instant>>();
        let (done_tx, done) = mpsc::channel();
        let handle = thread::spawn(move || {
            while let Ok(Some(finished_at)) = command_rx.recv() {
                stats.record(&sample("GET", "/held", 1_000, None, finished_at));
                done_tx.send(()).unwrap();
            }
        });
        Recorder {
            commands,
            done,
            handle,
        }
    }

    fn record(&self, finished_at: Instant) {
        self.commands.send(Some(finished_at)).unwrap();
        self.done.recv().unwrap();
    }

    fn exit(self) {
        self.commands.send(None).unwrap();
        self.handle.join().unwrap();
    }
}

#[test]
fn busy_shards_flush_at_the_next_record_after_collect() {
    let stats = Stats::default();
    let finished_at = Instant::now();
    let recorder = Recorder::spawn(&stats);
    recorder.record(finished_at);
    stats.collect();
    assert_eq!(stats.snapshot().total.num_requests, 0, "still in the shard");
    recorder.record(finished_at);
    stats.collect();
    assert_eq!(
        stats.snapshot().total.num_requests,
        1,
        "flushed on seeing the epoch"
    );
    recorder.exit();
    stats.collect();
    assert_eq!(stats.snapshot().total.num_requests, 2, "flushed on exit");
    assert!(
        lock(&stats.shared.mailboxes).is_empty(),
        "exited thread's mailbox removed"
    );
}

#[test]
fn shards_flush_when_the_second_changes() {
    let stats = Stats::default();
    let start = stats.shared.clock().start;
    let recorder = Recorder::spawn(&stats);
    recorder.record(start + Duration::from_millis(200));
    recorder.record(start + Duration::from_millis(1_200));
    stats.collect_at(start + Duration::from_millis(1_300));
    assert_eq!(stats.snapshot().total.num_requests, 1);
    recorder.exit();
}

#[test]
fn collect_final_reports_a_thread_that_never_flushes() {
    let stats = Stats::default();
    let recorder = Recorder::spawn(&stats);
    recorder.record(Instant::now());
    assert!(!stats.collect_final(Duration::from_millis(20)));
    assert_eq!(stats.snapshot().total.num_requests, 0);
    recorder.exit();
    assert!(stats.collect_final(FINAL_TIMEOUT));
    assert_eq!(stats.snapshot().total.num_requests, 1);
}

#[test]
fn reset_drops_samples_of_the_previous_generation() {
    let stats = Stats::default();
    stats.record_user_error("Shopper", "boom", "here");
    stats.push_history(1);
    let recorder = Recorder::spawn(&stats);
    // Pending in a shard at reset time.
    recorder.record(Instant::now());
    // Already handed to the mailbox at reset time.
    stats.record(&sample("GET", "/mine", 10, Some("x"), Instant::now()));
    Stats::flush_current_thread();
    stats.reset();
    recorder.exit();
    assert!(stats.collect_final(FINAL_TIMEOUT));
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.total.num_requests, 0);
    assert!(snapshot.entries.is_empty());
    assert!(snapshot.failures.is_empty());
    assert!(snapshot.user_errors.is_empty());
    assert!(stats.history().is_empty());

    // The same thread records into the new generation with fresh ids.
    stats.record(&sample("POST", "/after", 10, Some("y"), Instant::now()));
    assert!(stats.collect_final(FINAL_TIMEOUT));
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.total.num_requests, 1);
    assert_eq!(snapshot.entries[0].name, "/after");
    assert_eq!(snapshot.failures[0].error, "y");
}

#[test]
fn batches_of_an_old_generation_are_discarded_by_collect() {
    let stats = Stats::default();
    stats.record(&sample("GET", "/", 10, None, Instant::now()));
    Stats::flush_current_thread();
    // Simulate a flush that raced with a reset: an old-generation batch arrives afterwards.
    let stale = lock(&lock(&stats.shared.mailboxes)[0].inbox)
        .batches
        .pop()
        .unwrap();
    stats.reset();
    lock(&lock(&stats.shared.mailboxes)[0].inbox)
        .batches
        .push(stale);
    stats.collect();
    assert_eq!(stats.snapshot().total.num_requests, 0);
}

#[test]
fn current_window_averages_completed_seconds() {
    let stats = Stats::new(StatsConfig {
        current_window: Duration::from_secs(10),
        ..StatsConfig::default()
    });
    let start = stats.shared.clock().start;
    let at = |millis: u64| start + Duration::from_millis(millis);
    // Second s holds s + 1 requests of (s + 1) ms; seconds 15.. have one failure each.
    let record_second = |second: u64| {
        for request in 0..=second {
            let error = (second >= 15 && request == 0).then_some("boom");
            stats.record(&sample(
                "GET",
                "/w",
                (second + 1) * 1_000,
                error,
                at(second * 1_000 + 500),
            ));
        }
    };
    for second in 0..3 {
        record_second(second);
    }
    Stats::flush_current_thread();
    // Early in the run the window is as long as the completed seconds.
    stats.collect_at(at(3_500));
    let total = stats.snapshot().total;
    assert_eq!(total.current_rps, (1 + 2 + 3) as f64 / 3.0);

    for second in 3..21 {
        record_second(second);
    }
    Stats::flush_current_thread();
    // "Now" is in second 20: the window is seconds 10..=19, second 20 is in progress.
    stats.collect_at(at(20_700));
    let snapshot = stats.snapshot();
    let total = &snapshot.total;
    let in_window: u64 = (10..20).map(|second| second + 1).sum();
    assert_eq!(total.current_rps, in_window as f64 / 10.0);
    assert_eq!(total.current_fail_per_s, 0.5);
    let mut window_values: Vec<u64> = (10..20u64)
        .flat_map(|second| std::iter::repeat_n((second + 1) * 1_000, (second + 1) as usize))
        .collect();
    window_values.sort_unstable();
    for &(quantile, ms) in &total.current_percentiles {
        assert_within_one_percent(ms, exact_quantile(&window_values, quantile), "current");
    }
    let window_avg_ms =
        window_values.iter().sum::<u64>() as f64 / window_values.len() as f64 / 1_000.0;
    assert!((total.current_avg_ms - window_avg_ms).abs() < 1e-9);
    // Whole-run rate: all requests over the time from start to the last request (20.5 s).
    let all: u64 = (0..21).map(|second| second + 1).sum();
    assert_eq!(total.num_requests, all);
    assert!((snapshot.duration - 20.5).abs() < 1e-6);
    assert!((total.total_rps - all as f64 / 20.5).abs() < 1e-6);
    assert_eq!(snapshot.entries[0].current_rps, total.current_rps);

    // History takes the current figures.
    stats.push_history(12);
    let point = stats.history().pop().unwrap();
    assert_eq!(point.user_count, 12);
    assert_eq!(point.rps, total.current_rps);
    assert_eq!(point.p95_ms, total.current_percentile(0.95).unwrap());
    assert_eq!(point.total_requests, all);
    assert_eq!(point.unix_ms, snapshot.collected_unix_ms);

    // Long after the last request the window is empty and its slots are freed.
    stats.collect_at(at(60_000));
    let total = stats.snapshot().total;
    assert_eq!(total.current_rps, 0.0);
    assert!(total.current_percentiles.is_empty());
    let aggregate = lock(&stats.shared.aggregate);
    assert_eq!(aggregate.window_slots_in_use(), 0);
}

#[test]
fn waiting_batches_are_bounded_without_collect() {
    let stats = Stats::default();
    let start = stats.shared.clock().start;
    let seconds = 3 * crate::MAX_WAITING_BATCHES as u64;
    for second in 0..seconds {
        stats.record(&sample(
            "GET",
            "/",
            10,
            Some("e"),
            start + Duration::from_secs(second),
        ));
    }
    Stats::flush_current_thread();
    let waiting = lock(&lock(&stats.shared.mailboxes)[0].inbox).batches.len();
    assert_eq!(waiting, crate::MAX_WAITING_BATCHES);
    stats.collect();
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.total.num_requests, seconds);
    assert_eq!(snapshot.failures[0].occurrences, seconds);
}

#[test]
fn frequent_flushes_of_one_second_fold_into_one_batch() {
    let stats = Stats::default();
    let finished_at = Instant::now();
    // A thread that parks after every request flushes every time.
    for round in 0..100 {
        let error = (round % 10 == 0).then_some("e");
        stats.record(&sample("GET", "/a", 10, error, finished_at));
        stats.record(&sample("GET", "/b", 20, None, finished_at));
        Stats::flush_current_thread();
    }
    {
        let mailboxes = lock(&stats.shared.mailboxes);
        let inbox = lock(&mailboxes[0].inbox);
        assert_eq!(inbox.batches.len(), 1);
        assert!(
            inbox.spare_histograms.len() <= 2,
            "histograms are recycled, not piled up"
        );
    }
    stats.collect();
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.entry("GET", "/a").unwrap().num_requests, 100);
    assert_eq!(snapshot.entry("GET", "/b").unwrap().max_ms, 0.02);
    assert_eq!(snapshot.failures[0].occurrences, 10);
}

#[test]
fn flushes_of_few_samples_add_up_to_exact_statistics() {
    // Groups recorded between two parks: a flush carries its values while they fit (`FEW_SAMPLES`), a histogram
    // past that, and folding into a waiting batch of the same second meets every pair of the two forms.
    let few = crate::histogram::FEW_SAMPLES;
    let groups = [1, 1, few - 1, few + 1, 2, 3 * few, 1, few, few, 5, 1];
    let stats = Stats::default();
    let finished_at = Instant::now();
    let mut values = Vec::new();
    let mut next = 0u64;
    for (round, &group) in groups.iter().enumerate() {
        for _ in 0..group {
            // Spread over three orders of magnitude so that the percentiles tell the samples apart.
            next += 1;
            let micros = 50 + (next * 7_919) % 40_000;
            values.push(micros);
            stats.record(&sample("GET", "/a", micros, None, finished_at));
        }
        Stats::flush_current_thread();
        // Collects after the first group (the aggregate merges a batch of values) and in the middle (later flushes
        // start new batches).
        if round == 0 || round == groups.len() / 2 {
            stats.collect();
        }
    }
    stats.collect();
    let snapshot = stats.snapshot();
    let entry = snapshot.entry("GET", "/a").unwrap();
    assert_eq!(entry.num_requests, values.len() as u64);
    assert_percentiles(entry, &mut values.clone());
    assert_percentiles(&snapshot.total, &mut values.clone());
    // Bucket by bucket, the same distribution as the same values recorded in one go.
    let reference = Stats::default();
    for &micros in &values {
        reference.record(&sample("GET", "/a", micros, None, finished_at));
    }
    Stats::flush_current_thread();
    reference.collect();
    let distribution = |stats: &Stats| stats.entry_details()[0].response_times.clone();
    assert_eq!(distribution(&stats), distribution(&reference));
}

#[test]
fn history_ring_keeps_the_newest_points() {
    let stats = Stats::new(StatsConfig {
        history_capacity: 5,
        ..StatsConfig::default()
    });
    for users in 0..12 {
        stats.push_history(users);
    }
    let users: Vec<u64> = stats
        .history()
        .iter()
        .map(|point| point.user_count)
        .collect();
    assert_eq!(users, [7, 8, 9, 10, 11]);

    let none = Stats::new(StatsConfig {
        history_capacity: 0,
        ..StatsConfig::default()
    });
    none.push_history(1);
    assert!(none.history().is_empty());
}

#[test]
fn several_instances_on_one_thread_stay_apart() {
    let first = Stats::default();
    let second = Stats::default();
    let now = Instant::now();
    first.record(&sample("GET", "/1", 10, None, now));
    second.record(&sample("GET", "/2", 10, None, now));
    second.record(&sample("GET", "/2", 10, None, now));
    drop(first);
    let third = Stats::default();
    third.record(&sample("GET", "/3", 10, None, now));
    assert!(second.collect_final(FINAL_TIMEOUT));
    assert!(third.collect_final(FINAL_TIMEOUT));
    assert_eq!(second.snapshot().total.num_requests, 2);
    assert_eq!(third.snapshot().entries[0].name, "/3");
}

#[test]
fn zero_name_cap_sends_everything_to_overflow() {
    let stats = Stats::new(StatsConfig {
        max_names: 0,
        max_errors: 0,
        ..StatsConfig::default()
    });
    stats.record(&sample("GET", "/", 10, Some("e"), Instant::now()));
    assert!(stats.collect_final(FINAL_TIMEOUT));
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.entries.len(), 1);
    assert_eq!(snapshot.entries[0].name, crate::OVERFLOW_NAME);
    assert_eq!(snapshot.failures[0].error, OTHER_ERRORS);
}

#[test]
fn timestamps_are_unix_milliseconds() {
    let stats = Stats::default();
    let start = stats.shared.clock().start;
    stats.record(&sample(
        "GET",
        "/",
        10,
        None,
        start + Duration::from_millis(1_500),
    ));
    Stats::flush_current_thread();
    stats.collect_at(start + Duration::from_millis(2_000));
    let snapshot = stats.snapshot();
    assert_eq!(
        snapshot.last_request_unix_ms,
        Some(snapshot.start_unix_ms + 1_500)
    );
    assert_eq!(snapshot.collected_unix_ms, snapshot.start_unix_ms + 2_000);
}

fn unmarked_stats() -> Stats {
    Stats::new(StatsConfig {
        unmarked_stats: true,
        ..StatsConfig::default()
    })
}

#[test]
fn marked_seconds_are_left_out_of_the_unmarked_statistics() {
    let stats = unmarked_stats();
    let start = stats.shared.clock().start;
    let at = |millis: u64| start + Duration::from_millis(millis);
    let mut unmarked_values = Vec::new();
    // 30 seconds: seconds 10..=14 are marked and hold slow requests and a failure.
    for second in 0..30u64 {
        for index in 0..10u64 {
            let marked = (10..=14).contains(&second);
            let micros = if marked {
                500_000 + index
            } else {
                1_000 + second * 10 + index
            };
            let error = (marked && index == 0).then_some("timeout");
            stats.record(&sample(
                "GET",
                "/a",
                micros,
                error,
                at(second * 1_000 + 100 + index),
            ));
            if !marked {
                unmarked_values.push(micros);
            }
        }
        if second == 14 {
            // The mark comes a little after the interval, as the collector's does.
            stats.mark_saturated(at(10_050), at(14_950));
        }
        Stats::flush_current_thread();
        stats.collect_at(at(second * 1_000 + 1_000));
    }
    // Seconds 0..20 have left the 10 s window (settled), 20..30 are still in it.
    stats.collect_at(at(30_000));
    let unmarked = stats
        .unmarked_snapshot()
        .expect("unmarked statistics are on");
    assert_eq!(unmarked.marked_seconds, 5);
    assert_eq!(unmarked.excluded_requests, 50);
    assert_eq!(unmarked.unsorted_requests, 0);
    let entry = unmarked.entry("GET", "/a").unwrap();
    assert_eq!((entry.num_requests, entry.num_failures), (250, 0));
    assert_percentiles(entry, &mut unmarked_values);
    assert_eq!(unmarked.total.num_requests, 250);
    // 25 unmarked seconds of a run that lasted 29.1 s (start to the last request).
    assert!(
        (unmarked.unmarked_secs - 24.109).abs() < 0.01,
        "{}",
        unmarked.unmarked_secs
    );
    assert!((entry.total_rps - 250.0 / unmarked.unmarked_secs).abs() < 1e-9);
    // The whole run's statistics are untouched.
    let whole = stats.snapshot();
    assert_eq!(
        (whole.total.num_requests, whole.total.num_failures),
        (300, 5)
    );
    assert_eq!(whole.total.max_ms, 500.009);
}

#[test]
fn unmarked_statistics_are_off_by_default_and_a_reset_forgets_marks() {
    assert!(Stats::default().unmarked_snapshot().is_none());
    let stats = unmarked_stats();
    let now = Instant::now();
    stats.mark_saturated(now, now + Duration::from_secs(3));
    stats.reset();
    let start = stats.shared.clock().start;
    stats.record(&sample(
        "GET",
        "/",
        1_000,
        None,
        start + Duration::from_millis(10),
    ));
    assert!(stats.collect_final(FINAL_TIMEOUT));
    let unmarked = stats.unmarked_snapshot().unwrap();
    assert_eq!(
        (unmarked.marked_seconds, unmarked.total.num_requests),
        (0, 1)
    );
}

#[test]
fn a_master_sorts_worker_deltas_by_its_own_marks() {
    let master = unmarked_stats();
    let worker = Stats::default();
    // A worker takes its first delta when it starts: later ones carry per-second histograms.
    let _ = worker.take_delta();
    let now = Instant::now();
    // A worker's second that the master marked, and one five seconds later that it did not.
    worker.record(&sample("GET", "/", 700_000, None, now));
    worker.record(&sample(
        "GET",
        "/",
        2_000,
        None,
        now + Duration::from_secs(5),
    ));
    assert!(worker.collect_final(FINAL_TIMEOUT));
    master.merge_delta(&worker.take_delta()).unwrap();
    master.mark_saturated(now, now + Duration::from_millis(10));
    master.collect_at(now + Duration::from_secs(6));
    let unmarked = master.unmarked_snapshot().unwrap();
    assert_eq!(
        (unmarked.total.num_requests, unmarked.excluded_requests),
        (1, 1)
    );
    assert_eq!(unmarked.total.max_ms, 2.0);
    // Widened by a second on each side (a worker's second may be one off the master's), down
    // to second 0.
    assert!((2..=3).contains(&unmarked.marked_seconds));
}
