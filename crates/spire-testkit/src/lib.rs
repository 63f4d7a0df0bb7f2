//! Test-only helpers: test CA, free ports, process harness
