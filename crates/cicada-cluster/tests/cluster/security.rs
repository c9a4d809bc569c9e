//! Who may join: a wrong or missing token, another version, another test are refused with a message naming
//! the difference; garbage, plain HTTP/1 and a session that does not attach are dropped without touching a
//! live session; a master will not listen beyond loopback without a token; TLS with client certificates.

use std::time::Duration;

use bytes::Bytes;
use cicada_cluster::proto::{self, worker_message};
use cicada_cluster::{
    MasterConfig, MasterError, MasterEvent, MasterServer, MasterTls, RefusalCode, TestIdentity,
    Token, WorkerConfig, WorkerEvent, WorkerTls,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

async fn refusal_of(config: WorkerConfig) -> (cicada_cluster::Refusal, MasterEvent) {
    let (master, mut master_events) = start_master(MasterConfig {
        token: Token::new("the-right-token"),
        ..master_config()
    })
    .await;
    let (_worker, mut worker_events) = start_worker(WorkerConfig {
        master_port: master.local_addr().port(),
        ..config
    });
    let refused = expect_event(&mut worker_events, "a refusal", |event| {
        matches!(event, WorkerEvent::Refused(_))
    })
    .await;
    let WorkerEvent::Refused(refusal) = refused else {
        unreachable!()
    };
    // Final: the worker stops trying and its channel closes.
    let closed = tokio::time::timeout(PATIENCE, worker_events.recv()).await;
    assert!(matches!(closed, Ok(None)), "{closed:?}");
    let on_master = expect_event(&mut master_events, "the refusal on the master", |event| {
        matches!(event, MasterEvent::WorkerRefused { .. })
    })
    .await;
    assert!(master.workers().is_empty());
    assert_eq!(master.counters().refusals, 1);
    master.shutdown().await;
    (refusal, on_master)
}

fn good_worker() -> WorkerConfig {
    WorkerConfig {
        token: Token::new("the-right-token"),
        ..worker_config("127.0.0.1:1".parse().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_is_refused() {
    let (refusal, on_master) = refusal_of(WorkerConfig {
        token: Token::new("a-guess"),
        ..good_worker()
    })
    .await;
    assert_eq!(refusal.code, RefusalCode::Token);
    assert!(
        refusal.reason.contains("token differs"),
        "{}",
        refusal.reason
    );
    assert!(!refusal.reason.contains("the-right-token"));
    assert!(
        matches!(on_master, MasterEvent::WorkerRefused { ref refusal, .. } if refusal.code == RefusalCode::Token)
    );

    let (refusal, _) = refusal_of(WorkerConfig {
        token: None,
        ..good_worker()
    })
    .await;
    assert_eq!(refusal.code, RefusalCode::Token);
    assert!(refusal.reason.contains("sent none"), "{}", refusal.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_version_is_refused_naming_both() {
    let (refusal, _) = refusal_of(WorkerConfig {
        version: "9.9.9".into(),
        ..good_worker()
    })
    .await;
    assert_eq!(refusal.code, RefusalCode::Version);
    assert!(refusal.reason.contains("\"9.9.9\""), "{}", refusal.reason);
    assert!(refusal.reason.contains(VERSION), "{}", refusal.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_test_is_refused_naming_the_difference() {
    let (refusal, on_master) = refusal_of(WorkerConfig {
        test: TestIdentity::new(
            "fp-2",
            "user Visitor weight 1\ntask Visitor.index weight 1\ntask Visitor.checkout weight 1",
        ),
        ..good_worker()
    })
    .await;
    assert_eq!(refusal.code, RefusalCode::Fingerprint);
    assert!(
        refusal
            .reason
            .contains("only on the master: \"task Visitor.view_item weight 3\""),
        "{}",
        refusal.reason
    );
    assert!(
        refusal
            .reason
            .contains("only on the worker: \"task Visitor.checkout weight 1\""),
        "{}",
        refusal.reason
    );
    let MasterEvent::WorkerRefused { refusal: seen, .. } = on_master else {
        unreachable!()
    };
    assert_eq!(seen, refusal, "both sides read the same message");
}

/// Reads until the peer closes the connection; panics if it stays open.
async fn closed_by_master(mut stream: TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read_all = tokio::time::timeout(PATIENCE, async {
        let mut buffer = [0_u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await;
    assert!(read_all.is_ok(), "the master kept the connection open");
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_http1_and_sessions_without_attach_do_not_disturb_a_live_session() {
    let (master, mut master_events) = start_master(MasterConfig {
        attach_timeout: Duration::from_secs(1),
        ..master_config()
    })
    .await;
    let address = master.local_addr();
    let (worker, _worker_events) = start_worker(worker_config(address));
    let id = connected_worker(&mut master_events).await;
    worker.send_delta(Bytes::from_static(b"before")).unwrap();
    expect_event(&mut master_events, "a delta before", |event| {
        matches!(event, MasterEvent::StatsDelta { .. })
    })
    .await;

    // Random bytes.
    let mut garbage = TcpStream::connect(address).await.unwrap();
    let noise: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + 13) as u8).collect();
    let _ = garbage.write_all(&noise).await;
    closed_by_master(garbage).await;

    // Plain HTTP/1.
    let mut http1 = TcpStream::connect(address).await.unwrap();
    http1
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_by_master(http1).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // A connection that says nothing at all, then closes.
    drop(TcpStream::connect(address).await.unwrap());

    // A gRPC session whose first message is not an attach is refused.
    let (_raw, answer) = RawWorker::open(
        address,
        proto::WorkerMessage {
            kind: Some(worker_message::Kind::Heartbeat(
                proto::WorkerHeartbeat::default(),
            )),
        },
    )
    .await;
    assert_eq!(refused(&answer).code, proto::RefuseCode::Protocol as i32);

    // A gRPC session that never attaches is dropped after the attach timeout.
    let mut client = proto::cluster_client::ClusterClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let (_silent_sender, silent_stream) = tokio::sync::mpsc::channel::<proto::WorkerMessage>(1);
    let response = client
        .session(tokio_stream::wrappers::ReceiverStream::new(silent_stream))
        .await
        .unwrap();
    let mut inbound = response.into_inner();
    let ended = tokio::time::timeout(PATIENCE, inbound.message()).await;
    assert!(matches!(ended, Ok(Ok(None)) | Ok(Err(_))), "{ended:?}");

    // The live session went on untouched.
    worker.send_delta(Bytes::from_static(b"after")).unwrap();
    let after = expect_event(&mut master_events, "a delta after", |event| {
        matches!(event, MasterEvent::StatsDelta { .. })
    })
    .await;
    assert!(matches!(after, MasterEvent::StatsDelta { seq: 2, .. }));
    let info = master.worker(&id).unwrap();
    assert_eq!(info.reconnects, 0, "the worker never had to reconnect");
    assert_eq!(master.workers().len(), 1);
    assert_eq!(worker.counters().reconnects, 0);
    assert!(master.counters().sessions_without_attach >= 1);
    assert!(worker.shutdown(Duration::from_secs(5)).await.flushed);
    master.shutdown().await;
}

#[tokio::test]
async fn a_master_beyond_loopback_needs_a_token() {
    for host in ["0.0.0.0", "*", "::"] {
        let error = MasterServer::start(MasterConfig {
            bind_host: host.into(),
            ..master_config()
        })
        .await
        .unwrap_err();
        assert!(
            matches!(error, MasterError::TokenRequired { .. }),
            "{host}: {error}"
        );
        assert!(error.to_string().contains("cluster token"), "{error}");
    }
    // The default is loopback and needs none.
    assert_eq!(MasterConfig::default().bind_host, "127.0.0.1");
    assert_eq!(
        cicada_cluster::WorkerConfig::default().master_host,
        "127.0.0.1"
    );
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let (master, _events) = start_master(master_config()).await;
    let error = MasterServer::start(MasterConfig {
        bind_port: master.local_addr().port(),
        ..master_config()
    })
    .await
    .unwrap_err();
    assert!(matches!(error, MasterError::Bind { .. }), "{error}");
    assert!(error.to_string().contains("another master"), "{error}");
    master.shutdown().await;
}

struct Pki {
    ca: String,
    server_certificate: String,
    server_key: String,
    client_certificate: String,
    client_key: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["worker-1".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    Pki {
        ca: ca.pem(),
        server_certificate: server.pem(),
        server_key: server_key.serialize_pem(),
        client_certificate: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_certified_workers_only() {
    let pki = pki();
    let (master, mut master_events) = start_master(MasterConfig {
        tls: Some(MasterTls {
            certificate_pem: pki.server_certificate.clone().into(),
            key_pem: pki.server_key.clone().into(),
            client_ca_pem: Some(pki.ca.clone().into()),
        }),
        ..master_config()
    })
    .await;
    let address = master.local_addr();
    let tls = WorkerTls {
        ca_pem: pki.ca.clone().into(),
        domain: Some("localhost".into()),
        client_certificate_pem: Some(pki.client_certificate.clone().into()),
        client_key_pem: Some(pki.client_key.clone().into()),
    };
    let (worker, _events) = start_worker(WorkerConfig {
        tls: Some(tls.clone()),
        ..worker_config(address)
    });
    connected_worker(&mut master_events).await;
    worker.send_delta(Bytes::from_static(b"over tls")).unwrap();
    let delta = expect_event(&mut master_events, "a delta over TLS", |event| {
        matches!(event, MasterEvent::StatsDelta { .. })
    })
    .await;
    assert!(
        matches!(delta, MasterEvent::StatsDelta { ref payload, .. } if &payload[..] == b"over tls")
    );

    // Without a client certificate, or without TLS at all, a worker never attaches.
    let uncertified = WorkerTls {
        client_certificate_pem: None,
        client_key_pem: None,
        ..tls
    };
    for tls in [Some(uncertified), None] {
        let (_outsider, mut outsider_events) = start_worker(WorkerConfig {
            tls,
            master_lost_after: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            ..worker_config(address)
        });
        let event = expect_event(&mut outsider_events, "master lost", |event| {
            matches!(
                event,
                WorkerEvent::MasterLost { .. } | WorkerEvent::Connected { .. }
            )
        })
        .await;
        assert!(matches!(event, WorkerEvent::MasterLost { .. }), "{event:?}");
    }
    assert_eq!(master.workers().len(), 1);
    // The certified worker's session was not disturbed.
    worker.send_delta(Bytes::from_static(b"still")).unwrap();
    expect_event(&mut master_events, "another delta", |event| {
        matches!(event, MasterEvent::StatsDelta { seq: 2, .. })
    })
    .await;
    assert_eq!(worker.counters().reconnects, 0);
    assert!(worker.shutdown(Duration::from_secs(5)).await.flushed);
    master.shutdown().await;
}

#[tokio::test]
async fn unusable_tls_material_is_an_error_at_start() {
    let error = MasterServer::start(MasterConfig {
        tls: Some(MasterTls {
            certificate_pem:
                b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec(),
            key_pem: b"nonsense".to_vec(),
            client_ca_pem: None,
        }),
        ..master_config()
    })
    .await;
    assert!(matches!(error, Err(MasterError::Tls(_))), "{error:?}");
}
