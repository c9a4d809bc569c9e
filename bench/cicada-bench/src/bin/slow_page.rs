//! Accuracy benchmark: 20 users request a page that the server delays by exactly 50 ms.
//!
//! `bench/run.sh` compares the recorded median and p99 of `/slow` with the true 50 ms, and the request count with
//! the count the server saw.
//!
//! ```text
//! target/release/slow_page --headless --only-summary -H http://127.0.0.1:PORT -u 20 -r 1000 -t 10s -s 5 \
//!     --report-json out.json
//! ```

use cicada::prelude::*;

async fn slow(user: &mut User) -> TaskResult {
    user.get("/slow?ms=50").name("/slow").send().await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    Cicada::new()
        .user(UserType::<()>::new("Slow").task(slow))
        .run()
}
