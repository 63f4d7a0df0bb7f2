//! `spire-server x509 mint`.
//!
//! Mirrors `cmd/spire-server/cli/x509/mint.go`: the key is generated here, only a CSR goes to
//! the server.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::CommonArgs;
use super::agent::parse_go_duration;
use super::client::{connect, rpc_error};
use super::printer::{self, OutputFormat};
use crate::pb::{bundle as bundle_pb, svid as pb};

#[derive(Debug, Subcommand)]
pub(crate) enum X509Command {
    /// Mints an X509-SVID
    Mint(MintArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MintArgs {
    /// SPIFFE ID of the X509-SVID
    #[arg(long = "spiffeID")]
    spiffe_id: Option<String>,
    /// TTL of the X509-SVID
    #[arg(long = "ttl")]
    ttl: Option<String>,
    /// DNS name that will be included in SVID. Can be used more than once
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// Directory to write output to instead of stdout
    #[arg(long = "write")]
    write: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

pub(crate) async fn run(cmd: X509Command) -> anyhow::Result<ExitCode> {
    let X509Command::Mint(a) = cmd;
    let Some(spiffe_id) = &a.spiffe_id else {
        bail!("spiffeID must be specified: set -spiffeID");
    };
    let id: spire_spiffe::SpiffeId = spiffe_id
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid value {spiffe_id:?} for -spiffeID: {e}"))?;
    let ttl = match &a.ttl {
        Some(t) => {
            let d =
                parse_go_duration(t).with_context(|| format!("invalid value {t:?} for -ttl"))?;
            i32::try_from(d.as_secs()).context("-ttl is too large")?
        }
        None => 0,
    };
    let (key_pem, csr_der) = crate::csr::generate_key_and_csr(&id, &a.dns)?;
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::svid_client::SvidClient::new(channel.clone());
    let resp = client
        .mint_x509svid(pb::MintX509svidRequest { csr: csr_der, ttl })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let Some(svid) = resp.svid else {
        bail!("server response missing SVID");
    };
    let mut bclient = bundle_pb::bundle_client::BundleClient::new(channel);
    let bundle = bclient
        .get_bundle(bundle_pb::GetBundleRequest { output_mask: None })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let chain_pem: String = svid
        .cert_chain
        .iter()
        .map(|c| printer::pem_cert(c))
        .collect();
    let bundle_pem = printer::bundle_pem(&bundle);
    if let Some(dir) = &a.write {
        let dir = Path::new(dir);
        let svid_path = dir.join("svid.pem");
        let key_path = dir.join("key.pem");
        let bundle_path = dir.join("bundle.pem");
        std::fs::write(&svid_path, &chain_pem)
            .with_context(|| format!("cannot write {}", svid_path.display()))?;
        write_private(&key_path, key_pem.as_bytes())?;
        std::fs::write(&bundle_path, &bundle_pem)
            .with_context(|| format!("cannot write {}", bundle_path.display()))?;
        if a.common.output == OutputFormat::Pretty {
            println!("X509-SVID written to {}", svid_path.display());
            println!("Private key written to {}", key_path.display());
            println!("Root CAs written to {}", bundle_path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.common.output == OutputFormat::Json {
        printer::print_json(&json!({
            "x509_svid": chain_pem,
            "private_key": key_pem.as_str(),
            "root_cas": bundle_pem,
        }));
    } else {
        println!("X509-SVID:\n{chain_pem}");
        println!("Private key:\n{}", key_pem.as_str());
        println!("Root CAs:\n{bundle_pem}");
    }
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))
}
