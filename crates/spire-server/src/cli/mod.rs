//! The `spire-server` command line: SPIRE's command tree and Go-style single-dash flags.
//!
//! Mirrors `cmd/spire-server/cli/cli.go`. Every management command talks to the server's local
//! Unix socket (`-socketPath`) and prints either SPIRE's pretty layout or JSON (`-output`).

mod agent;
mod bundle;
mod client;
mod debug;
mod entry;
mod federation;
mod healthcheck;
mod jwt;
mod localauthority;
mod logger;
mod printer;
mod run;
mod token;
mod x509;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use printer::OutputFormat;

/// SPIRE's default path of the server's local API socket.
pub const DEFAULT_SOCKET_PATH: &str = "/tmp/spire-server/private/api.sock";

/// Parses `argv` (Go-style flags accepted) and runs the chosen command.
pub fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli: Cli = match spire_cli::parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(spire_cli::CliError::Clap(e)) => {
            let code = e.exit_code();
            let _ = e.print();
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Run(args) => run::run(args),
        other => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("Error: cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(dispatch(other)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(_) => Ok(ExitCode::from(1)),
        Command::Validate(args) => run::validate(args),
        Command::Healthcheck(args) => healthcheck::run(args).await,
        Command::Entry(cmd) => entry::run(cmd).await,
        Command::Bundle(cmd) => bundle::run(cmd).await,
        Command::Token(cmd) => token::run(cmd).await,
        Command::X509(cmd) => x509::run(cmd).await,
        Command::Jwt(cmd) => jwt::run(cmd).await,
        Command::Agent(cmd) => agent::run(cmd).await,
        Command::Localauthority(cmd) => localauthority::run(cmd).await,
        Command::Debug(cmd) => debug::run(cmd).await,
        Command::Logger(cmd) => logger::run(cmd).await,
        Command::Federation(cmd) => federation::run(cmd).await,
    }
}

#[derive(Debug, Parser)]
#[command(name = "spire-server", version, disable_help_subcommand = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server
    Run(run::RunArgs),
    /// Validates a SPIRE server configuration file
    Validate(run::ValidateArgs),
    /// Determines server health status
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Manages registration entries
    #[command(subcommand)]
    Entry(entry::EntryCommand),
    /// Manages trust bundles
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Manages join tokens
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Mints X509-SVIDs
    #[command(subcommand)]
    X509(x509::X509Command),
    /// Mints JWT-SVIDs
    #[command(subcommand)]
    Jwt(jwt::JwtCommand),
    /// Manages attested agents
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Manages local X.509 and JWT authorities
    #[command(subcommand)]
    Localauthority(localauthority::LocalAuthorityCommand),
    /// Debug information about the server
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    /// Manages the server's log level
    #[command(subcommand)]
    Logger(logger::LoggerCommand),
    /// Manages federation relationships
    #[command(subcommand)]
    Federation(federation::FederationCommand),
}

/// Flags shared by every command that talks to the local API.
#[derive(Debug, Clone, Args)]
pub(crate) struct CommonArgs {
    /// Path to the SPIRE Server API socket
    #[arg(long = "socketPath", default_value = DEFAULT_SOCKET_PATH)]
    pub(crate) socket_path: PathBuf,
    /// Desired output format (pretty, json)
    #[arg(long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub(crate) output: OutputFormat,
}

/// How `-matchSelectorsOn` / `-matchFederatesWithOn` compare sets.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum MatchMode {
    Exact,
    Any,
    Superset,
    Subset,
}

impl MatchMode {
    /// The wire value of `MatchBehavior` (same numbers in SelectorMatch and FederatesWithMatch).
    pub(crate) fn wire(self) -> i32 {
        match self {
            MatchMode::Exact => 0,
            MatchMode::Subset => 1,
            MatchMode::Superset => 2,
            MatchMode::Any => 3,
        }
    }
}

/// Like Go programs, exit quietly when stdout is closed early (`spire-server bundle show | head`)
/// instead of printing a panic.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(1);
        }
        default(info);
    }));
}

/// Parses Go's boolean flag values (`-admin`, `-admin=true`, `-admin=false`).
pub(crate) fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("invalid boolean value {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn parse(args: &[&str]) -> Result<Cli, spire_cli::CliError> {
        spire_cli::parse_from::<Cli, _, _>(argv(args))
    }

    #[test]
    fn negative_numbers_and_stdin_stay_values() {
        let cli = parse(&[
            "spire-server",
            "entry",
            "create",
            "-spiffeID",
            "spiffe://a/b",
            "-parentID",
            "spiffe://a/c",
            "-selector",
            "a:b",
            "-x509SVIDTTL",
            "-5",
            "-data",
            "-",
            "-admin=false",
        ])
        .unwrap();
        let Command::Entry(entry::EntryCommand::Create(args)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(args.fields.x509_svid_ttl, Some(-5));
        assert_eq!(args.fields.data.as_deref(), Some("-"));
        assert!(!args.fields.admin);
    }

    #[test]
    fn parses_entry_create_with_repeated_flags() {
        let cli = parse(&[
            "spire-server",
            "entry",
            "create",
            "-spiffeID",
            "spiffe://example.org/w",
            "-parentID",
            "spiffe://example.org/a",
            "-selector",
            "unix:uid:1000",
            "-selector",
            "unix:gid:1000",
            "-dns",
            "a.example",
            "-admin",
        ])
        .unwrap();
        let Command::Entry(entry::EntryCommand::Create(args)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(args.fields.selector, vec!["unix:uid:1000", "unix:gid:1000"]);
        assert!(args.fields.admin);
    }

    #[test]
    fn unknown_flag_is_an_error_naming_it() {
        let err = parse(&["spire-server", "entry", "show", "-bogusFlag", "1"]).unwrap_err();
        assert_eq!(err.to_string(), "flag provided but not defined: -bogusFlag");
    }

    #[test]
    fn go_bool_values() {
        assert_eq!(go_bool("true"), Ok(true));
        assert_eq!(go_bool("f"), Ok(false));
        assert!(go_bool("yes").is_err());
    }
}
