//! `--processes N`: workers of this same binary on this machine. The children get this process's arguments, less
//! the ones that make a master or more processes, plus `--worker` and the master's address; their output goes to
//! this process's stderr. They are this process's children: it ends them by pid when it ends, whatever the way.

use std::ffi::OsString;
use std::process::{Child, Command, Stdio};

/// Worker processes started by this one; dropping it ends those still running (SIGTERM, then SIGKILL).
pub(crate) struct LocalWorkers {
    children: Vec<Child>,
}

/// How many processes `--processes N` means: N, or one per core for -1.
pub(crate) fn count(requested: i64) -> Result<usize, String> {
    match requested {
        -1 => Ok(std::thread::available_parallelism().map_or(1, std::num::NonZero::get)),
        n if n >= 1 => usize::try_from(n).map_err(|_| format!("--processes {n} is too many")),
        n => Err(format!(
            "--processes {n}: give a number of worker processes (1 or more), or -1 for one per core"
        )),
    }
}

/// This process's arguments for a worker: without `--master`, `--worker`, `--processes`, `--master-host` and
/// `--master-port` (and their values), nor the master's metrics endpoint and exporter (the workers would all bind the
/// same port), then `--worker --master-host HOST --master-port PORT`.
fn worker_args(args: &[OsString], master_host: &str, master_port: u16) -> Vec<OsString> {
    const WITH_VALUE: [&str; 7] = [
        "--processes",
        "--master-host",
        "--master-port",
        "--metrics-port",
        "--metrics-host",
        "--otlp-endpoint",
        "--otlp-interval",
    ];
    const ALONE: [&str; 2] = ["--master", "--worker"];
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in args.iter().skip(1) {
        if skip_value {
            skip_value = false;
            continue;
        }
        let text = arg.to_string_lossy();
        if ALONE.contains(&text.as_ref()) {
            continue;
        }
        if WITH_VALUE.contains(&text.as_ref()) {
            skip_value = true;
            continue;
        }
        if WITH_VALUE
            .iter()
            .any(|flag| text.starts_with(&format!("{flag}=")))
        {
            continue;
        }
        out.push(arg.clone());
    }
    out.extend(
        [
            "--worker",
            "--master-host",
            master_host,
            "--master-port",
            &master_port.to_string(),
        ]
        .map(OsString::from),
    );
    out
}

impl LocalWorkers {
    /// Start `count` workers of this binary, attached to the master at `master_host:master_port`.
    pub(crate) fn start(
        count: usize,
        master_host: &str,
        master_port: u16,
    ) -> Result<LocalWorkers, String> {
        let exe = std::env::current_exe()
            .map_err(|error| format!("--processes: cannot find this program's path: {error}"))?;
        let args: Vec<OsString> = std::env::args_os().collect();
        let worker_args = worker_args(&args, master_host, master_port);
        let mut workers = LocalWorkers {
            children: Vec::with_capacity(count),
        };
        for _ in 0..count {
            let child = Command::new(&exe)
                .args(&worker_args)
                // Workers must not read options meant for the master from the environment.
                .env_remove("CICADA_MASTER")
                .env_remove("CICADA_PROCESSES")
                .env_remove("CICADA_METRICS_PORT")
                .env_remove("CICADA_OTLP_ENDPOINT")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|error| format!("--processes: cannot start a worker: {error}"))?;
            workers.children.push(child);
        }
        tracing::info!("started {count} local worker processes");
        Ok(workers)
    }

    /// Whether every worker has exited.
    pub(crate) fn all_exited(&mut self) -> bool {
        self.children
            .iter_mut()
            .all(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Wait (bounded) for the workers to exit by themselves, as they do after the master's quit.
    pub(crate) fn wait(&mut self, limit: std::time::Duration) {
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            if self
                .children
                .iter_mut()
                .all(|c| c.try_wait().ok().flatten().is_some())
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for LocalWorkers {
    fn drop(&mut self) {
        for child in &mut self.children {
            if child.try_wait().ok().flatten().is_none() {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
        }
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for child in &mut self.children {
            while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_arguments_drop_the_masters_flags() {
        let args: Vec<OsString> = [
            "test",
            "--master",
            "--processes",
            "4",
            "-u",
            "10",
            "--master-port=1",
            "--metrics-port",
            "9646",
            "--otlp-endpoint=http://127.0.0.1:4318",
            "--headless",
            "Shopper",
        ]
        .map(OsString::from)
        .to_vec();
        let out: Vec<String> = worker_args(&args, "127.0.0.1", 5600)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            out,
            [
                "-u",
                "10",
                "--headless",
                "Shopper",
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                "5600"
            ]
        );
        assert_eq!(count(3), Ok(3));
        assert!(count(-1).unwrap() >= 1);
        assert!(count(0).is_err());
    }
}
