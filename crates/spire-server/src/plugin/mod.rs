//! Server plugins built into the binary: KeyManager (`disk`, `memory`), UpstreamAuthority
//! (`disk`) and the server-side node attestors.
//!
//! Mirrors `pkg/server/catalog` and `pkg/server/plugin/*`.

pub mod keymanager;
pub mod nodeattestor;
pub mod upstreamauthority;
