//! The `spire-agent` command line: SPIRE's command tree with Go-style single-dash flags
//! (normalized by spire-cli before clap parses them).

pub mod api;
pub mod debug;
pub mod healthcheck;
pub mod logger;
pub mod run;
mod uds;
pub mod validate;

pub use uds::{DEFAULT_PUBLIC_SOCKET, GoDuration, uds_channel, write_stdout};

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Parses `argv` (Go-style flags accepted) and runs the chosen command.
pub fn main() -> ExitCode {
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
        Command::Validate(args) => validate::validate(args),
        Command::Api(args) => api::main(args),
        Command::Healthcheck(args) => healthcheck::main(args),
        Command::Debug(args) => debug::main(args),
        Command::Logger(args) => logger::main(args),
    }
}

#[derive(Debug, Parser)]
#[command(name = "spire-agent", version, disable_help_subcommand = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Runs the agent
    Run(run::RunArgs),
    /// Validates a SPIRE agent configuration file
    Validate(validate::ValidateArgs),
    /// Interacts with the Workload API (fetch, validate, watch)
    Api(api::ApiArgs),
    /// Determines agent health status
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Agent debug information (`debug getinfo`) and, spire-rs, `debug explain -pid N`
    Debug(debug::DebugArgs),
    /// Gets, sets or resets the agent's log level (admin socket)
    Logger(logger::LoggerArgs),
}

/// `outer: inner: innermost`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, spire_cli::CliError> {
        spire_cli::parse_from::<Cli, _, _>(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn run_accepts_go_style_flags() {
        let cli = parse(&[
            "spire-agent",
            "run",
            "-config",
            "a.conf",
            "-joinToken",
            "T",
            "-serverPort=9000",
            "-dataDir",
            "/d",
            "-allowUnauthenticatedVerifiers",
            "-logLevel",
            "DEBUG",
            "-expandEnv=false",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(a.config.to_str(), Some("a.conf"));
        assert_eq!(a.join_token.as_deref(), Some("T"));
        assert_eq!(a.server_port, Some(9000));
        assert!(a.allow_unauthenticated_verifiers);
        assert!(!a.expand_env);
        let o = a.overrides();
        assert_eq!(o.allow_unauthenticated_verifiers, Some(true));
        assert_eq!(o.disable_workload_api, None);
        assert_eq!(o.log_level.as_deref(), Some("DEBUG"));
    }

    #[test]
    fn unknown_flag_is_rejected() {
        let err = parse(&["spire-agent", "run", "-bogus"]).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn validate_parses() {
        let cli = parse(&["spire-agent", "validate", "-config", "x.conf"]).unwrap();
        assert!(matches!(cli.command, Command::Validate(_)));
    }
}
