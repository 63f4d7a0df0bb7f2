//! CPU time and memory of another process, read from `/proc/<pid>` (Linux).

use std::time::Duration;

/// One reading of a process's resource use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcSample {
    /// User + system CPU time consumed so far.
    pub cpu: Duration,
    /// Resident set size now, KiB.
    pub rss_kb: u64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub hwm_kb: u64,
}

/// Why a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The files could not be read (process gone, or not Linux).
    #[error("cannot read /proc/{pid}: {source}")]
    Io {
        /// The process.
        pid: u32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The contents did not have the expected shape.
    #[error("unexpected format of /proc/{pid}/{file}")]
    Format {
        /// The process.
        pid: u32,
        /// The file.
        file: &'static str,
    },
}

/// Clock ticks per second for `/proc/<pid>/stat` times.
fn ticks_per_second() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => u64::try_from(t).unwrap_or(100),
        _ => 100,
    }
}

/// Reads the CPU time and memory of `pid`.
pub fn sample(pid: u32) -> Result<ProcSample, ProcError> {
    let io = |source| ProcError::Io { pid, source };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(io)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(io)?;
    let ticks = parse_stat_ticks(&stat).ok_or(ProcError::Format { pid, file: "stat" })?;
    let rss_kb = status_kb(&status, "VmRSS:").ok_or(ProcError::Format {
        pid,
        file: "status",
    })?;
    let hwm_kb = status_kb(&status, "VmHWM:").unwrap_or(rss_kb);
    let tps = ticks_per_second();
    let cpu = Duration::from_secs(ticks / tps)
        + Duration::from_nanos((ticks % tps) * 1_000_000_000 / tps);
    Ok(ProcSample {
        cpu,
        rss_kb,
        hwm_kb,
    })
}

/// utime + stime (fields 14 and 15) from `/proc/<pid>/stat`. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted after its closing parenthesis.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime is field 14.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let stat = "1234 (spire (x) server) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 100 200 300";
        assert_eq!(parse_stat_ticks(stat), Some(300));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn parses_status() {
        let s = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_kb(s, "VmRSS:"), Some(1024));
        assert_eq!(status_kb(s, "VmHWM:"), Some(2048));
        assert_eq!(status_kb(s, "VmSwap:"), None);
    }

    #[test]
    fn samples_self() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kb > 0);
        assert!(s.hwm_kb >= s.rss_kb);
    }
}
