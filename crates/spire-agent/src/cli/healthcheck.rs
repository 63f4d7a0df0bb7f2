//! `spire-agent healthcheck`: `grpc.health.v1.Health/Check` on the public Workload API socket.
//!
//! `-shallow` checks liveness only: the agent answers the health check (whatever status it
//! reports). The default check also requires the status `SERVING`. `-verbose` prints the steps
//! on stdout and the reason of a failure on stderr. Exit status 0 when healthy, 1 otherwise.

/// `println!` that tolerates a closed stdout.
macro_rules! outln {
    () => { super::write_stdout("\n") };
    ($($t:tt)*) => { super::write_stdout(&format!("{}\n", format_args!($($t)*))) };
}

use std::process::ExitCode;

use clap::Args;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{DEFAULT_PUBLIC_SOCKET, uds_channel};

/// Flags of `spire-agent healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Path to the SPIRE Agent API socket
    #[arg(long = "socketPath", default_value = DEFAULT_PUBLIC_SOCKET)]
    pub socket_path: String,
    /// Perform a less stringent health check
    #[arg(long = "shallow", action = clap::ArgAction::SetTrue)]
    pub shallow: bool,
    /// Print verbose information
    #[arg(long = "verbose", action = clap::ArgAction::SetTrue)]
    pub verbose: bool,
}

/// Runs `spire-agent healthcheck`: exit 0 when the agent serves, 1 otherwise.
pub fn main(a: HealthcheckArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(run(a))
}

fn unhealthy(verbose: bool, detail: &str) -> ExitCode {
    if verbose {
        eprintln!("Failed to check health: {detail}");
    }
    eprintln!("Agent is unhealthy: unable to determine health");
    ExitCode::from(1)
}

async fn run(a: HealthcheckArgs) -> ExitCode {
    if a.verbose {
        outln!("Checking agent health...");
    }
    let path = match spire_cli::socket_path_from_addr(&a.socket_path) {
        Ok(p) => p,
        Err(e) => return unhealthy(a.verbose, &e.to_string()),
    };
    let channel = match uds_channel(&path).await {
        Ok(c) => c,
        Err(e) => return unhealthy(a.verbose, &e.to_string()),
    };
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.set_timeout(std::time::Duration::from_secs(5));
    match HealthClient::new(channel).check(req).await {
        Ok(_) if a.shallow => {
            if a.verbose {
                outln!("Agent is live (shallow check: readiness not checked).");
            }
            outln!("Agent is healthy.");
            ExitCode::SUCCESS
        }
        Ok(resp) if resp.get_ref().status() == ServingStatus::Serving => {
            outln!("Agent is healthy.");
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            eprintln!(
                "Agent is unhealthy: agent returned status {:?}",
                resp.get_ref().status()
            );
            ExitCode::from(1)
        }
        Err(s) => unhealthy(a.verbose, s.message()),
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::wrappers::UnixListenerStream;

    use super::*;

    #[tokio::test]
    async fn shallow_checks_liveness_and_deep_checks_serving() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(UnixListenerStream::new(listener)),
        );
        let args = |socket: &std::path::Path, shallow: bool| HealthcheckArgs {
            socket_path: socket.display().to_string(),
            shallow,
            verbose: true,
        };
        assert_eq!(run(args(&path, true)).await, ExitCode::SUCCESS);
        assert_eq!(run(args(&path, false)).await, ExitCode::from(1));
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        assert_eq!(run(args(&path, false)).await, ExitCode::SUCCESS);
        let missing = dir.path().join("missing.sock");
        assert_eq!(run(args(&missing, true)).await, ExitCode::from(1));
    }
}
