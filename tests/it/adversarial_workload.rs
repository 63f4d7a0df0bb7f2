//! Issue 12 §1–2 on the agent's Workload API socket: a caller that is gone before it is
//! answered (the PID-reuse window), slow (stalled) connections, and many concurrent streams
//! from one caller.
//!
//! Covered elsewhere (not repeated here): callers of another uid, the same uid running another
//! binary under a `sha256` selector, an unregistered uid, a call without the
//! `workload.spiffe.io` header: crates/spire-agent/tests/it/workload_e2e.rs
//! `callers_get_only_their_own_identities`.
//!
//! PID reuse proper (another process taking the dead caller's pid before the answer) cannot be
//! forced from a test; the case here is its precondition — the connecting process no longer
//! exists when the agent attests — and the agent must refuse rather than fall back to the
//! socket's peer uid.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use spire_proto::workload as wl;
use tonic::Code;
use tonic::transport::Endpoint;

use crate::common::{AgentProc, Server, WAIT, register_me, uds_channel, workload_request};

/// A Unix stream socket connected to `path` by a short-lived child process (so the socket's
/// peer credentials name a pid that has exited and been reaped by the time it is used).
fn connected_by_dead_child(path: &std::path::Path) -> (OwnedFd, u32) {
    // Without SOCK_CLOEXEC: the child inherits the descriptor and connects it; the parent's
    // copy shares the open file description, so it is connected too.
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd).to_string();
    // Any python 3 will do: the one scripts/test.sh prepares, else the one on PATH.
    let python = std::env::var_os("SPIRE_TEST_PYTHON")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "python3".into());
    let mut child = std::process::Command::new(python)
        .args([
            "-c",
            "import socket,sys,os; s=socket.socket(fileno=int(sys.argv[1])); s.connect(sys.argv[2]); print(os.getpid())",
            raw.as_str(),
            path.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    (fd, pid)
}

async fn client_over(
    fd: OwnedFd,
) -> wl::spiffe_workload_api_client::SpiffeWorkloadApiClient<tonic::transport::Channel> {
    let std_stream = std::os::unix::net::UnixStream::from(fd);
    std_stream.set_nonblocking(true).unwrap();
    let stream = tokio::net::UnixStream::from_std(std_stream).unwrap();
    let slot = Arc::new(Mutex::new(Some(stream)));
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let s = slot.lock().unwrap().take();
            async move {
                s.map(hyper_util::rt::TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the pre-connected socket was used"))
            }
        }))
        .await
        .unwrap();
    wl::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(channel)
}

async fn first_svid(
    c: &mut wl::spiffe_workload_api_client::SpiffeWorkloadApiClient<tonic::transport::Channel>,
) -> Result<wl::X509svidResponse, tonic::Status> {
    let mut stream = c
        .fetch_x509svid(workload_request(wl::X509svidRequest {}))
        .await?
        .into_inner();
    stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::internal("stream ended without a message"))
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_api_refuses_dead_callers_and_bounds_many_streams() {
    let server = Server::start(|c| c);
    let agent = AgentProc::start(&server, &server.dir.path().join("agent"));
    // An entry for this uid: a peer-uid fallback would hand its SVID to anyone of the uid.
    register_me(
        &server,
        "spiffe://example.org/workload",
        &AgentProc::id(&server),
        &[],
    );
    let socket = agent.cfg.socket_path.clone();
    spire_testkit::wait_until(WAIT, "an X509-SVID for this process", async || {
        let mut c = wl::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(
            uds_channel(&socket).await,
        );
        first_svid(&mut c).await.is_ok()
    })
    .await
    .unwrap();

    // The connecting process has exited: no SVID, whatever the socket's peer uid.
    for rpc in ["FetchX509SVID", "FetchJWTSVID"] {
        let (fd, pid) = connected_by_dead_child(&socket);
        let mut c = client_over(fd).await;
        let e = match rpc {
            "FetchX509SVID" => first_svid(&mut c).await.map(drop),
            _ => c
                .fetch_jwtsvid(workload_request(wl::JwtsvidRequest {
                    audience: vec!["aud".into()],
                    spiffe_id: String::new(),
                }))
                .await
                .map(drop),
        }
        .expect_err(rpc);
        assert_eq!(e.code(), Code::Unavailable, "{rpc} (dead pid {pid}): {e:?}");
        assert_eq!(e.message(), "workload attestation failed", "{rpc}: {e:?}");
    }

    // Slow callers: connections that send half an HTTP/2 preface, or garbage, and then stall,
    // do not stop others from being served.
    let mut stalled = Vec::new();
    for i in 0..20 {
        use std::io::Write as _;
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let _ = s.write_all(if i % 2 == 0 {
            b"PRI * HTTP/2.0\r\n"
        } else {
            &[0xff; 512]
        });
        stalled.push(s);
    }
    let mut c =
        wl::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(uds_channel(&socket).await);
    first_svid(&mut c).await.unwrap();
    drop(stalled);

    // Many concurrent streams from one caller: 200 on one connection and 50 connections with
    // one stream each. Every stream gets its SVID; the agent stays healthy.
    let agent_pid = agent.proc.pid();
    let baseline = fd_count(agent_pid);
    let shared =
        wl::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(uds_channel(&socket).await);
    let mut streams = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..250 {
        let socket = socket.clone();
        let mut c = if i < 200 {
            shared.clone()
        } else {
            wl::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(uds_channel(&socket).await)
        };
        tasks.spawn(async move {
            let mut s = c
                .fetch_x509svid(workload_request(wl::X509svidRequest {}))
                .await?
                .into_inner();
            let first = s.message().await?;
            Ok::<_, tonic::Status>((s, first.is_some_and(|m| !m.svids.is_empty()), c))
        });
    }
    let all = tokio::time::timeout(WAIT, async {
        while let Some(r) = tasks.join_next().await {
            let (s, got, c) = r.unwrap().unwrap();
            assert!(got, "a stream ended without an SVID");
            streams.push((s, c));
        }
    })
    .await;
    assert!(all.is_ok(), "not every stream was answered within {WAIT:?}");
    assert_eq!(streams.len(), 250);
    let during = fd_count(agent_pid);
    // Per connection the agent holds the socket and a handle on the caller process (for the
    // liveness check): 51 connections, about 102 descriptors, independent of the stream count.
    assert!(
        during <= baseline + 2 * 51 + 10,
        "250 streams over 51 connections: descriptors {baseline} -> {during}"
    );
    // Dropping the callers releases what they held.
    drop(streams);
    drop(shared);
    spire_testkit::wait_until(WAIT, "the agent to release the connections", async || {
        fd_count(agent_pid) <= baseline + 2
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: fds {baseline} -> {}", fd_count(agent_pid)));
    // And it still serves.
    let mut c =
        wl::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(uds_channel(&socket).await);
    first_svid(&mut c).await.unwrap();
}
