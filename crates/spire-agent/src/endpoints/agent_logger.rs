//! SPIRE's agent Logger API (`spire.api.agent.logger.v1.Logger`: GetLogger, SetLogLevel,
//! ResetLogLevel) on the admin socket (`spire-agent logger get|set|reset`).
//!
//! The level is the reloadable filter of the process's tracing subscriber
//! ([`spire_telemetry::LogHandle`]). That subscriber is process-wide, so its handle is too:
//! `spire-agent run` hands it over once with [`install_log_handle`]; without it (an agent
//! embedded in another process) every call answers `FailedPrecondition`.

use std::sync::OnceLock;

use spire_proto::agent::logger as pb;
use spire_proto::agent::logger::logger_server::{Logger, LoggerServer};
use spire_proto::types;
use spire_telemetry::{LogHandle, LogLevel};
use tonic::{Request, Response, Status};

static LOG_HANDLE: OnceLock<LogHandle> = OnceLock::new();

/// Makes `handle` (the installed subscriber's) the one the Logger API controls. Only the first
/// call has an effect.
pub fn install_log_handle(handle: LogHandle) {
    let _ = LOG_HANDLE.set(handle);
}

/// The Logger service.
#[derive(Debug, Clone, Default)]
pub struct LoggerService {
    handle: Option<LogHandle>,
}

impl LoggerService {
    /// A service over the handle given to [`install_log_handle`] (if any).
    pub fn new() -> Self {
        Self {
            handle: LOG_HANDLE.get().cloned(),
        }
    }

    /// A service over `handle` (tests).
    pub fn with_handle(handle: LogHandle) -> Self {
        Self {
            handle: Some(handle),
        }
    }

    /// Wraps it for tonic.
    pub fn into_server(self) -> LoggerServer<Self> {
        LoggerServer::new(self)
    }

    fn handle(&self) -> Result<&LogHandle, Status> {
        self.handle
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("logging is not managed by this process"))
    }

    fn current(&self) -> Result<types::Logger, Status> {
        let h = self.handle()?;
        Ok(types::Logger {
            current_level: to_wire(h.level()) as i32,
            launch_level: to_wire(h.launch_level()) as i32,
        })
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

/// The wire level as ours; SPIRE's messages for UNSPECIFIED and unknown values.
fn from_wire(l: i32) -> Result<LogLevel, Status> {
    Ok(match types::LogLevel::try_from(l) {
        Ok(types::LogLevel::Unspecified) => {
            return Err(Status::invalid_argument(
                "newLevel value cannot be LogLevel_UNSPECIFIED",
            ));
        }
        Ok(types::LogLevel::Panic) => LogLevel::Panic,
        Ok(types::LogLevel::Fatal) => LogLevel::Fatal,
        Ok(types::LogLevel::Error) => LogLevel::Error,
        Ok(types::LogLevel::Warn) => LogLevel::Warn,
        Ok(types::LogLevel::Info) => LogLevel::Info,
        Ok(types::LogLevel::Debug) => LogLevel::Debug,
        Ok(types::LogLevel::Trace) => LogLevel::Trace,
        Err(_) => return Err(Status::invalid_argument("unsupported log level")),
    })
}

#[tonic::async_trait]
impl Logger for LoggerService {
    async fn get_logger(
        &self,
        _request: Request<pb::GetLoggerRequest>,
    ) -> Result<Response<types::Logger>, Status> {
        tracing::info!("GetLogger called");
        self.current().map(Response::new)
    }

    async fn set_log_level(
        &self,
        request: Request<pb::SetLogLevelRequest>,
    ) -> Result<Response<types::Logger>, Status> {
        let level = from_wire(request.into_inner().new_level)?;
        let h = self.handle()?;
        tracing::info!(new_log_level = level.as_str(), "SetLogLevel called");
        h.set_level(level)
            .map_err(|e| Status::internal(format!("failed to set log level: {e}")))?;
        self.current().map(Response::new)
    }

    async fn reset_log_level(
        &self,
        _request: Request<pb::ResetLogLevelRequest>,
    ) -> Result<Response<types::Logger>, Status> {
        let h = self.handle()?;
        tracing::info!(
            launch_log_level = h.launch_level().as_str(),
            "ResetLogLevel called"
        );
        h.reset_level()
            .map_err(|e| Status::internal(format!("failed to reset log level: {e}")))?;
        self.current().map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle and the subscriber it controls (the reload fails once that is dropped).
    fn handle() -> (LogHandle, Box<dyn tracing::Subscriber + Send + Sync>) {
        let cfg = spire_telemetry::LogConfig {
            level: LogLevel::Info,
            ..Default::default()
        };
        let (subscriber, handle) = spire_telemetry::build(&cfg).unwrap();
        (handle, subscriber)
    }

    #[tokio::test]
    async fn set_get_and_reset_the_level() {
        let (h, _subscriber) = handle();
        let svc = LoggerService::with_handle(h);
        let got = svc
            .get_logger(Request::new(pb::GetLoggerRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.current_level, types::LogLevel::Info as i32);
        assert_eq!(got.launch_level, types::LogLevel::Info as i32);
        let set = svc
            .set_log_level(Request::new(pb::SetLogLevelRequest {
                new_level: types::LogLevel::Debug as i32,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(set.current_level, types::LogLevel::Debug as i32);
        assert_eq!(set.launch_level, types::LogLevel::Info as i32);
        let reset = svc
            .reset_log_level(Request::new(pb::ResetLogLevelRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reset.current_level, types::LogLevel::Info as i32);
    }

    #[tokio::test]
    async fn unspecified_and_unknown_levels_are_invalid() {
        let (h, _subscriber) = handle();
        let svc = LoggerService::with_handle(h);
        for (level, msg) in [
            (0, "newLevel value cannot be LogLevel_UNSPECIFIED"),
            (42, "unsupported log level"),
        ] {
            let err = svc
                .set_log_level(Request::new(pb::SetLogLevelRequest { new_level: level }))
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert_eq!(err.message(), msg);
        }
    }

    #[tokio::test]
    async fn without_a_handle_calls_fail_as_a_precondition() {
        let err = LoggerService::default()
            .get_logger(Request::new(pb::GetLoggerRequest {}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    }
}
