//! Watch the resource guard protect a run: user types that starve the generator on purpose.
//!
//! - `CpuBurner`: every task burns CPU for 10 ms, then waits 100 ms. Twenty of them want about two cores.
//! - `MemoryHog`: every 250 ms each user keeps another 2 MiB, touched, so resident memory grows by 8 MiB/s per user.
//! - `UrlFlood`: records one million requests, each under a new name (a unique-URL flood), to show the name cap.
//! - `Sleeper`: sends nothing; each task sleeps `GUARD_DEMO_SLEEP_MS` (default 0), then the user waits a second.
//!   Millions of them show the guard pausing a spawn that does not fit in memory.
//! - `MemorySpike`: requests `/` every 50 ms; once, 2 s in, the first user holds `GUARD_DEMO_SPIKE_MIB` (default 256)
//!   MiB for about 1.5 s and sends two slow requests (`/slow?ms=400`, the demo target's) meanwhile. With
//!   `--max-memory` under the spike, the guard marks those seconds saturated, and pass/fail checks leave them out:
//!   `--check 'max<300ms'` passes on what the healthy seconds measured.
//!
//! The first two stop misbehaving after `GUARD_DEMO_SECONDS` (default 20) and then only wait, so you can see the guard
//! shed users while the generator is starved and ramp back once it recovers:
//!
//! ```text
//! cargo run --release --example guard_demo -- --headless -u 20 -r 20 -t 60s --max-cpu 50 CpuBurner
//! MALLOC_MMAP_THRESHOLD_=1048576 cargo run --release --example guard_demo -- --headless -u 10 -r 10 -t 30s \
//!     --max-memory 300MiB MemoryHog
//! ```
//!
//! (The glibc setting makes the hogs' chunks go back to the system as soon as a shed user frees them; without it,
//! glibc may keep freed memory for reuse and resident memory falls more slowly.)

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cicada::prelude::*;

/// When the test binary started; misbehaviour stops `GUARD_DEMO_SECONDS` later.
static STARTED: OnceLock<Instant> = OnceLock::new();

fn misbehaving() -> bool {
    let seconds = std::env::var("GUARD_DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    STARTED.get_or_init(Instant::now).elapsed() < Duration::from_secs(seconds)
}

async fn burn(_user: &mut User) -> TaskResult {
    if misbehaving() {
        let until = Instant::now() + Duration::from_millis(10);
        let mut spin = 0u64;
        while Instant::now() < until {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
    }
    Ok(())
}

/// Memory a hog keeps per task.
const CHUNK: usize = 2 << 20;

async fn hog(user: &mut User<Vec<Vec<u8>>>) -> TaskResult {
    if misbehaving() {
        // Filled, so the pages are really resident.
        user.state.push(vec![1u8; CHUNK]);
    } else {
        user.state.clear();
    }
    Ok(())
}

/// Distinct names recorded so far by all `UrlFlood` users; the flood stops at one million.
static FLOODED: AtomicU64 = AtomicU64::new(0);

async fn flood(user: &mut User<u64>) -> TaskResult {
    if FLOODED.fetch_add(1_000, Ordering::Relaxed) < 1_000_000 {
        for _ in 0..1_000 {
            user.state += 1;
            let name = format!("/unique/{}/{}", user.id(), user.state);
            user.record("GET", &name, Duration::from_micros(50), 0, None);
        }
    }
    Ok(())
}

async fn wait_a_moment(_user: &mut User<u64>) -> TaskResult {
    // Lets the first history point see the process before the flood.
    cicada::tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(())
}

/// Whether a `MemorySpike` user already spiked (once per run).
static SPIKED: AtomicU64 = AtomicU64::new(0);

async fn spike(user: &mut User) -> TaskResult {
    let due = STARTED.get_or_init(Instant::now).elapsed() >= Duration::from_secs(2);
    if due && SPIKED.fetch_add(1, Ordering::Relaxed) == 0 {
        let mib: usize = std::env::var("GUARD_DEMO_SPIKE_MIB")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(256);
        // Filled, so the pages are really resident.
        let held = std::hint::black_box(vec![1u8; mib << 20]);
        // The guard reads memory many times a second: let it see the spike before the slow requests start.
        cicada::tokio::time::sleep(Duration::from_millis(500)).await;
        for _ in 0..2 {
            user.get("/slow?ms=400").name("/").send().await?;
        }
        cicada::tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
        return Ok(());
    }
    user.get("/").send().await?;
    Ok(())
}

async fn doze(_user: &mut User) -> TaskResult {
    let millis = std::env::var("GUARD_DEMO_SLEEP_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if millis > 0 {
        cicada::tokio::time::sleep(Duration::from_millis(millis)).await;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    STARTED.get_or_init(Instant::now);
    Cicada::new()
        .user(
            UserType::<()>::new("CpuBurner")
                .host("http://127.0.0.1")
                .wait_time(constant(0.1))
                .task(burn),
        )
        .user(
            UserType::<Vec<Vec<u8>>>::new("MemoryHog")
                .host("http://127.0.0.1")
                .wait_time(constant(0.25))
                .task(hog),
        )
        .user(
            UserType::<u64>::new("UrlFlood")
                .host("http://127.0.0.1")
                .on_start(wait_a_moment)
                .task(flood),
        )
        .user(
            // Its host is the run's (`-H`): the demo target's `/slow` makes the slow requests.
            UserType::<()>::new("MemorySpike")
                .wait_time(constant(0.05))
                .task(spike),
        )
        .user(
            UserType::<()>::new("Sleeper")
                .host("http://127.0.0.1")
                .wait_time(constant(1.0))
                .task(doze),
        )
        .run()
}
