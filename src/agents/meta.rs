//! Reptile (Nichol, Achiam and Schulman, 2018) over a distribution of pruning tasks: the
//! graph agent's weights are a meta-initialisation θ. Each iteration picks one task (a
//! model, a budget, a granularity), adapts a copy of θ to it with a few episodes of the
//! agent's own PPO, and moves θ a step ε toward the adapted weights: θ ← θ + ε (θ' − θ).
//! What survives the averaging is what helps on every task: an initialisation that adapts to
//! a new task in a few episodes.

use super::gnn::GraphAgent;
use crate::check::{Checks, MAX_EPISODES};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// `[reptile]` in a meta-training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReptileConfig {
    /// Outer iterations (one task each).
    pub iterations: usize,
    /// Episodes of adaptation per iteration (the inner loop).
    pub inner_episodes: usize,
    /// The outer step ε at the first iteration; it decays linearly to `meta_lr_end`.
    pub meta_lr: f64,
    pub meta_lr_end: f64,
}

impl Default for ReptileConfig {
    fn default() -> Self {
        Self {
            iterations: 100,
            inner_episodes: 8,
            meta_lr: 1.0,
            meta_lr_end: 0.1,
        }
    }
}

impl ReptileConfig {
    /// What is wrong with the values, if anything: (key, message).
    pub fn check(&self) -> Option<(&'static str, String)> {
        let step = |x: f64| x > 0.0 && x <= 1.0;
        Checks::new()
            .at_least("reptile.iterations", self.iterations, 1)
            .at_most("reptile.iterations", self.iterations, MAX_EPISODES)
            .at_least("reptile.inner_episodes", self.inner_episodes, 1)
            .at_most("reptile.inner_episodes", self.inner_episodes, MAX_EPISODES)
            .rule("reptile.meta_lr", step(self.meta_lr), || {
                format!("{} must be in (0, 1]", self.meta_lr)
            })
            .rule("reptile.meta_lr_end", step(self.meta_lr_end), || {
                format!("{} must be in (0, 1]", self.meta_lr_end)
            })
            .first()
    }

    /// ε at iteration `i`.
    pub fn step_size(&self, i: usize) -> f64 {
        let t = if self.iterations > 1 {
            i as f64 / (self.iterations - 1) as f64
        } else {
            0.0
        };
        self.meta_lr + t * (self.meta_lr_end - self.meta_lr)
    }
}

/// `[meta]` in a search config: where the meta-trained initialisation is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaConfig {
    /// An agent checkpoint written by `autoprune meta-train`.
    pub init: std::path::PathBuf,
}

impl Default for MetaConfig {
    fn default() -> Self {
        Self {
            init: "policies/meta-fmnist.safetensors".into(),
        }
    }
}

/// The outer loop around a [`GraphAgent`] built for every task of the distribution.
pub struct Reptile {
    agent: GraphAgent,
    /// θ while an inner loop runs, by variable name.
    meta: Vec<(String, Tensor)>,
}

impl std::fmt::Debug for Reptile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reptile")
            .field("tasks", &self.agent.tasks())
            .finish()
    }
}

impl Reptile {
    pub fn new(agent: GraphAgent) -> Self {
        Self {
            agent,
            meta: Vec::new(),
        }
    }

    /// The agent the inner loop acts and learns with.
    pub fn agent(&mut self) -> &mut GraphAgent {
        &mut self.agent
    }

    /// The agent, after the last outer step: its weights are θ.
    pub fn into_agent(self) -> GraphAgent {
        self.agent
    }

    /// Starts an inner loop on `task`: θ is remembered, the optimiser starts afresh.
    pub fn begin_task(&mut self, task: usize) -> Result<()> {
        self.agent.select_task(task);
        self.agent.reset_learning()?;
        let mut meta: Vec<(String, Tensor)> = self
            .agent
            .policy()
            .var_store()
            .variables()
            .into_iter()
            .map(|(name, t)| (name, t.detach().copy()))
            .collect();
        meta.sort_by(|a, b| a.0.cmp(&b.0));
        self.meta = meta;
        Ok(())
    }

    /// Ends the inner loop: the weights become θ + ε (θ' − θ).
    pub fn end_task(&mut self, epsilon: f64) {
        let variables = self.agent.policy().var_store().variables();
        let _guard = tch::no_grad_guard();
        for (name, theta) in &self.meta {
            if let Some(adapted) = variables.get(name) {
                let stepped = theta + (adapted - theta) * epsilon;
                adapted.shallow_clone().copy_(&stepped);
            }
        }
        self.meta.clear();
    }
}
