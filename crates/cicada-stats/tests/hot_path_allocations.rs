//! The hot path's promise, checked with a counting global allocator: once a thread has seen
//! a `(method, name)` (and an error text), recording it allocates nothing, including the
//! record that flushes after a `collect` (it reuses buffers the aggregate handed back).
//!
//! Kept alone in its own test binary: the allocator counts every thread of the process. The test harness's own
//! thread can allocate at any moment (on a loaded machine it may still be setting up while the test runs), and it
//! can only add to the count; so each measurement is tried a few times, and one clean zero proves the hot path
//! allocates nothing (it is deterministic).

use std::alloc::System;
use std::time::{Duration, Instant};

use cicada_stats::{Sample, Stats};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Measurements tried; the fewest allocations seen counts.
const ATTEMPTS: usize = 5;
/// Flush/collect cycles before measuring, each with a batch of this many samples per key.
const WARM_UP_CYCLES: u64 = 3;
const WARM_UP_BATCH: u64 = 100;

#[test]
fn recording_seen_names_does_not_allocate() {
    let stats = Stats::default();
    let finished_at = Instant::now();
    let ok = Sample {
        method: "GET",
        name: "/item/[id]",
        response_time: Duration::from_micros(420),
        content_length: 512,
        error: None,
        finished_at,
    };
    let failed = Sample {
        name: "/cart",
        error: Some("HTTP 503"),
        response_time: Duration::from_millis(30),
        ..ok
    };
    // Warm up: first sight of each key, and flush/collect cycles so that the mailbox holds
    // recycled histograms and batches. A batch of a few samples carries their values; past 32
    // it carries a histogram, which grows to the values it records the first time: 100 samples
    // per key and cycle take both ways.
    for _ in 0..WARM_UP_CYCLES {
        for _ in 0..WARM_UP_BATCH {
            stats.record(&ok);
            stats.record(&failed);
        }
        stats.collect();
        stats.record(&ok);
        stats.record(&failed);
        stats.collect();
    }

    let fewest = (0..ATTEMPTS)
        .map(|_| {
            let region = Region::new(GLOBAL);
            for _ in 0..2_000 {
                stats.record(&ok);
                stats.record(&failed);
            }
            region.change().allocations
        })
        .min();
    assert_eq!(fewest, Some(0), "hits allocate");

    let fewest = (0..ATTEMPTS)
        .map(|_| {
            stats.collect();
            let region = Region::new(GLOBAL);
            // This record sees the new flush epoch and hands its batch over before recording.
            stats.record(&ok);
            region.change().allocations
        })
        .min();
    assert_eq!(fewest, Some(0), "a flushing record allocates");

    // The counter does see allocations: a first sight registers the name.
    let region = Region::new(GLOBAL);
    stats.record(&Sample { name: "/new", ..ok });
    assert!(region.change().allocations > 0);

    Stats::flush_current_thread();
    stats.collect();
    let warm_up = WARM_UP_CYCLES * (WARM_UP_BATCH + 1) * 2;
    let expected = warm_up + ATTEMPTS as u64 * 2_000 * 2 + ATTEMPTS as u64 + 1;
    assert_eq!(stats.snapshot().total.num_requests, expected);
}
