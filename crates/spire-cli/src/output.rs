//! `-output pretty|json` for management commands.

use std::fmt;
use std::io::{self, Write};

use serde::Serialize;

/// The output format of a management command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// SPIRE's human-readable blocks (`Entry ID : ...`).
    #[default]
    Pretty,
    /// One JSON document.
    Json,
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputFormat::Pretty => "pretty",
            OutputFormat::Json => "json",
        })
    }
}

/// The `-output` flag, to `#[command(flatten)]` into a command's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::Args)]
pub struct OutputArgs {
    /// Desired output format (pretty, json).
    #[arg(long = "output", value_enum, default_value_t = OutputFormat::Pretty)]
    pub output: OutputFormat,
}

/// Writes `value` as one line of compact JSON followed by a newline.
pub fn write_json<W: Write, T: Serialize + ?Sized>(mut w: W, value: &T) -> io::Result<()> {
    serde_json::to_writer(&mut w, value).map_err(io::Error::other)?;
    w.write_all(b"\n")
}

/// Writes `value` as indented JSON followed by a newline.
pub fn write_json_pretty<W: Write, T: Serialize + ?Sized>(mut w: W, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut w, value).map_err(io::Error::other)?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use clap::{Command, FromArgMatches};

    use super::*;

    #[test]
    fn output_flag_parses_through_the_normalizer() {
        let cmd = <OutputArgs as clap::Args>::augment_args(Command::new("show"));
        let args = crate::normalize_args(&cmd, ["show", "-output", "json"]).unwrap();
        let m = cmd.clone().try_get_matches_from(args).unwrap();
        assert_eq!(
            OutputArgs::from_arg_matches(&m).unwrap().output,
            OutputFormat::Json
        );

        let m = cmd.clone().try_get_matches_from(["show"]).unwrap();
        assert_eq!(
            OutputArgs::from_arg_matches(&m).unwrap().output,
            OutputFormat::Pretty
        );

        let args = crate::normalize_args(&cmd, ["show", "-output=xml"]).unwrap();
        let err = cmd.try_get_matches_from(args).unwrap_err().to_string();
        assert!(err.contains("xml") && err.contains("--output"), "{err}");
    }

    #[test]
    fn json_writers() {
        let mut out = Vec::new();
        write_json(&mut out, &serde_json::json!({"a": 1, "b": [true]})).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"a\":1,\"b\":[true]}\n");
        let mut out = Vec::new();
        write_json_pretty(&mut out, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\n  \"a\": 1\n}\n");
    }
}
