//! `spire-server healthcheck`: is the server on the local API socket live, and ready?
//!
//! - `-shallow` checks liveness only: the server answers `grpc.health.v1.Health/Check` on its
//!   socket (whatever status it reports).
//! - The default (deep) check also requires the health status `SERVING` and, as SPIRE does,
//!   fetches the trust bundle through the Bundle API: that reads the datastore and needs an
//!   active CA, so it fails while either is missing.
//! - `-verbose` prints each step on stdout and the reason of a failure on stderr.
//!
//! Exit status 0 when healthy, 1 otherwise, with `Server is healthy.` or
//! `Server is unhealthy: <reason>`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::DEFAULT_SOCKET_PATH;
use super::client::connect;
use crate::pb::bundle as pb;

/// How long each request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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
    match check(&a).await {
        Ok(()) => {
            println!("Server is healthy.");
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            eprintln!("Server is unhealthy: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(REQUEST_TIMEOUT);
    req
}

/// Runs the checks; the error is the reason shown after `Server is unhealthy: `.
async fn check(a: &HealthcheckArgs) -> Result<(), String> {
    let verbose = a.verbose;
    let detail = |what: &str, e: &dyn std::fmt::Display| {
        if verbose {
            eprintln!("{what}: {e}");
        }
    };
    if verbose {
        println!("Checking server health...");
    }
    let connected = tokio::time::timeout(REQUEST_TIMEOUT, connect(&a.socket_path)).await;
    let channel = match connected {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            detail("Failed to check health", &format_args!("{e:#}"));
            return Err("unable to determine health".to_owned());
        }
        Err(_) => {
            detail("Failed to check health", &"timed out connecting");
            return Err("unable to determine health".to_owned());
        }
    };
    let status = match HealthClient::new(channel.clone())
        .check(request(HealthCheckRequest {
            service: String::new(),
        }))
        .await
    {
        Ok(resp) => resp.get_ref().status(),
        Err(e) => {
            detail("Failed to check health", &e.message());
            return Err("unable to determine health".to_owned());
        }
    };
    if a.shallow {
        if verbose {
            println!("Server is live (shallow check: readiness not checked).");
        }
        return Ok(());
    }
    if status != ServingStatus::Serving {
        return Err(format!("server returned status {}", status.as_str_name()));
    }
    if verbose {
        println!("Fetching bundle via Bundle API...");
    }
    let bundle = match pb::bundle_client::BundleClient::new(channel)
        .get_bundle(request(pb::GetBundleRequest { output_mask: None }))
        .await
    {
        Ok(resp) => resp.into_inner(),
        Err(e) => {
            detail("Failed to fetch bundle", &e.message());
            return Err("unable to fetch bundle".to_owned());
        }
    };
    if bundle.x509_authorities.is_empty() {
        return Err("the trust bundle has no X.509 authority (no active CA)".to_owned());
    }
    if verbose {
        println!("Successfully fetched bundle.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio_stream::wrappers::UnixListenerStream;

    use super::*;

    /// A server that is live (answers health with `status`) but has no Bundle API.
    async fn live_but_not_ready(
        dir: &std::path::Path,
        name: &str,
        status: tonic_health::ServingStatus,
    ) -> PathBuf {
        let path = dir.join(name);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("", status).await;
        tokio::spawn(async move {
            let _reporter = reporter;
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await
                .unwrap();
        });
        path
    }

    fn args(socket_path: PathBuf, shallow: bool) -> HealthcheckArgs {
        HealthcheckArgs {
            socket_path,
            shallow,
            verbose: true,
        }
    }

    #[tokio::test]
    async fn shallow_checks_liveness_and_deep_checks_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let path = live_but_not_ready(
            dir.path(),
            "not-serving.sock",
            tonic_health::ServingStatus::NotServing,
        )
        .await;
        assert_eq!(check(&args(path.clone(), true)).await, Ok(()));
        assert_eq!(
            check(&args(path.clone(), false)).await,
            Err("server returned status NOT_SERVING".to_owned())
        );
        assert_eq!(
            run(args(path, false)).await.unwrap(),
            ExitCode::from(1),
            "deep check of a server that is not ready"
        );
        // Serving, but the bundle cannot be fetched (no datastore or CA behind it).
        let no_bundle = live_but_not_ready(
            dir.path(),
            "no-bundle.sock",
            tonic_health::ServingStatus::Serving,
        )
        .await;
        assert_eq!(check(&args(no_bundle.clone(), true)).await, Ok(()));
        assert_eq!(
            check(&args(no_bundle, false)).await,
            Err("unable to fetch bundle".to_owned())
        );
        // No server at all: neither check passes.
        let missing = dir.path().join("missing.sock");
        for shallow in [true, false] {
            assert_eq!(
                check(&args(missing.clone(), shallow)).await,
                Err("unable to determine health".to_owned())
            );
        }
    }
}
