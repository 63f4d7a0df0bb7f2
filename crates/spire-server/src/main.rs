//! The `spire-server` binary.
fn main() {
    println!("spire-server {}", env!("CARGO_PKG_VERSION"));
}
