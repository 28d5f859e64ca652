//! The policy artifact: a versioned JSON file with per-layer keep ratios, the model it was
//! searched for (a fingerprint of the graph's structure and shapes), the budget, and its
//! score. A policy is never applied to another model silently.
//!
//! Must not know about training.

use crate::env::{Granularity, Target};
use crate::error::{Error, Result};
use crate::eval::{LayerKeep, Score};
use crate::graph::ModelGraph;
use crate::prune::CostModel;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Version of the policy file layout.
pub const SCHEMA: u32 = 1;

/// A searched (or allocated) policy as written to `policies/*.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub schema: u32,
    /// Env name.
    pub env: String,
    /// Fingerprint of the model graph (see [`fingerprint`]).
    pub model: String,
    pub granularity: Granularity,
    pub target: Target,
    /// One keep ratio per unit (layer or channel group), in graph order.
    pub layers: Vec<LayerKeep>,
    /// The policy's score when it was written.
    pub metrics: Score,
    /// What produced it (`uniform`, `lamp`, `ddpg`, ...).
    pub agent: String,
    pub episodes: usize,
    pub seed: u64,
    /// UTC time of writing, RFC 3339.
    pub created: String,
}

/// FNV-1a, 64 bit.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// FNV-1a (64 bit) over the graph's nodes in order: names, ops with their sizes, inputs and
/// output shapes. Two graphs share a fingerprint only if they are the same model.
pub fn fingerprint(graph: &ModelGraph) -> String {
    let mut text = String::new();
    for &i in graph.order() {
        let node = graph.node(i);
        let inputs: Vec<&str> = graph
            .inputs(i)
            .iter()
            .map(|&j| graph.node(j).name.as_str())
            .collect();
        let op = serde_json::to_string(&node.op).unwrap_or_default();
        text.push_str(&format!(
            "{}|{}|{}|{:?}\n",
            node.name,
            op,
            inputs.join(","),
            node.out_shape
        ));
    }
    format!("fnv1a64:{:016x}", fnv1a(text.bytes()))
}

/// FNV-1a (64 bit) of files' bytes one after the other (a checkpoint, or a model and its
/// external weights), to tell whether the weights changed.
pub fn files_fingerprint(paths: &[std::path::PathBuf]) -> Result<String> {
    let mut bytes = Vec::new();
    for path in paths {
        bytes.extend(std::fs::read(path).map_err(|e| Error::io(path, e))?);
    }
    Ok(format!("fnv1a64:{:016x}", fnv1a(bytes)))
}

impl PolicyFile {
    /// Reads and checks a policy file (schema, finite keep ratios in (0, 1]).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses and checks a policy file's text; `path` is named in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let policy: PolicyFile = serde_json::from_str(text).map_err(|e| {
            let hint = if ["NaN", "inf", "Infinity"].iter().any(|t| text.contains(t)) {
                " (NaN and infinities are not JSON numbers)"
            } else {
                ""
            };
            Error::data(path, format!("not a valid policy file: {e}{hint}"))
        })?;
        if policy.schema != SCHEMA {
            return Err(Error::Invalid {
                path: path.to_path_buf(),
                key: "schema".into(),
                message: format!(
                    "schema {} is not supported (this build reads schema {SCHEMA})",
                    policy.schema
                ),
            });
        }
        for layer in &policy.layers {
            if !(layer.keep.is_finite() && layer.keep > 0.0 && layer.keep <= 1.0) {
                return Err(Error::Invalid {
                    path: path.to_path_buf(),
                    key: format!("layers[{}].keep", layer.name),
                    message: format!("{} is not a keep ratio in (0, 1]", layer.keep),
                });
            }
        }
        Ok(policy)
    }

    /// Writes the file atomically (see [`crate::fsio`]). Timing is not part of a policy: the
    /// evaluation's `seconds` is left out, so the same search writes the same bytes.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut file = self.clone();
        file.metrics.seconds = 0.0;
        let text = serde_json::to_string_pretty(&file).map_err(|e| Error::Invalid {
            path: path.to_path_buf(),
            key: "-".into(),
            message: format!("cannot encode the policy: {e}"),
        })?;
        crate::fsio::write_atomic(path, (text + "\n").as_bytes())
    }

    /// The keep ratios for `costs`' units, after checking that the policy was made for this
    /// model and granularity; `path` is the policy file, named in errors.
    pub fn keeps_for(&self, costs: &CostModel, path: &Path) -> Result<Vec<f64>> {
        let refuse = |key: &str, message: String| Error::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            message,
        };
        let expected = fingerprint(costs.graph());
        if self.model != expected {
            return Err(refuse(
                "model",
                format!(
                    "the policy was made for model {} (env `{}`), but this env's model is {expected}; search or allocate a policy for this env",
                    self.model, self.env
                ),
            ));
        }
        if !self.granularity.compatible(costs.granularity()) {
            return Err(refuse(
                "granularity",
                format!(
                    "the policy prunes at `{}` granularity, the env at `{}`",
                    String::from(self.granularity),
                    String::from(costs.granularity())
                ),
            ));
        }
        let units = costs.units();
        if self.layers.len() != units.len() {
            return Err(refuse(
                "layers",
                format!(
                    "{} entries, the model has {} prunable units",
                    self.layers.len(),
                    units.len()
                ),
            ));
        }
        for (layer, unit) in self.layers.iter().zip(units) {
            if layer.name != unit.name {
                return Err(refuse(
                    "layers",
                    format!("entry `{}` where the model has `{}`", layer.name, unit.name),
                ));
            }
        }
        Ok(self.layers.iter().map(|l| l.keep).collect())
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_rfc3339() -> String {
    // SOURCE_DATE_EPOCH (seconds), when set, stands for "now": reproducible files.
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes an agent's network (its `VarStore`) as a safetensors checkpoint, atomically.
pub fn save_agent(vs: &tch::nn::VarStore, path: &Path) -> Result<()> {
    crate::model::checkpoint::save_var_store(vs, path)
}

/// Loads an agent checkpoint written by [`save_agent`] into a network of the same shape.
pub fn load_agent(vs: &tch::nn::VarStore, path: &Path) -> Result<()> {
    crate::model::checkpoint::load_var_store(vs, path, |_| (0, 0), "autoprune search")
}

/// A graph agent from its checkpoint (the `agent.safetensors` of a `gnn` search), ready to act
/// on `costs`' units at `budget`: its width and depth are read from the file, the rest of
/// its settings (learning rate, clip, ...) come from `settings`.
pub fn load_graph_agent(
    path: &Path,
    costs: &CostModel,
    budget: f64,
    seed: u64,
    settings: crate::agents::gnn::GnnConfig,
) -> Result<crate::agents::gnn::GraphAgent> {
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
    let config = crate::agents::gnn::GnnConfig {
        hidden,
        layers,
        ..settings
    };
    if let Some((key, message)) = config.check() {
        return Err(not_graph_agent(format!("{key}: {message}")));
    }
    let agent = crate::agents::gnn::GraphAgent::new(config, costs, budget, seed, tch::Device::Cpu)?;
    crate::model::checkpoint::load_var_store(
        agent.policy().var_store(),
        path,
        |_| (0, 0),
        "autoprune search",
    )?;
    Ok(agent)
}

/// A PruningNet from its checkpoint (the `pruningnet.safetensors` of a `pruningnet` search),
/// for `model` (the env's pretrained model, whose graph it must fit): the hypernetworks'
/// width is read from the file.
pub fn load_pruningnet(
    path: &Path,
    model: &crate::model::GraphNet,
) -> Result<crate::agents::pruningnet::PruningNet> {
    let tensors = tch::Tensor::read_safetensors(path).map_err(|e| {
        Error::data(
            path,
            format!(
                "not a readable safetensors file ({}); give the pruningnet.safetensors of a pruningnet search",
                e.to_string().lines().next().unwrap_or_default()
            ),
        )
    })?;
    let hidden = tensors
        .iter()
        .find(|(name, t)| name.ends_with(".hidden.weight") && t.size().len() == 2)
        .map(|(_, t)| t.size()[0] as usize)
        .ok_or_else(|| Error::Checkpoint {
            path: path.to_path_buf(),
            tensor: "*.hidden.weight".into(),
            message: "missing: not a PruningNet checkpoint (a search with agent = \"pruningnet\" writes one)".into(),
        })?;
    let config = crate::agents::pruningnet::PruningNetConfig {
        hidden,
        ..Default::default()
    };
    let mut net = crate::agents::pruningnet::PruningNet::new(model, &config)?;
    crate::model::checkpoint::load_var_store(
        net.var_store_mut(),
        path,
        |_| (0, 0),
        "autoprune search (agent = \"pruningnet\")",
    )?;
    Ok(net)
}
