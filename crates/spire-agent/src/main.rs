//! The `spire-agent` binary.
fn main() {
    println!("spire-agent {}", env!("CARGO_PKG_VERSION"));
}
