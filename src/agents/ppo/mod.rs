//! PPO (clipped surrogate, GAE) on the sequential env: a Gaussian policy over the normalised
//! keep ratio with a learned log-deviation, a value network, the episode's reward (minus a
//! moving-average baseline) at its last step, updates every few episodes.

use super::util::{gaussian_log_prob, mlp, rows_to_tensor, standard_normal};
use super::{Actor, Agent, Episode, Learner, SequentialActor};
use crate::check::{Checks, MAX_EPISODES, MAX_EPOCHS, MAX_SAMPLES, MAX_WIDTH};
use crate::error::Result;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// The `[ppo]` table of a search config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    pub hidden: usize,
    pub lr: f64,
    /// Clip range of the probability ratio.
    pub clip: f64,
    pub gamma: f64,
    /// GAE's lambda.
    pub lambda: f64,
    /// Passes over the collected steps per update.
    pub epochs: usize,
    pub minibatch: usize,
    /// Episodes collected between updates.
    pub episodes_per_update: usize,
    /// Initial deviation of the Gaussian policy.
    pub std: f64,
    pub value_coef: f64,
    pub entropy_coef: f64,
    pub baseline_alpha: f64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            hidden: 64,
            lr: 3e-4,
            clip: 0.2,
            gamma: 1.0,
            lambda: 0.95,
            epochs: 4,
            minibatch: 64,
            episodes_per_update: 8,
            std: 0.25,
            value_coef: 0.5,
            entropy_coef: 0.0,
            baseline_alpha: 0.5,
        }
    }
}

impl PpoConfig {
    /// What is wrong with the values, if anything: (key, message).
    pub fn check(&self) -> Option<(&'static str, String)> {
        Checks::new()
            .at_least("ppo.hidden", self.hidden, 1)
            .at_most("ppo.hidden", self.hidden, MAX_WIDTH)
            .at_least("ppo.epochs", self.epochs, 1)
            .at_most("ppo.epochs", self.epochs, MAX_EPOCHS)
            .at_least("ppo.minibatch", self.minibatch, 1)
            .at_most("ppo.minibatch", self.minibatch, MAX_SAMPLES)
            .at_least("ppo.episodes_per_update", self.episodes_per_update, 1)
            .at_most(
                "ppo.episodes_per_update",
                self.episodes_per_update,
                MAX_EPISODES,
            )
            .positive("ppo.lr", self.lr)
            .positive("ppo.std", self.std)
            .within("ppo.gamma", self.gamma, 0.0, 1.0, false)
            .within("ppo.lambda", self.lambda, 0.0, 1.0, false)
            .within("ppo.clip", self.clip, 0.0, 1.0, true)
            .first()
    }
}

/// One step kept for the next update.
#[derive(Debug, Clone)]
struct Step {
    state: Vec<f32>,
    /// The sampled (unclipped) action.
    action: f32,
    log_prob: f32,
    value: f32,
    reward: f32,
    last: bool,
}

pub struct Ppo {
    config: PpoConfig,
    vs: nn::VarStore,
    policy: nn::Sequential,
    value: nn::Sequential,
    log_std: Tensor,
    optimizer: nn::Optimizer,
    rng: StdRng,
    /// Sampled actions of the episodes not learned from yet, oldest first, each in order:
    /// (action, log-prob, value).
    pending: std::collections::VecDeque<Vec<(f32, f32, f32)>>,
    /// True between `begin_episode` and the episode's first sampled action.
    fresh: bool,
    steps: Vec<Step>,
    episodes_collected: usize,
    baseline: Option<f64>,
}

impl std::fmt::Debug for Ppo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ppo")
            .field("steps", &self.steps.len())
            .finish()
    }
}

impl Ppo {
    pub fn new(config: PpoConfig, state_dim: usize, seed: u64) -> Result<Self> {
        let vs = nn::VarStore::new(Device::Cpu);
        let h = config.hidden as i64;
        let s = state_dim as i64;
        let policy = mlp(&(vs.root() / "policy"), &[s, h, h, 1]);
        let value = mlp(&(vs.root() / "value"), &[s, h, h, 1]);
        let log_std = vs
            .root()
            .var("log_std", &[1], nn::Init::Const(config.std.ln()));
        let optimizer = nn::Adam::default().build(&vs, config.lr)?;
        Ok(Self {
            config,
            vs,
            policy,
            value,
            log_std,
            optimizer,
            rng: StdRng::seed_from_u64(seed),
            pending: std::collections::VecDeque::new(),
            fresh: false,
            steps: Vec::new(),
            episodes_collected: 0,
            baseline: None,
        })
    }

    fn mean(&self, states: &Tensor) -> Tensor {
        self.policy.forward(states).sigmoid()
    }

    /// Log-density of `actions` under N(mean, std).
    fn log_prob(&self, mean: &Tensor, actions: &Tensor) -> Tensor {
        gaussian_log_prob(mean, &self.log_std, actions)
    }

    fn update(&mut self) -> Result<()> {
        // GAE over each episode (the reward sits on the last step).
        let n = self.steps.len();
        let mut advantages = vec![0f32; n];
        let mut next_value = 0f32;
        let mut gae = 0f32;
        for i in (0..n).rev() {
            let step = &self.steps[i];
            if step.last {
                next_value = 0.0;
                gae = 0.0;
            }
            let delta = step.reward + self.config.gamma as f32 * next_value - step.value;
            gae = delta + (self.config.gamma * self.config.lambda) as f32 * gae;
            advantages[i] = gae;
            next_value = step.value;
        }
        let returns: Vec<f32> = advantages
            .iter()
            .zip(&self.steps)
            .map(|(a, s)| a + s.value)
            .collect();
        let mean_adv = advantages.iter().sum::<f32>() / n as f32;
        let std_adv = (advantages
            .iter()
            .map(|a| (a - mean_adv).powi(2))
            .sum::<f32>()
            / n as f32)
            .sqrt()
            .max(1e-6);
        let advantages: Vec<f32> = advantages
            .iter()
            .map(|a| (a - mean_adv) / std_adv)
            .collect();
        let mut order: Vec<usize> = (0..n).collect();
        for _ in 0..self.config.epochs {
            order.shuffle(&mut self.rng);
            for chunk in order.chunks(self.config.minibatch) {
                let states = rows_to_tensor(
                    &chunk
                        .iter()
                        .map(|&i| self.steps[i].state.as_slice())
                        .collect::<Vec<_>>(),
                );
                let pick = |f: &dyn Fn(usize) -> f32| {
                    Tensor::from_slice(&chunk.iter().map(|&i| f(i)).collect::<Vec<_>>())
                        .view([-1, 1])
                };
                let actions = pick(&|i| self.steps[i].action);
                let old_log_prob = pick(&|i| self.steps[i].log_prob);
                let adv = pick(&|i| advantages[i]);
                let ret = pick(&|i| returns[i]);
                let log_prob = self.log_prob(&self.mean(&states), &actions);
                let ratio = (&log_prob - old_log_prob).exp();
                let clipped = ratio.clamp(1.0 - self.config.clip, 1.0 + self.config.clip);
                let surrogate = (&ratio * &adv).min_other(&(clipped * &adv));
                let value_loss = self
                    .value
                    .forward(&states)
                    .mse_loss(&ret, tch::Reduction::Mean);
                let entropy = (&self.log_std
                    + 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln())
                .mean(Kind::Float);
                let loss = -surrogate.mean(Kind::Float) + value_loss * self.config.value_coef
                    - entropy * self.config.entropy_coef;
                self.optimizer.backward_step(&loss);
            }
        }
        self.steps.clear();
        self.episodes_collected = 0;
        Ok(())
    }
}

impl Agent for Ppo {
    fn actor(&mut self) -> Actor<'_> {
        Actor::Sequential(self)
    }

    fn begin_episode(&mut self, _index: usize) {
        self.fresh = true;
    }

    /// The rest of the batch of episodes one update learns from.
    fn ahead(&self, _next: usize) -> usize {
        self.config
            .episodes_per_update
            .saturating_sub(self.episodes_collected)
            .max(1)
    }
}

impl SequentialActor for Ppo {
    fn act(&mut self, state: &[f32], explore: bool) -> f64 {
        let _guard = tch::no_grad_guard();
        let s = Tensor::from_slice(state).view([1, state.len() as i64]);
        let mean = self.mean(&s);
        let mean_value = f64::try_from(mean.view([-1]).get(0)).unwrap_or(0.5);
        if !explore {
            return mean_value;
        }
        let std = f64::try_from(self.log_std.exp().view([-1]).get(0)).unwrap_or(self.config.std);
        let action = mean_value + std * standard_normal(&mut self.rng);
        let log_prob = f64::try_from(
            self.log_prob(&mean, &Tensor::from_slice(&[action as f32]).view([1, 1]))
                .view([-1])
                .get(0),
        )
        .unwrap_or(0.0);
        let value = f64::try_from(self.value.forward(&s).view([-1]).get(0)).unwrap_or(0.0);
        if std::mem::take(&mut self.fresh) {
            self.pending.push_back(Vec::new());
        }
        if let Some(episode) = self.pending.back_mut() {
            episode.push((action as f32, log_prob as f32, value as f32));
        }
        action.clamp(0.0, 1.0)
    }
}

impl Learner for Ppo {
    fn learn(&mut self, episode: &Episode) -> Result<()> {
        let baseline = match self.baseline {
            None => episode.reward,
            Some(b) => {
                self.config.baseline_alpha * episode.reward + (1.0 - self.config.baseline_alpha) * b
            }
        };
        let reward = (episode.reward - self.baseline.unwrap_or(episode.reward)) as f32;
        self.baseline = Some(baseline);
        let pending = self.pending.pop_front().unwrap_or_default();
        let n = episode.transitions.len().min(pending.len());
        for (i, (t, &(action, log_prob, value))) in
            episode.transitions.iter().zip(&pending).enumerate()
        {
            self.steps.push(Step {
                state: t.state.clone(),
                action,
                log_prob,
                value,
                reward: if i + 1 == n { reward } else { 0.0 },
                last: i + 1 == n,
            });
        }
        self.episodes_collected += 1;
        if self.episodes_collected >= self.config.episodes_per_update && !self.steps.is_empty() {
            self.update()?;
        }
        Ok(())
    }
}

impl Ppo {
    /// The variables (for tests and checkpoints).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
}
