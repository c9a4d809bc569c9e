//! The `cicada` command. Load tests themselves are Rust programs built with the `cicada` library (see the
//! examples); this binary hosts what is not a test: the built-in demo target that tests and benchmarks run against.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cicada",
    version,
    about = "cicada: load tests written as Rust code."
)]
struct Cli {
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            bind,
            port,
            threads,
        } => {
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
    }
}
