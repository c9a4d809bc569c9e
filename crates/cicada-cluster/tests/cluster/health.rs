//! The gRPC health service on the master's port, as a Kubernetes `grpc:` probe uses it: `SERVING` for the server
//! and the cluster service, `NOT_FOUND` for any other name, no token needed, a live session undisturbed, and no
//! answer once the master has shut down.

use std::net::SocketAddr;

use cicada_cluster::{CLUSTER_SERVICE, MasterConfig, Token, WorkerConfig};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::common::*;

async fn health_client(
    master: SocketAddr,
) -> Result<HealthClient<tonic::transport::Channel>, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{master}"))
        .expect("a valid address")
        .connect_timeout(PATIENCE)
        .timeout(PATIENCE)
        .connect()
        .await?;
    Ok(HealthClient::new(channel))
}

async fn check(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<HealthCheckResponse, tonic::Status> {
    client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_answers_health_checks_without_a_token_beside_a_live_session() {
    let (master, mut master_events) = start_master(MasterConfig {
        token: Token::new("the-cluster-token"),
        ..master_config()
    })
    .await;
    let address = master.local_addr();
    let (worker, _worker_events) = start_worker(WorkerConfig {
        token: Token::new("the-cluster-token"),
        ..worker_config(address)
    });
    let worker_id = connected_worker(&mut master_events).await;

    let mut client = health_client(address).await.expect("the probe connects");
    for service in ["", CLUSTER_SERVICE] {
        let answer = check(&mut client, service).await.expect("an answer");
        assert_eq!(
            answer.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
    let unknown = check(&mut client, "grpc.reflection.v1.ServerReflection")
        .await
        .expect_err("an unknown service is not reported as serving");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    // Watch, as a streaming probe does: the current status comes at once.
    let mut watch = client
        .watch(HealthCheckRequest {
            service: CLUSTER_SERVICE.to_string(),
        })
        .await
        .expect("a watch stream")
        .into_inner();
    let first = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .expect("the status within the patience")
        .expect("a status")
        .expect("the stream is open");
    assert_eq!(first.status(), ServingStatus::Serving);

    // The probes are not sessions: nothing was refused, nothing counted as a session without an attach, and the
    // worker is still attached and heard from.
    let counters = master.counters();
    assert_eq!(counters.refusals, 0);
    assert_eq!(counters.sessions_without_attach, 0);
    let workers = master.workers();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].id.as_str(), worker_id);
    assert_eq!(workers[0].presence, cicada_cluster::Presence::Connected);

    drop(watch);
    drop(client);
    worker.shutdown(PATIENCE).await;
    master.shutdown().await;

    // Once the master is down the probe gets no answer: a new connection is refused.
    let after = match health_client(address).await {
        Err(error) => Err(error.to_string()),
        Ok(mut client) => check(&mut client, "")
            .await
            .map_err(|status| status.to_string()),
    };
    assert!(after.is_err(), "a stopped master still answered: {after:?}");
}
