//! What an evaluation gives: the score of a pruned model (accuracy, loss, counts, latency)
//! and the reward computed from it.

use crate::config::RewardKind;
use crate::data::SplitName;
use serde::{Deserialize, Serialize};

/// One unit's keep ratio, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerKeep {
    pub name: String,
    pub keep: f64,
}

/// What a pruned model scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Top-1 accuracy on `split`, 0–1.
    pub accuracy: f64,
    /// Mean cross-entropy on `split`.
    pub loss: f64,
    /// Fraction of the dense model's prunable params kept.
    pub params_kept: f64,
    /// Fraction of the dense model's prunable multiply-accumulates kept.
    pub flops_kept: f64,
    /// Params of the pruned model.
    pub params: usize,
    /// Multiply-accumulates per sample of the pruned model.
    pub flops: usize,
    pub reward: f64,
    /// Effective keep ratio of every unit (after rounding), in graph order.
    pub layers: Vec<LayerKeep>,
    /// The split `accuracy` and `loss` were measured on.
    pub split: SplitName,
    /// A language model's perplexity on `split` (`exp(loss)`, per byte for a byte-level
    /// model); absent for classifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    /// Wall time of this evaluation (left out of files when 0, as in policy files).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seconds: f64,
    /// Measured and predicted latency, when the env measures latency (`[latency]`): its
    /// fields sit beside the others (`latency_ms`, `predicted_latency_ms`, ...).
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
}

/// A pruned model's latency on the evaluator's device: measured on the physically slimmed
/// model for channel pruning (on the masked model, with dense kernels, otherwise), predicted
/// by the latency table, and the speedup over the dense model measured the same way.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub latency_ms: f64,
    pub predicted_latency_ms: f64,
    pub dense_latency_ms: f64,
    /// `dense_latency_ms / latency_ms`.
    pub speedup: f64,
    /// The table's own prediction (ms), not rescaled by the dense model timed alongside:
    /// what the `err-log-latency` reward reads, the same on every run with the same table.
    #[serde(default)]
    pub table_latency_ms: f64,
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

/// The reward for an accuracy (or a language model's loss per token) at a cost. Larger is
/// better: `perplexity` gives `exp(-loss) = 1 / perplexity`, the geometric mean of the
/// probability the model gives each next token (1 for a perfect model, 1/256 for a uniform
/// guess over bytes). `latency_ms` is the latency table's prediction for the pruned model
/// (`err-log-latency` reads it, in microseconds, and is NaN without it: the env check
/// refuses that reward without a table).
pub fn reward(
    kind: RewardKind,
    accuracy: f64,
    loss: f64,
    params: usize,
    flops: usize,
    latency_ms: Option<f64>,
) -> f64 {
    let error = 1.0 - accuracy;
    match kind {
        RewardKind::Accuracy => accuracy,
        RewardKind::Perplexity => (-loss).exp(),
        RewardKind::ErrLogFlops => -error * (flops.max(1) as f64).ln(),
        RewardKind::ErrLogParams => -error * (params.max(1) as f64).ln(),
        RewardKind::ErrLogLatency => match latency_ms {
            Some(ms) => -error * (1000.0 * ms).max(1.0).ln(),
            None => f64::NAN,
        },
    }
}
