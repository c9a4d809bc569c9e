//! The per-user HTTP client against real servers: bodies, cookies, redirects, checks, HTTP/2, TLS.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use cicada::prelude::*;
use http_body_util::Full;
use hyper::service::service_fn;

use crate::common::{DemoTarget, run_test, server_runtime};

fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

#[test]
fn json_form_query_and_headers_reach_the_server() {
    async fn send_all(user: &mut User) -> TaskResult {
        let response = user
            .post("/echo")
            .query(&[("page", "2")])
            .header("x-test", "yes")
            .json(&serde_json::json!({ "item": 7 }))
            .send()
            .await?;
        let echo: serde_json::Value = response.json()?;
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["query"], "page=2");
        assert_eq!(echo["headers"]["x-test"], "yes");
        assert_eq!(echo["headers"]["content-type"], "application/json");
        assert!(
            echo["headers"]["user-agent"]
                .as_str()
                .unwrap()
                .starts_with("cicada/")
        );
        assert_eq!(echo["body"], r#"{"item":7}"#);

        let response = user
            .put("/echo")
            .form(&[("a", "1"), ("b", "x y")])
            .send()
            .await?;
        let echo: serde_json::Value = response.json()?;
        assert_eq!(echo["body"], "a=1&b=x+y");
        assert_eq!(
            echo["headers"]["content-type"],
            "application/x-www-form-urlencoded"
        );
        stop_user()
    }
    let target = DemoTarget::start();
    let run = run_test(
        Cicada::new().user(UserType::<()>::new("Echo").task(send_all)),
        &["-H", &target.url(), "-u", "1", "-t", "2s"],
    );
    assert_eq!(run.exit_code, 0, "{:?}", run.user_errors());
    assert_eq!(
        run.requests("POST", "/echo"),
        1,
        "the name leaves the query out"
    );
    assert_eq!(run.requests("PUT", "/echo"), 1);
}

#[test]
fn cookies_are_kept_per_user() {
    async fn login(user: &mut User) -> TaskResult {
        let name = format!("user{}", user.id());
        user.post("/login")
            .form(&[("username", name.as_str()), ("password", "pw")])
            .send()
            .await?;
        Ok(())
    }
    async fn account(user: &mut User) -> TaskResult {
        let me = format!("user{}", user.id());
        let response = user.get("/account").send().await?;
        let body: serde_json::Value = response.json()?;
        if body["user"] != me.as_str() {
            return Err(TaskError::msg(format!("saw {} as {me}", body["user"])));
        }
        Ok(())
    }
    let target = DemoTarget::start();
    let test = Cicada::new().user(
        UserType::<()>::new("Member")
            .on_start(login)
            .wait_time(constant(0.05))
            .task(account),
    );
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "5",
            "-r",
            "100",
            "-t",
            "1s",
            "-s",
            "1",
        ],
    );
    assert_eq!(
        run.exit_code,
        0,
        "{:?} {:?}",
        run.failure_groups(),
        run.user_errors()
    );
    assert_eq!(run.requests("POST", "/login"), 5);
    assert!(run.requests("GET", "/account") > 20);
}

#[test]
fn redirects_are_followed_and_counted_once() {
    async fn chain(user: &mut User) -> TaskResult {
        let response = user.get("/redirect/3").send().await?;
        assert_eq!(response.status(), 200);
        assert_eq!(response.url().path(), "/fast");
        assert_eq!(response.text(), "ok\n");
        let response = user.post("/redirect").body("x").send().await?;
        assert_eq!(
            response.url().path(),
            "/fast",
            "302 after POST continues as GET"
        );
        stop_user()
    }
    let target = DemoTarget::start();
    let run = run_test(
        Cicada::new().user(UserType::<()>::new("R").task(chain)),
        &["-H", &target.url(), "-u", "1", "-t", "2s"],
    );
    assert_eq!(
        run.exit_code,
        0,
        "{:?} {:?}",
        run.failure_groups(),
        run.user_errors()
    );
    assert_eq!(run.requests("GET", "/redirect/3"), 1);
    assert_eq!(
        target.counters().total(),
        4 + 2,
        "3 hops + the final page, then POST and its redirect"
    );
    let no_follow = ClientOptions {
        max_redirects: 0,
        ..ClientOptions::default()
    };
    async fn raw(user: &mut User) -> TaskResult {
        let response = user.get("/redirect").send().await?;
        assert_eq!(response.status(), 302);
        stop_user()
    }
    let target = DemoTarget::start();
    let run = run_test(
        Cicada::new().user(UserType::<()>::new("R").client_options(no_follow).task(raw)),
        &["-H", &target.url(), "-u", "1", "-t", "2s"],
    );
    assert_eq!(run.exit_code, 0, "{:?}", run.user_errors());
}

#[test]
fn checks_and_statuses_decide_failures() {
    async fn statuses(user: &mut User) -> TaskResult {
        let response = user.get("/fail").send().await?;
        assert!(response.is_failure());
        assert_eq!(response.failure(), Some("HTTP 500 Internal Server Error"));
        user.get("/status/404")
            .name("/status/[code]")
            .send()
            .await?;
        user.get("/fast")
            .check(|r| {
                if r.text() == "ok\n" {
                    Err("right body, but we insist")
                } else {
                    Ok(())
                }
            })
            .send()
            .await?;
        user.get("/status/503")
            .name("/status/[code]")
            .check(|_| Ok::<(), String>(()))
            .send()
            .await?;
        stop_user()
    }
    let target = DemoTarget::start();
    let run = run_test(
        Cicada::new().user(UserType::<()>::new("S").task(statuses)),
        &["-H", &target.url(), "-u", "1", "-t", "2s"],
    );
    assert_eq!(run.exit_code, 1);
    assert_eq!(run.failures("GET", "/fail"), 1);
    assert_eq!(
        run.failures("GET", "/status/[code]"),
        1,
        "the check accepted the 503"
    );
    assert_eq!(run.failures("GET", "/fast"), 1);
    let errors: Vec<String> = run.failure_groups().into_iter().map(|g| g.2).collect();
    assert!(
        errors.contains(&"right body, but we insist".to_string()),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"HTTP 404 Not Found".to_string()),
        "{errors:?}"
    );
}

#[test]
fn http2_prior_knowledge_and_keep_alive() {
    async fn version(user: &mut User) -> TaskResult {
        let response = user.get("/echo").send().await?;
        let echo: serde_json::Value = response.json()?;
        if echo["version"] != "HTTP/2.0" {
            return Err(TaskError::msg(format!("spoke {}", echo["version"])));
        }
        Ok(())
    }
    let target = DemoTarget::start();
    let options = ClientOptions {
        http: HttpVersion::Http2,
        ..ClientOptions::default()
    };
    let test = Cicada::new().user(
        UserType::<()>::new("H2")
            .client_options(options)
            .task(version),
    );
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "3",
            "-r",
            "100",
            "-t",
            "1s",
            "-s",
            "1",
        ],
    );
    assert_eq!(
        run.exit_code,
        0,
        "{:?} {:?}",
        run.failure_groups(),
        run.user_errors()
    );
    assert!(run.total_requests() > 30);
    assert_eq!(
        target.counters().connections(),
        3,
        "one kept-alive connection per user"
    );

    let target = DemoTarget::start();
    let test = Cicada::new().user(UserType::<()>::new("H1").task(version));
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "3",
            "-r",
            "100",
            "-t",
            "1s",
            "-s",
            "1",
        ],
    );
    assert_eq!(
        run.total_requests(),
        run.user_errors().iter().map(|e| e.1).sum::<u64>(),
        "HTTP/1.1 by default"
    );
    assert_eq!(
        target.counters().connections(),
        3,
        "one kept-alive connection per user"
    );
}

#[test]
fn http2_bodies_lengths_and_connection_headers() {
    async fn post(user: &mut User) -> TaskResult {
        let response = user
            .post("/echo?via=h2")
            .header("Connection", "keep-alive")
            .header("Keep-Alive", "timeout=5")
            .header("X-Kept", "yes")
            .body("a body over HTTP/2")
            .send()
            .await?;
        let echo: serde_json::Value = response.json()?;
        let expected = (
            "POST",
            "HTTP/2.0",
            "via=h2",
            "a body over HTTP/2",
            "18",
            "yes",
        );
        let seen = (
            echo["method"].as_str().unwrap_or(""),
            echo["version"].as_str().unwrap_or(""),
            echo["query"].as_str().unwrap_or(""),
            echo["body"].as_str().unwrap_or(""),
            echo["headers"]["content-length"].as_str().unwrap_or(""),
            echo["headers"]["x-kept"].as_str().unwrap_or(""),
        );
        // HTTP/2 forbids connection-specific headers: they are left out, the request still goes.
        if seen != expected || !echo["headers"]["keep-alive"].is_null() {
            return Err(TaskError::msg(format!("echoed {echo}")));
        }
        Ok(())
    }
    let target = DemoTarget::start();
    let options = ClientOptions {
        http: HttpVersion::Http2,
        ..ClientOptions::default()
    };
    let test = Cicada::new().user(UserType::<()>::new("H2").client_options(options).task(post));
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "2",
            "-r",
            "100",
            "-t",
            "1s",
            "-s",
            "1",
        ],
    );
    assert_eq!(
        run.exit_code,
        0,
        "{:?} {:?}",
        run.failure_groups(),
        run.user_errors()
    );
    assert!(run.total_requests() > 10);
    assert!(run.user_errors().is_empty(), "{:?}", run.user_errors());
    assert_eq!(target.counters().connections(), 2);
}

#[test]
fn a_shared_pool_uses_fewer_connections() {
    let target = DemoTarget::start();
    async fn fast(user: &mut User) -> TaskResult {
        user.get("/fast").send().await?;
        Ok(())
    }
    let options = ClientOptions {
        shared_pool: true,
        ..ClientOptions::default()
    };
    let test = Cicada::new().user(
        UserType::<()>::new("Pooled")
            .client_options(options)
            .wait_time(constant(0.1))
            .task(fast),
    );
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "20",
            // Users start 50 ms apart and /fast answers in well under that: the pool has an idle connection for
            // most of them even on a loaded machine.
            "-r",
            "20",
            "-t",
            "2s",
            "-s",
            "1",
        ],
    );
    assert_eq!(run.exit_code, 0);
    assert!(
        target.counters().connections() < 20,
        "{} connections",
        target.counters().connections()
    );
}

/// A TLS server with a self-signed certificate on 127.0.0.1 speaking HTTP/1.1 and HTTP/2 (by ALPN).
struct TlsTarget {
    url: String,
    requests: Arc<AtomicU64>,
    /// TLS connections accepted.
    connections: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

fn tls_target() -> TlsTarget {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let requests = counter();
    let seen = requests.clone();
    let connections = counter();
    let accepted = connections.clone();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::Relaxed);
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    seen.fetch_add(1, Ordering::Relaxed);
                    let body = format!("{:?}", request.version());
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    TlsTarget {
        url: format!("https://localhost:{port}"),
        requests,
        connections,
        _runtime: runtime,
    }
}

#[test]
fn requests_after_idle_pauses_reuse_the_tls_connection_over_http1_and_http2() {
    // A think time of 200 ms or more frees an idle connection's buffers (user/run.rs); the request after it must go
    // over the same TLS connection, on both protocols. The user stops itself after its third request.
    const REQUESTS: u32 = 3;
    async fn paced_get(user: &mut User<u32>, spoken: &str) -> TaskResult {
        let response = user.get("/").send().await?;
        if response.text() != spoken {
            return Err(TaskError::msg(format!("spoke {}", response.text())));
        }
        user.state += 1;
        if user.state == REQUESTS {
            return stop_user();
        }
        Ok(())
    }
    async fn over_http1(user: &mut User<u32>) -> TaskResult {
        paced_get(user, "HTTP/1.1").await
    }
    async fn over_http2(user: &mut User<u32>) -> TaskResult {
        paced_get(user, "HTTP/2.0").await
    }
    for http in [HttpVersion::Http1, HttpVersion::Http2] {
        let target = tls_target();
        let options = ClientOptions {
            http,
            insecure_tls: true,
            ..ClientOptions::default()
        };
        let user_type = UserType::<u32>::new("Paused")
            .client_options(options)
            .wait_time(constant(0.3));
        let user_type = if http == HttpVersion::Http1 {
            user_type.task(over_http1)
        } else {
            user_type.task(over_http2)
        };
        let run = run_test(
            Cicada::new().user(user_type),
            &["-H", &target.url, "-u", "1", "-r", "10", "-t", "10s"],
        );
        assert_eq!(
            run.exit_code,
            0,
            "{http:?}: {:?} {:?}",
            run.failure_groups(),
            run.user_errors()
        );
        assert_eq!(run.total_requests(), u64::from(REQUESTS), "{http:?}");
        assert_eq!(
            target.requests.load(Ordering::Relaxed),
            u64::from(REQUESTS),
            "{http:?}"
        );
        assert_eq!(
            target.connections.load(Ordering::Relaxed),
            1,
            "{http:?}: one connection, kept across the pauses"
        );
    }
}

#[test]
fn tls_with_and_without_certificate_checks() {
    async fn get(user: &mut User) -> TaskResult {
        let response = user.get("/").send().await?;
        if response.text() != "HTTP/2.0" {
            return Err(TaskError::msg(format!("spoke {}", response.text())));
        }
        Ok(())
    }
    let target = tls_target();
    let insecure = ClientOptions {
        insecure_tls: true,
        ..ClientOptions::default()
    };
    let test = Cicada::new().user(
        UserType::<()>::new("Tls")
            .client_options(insecure)
            .wait_time(constant(0.05))
            .task(get),
    );
    let run = run_test(
        test,
        &[
            "-H",
            &target.url,
            "-u",
            "2",
            "-r",
            "100",
            "-t",
            "1s",
            "-s",
            "1",
        ],
    );
    assert_eq!(
        run.exit_code,
        0,
        "{:?} {:?}",
        run.failure_groups(),
        run.user_errors()
    );
    assert!(run.total_requests() > 5);
    assert_eq!(
        target.requests.load(Ordering::Relaxed),
        run.total_requests()
    );

    let test = Cicada::new().user(
        UserType::<()>::new("Strict")
            .wait_time(constant(0.1))
            .task(get),
    );
    let run = run_test(
        test,
        &["-H", &target.url, "-u", "1", "-r", "100", "-t", "1s"],
    );
    assert_eq!(run.exit_code, 1);
    let groups = run.failure_groups();
    assert!(
        groups.iter().all(|g| g.2.contains("TLS handshake")),
        "{groups:?}"
    );
    assert!(
        groups
            .iter()
            .any(|g| g.2.contains("UnknownIssuer") || g.2.contains("certificate")),
        "{groups:?}"
    );
}

/// A plain HTTP server on 127.0.0.1 (HTTP/1.1 and h2c) that serves the same JSON document gzip-, deflate- or
/// brotli-encoded by path, and keeps the `Accept-Encoding` of every request.
struct EncodingTarget {
    url: String,
    accept_encodings: Arc<std::sync::Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

/// The decoded document every encoded path serves.
fn document() -> Vec<u8> {
    let words = "compressible text ".repeat(200);
    serde_json::to_vec(&serde_json::json!({ "words": words })).unwrap()
}

/// A brotli stream of one uncompressed meta-block (valid brotli that needs no encoder): window bits 16 (a 0 bit),
/// ISLAST 0, MNIBBLES 4, MLEN-1, ISUNCOMPRESSED 1, padding; the data; then an empty last meta-block.
fn brotli_stored(data: &[u8]) -> Vec<u8> {
    assert!(!data.is_empty() && data.len() <= 65_536);
    let header = ((data.len() as u32 - 1) << 4) | (1 << 20);
    let mut out = header.to_le_bytes()[..3].to_vec();
    out.extend_from_slice(data);
    out.push(0x03);
    out
}

fn encoding_target() -> EncodingTarget {
    use std::io::Write;
    let (runtime, listener) = server_runtime();
    let port = listener.local_addr().unwrap().port();
    let plain = document();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&plain).unwrap();
    let gzip = gzip.finish().unwrap();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&plain).unwrap();
    let zlib = zlib.finish().unwrap();
    let brotli = brotli_stored(&plain);
    // 4 MiB of zeros in a few KiB: more than any cap below.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![0u8; 4 << 20]).unwrap();
    let bomb = bomb.finish().unwrap();
    let bodies: Arc<Vec<(&'static str, &'static str, Bytes)>> = Arc::new(vec![
        ("/gzip", "gzip", Bytes::from(gzip)),
        ("/deflate", "deflate", Bytes::from(zlib)),
        ("/br", "br", Bytes::from(brotli)),
        ("/bomb", "gzip", Bytes::from(bomb)),
    ]);
    let accept_encodings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = accept_encodings.clone();
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let bodies = bodies.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let accept = request
                        .headers()
                        .get("accept-encoding")
                        .map_or("(none)".to_string(), |v| {
                            v.to_str().unwrap_or("").to_string()
                        });
                    seen.lock().unwrap().push(accept);
                    let found = bodies
                        .iter()
                        .find(|(path, _, _)| *path == request.uri().path())
                        .cloned();
                    async move {
                        let response = match found {
                            Some((_, encoding, body)) => hyper::Response::builder()
                                .header("content-encoding", encoding)
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .unwrap(),
                            None => hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
            });
        }
    });
    EncodingTarget {
        url: format!("http://127.0.0.1:{port}"),
        accept_encodings,
        _runtime: runtime,
    }
}

#[test]
fn compressed_responses_are_decoded_over_http1_and_http2() {
    async fn fetch_all(user: &mut User) -> TaskResult {
        let expected = document();
        for path in ["/gzip", "/deflate", "/br"] {
            let response = user.get(path).send().await?;
            if response.body()[..] != expected[..] {
                return Err(TaskError::msg(format!("{path}: body not decoded")));
            }
            let json: serde_json::Value = response.json()?;
            if !json["words"]
                .as_str()
                .unwrap_or("")
                .starts_with("compressible")
            {
                return Err(TaskError::msg(format!("{path}: json() saw {json}")));
            }
            if response.content_length() != expected.len() as u64 || response.body_truncated() {
                return Err(TaskError::msg(format!(
                    "{path}: size {}",
                    response.content_length()
                )));
            }
        }
        // A decompression bomb: only the cap is kept, the decoded size is still counted.
        let bomb = user.get("/bomb").send().await?;
        if bomb.body().len() != 64 * 1024
            || !bomb.body_truncated()
            || bomb.content_length() != 4 << 20
        {
            return Err(TaskError::msg(format!(
                "bomb: kept {}, counted {}",
                bomb.body().len(),
                bomb.content_length()
            )));
        }
        stop_user()
    }
    for http in [HttpVersion::Http1, HttpVersion::Http2] {
        let target = encoding_target();
        let options = ClientOptions {
            http,
            max_body_bytes: 64 * 1024,
            ..ClientOptions::default()
        };
        let test = Cicada::new().user(
            UserType::<()>::new("Zip")
                .client_options(options)
                .task(fetch_all),
        );
        let run = run_test(test, &["-H", &target.url, "-u", "1", "-t", "2s"]);
        assert_eq!(
            run.exit_code,
            0,
            "{http:?}: {:?} {:?}",
            run.failure_groups(),
            run.user_errors()
        );
        for path in ["/gzip", "/deflate", "/br"] {
            let entry = run
                .entry("GET", path)
                .unwrap_or_else(|| panic!("{path} recorded"));
            assert_eq!(
                entry["avg_content_length"].as_f64().unwrap(),
                document().len() as f64,
                "{http:?} {path}: the content size is the decoded size"
            );
        }
        let seen = target.accept_encodings.lock().unwrap().clone();
        assert_eq!(seen.len(), 4);
        assert!(seen.iter().all(|a| a == "gzip, deflate, br"), "{seen:?}");
    }

    async fn raw(user: &mut User) -> TaskResult {
        let response = user.get("/gzip").send().await?;
        if response.body()[..2] != [0x1f, 0x8b] {
            return Err(TaskError::msg(
                "the body was decoded although decoding is off",
            ));
        }
        stop_user()
    }
    let target = encoding_target();
    let options = ClientOptions {
        decompress: false,
        ..ClientOptions::default()
    };
    let test = Cicada::new().user(UserType::<()>::new("Raw").client_options(options).task(raw));
    let run = run_test(test, &["-H", &target.url, "-u", "1", "-t", "2s"]);
    assert_eq!(run.exit_code, 0, "{:?}", run.user_errors());
    assert!(
        run.entry("GET", "/gzip").unwrap()["avg_content_length"]
            .as_f64()
            .unwrap()
            < document().len() as f64,
        "the content size is the encoded size when decoding is off"
    );
    assert_eq!(*target.accept_encodings.lock().unwrap(), ["(none)"]);
}

#[test]
fn basic_auth_from_the_request_the_user_the_options_and_the_host_url() {
    async fn authorization(user: &mut User, name: &'static str) -> Result<String, TaskError> {
        let echo: serde_json::Value = user.get("/echo").name(name).send().await?.json()?;
        if echo["headers"]["host"].as_str().unwrap_or("").contains('@') {
            return Err(TaskError::msg("credentials leaked into the Host header"));
        }
        Ok(echo["headers"]["authorization"]
            .as_str()
            .unwrap_or("(none)")
            .to_string())
    }
    async fn layers(user: &mut User) -> TaskResult {
        // "Basic " + base64 of "type:default", "user:own", "request:only".
        let type_default = authorization(user, "type").await?;
        user.client().set_basic_auth("user", "own");
        let own = authorization(user, "user").await?;
        let echo: serde_json::Value = user
            .get("/echo")
            .name("request")
            .basic_auth("request", "only")
            .send()
            .await?
            .json()?;
        let request = echo["headers"]["authorization"]
            .as_str()
            .unwrap_or("")
            .to_string();
        user.client().clear_basic_auth();
        let back = authorization(user, "back").await?;
        let seen = [type_default, own, request, back];
        let expected = [
            "Basic dHlwZTpkZWZhdWx0",
            "Basic dXNlcjpvd24=",
            "Basic cmVxdWVzdDpvbmx5",
            "Basic dHlwZTpkZWZhdWx0",
        ];
        if seen != expected {
            return Err(TaskError::msg(format!("{seen:?}")));
        }
        stop_user()
    }
    let target = DemoTarget::start();
    let options = ClientOptions {
        basic_auth: Some(("type".into(), "default".into())),
        ..ClientOptions::default()
    };
    let test = Cicada::new().user(
        UserType::<()>::new("Auth")
            .client_options(options)
            .task(layers),
    );
    let run = run_test(test, &["-H", &target.url(), "-u", "1", "-t", "2s"]);
    assert_eq!(
        run.exit_code,
        0,
        "{:?} {:?}",
        run.failure_groups(),
        run.user_errors()
    );
    assert_eq!(target.counters().total(), 4);

    async fn from_url(user: &mut User) -> TaskResult {
        let header = authorization(user, "url").await?;
        if header != "Basic YW5uOnMzY3IzdA==" {
            return Err(TaskError::msg(format!("saw {header}")));
        }
        stop_user()
    }
    let host = target.url().replace("http://", "http://ann:s3cr3t@");
    let test = Cicada::new().user(UserType::<()>::new("Url").task(from_url));
    let run = run_test(test, &["-H", &host, "-u", "1", "-t", "2s"]);
    assert_eq!(
        run.exit_code,
        0,
        "{:?} {:?}",
        run.failure_groups(),
        run.user_errors()
    );
    assert_eq!(run.requests("GET", "url"), 1);
}

#[test]
fn catch_response_decides_after_the_fact() {
    async fn decide(user: &mut User) -> TaskResult {
        let response = user.get("/fast").catch_response().send().await?;
        let body = response.text().into_owned();
        cicada::tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        response.failure(format!("a 200 we reject ({})", body.trim()));

        let response = user.get("/status/500").catch_response().send().await?;
        // Work after the response is not part of its response time.
        cicada::tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let response = response.success();
        assert!(!response.is_failure());

        let dropped = user
            .get("/status/404")
            .name("/dropped")
            .catch_response()
            .send()
            .await?;
        assert_eq!(dropped.status(), 404);
        drop(dropped);
        stop_user()
    }
    let target = DemoTarget::start();
    let test = Cicada::new().user(UserType::<()>::new("Judge").task(decide));
    let run = run_test(test, &["-H", &target.url(), "-u", "1", "-t", "2s"]);
    assert_eq!(run.exit_code, 1, "failures were recorded");
    assert!(run.user_errors().is_empty(), "{:?}", run.user_errors());
    assert_eq!(
        (run.requests("GET", "/fast"), run.failures("GET", "/fast")),
        (1, 1)
    );
    assert_eq!(
        (
            run.requests("GET", "/status/500"),
            run.failures("GET", "/status/500")
        ),
        (1, 0),
        "a 500 marked success counts as success"
    );
    assert_eq!(
        (
            run.requests("GET", "/dropped"),
            run.failures("GET", "/dropped")
        ),
        (1, 1),
        "dropped without a verdict: recorded once, by its status"
    );
    assert_eq!(target.counters().total(), 3);
    let groups = run.failure_groups();
    assert!(
        groups
            .iter()
            .any(|g| g.1 == "/fast" && g.2 == "a 200 we reject (ok)"),
        "{groups:?}"
    );
    assert!(
        groups
            .iter()
            .any(|g| g.1 == "/dropped" && g.2 == "HTTP 404 Not Found"),
        "{groups:?}"
    );
    let max = run.entry("GET", "/status/500").unwrap()["max_ms"]
        .as_f64()
        .unwrap();
    assert!(
        max < 400.0,
        "the recorded time is the response time, not the task's later work: {max}"
    );
}

/// A TLS server on 127.0.0.1 that closes every connection after one response and counts full and resumed
/// handshakes.
struct HandshakeTarget {
    url: String,
    full: Arc<AtomicU64>,
    resumed: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

fn handshake_target() -> HandshakeTarget {
    let (runtime, listener) = server_runtime();
    let port = listener.local_addr().unwrap().port();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (full, resumed) = (counter(), counter());
    let (full_seen, resumed_seen) = (full.clone(), resumed.clone());
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let (full, resumed) = (full_seen.clone(), resumed_seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                match tls.get_ref().1.handshake_kind() {
                    Some(rustls::HandshakeKind::Resumed) => resumed.fetch_add(1, Ordering::Relaxed),
                    _ => full.fetch_add(1, Ordering::Relaxed),
                };
                let service = service_fn(|_request: hyper::Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("connection", "close")
                            .body(Full::new(Bytes::from_static(b"ok")))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    HandshakeTarget {
        url: format!("https://localhost:{port}"),
        full,
        resumed,
        _runtime: runtime,
    }
}

#[test]
fn each_user_resumes_only_its_own_tls_sessions_unless_shared() {
    async fn two_connections(user: &mut User) -> TaskResult {
        // The server closes the connection after each response: the second request opens a new one.
        user.get("/").send().await?;
        user.get("/").send().await?;
        stop_user()
    }
    const USERS: u64 = 4;
    for share in [false, true] {
        let target = handshake_target();
        let options = ClientOptions {
            insecure_tls: true,
            share_tls_sessions: share,
            ..ClientOptions::default()
        };
        let test = Cicada::new().user(
            UserType::<()>::new("Browser")
                .client_options(options)
                .task(two_connections),
        );
        // Users start a quarter of a second apart, so a shared cache holds the first user's sessions by then.
        let run = run_test(test, &["-H", &target.url, "-u", "4", "-r", "4", "-t", "2s"]);
        assert_eq!(run.exit_code, 0, "{:?}", run.failure_groups());
        assert_eq!(run.total_requests(), 2 * USERS);
        let (full, resumed) = (
            target.full.load(Ordering::Relaxed),
            target.resumed.load(Ordering::Relaxed),
        );
        assert_eq!(full + resumed, 2 * USERS);
        if share {
            assert!(
                full <= 2,
                "shared sessions: about one full handshake, saw {full}"
            );
        } else {
            assert_eq!(
                (full, resumed),
                (USERS, USERS),
                "a new user pays a full handshake, then resumes its own session"
            );
        }
    }
}

/// What an [`h2_target`] does with a connection once it has accepted its first request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AfterFirstRequest {
    /// Keeps serving it.
    KeepOpen,
    /// Keeps serving it, and sends a PING 100 ms later, while the client is idle.
    PingWhileIdle,
    /// Sends GOAWAY (h2's graceful shutdown): the connection closes once that request is answered.
    GoAway,
    /// Answers that request, then drops the TCP connection 100 ms later without a GOAWAY.
    Drop,
}

/// An HTTP/2 server (h2c, prior knowledge) on 127.0.0.1 on the `h2` crate, with h2's default windows (64 KiB):
/// answers every request with the length of the body it read, and counts connections, requests, body bytes and
/// PING acknowledgements.
struct H2Target {
    url: String,
    connections: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    body_bytes: Arc<AtomicU64>,
    pongs: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

fn h2_target(after: AfterFirstRequest) -> H2Target {
    let (runtime, listener) = server_runtime();
    let port = listener.local_addr().unwrap().port();
    let (connections, requests, body_bytes, pongs) = (counter(), counter(), counter(), counter());
    let counters = (
        connections.clone(),
        requests.clone(),
        body_bytes.clone(),
        pongs.clone(),
    );
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (connections, requests, body_bytes, pongs) = counters.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(tcp).await else {
                    return;
                };
                connections.fetch_add(1, Ordering::Relaxed);
                let mut first = true;
                while let Some(Ok((request, respond))) = connection.accept().await {
                    requests.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(answer_with_body_length(
                        request,
                        respond,
                        body_bytes.clone(),
                    ));
                    if !std::mem::take(&mut first) {
                        continue;
                    }
                    match after {
                        AfterFirstRequest::KeepOpen => {}
                        AfterFirstRequest::PingWhileIdle => {
                            let mut ping_pong = connection.ping_pong().expect("ping_pong once");
                            let pongs = pongs.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                                if ping_pong.ping(h2::Ping::opaque()).await.is_ok() {
                                    pongs.fetch_add(1, Ordering::Relaxed);
                                }
                            });
                        }
                        AfterFirstRequest::GoAway => connection.graceful_shutdown(),
                        AfterFirstRequest::Drop => {
                            // Drive the connection long enough to send the answer, then close the socket.
                            let _ = tokio::time::timeout(
                                std::time::Duration::from_millis(100),
                                connection.accept(),
                            )
                            .await;
                            return;
                        }
                    }
                }
            });
        }
    });
    H2Target {
        url: format!("http://127.0.0.1:{port}"),
        connections,
        requests,
        body_bytes,
        pongs,
        _runtime: runtime,
    }
}

async fn answer_with_body_length(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    body_bytes: Arc<AtomicU64>,
) {
    let mut body = request.into_body();
    let mut received = 0u64;
    while let Some(Ok(chunk)) = body.data().await {
        received += chunk.len() as u64;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    body_bytes.fetch_add(received, Ordering::Relaxed);
    if let Ok(mut send) = respond.send_response(http::Response::new(()), false) {
        let _ = send.send_data(Bytes::from(received.to_string()), true);
    }
}

/// Body of the large-request test: 1 MiB, sixteen times h2's default initial window.
const LARGE_BODY: usize = 1024 * 1024;
/// Requests each user of the tests below sends before it stops itself.
const H2_REQUESTS: u32 = 3;

async fn post_then_pause(user: &mut User<u32>, body: Bytes) -> TaskResult {
    let expected = body.len().to_string();
    let response = user.post("/").body(body).send().await?;
    if response.status() != 200 || response.text() != expected {
        return Err(TaskError::msg(format!(
            "answered {} `{}`, expected `{expected}`",
            response.status(),
            response.text()
        )));
    }
    user.state += 1;
    if user.state == H2_REQUESTS {
        return stop_user();
    }
    Ok(())
}

async fn small_post(user: &mut User<u32>) -> TaskResult {
    post_then_pause(user, Bytes::from_static(b"small")).await
}

async fn large_post(user: &mut User<u32>) -> TaskResult {
    post_then_pause(user, Bytes::from(vec![b'x'; LARGE_BODY])).await
}

fn run_h2_user(target: &H2Target, large: bool, pause_s: f64) -> crate::common::Run {
    let options = ClientOptions {
        http: HttpVersion::Http2,
        ..ClientOptions::default()
    };
    let user_type = UserType::<u32>::new("H2")
        .client_options(options)
        .wait_time(constant(pause_s));
    let user_type = if large {
        user_type.task(large_post)
    } else {
        user_type.task(small_post)
    };
    run_test(
        Cicada::new().user(user_type),
        &["-H", &target.url, "-u", "1", "-r", "10", "-t", "8s"],
    )
}

fn assert_clean(run: &crate::common::Run, what: &str) {
    assert_eq!(
        run.exit_code,
        0,
        "{what}: {:?} {:?}",
        run.failure_groups(),
        run.user_errors()
    );
    assert_eq!(
        run.total_failures(),
        0,
        "{what}: {:?}",
        run.failure_groups()
    );
    assert!(
        run.user_errors().is_empty(),
        "{what}: {:?}",
        run.user_errors()
    );
    assert_eq!(run.total_requests(), u64::from(H2_REQUESTS), "{what}");
}

#[test]
fn http2_requests_after_idle_pauses_answer_the_server_s_pings_on_one_connection() {
    // Nobody polls an idle connection: the server's PING waits in the socket and is answered when the next request
    // drives the connection, which must still carry that request.
    let target = h2_target(AfterFirstRequest::PingWhileIdle);
    let run = run_h2_user(&target, false, 1.0);
    assert_clean(&run, "PING while idle");
    assert_eq!(
        target.requests.load(Ordering::Relaxed),
        u64::from(H2_REQUESTS)
    );
    assert_eq!(
        target.connections.load(Ordering::Relaxed),
        1,
        "one connection, kept across the pauses"
    );
    // The acknowledgement went out with the second request; the server counts it on its own task.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while target.pongs.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        target.pongs.load(Ordering::Relaxed),
        1,
        "the PING was answered"
    );
}

#[test]
fn http2_connections_the_server_closed_while_idle_are_replaced_without_failures() {
    for after in [AfterFirstRequest::GoAway, AfterFirstRequest::Drop] {
        let target = h2_target(after);
        let run = run_h2_user(&target, false, 0.5);
        assert_clean(&run, &format!("{after:?}"));
        assert_eq!(
            target.requests.load(Ordering::Relaxed),
            u64::from(H2_REQUESTS),
            "{after:?}: each request reached the server once"
        );
        assert_eq!(
            target.connections.load(Ordering::Relaxed),
            u64::from(H2_REQUESTS),
            "{after:?}: a fresh connection for each request"
        );
    }
}

#[test]
fn http2_request_bodies_larger_than_the_send_window_go_through() {
    let target = h2_target(AfterFirstRequest::KeepOpen);
    let run = run_h2_user(&target, true, 0.0);
    assert_clean(&run, "large bodies");
    assert_eq!(
        target.body_bytes.load(Ordering::Relaxed),
        u64::from(H2_REQUESTS) * LARGE_BODY as u64
    );
    assert_eq!(target.connections.load(Ordering::Relaxed), 1);
}
