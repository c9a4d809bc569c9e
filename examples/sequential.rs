//! A sequential task set: a checkout that always runs in the same order, nested in a browsing user.
//!
//! ```text
//! cargo run --example sequential -- --headless -u 10 -r 10 -t 15s
//! ```

use cicada::prelude::*;

async fn browse(user: &mut User) -> TaskResult {
    user.get("/items").send().await?;
    Ok(())
}

async fn open_item(user: &mut User) -> TaskResult {
    user.get("/items/42").name("/items/[id]").send().await?;
    Ok(())
}

async fn add_to_cart(user: &mut User) -> TaskResult {
    user.post("/cart")
        .json(&serde_json::json!({ "item": 42 }))
        .send()
        .await?;
    Ok(())
}

async fn pay(user: &mut User) -> TaskResult {
    user.get("/slow?ms=100").name("/pay").send().await?;
    Ok(())
}

/// Checkout done: back to browsing without waiting.
async fn done(_user: &mut User) -> TaskResult {
    interrupt(true)
}

fn main() -> std::process::ExitCode {
    let checkout = TaskSet::sequential("checkout")
        .wait_time(constant(0.1))
        .task(open_item)
        .task(add_to_cart)
        .task(pay)
        .task(done);
    Cicada::new()
        .user(
            UserType::<()>::new("Shopper")
                .wait_time(between(0.2, 0.6))
                .task(Task::new(browse).weight(3))
                .task(checkout),
        )
        .run()
}
