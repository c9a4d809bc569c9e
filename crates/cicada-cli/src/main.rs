//! The `cicada` command: runs a Lua test file with Locust's flags (`cicada -f shop.lua --headless -u 10 -t 30s`,
//! `CICADA_LOCUSTFILE=shop.lua`, or `cicada ...` alone for `cicadafile.lua` in the current directory, as Locust looks
//! for locustfile.py), and
//! serves the built-in demo target (`cicada demo`) that tests and benchmarks run against, and compares two runs'
//! JSON reports (`cicada compare BASE.json NEW.json --max-regression 10%`, exit code 6 on a regression past the
//! bound). Tests written in Rust are their own programs and do not need this binary.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// The test file used when no `-f` is given.
const DEFAULT_TEST_FILE: &str = "cicadafile.lua";

#[derive(Debug, Parser)]
#[command(
    name = "cicada",
    version,
    about = "cicada's built-in demo target, and the comparison of two runs."
)]
struct SubcommandCli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the demo web app (fast, slow and failing pages, a login, JSON items) until Ctrl-C.
    Demo {
        /// Address to listen on. Keep it on loopback: the demo is a load-test target, not a public service.
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        /// Port to listen on (0 picks a free one).
        #[arg(long, short, default_value_t = 8080)]
        port: u16,
        /// Worker threads of the server (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Compare two runs' JSON reports (--report-json): per request name, the change in p50, p95, p99, failure ratio
    /// and requests per second. Exit code 6 when a change is worse than --max-regression, 2 when a report cannot be
    /// read.
    Compare {
        /// The base run's report.
        base: PathBuf,
        /// The new run's report.
        new: PathBuf,
        /// How much worse a metric may get before it counts as a regression: `10%` (or `10`). Without it, the table
        /// is printed and the exit code is 0.
        #[arg(long, value_parser = parse_regression_bound)]
        max_regression: Option<f64>,
    },
}

/// `10%` or `10` as the fraction 0.1.
fn parse_regression_bound(text: &str) -> Result<f64, String> {
    text.trim()
        .trim_end_matches('%')
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|percent| percent.is_finite() && *percent >= 0.0)
        .map(|percent| percent / 100.0)
        .ok_or_else(|| format!("`{text}` is not a percentage of zero or more, e.g. 10%"))
}

/// Where the test comes from, and the arguments left for the test's option parser.
#[derive(Debug, PartialEq, Eq)]
struct TestArgs {
    file: Option<PathBuf>,
    rest: Vec<OsString>,
}

/// Take `-f FILE` / `--locustfile FILE` (and their `=` forms) out of the arguments; everything else is the test's.
fn split_test_file(args: Vec<OsString>) -> Result<TestArgs, String> {
    let mut file = None;
    let mut rest = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    if let Some(program) = iter.next() {
        rest.push(program);
    }
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        let value = if text == "-f" || text == "--locustfile" {
            Some(
                iter.next()
                    .ok_or_else(|| format!("{text} needs a file: {text} cicadafile.lua"))?,
            )
        } else {
            text.strip_prefix("--locustfile=")
                .or_else(|| text.strip_prefix("-f="))
                .map(OsString::from)
        };
        match value {
            Some(value) => {
                if file.is_some() {
                    return Err("-f is given twice: one test file per run".to_string());
                }
                file = Some(PathBuf::from(value));
            }
            None => rest.push(arg),
        }
    }
    Ok(TestArgs { file, rest })
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "demo" || a == "compare") {
        return match SubcommandCli::parse_from(&args).command {
            Command::Compare {
                base,
                new,
                max_regression,
            } => ExitCode::from(compare(&base, &new, max_regression)),
            Command::Demo {
                bind,
                port,
                threads,
            } => match demo(bind, port, threads) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            },
        };
    }
    let test = match split_test_file(args) {
        Ok(test) => test,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(cicada::EXIT_USAGE);
        }
    };
    let asks_for_help = test
        .rest
        .iter()
        .any(|a| a == "--help" || a == "-h" || a == "--version" || a == "-V");
    // Like every other option, the test file can come from the environment (`CICADA_LOCUSTFILE`, Locust's name).
    let from_env = std::env::var_os("CICADA_LOCUSTFILE").map(PathBuf::from);
    let file = match test.file.or(from_env) {
        Some(file) if file.as_os_str() == "-" => {
            // Locust's `-f -`: a worker takes the test from its master.
            let code = cicada_lua::run_from_master(test.rest);
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
        Some(file) => file,
        None if asks_for_help && !std::path::Path::new(DEFAULT_TEST_FILE).exists() => {
            // The flags are the same for every test: let the option parser print them.
            if !test.rest.iter().any(|a| a == "--version" || a == "-V") {
                println!(
                    "cicada -f FILE.lua [OPTIONS] runs a Lua load test (default file: {DEFAULT_TEST_FILE}); \
                     cicada demo [--port P] serves the demo target; cicada compare BASE.json NEW.json \
                     [--max-regression 10%] compares two runs.\n"
                );
            }
            let code = cicada::Cicada::new().run_with_args(test.rest);
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
        None => PathBuf::from(DEFAULT_TEST_FILE),
    };
    if !file.exists() {
        eprintln!(
            "error: no test file {} (give one with -f FILE.lua, or run `cicada demo` for the demo target)",
            file.display()
        );
        return ExitCode::from(cicada::EXIT_USAGE);
    }
    let code = cicada_lua::run_file(&file, test.rest);
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// `cicada compare`: the table on stdout; the exit code.
fn compare(base: &std::path::Path, new: &std::path::Path, max_regression: Option<f64>) -> u8 {
    use cicada::stats::report::compare;
    let read = |path| {
        compare::read_report(path).map_err(|error| {
            eprintln!("error: {error}");
            cicada::EXIT_USAGE
        })
    };
    let (base_stats, new_stats) = match (read(base), read(new)) {
        (Ok(base), Ok(new)) => (base, new),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let comparison = compare::compare(&base_stats, &new_stats, max_regression);
    println!(
        "Comparing {} (base) with {} (new)\n",
        base.display(),
        new.display()
    );
    print!("{}", comparison.table());
    if comparison.regressions().is_empty() {
        0
    } else {
        cicada::EXIT_CHECK_FAILED as u8
    }
}

fn demo(bind: IpAddr, port: u16, threads: Option<usize>) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder.build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = cicada_demo::DemoServer::start(SocketAddr::new(bind, port))
            .await
            .with_context(|| {
                format!("cannot listen on {bind}:{port} (is the port in use? try --port 0)")
            })?;
        println!("demo target listening on {}", server.url());
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        server.shutdown().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_test_file_is_taken_out_of_the_arguments() {
        let split = split_test_file(args(&["cicada", "-f", "shop.lua", "-u", "3"])).unwrap();
        assert_eq!(split.file, Some(PathBuf::from("shop.lua")));
        assert_eq!(split.rest, args(&["cicada", "-u", "3"]));
        let split = split_test_file(args(&["cicada", "--headless", "--locustfile=a.lua"])).unwrap();
        assert_eq!(split.file, Some(PathBuf::from("a.lua")));
        assert_eq!(split.rest, args(&["cicada", "--headless"]));
        let split = split_test_file(args(&["cicada", "--headless"])).unwrap();
        assert_eq!(split.file, None);
        assert!(split_test_file(args(&["cicada", "-f"])).is_err());
        assert!(split_test_file(args(&["cicada", "-f", "a.lua", "-f", "b.lua"])).is_err());
    }
}
