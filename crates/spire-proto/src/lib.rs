//! Generated protobuf messages and tonic clients/servers for the wire APIs spire-rs speaks: the
//! SPIFFE Workload API, SPIRE's server and agent APIs (spire-api-sdk, SPIRE 1.15), and the
//! spire-rs push extension.
//!
//! Invariants: this crate contains only generated code and module wiring, no logic. The code is
//! generated at build time from the project's own `.proto` files in the repository's `proto/`
//! directory (protox + tonic-prost-build, no system protoc). Those files are written from
//! SPIRE's wire facts; `tests/it` proves they match the upstream definitions shipped inside the
//! `spire-api` and `spiffe` crate packages (services, methods, streaming, field numbers and
//! types). Protobuf packages map to modules as follows:
//!
//! | module | protobuf package |
//! |---|---|
//! | [`workload`] | none (service `SpiffeWorkloadAPI`, paths `/SpiffeWorkloadAPI/...`) |
//! | [`types`] | `spire.api.types` |
//! | [`server::agent`], [`server::bundle`], [`server::entry`], [`server::svid`], [`server::trustdomain`], [`server::localauthority`], [`server::debug`], [`server::logger`] | `spire.api.server.<name>.v1` |
//! | [`agent::delegatedidentity`], [`agent::logger`] | `spire.api.agent.<name>.v1` |
//! | [`agent::debug`] | `spire.agent.debug.v1` (SPIRE's package really is spelled so) |
//! | [`spire_rs::agent`] | `spire_rs.agent.v1` (spire-rs extension, not in SPIRE) |
//!
//! Each service module holds the messages, a `<service>_client` module and a `<service>_server`
//! module (e.g. [`server::entry::entry_server::EntryServer`]).

/// The generated code, nested exactly like the protobuf packages (prost's cross-package
/// references are relative paths, so the nesting must mirror the packages).
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used
)]
mod generated {
    pub mod workload {
        include!(concat!(env!("OUT_DIR"), "/_.rs"));
    }

    pub mod spire {
        pub mod api {
            pub mod types {
                include!(concat!(env!("OUT_DIR"), "/spire.api.types.rs"));
            }

            pub mod server {
                pub mod agent {
                    pub mod v1 {
                        include!(concat!(env!("OUT_DIR"), "/spire.api.server.agent.v1.rs"));
                    }
                }
                pub mod bundle {
                    pub mod v1 {
                        include!(concat!(env!("OUT_DIR"), "/spire.api.server.bundle.v1.rs"));
                    }
                }
                pub mod entry {
                    pub mod v1 {
                        include!(concat!(env!("OUT_DIR"), "/spire.api.server.entry.v1.rs"));
                    }
                }
                pub mod svid {
                    pub mod v1 {
                        include!(concat!(env!("OUT_DIR"), "/spire.api.server.svid.v1.rs"));
                    }
                }
                pub mod trustdomain {
                    pub mod v1 {
                        include!(concat!(
                            env!("OUT_DIR"),
                            "/spire.api.server.trustdomain.v1.rs"
                        ));
                    }
                }
                pub mod localauthority {
                    pub mod v1 {
                        include!(concat!(
                            env!("OUT_DIR"),
                            "/spire.api.server.localauthority.v1.rs"
                        ));
                    }
                }
                pub mod debug {
                    pub mod v1 {
                        include!(concat!(env!("OUT_DIR"), "/spire.api.server.debug.v1.rs"));
                    }
                }
                pub mod logger {
                    pub mod v1 {
                        include!(concat!(env!("OUT_DIR"), "/spire.api.server.logger.v1.rs"));
                    }
                }
            }

            pub mod agent {
                pub mod delegatedidentity {
                    pub mod v1 {
                        include!(concat!(
                            env!("OUT_DIR"),
                            "/spire.api.agent.delegatedidentity.v1.rs"
                        ));
                    }
                }
                pub mod logger {
                    pub mod v1 {
                        include!(concat!(env!("OUT_DIR"), "/spire.api.agent.logger.v1.rs"));
                    }
                }
            }
        }

        pub mod agent {
            pub mod debug {
                pub mod v1 {
                    include!(concat!(env!("OUT_DIR"), "/spire.agent.debug.v1.rs"));
                }
            }
        }
    }

    pub mod spire_rs {
        pub mod agent {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/spire_rs.agent.v1.rs"));
            }
        }
    }
}

/// SPIFFE Workload API (no protobuf package): service `SpiffeWorkloadAPI`.
pub use generated::workload;

/// Shared SPIRE API types, package `spire.api.types`.
pub use generated::spire::api::types;

/// SPIRE server APIs, packages `spire.api.server.<name>.v1`.
pub mod server {
    pub use crate::generated::spire::api::server::agent::v1 as agent;
    pub use crate::generated::spire::api::server::bundle::v1 as bundle;
    pub use crate::generated::spire::api::server::debug::v1 as debug;
    pub use crate::generated::spire::api::server::entry::v1 as entry;
    pub use crate::generated::spire::api::server::localauthority::v1 as localauthority;
    pub use crate::generated::spire::api::server::logger::v1 as logger;
    pub use crate::generated::spire::api::server::svid::v1 as svid;
    pub use crate::generated::spire::api::server::trustdomain::v1 as trustdomain;
}

/// SPIRE agent admin APIs: `spire.api.agent.delegatedidentity.v1`, `spire.agent.debug.v1`,
/// `spire.api.agent.logger.v1`.
pub mod agent {
    pub use crate::generated::spire::agent::debug::v1 as debug;
    pub use crate::generated::spire::api::agent::delegatedidentity::v1 as delegatedidentity;
    pub use crate::generated::spire::api::agent::logger::v1 as logger;
}

/// spire-rs's own extensions (not part of SPIRE).
pub mod spire_rs {
    /// Package `spire_rs.agent.v1`: the server-to-agent `Watch` push stream.
    pub use crate::generated::spire_rs::agent::v1 as agent;
}

/// Encoded `google.protobuf.FileDescriptorSet` of every file above, imports included and source
/// info stripped, for gRPC server reflection (e.g. `tonic-reflection`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/spire_proto_descriptor.bin"));
