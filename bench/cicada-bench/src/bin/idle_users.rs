//! Memory benchmark: users that sit idle for an hour, after zero or one request.
//!
//! With `BENCH_IDLE_REQUEST=1` in the environment each user sends one `GET /` (and so keeps one kept-alive
//! connection in its pool); otherwise it sends nothing and holds no connection. After that the user waits
//! `constant(3600)`. `bench/run.sh` reads the process's `VmRSS` once the log says `all N users spawned` (and, with
//! requests, once the stats show N requests), then stops it.
//!
//! ```text
//! BENCH_IDLE_REQUEST=1 target/release/idle_users --headless --only-summary -H http://127.0.0.1:PORT \
//!     -u 10000 -r 1000000 -t 120s
//! ```

use cicada::prelude::*;

async fn one_request(user: &mut User) -> TaskResult {
    user.get("/").send().await?;
    Ok(())
}

async fn nothing(_user: &mut User) -> TaskResult {
    Ok(())
}

fn main() -> std::process::ExitCode {
    let request = std::env::var("BENCH_IDLE_REQUEST").is_ok_and(|v| v == "1");
    let user_type = UserType::<()>::new("Idle")
        .wait_time(constant(3600.0))
        .client_options(cicada_bench::client_options_from_env());
    let user_type = if request {
        user_type.task(one_request)
    } else {
        user_type.task(nothing)
    };
    Cicada::new().user(user_type).run()
}
