//! `spire-agent healthcheck`: `grpc.health.v1.Health/Check` on the public Workload API socket.

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
    // -shallow: the agent serves health on the Workload API socket only once it has
    // started its endpoints, so both modes ask the same question.
    let _ = a.shallow;
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
