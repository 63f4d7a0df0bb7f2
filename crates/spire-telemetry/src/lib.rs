//! Logging setup for the `spire-server` and `spire-agent` binaries, and the shared log field names.
//!
//! [`init`] installs the process-wide tracing subscriber (text or JSON lines, to stderr or to a
//! `log_file`) and returns a [`LogHandle`] whose level can be read, changed and reset at run time
//! (the Logger API). [`field`] holds the field names every crate uses in log events. [`health`]
//! serves the `health_checks {}` HTTP listener; [`metrics`] installs the Prometheus recorder,
//! serves `/metrics`, names every metric once and provides the tonic [`metrics::GrpcMetricsLayer`].
//!
//! Invariant: this is the only crate that installs a global subscriber. Libraries only emit events.

pub mod field;
pub mod health;
mod http;
mod json;
pub mod metrics;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing::Subscriber;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Registry, reload};

/// How to log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogConfig {
    /// The level at start; also the level [`LogHandle::reset_level`] returns to.
    pub level: LogLevel,
    /// Text or JSON lines.
    pub format: LogFormat,
    /// Append to this file instead of stderr.
    pub file: Option<PathBuf>,
    /// Include the source file and line in each event.
    pub source_location: bool,
}

/// Targets of libraries whose DEBUG events only `trace` shows (see [`LogLevel::targets`]).
const LIBRARY_TARGETS: &[&str] = &[
    "sqlx",
    "h2",
    "hyper",
    "hyper_util",
    "tower",
    "tonic",
    "rustls",
    "tokio_rustls",
    "axum",
    "mio",
];

/// SPIRE's log levels. `panic` and `fatal` log errors only (tracing has no higher level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum LogLevel {
    /// `panic`.
    Panic,
    /// `fatal`.
    Fatal,
    /// `error`.
    Error,
    /// `warn`.
    Warn,
    /// `info`.
    #[default]
    Info,
    /// `debug`.
    Debug,
    /// `trace`.
    Trace,
}

/// Text or JSON log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogFormat {
    /// `key=value` text lines.
    #[default]
    Text,
    /// One JSON object per line as SPIRE writes them: `time`, `level`, `msg` and the fields
    /// at the top level.
    Json,
}

/// Why logging could not be set up or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The log file could not be opened.
    #[error("could not open log file {}", path.display())]
    OpenLogFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A global subscriber was already installed.
    #[error("a global log subscriber is already installed")]
    AlreadyInstalled(#[source] tracing::subscriber::SetGlobalDefaultError),
    /// The subscriber owning the level filter is gone.
    #[error("could not change the log level")]
    Reload(#[source] reload::Error),
    /// A health or metrics listener could not bind its address.
    #[error("could not listen on {address}")]
    Bind {
        /// `host:port` as configured.
        address: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The metrics recorder could not be built or installed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// A signal handler could not be installed.
    #[error("could not install a signal handler")]
    Signal(#[source] io::Error),
}

/// Controls the installed subscriber: the log level (Logger API) and the log file (SIGUSR2).
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<Targets, Registry>,
    launch_level: LogLevel,
    current: Arc<Mutex<LogLevel>>,
    file: Option<Arc<ReopenableFile>>,
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle")
            .field("launch_level", &self.launch_level)
            .field("level", &self.level())
            .finish_non_exhaustive()
    }
}

/// Installs the global subscriber described by `config`.
pub fn init(config: &LogConfig) -> Result<LogHandle, TelemetryError> {
    let (subscriber, handle) = build(config)?;
    tracing::subscriber::set_global_default(subscriber)
        .map_err(TelemetryError::AlreadyInstalled)?;
    Ok(handle)
}

/// Builds the subscriber without installing it (tests use it with
/// `tracing::subscriber::with_default`).
pub fn build(
    config: &LogConfig,
) -> Result<(Box<dyn Subscriber + Send + Sync>, LogHandle), TelemetryError> {
    let file = match &config.file {
        Some(path) => Some(Arc::new(ReopenableFile::open(path)?)),
        None => None,
    };
    let (filter, filter_handle) = reload::Layer::new(config.level.targets());
    let output = Output { file: file.clone() };
    let registry = Registry::default().with(filter);
    let subscriber: Box<dyn Subscriber + Send + Sync> = match config.format {
        LogFormat::Text => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_file(config.source_location)
                    .with_line_number(config.source_location)
                    .with_writer(output),
            ),
        ),
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .event_format(json::SpireJson {
                        source_location: config.source_location,
                    })
                    .with_writer(output),
            ),
        ),
    };
    let handle = LogHandle {
        filter: filter_handle,
        launch_level: config.level,
        current: Arc::new(Mutex::new(config.level)),
        file,
    };
    Ok((subscriber, handle))
}

// === impl LogHandle ===

impl LogHandle {
    /// The current level.
    pub fn level(&self) -> LogLevel {
        *lock(&self.current)
    }

    /// The level the process started with.
    pub fn launch_level(&self) -> LogLevel {
        self.launch_level
    }

    /// Changes the level.
    pub fn set_level(&self, level: LogLevel) -> Result<(), TelemetryError> {
        let mut current = lock(&self.current);
        self.filter
            .reload(level.targets())
            .map_err(TelemetryError::Reload)?;
        *current = level;
        Ok(())
    }

    /// Returns to the launch level.
    pub fn reset_level(&self) -> Result<(), TelemetryError> {
        self.set_level(self.launch_level)
    }

    /// Reopens the log file (after rotation, on SIGUSR2); a no-op when logging to stderr.
    pub fn reopen_log_file(&self) -> Result<(), TelemetryError> {
        match &self.file {
            Some(file) => file.reopen(),
            None => Ok(()),
        }
    }

    /// Whether logs go to a `log_file` (rather than stderr).
    pub fn logs_to_file(&self) -> bool {
        self.file.is_some()
    }

    /// Reopens the log file each time the process receives SIGUSR2 (log rotation: rename the
    /// file, send SIGUSR2, and the next line goes to a new file at the configured path), until
    /// the returned task is aborted. The handler is installed before this returns, so SIGUSR2
    /// no longer terminates the process. Must be called inside a Tokio runtime.
    pub fn reopen_on_sigusr2(&self) -> Result<tokio::task::JoinHandle<()>, TelemetryError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut usr2 = signal(SignalKind::user_defined2()).map_err(TelemetryError::Signal)?;
        let handle = self.clone();
        Ok(tokio::spawn(async move {
            while usr2.recv().await.is_some() {
                match handle.reopen_log_file() {
                    Ok(()) if handle.logs_to_file() => tracing::info!("Log file reopened"),
                    Ok(()) => {}
                    Err(error) => tracing::error!(%error, "Could not reopen the log file"),
                }
            }
        }))
    }
}

// === impl LogLevel ===

impl LogLevel {
    /// All levels, most severe first.
    pub const ALL: [LogLevel; 7] = [
        LogLevel::Panic,
        LogLevel::Fatal,
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    /// The lower-case name (`info`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Panic => "panic",
            LogLevel::Fatal => "fatal",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }

    /// The filter installed for this level: this level for spire-rs, and for the libraries
    /// underneath (SQL, HTTP/2, TLS, gRPC transport) at most `info` unless the level is `trace`,
    /// so `debug` shows what the server and agent do, not every SQL query and HTTP/2 frame.
    pub fn targets(self) -> Targets {
        let own = self.filter();
        let libraries = if self == LogLevel::Trace {
            own
        } else {
            own.min(LevelFilter::INFO)
        };
        LIBRARY_TARGETS
            .iter()
            .fold(Targets::new().with_default(own), |t, target| {
                t.with_target(*target, libraries)
            })
    }

    /// The tracing filter for this level.
    pub fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Panic | LogLevel::Fatal | LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown log level name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log level {0:?}, expected one of panic, fatal, error, warn, info, debug, trace")]
pub struct UnknownLogLevel(pub String);

impl FromStr for LogLevel {
    type Err = UnknownLogLevel;

    /// Case-insensitive; `warning` is accepted for `warn`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        if lower == "warning" {
            return Ok(LogLevel::Warn);
        }
        LogLevel::ALL
            .into_iter()
            .find(|l| l.as_str() == lower)
            .ok_or_else(|| UnknownLogLevel(s.to_owned()))
    }
}

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    /// `text` or `json`, case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(UnknownLogFormat(s.to_owned())),
        }
    }
}

/// An unknown log format name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format {0:?}, expected text or json")]
pub struct UnknownLogFormat(pub String);

// === output ===

/// A log file that can be reopened after rotation.
struct ReopenableFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl ReopenableFile {
    fn open(path: &Path) -> Result<Self, TelemetryError> {
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(open_append(path)?),
        })
    }

    fn reopen(&self) -> Result<(), TelemetryError> {
        let fresh = open_append(&self.path)?;
        *lock(&self.file) = fresh;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, TelemetryError> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o640);
    }
    options
        .open(path)
        .map_err(|source| TelemetryError::OpenLogFile {
            path: path.to_owned(),
            source,
        })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone)]
struct Output {
    file: Option<Arc<ReopenableFile>>,
}

enum OutputWriter {
    Stderr(io::Stderr),
    File(Arc<ReopenableFile>),
}

impl<'a> MakeWriter<'a> for Output {
    type Writer = OutputWriter;

    fn make_writer(&'a self) -> Self::Writer {
        match &self.file {
            Some(f) => OutputWriter::File(Arc::clone(f)),
            None => OutputWriter::Stderr(io::stderr()),
        }
    }
}

impl Write for OutputWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            OutputWriter::Stderr(s) => s.write(buf),
            OutputWriter::File(f) => lock(&f.file).write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            OutputWriter::Stderr(s) => s.write_all(buf),
            OutputWriter::File(f) => lock(&f.file).write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            OutputWriter::Stderr(s) => s.flush(),
            OutputWriter::File(f) => lock(&f.file).flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_log(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("spire-telemetry-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("log.txt")
    }

    #[test]
    fn levels_parse_like_spire() {
        assert_eq!("DEBUG".parse::<LogLevel>(), Ok(LogLevel::Debug));
        assert_eq!("Warning".parse::<LogLevel>(), Ok(LogLevel::Warn));
        assert_eq!("panic".parse::<LogLevel>(), Ok(LogLevel::Panic));
        assert_eq!(
            "loud".parse::<LogLevel>().unwrap_err().to_string(),
            "unknown log level \"loud\", expected one of panic, fatal, error, warn, info, debug, trace"
        );
        for l in LogLevel::ALL {
            assert_eq!(l.as_str().parse::<LogLevel>(), Ok(l));
        }
        assert_eq!(LogLevel::Fatal.filter(), LevelFilter::ERROR);
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(
            "xml".parse::<LogFormat>().unwrap_err().to_string(),
            "unknown log format \"xml\", expected text or json"
        );
    }

    #[test]
    fn json_file_output_with_reloadable_level() {
        let path = temp_log("json");
        let config = LogConfig {
            level: LogLevel::Info,
            format: LogFormat::Json,
            file: Some(path.clone()),
            source_location: false,
        };
        let (subscriber, handle) = build(&config).unwrap();
        let dispatch = tracing::Dispatch::new(subscriber);
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::debug!("Hidden at info");
            tracing::info!(
                { field::SPIFFE_ID } = "spiffe://example.org/w",
                "Shown at info"
            );
            handle.set_level(LogLevel::Debug).unwrap();
            assert_eq!(handle.level(), LogLevel::Debug);
            tracing::debug!("Shown at debug");
            tracing::debug!(target: "sqlx::query", "Library detail hidden at debug");
            handle.reset_level().unwrap();
            assert_eq!(handle.level(), LogLevel::Info);
            tracing::debug!("Hidden again");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["msg"], "Shown at info");
        assert_eq!(lines[0]["spiffe_id"], "spiffe://example.org/w");
        assert_eq!(lines[0]["level"], "info");
        assert!(
            time::OffsetDateTime::parse(
                lines[0]["time"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok(),
            "{text}"
        );
        assert_eq!(lines[1]["msg"], "Shown at debug");
        assert_eq!(lines[1]["level"], "debug");

        // Rotation: move the file away, reopen, and the next event lands in a fresh file.
        let rotated = path.with_extension("old");
        std::fs::rename(&path, &rotated).unwrap();
        handle.reopen_log_file().unwrap();
        tracing::dispatcher::with_default(&dispatch, || tracing::info!("After rotation"));
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert!(
            fresh.contains("After rotation") && !fresh.contains("Shown at info"),
            "{fresh}"
        );
        assert!(
            !std::fs::read_to_string(&rotated)
                .unwrap()
                .contains("After rotation")
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn sigusr2_reopens_the_log_file() {
        let path = temp_log("usr2");
        let (subscriber, handle) = build(&LogConfig {
            file: Some(path.clone()),
            ..LogConfig::default()
        })
        .unwrap();
        let dispatch = tracing::Dispatch::new(subscriber);
        let task = handle.reopen_on_sigusr2().unwrap();
        tracing::dispatcher::with_default(&dispatch, || tracing::info!("Before rotation"));
        let rotated = path.with_extension("1");
        std::fs::rename(&path, &rotated).unwrap();
        let kill = std::process::Command::new("kill")
            .arg("-USR2")
            .arg(std::process::id().to_string())
            .status()
            .unwrap();
        assert!(kill.success());
        // The handler recreates the file at the configured path.
        for _ in 0..3000 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tracing::dispatcher::with_default(&dispatch, || tracing::info!("After rotation"));
        let fresh = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(&rotated).unwrap();
        assert!(fresh.contains("After rotation"), "{fresh}");
        assert!(!fresh.contains("Before rotation"), "{fresh}");
        assert!(old.contains("Before rotation") && !old.contains("After rotation"));
        task.abort();
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn text_output_has_fields() {
        let path = temp_log("text");
        let (subscriber, handle) = build(&LogConfig {
            level: LogLevel::Warn,
            format: LogFormat::Text,
            file: Some(path.clone()),
            source_location: false,
        })
        .unwrap();
        assert_eq!(handle.launch_level(), LogLevel::Warn);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("Not shown");
            tracing::warn!({ field::ENTRY_ID } = "e1", "Entry problem");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("Not shown"));
        assert!(
            text.contains("Entry problem") && text.contains("entry_id=\"e1\""),
            "{text}"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn unopenable_log_file_is_an_error() {
        let err = build(&LogConfig {
            file: Some(PathBuf::from("/nonexistent-dir/x/log.txt")),
            ..LogConfig::default()
        })
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "could not open log file /nonexistent-dir/x/log.txt"
        );
    }
}
