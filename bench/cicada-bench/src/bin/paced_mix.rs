//! Realistic-pacing benchmark: the quickstart's mix (`/`, `/items/[id]` three times as often, `/slow`), each user
//! waiting `between(0.5, 1.5)` seconds after every task.
//!
//! Run by `bench/run.sh --only paced` against nginx (which answers every path at once), beside Locust
//! FastHttpUser with the same mix and pacing (`bench/locust_paced.py`); what is compared is CPU per request at
//! about 500 requests per second, where the cost of waking up for each request dominates:
//!
//! ```text
//! taskset -c 0 target/release/paced_mix --headless --only-summary -H http://127.0.0.1:PORT -u 500 -r 1000 \
//!     -t 30s --report-json out.json
//! ```

use cicada::prelude::*;

async fn index(user: &mut User) -> TaskResult {
    user.get("/").send().await?;
    Ok(())
}

async fn view_item(user: &mut User) -> TaskResult {
    let id = user.rng().u32(1..=10_000);
    user.get(&format!("/items/{id}"))
        .name("/items/[id]")
        .send()
        .await?;
    Ok(())
}

async fn slow_page(user: &mut User) -> TaskResult {
    user.get("/slow?ms=50").name("/slow").send().await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    Cicada::new()
        .user(
            UserType::<()>::new("Visitor")
                .wait_time(between(0.5, 1.5))
                .task(index)
                .task(Task::new(view_item).weight(3))
                .task(slow_page),
        )
        .run()
}
