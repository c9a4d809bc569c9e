//! Test definitions shared by the cicada-bench binaries. The cluster benchmark needs two processes that agree on
//! one test: `cluster_master` runs it as a real master, and `cluster_sim_workers` presents its identity
//! ([`cicada::Cicada::cluster_identity`]) when it attaches its simulated workers, so both build it here.

use cicada::prelude::*;

/// The request names the simulated workers report (20, as in `cicada-stats`' merge bench): one per task of
/// [`cluster_test`], so the master's statistics hold what a real worker of this test would send.
pub const CLUSTER_NAMES: usize = 20;

/// The name of the `index`-th request of the cluster test.
pub fn cluster_name(index: usize) -> String {
    format!("/api/v1/resource{index}/[id]")
}

async fn get_resource(user: &mut User, index: usize) -> TaskResult {
    user.get(&format!("/api/v1/resource{index}/1"))
        .name(cluster_name(index))
        .send()
        .await?;
    Ok(())
}

macro_rules! resource_tasks {
    ($($name:ident = $index:literal),* $(,)?) => {
        $(async fn $name(user: &mut User) -> TaskResult { get_resource(user, $index).await })*
        /// The tasks of [`cluster_test`], one per request name.
        fn with_resource_tasks(user_type: UserType<()>) -> UserType<()> {
            user_type$(.task(Task::new($name).weight($index + 1)))*
        }
    };
}

resource_tasks!(
    r0 = 0,
    r1 = 1,
    r2 = 2,
    r3 = 3,
    r4 = 4,
    r5 = 5,
    r6 = 6,
    r7 = 7,
    r8 = 8,
    r9 = 9,
    r10 = 10,
    r11 = 11,
    r12 = 12,
    r13 = 13,
    r14 = 14,
    r15 = 15,
    r16 = 16,
    r17 = 17,
    r18 = 18,
    r19 = 19,
);

/// The cluster benchmark's test: one user type, `ApiClient`, with 20 weighted tasks, each a `GET` of its own
/// request name, one second between tasks. The master never runs it (a master runs no users); it only has to
/// be the same test on both sides.
pub fn cluster_test() -> Cicada {
    Cicada::new().user(with_resource_tasks(
        UserType::<()>::new("ApiClient").wait_time(constant(1.0)),
    ))
}

/// Client options from the environment, for the TLS and HTTP/2 rows: `BENCH_HTTP=1` (HTTP/1.1 only) or `2`
/// (HTTP/2 only; otherwise ALPN decides), `BENCH_INSECURE_TLS=1` to accept the bench's self-signed certificate.
pub fn client_options_from_env() -> ClientOptions {
    let http = match std::env::var("BENCH_HTTP").as_deref() {
        Ok("1") => HttpVersion::Http1,
        Ok("2") => HttpVersion::Http2,
        _ => HttpVersion::Auto,
    };
    ClientOptions {
        http,
        insecure_tls: std::env::var("BENCH_INSECURE_TLS").is_ok_and(|v| v == "1"),
        ..ClientOptions::default()
    }
}
