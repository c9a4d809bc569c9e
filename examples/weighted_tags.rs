//! Two user types with different weights, and tasks tagged for `--tags` / `--exclude-tags`.
//!
//! ```text
//! cargo run --example weighted_tags -- --show-task-ratio
//! cargo run --example weighted_tags -- --headless -u 20 -r 20 -t 10s --tags browse
//! cargo run --example weighted_tags -- --headless -u 20 -r 20 -t 10s --exclude-tags slow Buyer
//! ```

use cicada::prelude::*;

async fn home(user: &mut User) -> TaskResult {
    user.get("/").send().await?;
    Ok(())
}

async fn item(user: &mut User) -> TaskResult {
    let id = user.rng().u32(1..=100);
    user.get(&format!("/items/{id}"))
        .name("/items/[id]")
        .send()
        .await?;
    Ok(())
}

async fn slow(user: &mut User) -> TaskResult {
    user.get("/slow?ms=200").name("/slow").send().await?;
    Ok(())
}

async fn add_to_cart(user: &mut User) -> TaskResult {
    let id = user.rng().u32(1..=100);
    user.post("/cart")
        .json(&serde_json::json!({ "item": id, "quantity": 1 }))
        .send()
        .await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    Cicada::new()
        .user(
            UserType::<()>::new("Browser")
                .weight(3)
                .wait_time(between(0.1, 0.5))
                .task(Task::new(home).tag("browse"))
                .task(Task::new(item).weight(4).tag("browse"))
                .task(Task::new(slow).tag("slow")),
        )
        .user(
            UserType::<()>::new("Buyer")
                .weight(1)
                .wait_time(constant(0.5))
                .task(Task::new(item).weight(2).tag("browse"))
                .task(Task::new(add_to_cart).tag("buy")),
        )
        .run()
}
