//! The policy artifact: a versioned JSON file with per-layer keep ratios, the model it was
//! searched for (a fingerprint of the graph's structure and shapes), the budget, and its
//! score. A policy is never applied to another model silently.
//!
//! Must not know about training or agents.

use crate::config::EnvSpec;
use crate::error::{Error, Result};
use crate::eval::{LayerKeep, Score};
use crate::graph::ModelGraph;
use crate::prune::CostModel;
use crate::prune::{Granularity, Target};
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
    /// The one constructor: `score`'s layers and metrics on `spec`'s env (its name,
    /// granularity and target) for the model with fingerprint `model`, made by `agent` in
    /// `episodes` episodes from `seed`, created now.
    pub fn new(
        spec: &EnvSpec,
        model: &str,
        score: &Score,
        agent: &str,
        episodes: usize,
        seed: u64,
    ) -> Self {
        Self {
            schema: SCHEMA,
            env: spec.name.clone(),
            model: model.to_string(),
            granularity: spec.prune.granularity,
            target: spec.prune.target,
            layers: score.layers.clone(),
            metrics: score.clone(),
            agent: agent.to_string(),
            episodes,
            seed,
            created: now_rfc3339(),
        }
    }

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
