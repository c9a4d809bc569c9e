//! CPU benchmark at a fixed request rate: one user type, `GET /`, each user paced at `BENCH_RATE` tasks per second
//! (default 100), so a compiled and a scripted run send the same requests per second and their CPU per request
//! compares the work per request, not how busy the generator was.
//!
//! Run by `bench/lua.sh` side by side with the same test in Lua:
//!
//! ```text
//! BENCH_RATE=100 taskset -c 0 target/release/paced_root --headless --only-summary -H http://127.0.0.1:PORT \
//!     -u 50 -r 1000 -t 10s --report-json out.json
//! ```

use cicada::prelude::*;

async fn get_root(user: &mut User) -> TaskResult {
    user.get("/").send().await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let rate = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|r| r.is_finite() && *r > 0.0)
        .unwrap_or(100.0);
    Cicada::new()
        .user(
            UserType::<()>::new("PacedRoot")
                .wait_time(constant_throughput(rate))
                .task(get_root),
        )
        .run()
}
