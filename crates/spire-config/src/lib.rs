//! SPIRE HCL configuration: server and agent config files
