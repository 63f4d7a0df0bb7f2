//! `spire-server run` and `spire-server validate`.
//!
//! Mirrors `cmd/spire-server/cli/run/run.go`: the config file is read (optionally expanding
//! `$VAR`), flags override it, and any unknown key or bad value stops the start with the file,
//! the key and the reason.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use spire_config::{ServerConfig, ServerOverrides};

/// SPIRE's default config path.
pub const DEFAULT_CONFIG_PATH: &str = "conf/server/server.conf";

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Path to a SPIRE config file
    #[arg(long = "config", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Expand environment variables in SPIRE config file
    #[arg(long = "expandEnv", action = clap::ArgAction::SetTrue)]
    expand_env: bool,
    /// IP address or DNS name of the SPIRE server
    #[arg(long = "bindAddress")]
    bind_address: Option<String>,
    /// Port number of the SPIRE server
    #[arg(long = "serverPort")]
    server_port: Option<u16>,
    /// Path to bind the SPIRE Server API socket to
    #[arg(long = "socketPath")]
    socket_path: Option<PathBuf>,
    /// The trust domain that this server belongs to
    #[arg(long = "trustDomain")]
    trust_domain: Option<String>,
    /// Directory to store runtime data to
    #[arg(long = "dataDir")]
    data_dir: Option<PathBuf>,
    /// File to write logs to
    #[arg(long = "logFile")]
    log_file: Option<PathBuf>,
    /// 'text' or 'json'
    #[arg(long = "logFormat")]
    log_format: Option<String>,
    /// 'debug', 'info', 'warn', or 'error'
    #[arg(long = "logLevel")]
    log_level: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Path to a SPIRE config file
    #[arg(long = "config", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Expand environment variables in SPIRE config file
    #[arg(long = "expandEnv", action = clap::ArgAction::SetTrue)]
    expand_env: bool,
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn load(
    path: &std::path::Path,
    expand: bool,
    overrides: &ServerOverrides,
) -> Result<ServerConfig, spire_config::ConfigError> {
    let lookup: &dyn Fn(&str) -> Option<String> = &env_lookup;
    ServerConfig::load(path, expand.then_some(lookup), overrides)
}

/// `spire-server validate`.
pub(crate) fn validate(a: ValidateArgs) -> anyhow::Result<ExitCode> {
    let config = match load(&a.config, a.expand_env, &ServerOverrides::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SPIRE server configuration file is invalid: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if let Err(e) = crate::server::validate_plugins(&config) {
        eprintln!(
            "SPIRE server configuration file is invalid: {}: {e}",
            a.config.display()
        );
        return Ok(ExitCode::from(1));
    }
    println!("SPIRE server configuration file is valid.");
    Ok(ExitCode::SUCCESS)
}

/// `spire-server run`.
pub(crate) fn run(a: RunArgs) -> ExitCode {
    let overrides = ServerOverrides {
        bind_address: a.bind_address.clone(),
        server_port: a.server_port,
        socket_path: a.socket_path.clone(),
        trust_domain: a.trust_domain.clone(),
        data_dir: a.data_dir.clone(),
        log_file: a.log_file.clone(),
        log_format: a.log_format.clone(),
        log_level: a.log_level.clone(),
    };
    let config = match load(&a.config, a.expand_env, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = crate::server::validate_plugins(&config) {
        eprintln!("Error: {}: {e}", a.config.display());
        return ExitCode::from(1);
    }
    let log_config = spire_telemetry::LogConfig {
        level: config.log.level.as_str().parse().unwrap_or_default(),
        format: match config.log.format {
            spire_config::LogFormat::Json => spire_telemetry::LogFormat::Json,
            _ => spire_telemetry::LogFormat::Text,
        },
        file: config.log.file.clone(),
        source_location: config.log.source_location,
    };
    let log = match spire_telemetry::init(&log_config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("Error: cannot set up logging: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let clock: Arc<dyn spire_spiffe::Clock> = Arc::new(spire_spiffe::SystemClock);
        let state = match crate::server::build_state(config, clock, Some(log)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "Server failed to start");
                eprintln!("Error: {}", error_chain(&e));
                return ExitCode::from(1);
            }
        };
        let _ops = match start_operations(&state).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "Server failed to start");
                eprintln!("Error: {}", error_chain(&e));
                return ExitCode::from(1);
            }
        };
        match crate::server::run(state, Vec::new()).await {
            Ok(()) => {
                tracing::info!("Server stopped gracefully");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "Server crashed");
                eprintln!("Error: {}", error_chain(&e));
                ExitCode::from(1)
            }
        }
    })
}

/// The `telemetry { Prometheus }` and `health_checks` listeners, when configured; they stop
/// when the returned handles drop. Ready means the datastore answers and an X.509 CA is active.
async fn start_operations(
    state: &Arc<crate::server::ServerState>,
) -> Result<
    (
        Option<spire_telemetry::metrics::MetricsServer>,
        Option<spire_telemetry::health::HealthServer>,
    ),
    spire_telemetry::TelemetryError,
> {
    let telemetry = &state.config.telemetry;
    let metrics = match &telemetry.prometheus {
        Some(p) => Some(
            spire_telemetry::metrics::start_prometheus(
                &spire_telemetry::metrics::PrometheusListenerConfig {
                    host: p.host.clone(),
                    port: p.port,
                },
                telemetry.metric_prefix.as_deref().unwrap_or("spire_server"),
            )
            .await?,
        ),
        None => None,
    };
    let h = &state.config.health_checks;
    let health = if h.listener_enabled {
        let check = |state: Arc<crate::server::ServerState>, need_ca: bool| async move {
            let datastore = state.datastore.ping().await.is_ok();
            let ca = state.ca.server_svid().is_some();
            let ok = datastore && (ca || !need_ca);
            (
                ok,
                serde_json::json!({ "datastore": datastore, "ca_active": ca }),
            )
        };
        let (live_state, ready_state) = (Arc::clone(state), Arc::clone(state));
        Some(
            spire_telemetry::health::start(
                &spire_telemetry::health::HealthListenerConfig {
                    bind_address: h.bind_address.clone(),
                    bind_port: h.bind_port,
                    live_path: h.live_path.clone(),
                    ready_path: h.ready_path.clone(),
                },
                move || check(Arc::clone(&live_state), false),
                move || check(Arc::clone(&ready_state), true),
            )
            .await?,
        )
    } else {
        None
    };
    Ok((metrics, health))
}

/// `outer: inner: innermost`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
