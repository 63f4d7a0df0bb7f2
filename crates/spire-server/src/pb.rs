//! Short aliases for the generated protobuf modules (`use crate::pb::entry as pb;`).

pub use spire_proto::server::{agent, bundle, debug, entry, localauthority, logger, svid};
pub use spire_proto::types;
