//! A load shape: ramp to 20 users, hold, spike to 60, come back down, then end the test.
//!
//! ```text
//! cargo run --example custom_shape -- --headless
//! ```

use std::time::Duration;

use cicada::prelude::*;

async fn index(user: &mut User) -> TaskResult {
    user.get("/").send().await?;
    Ok(())
}

/// Stages of (until second, users, spawn rate).
struct Stages(Vec<(u64, u64, f64)>);

impl LoadShape for Stages {
    fn tick(&mut self, run_time: Duration) -> Option<Target> {
        let (_, users, spawn_rate) = self
            .0
            .iter()
            .find(|(until, _, _)| run_time.as_secs() < *until)?;
        Some(Target {
            users: *users,
            spawn_rate: *spawn_rate,
            user_types: None,
        })
    }
}

fn main() -> std::process::ExitCode {
    Cicada::new()
        .user(
            UserType::<()>::new("Visitor")
                .wait_time(constant(0.5))
                .task(index),
        )
        .shape(Stages(vec![(10, 20, 5.0), (20, 60, 20.0), (30, 10, 10.0)]))
        .run()
}
