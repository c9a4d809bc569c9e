//! The open model: checkouts *arrive* at a rate, whatever the response times, beside browsing users that loop.
//!
//! ```text
//! cargo run --example arrival_rate -- --headless -u 5 -t 30s
//! cargo run --example arrival_rate -- --headless -u 5 -t 30s --arrival-rate 40 --max-concurrent 4
//! ```
//!
//! Without `-H` the built-in demo target runs on 127.0.0.1. Each checkout iteration takes a little over 200 ms (the
//! demo target's `/slow?ms=200`), so 20 iterations a second keep about 4 instances busy. At 40 a second with
//! `--max-concurrent 4`, about half of them find every instance busy and are dropped, which the summary and the
//! reports count.

use cicada::prelude::*;

/// A pooled checkout instance's own state: it logs in once (`on_start`) and keeps its session across iterations.
#[derive(Default)]
struct Checkout {
    name: String,
    orders: u64,
}

async fn log_in(user: &mut User<Checkout>) -> TaskResult {
    user.state.name = format!("buyer{}", user.id());
    let name = user.state.name.clone();
    user.post("/login")
        .form(&[("username", name.as_str()), ("password", "secret")])
        .send()
        .await?;
    Ok(())
}

/// One iteration: look at the account, then a slow checkout call.
async fn checkout(user: &mut User<Checkout>) -> TaskResult {
    user.get("/account").send().await?;
    user.get("/slow?ms=200").name("/checkout").send().await?;
    user.state.orders += 1;
    Ok(())
}

async fn browse(user: &mut User) -> TaskResult {
    user.get("/items").send().await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    Cicada::new()
        .user(
            UserType::<()>::new("Browser")
                .wait_time(between(0.5, 1.0))
                .task(browse),
        )
        .user(
            UserType::<Checkout>::new("Checkout")
                // 20 checkouts a second, at most 20 running at once; two instances log in before the start.
                .arrival_rate(
                    ArrivalRate::constant(20.0)
                        .max_concurrent(20)
                        .pre_allocated(2),
                )
                .on_start(log_in)
                .task(checkout),
        )
        .run()
}
