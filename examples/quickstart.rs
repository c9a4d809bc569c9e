//! The quickstart: visitors browse the demo shop's home page and item pages.
//!
//! Run it against the built-in demo target (started in-process when no host is given):
//!
//! ```text
//! cargo run --release --example quickstart -- --headless -u 50 -r 10 -t 30s
//! ```
//!
//! or against your own server with `-H http://127.0.0.1:8080`.

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
