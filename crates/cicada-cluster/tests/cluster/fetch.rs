//! `FetchTest`: a worker started without a test (`-f -`) takes the master's test source, after the token and the
//! version matched; a master that runs a compiled test, or a wrong token, is a final answer; a master that is not
//! up yet is waited for.

use std::time::Duration;

use bytes::Bytes;
use cicada_cluster::{FetchTestError, MasterConfig, TestSource, Token, fetch_test};

use crate::common::*;

fn scripted_master() -> MasterConfig {
    MasterConfig {
        token: Token::new("s3cret"),
        test_source: Some(TestSource {
            name: "shop.lua".into(),
            payload: Bytes::from_static(b"local Shopper = cicada.user { name = 'Shopper' }"),
        }),
        ..master_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_takes_the_masters_test_source() {
    let (master, _events) = start_master(scripted_master()).await;
    let config = cicada_cluster::WorkerConfig {
        token: Token::new("s3cret"),
        ..worker_config(master.local_addr())
    };
    let source = fetch_test(&config, PATIENCE).await.expect("the test");
    assert_eq!(source.name, "shop.lua");
    assert_eq!(
        &source.payload[..],
        b"local Shopper = cicada.user { name = 'Shopper' }"
    );
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_another_version_or_a_compiled_test_are_final_answers() {
    let (master, _events) = start_master(scripted_master()).await;
    let wrong_token = cicada_cluster::WorkerConfig {
        token: Token::new("guess"),
        ..worker_config(master.local_addr())
    };
    let started = std::time::Instant::now();
    let error = fetch_test(&wrong_token, PATIENCE).await.unwrap_err();
    assert!(
        matches!(&error, FetchTestError::Refused { reason, .. } if reason.contains("token")),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no retries after a refusal"
    );
    let other_version = cicada_cluster::WorkerConfig {
        token: Token::new("s3cret"),
        version: "9.9.9".into(),
        ..worker_config(master.local_addr())
    };
    let error = fetch_test(&other_version, PATIENCE).await.unwrap_err();
    assert!(error.to_string().contains("9.9.9"), "{error}");
    master.shutdown().await;

    let (compiled, _events) = start_master(master_config()).await;
    let error = fetch_test(&worker_config(compiled.local_addr()), PATIENCE)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("compiled test"), "{error}");
    compiled.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_not_up_yet_is_waited_for_and_an_absent_one_is_reported() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = cicada_cluster::WorkerConfig {
        master_port: port,
        token: Token::new("s3cret"),
        ..worker_config(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    };
    let fetch = tokio::spawn({
        let config = config.clone();
        async move { fetch_test(&config, PATIENCE).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (master, _events) = start_master(MasterConfig {
        bind_port: port,
        ..scripted_master()
    })
    .await;
    let source = fetch
        .await
        .unwrap()
        .expect("the test, once the master is up");
    assert_eq!(source.name, "shop.lua");
    master.shutdown().await;

    let error = fetch_test(&config, Duration::from_millis(600))
        .await
        .unwrap_err();
    assert!(
        matches!(error, FetchTestError::Unreachable { .. }),
        "{error}"
    );
}
