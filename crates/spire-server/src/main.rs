//! The `spire-server` binary.

fn main() -> std::process::ExitCode {
    spire_server::cli::main()
}
