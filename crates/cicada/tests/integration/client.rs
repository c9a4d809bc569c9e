//! The per-user HTTP client against real servers: bodies, cookies, redirects, checks, HTTP/2, TLS.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use cicada::prelude::*;
use http_body_util::Full;
use hyper::service::service_fn;

use crate::common::{DemoTarget, run_test};

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
            "-r",
            "100",
            "-t",
            "1s",
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
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
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
        _runtime: runtime,
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
