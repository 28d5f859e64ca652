//! `[pruningnet]` of a search config: how MetaPruning's PruningNet is trained.

use crate::check::{Checks, MAX_SAMPLES, MAX_STEPS, MAX_WIDTH};
use serde::{Deserialize, Serialize};

/// `[pruningnet]` in a search config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruningNetConfig {
    /// Training steps (one random encoding and one batch each).
    pub steps: usize,
    /// Width of each layer's hypernetwork.
    pub hidden: usize,
    /// Adam's learning rate.
    pub lr: f64,
    pub batch_size: usize,
    /// Share of the training encodings scaled to the search's budget; the rest are random
    /// encodings anywhere in the keep bounds, as in MetaPruning.
    pub budget_share: f64,
}

impl Default for PruningNetConfig {
    fn default() -> Self {
        Self {
            steps: 1500,
            hidden: 32,
            lr: 3e-4,
            batch_size: 128,
            budget_share: 0.5,
        }
    }
}

impl PruningNetConfig {
    /// What is wrong with the values, if anything: (key, message).
    pub fn check(&self) -> Option<(&'static str, String)> {
        Checks::new()
            .at_least("pruningnet.steps", self.steps, 1)
            .at_most("pruningnet.steps", self.steps, MAX_STEPS)
            .at_least("pruningnet.hidden", self.hidden, 1)
            .at_most("pruningnet.hidden", self.hidden, MAX_WIDTH)
            .at_least("pruningnet.batch_size", self.batch_size, 1)
            .at_most("pruningnet.batch_size", self.batch_size, MAX_SAMPLES)
            .positive("pruningnet.lr", self.lr)
            .within(
                "pruningnet.budget_share",
                self.budget_share,
                0.0,
                1.0,
                false,
            )
            .first()
    }
}
