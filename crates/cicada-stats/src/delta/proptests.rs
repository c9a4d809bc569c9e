//! Property tests of the merge guarantees: random samples (names, methods, response times,
//! sizes, failures, user errors, cut-off requests, finish times over several seconds) split
//! over processes (each a `Stats`) and, within a process, over threads (each its own shard),
//! each process taking deltas at random points; the deltas merged in random order into a fresh
//! `Stats`, some of them first through an intermediate `Stats` (a master of masters). The
//! result must equal one `Stats` that recorded every sample itself: the whole snapshot, the
//! three CSV files, Locust's JSON and the per-entry details.
//!
//! All instances share one time base (start instant and Unix start), so nothing is excluded
//! from the comparison: on real machines the Unix start, the collect time and with them the run
//! duration, total rates and the seconds' Unix mapping are each process's own.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::report::{csv, locust};
use crate::stats::Clock;
use crate::{Sample, Stats, StatsConfig, StatsDelta};

const NAMES: [&str; 5] = ["/", "/item/[id]", "/cart", "/checkout", "/search?q=[query]"];
const METHODS: [&str; 2] = ["GET", "POST"];
const ERRORS: [&str; 3] = ["HTTP 500", "HTTP 503", "connection refused"];
const MESSAGES: [&str; 3] = ["cart is empty", "no such item", "task panicked"];
const LOCATIONS: [&str; 2] = ["src/shopper.rs:42", "src/browser.rs:7"];
const USER_TYPES: [&str; 3] = ["Shopper", "Browser", "Admin"];

/// Finish times fall in the first `SPAN_MS` milliseconds of the run.
const SPAN_MS: u64 = 9_000;

#[derive(Clone, Debug)]
struct SampleSpec {
    name: usize,
    method: usize,
    micros: u64,
    content_length: u64,
    error: Option<usize>,
    at_ms: u64,
}

#[derive(Clone, Debug)]
struct UserErrorSpec {
    message: usize,
    location: usize,
    user_type: usize,
}

/// One step of a process: record some samples (on the process's main thread or a thread of
/// their own), user errors and cut-off requests, then maybe take a delta.
#[derive(Clone, Debug)]
struct Step {
    samples: Vec<SampleSpec>,
    on_own_thread: bool,
    user_errors: Vec<UserErrorSpec>,
    cut_offs: u8,
    take: bool,
    flush_before_take: bool,
}

#[derive(Clone, Debug)]
struct Run {
    window_secs: u64,
    per_second_capacity: usize,
    start_unix_ms: u64,
    /// When the receiver and the reference collect: no sample finishes more than a second
    /// later.
    collect_at_ms: u64,
    processes: Vec<Vec<Step>>,
    /// Seed of the merge order and of which deltas go through the intermediate.
    merge_seed: u64,
}

fn sample_spec() -> impl Strategy<Value = SampleSpec> {
    (
        0..NAMES.len(),
        0..METHODS.len(),
        prop_oneof![
            4 => 0u64..1_000,
            4 => 1_000u64..200_000,
            2 => 200_000u64..30_000_000,
            1 => Just(u64::MAX / 1_000_000),
        ],
        prop_oneof![Just(0u64), 0u64..100_000],
        prop::option::weighted(0.2, 0..ERRORS.len()),
        0..SPAN_MS,
    )
        .prop_map(
            |(name, method, micros, content_length, error, at_ms)| SampleSpec {
                name,
                method,
                micros,
                content_length,
                error,
                at_ms,
            },
        )
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop::collection::vec(sample_spec(), 0..25),
        any::<bool>(),
        prop::collection::vec(
            (0..MESSAGES.len(), 0..LOCATIONS.len(), 0..USER_TYPES.len()).prop_map(
                |(message, location, user_type)| UserErrorSpec {
                    message,
                    location,
                    user_type,
                },
            ),
            0..3,
        ),
        0u8..2,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(samples, on_own_thread, user_errors, cut_offs, take, flush_before_take)| Step {
                samples,
                on_own_thread,
                user_errors,
                cut_offs,
                take,
                flush_before_take,
            },
        )
}

fn run() -> impl Strategy<Value = Run> {
    (
        1u64..=4,
        prop_oneof![1usize..8, Just(3_600)],
        0u64..1_000,
        0u64..4_000,
        prop::collection::vec(prop::collection::vec(step(), 1..6), 1..5),
        any::<u64>(),
    )
        .prop_map(
            |(
                window_secs,
                per_second_capacity,
                start_ms,
                collect_after_ms,
                processes,
                merge_seed,
            )| {
                let last_ms = processes
                    .iter()
                    .flatten()
                    .flat_map(|step: &Step| &step.samples)
                    .map(|sample| sample.at_ms)
                    .max()
                    .unwrap_or(0);
                let mut run = Run {
                    window_secs,
                    per_second_capacity,
                    start_unix_ms: 1_700_000_000_000 + start_ms,
                    // Samples may finish up to a second after the collect (the guarantee's
                    // limit), so that the second after the collect's has samples too.
                    collect_at_ms: (last_ms + collect_after_ms).saturating_sub(1_000),
                    processes,
                    merge_seed,
                };
                sort_each_process_by_time(&mut run);
                run
            },
        )
}

/// Each shard must see its samples in time order, as a real thread does (a sample of an
/// earlier second counts for its batch's second): times are sorted within each process and
/// handed back to its steps in order.
fn sort_each_process_by_time(run: &mut Run) {
    for steps in &mut run.processes {
        let mut times: Vec<u64> = steps
            .iter()
            .flat_map(|step| step.samples.iter().map(|sample| sample.at_ms))
            .collect();
        times.sort_unstable();
        let mut times = times.into_iter();
        for sample in steps.iter_mut().flat_map(|step| step.samples.iter_mut()) {
            sample.at_ms = times.next().expect("one time per sample");
        }
    }
}

struct TimeBase {
    clock: Clock,
}

impl TimeBase {
    fn new(start_unix_ms: u64) -> Self {
        TimeBase {
            clock: Clock {
                generation: 0,
                start: Instant::now(),
                start_unix_ms,
            },
        }
    }

    fn stats(&self, config: &StatsConfig) -> Stats {
        Stats::with_clock(config.clone(), self.clock)
    }

    fn at(&self, ms: u64) -> Instant {
        self.clock.start + Duration::from_millis(ms)
    }
}

fn record(stats: &Stats, time: &TimeBase, sample: &SampleSpec) {
    stats.record(&Sample {
        method: METHODS[sample.method],
        name: NAMES[sample.name],
        response_time: Duration::from_micros(sample.micros),
        content_length: sample.content_length,
        error: sample.error.map(|error| ERRORS[error]),
        finished_at: time.at(sample.at_ms),
    });
}

fn record_user_error(stats: &Stats, error: &UserErrorSpec) {
    stats.record_user_error(
        USER_TYPES[error.user_type],
        MESSAGES[error.message],
        LOCATIONS[error.location],
    );
}

/// Plays one process's steps; returns its deltas.
fn play_process(stats: &Stats, time: &TimeBase, steps: &[Step]) -> Vec<StatsDelta> {
    // A worker takes its first delta when it starts, so that every sample is tracked with
    // its second's window (what a plain collect merged before the first take travels without).
    let mut deltas = vec![stats.take_delta()];
    for step in steps {
        if step.on_own_thread {
            // A thread of its own: a shard of its own, flushed when the thread exits.
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    for sample in &step.samples {
                        record(stats, time, sample);
                    }
                });
            });
        } else {
            for sample in &step.samples {
                record(stats, time, sample);
            }
        }
        for error in &step.user_errors {
            record_user_error(stats, error);
        }
        for _ in 0..step.cut_offs {
            stats.record_cut_off();
        }
        if step.take {
            if step.flush_before_take {
                Stats::flush_current_thread();
            }
            deltas.push(stats.take_delta());
        }
    }
    // The end of the run: every shard flushed, the last delta taken.
    assert!(stats.collect_final(Duration::from_secs(5)));
    deltas.push(stats.take_delta());
    deltas
}

/// A small deterministic generator for the merge order (proptest shrinks the seed).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for index in (1..items.len()).rev() {
            items.swap(index, self.below(index + 1));
        }
    }
}

/// Everything the reports show, for comparison.
#[derive(Debug, PartialEq)]
struct Reports {
    snapshot: crate::StatsSnapshot,
    details: Vec<crate::EntryDetail>,
    stats_csv: String,
    failures_csv: String,
    exceptions_csv: String,
    locust_json: String,
}

fn reports(stats: &Stats) -> Reports {
    let snapshot = stats.snapshot();
    let details = stats.entry_details();
    let text = |write: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = Vec::new();
        write(&mut bytes);
        String::from_utf8(bytes).expect("reports are UTF-8")
    };
    Reports {
        stats_csv: text(&|out| csv::write_stats_to(out, &snapshot).unwrap()),
        failures_csv: text(&|out| csv::write_failures_to(out, &snapshot).unwrap()),
        exceptions_csv: text(&|out| csv::write_exceptions_to(out, &snapshot).unwrap()),
        locust_json: text(&|out| locust::write_json_to(out, &locust::entries(&details)).unwrap()),
        snapshot,
        details,
    }
}

/// The reference (one `Stats` that recorded everything), the receiver that merged every
/// delta of the run, and their start.
fn reference_and_merged(run: &Run, config: &StatsConfig) -> (Stats, Stats, Instant) {
    let time = TimeBase::new(run.start_unix_ms);
    let reference = time.stats(config);
    let mut all: Vec<&SampleSpec> = run
        .processes
        .iter()
        .flatten()
        .flat_map(|step| &step.samples)
        .collect();
    all.sort_by_key(|sample| sample.at_ms);
    for sample in all {
        record(&reference, &time, sample);
    }
    for step in run.processes.iter().flatten() {
        for error in &step.user_errors {
            record_user_error(&reference, error);
        }
        for _ in 0..step.cut_offs {
            reference.record_cut_off();
        }
    }
    Stats::flush_current_thread();
    reference.collect_at(time.at(run.collect_at_ms));

    let mut deltas: Vec<StatsDelta> = run
        .processes
        .iter()
        .flat_map(|steps| play_process(&time.stats(config), &time, steps))
        .collect();
    let mut random = SplitMix(run.merge_seed);
    random.shuffle(&mut deltas);
    // Some deltas go through an intermediate receiver, which hands them on in one delta of
    // its own (with per-second windows).
    let intermediate = time.stats(config);
    assert!(intermediate.take_delta().is_empty());
    intermediate.collect_at(time.at(run.collect_at_ms));
    let through_intermediate = random.below(deltas.len() + 1);
    for delta in deltas.drain(..through_intermediate) {
        intermediate.merge_delta(&delta).unwrap();
    }
    let position = random.below(deltas.len() + 1);
    deltas.insert(position, intermediate.take_delta());

    let merged = time.stats(config);
    merged.collect_at(time.at(run.collect_at_ms));
    for delta in &deltas {
        merged.merge_delta(delta).unwrap();
    }
    merged.collect_at(time.at(run.collect_at_ms));
    (reference, merged, time.clock.start)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(48)
}

fn config(run: &Run) -> StatsConfig {
    StatsConfig {
        current_window: Duration::from_secs(run.window_secs),
        per_second_capacity: run.per_second_capacity,
        ..StatsConfig::default()
    }
}

proptest! {
    // 48 random runs per test by default (a few seconds unoptimised); PROPTEST_CASES=2000
    // for a longer search.
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn merged_deltas_equal_one_process_that_saw_every_sample(run in run()) {
        let (reference, merged, start) = reference_and_merged(&run, &config(&run));
        prop_assert_eq!(reports(&merged), reports(&reference));
        // The seconds after the collect are in the window of the next collects.
        for later_ms in [1_000, 2_000] {
            let later = start + Duration::from_millis(run.collect_at_ms + later_ms);
            reference.collect_at(later);
            merged.collect_at(later);
            prop_assert_eq!(merged.snapshot(), reference.snapshot());
        }
    }

    /// With caps small enough to fill, which names, failure groups and user errors win depends
    /// on arrival order (as with threads); the total and every count stay exact.
    #[test]
    fn merged_deltas_keep_every_sample_past_the_caps(run in run()) {
        let config = StatsConfig {
            max_names: 2,
            max_errors: 2,
            max_user_errors: 1,
            ..config(&run)
        };
        let (reference, merged, _) = reference_and_merged(&run, &config);
        let (expected, snapshot) = (reference.snapshot(), merged.snapshot());
        prop_assert_eq!(&snapshot.total, &expected.total);
        prop_assert_eq!(snapshot.requests_cut_off, expected.requests_cut_off);
        prop_assert!(snapshot.entries.len() <= config.max_names + 1);
        let requests: u64 = snapshot.entries.iter().map(|entry| entry.num_requests).sum();
        prop_assert_eq!(requests, expected.total.num_requests);
        let failures: u64 = snapshot.failures.iter().map(|group| group.occurrences).sum();
        prop_assert_eq!(failures, expected.total.num_failures);
        prop_assert!(snapshot.failures.len() <= config.max_errors + snapshot.entries.len());
        let user_errors: u64 = snapshot.user_errors.iter().map(|group| group.count).sum();
        let expected_user_errors: u64 = expected.user_errors.iter().map(|group| group.count).sum();
        prop_assert_eq!(user_errors, expected_user_errors);
        prop_assert!(snapshot.user_errors.len() <= config.max_user_errors + 1);
        let over_name_cap = snapshot.overflow.samples_over_name_cap;
        let named: u64 = snapshot
            .entries
            .iter()
            .filter(|entry| entry.name != crate::OVERFLOW_NAME)
            .map(|entry| entry.num_requests)
            .sum();
        prop_assert_eq!(named + over_name_cap, expected.total.num_requests);
    }
}
