//! `spire.api.server.logger.v1.Logger`: read, set and reset the log level at run time (local
//! only).
//!
//! Mirrors `pkg/server/api/logger/v1/service.go`.

use std::sync::Arc;

use spire_telemetry::{LogHandle, LogLevel};
use tonic::{Request, Response, Status};

use super::{Ctx, Policy};
use crate::pb::logger as pb;
use crate::pb::types;
use crate::server::ServerState;

/// The Logger service.
#[derive(Debug, Clone)]
pub struct LoggerService {
    state: Arc<ServerState>,
}

impl LoggerService {
    /// A service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        LoggerService { state }
    }
}

fn to_wire(l: LogLevel) -> types::LogLevel {
    match l {
        LogLevel::Panic => types::LogLevel::Panic,
        LogLevel::Fatal => types::LogLevel::Fatal,
        LogLevel::Error => types::LogLevel::Error,
        LogLevel::Warn => types::LogLevel::Warn,
        LogLevel::Info => types::LogLevel::Info,
        LogLevel::Debug => types::LogLevel::Debug,
        LogLevel::Trace => types::LogLevel::Trace,
    }
}

fn from_wire(l: i32) -> Result<LogLevel, Status> {
    Ok(match types::LogLevel::try_from(l) {
        Ok(types::LogLevel::Panic) => LogLevel::Panic,
        Ok(types::LogLevel::Fatal) => LogLevel::Fatal,
        Ok(types::LogLevel::Error) => LogLevel::Error,
        Ok(types::LogLevel::Warn) => LogLevel::Warn,
        Ok(types::LogLevel::Info) => LogLevel::Info,
        Ok(types::LogLevel::Debug) => LogLevel::Debug,
        Ok(types::LogLevel::Trace) => LogLevel::Trace,
        _ => {
            return Err(Status::invalid_argument(format!(
                "invalid log level {l}: expected one of PANIC, FATAL, ERROR, WARN, INFO, DEBUG, TRACE"
            )));
        }
    })
}

impl LoggerService {
    fn log(&self) -> Result<&LogHandle, Status> {
        self.state
            .log
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("logging is not managed by this process"))
    }

    fn current(&self) -> Result<types::Logger, Status> {
        let log = self.log()?;
        Ok(types::Logger {
            current_level: to_wire(log.level()) as i32,
            launch_level: to_wire(log.launch_level()) as i32,
        })
    }
}

#[tonic::async_trait]
impl pb::logger_server::Logger for LoggerService {
    async fn get_logger(
        &self,
        request: Request<pb::GetLoggerRequest>,
    ) -> Result<Response<types::Logger>, Status> {
        let ctx = Ctx::new(&self.state, &request, "GetLogger", Policy::Local)?;
        ctx.respond(self.current(), &[])
    }

    async fn set_log_level(
        &self,
        request: Request<pb::SetLogLevelRequest>,
    ) -> Result<Response<types::Logger>, Status> {
        let ctx = Ctx::new(&self.state, &request, "SetLogLevel", Policy::Local)?;
        let level = request.into_inner().new_level;
        let r = (|| {
            let new = from_wire(level)?;
            self.log()?
                .set_level(new)
                .map_err(|e| Status::internal(format!("failed to set log level: {e}")))?;
            tracing::info!(new_level = new.as_str(), "Log level changed");
            self.current()
        })();
        ctx.respond(r, &[("new_level", level.to_string())])
    }

    async fn reset_log_level(
        &self,
        request: Request<pb::ResetLogLevelRequest>,
    ) -> Result<Response<types::Logger>, Status> {
        let ctx = Ctx::new(&self.state, &request, "ResetLogLevel", Policy::Local)?;
        let r = (|| {
            self.log()?
                .reset_level()
                .map_err(|e| Status::internal(format!("failed to reset log level: {e}")))?;
            self.current()
        })();
        ctx.respond(r, &[])
    }
}
