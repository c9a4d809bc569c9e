//! Cost of the hot path (`Stats::record`) and of the aggregator's `collect` / `snapshot`.
//!
//! `cargo bench -p cicada-stats`

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use cicada_stats::{Sample, Stats, StatsConfig};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

fn sample<'a>(name: &'a str, error: Option<&'a str>, finished_at: Instant) -> Sample<'a> {
    Sample {
        method: "GET",
        name,
        response_time: Duration::from_micros(420),
        content_length: 1_024,
        error,
        finished_at,
    }
}

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");

    // A name this thread has seen: thread-local lookup, hash-map hit, histogram, counters.
    let stats = Stats::default();
    let finished_at = Instant::now();
    let hit = sample("/item/[id]", None, finished_at);
    stats.record(&hit);
    group.bench_function("hit", |b| b.iter(|| stats.record(black_box(&hit))));

    // The same with a failure: one more map hit for the failure group.
    let failure = sample(
        "/item/[id]",
        Some("HTTP 503 Service Unavailable"),
        finished_at,
    );
    stats.record(&failure);
    group.bench_function("hit_failure", |b| {
        b.iter(|| stats.record(black_box(&failure)))
    });

    // Ten names round-robin, as a user with a few endpoints does.
    let names: Vec<String> = (0..10).map(|i| format!("/endpoint/{i}")).collect();
    let mut next = 0;
    group.bench_function("hit_10_names", |b| {
        b.iter(|| {
            next = (next + 1) % names.len();
            stats.record(black_box(&sample(&names[next], None, finished_at)));
        })
    });

    // Names past the cap: frozen-registry miss, overflow entry, no map growth.
    let capped = Stats::new(StatsConfig {
        max_names: 10,
        ..StatsConfig::default()
    });
    for i in 0..10 {
        capped.record(&sample(&format!("/registered/{i}"), None, finished_at));
    }
    let unknown: Vec<String> = (0..1_024).map(|i| format!("/user/{i}")).collect();
    let mut next = 0;
    group.bench_function("over_name_cap", |b| {
        b.iter(|| {
            next = (next + 1) % unknown.len();
            capped.record(black_box(&sample(&unknown[next], None, finished_at)));
        })
    });

    // Two threads recording into one `Stats` at once (the machine has two cores); reported
    // as the time of one record on one thread, comparable to "hit" (no shared cache lines
    // on the hit path, so it should stay the same).
    let parallel = Stats::default();
    group.bench_function("hit_2_threads", |b| {
        b.iter_custom(|iterations| {
            let per_thread = iterations.div_ceil(2);
            let started = Instant::now();
            thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        let finished_at = Instant::now();
                        for _ in 0..per_thread {
                            parallel.record(black_box(&sample("/item/[id]", None, finished_at)));
                        }
                    });
                }
            });
            // Criterion divides by `iterations`; each thread did half of them.
            started.elapsed() * 2
        })
    });
    group.finish();
}

fn aggregate(c: &mut Criterion) {
    let mut group = c.benchmark_group("aggregate");
    let names: Vec<String> = (0..20).map(|i| format!("/endpoint/{i}")).collect();

    // Merge one flushed batch of 10 000 samples over 20 names (one thread's second).
    let stats = Stats::default();
    group.bench_function("collect_20_names_10k_samples", |b| {
        b.iter_batched(
            || {
                let finished_at = Instant::now();
                for i in 0..10_000 {
                    stats.record(&sample(&names[i % names.len()], None, finished_at));
                }
                Stats::flush_current_thread();
            },
            |()| stats.collect(),
            BatchSize::PerIteration,
        )
    });

    // A collect with nothing to merge (the idle aggregator tick).
    group.bench_function("collect_idle", |b| b.iter(|| stats.collect()));

    // Snapshot of 100 entries with whole-run and current-window percentiles.
    let wide = Stats::default();
    let finished_at = Instant::now();
    for i in 0..100_000 {
        let name = format!("/endpoint/{}", i % 100);
        wide.record(&sample(&name, None, finished_at));
    }
    wide.collect_final(Duration::from_secs(1));
    group.bench_function("snapshot_100_entries", |b| {
        b.iter(|| black_box(wide.snapshot()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = record, aggregate
}
criterion_main!(benches);
