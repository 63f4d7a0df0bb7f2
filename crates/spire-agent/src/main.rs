//! The `spire-agent` binary.

fn main() -> std::process::ExitCode {
    spire_agent::cli::main()
}
