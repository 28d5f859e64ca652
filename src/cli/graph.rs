//! `autoprune graph`: the env's model graph, its costs and prunable groups.

use super::JsonArg;
use anyhow::{Context, Result};
use autoprune::config::EnvSpec;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct GraphArgs {
    /// Env file (envs/*.toml).
    #[arg(long)]
    env: PathBuf,
    /// Also write the graph in Graphviz DOT to this file.
    #[arg(long)]
    dot: Option<PathBuf>,
    #[command(flatten)]
    out: JsonArg,
}

pub fn run(args: GraphArgs) -> Result<()> {
    let spec = EnvSpec::load(&args.env)?;
    let graph = spec.build_graph()?;
    if let Some(path) = &args.dot {
        std::fs::write(path, graph.to_dot())
            .with_context(|| format!("{}: cannot write the DOT file", path.display()))?;
    }
    if args.out.json {
        let mut out = serde_json::to_value(graph.to_json())?;
        out["env"] = json!(spec.name);
        println!("{out}");
    } else {
        print!("{}", graph.table());
        print!("{}", graph.summary(&spec.name));
        if let Some(path) = args.dot {
            println!("DOT written to {}", path.display());
        }
    }
    Ok(())
}
