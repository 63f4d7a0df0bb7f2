//! End-to-end tests. Modules are named after SPIRE test/integration suites.
