//! `autoprune graph`: the env's model graph (or an ONNX file's), its costs, prunable groups
//! and the layers left unpruned with the reason.

use super::JsonArg;
use anyhow::{Context, Result};
use autoprune::config::EnvSpec;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct GraphArgs {
    /// Env file (envs/*.toml).
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    env: Option<PathBuf>,
    /// An ONNX model instead of an env: what autoprune imports from it, before any env is
    /// written (no data set is checked).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Also write the graph in Graphviz DOT to this file.
    #[arg(long)]
    dot: Option<PathBuf>,
    #[command(flatten)]
    out: JsonArg,
}

pub fn run(args: GraphArgs) -> Result<()> {
    let (name, graph) = match (&args.env, &args.model) {
        (_, Some(model)) => {
            let name = model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, autoprune::onnx::import(model)?.graph)
        }
        (Some(env), None) => {
            let spec = EnvSpec::load(env)?;
            (spec.name.clone(), spec.build_graph()?)
        }
        (None, None) => anyhow::bail!("give --env or --model"),
    };
    if let Some(path) = &args.dot {
        std::fs::write(path, graph.to_dot())
            .with_context(|| format!("{}: cannot write the DOT file", path.display()))?;
    }
    if args.out.json {
        let mut out = serde_json::to_value(graph.to_json())?;
        out["env"] = json!(name);
        println!("{out}");
    } else {
        print!("{}", graph.table());
        print!("{}", graph.summary(&name));
        if let Some(path) = args.dot {
            println!("DOT written to {}", path.display());
        }
    }
    Ok(())
}
