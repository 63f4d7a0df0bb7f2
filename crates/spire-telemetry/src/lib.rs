//! Logging setup and log field names
