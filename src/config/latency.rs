//! The env's `[latency]` table: how latency is measured and where its table is cached.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[latency]`: measure latency on the evaluator's device. With it (or with a latency
/// budget), every score carries the pruned model's measured latency, its predicted latency
/// and the speedup against the dense model, and channel budgets may be stated in latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    /// Samples per timed forward pass.
    #[serde(default = "default_latency_batch")]
    pub batch: usize,
    /// Points per axis of each node's table.
    #[serde(default = "default_latency_grid")]
    pub grid: usize,
    /// Timed runs per table point (the median counts; warm-up runs come first).
    #[serde(default = "default_table_repeats")]
    pub repeats: usize,
    /// Timed runs per measured model (scores, the dense model).
    #[serde(default = "default_model_repeats")]
    pub model_repeats: usize,
    /// Random channel policies timed end to end to calibrate the table.
    #[serde(default = "default_calibration")]
    pub calibration: usize,
    /// The table's cache file. Default: beside the model's weights,
    /// `<env name>.latency-<model fingerprint>-<device>-t<threads>-b<batch>.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<PathBuf>,
}

fn default_latency_batch() -> usize {
    1
}

fn default_latency_grid() -> usize {
    6
}

fn default_table_repeats() -> usize {
    7
}

fn default_model_repeats() -> usize {
    15
}

fn default_calibration() -> usize {
    12
}

impl Default for LatencySpec {
    fn default() -> Self {
        Self {
            batch: default_latency_batch(),
            grid: default_latency_grid(),
            repeats: default_table_repeats(),
            model_repeats: default_model_repeats(),
            calibration: default_calibration(),
            table: None,
        }
    }
}

/// Largest latency batch, grid and repeat count.
pub const MAX_LATENCY_BATCH: usize = 4096;
pub const MAX_LATENCY_GRID: usize = 32;
pub const MAX_LATENCY_REPEATS: usize = 1000;
