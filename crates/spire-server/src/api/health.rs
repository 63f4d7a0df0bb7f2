//! `grpc.health.v1.Health` (tonic-health): SERVING once the server is up.

use std::sync::Arc;

use tonic_health::server::HealthReporter;

use crate::server::ServerState;

/// The health service, already reporting SERVING for the whole server (`""`).
pub async fn service(
    _state: &Arc<ServerState>,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service): (HealthReporter, _) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    service
}
