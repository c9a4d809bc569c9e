//! Cluster benchmark, worker side: many simulated workers in one process, to measure what a real master
//! (`cluster_master`) costs with 1,000 workers without running 1,000 worker processes.
//!
//! ```text
//! taskset -c 0 target/release/cluster_sim_workers --master-port PORT --workers 1000 [--distinct 50]
//!     [--requests-per-name 50] [--max-seconds 180]
//! ```
//!
//! Each simulated worker is one `cicada_cluster::WorkerClient` session on a shared multi-thread tokio runtime
//! (`dedicated_thread: false`), attached with the identity of the same test (`Cicada::cluster_identity` of
//! [`cicada_bench::cluster_test`]) and cicada's version, so the master accepts it as it would a real worker. It
//! behaves as a worker towards the master: a spawn command sets its heartbeat to `Running` with the users it was
//! given and follows the master's statistics epoch (the spawn settings); from then on it sends one statistics
//! delta a second (its own phase, so the workers do not all send in the same instant) until a stop, which it
//! answers like a worker (a last delta, `Stopped`); a quit ends its session. It runs no users: the deltas are
//! real `cicada_stats::StatsDelta`s, built every second by one thread from `--distinct` `Stats` (20 names,
//! `--requests-per-name` samples per name, response times log-uniform over 0.3 to 400 ms, 2% failures), encoded
//! with postcard as cicada's workers encode them, and handed out round robin (worker `i` sends delta
//! `i mod distinct` of the current second). The master decodes and merges each as it would any worker's; only
//! the simulator saves the cost of recording 1,000 × 1,000 samples a second.
//!
//! At the end it prints one line `SIM {json}`: workers, deltas and requests sent (the master's report must count
//! exactly those requests when every session was flushed), refusals, reconnects, and the CPU the delta builder
//! used, so that the simulator's own cost can be told from its sessions'.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cicada::stats::{Sample, Stats};
use cicada_bench::{CLUSTER_NAMES, cluster_name};
use cicada_cluster::{
    Command, TestIdentity, WorkerClient, WorkerConfig, WorkerEvent, WorkerHandle, WorkerState,
    WorkerStatus,
};
use tokio::sync::watch;

/// Longest run allowed (`--max-seconds`), so that a master that never says quit cannot keep it alive.
const MAX_SECONDS_LIMIT: u64 = 3_600;
/// Bound on the simulated workers: the open-file limit of the machine (20,000) holds one socket per session.
const MAX_WORKERS: usize = 10_000;
/// How long a quitting session waits for the master to acknowledge its last deltas.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy)]
struct Args {
    master_port: u16,
    workers: usize,
    distinct: usize,
    requests_per_name: u64,
    max_seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        master_port: 0,
        workers: 1_000,
        distinct: 50,
        requests_per_name: 50,
        max_seconds: 180,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let mut value = |what: &str| {
            iter.next()
                .ok_or_else(|| format!("{flag} needs a value ({what})"))
        };
        let number = |text: String| -> Result<u64, String> {
            text.parse()
                .map_err(|_| format!("{flag}: {text:?} is not a whole number"))
        };
        match flag.as_str() {
            "--master-port" => {
                args.master_port = u16::try_from(number(value("a port")?)?)
                    .map_err(|_| "--master-port must be 1..65535".to_string())?;
            }
            "--workers" => args.workers = number(value("a count")?)? as usize,
            "--distinct" => args.distinct = number(value("a count")?)? as usize,
            "--requests-per-name" => args.requests_per_name = number(value("a count")?)?,
            "--max-seconds" => args.max_seconds = number(value("seconds")?)?,
            "-h" | "--help" => {
                return Err(
                    "usage: cluster_sim_workers --master-port PORT [--workers N] [--distinct K] \
                            [--requests-per-name R] [--max-seconds S]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if args.master_port == 0 {
        return Err("--master-port is required: the port the master listens on for workers".into());
    }
    if args.workers == 0 || args.workers > MAX_WORKERS {
        return Err(format!("--workers must be 1..={MAX_WORKERS}"));
    }
    if args.distinct == 0 {
        return Err("--distinct must be at least 1".into());
    }
    // More distinct deltas than workers would be built and never sent.
    args.distinct = args.distinct.min(args.workers);
    if args.requests_per_name == 0 || args.requests_per_name > 10_000 {
        return Err("--requests-per-name must be 1..=10000".into());
    }
    if args.max_seconds == 0 || args.max_seconds > MAX_SECONDS_LIMIT {
        return Err(format!("--max-seconds must be 1..={MAX_SECONDS_LIMIT}"));
    }
    Ok(args)
}

/// One second of deltas, encoded, for the workers to send.
struct DeltaPool {
    /// Counts up every second; a worker sends each generation once.
    generation: u64,
    /// The statistics epoch the deltas belong to.
    epoch: u64,
    /// `distinct` encoded deltas and the requests each holds.
    deltas: Vec<(Bytes, u64)>,
}

/// Totals over all simulated workers.
#[derive(Default)]
struct Totals {
    attached: AtomicU64,
    spawned: AtomicU64,
    deltas_sent: AtomicU64,
    requests_sent: AtomicU64,
    delta_bytes_sent: AtomicU64,
    generations_skipped: AtomicU64,
    send_errors: AtomicU64,
    refused: AtomicU64,
    left_after_stop: AtomicU64,
    flushed: AtomicU64,
    unacknowledged: AtomicU64,
    reconnects: AtomicU64,
    deltas_dropped: AtomicU64,
}

/// A xorshift generator: the deltas need spread, not quality.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Records one second of one simulated worker's requests (ending now) into `stats`.
fn record_one_second(stats: &Stats, names: &[String], requests_per_name: u64, random: &mut Random) {
    let end = Instant::now();
    for request in 0..requests_per_name {
        let age =
            Duration::from_micros((requests_per_name - request) * 1_000_000 / requests_per_name);
        let finished_at = end.checked_sub(age).unwrap_or(end);
        for name in names {
            // Log-uniform between 0.3 ms and 400 ms.
            let spread = (random.next() % 1_000_000) as f64 / 1_000_000.0;
            let micros = (300.0 * (400_000.0f64 / 300.0).powf(spread)) as u64;
            let error = random
                .next()
                .is_multiple_of(50)
                .then_some("HTTP 503: Service Unavailable");
            stats.record(&Sample {
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

/// The delta builder: every second, one fresh delta per `Stats`, at the master's current epoch. Returns the
/// CPU time it used (its thread's).
fn build_deltas(
    args: &Args,
    epoch: &AtomicU64,
    stop: &AtomicBool,
    publish: &watch::Sender<Arc<DeltaPool>>,
) -> Duration {
    let names: Vec<String> = (0..CLUSTER_NAMES).map(cluster_name).collect();
    let mut random = Random(0x2545_f491_4f6c_dd1d);
    let stats: Vec<Stats> = (0..args.distinct).map(|_| Stats::default()).collect();
    let mut current_epoch = 0;
    for one in &stats {
        // The first take starts the tracking, as a worker does: every later delta is complete.
        let _ = one.take_delta();
    }
    let mut busy = Duration::ZERO;
    let mut next = Instant::now() + Duration::from_secs(1);
    let mut generation = 0;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += Duration::from_secs(1);
        let started = Instant::now();
        let wanted = epoch.load(Ordering::Relaxed);
        if wanted != current_epoch {
            for one in &stats {
                one.reset_to_epoch(wanted);
            }
            current_epoch = wanted;
        }
        let mut deltas = Vec::with_capacity(stats.len());
        for one in &stats {
            record_one_second(one, &names, args.requests_per_name, &mut random);
            let delta = one.take_delta();
            let requests = delta.num_requests();
            // Exactly as crates/cicada/src/cluster/mod.rs `encode_delta` does.
            match postcard::to_allocvec(&delta) {
                Ok(bytes) => deltas.push((Bytes::from(bytes), requests)),
                Err(error) => eprintln!("cluster_sim_workers: cannot encode a delta: {error}"),
            }
        }
        generation += 1;
        publish.send_replace(Arc::new(DeltaPool {
            generation,
            epoch: current_epoch,
            deltas,
        }));
        busy += started.elapsed();
    }
    busy
}

/// Reads the master's statistics epoch from a spawn command's settings (cicada's `SpawnSettings`, JSON).
fn spawn_epoch(settings: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(settings)
        .ok()
        .and_then(|value| value.get("epoch").and_then(serde_json::Value::as_u64))
        .unwrap_or(0)
}

struct Simulated {
    index: usize,
    handle: WorkerHandle,
    events: tokio::sync::mpsc::Receiver<WorkerEvent>,
    pool: watch::Receiver<Arc<DeltaPool>>,
    epoch: Arc<AtomicU64>,
    totals: Arc<Totals>,
    last_generation: u64,
}

impl Simulated {
    /// Sends this second's delta, once per generation, when it belongs to the master's epoch.
    fn send_delta(&mut self) {
        let pool = Arc::clone(&self.pool.borrow());
        if pool.generation == self.last_generation
            || pool.epoch != self.epoch.load(Ordering::Relaxed)
            || pool.deltas.is_empty()
        {
            self.totals
                .generations_skipped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.last_generation = pool.generation;
        let (payload, requests) = &pool.deltas[self.index % pool.deltas.len()];
        let bytes = payload.len() as u64;
        match self.handle.send_delta(payload.clone()) {
            Ok(_) => {
                self.totals.deltas_sent.fetch_add(1, Ordering::Relaxed);
                self.totals
                    .requests_sent
                    .fetch_add(*requests, Ordering::Relaxed);
                self.totals
                    .delta_bytes_sent
                    .fetch_add(bytes, Ordering::Relaxed);
            }
            Err(error) => {
                self.totals.send_errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("cluster_sim_workers: worker {}: {error}", self.index);
            }
        }
    }

    fn set_status(&self, state: WorkerState, user_count: u64) {
        self.handle.set_status(WorkerStatus {
            state,
            user_count,
            ..WorkerStatus::default()
        });
    }

    async fn run(mut self, deadline: tokio::time::Instant) {
        // Each worker ticks at its own phase within the second, as independent processes would.
        let phase = Duration::from_millis((self.index as u64 * 7_919) % 1_000);
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + phase, Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut running = false;
        let mut stopped = false;
        loop {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(WorkerEvent::Connected { resumed, .. }) => {
                        if !resumed {
                            self.totals.attached.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(WorkerEvent::Command { command: Command::Spawn(spawn), .. }) => {
                        self.epoch.store(spawn_epoch(&spawn.settings), Ordering::Relaxed);
                        let users: u64 = spawn.users_by_type.values().sum();
                        self.set_status(WorkerState::Running, users);
                        if !running {
                            self.totals.spawned.fetch_add(1, Ordering::Relaxed);
                        }
                        running = true;
                        stopped = false;
                    }
                    Some(WorkerEvent::Command { command: Command::Stop, .. }) => {
                        if running {
                            self.send_delta();
                        }
                        running = false;
                        stopped = true;
                        self.set_status(WorkerState::Stopped, 0);
                        self.handle.stopped();
                    }
                    Some(WorkerEvent::Command { command: Command::Quit, .. }) => break,
                    Some(WorkerEvent::Refused(refusal)) => {
                        self.totals.refused.fetch_add(1, Ordering::Relaxed);
                        eprintln!("cluster_sim_workers: worker {} refused: {refusal}", self.index);
                        break;
                    }
                    Some(WorkerEvent::MasterLost { .. }) | None => break,
                    // A master that ends its run may close the sessions right after its quit command, before
                    // that command is written: a stopped worker whose master leaves is done, as if told to quit.
                    Some(WorkerEvent::Disconnected { .. }) if stopped => {
                        self.totals.left_after_stop.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Some(WorkerEvent::Disconnected { .. } | WorkerEvent::Custom { .. }) => {}
                },
                _ = tick.tick() => {
                    if running {
                        self.send_delta();
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    eprintln!("cluster_sim_workers: worker {}: --max-seconds reached", self.index);
                    break;
                }
            }
        }
        let report = self.handle.shutdown(FLUSH_TIMEOUT).await;
        let counters = self.handle.counters();
        let totals = &self.totals;
        if report.flushed {
            totals.flushed.fetch_add(1, Ordering::Relaxed);
        }
        totals
            .unacknowledged
            .fetch_add(report.unacknowledged as u64, Ordering::Relaxed);
        totals
            .reconnects
            .fetch_add(counters.reconnects, Ordering::Relaxed);
        totals
            .deltas_dropped
            .fetch_add(counters.deltas_dropped, Ordering::Relaxed);
    }
}

/// This thread's CPU time (user + system).
fn thread_cpu_time() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): utime and stime are the 12th and 13th.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields
        .get(11..13)
        .map(|pair| pair.iter().filter_map(|f| f.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // The kernel's USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("cluster_sim_workers: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let (fingerprint, summary) = cicada_bench::cluster_test().cluster_identity();
    let identity = TestIdentity::new(fingerprint, summary);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cluster_sim_workers: cannot start the runtime: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    let totals = Arc::new(Totals::default());
    let epoch = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (publish, pool) = watch::channel(Arc::new(DeltaPool {
        generation: 0,
        epoch: 0,
        deltas: Vec::new(),
    }));
    let builder = {
        let (epoch, stop) = (Arc::clone(&epoch), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("delta-builder".into())
            .spawn(move || {
                let cpu_before = thread_cpu_time();
                let busy = build_deltas(&args, &epoch, &stop, &publish);
                (thread_cpu_time().saturating_sub(cpu_before), busy)
            })
    };
    let builder = match builder {
        Ok(builder) => builder,
        Err(error) => {
            eprintln!("cluster_sim_workers: cannot start the delta builder: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    let started = Instant::now();
    let workers = args.workers;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.max_seconds);
    let code = runtime.block_on(async {
        let mut sessions = tokio::task::JoinSet::new();
        for index in 0..workers {
            let config = WorkerConfig {
                master_port: args.master_port,
                worker_id: Some(format!("sim-{index:05}")),
                hostname: Some("sim".into()),
                version: env!("CARGO_PKG_VERSION").to_string(),
                test: identity.clone(),
                dedicated_thread: false,
                ..WorkerConfig::default()
            };
            let (handle, events) = match WorkerClient::start(config) {
                Ok(started) => started,
                Err(error) => {
                    eprintln!("cluster_sim_workers: worker {index} cannot start: {error}");
                    return 1u8;
                }
            };
            sessions.spawn(
                Simulated {
                    index,
                    handle,
                    events,
                    pool: pool.clone(),
                    epoch: Arc::clone(&epoch),
                    totals: Arc::clone(&totals),
                    last_generation: 0,
                }
                .run(deadline),
            );
        }
        let mut progress = tokio::time::interval(Duration::from_secs(5));
        progress.tick().await;
        loop {
            tokio::select! {
                done = sessions.join_next() => if done.is_none() { break },
                _ = progress.tick() => eprintln!(
                    "cluster_sim_workers: {:.0} s: {} attached, {} spawned, {} deltas sent",
                    started.elapsed().as_secs_f64(),
                    totals.attached.load(Ordering::Relaxed),
                    totals.spawned.load(Ordering::Relaxed),
                    totals.deltas_sent.load(Ordering::Relaxed),
                ),
            }
        }
        0u8
    });
    stop.store(true, Ordering::Relaxed);
    let (builder_cpu, builder_busy) = builder.join().unwrap_or_default();
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let summary = serde_json::json!({
        "workers": workers,
        "attached": load(&totals.attached),
        "spawned": load(&totals.spawned),
        "refused": load(&totals.refused),
        "left_after_stop": load(&totals.left_after_stop),
        "flushed": load(&totals.flushed),
        "unacknowledged": load(&totals.unacknowledged),
        "reconnects": load(&totals.reconnects),
        "deltas_dropped": load(&totals.deltas_dropped),
        "deltas_sent": load(&totals.deltas_sent),
        "requests_sent": load(&totals.requests_sent),
        "delta_bytes_sent": load(&totals.delta_bytes_sent),
        "generations_skipped": load(&totals.generations_skipped),
        "send_errors": load(&totals.send_errors),
        "builder_cpu_s": builder_cpu.as_secs_f64(),
        "builder_busy_s": builder_busy.as_secs_f64(),
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    println!("SIM {summary}");
    std::process::ExitCode::from(code)
}
