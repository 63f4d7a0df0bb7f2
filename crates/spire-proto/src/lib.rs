//! Generated protobuf/gRPC code for the Workload API and SPIRE APIs
