//! `spire-agent api fetch [x509|jwt]`, `api validate jwt`, `api watch`: Workload API calls
//! over the agent's public socket, printed as SPIRE prints them.

/// `println!` that tolerates a closed stdout.
macro_rules! outln {
    () => { super::write_stdout("\n") };
    ($($t:tt)*) => { super::write_stdout(&format!("{}\n", format_args!($($t)*))) };
}

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand};
use spire_cli::{OutputArgs, OutputFormat};
use spire_proto::workload as pb;
use spire_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::transport::Channel;

use super::{DEFAULT_PUBLIC_SOCKET, GoDuration, uds_channel};
use crate::endpoints::workload::SECURITY_HEADER;

/// `spire-agent api ...`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The api subcommand.
    #[command(subcommand)]
    pub command: ApiCommand,
}

/// The `api` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Fetches SVIDs from the Workload API (`fetch` alone = `fetch x509`)
    Fetch(FetchArgs),
    /// Validates an SVID through the Workload API
    Validate(ValidateArgs),
    /// Attaches to the Workload API and prints updates as they're received
    Watch(CommonArgs),
}

/// Flags every api command takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Path to the SPIRE Agent API socket
    #[arg(long = "socketPath", default_value = DEFAULT_PUBLIC_SOCKET)]
    pub socket_path: String,
    /// Time to wait for a response
    #[arg(long = "timeout", default_value = "1s")]
    pub timeout: GoDuration,
}

/// `api fetch`: `x509` (default) or `jwt`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FetchArgs {
    /// What to fetch.
    #[command(subcommand)]
    pub kind: Option<FetchKind>,
    /// The x509 flags when no kind is named.
    #[command(flatten)]
    pub x509: FetchX509Args,
}

/// `api fetch x509|jwt`.
#[derive(Debug, Subcommand)]
pub enum FetchKind {
    /// Fetches X509 SVIDs from the Workload API
    X509(FetchX509Args),
    /// Fetches a JWT SVID from the Workload API
    Jwt(FetchJwtArgs),
}

/// `api fetch x509`.
#[derive(Debug, Clone, Args)]
pub struct FetchX509Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Suppress stdout
    #[arg(long = "silent", action = clap::ArgAction::SetTrue)]
    silent: bool,
    /// Write SVID data to the specified path (optional; only available for pretty output format)
    #[arg(long = "write")]
    write: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

/// `api fetch jwt`.
#[derive(Debug, Clone, Args)]
pub struct FetchJwtArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// comma separated list of audience values
    #[arg(long = "audience")]
    audience: Option<String>,
    /// SPIFFE ID subject (optional)
    #[arg(long = "spiffeID", default_value = "")]
    spiffe_id: String,
    #[command(flatten)]
    output: OutputArgs,
}

/// `api validate jwt`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// What to validate.
    #[command(subcommand)]
    pub kind: ValidateKind,
}

/// `api validate jwt`.
#[derive(Debug, Subcommand)]
pub enum ValidateKind {
    /// Validates a JWT SVID
    Jwt(ValidateJwtArgs),
}

/// `api validate jwt` flags.
#[derive(Debug, Clone, Args)]
pub struct ValidateJwtArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// expected audience value
    #[arg(long = "audience", default_value = "")]
    audience: String,
    /// JWT SVID
    #[arg(long = "svid", default_value = "")]
    svid: String,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `spire-agent api ...`.
pub fn main(args: ApiArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let res = rt.block_on(async {
        match args.command {
            ApiCommand::Fetch(f) => match f.kind {
                Some(FetchKind::X509(a)) => fetch_x509(a).await,
                Some(FetchKind::Jwt(a)) => fetch_jwt(a).await,
                None => fetch_x509(f.x509).await,
            },
            ApiCommand::Validate(v) => match v.kind {
                ValidateKind::Jwt(a) => validate_jwt(a).await,
            },
            ApiCommand::Watch(a) => watch(a).await,
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

type CmdResult = Result<(), String>;

async fn client(c: &CommonArgs) -> Result<SpiffeWorkloadApiClient<Channel>, String> {
    let path = spire_cli::socket_path_from_addr(&c.socket_path).map_err(|e| e.to_string())?;
    let ch = uds_channel(&path).await.map_err(|e| {
        format!(
            "cannot connect to {}: {}",
            path.display(),
            super::error_chain(&e)
        )
    })?;
    Ok(SpiffeWorkloadApiClient::new(ch))
}

fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    if !timeout.is_zero() {
        r.set_timeout(timeout);
    }
    r
}

fn status_text(s: &tonic::Status) -> String {
    format!(
        "rpc error: code = {} desc = {}",
        go_code_name(s.code()),
        s.message()
    )
}

fn go_code_name(c: tonic::Code) -> &'static str {
    use tonic::Code;
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Splits concatenated DER certificates.
fn split_der(mut der: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("failed to parse certificate: {e}"))?;
        out.push(der[..der.len() - rest.len()].to_vec());
        der = rest;
    }
    Ok(out)
}

/// Go's `time.Time` `%v` form in UTC: `2006-01-02 15:04:05 +0000 UTC`.
fn go_time(unix: i64) -> String {
    let t = spire_spiffe::to_offset_date_time(spire_spiffe::from_unix_secs(unix));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000 UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn validity(der: &[u8]) -> Result<(String, String), String> {
    let (_, c) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("failed to parse certificate: {e}"))?;
    Ok((
        go_time(c.validity().not_before.timestamp()),
        go_time(c.validity().not_after.timestamp()),
    ))
}

/// Go's `time.Duration` `String()` (e.g. `8.200833ms`, `1.5s`).
fn go_duration(d: Duration) -> String {
    spire_config::format_go_duration(d)
}

/// Federated bundles by trust domain ID, sorted.
type FederatedCerts = Vec<(String, Vec<Vec<u8>>)>;

struct ParsedSvid {
    spiffe_id: String,
    certs: Vec<Vec<u8>>,
    key: Vec<u8>,
    bundle: Vec<Vec<u8>>,
}

fn parse_x509_response(
    resp: &pb::X509svidResponse,
) -> Result<(Vec<ParsedSvid>, FederatedCerts), String> {
    if resp.svids.is_empty() {
        return Err("workload response contains no svids".into());
    }
    let mut federated: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for (td, der) in &resp.federated_bundles {
        let certs = split_der(der)
            .map_err(|e| format!("failed to parse bundle for federated domain {td:?}: {e}"))?;
        if certs.is_empty() {
            return Err(format!(
                "no certificates in bundle for federated domain {td:?}"
            ));
        }
        federated.push((td.clone(), certs));
    }
    federated.sort();
    let mut out = Vec::new();
    for (i, s) in resp.svids.iter().enumerate() {
        let ctx = |e: String| {
            format!(
                "failed to parse svid entry {i} for spiffe id {:?}: {e}",
                s.spiffe_id
            )
        };
        let certs = split_der(&s.x509_svid).map_err(ctx)?;
        if certs.is_empty() {
            return Err(ctx("no certificates found".into()));
        }
        let bundle = split_der(&s.bundle).map_err(ctx)?;
        if bundle.is_empty() {
            return Err(ctx("no certificates in trust bundle".into()));
        }
        out.push(ParsedSvid {
            spiffe_id: s.spiffe_id.clone(),
            certs,
            key: s.x509_svid_key.clone(),
            bundle,
        });
    }
    Ok((out, federated))
}

fn print_x509(
    svids: &[ParsedSvid],
    federated: &[(String, Vec<Vec<u8>>)],
    took: Duration,
) -> CmdResult {
    let mut s = String::new();
    let plural = if svids.len() == 1 { "" } else { "s" };
    let _ = writeln!(
        s,
        "Received {} svid{plural} after {}",
        svids.len(),
        go_duration(took)
    );
    for svid in svids {
        let _ = writeln!(s);
        let _ = writeln!(s, "SPIFFE ID:\t\t{}", svid.spiffe_id);
        let (nb, na) = validity(&svid.certs[0])?;
        let _ = writeln!(s, "SVID Valid After:\t{nb}");
        let _ = writeln!(s, "SVID Valid Until:\t{na}");
        for (i, c) in svid.certs.iter().enumerate().skip(1) {
            let (nb, na) = validity(c)?;
            let _ = writeln!(s, "Intermediate #{i} Valid After:\t{nb}");
            let _ = writeln!(s, "Intermediate #{i} Valid Until:\t{na}");
        }
        for (i, c) in svid.bundle.iter().enumerate() {
            let (nb, na) = validity(c)?;
            let _ = writeln!(s, "CA #{} Valid After:\t{nb}", i + 1);
            let _ = writeln!(s, "CA #{} Valid Until:\t{na}", i + 1);
        }
        for (td, certs) in federated {
            for (i, c) in certs.iter().enumerate() {
                let (nb, na) = validity(c)?;
                let _ = writeln!(s, "[{td}] CA #{} Valid After:\t{nb}", i + 1);
                let _ = writeln!(s, "[{td}] CA #{} Valid Until:\t{na}", i + 1);
            }
        }
    }
    let _ = writeln!(s);
    super::write_stdout(&s);
    Ok(())
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    let _ = writeln!(s, "-----END {label}-----");
    s
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> CmdResult {
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    // An existing file keeps its mode on open: set it explicitly.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(err)?;
    f.write_all(data).map_err(err)
}

fn write_x509(dir: &Path, svids: &[ParsedSvid], federated: &[(String, Vec<Vec<u8>>)]) -> CmdResult {
    let certs_pem = |certs: &[Vec<u8>]| -> String {
        certs.iter().map(|c| pem_block("CERTIFICATE", c)).collect()
    };
    for (i, svid) in svids.iter().enumerate() {
        let svid_path = dir.join(format!("svid.{i}.pem"));
        let key_path = dir.join(format!("svid.{i}.key"));
        let bundle_path = dir.join(format!("bundle.{i}.pem"));
        outln!("Writing SVID #{i} to file {}.", svid_path.display());
        write_file(&svid_path, certs_pem(&svid.certs).as_bytes(), 0o644)?;
        outln!("Writing key #{i} to file {}.", key_path.display());
        let key_pem = zeroize::Zeroizing::new(pem_block("PRIVATE KEY", &svid.key));
        write_file(&key_path, key_pem.as_bytes(), 0o600)?;
        outln!("Writing bundle #{i} to file {}.", bundle_path.display());
        write_file(&bundle_path, certs_pem(&svid.bundle).as_bytes(), 0o644)?;
        for (j, (td, certs)) in federated.iter().enumerate() {
            let p = dir.join(format!("federated_bundle.{i}.{j}.pem"));
            outln!(
                "Writing federated bundle #{j} for trust domain {td} to file {}.",
                p.display()
            );
            write_file(&p, certs_pem(certs).as_bytes(), 0o644)?;
        }
    }
    Ok(())
}

fn x509_json(resp: &pb::X509svidResponse) -> serde_json::Value {
    serde_json::json!({
        "svids": resp.svids.iter().map(|s| serde_json::json!({
            "spiffe_id": s.spiffe_id,
            "x509_svid": B64.encode(&s.x509_svid),
            "x509_svid_key": B64.encode(&s.x509_svid_key),
            "bundle": B64.encode(&s.bundle),
            "hint": s.hint,
        })).collect::<Vec<_>>(),
        "crl": resp.crl.iter().map(|c| B64.encode(c)).collect::<Vec<_>>(),
        "federated_bundles": resp.federated_bundles.iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(B64.encode(v))))
            .collect::<serde_json::Map<_, _>>(),
    })
}

async fn fetch_x509_response(c: &CommonArgs) -> Result<pb::X509svidResponse, String> {
    let mut client = client(c).await?;
    let mut stream = client
        .fetch_x509svid(request(pb::X509svidRequest {}, c.timeout.0))
        .await
        .map_err(|s| status_text(&s))?
        .into_inner();
    match stream.message().await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err("workload api closed the stream without a response".into()),
        Err(s) => Err(status_text(&s)),
    }
}

async fn fetch_x509(a: FetchX509Args) -> CmdResult {
    let start = Instant::now();
    let resp = fetch_x509_response(&a.common).await?;
    let took = start.elapsed();
    if a.output.output == OutputFormat::Json {
        if !a.silent {
            outln!("{}", x509_json(&resp));
        }
        return Ok(());
    }
    let (svids, federated) = parse_x509_response(&resp)?;
    if !a.silent {
        print_x509(&svids, &federated, took)?;
    }
    if let Some(dir) = &a.write {
        write_x509(dir, &svids, &federated)?;
    }
    Ok(())
}

async fn fetch_jwt(a: FetchJwtArgs) -> CmdResult {
    let audience: Vec<String> = a
        .audience
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if audience.is_empty() {
        return Err("audience must be specified".into());
    }
    let mut client = client(&a.common).await?;
    let mut bundles_stream = client
        .fetch_jwt_bundles(request(pb::JwtBundlesRequest {}, a.common.timeout.0))
        .await
        .map_err(|s| format!("failed to receive JWT bundles: {}", status_text(&s)))?
        .into_inner();
    let bundles = match bundles_stream.message().await {
        Ok(Some(b)) => b,
        Ok(None) => return Err("failed to receive JWT bundles: stream closed".into()),
        Err(s) => return Err(status_text(&s)),
    };
    let svids = client
        .fetch_jwtsvid(request(
            pb::JwtsvidRequest {
                audience,
                spiffe_id: a.spiffe_id.clone(),
            },
            a.common.timeout.0,
        ))
        .await
        .map_err(|s| status_text(&s))?
        .into_inner();
    let mut tds: Vec<(&String, &Vec<u8>)> = bundles.bundles.iter().collect();
    tds.sort();
    if a.output.output == OutputFormat::Json {
        let v = serde_json::json!([
            {"svids": svids.svids.iter().map(|s| serde_json::json!({
                "spiffe_id": s.spiffe_id, "svid": s.svid, "hint": s.hint,
            })).collect::<Vec<_>>()},
            {"bundles": tds.iter().map(|(k, v)| ((*k).clone(), serde_json::Value::from(B64.encode(v))))
                .collect::<serde_json::Map<_, _>>()},
        ]);
        outln!("{v}");
        return Ok(());
    }
    let mut s = String::new();
    for svid in &svids.svids {
        let _ = writeln!(s, "token({}):\n\t{}", svid.spiffe_id, svid.svid);
    }
    for (td, jwks) in tds {
        let _ = writeln!(s, "bundle({td}):\n\t{}", String::from_utf8_lossy(jwks));
    }
    super::write_stdout(&s);
    Ok(())
}

/// A protobuf `Value` as JSON.
fn proto_value_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => (*b).into(),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                serde_json::Value::from(*n as i64)
            } else {
                serde_json::Value::from(*n)
            }
        }
        Some(Kind::StringValue(s)) => s.clone().into(),
        Some(Kind::ListValue(l)) => l.values.iter().map(proto_value_json).collect(),
        Some(Kind::StructValue(s)) => proto_struct_json(s),
    }
}

fn proto_struct_json(s: &prost_types::Struct) -> serde_json::Value {
    let mut fields: Vec<_> = s.fields.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    serde_json::Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.clone(), proto_value_json(v)))
            .collect(),
    )
}

async fn validate_jwt(a: ValidateJwtArgs) -> CmdResult {
    if a.audience.is_empty() {
        return Err("audience must be specified".into());
    }
    if a.svid.is_empty() {
        return Err("svid must be specified".into());
    }
    let mut client = client(&a.common).await?;
    let resp = client
        .validate_jwtsvid(request(
            pb::ValidateJwtsvidRequest {
                audience: a.audience.clone(),
                svid: a.svid.clone(),
            },
            a.common.timeout.0,
        ))
        .await
        .map_err(|s| {
            if s.code() == tonic::Code::InvalidArgument {
                format!("SVID is not valid: {}", s.message())
            } else {
                format!("unable to validate JWT SVID: {}", status_text(&s))
            }
        })?
        .into_inner();
    let claims = resp
        .claims
        .as_ref()
        .map(proto_struct_json)
        .unwrap_or_else(|| serde_json::json!({}));
    if a.output.output == OutputFormat::Json {
        outln!(
            "{}",
            serde_json::json!({"spiffe_id": resp.spiffe_id, "claims": claims})
        );
        return Ok(());
    }
    outln!("SVID is valid.");
    outln!("SPIFFE ID : {}", resp.spiffe_id);
    outln!("Claims    : {claims}");
    Ok(())
}

async fn watch(a: CommonArgs) -> CmdResult {
    let mut client = client(&a).await?;
    let mut stream = client
        .fetch_x509svid(request(pb::X509svidRequest {}, Duration::ZERO))
        .await
        .map_err(|s| status_text(&s))?
        .into_inner();
    let mut since = Instant::now();
    loop {
        tokio::select! {
            msg = stream.message() => match msg {
                Ok(Some(resp)) => {
                    let (svids, federated) = parse_x509_response(&resp)?;
                    print_x509(&svids, &federated, since.elapsed())?;
                    let _ = std::io::stdout().flush();
                    since = Instant::now();
                }
                Ok(None) => return Ok(()),
                Err(s) => return Err(status_text(&s)),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_format() {
        assert_eq!(go_time(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(go_time(1_515_602_797), "2018-01-10 16:46:37 +0000 UTC");
    }

    #[test]
    fn pem_lines_are_64_wide() {
        let p = pem_block("CERTIFICATE", &[7u8; 100]);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
    }

    #[test]
    fn claims_json_keeps_integers() {
        let s = prost_types::Struct {
            fields: [
                (
                    "exp".to_owned(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::NumberValue(1700000000.0)),
                    },
                ),
                (
                    "sub".to_owned(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue("x".into())),
                    },
                ),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(
            proto_struct_json(&s).to_string(),
            r#"{"exp":1700000000,"sub":"x"}"#
        );
    }
}
