//! Log field names, as SPIRE spells them (mirrors `pkg/common/telemetry/names.go`).
//!
//! Use them as `tracing::info!({ field::SPIFFE_ID } = %id, "Issued X509-SVID")` so every crate
//! writes the same keys. Never log keys, tokens or JWTs under any field.

/// An agent's SPIFFE ID.
pub const AGENT_ID: &str = "agent_id";
/// An address (host:port or socket path).
pub const ADDRESS: &str = "address";
/// JWT audiences.
pub const AUDIENCE: &str = "audience";
/// A node attestor or workload attestor name.
pub const ATTESTOR: &str = "attestor";
/// A local authority ID (CA or JWT key).
pub const AUTHORITY_ID: &str = "authority_id";
/// A caller's remote address (TLS).
pub const CALLER_ADDR: &str = "caller_addr";
/// A caller's group ID (Unix socket peer).
pub const CALLER_GID: &str = "caller_gid";
/// A caller's SPIFFE ID (TLS).
pub const CALLER_ID: &str = "caller_id";
/// A caller's binary path (Unix socket peer).
pub const CALLER_PATH: &str = "caller_path";
/// A caller's process ID (Unix socket peer).
pub const CALLER_PID: &str = "caller_pid";
/// A caller's user ID (Unix socket peer).
pub const CALLER_UID: &str = "caller_uid";
/// A count of items.
pub const COUNT: &str = "count";
/// A registration entry ID.
pub const ENTRY_ID: &str = "entry_id";
/// An error (use `%err`).
pub const ERROR: &str = "error";
/// An expiry time.
pub const EXPIRES_AT: &str = "expires_at";
/// A gRPC method name.
pub const METHOD: &str = "method";
/// A file system path.
pub const PATH: &str = "path";
/// A process ID.
pub const PID: &str = "pid";
/// A plugin name.
pub const PLUGIN_NAME: &str = "plugin_name";
/// A plugin type.
pub const PLUGIN_TYPE: &str = "plugin_type";
/// An audit-log request ID.
pub const REQUEST_ID: &str = "request_id";
/// A cache or sync revision.
pub const REVISION: &str = "revision";
/// Selectors (`type:value`, comma separated).
pub const SELECTORS: &str = "selectors";
/// A certificate serial number.
pub const SERIAL_NUMBER: &str = "serial_number";
/// A gRPC service name.
pub const SERVICE: &str = "service";
/// A SPIFFE ID.
pub const SPIFFE_ID: &str = "spiffe_id";
/// An audit-log status (`success` or `error`).
pub const STATUS: &str = "status";
/// An audit-log gRPC status code.
pub const STATUS_CODE: &str = "status_code";
/// An audit-log status message.
pub const STATUS_MESSAGE: &str = "status_message";
/// A subject key ID (upstream authority).
pub const SUBJECT_KEY_ID: &str = "subject_key_id";
/// A subsystem name (`ca_manager`, `endpoints`, `manager`, ...).
pub const SUBSYSTEM_NAME: &str = "subsystem_name";
/// A trust domain (`example.org`).
pub const TRUST_DOMAIN: &str = "trust_domain";
/// A trust domain ID (`spiffe://example.org`).
pub const TRUST_DOMAIN_ID: &str = "trust_domain_id";
/// A time-to-live in seconds.
pub const TTL: &str = "ttl";
/// The event type (`audit` for audit-log lines).
pub const TYPE: &str = "type";
