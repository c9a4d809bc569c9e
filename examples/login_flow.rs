//! Users log in once in `on_start`, keep their session cookie, and browse pages that need it.
//!
//! ```text
//! cargo run --example login_flow -- --headless -u 10 -r 5 -t 20s
//! ```

use cicada::prelude::*;

/// Each user's own state: who it is.
#[derive(Default)]
struct Member {
    name: String,
}

async fn log_in(user: &mut User<Member>) -> TaskResult {
    user.state.name = format!("member{}", user.id());
    let name = user.state.name.clone();
    user.post("/login")
        .form(&[("username", name.as_str()), ("password", "secret")])
        .send()
        .await?;
    // The session cookie is now in this user's own jar and goes with every later request.
    if user.client().cookie("session").is_none() {
        return Err(TaskError::msg("login did not set a session cookie"));
    }
    Ok(())
}

async fn account(user: &mut User<Member>) -> TaskResult {
    let expected = user.state.name.clone();
    user.get("/account")
        .check(move |response| {
            let body: serde_json::Value = response.json().map_err(|e| e.to_string())?;
            if body["user"] == expected.as_str() {
                Ok(())
            } else {
                Err(format!(
                    "logged in as {} instead of {expected}",
                    body["user"]
                ))
            }
        })
        .send()
        .await?;
    Ok(())
}

async fn browse(user: &mut User<Member>) -> TaskResult {
    user.get("/items").send().await?;
    Ok(())
}

async fn log_out(user: &mut User<Member>) -> TaskResult {
    user.post("/logout").send().await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    Cicada::new()
        .user(
            UserType::<Member>::new("Member")
                .wait_time(between(0.2, 0.8))
                .on_start(log_in)
                .on_stop(log_out)
                .task(Task::new(account).weight(2))
                .task(browse),
        )
        .run()
}
