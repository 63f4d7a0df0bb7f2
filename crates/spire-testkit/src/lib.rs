//! Test-only helpers shared by the end-to-end crate (`tests/`) and the crates'
//! integration tests: free loopback ports and temporary directories, a
//! harness for spawning the real `spire-server` / `spire-agent` binaries with
//! captured logs, bounded waits, a CLI runner with a timeout, SPIRE-style HCL
//! config writers, a test CA (rcgen), an agent's side of the server API driven
//! by hand (mTLS channel, `AttestAgent`), and access to the external tools that
//! `scripts/test.sh` prepares (`SPIRE_TEST_*` variables).
//!
//! Invariants: every wait is bounded; every spawned process is killed (with
//! its process group) when its handle drops, and its logs are printed when
//! the test is panicking; under `CI=true` a missing external tool is a test
//! failure, never a skip. Nothing here is used by production code.

mod attest;
mod ca;
mod cli;
mod config;
mod env;
mod net;
mod process;
mod wait;

pub use attest::{AttestedAgent, attest, attest_with_csr, tls_channel};
pub use ca::{IssuedCert, LeafSpec, TestCa};
pub use cli::{Cli, CliOutput, DEFAULT_CLI_TIMEOUT, cli_field, run_cli};
pub use config::{
    AgentConfig, AgentNodeAttestor, DataStoreConfig, KeyManagerConfig, ServerConfig, UpstreamDisk,
    hcl_string,
};
pub use env::{
    envoy, go_bin_dir, go_client, is_ci, mysql_url, openssl, postgres_url, python, python_script,
    require_tool,
};
pub use net::{free_port, temp_dir};
pub use process::{Process, bin_path, target_dir, workspace_root};
pub use wait::{WaitTimeout, wait_until, wait_until_sync};
