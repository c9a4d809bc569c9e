//! The demo target (`cicada_demo::DemoServer`, as `cicada demo --threads 1` serves it) that also reports how many
//! requests it answered, for the accuracy suite of `bench/run.sh`.
//!
//! `cicada demo` prints nothing about the requests it served; this binary hosts the same server from the same
//! library on a one-worker runtime and prints its counters as one JSON line,
//! `{"answered": <requests on /slow>, "received": <requests on any route>}`, on SIGUSR1 (then starts counting
//! afresh) and once more on SIGTERM or Ctrl-C before it exits.
//!
//! ```text
//! taskset -c 1 target/release/counted_demo --port 0
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;

use cicada_demo::{DemoCounters, DemoServer, Route};
use tokio::signal::unix::{SignalKind, signal};

fn report(counters: &DemoCounters) {
    println!(
        "{{\"answered\": {}, \"received\": {}}}",
        counters.route(Route::Slow),
        counters.total()
    );
}

fn port_from_args() -> Result<u16, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(0),
        [flag, value] if flag == "--port" => {
            value.parse().map_err(|_| format!("bad port {value:?}"))
        }
        _ => Err("usage: counted_demo [--port N]".to_string()),
    }
}

async fn serve(port: u16) -> std::io::Result<()> {
    let server = DemoServer::start(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("demo target listening on {}", server.url());
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = usr1.recv() => {
                report(server.counters());
                server.counters().reset();
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    report(server.counters());
    server.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let port = match port_from_args() {
        Ok(port) => port,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(port)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cannot serve: {err}");
            ExitCode::FAILURE
        }
    }
}
