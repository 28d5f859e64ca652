//! DDPG as in AMC: an actor maps a unit's state to a keep ratio, a critic scores
//! (state, action); uniform random actions for the warm-up episodes (or, with
//! `warmup_sigma`, the best demonstration's actions with noise), then the actor's action
//! with truncated-normal noise whose deviation decays per episode; every transition of an
//! episode carries the episode's reward, and updates subtract a moving average of minibatch
//! mean rewards (AMC's baseline); after each episode, one minibatch update per unit, with soft
//! target updates.

mod buffer;
mod config;

pub use config::DdpgConfig;

use super::util::{forward_row, hard_update, mlp, rows_to_tensor, soft_update, truncated_normal};
use super::{Actor, Agent, Demonstration, Episode, Learner, SequentialActor};
use crate::error::Result;
use buffer::{ReplayBuffer, Stored};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Actor, critic, their targets, the replay buffer and the exploration state.
pub struct Ddpg {
    config: DdpgConfig,
    actor_vs: nn::VarStore,
    actor: nn::Sequential,
    actor_target_vs: nn::VarStore,
    actor_target: nn::Sequential,
    critic_vs: nn::VarStore,
    critic: nn::Sequential,
    critic_target_vs: nn::VarStore,
    critic_target: nn::Sequential,
    actor_opt: nn::Optimizer,
    critic_opt: nn::Optimizer,
    buffer: ReplayBuffer,
    rng: StdRng,
    episode: usize,
    /// Moving average of minibatch mean rewards (None before the first update).
    baseline: Option<f64>,
    /// The best demonstration so far: its reward and its sequential actions.
    best_demonstration: Option<(f64, Vec<f64>)>,
    /// The unit the next action is for, within the current episode.
    step: usize,
}

impl std::fmt::Debug for Ddpg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ddpg")
            .field("episode", &self.episode)
            .field("buffer", &self.buffer.len())
            .finish()
    }
}

impl Ddpg {
    /// A new agent for states of `state_dim` entries. Network initialisation draws from
    /// libtorch's generator (seed it first); sampling and noise from `seed`.
    pub fn new(config: DdpgConfig, state_dim: usize, seed: u64) -> Result<Self> {
        let device = Device::Cpu;
        let h = config.hidden as i64;
        let s = state_dim as i64;
        let actor_vs = nn::VarStore::new(device);
        let actor = mlp(&actor_vs.root(), &[s, h, h, 1]);
        let mut actor_target_vs = nn::VarStore::new(device);
        let actor_target = mlp(&actor_target_vs.root(), &[s, h, h, 1]);
        hard_update(&mut actor_target_vs, &actor_vs);
        let critic_vs = nn::VarStore::new(device);
        let critic = mlp(&critic_vs.root(), &[s + 1, h, h, 1]);
        let mut critic_target_vs = nn::VarStore::new(device);
        let critic_target = mlp(&critic_target_vs.root(), &[s + 1, h, h, 1]);
        hard_update(&mut critic_target_vs, &critic_vs);
        let actor_opt = nn::Adam::default().build(&actor_vs, config.actor_lr)?;
        let critic_opt = nn::Adam::default().build(&critic_vs, config.critic_lr)?;
        Ok(Self {
            buffer: ReplayBuffer::new(config.buffer),
            config,
            actor_vs,
            actor,
            actor_target_vs,
            actor_target,
            critic_vs,
            critic,
            critic_target_vs,
            critic_target,
            actor_opt,
            critic_opt,
            rng: StdRng::seed_from_u64(seed),
            episode: 0,
            baseline: None,
            best_demonstration: None,
            step: 0,
        })
    }

    /// Deviation of the exploration noise for the current episode.
    pub fn noise(&self) -> f64 {
        let decayed = self.episode.saturating_sub(self.config.warmup) as i32;
        self.config.noise * self.config.noise_decay.powi(decayed)
    }

    fn actor_action(&self, state: &[f32]) -> f64 {
        let _guard = tch::no_grad_guard();
        let a = forward_row(&self.actor, state).sigmoid();
        f64::try_from(a.view([-1]).get(0)).unwrap_or(0.5)
    }

    fn update(&mut self) -> Result<()> {
        let batch = self.buffer.sample(self.config.batch_size, &mut self.rng);
        let states = rows_to_tensor(&batch.iter().map(|b| b.state.as_slice()).collect::<Vec<_>>());
        let next_states = rows_to_tensor(
            &batch
                .iter()
                .map(|b| b.next_state.as_slice())
                .collect::<Vec<_>>(),
        );
        let actions =
            Tensor::from_slice(&batch.iter().map(|b| b.action).collect::<Vec<_>>()).view([-1, 1]);
        // AMC's baseline: a moving average of minibatch mean rewards, subtracted at sampling
        // time, so every stored reward is compared with the current baseline.
        let mean = batch.iter().map(|b| f64::from(b.reward)).sum::<f64>() / batch.len() as f64;
        let baseline = match self.baseline {
            None => mean,
            Some(b) => b + self.config.baseline_alpha * (mean - b),
        };
        self.baseline = Some(baseline);
        let rewards = Tensor::from_slice(
            &batch
                .iter()
                .map(|b| b.reward - baseline as f32)
                .collect::<Vec<_>>(),
        )
        .view([-1, 1]);
        let live = Tensor::from_slice(
            &batch
                .iter()
                .map(|b| if b.terminal { 0f32 } else { 1.0 })
                .collect::<Vec<_>>(),
        )
        .view([-1, 1]);
        let target = tch::no_grad(|| {
            let next_action = self.actor_target.forward(&next_states).sigmoid();
            let next_q = self
                .critic_target
                .forward(&Tensor::cat(&[&next_states, &next_action], 1));
            &rewards + next_q * live * self.config.discount
        });
        let q = self.critic.forward(&Tensor::cat(&[&states, &actions], 1));
        let critic_loss = q.mse_loss(&target, tch::Reduction::Mean);
        self.critic_opt.backward_step(&critic_loss);
        let policy_q = self.critic.forward(&Tensor::cat(
            &[&states, &self.actor.forward(&states).sigmoid()],
            1,
        ));
        let actor_loss = -policy_q.mean(Kind::Float);
        self.actor_opt.backward_step(&actor_loss);
        soft_update(&self.actor_target_vs, &self.actor_vs, self.config.tau);
        soft_update(&self.critic_target_vs, &self.critic_vs, self.config.tau);
        Ok(())
    }
}

impl Agent for Ddpg {
    fn actor(&mut self) -> Actor<'_> {
        Actor::Sequential(self)
    }

    fn begin_episode(&mut self, index: usize) {
        self.episode = index;
        self.step = 0;
    }

    /// The random warm-up episodes are independent; after them DDPG learns after every
    /// episode, so it is sequential by design.
    fn ahead(&self, next: usize) -> usize {
        self.config.warmup.saturating_sub(next).max(1)
    }
}

impl SequentialActor for Ddpg {
    fn act(&mut self, state: &[f32], explore: bool) -> f64 {
        let step = self.step;
        self.step += 1;
        if explore && self.episode < self.config.warmup {
            let around = self
                .best_demonstration
                .as_ref()
                .and_then(|(_, actions)| actions.get(step).copied())
                .filter(|_| self.config.warmup_sigma > 0.0);
            return match around {
                Some(action) => truncated_normal(&mut self.rng, action, self.config.warmup_sigma),
                None => self.rng.random::<f64>(),
            };
        }
        let mean = self.actor_action(state);
        if explore {
            let sigma = self.noise();
            truncated_normal(&mut self.rng, mean, sigma)
        } else {
            mean
        }
    }
}

impl Ddpg {
    fn store(&mut self, transitions: &[super::Transition], reward: f64) {
        for t in transitions {
            self.buffer.push(Stored {
                state: t.state.clone(),
                action: t.action as f32,
                reward: reward as f32,
                terminal: t.next_state.is_none(),
                next_state: t.next_state.clone().unwrap_or_else(|| t.state.clone()),
            });
        }
    }
}

impl Learner for Ddpg {
    fn learn(&mut self, episode: &Episode) -> Result<()> {
        self.store(&episode.transitions, episode.reward);
        if episode.index + 1 >= self.config.warmup && self.buffer.len() >= self.config.batch_size {
            for _ in 0..episode.transitions.len() {
                self.update()?;
            }
        }
        Ok(())
    }

    /// Demonstrations join the replay buffer beside the warm-up episodes (AMC's critic then
    /// starts from the heuristics' rewards too).
    fn demonstrate(&mut self, demonstration: &Demonstration) {
        self.store(&demonstration.transitions, demonstration.reward);
        if self
            .best_demonstration
            .as_ref()
            .is_none_or(|(best, _)| demonstration.reward > *best)
        {
            let actions = demonstration.transitions.iter().map(|t| t.action).collect();
            self.best_demonstration = Some((demonstration.reward, actions));
        }
    }
}
