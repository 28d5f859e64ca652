//! DDPG hyper-parameters, AMC's defaults (He et al., ECCV 2018).

use crate::check::{Checks, MAX_EPISODES, MAX_SAMPLES, MAX_WIDTH};
use serde::{Deserialize, Serialize};

/// The `[ddpg]` table of a search config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdpgConfig {
    /// Width of the actor's and critic's two hidden layers.
    pub hidden: usize,
    pub actor_lr: f64,
    pub critic_lr: f64,
    /// Soft target update rate.
    pub tau: f64,
    /// Discount between steps of an episode.
    pub discount: f64,
    /// Replay buffer capacity, in transitions.
    pub buffer: usize,
    pub batch_size: usize,
    /// Episodes of uniform random actions before learning starts.
    pub warmup: usize,
    /// When above 0, warm-up episodes explore around the best demonstration (the best
    /// heuristic's actions, with truncated-normal noise of this deviation) instead of
    /// drawing uniform actions as AMC does; without demonstrations they draw uniformly.
    pub warmup_sigma: f64,
    /// Initial deviation of the truncated-normal exploration noise.
    pub noise: f64,
    /// Per-episode decay of the noise deviation (after warm-up).
    pub noise_decay: f64,
    /// Weight of the newest minibatch mean reward in the moving-average baseline.
    pub baseline_alpha: f64,
}

impl Default for DdpgConfig {
    fn default() -> Self {
        Self {
            hidden: 300,
            actor_lr: 1e-4,
            critic_lr: 1e-3,
            tau: 0.01,
            discount: 1.0,
            buffer: 2000,
            batch_size: 64,
            warmup: 100,
            warmup_sigma: 0.0,
            noise: 0.5,
            noise_decay: 0.99,
            baseline_alpha: 0.5,
        }
    }
}

impl DdpgConfig {
    /// What is wrong with the values, if anything: (key, message).
    pub fn check(&self) -> Option<(&'static str, String)> {
        Checks::new()
            .at_least("ddpg.hidden", self.hidden, 1)
            .at_most("ddpg.hidden", self.hidden, MAX_WIDTH)
            .at_most("ddpg.buffer", self.buffer, MAX_SAMPLES)
            .at_most("ddpg.warmup", self.warmup, MAX_EPISODES)
            .at_least("ddpg.batch_size", self.batch_size, 1)
            .at_most("ddpg.batch_size", self.batch_size, MAX_SAMPLES)
            .rule("ddpg.buffer", self.buffer >= self.batch_size, || {
                format!(
                    "{} is smaller than batch_size ({})",
                    self.buffer, self.batch_size
                )
            })
            .positive("ddpg.actor_lr", self.actor_lr)
            .positive("ddpg.critic_lr", self.critic_lr)
            .within("ddpg.tau", self.tau, 0.0, 1.0, false)
            .within("ddpg.discount", self.discount, 0.0, 1.0, false)
            .within("ddpg.noise_decay", self.noise_decay, 0.0, 1.0, false)
            .within("ddpg.baseline_alpha", self.baseline_alpha, 0.0, 1.0, false)
            .rule(
                "ddpg.warmup_sigma",
                (0.0..=1.0).contains(&self.warmup_sigma),
                || {
                    format!(
                        "{} must be in [0, 1] (0: uniform warm-up)",
                        self.warmup_sigma
                    )
                },
            )
            .rule(
                "ddpg.noise",
                self.noise >= 0.0 && self.noise.is_finite(),
                || format!("{} must be non-negative", self.noise),
            )
            .first()
    }
}
