//! `spire-agent logger get|set|reset`: the agent's log level at run time, over the admin socket
//! (SPIRE's agent Logger API).

/// `println!` that tolerates a closed stdout.
macro_rules! outln {
    ($($t:tt)*) => { super::write_stdout(&format!("{}\n", format_args!($($t)*))) };
}

use std::process::ExitCode;

use clap::{Args, Subcommand};
use spire_cli::{OutputArgs, OutputFormat};
use spire_proto::agent::logger as pb;
use spire_proto::types;

use super::uds_channel;

/// SPIRE's default admin socket path.
pub const DEFAULT_ADMIN_SOCKET: &str = "/tmp/spire-agent/private/admin.sock";

/// `spire-agent logger ...`.
#[derive(Debug, Args)]
pub struct LoggerArgs {
    /// The logger subcommand.
    #[command(subcommand)]
    pub command: LoggerCommand,
}

/// The `logger` subcommands.
#[derive(Debug, Subcommand)]
pub enum LoggerCommand {
    /// Gets the logger details
    Get(AdminArgs),
    /// Sets the logger details
    Set(SetArgs),
    /// Reset the logger details
    Reset(AdminArgs),
}

/// Flags every admin-socket command takes.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Path to the SPIRE Agent admin API socket
    #[arg(long = "socketPath", default_value = DEFAULT_ADMIN_SOCKET)]
    pub socket_path: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Flags of `logger set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The new log level, one of (panic, fatal, error, warn, info, debug, trace)
    #[arg(long = "level")]
    pub level: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Connects to the admin socket named by `-socketPath`.
pub(crate) async fn admin_channel(socket: &str) -> Result<tonic::transport::Channel, String> {
    let path = spire_cli::socket_path_from_addr(socket).map_err(|e| e.to_string())?;
    uds_channel(&path).await.map_err(|e| {
        format!(
            "cannot connect to the admin socket {}: {}",
            path.display(),
            super::error_chain(&e)
        )
    })
}

/// Runs `spire-agent logger ...`.
pub fn main(args: LoggerArgs) -> ExitCode {
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
    match rt.block_on(run(args.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(cmd: LoggerCommand) -> Result<(), String> {
    let (admin, logger) = match cmd {
        LoggerCommand::Get(a) => {
            let mut client =
                pb::logger_client::LoggerClient::new(admin_channel(&a.socket_path).await?);
            let l = client
                .get_logger(pb::GetLoggerRequest {})
                .await
                .map_err(|s| format!("error fetching logger: {}", s.message()))?
                .into_inner();
            (a, l)
        }
        LoggerCommand::Set(a) => {
            let Some(level) = &a.level else {
                return Err("a value (-level) must be set".to_owned());
            };
            let Some(new_level) = level_from_name(level) else {
                return Err(format!("the value {level:?} is not a valid setting"));
            };
            let mut client =
                pb::logger_client::LoggerClient::new(admin_channel(&a.admin.socket_path).await?);
            let l = client
                .set_log_level(pb::SetLogLevelRequest {
                    new_level: new_level as i32,
                })
                .await
                .map_err(|s| format!("failed to set log level: {}", s.message()))?
                .into_inner();
            (a.admin, l)
        }
        LoggerCommand::Reset(a) => {
            let mut client =
                pb::logger_client::LoggerClient::new(admin_channel(&a.socket_path).await?);
            let l = client
                .reset_log_level(pb::ResetLogLevelRequest {})
                .await
                .map_err(|s| format!("failed to reset log level: {}", s.message()))?
                .into_inner();
            (a, l)
        }
    };
    if admin.output.output == OutputFormat::Json {
        let v = serde_json::json!({
            "current_level": enum_name(logger.current_level),
            "launch_level": enum_name(logger.launch_level),
        });
        outln!("{v}");
    } else {
        outln!("Logger Level : {}", level_name(logger.current_level));
        outln!("Launch Level : {}", level_name(logger.launch_level));
        outln!("");
    }
    Ok(())
}

fn level_from_name(s: &str) -> Option<types::LogLevel> {
    Some(match s.to_ascii_lowercase().as_str() {
        "panic" => types::LogLevel::Panic,
        "fatal" => types::LogLevel::Fatal,
        "error" => types::LogLevel::Error,
        "warn" | "warning" => types::LogLevel::Warn,
        "info" => types::LogLevel::Info,
        "debug" => types::LogLevel::Debug,
        "trace" => types::LogLevel::Trace,
        _ => return None,
    })
}

/// The protojson name of a `LogLevel` value.
fn enum_name(l: i32) -> &'static str {
    types::LogLevel::try_from(l).map_or("UNSPECIFIED", |l| l.as_str_name())
}

/// The level as logrus names it (SPIRE's pretty output).
fn level_name(l: i32) -> &'static str {
    match types::LogLevel::try_from(l) {
        Ok(types::LogLevel::Panic) => "panic",
        Ok(types::LogLevel::Fatal) => "fatal",
        Ok(types::LogLevel::Error) => "error",
        Ok(types::LogLevel::Warn) => "warning",
        Ok(types::LogLevel::Info) => "info",
        Ok(types::LogLevel::Debug) => "debug",
        Ok(types::LogLevel::Trace) => "trace",
        _ => "unspecified",
    }
}
