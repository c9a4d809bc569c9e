//! Cost of the master side of a distributed run: merging one second's deltas of 1 000 workers
//! (20 names each, 50 requests a second per name, response times spread over 0.3 to 400 ms,
//! 2% failures) into the master's `Stats`, and of taking one such delta on a worker.
//!
//! `cargo bench -p cicada-stats --bench merge`. After criterion's report, the budget check
//! times the 1 000 merges once more (best of 5) and fails if they take 100 ms or more.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cicada_stats::{Sample, Stats, StatsDelta};
use criterion::{BatchSize, Criterion, criterion_group};

const WORKERS: usize = 1_000;
const NAMES: usize = 20;
const REQUESTS_PER_NAME: u64 = 50;
/// Distinct deltas generated; the 1 000 merged are these, repeated.
const DISTINCT_DELTAS: usize = 50;
const BUDGET: Duration = Duration::from_millis(100);

/// A xorshift generator: the bench needs spread, not quality.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Records one second of a worker's requests into `worker`.
fn record_one_second(worker: &Stats, names: &[String], random: &mut Random) {
    let start = Instant::now();
    for request in 0..REQUESTS_PER_NAME {
        let finished_at = start + Duration::from_micros(request * 1_000_000 / REQUESTS_PER_NAME);
        for name in names {
            // Log-uniform between 0.3 ms and 400 ms.
            let spread = (random.next() % 1_000_000) as f64 / 1_000_000.0;
            let micros = (300.0 * (400_000.0f64 / 300.0).powf(spread)) as u64;
            let error = random
                .next()
                .is_multiple_of(50)
                .then_some("HTTP 503: Service Unavailable");
            worker.record(&Sample {
                method: "GET",
                name,
                response_time: Duration::from_micros(micros),
                content_length: 1_000 + random.next() % 5_000,
                error,
                finished_at,
            });
        }
    }
    Stats::flush_current_thread();
}

fn worker_deltas() -> Vec<StatsDelta> {
    let names: Vec<String> = (0..NAMES)
        .map(|index| format!("/api/v1/resource{index}/[id]"))
        .collect();
    let mut random = Random(0x2545_f491_4f6c_dd1d);
    let distinct: Vec<StatsDelta> = (0..DISTINCT_DELTAS)
        .map(|_| {
            let worker = Stats::default();
            assert!(worker.take_delta().is_empty());
            record_one_second(&worker, &names, &mut random);
            worker.take_delta()
        })
        .collect();
    distinct.iter().cycle().take(WORKERS).cloned().collect()
}

fn merge_all(deltas: &[StatsDelta]) -> Stats {
    let master = Stats::default();
    master.collect();
    for delta in deltas {
        master.merge_delta(delta).expect("same epoch");
    }
    master
}

fn merge(c: &mut Criterion) {
    let deltas = worker_deltas();
    let mut group = c.benchmark_group("delta");
    group.sample_size(20);
    group.bench_function("merge 1000 worker deltas of 20 names", |b| {
        b.iter(|| black_box(merge_all(&deltas)));
    });
    let names: Vec<String> = (0..NAMES)
        .map(|index| format!("/api/v1/resource{index}/[id]"))
        .collect();
    let mut random = Random(7);
    group.bench_function("take a delta of 20 names (1000 requests)", |b| {
        b.iter_batched(
            || {
                let worker = Stats::default();
                assert!(worker.take_delta().is_empty());
                record_one_second(&worker, &names, &mut random);
                worker
            },
            |worker| black_box(worker.take_delta()),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// Fails the bench run when merging 1 000 deltas does not stay under the budget.
fn check_budget() {
    let deltas = worker_deltas();
    let best = (0..5)
        .map(|_| {
            let started = Instant::now();
            black_box(merge_all(&deltas));
            started.elapsed()
        })
        .min()
        .expect("five runs");
    let merged = merge_all(&deltas).snapshot();
    assert_eq!(
        merged.total.num_requests,
        WORKERS as u64 * NAMES as u64 * REQUESTS_PER_NAME
    );
    println!(
        "budget check: {WORKERS} deltas of {NAMES} names merged in {best:?} (budget {BUDGET:?})"
    );
    assert!(
        best < BUDGET,
        "merging took {best:?}, over the {BUDGET:?} budget"
    );
}

criterion_group!(benches, merge);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    check_budget();
}
