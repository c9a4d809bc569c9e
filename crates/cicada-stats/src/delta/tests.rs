use std::time::{Duration, Instant};

use super::*;
use crate::stats::Clock;
use crate::{OTHER_ERRORS, OTHER_USER_ERRORS, OVERFLOW_NAME, Sample, Stats, StatsConfig};

const START_UNIX_MS: u64 = 1_700_000_000_250;

fn clock() -> Clock {
    Clock {
        generation: 0,
        start: Instant::now(),
        start_unix_ms: START_UNIX_MS,
    }
}

fn record(stats: &Stats, clock: &Clock, name: &str, ms: u64, error: Option<&str>, at_ms: u64) {
    stats.record(&Sample {
        method: "GET",
        name,
        response_time: Duration::from_millis(ms),
        content_length: 100,
        error,
        finished_at: clock.start + Duration::from_millis(at_ms),
    });
}

#[test]
fn taking_a_delta_leaves_the_process_own_statistics_alone() {
    let clock = clock();
    let worker = Stats::with_clock(StatsConfig::default(), clock);
    record(&worker, &clock, "/a", 5, None, 100);
    record(&worker, &clock, "/a", 7, Some("HTTP 500"), 1_100);
    worker.record_user_error("Shopper", "boom", "here");
    worker.record_cut_off();
    Stats::flush_current_thread();
    worker.collect_at(clock.start + Duration::from_secs(2));
    let before = worker.snapshot();

    let first = worker.take_delta();
    assert_eq!((first.sequence, first.epoch), (1, 0));
    assert_eq!((first.num_requests(), first.num_failures()), (2, 1));
    assert_eq!(first.num_entries(), 1);
    assert_eq!(first.user_errors[0].count, 1);
    assert_eq!(first.requests_cut_off, 1);
    let mut after = worker.snapshot();
    // The take collected at the real "now"; everything else is as before.
    after.collected_unix_ms = before.collected_unix_ms;
    after.total.current_rps = before.total.current_rps;
    after.total.current_fail_per_s = before.total.current_fail_per_s;
    after.total.current_avg_ms = before.total.current_avg_ms;
    after.total.current_percentiles = before.total.current_percentiles.clone();
    after.entries[0].current_rps = before.entries[0].current_rps;
    after.entries[0].current_fail_per_s = before.entries[0].current_fail_per_s;
    after.entries[0].current_avg_ms = before.entries[0].current_avg_ms;
    after.entries[0].current_percentiles = before.entries[0].current_percentiles.clone();
    assert_eq!(after, before);

    let second = worker.take_delta();
    assert!(second.is_empty());
    assert_eq!(second.sequence, 2);
    record(&worker, &clock, "/b", 1, None, 2_100);
    worker.record_user_error("Shopper", "boom", "here");
    Stats::flush_current_thread();
    let third = worker.take_delta();
    assert_eq!(third.num_requests(), 1);
    assert_eq!(third.entries[0].name, "/b");
    assert_eq!(third.user_errors[0].count, 1);
    assert_eq!(third.requests_cut_off, 0);
}

#[test]
fn the_first_delta_holds_what_was_collected_before_it() {
    let clock = clock();
    let config = StatsConfig::default();
    let worker = Stats::with_clock(config.clone(), clock);
    for second in 0..4 {
        record(
            &worker,
            &clock,
            "/a",
            1 + second,
            None,
            100 + second * 1_000,
        );
        record(
            &worker,
            &clock,
            "/b",
            10,
            Some("HTTP 503"),
            200 + second * 1_000,
        );
    }
    Stats::flush_current_thread();
    worker.collect_at(clock.start + Duration::from_millis(4_500));

    let master = Stats::with_clock(config, clock);
    master.collect_at(clock.start + Duration::from_millis(4_500));
    master.merge_delta(&worker.take_delta()).unwrap();
    let (expected, merged) = (worker.snapshot(), master.snapshot());
    assert_eq!(merged.total.num_requests, 8);
    assert_eq!(merged.failures, expected.failures);
    assert_eq!(merged.total.percentiles, expected.total.percentiles);
    assert_eq!(merged.duration, expected.duration);
    assert_eq!(master.entry_details(), worker.entry_details());
    // Collected before tracking started: no per-second windows travelled.
    assert_eq!(merged.total.current_rps, 0.0);
    assert!(expected.total.current_rps > 0.0);
}

#[test]
fn a_delta_of_another_epoch_is_refused() {
    let clock = clock();
    let worker = Stats::with_clock(StatsConfig::default(), clock);
    let master = Stats::with_clock(StatsConfig::default(), clock);
    record(&worker, &clock, "/a", 5, None, 100);
    Stats::flush_current_thread();
    let before_reset = worker.take_delta();

    master.reset();
    assert_eq!(master.epoch(), 1);
    let refused = master.merge_delta(&before_reset).unwrap_err();
    assert_eq!(
        refused,
        MergeError::EpochMismatch {
            delta_epoch: 0,
            stats_epoch: 1
        }
    );
    assert!(refused.to_string().contains("reset_to_epoch(1)"));

    // Recorded before the worker's reset, not yet taken: dropped with the reset.
    record(&worker, &clock, "/old", 5, None, 200);
    worker.record_user_error("Shopper", "old", "here");
    worker.record_cut_off();
    Stats::flush_current_thread();
    worker.reset_to_epoch(master.epoch());
    worker.record(&Sample {
        method: "GET",
        name: "/new",
        response_time: Duration::from_millis(1),
        content_length: 0,
        error: None,
        finished_at: Instant::now(),
    });
    Stats::flush_current_thread();
    let after_reset = worker.take_delta();
    assert_eq!(after_reset.epoch, 1);
    assert_eq!(
        after_reset.sequence, 2,
        "sequence numbers go on across resets"
    );
    master.merge_delta(&after_reset).unwrap();
    let snapshot = master.snapshot();
    assert_eq!(snapshot.total.num_requests, 1);
    assert_eq!(snapshot.entries[0].name, "/new");
    assert!(snapshot.user_errors.is_empty());
    assert_eq!(snapshot.requests_cut_off, 0);

    // A reset of the receiver clears what it merged.
    master.reset();
    assert_eq!(master.snapshot().total.num_requests, 0);
}

#[test]
fn the_receiver_applies_its_own_caps() {
    let clock = clock();
    let worker = Stats::with_clock(
        StatsConfig {
            max_names: 3,
            ..StatsConfig::default()
        },
        clock,
    );
    for (index, name) in ["/a", "/b", "/c", "/d"].into_iter().enumerate() {
        let error = format!("HTTP 50{index}");
        record(&worker, &clock, name, 5, Some(&error), 100);
        worker.record_user_error("Shopper", &error, "here");
    }
    Stats::flush_current_thread();
    let delta = worker.take_delta();
    // The worker's own cap already sent "/d" to its overflow entry.
    assert!(delta.entries.iter().any(|entry| entry.over_name_cap));

    let master = Stats::with_clock(
        StatsConfig {
            max_names: 2,
            max_errors: 1,
            max_user_errors: 2,
            ..StatsConfig::default()
        },
        clock,
    );
    master.merge_delta(&delta).unwrap();
    let snapshot = master.snapshot();
    assert_eq!(snapshot.total.num_requests, 4);
    let names: Vec<&str> = snapshot
        .entries
        .iter()
        .map(|entry| entry.name.as_str())
        .collect();
    assert_eq!(names, ["(over the name cap)", "/a", "/b"]);
    assert_eq!(snapshot.entry("", OVERFLOW_NAME).unwrap().num_requests, 2);
    assert!(snapshot.overflow.names_at_cap && snapshot.overflow.errors_at_cap);
    assert_eq!(snapshot.overflow.samples_over_name_cap, 2);
    assert_eq!(snapshot.overflow.failures_over_error_cap, 3);
    let other_errors: u64 = snapshot
        .failures
        .iter()
        .filter(|failure| failure.error == OTHER_ERRORS)
        .map(|failure| failure.occurrences)
        .sum();
    assert_eq!(other_errors, 3);
    assert_eq!(snapshot.user_errors.len(), 3);
    assert_eq!(snapshot.user_errors[2].message, OTHER_USER_ERRORS);
    assert_eq!(snapshot.overflow.user_errors_over_cap, 2);
}

#[test]
fn a_delta_survives_serialisation() {
    let clock = clock();
    let worker = Stats::with_clock(StatsConfig::default(), clock);
    for at_ms in (0..3_000).step_by(50) {
        record(&worker, &clock, "/a", 1 + at_ms % 97, None, at_ms);
        record(
            &worker,
            &clock,
            "/b",
            300 + at_ms % 13,
            Some("HTTP 500"),
            at_ms + 1,
        );
    }
    worker.record_user_error("Shopper", "boom", "src/lib.rs:1");
    Stats::flush_current_thread();
    let delta = worker.take_delta();
    let json: StatsDelta = serde_json::from_str(&serde_json::to_string(&delta).unwrap()).unwrap();
    assert_eq!(json, delta);

    let direct = Stats::with_clock(StatsConfig::default(), clock);
    let received = Stats::with_clock(StatsConfig::default(), clock);
    direct.merge_delta(&delta).unwrap();
    received.merge_delta(&json).unwrap();
    assert_eq!(received.snapshot(), direct.snapshot());
}

#[test]
fn a_malformed_delta_makes_wrong_figures_not_a_panic() {
    let clock = clock();
    let master = Stats::with_clock(StatsConfig::default(), clock);
    let mut histogram = crate::histogram::new_histogram();
    histogram.record(12_345).unwrap();
    let delta = StatsDelta {
        entries: vec![DeltaEntry {
            method: "GET".into(),
            name: "x".repeat(5_000),
            requests: u64::MAX,
            failures: u64::MAX,
            min_micros: u64::MAX,
            max_micros: 0,
            response_micros_sum: u64::MAX,
            content_bytes: u64::MAX,
            first_unix_second: u64::MAX,
            last_finished_unix_nanos: Some(u64::MAX),
            earlier: SparseHistogram::from_histogram(&histogram),
            seconds: vec![
                DeltaSecond {
                    unix_second: 0,
                    requests: u64::MAX,
                    failures: 0,
                    window: Some(SecondWindow {
                        response_micros_sum: u64::MAX,
                        min_micros: 7,
                        max_micros: 3,
                        histogram: SparseHistogram::from_histogram(&histogram),
                    }),
                },
                DeltaSecond {
                    unix_second: u64::MAX,
                    requests: 1,
                    failures: 1,
                    window: None,
                },
            ],
            failure_groups: vec![DeltaFailure {
                error: "boom".into(),
                occurrences: u64::MAX,
                first_unix_second: u64::MAX,
                last_unix_second: 0,
            }],
            ..DeltaEntry::default()
        }],
        user_errors: vec![DeltaUserError {
            count: u64::MAX,
            ..DeltaUserError::default()
        }],
        user_errors_over_cap: u64::MAX,
        requests_cut_off: u64::MAX,
        ..StatsDelta::default()
    };
    master.merge_delta(&delta).unwrap();
    master.merge_delta(&delta).unwrap();
    master.collect_at(clock.start + Duration::from_secs(1));
    let snapshot = master.snapshot();
    assert_eq!(snapshot.total.num_requests, u64::MAX);
    assert_eq!(
        snapshot.entries[0].name.len(),
        1_024,
        "names are cut as local ones"
    );
    let details = master.entry_details();
    let _ = crate::report::console::stats_table(&snapshot);
    let _ = crate::report::console::failures_table(&snapshot);
    let mut sink = Vec::new();
    crate::report::csv::write_stats_to(&mut sink, &snapshot).unwrap();
    crate::report::csv::write_failures_to(&mut sink, &snapshot).unwrap();
    crate::report::csv::write_exceptions_to(&mut sink, &snapshot).unwrap();
    let entries = crate::report::locust::entries(&details);
    crate::report::locust::write_json_to(&mut sink, &entries).unwrap();
}

#[test]
fn a_book_not_taken_for_long_stays_bounded() {
    let clock = clock();
    let config = StatsConfig {
        per_second_capacity: 20,
        current_window: Duration::from_secs(3),
        ..StatsConfig::default()
    };
    let worker = Stats::with_clock(config.clone(), clock);
    assert!(worker.take_delta().is_empty());
    for second in 0..100 {
        record(&worker, &clock, "/a", 1 + second, None, second * 1_000 + 10);
        Stats::flush_current_thread();
        worker.collect_at(clock.start + Duration::from_millis(second * 1_000 + 500));
    }
    let delta = worker.take_delta();
    let entry = &delta.entries[0];
    assert_eq!(entry.requests, 100);
    assert_eq!(entry.seconds.len(), 20);
    let windows = entry
        .seconds
        .iter()
        .filter(|second| second.window.is_some())
        .count();
    assert_eq!(windows, 3 + 2);
    assert_eq!(entry.seconds[19].unix_second, START_UNIX_MS / 1_000 + 99);
    assert!(entry.seconds[19].window.is_some());
    let in_windows: u64 = entry
        .seconds
        .iter()
        .filter_map(|second| second.window.as_ref())
        .map(|window| window.histogram.len())
        .sum();
    assert_eq!(entry.earlier.len() + in_windows, 100);

    let master = Stats::with_clock(config, clock);
    master.collect_at(clock.start + Duration::from_millis(99_500));
    master.merge_delta(&delta).unwrap();
    let (merged, expected) = (master.snapshot(), worker.snapshot());
    assert_eq!(merged.total, expected.total);
    assert_eq!(master.entry_details(), worker.entry_details());
}
