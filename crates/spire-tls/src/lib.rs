//! rustls setup and SPIFFE peer verification for agent/server mTLS
