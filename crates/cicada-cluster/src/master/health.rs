//! The standard gRPC health service (`grpc.health.v1.Health`, from `tonic-health`) on the master's cluster
//! port, so that an orchestrator can ask whether the master is up with a plain gRPC health check: a Kubernetes
//! `grpc:` liveness or readiness probe, `grpc_health_probe`, a load balancer.
//!
//! It answers `SERVING` for the whole server (service name `""`) and for [`CLUSTER_SERVICE`] as long as the
//! master serves sessions, and `NOT_FOUND` for any other name. When the master shuts down, the port closes and
//! the probe fails. It needs no token: it tells a peer only that a cicada master listens here, which the open
//! port tells anyway, and nothing about the test, the run or the workers. Its state is fixed at two entries (the
//! reporter's map never grows), and its `Watch` streams are bounded like any other stream on the port (open
//! connections, streams per connection).

use tonic_health::pb::health_server::{Health, HealthServer};

/// The gRPC name of the cluster service, as a health check asks for it.
pub const CLUSTER_SERVICE: &str = "cicada.cluster.v1.Cluster";

/// A health service that reports the master and its cluster service as serving.
pub(crate) async fn serving() -> HealthServer<impl Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    // The reporter starts with "" (the whole server) serving; the cluster service is the other name a probe may
    // ask for. The reporter may be dropped: the service keeps the statuses it was given.
    reporter
        .set_service_status(CLUSTER_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    service
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::server::NamedService;

    #[test]
    fn the_cluster_service_name_is_the_generated_one() {
        assert_eq!(
            CLUSTER_SERVICE,
            <crate::proto::cluster_server::ClusterServer<crate::master::session::ClusterService> as NamedService>::NAME
        );
    }
}
