//! `autoprune split`: how the env's data is split and normalised, as JSON.

use anyhow::Result;
use autoprune::config::EnvSpec;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct SplitArgs {
    /// Env file (envs/*.toml).
    #[arg(long)]
    env: PathBuf,
    /// Write the JSON here (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: SplitArgs) -> Result<()> {
    let spec = EnvSpec::load(&args.env)?;
    let plan = autoprune::data::split_plan(&spec.data_options())?;
    let text = serde_json::to_string(&plan)?;
    match &args.out {
        Some(path) => {
            autoprune::fsio::prepare_output(path)?;
            autoprune::fsio::write_atomic(path, text.as_bytes())?;
        }
        None => println!("{text}"),
    }
    Ok(())
}
