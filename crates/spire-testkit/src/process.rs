//! Spawning the project's binaries (or any program) with captured logs.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::wait::{WaitTimeout, wait_until, wait_until_sync};

/// How much of each log the panic report prints (the tail).
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// The cargo profile directory the running test executable was built into,
/// e.g. `target/debug` (found from the executable's own path, so it follows
/// `CARGO_TARGET_DIR` and profiles).
///
/// # Panics
/// When the current executable's path cannot be determined.
pub fn target_dir() -> PathBuf {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => panic!("cannot locate the current test executable: {e}"),
    };
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test and example executables live in <profile>/deps or <profile>/examples.
    if matches!(
        dir.file_name().and_then(OsStr::to_str),
        Some("deps" | "examples")
    ) {
        dir.pop();
    }
    dir
}

/// Path of a binary of this workspace (`spire-server`, `spire-agent`, ...) in
/// the current profile directory. `env!("CARGO_BIN_EXE_<name>")` works only
/// inside the binary's own package; this works from any test.
///
/// # Panics
/// When the binary has not been built: run `cargo build --workspace --bins`
/// first (`scripts/test.sh` does).
pub fn bin_path(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    if !path.is_file() {
        panic!(
            "binary {name} not found at {}: build it with `cargo build --workspace --bins` \
             (scripts/test.sh does this before `cargo test`)",
            path.display()
        );
    }
    path
}

/// A running child process whose stdout and stderr go to log files.
///
/// The process is started in its own process group. Dropping the handle kills
/// the whole group (SIGKILL) and reaps the child; if the current thread is
/// panicking (a failed assertion), the tails of both logs are printed to
/// stderr first, labelled with the process name. Set `SPIRE_TEST_SHOW_LOGS=1`
/// to print them for passing tests too.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
    _log_dir: Option<tempfile::TempDir>,
}

impl Process {
    /// Spawns `program args...` named after the program's file name, logging
    /// into a fresh temporary directory.
    pub fn start<I, S>(program: impl AsRef<Path>, args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.display().to_string());
        let mut cmd = Command::new(program);
        cmd.args(args);
        Self::spawn(&name, cmd)
    }

    /// Spawns a prepared command, logging into a fresh temporary directory.
    /// stdin is /dev/null; stdout and stderr are replaced by log files.
    pub fn spawn(name: &str, cmd: Command) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("spire-rs-logs-")
            .tempdir()
            .context("cannot create a log directory")?;
        let path = dir.path().to_path_buf();
        let mut p = Self::spawn_logging_to(name, cmd, &path)?;
        p._log_dir = Some(dir);
        Ok(p)
    }

    /// Spawns a prepared command, logging to `<log_dir>/<name>.stdout.log` and
    /// `<log_dir>/<name>.stderr.log` (appending, so a restarted process keeps
    /// one history).
    pub fn spawn_logging_to(name: &str, mut cmd: Command, log_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("cannot create log directory {}", log_dir.display()))?;
        let stdout_path = log_dir.join(format!("{name}.stdout.log"));
        let stderr_path = log_dir.join(format!("{name}.stderr.log"));
        let open = |p: &Path| {
            File::options()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open log file {}", p.display()))
        };
        cmd.stdin(Stdio::null())
            .stdout(open(&stdout_path)?)
            .stderr(open(&stderr_path)?)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot spawn {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout_path,
            stderr_path,
            status: None,
            _log_dir: None,
        })
    }

    /// The name given at spawn time (used to label logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's process ID (also its process group ID).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the stdout log file.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    /// Path of the stderr log file.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Everything the process wrote to stdout so far (lossy UTF-8).
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// Everything the process wrote to stderr so far (lossy UTF-8).
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// stdout and stderr together (stdout first), for substring checks.
    pub fn logs(&self) -> String {
        let mut s = self.stdout();
        s.push_str(&self.stderr());
        s
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Sends a signal to the process group.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        killpg(self.pgid(), signal)
            .with_context(|| format!("cannot send {signal} to {} (pid {})", self.name, self.pid()))
    }

    /// Waits (blocking) up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, WaitTimeout> {
        let what = format!("{} (pid {}) to exit", self.name, self.pid());
        wait_until_sync(timeout, &what, || self.try_status().is_some())?;
        self.status.ok_or(WaitTimeout {
            what,
            timeout,
            waited: timeout,
        })
    }

    /// SIGTERM to the group, wait up to `grace`, then SIGKILL. Returns the
    /// exit status.
    pub fn terminate(&mut self, grace: Duration) -> ExitStatus {
        if let Some(s) = self.try_status() {
            return s;
        }
        let _ = self.signal(Signal::SIGTERM);
        match self.wait_exit(grace) {
            Ok(s) => s,
            Err(_) => self.kill(),
        }
    }

    /// SIGKILL to the group (as `kill -9`), then reaps the child.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = killpg(self.pgid(), Signal::SIGKILL);
        if let Some(s) = self.status {
            return s;
        }
        match self.child.wait() {
            Ok(s) => {
                self.status = Some(s);
                s
            }
            Err(e) => panic!("cannot reap {} (pid {}): {e}", self.name, self.pid()),
        }
    }

    /// Waits until `needle` appears in stdout or stderr. Fails early when
    /// the process exits without having printed it.
    pub async fn wait_for_log(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        let what = self.log_wait_what(needle);
        let mut exited = false;
        wait_until(timeout, &what, async || self.log_poll(needle, &mut exited)).await?;
        self.log_wait_outcome(needle, what, exited, timeout)
    }

    /// Blocking form of [`Process::wait_for_log`].
    pub fn wait_for_log_sync(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        let what = self.log_wait_what(needle);
        let mut exited = false;
        wait_until_sync(timeout, &what, || self.log_poll(needle, &mut exited))?;
        self.log_wait_outcome(needle, what, exited, timeout)
    }

    fn log_wait_what(&self, needle: &str) -> String {
        format!("{:?} in the logs of {}", needle, self.name)
    }

    /// One poll of a wait for `needle`: true once it is in the logs, or once the process has
    /// exited (then `exited` is set).
    fn log_poll(&mut self, needle: &str, exited: &mut bool) -> bool {
        if self.logs().contains(needle) {
            return true;
        }
        *exited = self.try_status().is_some();
        *exited
    }

    /// The end of a wait for `needle` that stopped polling: a failure when the process
    /// `exited` without having printed it.
    fn log_wait_outcome(
        &self,
        needle: &str,
        what: String,
        exited: bool,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        if exited && !self.logs().contains(needle) {
            return Err(WaitTimeout {
                what: format!("{what} (process exited first)"),
                timeout,
                waited: timeout,
            });
        }
        Ok(())
    }

    /// The tails of both logs, labelled with the name and pid: what is
    /// printed when a test panics.
    pub fn log_report(&self) -> String {
        format!(
            "----- {name} (pid {pid}) stdout: {out} -----\n{stdout}\n\
             ----- {name} (pid {pid}) stderr: {err} -----\n{stderr}\n\
             ----- end of {name} logs -----",
            name = self.name,
            pid = self.pid(),
            out = self.stdout_path.display(),
            stdout = tail_lossy(&self.stdout_path, LOG_TAIL_BYTES),
            err = self.stderr_path.display(),
            stderr = tail_lossy(&self.stderr_path, LOG_TAIL_BYTES),
        )
    }

    /// Prints [`Process::log_report`] to stderr.
    pub fn print_logs(&self) {
        eprintln!("{}", self.log_report());
    }

    fn pgid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking()
            || std::env::var_os("SPIRE_TEST_SHOW_LOGS").is_some_and(|v| v == "1")
        {
            self.print_logs();
        }
        let _ = killpg(self.pgid(), Signal::SIGKILL);
        if self.status.is_none() {
            let _ = self.child.wait();
        }
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn tail_lossy(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::from("<log file missing>");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut prefix = String::new();
    if len > max {
        let _ = f.seek(SeekFrom::Start(len - max));
        prefix = format!("<... {} earlier bytes omitted ...>\n", len - max);
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    prefix + &String::from_utf8_lossy(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_stdout_and_stderr() {
        let mut p = Process::start("sh", ["-c", "echo out-line; echo err-line >&2"]).unwrap();
        let status = p.wait_exit(Duration::from_secs(30)).unwrap();
        assert!(status.success());
        assert_eq!(p.stdout(), "out-line\n");
        assert_eq!(p.stderr(), "err-line\n");
        assert!(p.logs().contains("out-line") && p.logs().contains("err-line"));
        assert_eq!(p.name(), "sh");
    }

    #[test]
    fn kill_and_drop_end_the_process_group() {
        let dir = crate::temp_dir();
        let pidfile = dir.path().join("grandchild.pid");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("sleep 300 & echo $! > {}; wait", pidfile.display()));
        let mut p = Process::spawn("group", cmd).unwrap();
        wait_until_sync(Duration::from_secs(30), "grandchild pid file", || {
            std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
        })
        .unwrap();
        let grandchild: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(p.is_running());
        drop(p);
        // The grandchild (same process group) is gone too. It was reparented,
        // so it may linger as a zombie until init reaps it: check its state.
        wait_until_sync(Duration::from_secs(30), "grandchild to die", || {
            match std::fs::read_to_string(format!("/proc/{grandchild}/stat")) {
                Err(_) => true,
                Ok(stat) => stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z')),
            }
        })
        .unwrap();
    }

    #[test]
    fn terminate_reports_signal_exit() {
        use std::os::unix::process::ExitStatusExt;
        let mut p = Process::start("sleep", ["300"]).unwrap();
        assert!(p.is_running());
        let status = p.terminate(Duration::from_secs(30));
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
        assert!(!p.is_running());
    }

    #[test]
    fn wait_for_log_finds_text_and_fails_when_process_exits_first() {
        let mut p = Process::start("sh", ["-c", "sleep 0.1; echo ready; sleep 300"]).unwrap();
        p.wait_for_log_sync("ready", Duration::from_secs(30))
            .unwrap();
        let mut q = Process::start("sh", ["-c", "echo something-else"]).unwrap();
        let err = q
            .wait_for_log_sync("ready", Duration::from_secs(30))
            .unwrap_err();
        assert!(err.what.contains("exited first"), "{err}");
    }

    #[tokio::test]
    async fn async_wait_for_log() {
        let mut p = Process::start("sh", ["-c", "echo hello >&2; sleep 300"]).unwrap();
        p.wait_for_log("hello", Duration::from_secs(30))
            .await
            .unwrap();
    }

    #[test]
    fn log_report_labels_both_streams() {
        let mut p =
            Process::start("sh", ["-c", "echo diagnostic-out; echo diagnostic-err >&2"]).unwrap();
        p.wait_exit(Duration::from_secs(30)).unwrap();
        let report = p.log_report();
        assert!(
            report.contains(&format!("sh (pid {}) stdout", p.pid())),
            "{report}"
        );
        assert!(report.contains("diagnostic-out\n"), "{report}");
        assert!(report.contains("stderr"), "{report}");
        assert!(report.contains("diagnostic-err\n"), "{report}");
    }

    #[test]
    fn dropping_during_a_panic_reports_and_kills() {
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let mut p = Process::start("sh", ["-c", "echo diagnostic-line; sleep 300"]).unwrap();
            p.wait_for_log_sync("diagnostic-line", Duration::from_secs(30))
                .unwrap();
            tx.send(p.pid()).unwrap();
            panic!("intended panic: the logs of sh above are expected");
        });
        assert!(handle.join().is_err());
        let pid = rx.recv().unwrap();
        // Dropped during the unwind: killed and reaped, so the pid is gone.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn spawn_logging_to_appends_across_restarts() {
        let dir = crate::temp_dir();
        for i in 0..2 {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(format!("echo run-{i}"));
            let mut p = Process::spawn_logging_to("svc", cmd, dir.path()).unwrap();
            p.wait_exit(Duration::from_secs(30)).unwrap();
        }
        let log = std::fs::read_to_string(dir.path().join("svc.stdout.log")).unwrap();
        assert_eq!(log, "run-0\nrun-1\n");
    }

    #[test]
    fn target_dir_is_the_profile_dir() {
        let dir = target_dir();
        assert_ne!(dir.file_name().and_then(OsStr::to_str), Some("deps"));
        assert!(dir.join("deps").is_dir(), "{}", dir.display());
        assert!(workspace_root().join("Cargo.toml").is_file());
    }

    #[test]
    #[should_panic(expected = "cargo build --workspace --bins")]
    fn bin_path_names_the_fix_when_missing() {
        let _ = bin_path("no-such-binary-here");
    }
}
