//! The graph agent as a search agent: one-shot, it sees the whole model graph through the
//! [`GraphPolicy`] and proposes every unit's keep action at once; trained with PPO (clipped
//! surrogate; the advantage is the episode's reward minus the critic's value, normalised over
//! each batch of episodes).

use super::{DynamicState, GraphInput, GraphPolicy};
use crate::agents::util::{gaussian_log_prob, standard_normal};
use crate::agents::{Actor, Agent, Checkpoint, Episode, Learner, OneShotActor};
use crate::check::{Checks, MAX_EPISODES, MAX_EPOCHS, MAX_LAYERS, MAX_WIDTH};
use crate::error::Result;
use crate::prune::CostModel;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// `[gnn]` in a search config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GnnConfig {
    /// Width of the encoder and heads.
    pub hidden: usize,
    /// Message-passing layers.
    pub layers: usize,
    pub lr: f64,
    /// Clip range of the probability ratio.
    pub clip: f64,
    /// Passes over the collected episodes per update.
    pub epochs: usize,
    /// Episodes collected between updates.
    pub episodes_per_update: usize,
    /// Initial deviation of the Gaussian policy (learned afterwards).
    pub std: f64,
    pub value_coef: f64,
    pub entropy_coef: f64,
    /// What the proposed profile is relative to: the best heuristic's allocation (scored
    /// first on each env), or uniform allocation.
    pub reference: ProfileReference,
}

/// The allocation a graph agent's profile deviates from (equal actions reproduce it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileReference {
    /// The same keep ratio everywhere (agents trained before references existed).
    Uniform,
    /// The best of the heuristic allocators on the evaluation split.
    BestHeuristic,
}

impl Default for GnnConfig {
    fn default() -> Self {
        Self {
            hidden: 64,
            layers: 3,
            lr: 1e-3,
            clip: 0.2,
            epochs: 4,
            episodes_per_update: 8,
            std: 0.15,
            value_coef: 0.5,
            entropy_coef: 0.0,
            reference: ProfileReference::BestHeuristic,
        }
    }
}

impl GnnConfig {
    /// What is wrong with the values, if anything: (key, message).
    pub fn check(&self) -> Option<(&'static str, String)> {
        Checks::new()
            .at_least("gnn.hidden", self.hidden, 1)
            .at_most("gnn.hidden", self.hidden, MAX_WIDTH)
            .at_least("gnn.layers", self.layers, 1)
            .at_most("gnn.layers", self.layers, MAX_LAYERS)
            .at_least("gnn.epochs", self.epochs, 1)
            .at_most("gnn.epochs", self.epochs, MAX_EPOCHS)
            .at_least("gnn.episodes_per_update", self.episodes_per_update, 1)
            .at_most(
                "gnn.episodes_per_update",
                self.episodes_per_update,
                MAX_EPISODES,
            )
            .positive("gnn.lr", self.lr)
            .positive("gnn.std", self.std)
            .within("gnn.clip", self.clip, 0.0, 1.0, true)
            .first()
    }
}

/// One explored episode kept for the next update.
struct Sample {
    task: usize,
    actions: Vec<f32>,
    log_prob: f32,
    value: f32,
    reward: f32,
}

pub struct GraphAgent {
    config: GnnConfig,
    policy: GraphPolicy,
    log_std: Tensor,
    optimizer: nn::Optimizer,
    /// One input per task (a model at a budget); `task` is the one the agent acts on.
    inputs: Vec<GraphInput>,
    task: usize,
    rng: StdRng,
    /// The task, sampled actions, log-probability and value of the episodes not learned
    /// from yet, oldest first.
    pending: std::collections::VecDeque<(usize, Vec<f32>, f32, f32)>,
    samples: Vec<Sample>,
    device: Device,
}

impl std::fmt::Debug for GraphAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphAgent")
            .field("tasks", &self.inputs.len())
            .field("samples", &self.samples.len())
            .finish()
    }
}

impl GraphAgent {
    /// An agent for `costs`' graph and units at the budget `budget` (fraction kept), its
    /// network on `device`.
    pub fn new(
        config: GnnConfig,
        costs: &CostModel,
        budget: f64,
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        Self::for_tasks(config, &[(costs, budget)], seed, device)
    }

    /// An agent trained on several tasks at once (models and budgets); [`Self::select_task`]
    /// picks the one it acts on.
    pub fn for_tasks(
        config: GnnConfig,
        tasks: &[(&CostModel, f64)],
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        tch::manual_seed(seed as i64);
        let policy = GraphPolicy::new(config.hidden, config.layers, device);
        let log_std =
            policy
                .var_store()
                .root()
                .var("log_std", &[1], nn::Init::Const(config.std.ln()));
        let optimizer = nn::Adam::default().build(policy.var_store(), config.lr)?;
        let inputs = tasks
            .iter()
            .map(|(costs, budget)| {
                GraphInput::new(
                    costs,
                    &DynamicState::initial(costs.units().len(), *budget),
                    device,
                )
            })
            .collect();
        Ok(Self {
            config,
            policy,
            log_std,
            optimizer,
            inputs,
            task: 0,
            rng: StdRng::seed_from_u64(seed),
            pending: std::collections::VecDeque::new(),
            samples: Vec::new(),
            device,
        })
    }

    /// Acts on task `task` from now on (an index into the tasks it was built with).
    pub fn select_task(&mut self, task: usize) {
        self.task = task.min(self.inputs.len().saturating_sub(1));
    }

    /// The network (for checkpoints and transfer).
    /// The network and config, for an agent checkpoint.
    pub fn to_checkpoint(&self) -> Checkpoint<'_> {
        Checkpoint {
            vars: self.policy.var_store(),
            kind: "gnn",
            config: serde_json::to_string(&self.config).unwrap_or_else(|_| "{}".into()),
        }
    }

    pub fn policy(&self) -> &GraphPolicy {
        &self.policy
    }

    /// How many tasks the agent was built with.
    pub fn tasks(&self) -> usize {
        self.inputs.len()
    }

    /// Forgets collected episodes and the optimiser's moments: the start of a fresh
    /// adaptation from the current weights (Reptile's inner loop).
    pub fn reset_learning(&mut self) -> Result<()> {
        self.optimizer = nn::Adam::default().build(self.policy.var_store(), self.config.lr)?;
        self.samples.clear();
        self.pending.clear();
        Ok(())
    }

    fn update(&mut self) -> Result<()> {
        // Samples grouped by task: each task has its own graph (and number of units).
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        order.sort_by_key(|&i| self.samples[i].task);
        let samples: Vec<&Sample> = order.iter().map(|&i| &self.samples[i]).collect();
        let device = self.device;
        let column = |f: &dyn Fn(&Sample) -> f32| {
            Tensor::from_slice(&samples.iter().map(|s| f(s)).collect::<Vec<f32>>())
                .to_device(device)
        };
        let old_log_prob = column(&|s| s.log_prob);
        let returns = column(&|s| s.reward);
        let advantages = &returns - column(&|s| s.value);
        let advantages = if samples.len() > 1 {
            (&advantages - advantages.mean(Kind::Float)) / (advantages.std(true) + 1e-8)
        } else {
            advantages
        };
        let mut tasks: Vec<(usize, Tensor)> = Vec::new();
        let mut start = 0;
        while start < samples.len() {
            let task = samples[start].task;
            let end = samples[start..]
                .iter()
                .position(|s| s.task != task)
                .map_or(samples.len(), |p| start + p);
            let flat: Vec<f32> = samples[start..end]
                .iter()
                .flat_map(|s| s.actions.iter().copied())
                .collect();
            let units = self.inputs[task].units() as i64;
            tasks.push((
                task,
                Tensor::from_slice(&flat)
                    .view([(end - start) as i64, units])
                    .to_device(device),
            ));
            start = end;
        }
        for _ in 0..self.config.epochs {
            let mut log_probs = Vec::new();
            let mut values = Vec::new();
            for (task, actions) in &tasks {
                let (mean, value) = self.policy.forward(&self.inputs[*task]);
                log_probs.push(
                    gaussian_log_prob(&mean.unsqueeze(0), &self.log_std, actions).sum_dim_intlist(
                        1,
                        false,
                        Kind::Float,
                    ),
                );
                values.push(value.expand([actions.size()[0]], false));
            }
            let log_prob = Tensor::cat(&log_probs, 0);
            let value = Tensor::cat(&values, 0);
            let ratio = (log_prob - &old_log_prob).exp();
            let clipped = ratio.clamp(1.0 - self.config.clip, 1.0 + self.config.clip);
            let surrogate = (&ratio * &advantages)
                .minimum(&(clipped * &advantages))
                .mean(Kind::Float);
            let value_loss = (value - &returns).square().mean(Kind::Float);
            let entropy = (&self.log_std
                + 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln())
            .sum(Kind::Float);
            let loss = -surrogate + value_loss * self.config.value_coef
                - entropy * self.config.entropy_coef;
            self.optimizer.zero_grad();
            loss.backward();
            self.optimizer.step();
        }
        self.samples.clear();
        Ok(())
    }
}

impl Agent for GraphAgent {
    fn actor(&mut self) -> Actor<'_> {
        Actor::Profile(self)
    }

    fn begin_episode(&mut self, _index: usize) {}

    /// The rest of the batch of episodes one update learns from.
    fn ahead(&self, _next: usize) -> usize {
        self.config
            .episodes_per_update
            .saturating_sub(self.samples.len())
            .max(1)
    }

    fn acts_relative_to_reference(&self) -> bool {
        self.config.reference == ProfileReference::BestHeuristic
    }

    fn checkpoint(&self) -> Option<Checkpoint<'_>> {
        Some(self.to_checkpoint())
    }
}

/// The graph agent reads the graph itself (its encoder's inputs), not the env's features.
impl OneShotActor for GraphAgent {
    fn act(&mut self, _features: &[Vec<f32>], explore: bool) -> Vec<f64> {
        let _guard = tch::no_grad_guard();
        let (mean, value) = self.policy.forward(&self.inputs[self.task]);
        let mean: Vec<f64> = Vec::try_from(mean.to_kind(Kind::Double)).unwrap_or_default();
        if !explore {
            return mean;
        }
        let std = f64::try_from(self.log_std.exp().view([-1]).get(0)).unwrap_or(self.config.std);
        let sampled: Vec<f32> = mean
            .iter()
            .map(|m| (m + std * standard_normal(&mut self.rng)) as f32)
            .collect();
        let mean_t = Tensor::from_slice(&mean.iter().map(|&m| m as f32).collect::<Vec<f32>>())
            .to_device(self.device);
        let sampled_t = Tensor::from_slice(&sampled).to_device(self.device);
        let log_prob =
            f64::try_from(gaussian_log_prob(&mean_t, &self.log_std, &sampled_t).sum(Kind::Float))
                .unwrap_or(0.0);
        let value = f64::try_from(value).unwrap_or(0.0);
        let actions = sampled
            .iter()
            .map(|&a| (a as f64).clamp(0.0, 1.0))
            .collect();
        self.pending
            .push_back((self.task, sampled, log_prob as f32, value as f32));
        actions
    }
}

impl Learner for GraphAgent {
    fn learn(&mut self, episode: &Episode) -> Result<()> {
        let Some((task, actions, log_prob, value)) = self.pending.pop_front() else {
            return Ok(());
        };
        self.samples.push(Sample {
            task,
            actions,
            log_prob,
            value,
            reward: episode.reward as f32,
        });
        if self.samples.len() >= self.config.episodes_per_update {
            self.update()?;
        }
        Ok(())
    }
}
