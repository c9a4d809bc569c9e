//! Throughput benchmark: one user type with one task, `GET /`, no wait time.
//!
//! Run by `bench/run.sh` against nginx's `return 200`, like `wrk -c50`:
//!
//! ```text
//! taskset -c 0 target/release/get_root --headless --only-summary -H http://127.0.0.1:PORT -u 50 -r 1000 -t 10s \
//!     --report-json out.json
//! ```
//!
//! Per-name stats and percentiles stay on (the default), as in a real test.

use cicada::prelude::*;

async fn get_root(user: &mut User) -> TaskResult {
    user.get("/").send().await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    Cicada::new()
        .user(
            UserType::<()>::new("GetRoot")
                .client_options(cicada_bench::client_options_from_env())
                .task(get_root),
        )
        .run()
}
