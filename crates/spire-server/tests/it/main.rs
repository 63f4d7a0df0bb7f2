//! Integration tests of spire-server.

mod agent_protocol;
