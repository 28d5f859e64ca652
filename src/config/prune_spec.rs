//! The `[prune]` table of an env file.

use crate::prune::{Criterion, Granularity, Metric, Target};
use serde::{Deserialize, Serialize};

/// `[prune]`: granularity, criterion, budget and per-layer bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSpec {
    pub granularity: Granularity,
    pub criterion: Criterion,
    pub target: Target,
    #[serde(deserialize_with = "low_and_high")]
    pub keep_bounds: [f64; 2],
    /// Training samples (windows of a text set) the post-training criteria and the OWL
    /// allocator read, drawn once per env.
    #[serde(default = "default_calibration")]
    pub calibration: usize,
    /// Wanda's comparison group: each output row (as published) or the whole layer.
    #[serde(default)]
    pub wanda_compare: WandaCompare,
    /// Where a post-training criterion's layer inputs come from: the layers already pruned
    /// (as published), or the dense model (measured once per env and cached: cheaper).
    #[serde(default)]
    pub calibration_from: CalibrationFrom,
    /// Channel pruning of the widths LayerNorms normalise over: a transformer's residual
    /// stream becomes one group, coupled across every block (off by default).
    #[serde(default)]
    pub residual_width: bool,
}

/// `prune.calibration_from`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CalibrationFrom {
    #[default]
    Pruned,
    Dense,
}

/// `prune.wanda_compare`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WandaCompare {
    #[default]
    Row,
    Layer,
}

fn default_calibration() -> usize {
    128
}

/// `keep_bounds`: exactly `[low, high]`; a list of another length is an error, never cut.
fn low_and_high<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[f64; 2], D::Error> {
    let values = Vec::<f64>::deserialize(d)?;
    <[f64; 2]>::try_from(values.as_slice()).map_err(|_| {
        serde::de::Error::invalid_length(values.len(), &"exactly two numbers, [low, high]")
    })
}

impl Default for PruneSpec {
    fn default() -> Self {
        Self {
            granularity: Granularity::Unstructured,
            criterion: Criterion::Magnitude,
            target: Target {
                metric: Metric::Params,
                keep: 0.5,
            },
            keep_bounds: [0.01, 1.0],
            calibration: default_calibration(),
            wanda_compare: WandaCompare::Row,
            calibration_from: CalibrationFrom::Pruned,
            residual_width: false,
        }
    }
}
