//! Test data: items handed out in order, each once across the whole cluster, and a CSV file each process cycles
//! through on its own.
//!
//! - `Buyer` takes the next product of `examples/data/products.jsonl` (200 lines) and views it: every product is
//!   viewed exactly once, by one user of one worker; when none is left the buyer stops (`WhenExhausted::StopUser`).
//! - `Browser` walks through categories that start over when the last was seen (`WhenExhausted::Cycle`).
//! - `Member` logs in with an account of `examples/data/accounts.csv`, read by each process (`CsvCycle`).
//!
//! ```text
//! cargo run --example test_data -- --headless -u 10 -r 10 -t 20s
//! cargo run --example test_data -- --headless -u 10 -r 10 -t 20s --processes 2     # a master and 2 workers
//! cargo run --example test_data -- --headless -u 5 -r 5 -t 10s Buyer               # only the buyers
//! ```

use std::process::ExitCode;

use cicada::prelude::*;
use serde::Deserialize;

/// The example's data files, wherever it is run from.
const DATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/data");

/// A line of `products.jsonl`.
#[derive(Debug, Deserialize)]
struct Product {
    id: u64,
    category: String,
}

/// A row of `accounts.csv`, decoded by column name.
#[derive(Debug, Clone, Default, Deserialize)]
struct Account {
    username: String,
    password: String,
    plan: String,
}

async fn buy(user: &mut User) -> TaskResult {
    // No product left: the `?` stops this buyer.
    let product: Product = user.next_item("products").await?;
    user.get(&format!("/items/{}", product.id))
        .name("/items/[id]")
        .query(&[("category", product.category.as_str())])
        .send()
        .await?;
    Ok(())
}

async fn browse(user: &mut User) -> TaskResult {
    let category: String = user.next_item("categories").await?;
    user.get("/items")
        .query(&[("category", category.as_str())])
        .send()
        .await?;
    Ok(())
}

async fn log_in(user: &mut User<Account>) -> TaskResult {
    let form = [
        ("username", user.state.username.clone()),
        ("password", user.state.password.clone()),
    ];
    user.post("/login").form(&form).send().await?;
    Ok(())
}

async fn view_account(user: &mut User<Account>) -> TaskResult {
    let name = if user.state.plan == "gold" {
        "/account (gold)"
    } else {
        "/account"
    };
    user.get("/account").name(name).send().await?;
    Ok(())
}

fn main() -> ExitCode {
    // Opened (and checked whole) before anything else: a malformed row is an error naming its line.
    let accounts = match CsvCycle::<Account>::open(format!("{DATA_DIR}/accounts.csv")) {
        Ok(accounts) => accounts,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(cicada::EXIT_USAGE);
        }
    };
    Cicada::new()
        .data_source(
            "products",
            DataSource::json_lines(format!("{DATA_DIR}/products.jsonl")).batch_size(16),
        )
        .data_source(
            "categories",
            DataSource::iter(["books", "music", "games", "garden", "kitchen"])
                .when_exhausted(WhenExhausted::Cycle),
        )
        .user(
            UserType::<()>::new("Buyer")
                .weight(2)
                .wait_time(between(0.05, 0.1))
                .task(buy),
        )
        .user(
            UserType::<()>::new("Browser")
                .wait_time(between(0.5, 1.0))
                .task(browse),
        )
        .user(
            UserType::with_state("Member", move || accounts.next().clone())
                .wait_time(between(0.5, 1.0))
                .on_start(log_in)
                .task(view_account),
        )
        .run()
}
