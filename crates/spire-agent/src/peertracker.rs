//! Who is on the other end of a Workload API connection.
//!
//! The kernel's `SO_PEERCRED` gives the pid, uid and gid of the process that connected. A pid
//! can be reused once that process exits, so after workload attestation (which reads
//! `/proc/<pid>`) the caller must be shown to still be the process that connected:
//!
//! * with `SO_PEERPIDFD` (Linux 6.5+) the kernel hands out a pidfd bound to the connecting
//!   process itself; if it has not exited after attestation, `/proc/<pid>` was that process
//!   all along (a live process keeps its pid);
//! * in any case the start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot) read
//!   when the connection was accepted must be unchanged.
//!
//! If either check fails the call is refused.

use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::Connected;

use crate::endpoints::authority::AuthorityRewrite;

/// Why the caller could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The socket gave no peer credentials.
    #[error("cannot read peer credentials of the connection: {0}")]
    Credentials(#[source] io::Error),
    /// The kernel did not report a pid (only possible on non-Linux systems).
    #[error("peer credentials carry no process id")]
    NoPid,
    /// The process ended or its pid now belongs to another process.
    #[error("caller process {pid} is no longer the process that connected")]
    ProcessChanged {
        /// The caller's pid.
        pid: i32,
    },
}

/// The connecting process, as the kernel reported it when the connection was accepted.
#[derive(Debug, Clone)]
pub struct CallerInfo {
    /// Process id.
    pub pid: i32,
    /// Effective user id at connect time.
    pub uid: u32,
    /// Effective group id at connect time.
    pub gid: u32,
    /// Start time (clock ticks since boot) read at accept time; `None` if it could not be read.
    start_time: Option<u64>,
    /// A pidfd of the connecting process (`SO_PEERPIDFD`), when the kernel supports it.
    pidfd: Option<Arc<OwnedFd>>,
}

impl CallerInfo {
    /// Reads the peer credentials of `stream` and the caller's start time.
    pub fn from_stream(stream: &UnixStream) -> Result<Self, PeerError> {
        let cred = stream.peer_cred().map_err(PeerError::Credentials)?;
        let pid = cred.pid().ok_or(PeerError::NoPid)?;
        let pidfd = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerPidfd)
            .ok()
            .map(Arc::new);
        Ok(Self {
            pid,
            uid: cred.uid(),
            gid: cred.gid(),
            start_time: process_start_time(pid).ok(),
            pidfd,
        })
    }

    /// A caller for tests and for `debug explain` (which names a pid, not a connection).
    pub fn for_pid(pid: i32) -> Result<Self, PeerError> {
        let start_time = process_start_time(pid).map_err(|_| PeerError::ProcessChanged { pid })?;
        Ok(Self {
            pid,
            uid: 0,
            gid: 0,
            start_time: Some(start_time),
            pidfd: None,
        })
    }

    /// Checks the pid still belongs to the process that connected. Call after attestation.
    pub fn check_alive(&self) -> Result<(), PeerError> {
        if let Some(fd) = &self.pidfd {
            // A pidfd polls readable once its process has exited.
            let mut fds = [nix::poll::PollFd::new(
                fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
                Ok(0) => {}
                _ => return Err(PeerError::ProcessChanged { pid: self.pid }),
            }
        }
        let Some(then) = self.start_time else {
            return Err(PeerError::ProcessChanged { pid: self.pid });
        };
        match process_start_time(self.pid) {
            Ok(now) if now == then => Ok(()),
            _ => Err(PeerError::ProcessChanged { pid: self.pid }),
        }
    }
}

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
pub fn process_start_time(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat has no start time field"),
        )
    })
}

/// Parses field 22 of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may itself contain spaces and parentheses, so fields are counted after the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the command name come field 3 (state) onwards; start time is field 22.
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

/// A Unix stream that carries its [`CallerInfo`], read once at accept time.
#[derive(Debug)]
pub struct PeerStream {
    inner: AuthorityRewrite<UnixStream>,
    caller: Option<CallerInfo>,
}

impl PeerStream {
    /// Wraps an accepted stream and reads its peer's credentials now. Reads go through
    /// [`AuthorityRewrite`] (HTTP/2 `:authority` repair for gRPC C-core and Java clients).
    pub fn new(inner: UnixStream) -> Self {
        let caller = match CallerInfo::from_stream(&inner) {
            Ok(c) => Some(c),
            Err(error) => {
                tracing::warn!(%error, "cannot identify workload api caller");
                None
            }
        };
        Self {
            inner: AuthorityRewrite::new(inner),
            caller,
        }
    }
}

/// The connection info tonic attaches to each request of a [`PeerStream`].
#[derive(Debug, Clone)]
pub struct PeerConnectInfo {
    /// The caller, if its credentials could be read.
    pub caller: Option<CallerInfo>,
}

impl Connected for PeerStream {
    type ConnectInfo = PeerConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        PeerConnectInfo {
            caller: self.caller.clone(),
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(parse_start_time("1234 (x) S 1"), None);
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn own_process_is_alive_and_a_changed_start_time_is_refused() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let me = CallerInfo::for_pid(pid).unwrap();
        me.check_alive().unwrap();
        let other = CallerInfo {
            start_time: me.start_time.map(|t| t + 1),
            ..me.clone()
        };
        assert!(matches!(
            other.check_alive(),
            Err(PeerError::ProcessChanged { .. })
        ));
        let unknown = CallerInfo {
            start_time: None,
            ..me.clone()
        };
        assert!(unknown.check_alive().is_err());
    }

    #[tokio::test]
    async fn peer_stream_reports_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let s = PeerStream::new(a);
        let info = s.connect_info().caller.unwrap();
        assert_eq!(info.pid, i32::try_from(std::process::id()).unwrap());
        assert_eq!(info.uid, nix::unistd::geteuid().as_raw());
        info.check_alive().unwrap();
    }

    #[tokio::test]
    async fn an_exited_caller_is_refused_through_its_pidfd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        // A child process connects and exits; its pidfd then reports the exit.
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.recv(1)",
            ])
            .arg(&path)
            .spawn()
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let caller = CallerInfo::from_stream(&stream).unwrap();
        assert_eq!(caller.pid, i32::try_from(child.id()).unwrap());
        caller.check_alive().unwrap();
        drop(stream);
        child.wait().unwrap();
        let err = caller.check_alive().unwrap_err();
        assert!(matches!(err, PeerError::ProcessChanged { .. }), "{err}");
        if caller.pidfd.is_some() {
            // Even with the start time unknown, the pidfd alone refuses the dead caller.
            let no_start = CallerInfo {
                start_time: None,
                ..caller.clone()
            };
            assert!(no_start.check_alive().is_err());
        }
    }
}
