//! Options of a run: Locust's flags, `CICADA_<FLAG>` environment variables and a `--config` file.
//!
//! Precedence is the config file, then the environment, then the command line (the last one wins). Every mistake
//! is reported in one line naming the flag or key, and ends the process with exit code 2.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::checks::Check;
use crate::guard::{GuardMode, GuardSettings, MemoryLimit, parse_memory_limit};

/// Every option a test binary takes. Parsed once; read through [`crate::Environment::options`].
#[derive(Debug, Clone, Parser)]
#[command(
    name = "cicada",
    version,
    about = "A load test written with cicada.",
    long_about = "A load test written with cicada. Without -H/--host and without a host on the user types, the \
                  built-in demo target is started on 127.0.0.1 and the test runs against it.",
    args_override_self = true
)]
pub struct Options {
    /// Host to load test, e.g. http://127.0.0.1:8080 (user types may set their own).
    #[arg(short = 'H', long, env = "CICADA_HOST")]
    pub host: Option<String>,

    /// Peak number of concurrent users.
    #[arg(short = 'u', long, env = "CICADA_USERS", default_value_t = 1)]
    pub users: u64,

    /// Users started per second.
    #[arg(short = 'r', long, env = "CICADA_SPAWN_RATE", default_value_t = 1.0, value_parser = parse_rate)]
    pub spawn_rate: f64,

    /// Stop after this long, e.g. 90, 30s, 1h30m (default: run until stopped).
    #[arg(short = 't', long, env = "CICADA_RUN_TIME", value_parser = parse_duration)]
    pub run_time: Option<Duration>,

    /// Run without the web UI and start the test at once.
    #[arg(long, env = "CICADA_HEADLESS")]
    pub headless: bool,

    /// Run only tasks with one of these tags (comma-separated or repeated).
    #[arg(short = 'T', long, env = "CICADA_TAGS", value_delimiter = ',')]
    pub tags: Vec<String>,

    /// Never run tasks with one of these tags.
    #[arg(short = 'E', long, env = "CICADA_EXCLUDE_TAGS", value_delimiter = ',')]
    pub exclude_tags: Vec<String>,

    /// How long stopping users may take to finish their task before they are killed.
    #[arg(short = 's', long, env = "CICADA_STOP_TIMEOUT", default_value = "0", value_parser = parse_duration)]
    pub stop_timeout: Duration,

    /// Iterations started per second by every constant arrival-rate user type, replacing the rate in the test's
    /// code (ramping types keep their stages). -u does not apply to arrival-rate types.
    #[arg(long, env = "CICADA_ARRIVAL_RATE", value_parser = parse_arrival_rate)]
    pub arrival_rate: Option<f64>,

    /// The most iterations each arrival-rate user type runs at once (its pool of user instances), replacing the
    /// bound in the test's code (default 100); an iteration due while all are busy is dropped and counted.
    #[arg(long, env = "CICADA_MAX_CONCURRENT", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrent: Option<u32>,

    /// Write CSV files PREFIX_stats.csv, PREFIX_stats_history.csv, PREFIX_failures.csv, PREFIX_exceptions.csv.
    #[arg(long = "csv", env = "CICADA_CSV", value_name = "PREFIX")]
    pub csv_prefix: Option<PathBuf>,

    /// Also write a row per request name (not only the aggregate) into the history CSV.
    #[arg(long, env = "CICADA_CSV_FULL_HISTORY")]
    pub csv_full_history: bool,

    /// Write a self-contained HTML report (tables, charts, the guard's actions) to this file at the end.
    #[arg(long, env = "CICADA_HTML", value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Address the web UI listens on.
    #[arg(long, env = "CICADA_WEB_HOST", default_value = "127.0.0.1")]
    pub web_host: std::net::IpAddr,

    /// Port of the web UI (0 picks a free one; the log says which).
    #[arg(long, env = "CICADA_WEB_PORT", default_value_t = 8089)]
    pub web_port: u16,

    /// Basic authentication for the web UI: `user:password`, or `@FILE` holding it.
    #[arg(long, env = "CICADA_WEB_LOGIN", value_name = "USER:PASSWORD")]
    pub web_login: Option<String>,

    /// Another host name (or address) the web UI answers to, e.g. behind a proxy or under a DNS name: NAME (any
    /// port) or NAME:PORT; repeat it or separate names with commas. See docs/web-ui.md.
    #[arg(
        long = "web-allowed-host",
        env = "CICADA_WEB_ALLOWED_HOSTS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub web_allowed_hosts: Vec<String>,

    /// Serve the web UI over HTTPS with this certificate (PEM); needs --tls-key.
    #[arg(
        long,
        env = "CICADA_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) for --tls-cert.
    #[arg(
        long,
        env = "CICADA_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// With the web UI: start the test at once with -u and -r, as if the start form was sent.
    #[arg(long, env = "CICADA_AUTOSTART")]
    pub autostart: bool,

    /// With the web UI: quit this many seconds after the test stops (with --autostart and -t: a UI run that ends
    /// by itself).
    #[arg(long, env = "CICADA_AUTOQUIT", value_name = "SECONDS")]
    pub autoquit: Option<u64>,

    /// Print the final stats on stdout as Locust's JSON list (one object per request name), and nothing else: the
    /// tables go to stderr.
    #[arg(long, env = "CICADA_JSON")]
    pub json: bool,

    /// Write the final stats as Locust's JSON list to NAME.json (like Locust, `.json` is appended).
    #[arg(long, env = "CICADA_JSON_FILE", value_name = "NAME")]
    pub json_file: Option<PathBuf>,

    /// Write cicada's own JSON report to this file: the stats, their history, the resource guard's view of the
    /// generator, the paced users' schedule, the arrival-rate types' iterations and the checks.
    #[arg(long, env = "CICADA_REPORT_JSON", value_name = "FILE")]
    pub report_json: Option<PathBuf>,

    /// A check that decides the exit code, e.g. `p95<300ms`, `/items/[id]:p99<1s`, `fail_ratio<0.01`, `rps>200`,
    /// judged on the seconds the generator was not saturated; `max<2s abort` or `p95<300ms abort-after 1m` also
    /// stop the run early (see docs/ci.md); repeat it, or separate several with `;` (as `CICADA_CHECK` does).
    #[arg(
        long = "check",
        env = "CICADA_CHECK",
        value_name = "EXPR",
        value_delimiter = ';',
        value_parser = parse_check
    )]
    pub checks: Vec<Check>,

    /// Stop the test early, with every report, once a check can no longer pass (only `max<` and `min>` checks can
    /// be judged before the end; see docs/ci.md).
    #[arg(long, env = "CICADA_CHECK_ABORT")]
    pub check_abort: bool,

    /// Write the checks and the request names as JUnit XML test cases to this file at the end.
    #[arg(long, env = "CICADA_JUNIT", value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Serve Prometheus metrics at http://--metrics-host:PORT/metrics (0 picks a free port; the log says which).
    /// With the web UI, /metrics is also on the UI's port. See docs/metrics.md.
    #[arg(long, env = "CICADA_METRICS_PORT", value_name = "PORT")]
    pub metrics_port: Option<u16>,

    /// Address the --metrics-port endpoint listens on.
    #[arg(long, env = "CICADA_METRICS_HOST", default_value = "127.0.0.1")]
    pub metrics_host: std::net::IpAddr,

    /// Push the metrics to this OpenTelemetry collector (OTLP/HTTP, protobuf), e.g.
    /// http://127.0.0.1:4318/v1/metrics. See docs/metrics.md.
    #[arg(long, env = "CICADA_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// How often the metrics are pushed to --otlp-endpoint (and once more at the end).
    #[arg(long, env = "CICADA_OTLP_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub otlp_interval: Duration,

    /// Print the stats table every few seconds even when the web UI runs.
    #[arg(long, env = "CICADA_PRINT_STATS")]
    pub print_stats: bool,

    /// Print only the final summary, not the table every few seconds.
    #[arg(long, env = "CICADA_ONLY_SUMMARY")]
    pub only_summary: bool,

    /// Reset the stats once all users are spawned.
    #[arg(long, env = "CICADA_RESET_STATS")]
    pub reset_stats: bool,

    /// Exit code when a request failed or a task raised an error.
    #[arg(long, env = "CICADA_EXIT_CODE_ON_ERROR", default_value_t = 1)]
    pub exit_code_on_error: i32,

    /// Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.
    #[arg(short = 'L', long, env = "CICADA_LOGLEVEL", default_value = "INFO", value_parser = parse_log_level)]
    pub loglevel: tracing::Level,

    /// Write the log to this file instead of stderr.
    #[arg(long, env = "CICADA_LOGFILE", value_name = "FILE")]
    pub logfile: Option<PathBuf>,

    /// List the user types and exit.
    #[arg(short = 'l', long)]
    pub list: bool,

    /// Print the share of each user type and task and exit.
    #[arg(long)]
    pub show_task_ratio: bool,

    /// Read options from this TOML file (keys are long flag names, e.g. `users = 10`, `run-time = "30s"`).
    #[arg(long, env = "CICADA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Most distinct request names in the stats; more go to one overflow entry.
    #[arg(long, env = "CICADA_MAX_NAMES", default_value_t = 1_000)]
    pub max_names: usize,

    /// Most distinct failure and user-error groups; more go to one overflow group.
    #[arg(long, env = "CICADA_MAX_ERRORS", default_value_t = 1_000)]
    pub max_errors: usize,

    /// The resource guard: `protect` pauses spawning, sheds users and at worst stops the test when the generator
    /// runs out of CPU or memory; `warn` only warns and marks saturated windows; `off` does not monitor.
    #[arg(long, env = "CICADA_GUARD", value_enum, default_value_t = GuardMode::Protect)]
    pub guard: GuardMode,

    /// CPU the generator may use, in percent of the CPU available to it (cores and container quota).
    #[arg(long, env = "CICADA_MAX_CPU", default_value_t = 90.0, value_parser = parse_percent)]
    pub max_cpu: f64,

    /// Memory the generator may use: bytes (512MiB, 2GB) or percent of the container's (else machine's) memory.
    #[arg(long, env = "CICADA_MAX_MEMORY", default_value = "85%", value_parser = parse_memory_limit)]
    pub max_memory: MemoryLimit,

    /// Scheduler lag above which the generator counts as saturated (its measured latencies would be inflated).
    #[arg(long, env = "CICADA_MAX_LAG", default_value = "100ms", value_parser = parse_duration)]
    pub max_lag: Duration,

    /// Run as the master of a cluster: serve the web UI (or run headless), hand users to workers, merge their
    /// statistics and write the reports; no user runs in this process.
    #[arg(long, env = "CICADA_MASTER", conflicts_with = "worker")]
    pub master: bool,

    /// Run as a worker of a cluster: take users from the master at --master-host and send it statistics.
    #[arg(long, env = "CICADA_WORKER")]
    pub worker: bool,

    /// Where a worker finds its master.
    #[arg(long, env = "CICADA_MASTER_HOST", default_value = "127.0.0.1")]
    pub master_host: String,

    /// The master's port, for a worker.
    #[arg(long, env = "CICADA_MASTER_PORT", default_value_t = 5557)]
    pub master_port: u16,

    /// The address a master listens on for workers (loopback by default; any other address needs a
    /// --cluster-token).
    #[arg(long, env = "CICADA_MASTER_BIND_HOST", default_value = "127.0.0.1")]
    pub master_bind_host: std::net::IpAddr,

    /// The port a master listens on for workers (0 picks a free one; the log says which).
    #[arg(long, env = "CICADA_MASTER_BIND_PORT", default_value_t = 5557)]
    pub master_bind_port: u16,

    /// A headless master waits for this many workers before it starts the test.
    #[arg(long, env = "CICADA_EXPECT_WORKERS", default_value_t = 1)]
    pub expect_workers: u64,

    /// How long a headless master waits for --expect-workers (default: as long as it takes).
    #[arg(long, env = "CICADA_EXPECT_WORKERS_MAX_WAIT", value_parser = parse_duration)]
    pub expect_workers_max_wait: Option<Duration>,

    /// Start this many worker processes of this same binary on this machine (-1: one per core), with a master
    /// unless --worker is given.
    #[arg(long, env = "CICADA_PROCESSES", allow_negative_numbers = true)]
    pub processes: Option<i64>,

    /// A secret shared by the master and its workers; required when the master binds a non-loopback address.
    #[arg(long, env = "CICADA_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,

    /// TLS on the cluster port: on a master, its certificate (PEM; with --cluster-tls-key); on a worker, its client
    /// certificate for a master that asks for one (mTLS).
    #[arg(
        long,
        env = "CICADA_CLUSTER_TLS_CERT",
        value_name = "FILE",
        requires = "cluster_tls_key"
    )]
    pub cluster_tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --cluster-tls-cert.
    #[arg(
        long,
        env = "CICADA_CLUSTER_TLS_KEY",
        value_name = "FILE",
        requires = "cluster_tls_cert"
    )]
    pub cluster_tls_key: Option<PathBuf>,

    /// On a worker: the CA (or the master's own certificate) to trust, which turns TLS on. On a master: the CA
    /// whose client certificates workers must present (mTLS).
    #[arg(long, env = "CICADA_CLUSTER_TLS_CA", value_name = "FILE")]
    pub cluster_tls_ca: Option<PathBuf>,

    /// How long a worker keeps its users and buffers its statistics without a master before it stops and exits.
    #[arg(long, env = "CICADA_MASTER_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub master_timeout: Duration,

    /// User types to run (default: all).
    #[arg(value_name = "USER_TYPE")]
    pub user_types: Vec<String>,
}

/// Why the options could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// A flag or environment variable was wrong (clap's message names it), or help/version was asked for.
    #[error("{0}")]
    Cli(#[from] clap::Error),
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, or a key or value is wrong.
    #[error("config file {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// Parse `90`, `30s`, `1h30m`, `250ms` into a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("`{text}` is not a duration of zero seconds or more"));
    }
    humantime::parse_duration(text)
        .map_err(|_| format!("`{text}` is not a duration (try 90, 30s, 5m or 1h30m)"))
}

fn parse_check(text: &str) -> Result<Check, String> {
    Check::parse(text).map_err(|error| error.to_string())
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a positive number of users per second"
        )),
    }
}

fn parse_arrival_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate >= 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a number of iterations per second (0 or more)"
        )),
    }
}

fn parse_percent(text: &str) -> Result<f64, String> {
    match text.trim().trim_end_matches('%').parse::<f64>() {
        Ok(percent) if percent > 0.0 && percent <= 100.0 => Ok(percent),
        _ => Err(format!(
            "`{text}` is not a percentage above 0 and at most 100"
        )),
    }
}

fn parse_log_level(text: &str) -> Result<tracing::Level, String> {
    match text.trim().to_ascii_uppercase().as_str() {
        "TRACE" => Ok(tracing::Level::TRACE),
        "DEBUG" => Ok(tracing::Level::DEBUG),
        "INFO" => Ok(tracing::Level::INFO),
        "WARN" | "WARNING" => Ok(tracing::Level::WARN),
        "ERROR" | "CRITICAL" => Ok(tracing::Level::ERROR),
        _ => Err(format!(
            "`{text}` is not a log level (DEBUG, INFO, WARNING, ERROR or CRITICAL)"
        )),
    }
}

impl Options {
    /// Parse the process's arguments (with environment and config file).
    pub fn parse_args<I, T>(args: I) -> Result<Options, OptionsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let config_path = config_path(&args);
        let mut full: Vec<OsString> = args.iter().take(1).cloned().collect();
        if full.is_empty() {
            full.push("cicada".into());
        }
        if let Some(path) = config_path {
            full.extend(config_args(&path)?);
        }
        full.extend(args.into_iter().skip(1));
        let matches = Options::command().try_get_matches_from(full)?;
        Ok(Options::from_arg_matches(&matches)?)
    }

    /// The resource guard's settings.
    pub fn guard_settings(&self) -> GuardSettings {
        GuardSettings {
            mode: self.guard,
            max_cpu_percent: self.max_cpu,
            max_memory: self.max_memory,
            max_lag: self.max_lag,
        }
    }

    /// The flags that differ from the defaults, as `--flag value` text (for reports).
    pub fn summary(&self) -> String {
        let mut parts = vec![
            format!("-u {}", self.users),
            format!("-r {}", self.spawn_rate),
        ];
        if let Some(host) = &self.host {
            parts.push(format!("-H {host}"));
        }
        if let Some(run_time) = self.run_time {
            parts.push(format!("-t {}", humantime::format_duration(run_time)));
        }
        if self.headless {
            parts.push("--headless".to_string());
        }
        if !self.tags.is_empty() {
            parts.push(format!("-T {}", self.tags.join(",")));
        }
        if !self.exclude_tags.is_empty() {
            parts.push(format!("-E {}", self.exclude_tags.join(",")));
        }
        if !self.stop_timeout.is_zero() {
            parts.push(format!(
                "-s {}",
                humantime::format_duration(self.stop_timeout)
            ));
        }
        if let Some(rate) = self.arrival_rate {
            parts.push(format!("--arrival-rate {rate}"));
        }
        if let Some(bound) = self.max_concurrent {
            parts.push(format!("--max-concurrent {bound}"));
        }
        for check in &self.checks {
            parts.push(format!("--check '{}'", check.expr));
        }
        parts.extend(self.user_types.iter().cloned());
        parts.join(" ")
    }
}

/// `--config FILE`, `--config=FILE` or `CICADA_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut found = None;
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            found = iter.next().map(PathBuf::from);
        } else if let Some(value) = text.strip_prefix("--config=") {
            found = Some(PathBuf::from(value));
        } else if text == "--" {
            break;
        }
    }
    found.or_else(|| std::env::var_os("CICADA_CONFIG").map(PathBuf::from))
}

/// Turn a TOML config file into command-line arguments, skipping keys whose environment variable is set (the
/// environment wins over the file).
fn config_args(path: &Path) -> Result<Vec<OsString>, OptionsError> {
    let text = std::fs::read_to_string(path).map_err(|source| OptionsError::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    let error = |message: String| OptionsError::Config {
        path: path.to_path_buf(),
        message,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| error(e.message().to_string()))?;
    let command = Options::command();
    let mut args = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
        else {
            return Err(error(format!(
                "unknown key `{key}` (keys are long flag names, like `users` or `run-time`)"
            )));
        };
        if long == "config" {
            return Err(error(
                "a config file cannot name another config file".to_string(),
            ));
        }
        if arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some())
        {
            continue;
        }
        let flag = format!("--{long}");
        let takes_value = arg.get_action().takes_values();
        match value {
            toml::Value::Boolean(set) if !takes_value => {
                if set {
                    args.push(flag.into());
                }
            }
            toml::Value::Boolean(_) => {
                return Err(error(format!("`{key}` needs a value, not true/false")));
            }
            _ if !takes_value => {
                return Err(error(format!("`{key}` is a switch: write `{key} = true`")));
            }
            toml::Value::String(text) => args.push(format!("{flag}={text}").into()),
            toml::Value::Integer(number) => args.push(format!("{flag}={number}").into()),
            toml::Value::Float(number) => args.push(format!("{flag}={number}").into()),
            toml::Value::Array(items) => {
                for item in items {
                    let text = match item {
                        toml::Value::String(text) => text,
                        other => other.to_string(),
                    };
                    args.push(format!("{flag}={text}").into());
                }
            }
            other => {
                return Err(error(format!(
                    "`{key}` has a value of an unsupported type: {other}"
                )));
            }
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_locust() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-3").is_err());
    }

    #[test]
    fn flags_parse() {
        let options = Options::parse_args([
            "test",
            "-H",
            "http://127.0.0.1:1",
            "-u",
            "50",
            "-r",
            "5",
            "-t",
            "1m",
            "--headless",
            "-T",
            "a,b",
            "Browser",
        ])
        .unwrap();
        assert_eq!(options.users, 50);
        assert_eq!(options.run_time, Some(Duration::from_secs(60)));
        assert_eq!(options.tags, ["a", "b"]);
        assert_eq!(options.user_types, ["Browser"]);
        assert!(options.headless);
    }

    #[test]
    fn checks_parse_from_flags_and_name_a_bad_one() {
        let options = Options::parse_args([
            "test",
            "--check",
            "p95<300ms",
            "--check=/items/[id]:p99<1s;fail_ratio<1%",
            "--check-abort",
            "--junit",
            "out/junit.xml",
        ])
        .unwrap();
        let exprs: Vec<&str> = options.checks.iter().map(|c| c.expr.as_str()).collect();
        assert_eq!(exprs, ["p95<300ms", "/items/[id]:p99<1s", "fail_ratio<1%"]);
        assert!(options.check_abort);
        assert_eq!(options.junit, Some(PathBuf::from("out/junit.xml")));
        match Options::parse_args(["test", "--check", "p95<300"]) {
            Err(OptionsError::Cli(error)) => {
                assert_eq!(error.exit_code(), 2);
                let text = error.to_string();
                assert!(
                    text.contains("--check") && text.contains("`p95<300`"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        let dir = tempfile_dir("checks");
        let path = dir.join("run.toml");
        std::fs::write(&path, "check = [\"p95<300ms\", \"rps>1\"]\n").unwrap();
        let path_text = path.to_string_lossy().to_string();
        let from_file = Options::parse_args(["test", "--config", &path_text]).unwrap();
        assert_eq!(from_file.checks.len(), 2);
        let both =
            Options::parse_args(["test", "--config", &path_text, "--check", "avg<1s"]).unwrap();
        let exprs: Vec<&str> = both.checks.iter().map(|c| c.expr.as_str()).collect();
        // As for every list option, the file's items and the command line's add up.
        assert_eq!(exprs, ["p95<300ms", "rps>1", "avg<1s"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn metrics_flags_parse_from_flags_and_the_config_file() {
        let defaults = Options::parse_args(["test"]).unwrap();
        assert_eq!(defaults.metrics_port, None);
        assert_eq!(defaults.metrics_host.to_string(), "127.0.0.1");
        assert_eq!(defaults.otlp_endpoint, None);
        assert_eq!(defaults.otlp_interval, Duration::from_secs(10));
        let flags = Options::parse_args([
            "test",
            "--metrics-port",
            "0",
            "--metrics-host",
            "::1",
            "--otlp-endpoint",
            "http://127.0.0.1:4318/v1/metrics",
            "--otlp-interval",
            "2s",
        ])
        .unwrap();
        assert_eq!(flags.metrics_port, Some(0));
        assert_eq!(flags.metrics_host.to_string(), "::1");
        assert_eq!(flags.otlp_interval, Duration::from_secs(2));
        let dir = tempfile_dir("metrics");
        let path = dir.join("cicada.toml");
        std::fs::write(
            &path,
            "metrics-port = 9646\notlp-endpoint = \"http://127.0.0.1:4318\"\notlp-interval = \"500ms\"\n",
        )
        .unwrap();
        let path_text = path.to_string_lossy().into_owned();
        let from_file = Options::parse_args(["test", "--config", &path_text]).unwrap();
        assert_eq!(from_file.metrics_port, Some(9646));
        assert_eq!(
            from_file.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(from_file.otlp_interval, Duration::from_millis(500));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cicada-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn report_flags_parse() {
        let options = Options::parse_args([
            "test",
            "--json",
            "--json-file",
            "out/locust",
            "--report-json",
            "out/cicada.json",
            "--csv",
            "out/run",
            "--html",
            "out/report.html",
        ])
        .unwrap();
        assert!(options.json);
        assert_eq!(options.json_file, Some(PathBuf::from("out/locust")));
        assert_eq!(options.report_json, Some(PathBuf::from("out/cicada.json")));
        assert_eq!(options.csv_prefix, Some(PathBuf::from("out/run")));
        assert_eq!(options.html, Some(PathBuf::from("out/report.html")));
    }

    #[test]
    fn bad_flags_name_themselves() {
        let error = Options::parse_args(["test", "-u", "many"]).unwrap_err();
        assert!(error.to_string().contains("--users"), "{error}");
        let error = Options::parse_args(["test", "-r", "0"]).unwrap_err();
        assert!(error.to_string().contains("--spawn-rate"), "{error}");
        match Options::parse_args(["test", "--run-time", "later"]) {
            Err(OptionsError::Cli(e)) => assert_eq!(e.exit_code(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn config_file_is_overridden_by_the_command_line() {
        let dir = std::env::temp_dir().join(format!("cicada-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.toml");
        std::fs::write(
            &path,
            "users = 7\nrun_time = \"2m\"\nheadless = true\ntags = [\"x\", \"y\"]\n",
        )
        .unwrap();
        let path_text = path.to_string_lossy().to_string();
        let options = Options::parse_args(["test", "--config", &path_text, "-u", "9"]).unwrap();
        assert_eq!(options.users, 9);
        assert_eq!(options.run_time, Some(Duration::from_secs(120)));
        assert!(options.headless);
        assert_eq!(options.tags, ["x", "y"]);

        std::fs::write(&path, "usres = 7\n").unwrap();
        let error = Options::parse_args(["test", "--config", &path_text]).unwrap_err();
        assert!(error.to_string().contains("unknown key `usres`"), "{error}");
        std::fs::write(&path, "headless = \"yes\"\n").unwrap();
        let error = Options::parse_args(["test", "--config", &path_text]).unwrap_err();
        assert!(error.to_string().contains("headless"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
