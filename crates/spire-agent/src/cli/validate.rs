//! `spire-agent validate`: parses the config file (and the plugin settings the agent checks at
//! start) without running anything.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use spire_config::AgentOverrides;

use super::run::{DEFAULT_CONFIG_PATH, load};

/// Flags of `spire-agent validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Path to a SPIRE config file
    #[arg(long = "config", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Expand environment variables in SPIRE config file
    #[arg(long = "expandEnv", action = clap::ArgAction::SetTrue)]
    pub expand_env: bool,
}

/// Runs `spire-agent validate`.
pub fn validate(a: ValidateArgs) -> ExitCode {
    match check(&a) {
        Ok(()) => {
            println!("SPIRE agent configuration file is valid.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("SPIRE agent configuration file is invalid: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(a: &ValidateArgs) -> Result<(), String> {
    let cfg = load(&a.config, a.expand_env, &AgentOverrides::default())
        .map_err(|e| super::error_chain(&e))?;
    crate::manager::keys::AgentKeyStore::from_plugin(
        cfg.plugins.single("KeyManager"),
        &cfg.data_dir,
    )
    .map_err(|e| e.to_string())?;
    if let Some(p) = cfg.plugins.single("NodeAttestor")
        && p.name != "join_token"
    {
        crate::attestor::node::from_config(&cfg).map_err(|e| e.to_string())?;
    }
    crate::endpoints::EndpointsConfig::from_agent_config(&cfg).map_err(|e| e.to_string())?;
    Ok(())
}
