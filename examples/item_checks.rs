//! Responses judged after the fact, and task errors that keep their cause.
//!
//! `catch_response` leaves the verdict to the task: it reads the item, and only then marks the request a success or
//! a failure. A page that is not an item at all is the task's own error: it is counted in the exceptions table with
//! its whole cause chain (`the item page did not parse: expected value at line 1 column 1`), and logged at most once
//! a second however often it happens.
//!
//! ```text
//! cargo run --example item_checks -- --headless -u 10 -r 5 -t 20s
//! RUST_BACKTRACE=1 cargo run --example item_checks -- --headless -u 2 -t 10s --csv run   # backtraces in run_exceptions.csv
//! ```

use std::fmt;

use cicada::prelude::*;

/// An item page whose body is not the JSON the test expects.
#[derive(Debug)]
struct ItemPageError {
    cause: serde_json::Error,
}

impl fmt::Display for ItemPageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the item page did not parse")
    }
}

impl std::error::Error for ItemPageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

#[derive(serde::Deserialize)]
struct Item {
    id: u64,
    price: f64,
}

async fn view_item(user: &mut User) -> TaskResult {
    let id = user.rng().u64(1..=100);
    let response = user
        .get(&format!("/items/{id}"))
        .name("/items/[id]")
        .catch_response()
        .send()
        .await?;
    // Returning here with `?` drops the response unjudged: it is recorded by its status.
    let item: Item = response.json().map_err(|cause| ItemPageError { cause })?;
    if item.id != id {
        response.failure(format!("asked for item {id}, got item {}", item.id));
    } else if item.price <= 0.0 {
        response.failure("an item without a price");
    } else {
        response.success();
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    Cicada::new()
        .user(
            UserType::<()>::new("Inspector")
                .wait_time(between(0.1, 0.5))
                .task(view_item),
        )
        .run()
}
