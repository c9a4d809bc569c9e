//! A custom, non-HTTP client whose calls land in the same stats: a tiny line protocol over TCP.
//!
//! The test starts its own echo server on 127.0.0.1 in `on_init`, then users send lines to it and time the round
//! trip with `User::measure`.
//!
//! ```text
//! cargo run --example custom_client -- --headless -u 5 -r 5 -t 10s
//! ```

use std::net::SocketAddr;
use std::sync::OnceLock;

use cicada::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

static ECHO_ADDR: OnceLock<SocketAddr> = OnceLock::new();

/// A line-echo server on an ephemeral loopback port, in its own thread.
fn start_echo_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            listener.set_nonblocking(true).expect("nonblocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if write
                            .write_all(format!("{line}\n").as_bytes())
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
    });
    addr
}

/// Per-user connection to the echo server.
#[derive(Default)]
struct EchoUser {
    connection: Option<BufReader<TcpStream>>,
}

async fn connect(user: &mut User<EchoUser>) -> TaskResult {
    let addr = *ECHO_ADDR.get().expect("set in on_init");
    let stream = user
        .measure("tcp", "connect", |_| 0, TcpStream::connect(addr))
        .await?;
    user.state.connection = Some(BufReader::new(stream));
    Ok(())
}

async fn echo(user: &mut User<EchoUser>) -> TaskResult {
    let message = format!("hello from user {}", user.id());
    let Some(mut connection) = user.state.connection.take() else {
        return stop_user();
    };
    let reply = user
        .measure("tcp", "echo", |reply: &String| reply.len() as u64, async {
            connection
                .get_mut()
                .write_all(format!("{message}\n").as_bytes())
                .await?;
            let mut reply = String::new();
            connection.read_line(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        })
        .await?;
    user.state.connection = Some(connection);
    if reply.trim_end() != message {
        return Err(TaskError::msg("the echo did not match"));
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    Cicada::new()
        .on_init(|_env| {
            ECHO_ADDR.get_or_init(start_echo_server);
        })
        .user(
            UserType::<EchoUser>::new("EchoUser")
                .host("http://127.0.0.1") // no HTTP here; a host keeps the demo target from starting
                .wait_time(constant(0.1))
                .on_start(connect)
                .task(echo),
        )
        .run()
}
