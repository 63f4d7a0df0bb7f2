//! The `spire-loadgen` binary: parses Go-style flags, runs the load test, prints the report.

use std::io::Write as _;
use std::process::ExitCode;

use spire_cli::OutputFormat;
use spire_loadgen::Args;

fn main() -> ExitCode {
    let args: Args = match spire_cli::parse_from(std::env::args_os()) {
        Ok(a) => a,
        Err(spire_cli::CliError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPIRE_LOADGEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    spire_tls::install_default_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let format = args.output.output;
    if let Some(entries) = args.bulk_entries {
        let shape = spire_loadgen::bulk::Shape::for_totals(entries, args.bulk_agents);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        eprintln!(
            "bulk: {} agents, {} aliases x {} workloads, {} workloads per agent = {} entries",
            shape.agents,
            shape.aliases,
            shape.per_alias,
            shape.per_agent,
            shape.entries()
        );
        let sql = spire_loadgen::bulk::postgres_sql(&args.trust_domain, &shape, now);
        return match std::io::stdout().lock().write_all(sql.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cannot write the SQL: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(socket) = args.workload_socket.clone() {
        let report = match runtime.block_on(spire_loadgen::workload::run(
            &socket,
            args.workload_clients,
            args.workload_rounds,
            args.workload_timeout,
            args.workload_spread,
        )) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("spire-loadgen: {e}");
                return ExitCode::FAILURE;
            }
        };
        let stdout = std::io::stdout();
        let written = match format {
            OutputFormat::Json => spire_cli::write_json_pretty(stdout.lock(), &report),
            _ => stdout.lock().write_all(report.pretty().as_bytes()),
        };
        return match written {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cannot write the report: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let report = match runtime.block_on(spire_loadgen::run(args)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spire-loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = std::io::stdout();
    let written = match format {
        OutputFormat::Json => spire_cli::write_json_pretty(stdout.lock(), &report),
        _ => stdout.lock().write_all(report.pretty().as_bytes()),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write the report: {e}");
            ExitCode::FAILURE
        }
    }
}
