//! `cicada-demo` owns the built-in demo web application that cicada load
//! tests run against: the README's first command swarms it in-process, and
//! integration tests use it as a real HTTP server that counts exactly what it
//! saw. It speaks HTTP/1.1 (with keep-alive) and HTTP/2 over cleartext with
//! prior knowledge (h2c) on the same port, binds wherever it is told (the
//! `cicada demo` command passes a 127.0.0.1 address by default), never logs
//! per request and never panics on bad input.
//!
//! # Routes
//!
//! Every response carries a `Content-Type`. `HEAD` is accepted wherever `GET`
//! is; a known path with the wrong method answers `405` with an `Allow` header.
//!
//! | Method | Path | Response |
//! |--------|------|----------|
//! | GET | `/` | 200 small HTML home page linking the routes |
//! | GET | `/fast` | 200 `ok\n` (text/plain) |
//! | GET | `/slow?ms=N` | sleeps N ms (default 100, clamped to 0..=10000; non-numeric → 400), then 200 `slow\n` |
//! | GET | `/fail` | 500 with a short text body |
//! | GET | `/status/{code}` | that status for 200..=599 with a text body (empty for 204/205/304); 1xx, other numbers or non-numbers → 400 |
//! | POST | `/login` | form `username=..&password=..`; empty field or username over 256 bytes → 400; else 200 JSON `{"user":..}` and `Set-Cookie: session=<token>; Path=/; HttpOnly` |
//! | GET | `/account` | 200 JSON `{"user":..}` with a session cookie issued by this server instance, else 401 JSON |
//! | POST | `/logout` | forgets the session, 200 and a `Set-Cookie` that clears the cookie |
//! | GET | `/items` | 200 JSON list of 20 items |
//! | GET | `/items/{id}` | 200 JSON `{"id":..,"name":..,"price":..}` for id 1..=10000, else 404 JSON error |
//! | POST | `/cart` | JSON body → 201 JSON `{"added": <body>}`; invalid JSON → 400 |
//! | GET | `/redirect` | 302 to `/fast` |
//! | GET | `/redirect/{n}` | chain of n redirects (n clamped to 0..=20) ending at `/fast`; `/redirect/0` answers like `/fast` |
//! | GET | `/bytes/{n}` | n bytes (clamped to 16 MiB) of `application/octet-stream`; `?invalid_utf8=1` makes them invalid UTF-8 |
//! | any | `/echo` | 200 JSON `{"method","version","path","query","headers":{name: value},"body"}` describing the request |
//! | any | anything else | 404 |
//!
//! Request bodies (`/login`, `/cart`, `/echo`) are capped at 64 KiB; larger
//! ones get 413. Sessions live in a map bounded at 100 000 entries: at the cap
//! the oldest issued session is evicted, so logins never fail for lack of room.
//!
//! # Counting
//!
//! [`DemoCounters`] is incremented with relaxed atomics as soon as a request
//! head has been parsed and routed, before any response is produced, so every
//! client that got a response was counted, whatever the status.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use cicada_demo::{DemoServer, Route};
//!
//! let server = DemoServer::start("127.0.0.1:0".parse().unwrap()).await?;
//! assert!(server.url().starts_with("http://127.0.0.1:"));
//! assert_eq!(server.counters().route(Route::Fast), 0);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod body;
mod counters;
mod routes;
mod server;
mod sessions;

pub use counters::{DemoCounters, Route};
pub use server::{DemoServer, serve_forever};
