//! The `oidc-discovery-provider` binary: `oidc-discovery-provider [-config FILE] [-expandEnv]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// SPIRE OIDC Discovery Provider.
#[derive(Debug, Parser)]
#[command(name = "oidc-discovery-provider")]
struct Args {
    /// Path on disk to the HCL configuration file.
    #[arg(long = "config", default_value = "oidc-discovery-provider.conf")]
    config: PathBuf,
    /// Expand environment variables in the config file.
    #[arg(long = "expandEnv")]
    expand_env: bool,
}

fn main() -> ExitCode {
    let args: Args = match spire_cli::parse_from(std::env::args_os()) {
        Ok(a) => a,
        Err(spire_cli::CliError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let lookup = |name: &str| std::env::var(name).ok();
    let config = match spire_config::OidcConfig::load(
        &args.config,
        args.expand_env
            .then_some(&lookup as spire_config::EnvLookup<'_>),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log_config = spire_telemetry::LogConfig {
        level: config.log.level.as_str().parse().unwrap_or_default(),
        format: match config.log.format {
            spire_config::LogFormat::Json => spire_telemetry::LogFormat::Json,
            _ => spire_telemetry::LogFormat::Text,
        },
        file: config.log.file.clone(),
        source_location: false,
    };
    if let Err(e) = spire_telemetry::init(&log_config) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(spire_oidc_discovery_provider::run(
        config,
        shutdown_signal(),
    )) {
        Ok(()) => {
            tracing::info!("Stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(error = %error, "Provider failed");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
