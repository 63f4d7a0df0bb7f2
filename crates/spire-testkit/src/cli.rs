//! Running a command-line program to completion with a timeout.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The timeout [`run_cli`] and [`Cli::new`] use unless told otherwise.
pub const DEFAULT_CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// A command to run to completion: program, arguments, environment, optional
/// stdin bytes and a timeout. Its process group is killed when the timeout
/// passes.
#[derive(Debug)]
pub struct Cli {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

/// What a finished command printed and how it exited.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The command line, for messages.
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// stdout (lossy UTF-8).
    pub stdout: String,
    /// stderr (lossy UTF-8).
    pub stderr: String,
}

impl Cli {
    /// A command running `program` with no arguments, stdin /dev/null and
    /// [`DEFAULT_CLI_TIMEOUT`].
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            cmd: Command::new(program),
            stdin: None,
            timeout: DEFAULT_CLI_TIMEOUT,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(key);
        self
    }

    /// Sets the working directory.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Feeds these bytes to stdin (then closes it).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Gives access to the underlying command (uid/gid changes and the like).
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Runs to completion. Errors when the program cannot be started or does
    /// not finish within the timeout (the error then holds what it printed).
    pub fn run(mut self) -> anyhow::Result<CliOutput> {
        let command = format!("{:?}", self.cmd);
        self.cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = self
            .cmd
            .spawn()
            .with_context(|| format!("cannot start {command}"))?;
        let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let writer = match (child.stdin.take(), self.stdin.take()) {
            (Some(mut pipe), Some(input)) => Some(std::thread::spawn(move || {
                // A program that exits without reading stdin closes the pipe:
                // that is its business, not an error here.
                let _ = pipe.write_all(&input);
            })),
            _ => None,
        };
        let out = child.stdout.take().map(reader);
        let err = child.stderr.take().map(reader);
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => break None,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    let _ = child.wait();
                    return Err(e).with_context(|| format!("cannot wait for {command}"));
                }
            }
        };
        if status.is_none() {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
        }
        if let Some(w) = writer {
            let _ = w.join();
        }
        let stdout = out.map(join_reader).unwrap_or_default();
        let stderr = err.map(join_reader).unwrap_or_default();
        match status {
            Some(status) => Ok(CliOutput {
                command,
                status,
                stdout,
                stderr,
            }),
            None => bail!(
                "{command} did not finish within {:?}; killed.\nstdout:\n{stdout}\nstderr:\n{stderr}",
                self.timeout
            ),
        }
    }

    /// [`Cli::run`] on tokio's blocking pool, for async tests.
    pub async fn run_async(self) -> anyhow::Result<CliOutput> {
        tokio::task::spawn_blocking(move || self.run())
            .await
            .context("cli runner task failed")?
    }
}

fn reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn join_reader(h: std::thread::JoinHandle<Vec<u8>>) -> String {
    h.join()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Runs `program args...` with [`DEFAULT_CLI_TIMEOUT`] and returns its output
/// whatever the exit status.
///
/// # Panics
/// When the program cannot be started or times out (test convenience; use
/// [`Cli`] for the error).
pub fn run_cli<I, S>(program: impl AsRef<OsStr>, args: I) -> CliOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    match Cli::new(program).args(args).run() {
        Ok(o) => o,
        Err(e) => panic!("{e:#}"),
    }
}

/// The value of the first `<key> : <value>` line of a CLI's pretty output (`Token: …`,
/// `Entry ID         : …`, `SPIFFE ID : …`), trimmed; `None` when no line has that key.
pub fn cli_field(out: &str, key: &str) -> Option<String> {
    out.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_owned())
    })
}

impl CliOutput {
    /// Whether the exit status is 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics (showing the command and both streams) unless the exit status
    /// is 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        if !self.success() {
            panic!(
                "expected success from {}, got {}\n{}",
                self.command,
                self.status,
                self.streams()
            );
        }
        self
    }

    /// Panics unless the exit status is non-zero.
    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        if self.success() {
            panic!(
                "expected failure from {}, but it succeeded\n{}",
                self.command,
                self.streams()
            );
        }
        self
    }

    /// Panics unless stdout or stderr contains `needle`.
    #[track_caller]
    pub fn assert_output_contains(&self, needle: &str) -> &Self {
        if !self.stdout.contains(needle) && !self.stderr.contains(needle) {
            panic!(
                "expected {needle:?} in the output of {}\n{}",
                self.command,
                self.streams()
            );
        }
        self
    }

    /// stdout parsed as JSON.
    pub fn stdout_json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(self.stdout.trim()).with_context(|| {
            format!(
                "stdout of {} is not JSON:\n{}",
                self.command,
                self.streams()
            )
        })
    }

    fn streams(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_field_reads_the_first_line_with_the_key() {
        let out = "Entry ID         : 1f2e\nSPIFFE ID        : spiffe://example.org/a\n\
                   SPIFFE ID        : spiffe://example.org/b\n";
        assert_eq!(cli_field(out, "Entry ID").as_deref(), Some("1f2e"));
        assert_eq!(
            cli_field(out, "SPIFFE ID").as_deref(),
            Some("spiffe://example.org/a")
        );
        assert_eq!(
            cli_field("Token: abc-123\n", "Token").as_deref(),
            Some("abc-123")
        );
        assert_eq!(cli_field(out, "Token"), None);
    }

    #[test]
    fn captures_output_and_status() {
        let o = run_cli("sh", ["-c", "echo out; echo err >&2; exit 3"]);
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.stderr, "err\n");
        assert_eq!(o.code(), Some(3));
        o.assert_failure().assert_output_contains("err");
    }

    #[test]
    fn feeds_stdin_and_env() {
        let o = Cli::new("sh")
            .args(["-c", "cat; echo \"$X\""])
            .stdin("in-data\n")
            .env("X", "x-val")
            .run()
            .unwrap();
        o.assert_success();
        assert_eq!(o.stdout, "in-data\nx-val\n");
    }

    #[test]
    fn times_out_and_kills() {
        let err = Cli::new("sh")
            .args(["-c", "echo partial; sleep 300"])
            .timeout(Duration::from_millis(200))
            .run()
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("did not finish"), "{msg}");
        assert!(msg.contains("partial"), "{msg}");
    }

    #[test]
    fn json_stdout() {
        let o = run_cli("sh", ["-c", "echo '{\"a\": 1}'"]);
        assert_eq!(o.stdout_json().unwrap()["a"], 1);
        assert!(run_cli("sh", ["-c", "echo nope"]).stdout_json().is_err());
    }

    #[test]
    #[should_panic(expected = "expected success")]
    fn assert_success_panics_on_failure() {
        run_cli("false", std::iter::empty::<&str>()).assert_success();
    }

    #[test]
    fn missing_program_is_an_error() {
        let err = Cli::new("/nonexistent/program").run().unwrap_err();
        assert!(format!("{err:#}").contains("cannot start"));
    }

    #[tokio::test]
    async fn runs_from_async_tests() {
        let o = Cli::new("echo").arg("hi").run_async().await.unwrap();
        assert_eq!(o.stdout, "hi\n");
    }
}
