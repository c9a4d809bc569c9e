//! Cluster benchmark, master side: the test of [`cicada_bench::cluster_test`] (one user type, 20 tasks), run by
//! `bench/cluster.sh` as the real master that `cluster_sim_workers` attaches its simulated workers to:
//!
//! ```text
//! taskset -c 1 target/release/cluster_master --master --headless --master-bind-port PORT --expect-workers 1000 \
//!     -u 1000 -r 1000 -t 60s --report-json out.json
//! ```

fn main() -> std::process::ExitCode {
    cicada_bench::cluster_test().run()
}
