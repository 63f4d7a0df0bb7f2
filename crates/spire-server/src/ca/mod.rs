//! The server's signing authorities: the X.509 CA and the JWT signing key, their A/B slots and
//! rotation ([`manager`]), and the persisted journal ([`journal`]).
//!
//! Mirrors `pkg/server/ca` and `pkg/server/ca/manager`.

pub mod journal;
pub mod manager;

pub use manager::{
    AuthorityState, CaConfig, CaError, CaManager, JwtSvid, ServerSvid, SlotStatus, X509SvidChain,
};
