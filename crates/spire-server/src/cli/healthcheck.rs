//! `spire-server healthcheck`: `grpc.health.v1.Health/Check` on the local socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::DEFAULT_SOCKET_PATH;
use super::client::connect;

#[derive(Debug, Args)]
pub(crate) struct HealthcheckArgs {
    /// Path to the SPIRE Server API socket
    #[arg(long = "socketPath", default_value = DEFAULT_SOCKET_PATH)]
    socket_path: PathBuf,
    /// Perform a less stringent health check
    #[arg(long = "shallow", action = clap::ArgAction::SetTrue)]
    shallow: bool,
    /// Print verbose information
    #[arg(long = "verbose", action = clap::ArgAction::SetTrue)]
    verbose: bool,
}

pub(crate) async fn run(a: HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let verbose = a.verbose;
    let _ = a.shallow;
    if verbose {
        println!("Checking server health...");
    }
    let channel = match connect(&a.socket_path).await {
        Ok(c) => c,
        Err(e) => {
            if verbose {
                eprintln!("Failed to check health: {e:#}");
            }
            eprintln!("Server is unhealthy: unable to determine health");
            return Ok(ExitCode::from(1));
        }
    };
    let mut client = HealthClient::new(channel);
    match client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        Ok(resp) if resp.get_ref().status == ServingStatus::Serving as i32 => {
            println!("Server is healthy.");
            Ok(ExitCode::SUCCESS)
        }
        Ok(resp) => {
            eprintln!(
                "Server is unhealthy: server returned status {:?}",
                resp.get_ref().status
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            if verbose {
                eprintln!("Failed to check health: {}", e.message());
            }
            eprintln!("Server is unhealthy: unable to determine health");
            Ok(ExitCode::from(1))
        }
    }
}
