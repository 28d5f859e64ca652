//! Agent checkpoints (`agent.safetensors`, `pruningnet.safetensors`): an agent's network with
//! the agent's own config in the file's metadata, and loading a graph agent from one.

use crate::agents::gnn::{GnnConfig, GraphAgent, ProfileReference};
use crate::agents::Checkpoint;
use crate::error::{Error, Result};
use crate::model::checkpoint::{recorded_config, save_recorded};
use crate::prune::CostModel;
use std::path::Path;

/// Writes an agent's network with its kind and config in the file's metadata, atomically.
pub fn save_agent(checkpoint: &Checkpoint<'_>, path: &Path) -> Result<()> {
    save_recorded(checkpoint.vars, checkpoint.kind, &checkpoint.config, path)
}

/// The graph agent config a checkpoint records. Agents recorded before profiles had a
/// reference acted relative to uniform allocation, and are read so.
fn recorded_gnn(path: &Path) -> Result<Option<GnnConfig>> {
    let Some(recorded) = recorded_config::<serde_json::Value>(path, "gnn")? else {
        return Ok(None);
    };
    let has_reference = recorded.get("reference").is_some();
    let mut config: GnnConfig = serde_json::from_value(recorded).map_err(|e| {
        Error::data(
            path,
            format!("the recorded `gnn` config does not parse ({e})"),
        )
    })?;
    if !has_reference {
        config.reference = ProfileReference::Uniform;
    }
    Ok(Some(config))
}

/// A graph agent from its checkpoint (the `agent.safetensors` of a `gnn` search,
/// `train-agent` or `meta-train`), ready to act on `costs`' units at `budget`: its width and
/// depth are the ones the file records (files written before agents recorded their config:
/// read from the tensors' shapes), the rest of its settings (learning rate, clip, ...) come
/// from `settings`. So is the reference its profile is relative to: the recorded one (uniform
/// for files without a record).
pub fn load_graph_agent(
    path: &Path,
    costs: &CostModel,
    budget: f64,
    seed: u64,
    settings: GnnConfig,
) -> Result<GraphAgent> {
    let not_graph_agent = |message: String| Error::Checkpoint {
        path: path.to_path_buf(),
        tensor: "encoder.input.weight".into(),
        message,
    };
    let shapes: std::collections::HashMap<String, Vec<i64>> = if path.is_file() {
        tch::Tensor::read_safetensors(path)
            .map_err(|e| {
                Error::data(
                    path,
                    format!("not a readable safetensors file ({}); give the agent.safetensors of a gnn search", e.to_string().lines().next().unwrap_or_default()),
                )
            })?
            .into_iter()
            .map(|(name, t)| (name, t.size()))
            .collect()
    } else {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such agent checkpoint"),
        ));
    };
    let hidden = match shapes.get("encoder.input.weight").map(Vec::as_slice) {
        Some(&[hidden, _]) if hidden > 0 => hidden as usize,
        _ => {
            return Err(not_graph_agent(
                "missing: not a graph agent's checkpoint (train one with `autoprune search` and agent = \"gnn\")".into(),
            ))
        }
    };
    let layers = (0..)
        .take_while(|l| shapes.contains_key(&format!("encoder.layer{l}.self.weight")))
        .count();
    let config = match recorded_gnn(path)? {
        Some(recorded) => GnnConfig {
            hidden: recorded.hidden,
            layers: recorded.layers,
            reference: recorded.reference,
            ..settings
        },
        None => GnnConfig {
            hidden,
            layers,
            reference: ProfileReference::Uniform,
            ..settings
        },
    };
    if let Some((key, message)) = config.check() {
        return Err(not_graph_agent(format!("{key}: {message}")));
    }
    let agent = GraphAgent::new(config, costs, budget, seed, tch::Device::Cpu)?;
    crate::model::checkpoint::load_var_store(
        agent.policy().var_store(),
        path,
        |_| (0, 0),
        |_| false,
        "autoprune search",
    )?;
    Ok(agent)
}
