//! End-to-end tests: start a real `DemoServer` on 127.0.0.1 and talk to it
//! with hyper's client over HTTP/1.1 keep-alive and h2c prior knowledge, or
//! with raw TCP writes for malformed input.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cicada_demo::{DemoServer, Route};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, SET_COOKIE};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for any single test, so a hang fails instead of blocking CI.
const TEST_DEADLINE: Duration = Duration::from_secs(30);

async fn within_deadline<F: std::future::Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("test exceeded its deadline")
}

async fn start() -> DemoServer {
    DemoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Http1,
    H2c,
}

/// One client connection, over either protocol.
enum Conn {
    Http1(http1::SendRequest<Full<Bytes>>, SocketAddr),
    H2c(http2::SendRequest<Full<Bytes>>, SocketAddr),
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn header(&self, name: impl hyper::header::AsHeaderName) -> &str {
        self.headers.get(name).unwrap().to_str().unwrap()
    }
}

impl Conn {
    async fn open(addr: SocketAddr, protocol: Protocol) -> Conn {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        match protocol {
            Protocol::Http1 => {
                let (sender, connection) = http1::handshake(io).await.unwrap();
                tokio::spawn(connection);
                Conn::Http1(sender, addr)
            }
            Protocol::H2c => {
                let (sender, connection) =
                    http2::handshake(TokioExecutor::new(), io).await.unwrap();
                tokio::spawn(connection);
                Conn::H2c(sender, addr)
            }
        }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut builder = Request::builder().method(method);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let body = Full::new(body.into());
        let response = match self {
            Conn::Http1(sender, addr) => {
                let request = builder
                    .uri(path)
                    .header(HOST, addr.to_string())
                    .body(body)
                    .unwrap();
                sender.ready().await.unwrap();
                sender.send_request(request).await.unwrap()
            }
            Conn::H2c(sender, addr) => {
                let request = builder
                    .uri(format!("http://{addr}{path}"))
                    .body(body)
                    .unwrap();
                sender.ready().await.unwrap();
                sender.send_request(request).await.unwrap()
            }
        };
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    async fn get(&mut self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }
}

async fn check_routes(protocol: Protocol) {
    let server = start().await;
    let mut conn = Conn::open(server.local_addr(), protocol).await;

    let index = conn.get("/").await;
    assert_eq!(index.status, StatusCode::OK);
    assert!(index.header(CONTENT_TYPE).starts_with("text/html"));
    assert!(index.text().contains("href=\"/fast\""));

    let fast = conn.get("/fast").await;
    assert_eq!((fast.status, fast.text()), (StatusCode::OK, "ok\n"));
    assert!(fast.header(CONTENT_TYPE).starts_with("text/plain"));

    assert_eq!(
        conn.get("/fail").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let teapot = conn.get("/status/418").await;
    assert_eq!(
        (teapot.status, teapot.text()),
        (StatusCode::IM_A_TEAPOT, "status 418\n")
    );
    assert_eq!(conn.get("/status/204").await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        conn.get("/status/150").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        conn.get("/status/abc").await.status,
        StatusCode::BAD_REQUEST
    );

    let items = conn.get("/items").await;
    assert_eq!(items.status, StatusCode::OK);
    assert_eq!(items.header(CONTENT_TYPE), "application/json");
    assert_eq!(items.json().as_array().unwrap().len(), 20);
    let item = conn.get("/items/5").await.json();
    assert_eq!(
        (item["id"].as_u64(), item["name"].as_str()),
        (Some(5), Some("Item 5"))
    );
    assert!(item["price"].is_f64());
    for missing in ["/items/0", "/items/10001", "/items/abc"] {
        let reply = conn.get(missing).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{missing}");
        assert!(reply.json()["error"].is_string());
    }

    let redirect = conn.get("/redirect").await;
    assert_eq!(
        (redirect.status, redirect.header(LOCATION)),
        (StatusCode::FOUND, "/fast")
    );
    assert_eq!(
        conn.get("/redirect/3").await.header(LOCATION),
        "/redirect/2"
    );
    assert_eq!(conn.get("/redirect/1").await.header(LOCATION), "/fast");

    let bytes = conn.get("/bytes/1000").await;
    assert_eq!(bytes.header(CONTENT_TYPE), "application/octet-stream");
    assert_eq!(bytes.body.len(), 1000);
    assert!(std::str::from_utf8(&bytes.body).is_ok());
    let invalid = conn.get("/bytes/100?invalid_utf8=1").await;
    assert_eq!(invalid.body.len(), 100);
    assert!(std::str::from_utf8(&invalid.body).is_err());
    let clamped = conn.get("/bytes/999999999999").await;
    assert_eq!(clamped.body.len(), 16 * 1024 * 1024);

    assert_eq!(conn.get("/nope").await.status, StatusCode::NOT_FOUND);
    let wrong_method = conn.send(Method::DELETE, "/fast", &[], Bytes::new()).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.header(ALLOW), "GET, HEAD");
    assert_eq!(conn.get("/cart").await.header(ALLOW), "POST");

    let head = conn.send(Method::HEAD, "/fast", &[], Bytes::new()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header(CONTENT_LENGTH), "3");
    assert!(head.body.is_empty());
    let head = conn
        .send(Method::HEAD, "/bytes/1234", &[], Bytes::new())
        .await;
    assert_eq!(head.header(CONTENT_LENGTH), "1234");
    assert!(head.body.is_empty());

    let counters = server.counters();
    assert_eq!(counters.route(Route::Items), 1);
    assert_eq!(counters.route(Route::Item), 4);
    assert_eq!(counters.route(Route::Redirect), 3);
    assert_eq!(counters.route(Route::Fast), 3);
    assert_eq!(counters.route(Route::Bytes), 4);
    assert_eq!(counters.route(Route::Cart), 1);
    assert_eq!(counters.connections(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn routes_over_http1() {
    within_deadline(check_routes(Protocol::Http1)).await;
}

#[tokio::test]
async fn routes_over_h2c() {
    within_deadline(check_routes(Protocol::H2c)).await;
}

async fn check_session_flow(protocol: Protocol) {
    let server = start().await;
    let other_server = start().await;
    let mut conn = Conn::open(server.local_addr(), protocol).await;
    let form = [("content-type", "application/x-www-form-urlencoded")];

    let login = conn
        .send(
            Method::POST,
            "/login",
            &form,
            "username=al+ice&password=s%26cret",
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.json()["user"], "al ice");
    let set_cookie = login.header(SET_COOKIE).to_owned();
    assert!(set_cookie.ends_with("; Path=/; HttpOnly"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("session=u-al_ice-"), "{cookie}");

    let cookie_header = [("cookie", cookie.as_str())];
    let account = conn
        .send(Method::GET, "/account", &cookie_header, Bytes::new())
        .await;
    assert_eq!(account.status, StatusCode::OK);
    assert_eq!(account.json(), serde_json::json!({ "user": "al ice" }));

    assert_eq!(conn.get("/account").await.status, StatusCode::UNAUTHORIZED);
    let forged = [("cookie", "session=u-al_ice-0-1")];
    assert_eq!(
        conn.send(Method::GET, "/account", &forged, Bytes::new())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // A cookie from another server instance is not valid here.
    let mut other = Conn::open(other_server.local_addr(), protocol).await;
    let other_account = other
        .send(Method::GET, "/account", &cookie_header, Bytes::new())
        .await;
    assert_eq!(other_account.status, StatusCode::UNAUTHORIZED);

    for bad_form in [
        "username=&password=x",
        "username=bob&password=",
        "password=x",
        "",
    ] {
        let reply = conn.send(Method::POST, "/login", &form, bad_form).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad_form:?}");
    }

    let logout = conn
        .send(Method::POST, "/logout", &cookie_header, Bytes::new())
        .await;
    assert_eq!(logout.status, StatusCode::OK);
    assert!(logout.header(SET_COOKIE).contains("Max-Age=0"));
    let after = conn
        .send(Method::GET, "/account", &cookie_header, Bytes::new())
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn session_flow_over_http1() {
    within_deadline(check_session_flow(Protocol::Http1)).await;
}

#[tokio::test]
async fn session_flow_over_h2c() {
    within_deadline(check_session_flow(Protocol::H2c)).await;
}

#[tokio::test]
async fn cart_and_echo_reflect_request() {
    within_deadline(async {
        let server = start().await;
        for protocol in [Protocol::Http1, Protocol::H2c] {
            let mut conn = Conn::open(server.local_addr(), protocol).await;
            let json = [("content-type", "application/json")];
            let added = conn
                .send(Method::POST, "/cart", &json, r#"{"item":3,"qty":2}"#)
                .await;
            assert_eq!(added.status, StatusCode::CREATED);
            assert_eq!(
                added.json(),
                serde_json::json!({ "added": { "item": 3, "qty": 2 } })
            );
            let invalid = conn.send(Method::POST, "/cart", &json, "{not json").await;
            assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
            let huge = conn
                .send(Method::POST, "/cart", &json, vec![b' '; 65 * 1024])
                .await;
            assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);

            // A 413 may leave an HTTP/1.1 connection unusable; start afresh.
            let mut conn = Conn::open(server.local_addr(), protocol).await;
            let headers = [("x-Custom", "Value 1"), ("cookie", "a=1; b=2")];
            let echo = conn
                .send(Method::PUT, "/echo?x=1&y=two", &headers, "k=v&w=\u{e9}")
                .await;
            assert_eq!(echo.status, StatusCode::OK);
            let echo = echo.json();
            assert_eq!(echo["method"], "PUT");
            assert_eq!(echo["path"], "/echo");
            assert_eq!(echo["query"], "x=1&y=two");
            assert_eq!(echo["headers"]["x-custom"], "Value 1");
            assert_eq!(echo["headers"]["cookie"], "a=1; b=2");
            assert_eq!(echo["body"], "k=v&w=\u{e9}");
            let expected_version = match protocol {
                Protocol::Http1 => "HTTP/1.1",
                Protocol::H2c => "HTTP/2.0",
            };
            assert_eq!(echo["version"], expected_version);
            let too_big = conn
                .send(Method::POST, "/echo", &[], vec![b'a'; 64 * 1024 + 1])
                .await;
            assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
        }
    })
    .await;
}

/// 500 requests over 5 concurrent connections must be counted exactly.
async fn check_exact_counts(protocol: Protocol) {
    let server = start().await;
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr, protocol).await;
            for _ in 0..100 {
                assert_eq!(conn.get("/fast").await.status, StatusCode::OK);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let counters = server.counters();
    assert_eq!(counters.total(), 500);
    assert_eq!(counters.route(Route::Fast), 500);
    assert_eq!(counters.connections(), 5);
    let other_routes: u64 = Route::ALL
        .iter()
        .filter(|route| **route != Route::Fast)
        .map(|route| counters.route(*route))
        .sum();
    assert_eq!(other_routes, 0);

    counters.reset();
    assert_eq!((counters.total(), counters.connections()), (0, 0));
    let mut conn = Conn::open(addr, protocol).await;
    conn.get("/missing").await;
    conn.get("/fail").await;
    assert_eq!(counters.total(), 2);
    assert_eq!(counters.route(Route::NotFound), 1);
    assert_eq!(counters.route(Route::Fail), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_exactly_over_http1() {
    within_deadline(check_exact_counts(Protocol::Http1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_exactly_over_h2c() {
    within_deadline(check_exact_counts(Protocol::H2c)).await;
}

#[tokio::test]
async fn slow_waits_at_least_the_requested_delay() {
    within_deadline(async {
        let server = start().await;
        for protocol in [Protocol::Http1, Protocol::H2c] {
            let mut conn = Conn::open(server.local_addr(), protocol).await;
            let started = Instant::now();
            let reply = conn.get("/slow?ms=200").await;
            let elapsed = started.elapsed();
            assert_eq!((reply.status, reply.text()), (StatusCode::OK, "slow\n"));
            assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
            assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

            let started = Instant::now();
            assert_eq!(conn.get("/slow?ms=0").await.status, StatusCode::OK);
            assert!(started.elapsed() < Duration::from_secs(1));
            assert_eq!(
                conn.get("/slow?ms=abc").await.status,
                StatusCode::BAD_REQUEST
            );
        }
        assert_eq!(server.counters().route(Route::Slow), 6);
    })
    .await;
}

#[tokio::test]
async fn survives_malformed_requests() {
    within_deadline(async {
        let server = start().await;
        let garbage: [&[u8]; 4] = [
            b"\x00\xff\xfe garbage\r\n\r\n",
            b"GET /fast HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
            b"GET /%%%\xff HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab",
        ];
        for bytes in garbage {
            let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
            // The server may already have rejected and closed, so write
            // errors are fine here; the requests below prove it survived.
            let _ = stream.write_all(bytes).await;
            let _ = stream.shutdown().await;
            let mut reply = Vec::new();
            // The server may answer 400 or just close; either way it must not hang.
            let _ = stream.read_to_end(&mut reply).await;
        }

        // Keep-alive over a raw socket: two requests, two responses, one connection.
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        stream
            .write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        let reply = String::from_utf8(reply).unwrap();
        assert_eq!(reply.matches("HTTP/1.1 200 OK").count(), 2, "{reply}");
    })
    .await;
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    within_deadline(async {
        let server = start().await;
        let addr = server.local_addr();
        let mut conn = Conn::open(addr, Protocol::Http1).await;
        assert_eq!(conn.get("/fast").await.status, StatusCode::OK);
        server.shutdown().await;
        assert!(TcpStream::connect(addr).await.is_err());

        let dropped = start().await;
        let addr = dropped.local_addr();
        drop(dropped);
        // Dropping only signals the accept task; give it a bounded moment.
        let mut refused = false;
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "server still accepting after drop");
    })
    .await;
}
