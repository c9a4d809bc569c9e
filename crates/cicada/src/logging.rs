//! Logging: `tracing` to stderr or `--logfile`, at `-L/--loglevel`.
//!
//! Nothing on the request path logs at info or above; user errors are counted in the stats and logged at debug.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// Install the global subscriber once; later calls (tests running several runs in one process) keep the first.
pub(crate) fn init(level: tracing::Level, logfile: Option<&Path>) -> std::io::Result<()> {
    let filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy()
        .add_directive("hyper=warn".parse().expect("static directive"))
        .add_directive("rustls=warn".parse().expect("static directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let installed = match logfile {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            builder
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .try_init()
        }
        None => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
    };
    // Already installed by an earlier run in this process: keep it.
    drop(installed);
    Ok(())
}
