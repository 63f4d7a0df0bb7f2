//! Shared command-line plumbing for `spire-server` and `spire-agent`.
//!
//! SPIRE's CLIs use Go's `flag` package: single-dash long flags in camelCase (`-spiffeID x`),
//! `--flag` and `-flag=value` spellings, boolean flags without a value (`-admin`, or
//! `-admin=false`). clap cannot parse single-dash long flags, so [`normalize_args`] rewrites the
//! argument list against the clap [`Command`] tree before clap sees it. This crate also holds the
//! `-output pretty|json` helpers and the Unix-socket endpoint parser.
//!
//! Invariant: only the two binaries (through this crate) use clap. Nothing here prints or exits;
//! errors are returned and name the bad flag.

mod endpoint;
mod output;

use std::ffi::OsString;

use clap::Command;

pub use endpoint::{EndpointError, socket_path_from_addr};
pub use output::{OutputArgs, OutputFormat, write_json, write_json_pretty};

/// A Go-style flag problem found while normalizing the arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlagError {
    /// The flag is not defined for the command.
    #[error("flag provided but not defined: -{flag}")]
    Unknown {
        /// The flag name without dashes.
        flag: String,
        /// The command path, e.g. `spire-server entry create`.
        command: String,
    },
    /// A flag that takes a value came last.
    #[error("flag needs an argument: -{flag}")]
    MissingValue {
        /// The flag name without dashes.
        flag: String,
    },
    /// A boolean flag was given a value that is not a Go boolean.
    #[error("invalid boolean value {value:?} for -{flag}: expected true or false")]
    BadBool {
        /// The flag name without dashes.
        flag: String,
        /// The value given.
        value: String,
    },
    /// An argument is not valid UTF-8.
    #[error("argument {0:?} is not valid UTF-8")]
    NotUtf8(OsString),
}

/// Why [`parse_from`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A Go-style flag problem (unknown flag, missing value, bad boolean).
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// clap rejected the arguments, or help/version was asked for (`clap::Error::exit` prints
    /// it with the right exit code).
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

/// Normalizes Go-style `args` (program name first) and parses them into `P`.
pub fn parse_from<P, I, T>(args: I) -> Result<P, CliError>
where
    P: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let command = P::command();
    let normalized = normalize_args(&command, args)?;
    Ok(P::try_parse_from(normalized)?)
}

/// Rewrites Go-style arguments (including the program name first) into a form clap parses.
///
/// * `-name`, `-name value`, `-name=value`, `--name value` become `--name` / `--name=value` when
///   `name` is a long flag of the subcommand reached so far (or of its ancestors, if global).
/// * A value after a flag that takes one is attached with `=`, so values such as `-1` or `-`
///   (stdin) stay values.
/// * Boolean flags accept Go's `-flag=true|false|1|0|t|f`: true becomes `--flag`, false is dropped.
/// * `-h`, `-help` and `--help` ask for help.
/// * Everything after `--` or after the first positional argument is passed through unchanged.
pub fn normalize_args<I, T>(command: &Command, args: I) -> Result<Vec<OsString>, FlagError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut root = command.clone();
    root.build();
    let mut args = args.into_iter().map(Into::into);
    let mut out = Vec::new();
    if let Some(program) = args.next() {
        out.push(program);
    }
    let mut path: Vec<String> = vec![root.get_name().to_owned()];
    let mut current = &root;
    let mut passthrough = false;

    while let Some(raw) = args.next() {
        if passthrough {
            out.push(raw);
            continue;
        }
        let arg = raw
            .to_str()
            .ok_or_else(|| FlagError::NotUtf8(raw.clone()))?
            .to_owned();
        if arg == "--" {
            out.push(raw);
            passthrough = true;
            continue;
        }
        let Some(body) = flag_body(&arg) else {
            // Not a flag: a subcommand name, or the first positional.
            if let Some(sub) = find_subcommand(current, &arg) {
                path.push(sub.get_name().to_owned());
                current = sub;
            } else {
                passthrough = true;
            }
            out.push(raw);
            continue;
        };
        let (name, inline_value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        if name == "h" || name == "help" {
            out.push("--help".into());
            continue;
        }
        let Some(flag) = find_long(current, name) else {
            return Err(FlagError::Unknown {
                flag: name.to_owned(),
                command: path.join(" "),
            });
        };
        if flag.get_action().takes_values() {
            let value = match inline_value {
                Some(v) => v.to_owned(),
                None => match args.next() {
                    Some(v) => v.into_string().map_err(FlagError::NotUtf8)?,
                    None => {
                        return Err(FlagError::MissingValue {
                            flag: name.to_owned(),
                        });
                    }
                },
            };
            out.push(format!("{}={value}", spelled(flag)).into());
        } else {
            match inline_value {
                None => out.push(spelled(flag).into()),
                Some(v) => match parse_go_bool(v) {
                    Some(true) => out.push(spelled(flag).into()),
                    Some(false) => {}
                    None => {
                        return Err(FlagError::BadBool {
                            flag: name.to_owned(),
                            value: v.to_owned(),
                        });
                    }
                },
            }
        }
    }
    Ok(out)
}

/// Returns the flag text without its leading dashes, or `None` when `arg` is not a flag
/// (`-`, a negative number, or no dash at all).
fn flag_body(arg: &str) -> Option<&str> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if body.is_empty() || body.starts_with('-') {
        return None;
    }
    if body.parse::<f64>().is_ok() {
        return None;
    }
    Some(body)
}

fn find_subcommand<'a>(cmd: &'a Command, name: &str) -> Option<&'a Command> {
    cmd.get_subcommands()
        .find(|s| s.get_name() == name || s.get_all_aliases().any(|a| a == name))
}

fn find_long<'a>(cmd: &'a Command, name: &str) -> Option<&'a clap::Arg> {
    cmd.get_arguments().find(|a| {
        a.get_long_and_visible_aliases()
            .is_some_and(|longs| longs.contains(&name))
            || a.get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&name))
            || (name.chars().count() == 1 && a.get_short().is_some_and(|c| name.starts_with(c)))
    })
}

/// How clap spells `arg`: `--long`, or `-c` for a short-only flag.
fn spelled(arg: &clap::Arg) -> String {
    match (arg.get_long(), arg.get_short()) {
        (Some(long), _) => format!("--{long}"),
        (None, Some(short)) => format!("-{short}"),
        (None, None) => format!("--{}", arg.get_id()),
    }
}

/// Go's `strconv.ParseBool` spellings.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use clap::{Arg, ArgAction};

    use super::*;

    fn cli() -> Command {
        Command::new("spire-server")
            .subcommand(
                Command::new("entry")
                    .subcommand(
                        Command::new("create")
                            .arg(Arg::new("spiffe_id").long("spiffeID"))
                            .arg(Arg::new("parent_id").long("parentID"))
                            .arg(
                                Arg::new("selector")
                                    .long("selector")
                                    .action(ArgAction::Append),
                            )
                            .arg(
                                Arg::new("ttl")
                                    .long("x509SVIDTTL")
                                    .value_parser(clap::value_parser!(i64)),
                            )
                            .arg(Arg::new("admin").long("admin").action(ArgAction::SetTrue))
                            .arg(Arg::new("data").long("data"))
                            .arg(
                                Arg::new("socket")
                                    .long("socketPath")
                                    .default_value("/tmp/s.sock"),
                            ),
                    )
                    .subcommand(Command::new("show").arg(Arg::new("entry_id").long("entryID"))),
            )
            .subcommand(
                Command::new("run")
                    .arg(Arg::new("config").long("config"))
                    .arg(
                        Arg::new("expand")
                            .long("expandEnv")
                            .action(ArgAction::SetTrue),
                    ),
            )
    }

    fn norm(args: &[&str]) -> Result<Vec<String>, FlagError> {
        let mut full = vec!["spire-server"];
        full.extend_from_slice(args);
        normalize_args(&cli(), full)
            .map(|v| v.into_iter().map(|s| s.into_string().unwrap()).collect())
    }

    #[test]
    fn go_spellings_become_clap_spellings() {
        let want = vec![
            "spire-server",
            "entry",
            "create",
            "--spiffeID=spiffe://example.org/w",
            "--parentID=spiffe://example.org/a",
            "--selector=unix:uid:1000",
            "--selector=unix:gid:0",
            "--admin",
        ];
        for args in [
            vec![
                "entry",
                "create",
                "-spiffeID",
                "spiffe://example.org/w",
                "-parentID=spiffe://example.org/a",
                "-selector",
                "unix:uid:1000",
                "--selector",
                "unix:gid:0",
                "-admin",
            ],
            vec![
                "entry",
                "create",
                "--spiffeID=spiffe://example.org/w",
                "--parentID",
                "spiffe://example.org/a",
                "-selector=unix:uid:1000",
                "-selector=unix:gid:0",
                "-admin=true",
            ],
        ] {
            assert_eq!(norm(&args).unwrap(), want, "{args:?}");
        }
    }

    #[test]
    fn values_that_look_like_flags_stay_values() {
        assert_eq!(
            norm(&["entry", "create", "-x509SVIDTTL", "-1", "-data", "-"]).unwrap(),
            vec![
                "spire-server",
                "entry",
                "create",
                "--x509SVIDTTL=-1",
                "--data=-"
            ]
        );
        // And clap then parses them.
        let m = cli()
            .try_get_matches_from(
                norm(&["entry", "create", "-x509SVIDTTL", "-1", "-data", "-"]).unwrap(),
            )
            .unwrap();
        let (_, entry) = m.subcommand().unwrap();
        let (_, create) = entry.subcommand().unwrap();
        assert_eq!(create.get_one::<i64>("ttl"), Some(&-1));
        assert_eq!(
            create.get_one::<String>("data").map(String::as_str),
            Some("-")
        );
    }

    #[test]
    fn bool_false_and_help() {
        assert_eq!(
            norm(&["run", "-expandEnv=false", "-config", "x.conf"]).unwrap(),
            vec!["spire-server", "run", "--config=x.conf"]
        );
        assert_eq!(
            norm(&["run", "-h"]).unwrap(),
            vec!["spire-server", "run", "--help"]
        );
        assert_eq!(norm(&["-help"]).unwrap(), vec!["spire-server", "--help"]);
        let err = norm(&["run", "-expandEnv=maybe"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid boolean value \"maybe\" for -expandEnv: expected true or false"
        );
    }

    #[test]
    fn errors_name_the_flag() {
        let err = norm(&["entry", "create", "-spiffeId", "x"]).unwrap_err();
        assert_eq!(err.to_string(), "flag provided but not defined: -spiffeId");
        assert_eq!(
            err,
            FlagError::Unknown {
                flag: "spiffeId".into(),
                command: "spire-server entry create".into()
            }
        );
        // A flag of another subcommand is unknown here.
        let err = norm(&["entry", "show", "-spiffeID", "x"]).unwrap_err();
        assert_eq!(err.to_string(), "flag provided but not defined: -spiffeID");
        let err = norm(&["entry", "show", "-entryID"]).unwrap_err();
        assert_eq!(err.to_string(), "flag needs an argument: -entryID");
    }

    #[derive(Debug, clap::Parser)]
    #[command(name = "spire-agent")]
    struct AgentCli {
        #[command(subcommand)]
        command: AgentCommand,
    }

    #[derive(Debug, clap::Subcommand)]
    enum AgentCommand {
        /// Runs the agent.
        Run {
            #[arg(long = "config", default_value = "conf/agent/agent.conf")]
            config: String,
            #[arg(long = "joinToken")]
            join_token: Option<String>,
            #[arg(long = "serverPort")]
            server_port: Option<u16>,
            #[arg(long = "expandEnv")]
            expand_env: bool,
        },
    }

    #[test]
    fn parse_from_derive() {
        let cli: AgentCli = parse_from([
            "spire-agent",
            "run",
            "-config",
            "a.conf",
            "-joinToken=T",
            "-serverPort",
            "8081",
            "-expandEnv",
        ])
        .unwrap();
        let AgentCommand::Run {
            config,
            join_token,
            server_port,
            expand_env,
        } = cli.command;
        assert_eq!(config, "a.conf");
        assert_eq!(join_token.as_deref(), Some("T"));
        assert_eq!(server_port, Some(8081));
        assert!(expand_env);

        let err = parse_from::<AgentCli, _, _>(["spire-agent", "run", "-serverPort", "http"])
            .unwrap_err();
        assert!(matches!(err, CliError::Clap(_)));
        assert!(err.to_string().contains("--serverPort"), "{err}");
        let err = parse_from::<AgentCli, _, _>(["spire-agent", "run", "-bogus"]).unwrap_err();
        assert_eq!(err.to_string(), "flag provided but not defined: -bogus");
        let err = parse_from::<AgentCli, _, _>(["spire-agent", "run", "-help"]).unwrap_err();
        assert!(
            matches!(&err, CliError::Clap(e) if e.kind() == clap::error::ErrorKind::DisplayHelp)
        );
    }

    #[test]
    fn global_flags_are_known_in_subcommands() {
        let cmd = Command::new("x")
            .arg(Arg::new("socket").long("socketPath").global(true))
            .subcommand(Command::new("show"));
        let out = normalize_args(&cmd, ["x", "show", "-socketPath", "/s"]).unwrap();
        assert_eq!(out, vec!["x", "show", "--socketPath=/s"]);
    }

    #[test]
    fn positionals_and_double_dash_pass_through() {
        assert_eq!(
            norm(&["entry", "show", "extra", "-whatever"]).unwrap(),
            vec!["spire-server", "entry", "show", "extra", "-whatever"]
        );
        assert_eq!(
            norm(&["run", "--", "-config"]).unwrap(),
            vec!["spire-server", "run", "--", "-config"]
        );
    }
}
