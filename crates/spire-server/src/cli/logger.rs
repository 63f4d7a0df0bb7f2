//! `spire-server logger get|set|reset`.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;

use super::CommonArgs;
use super::client::{connect, rpc_error};
use super::printer::{self, OutputFormat};
use crate::pb::{logger as pb, types};

#[derive(Debug, Subcommand)]
pub(crate) enum LoggerCommand {
    /// Gets the logger details
    Get(GetArgs),
    /// Sets the logger details
    Set(SetArgs),
    /// Reset the logger details
    Reset(GetArgs),
}

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SetArgs {
    /// The new log level, one of (panic, fatal, error, warn, info, debug, trace)
    #[arg(long = "level")]
    level: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

pub(crate) async fn run(cmd: LoggerCommand) -> anyhow::Result<ExitCode> {
    let (common, logger) = match cmd {
        LoggerCommand::Get(a) => {
            let mut client =
                pb::logger_client::LoggerClient::new(connect(&a.common.socket_path).await?);
            let l = client
                .get_logger(pb::GetLoggerRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            (a.common, l)
        }
        LoggerCommand::Set(a) => {
            let Some(level) = &a.level else {
                bail!("a value (-level) must be set");
            };
            let Some(new_level) = level_from_name(level) else {
                bail!(
                    "the value {level:?} is not a valid log level, it must be one of (panic, fatal, error, warn, info, debug, trace)"
                );
            };
            let mut client =
                pb::logger_client::LoggerClient::new(connect(&a.common.socket_path).await?);
            let l = client
                .set_log_level(pb::SetLogLevelRequest {
                    new_level: new_level as i32,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            (a.common, l)
        }
        LoggerCommand::Reset(a) => {
            let mut client =
                pb::logger_client::LoggerClient::new(connect(&a.common.socket_path).await?);
            let l = client
                .reset_log_level(pb::ResetLogLevelRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            (a.common, l)
        }
    };
    if common.output == OutputFormat::Json {
        printer::print_json(&json!({
            "current_level": enum_name(logger.current_level),
            "launch_level": enum_name(logger.launch_level),
        }));
    } else {
        println!("Logger Level : {}", level_name(logger.current_level));
        println!("Launch Level : {}", level_name(logger.launch_level));
        println!();
    }
    Ok(ExitCode::SUCCESS)
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
